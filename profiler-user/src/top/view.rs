//! Draws `profiler top`'s screen from the live statistics: a header (targets, CPU, GIL), the function table,
//! the threads and, when samples carry them, the endpoints; then the keys. Drawing only: what the numbers are is
//! `stats`, what the keys do is the module above.
use std::time::Duration;

use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Modifier, Style, Stylize as _},
    text::{Line, Span},
    widgets::{Block, Paragraph, Row, Table},
    Frame,
};

use super::stats::{LiveStats, SortBy};

/// What the user chose: the sort column, a frozen view, how far the function table is scrolled.
#[derive(Clone, Debug, Default)]
pub(crate) struct ViewState {
    pub sort: SortBy,
    pub paused: bool,
    /// Rows of the function table skipped at its top.
    pub scroll: usize,
}

/// The facts of the session the header shows.
#[derive(Clone, Debug, Default)]
pub(crate) struct Header {
    /// The targets, e.g. `uvicorn (1234) and 4 more`.
    pub targets: String,
    pub rate_hz: u64,
    pub elapsed: Duration,
    pub lost_samples: u64,
    /// The latest thing the user should know: a crash, a target that exited, a log line.
    pub notice: Option<String>,
}

/// At most this many rows of the threads and endpoints panels; the function table takes the rest.
const MAX_PANEL_ROWS: usize = 8;

pub(crate) fn draw(frame: &mut Frame, stats: &LiveStats, view: &ViewState, header: &Header) {
    let threads = stats.threads();
    let endpoints = stats.endpoints();
    let panel_rows = threads.len().max(endpoints.len()).clamp(1, MAX_PANEL_ROWS) as u16;
    let [top, functions, panels, keys] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(5),
        Constraint::Length(panel_rows + 3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(header_lines(stats, view, header)), top);
    draw_functions(frame, functions, stats, view);
    if endpoints.is_empty() {
        draw_threads(frame, panels, stats, &threads);
    } else {
        let [left, right] = Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(panels);
        draw_threads(frame, left, stats, &threads);
        draw_endpoints(frame, right, stats, &endpoints);
    }
    let help = "q quit  1-4 sort  l lines  p pause  r reset  \u{2191}\u{2193} PgUp PgDn scroll";
    frame.render_widget(Paragraph::new(Line::from(help).add_modifier(Modifier::DIM)), keys);
}

fn header_lines(stats: &LiveStats, view: &ViewState, header: &Header) -> Vec<Line<'static>> {
    let cores = ratio(stats.cpu_now_ns, stats.interval_ns);
    let mut first = vec![
        Span::from("profiler top ").bold(),
        Span::from(format!(
            "{}  {} Hz  {}  {} samples  {} lost",
            header.targets,
            header.rate_hz,
            clock(header.elapsed),
            stats.samples,
            header.lost_samples
        )),
    ];
    if view.paused {
        first.push(Span::from("  PAUSED").bold().reversed());
    }
    let gil = if stats.python_samples_now == 0 {
        "GIL: no Python samples".to_owned()
    } else {
        format!("GIL held in {:.0}% of Python samples", percent(stats.gil_held_now, stats.python_samples_now))
    };
    let mut second = vec![Span::from(format!(
        "CPU {cores:.2} cores  {gil}  {}  sorted by {}",
        count(stats.threads().len(), "thread"),
        sort_name(view.sort)
    ))];
    if let Some(notice) = &header.notice {
        second.push(Span::from(format!("  {notice}")).bold());
    }
    vec![Line::from(first), Line::from(second)]
}

fn draw_functions(frame: &mut Frame, area: Rect, stats: &LiveStats, view: &ViewState) {
    let rows: Vec<Row> = stats
        .functions(view.sort)
        .into_iter()
        .skip(view.scroll)
        .map(|(key, times)| {
            let function =
                if key.location.is_empty() { key.name.clone() } else { format!("{} ({})", key.name, key.location) };
            Row::new([
                format!("{:5.1}%", stats.percent_now(times.own_now)),
                format!("{:5.1}%", stats.percent_now(times.total_now)),
                seconds(times.own_ns),
                seconds(times.total_ns),
                function,
            ])
        })
        .collect();
    let titles = ["%Own", "%Total", "OwnTime", "TotalTime", "Function (file)"];
    let header = Row::new(titles.iter().enumerate().map(|(column, title)| {
        let sorted = column < 4 && sort_column(view.sort) == column;
        let title = format!("{title}{}", if sorted { "\u{25bc}" } else { "" });
        if sorted {
            Span::from(title).bold().underlined()
        } else {
            Span::from(title).bold()
        }
    }));
    let widths = [
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(10),
        Constraint::Fill(1),
    ];
    let title = if stats.by_line { " Functions by line " } else { " Functions " };
    frame.render_widget(Table::new(rows, widths).header(header).block(Block::bordered().title(title)), area);
}

fn draw_threads(frame: &mut Frame, area: Rect, stats: &LiveStats, threads: &[(u32, &super::stats::ThreadTimes)]) {
    let rows = threads.iter().take(MAX_PANEL_ROWS).map(|(tid, thread)| {
        let gil = match thread.gil_held_now {
            Some(held) if thread.samples_now > 0 => format!("{:3.0}%", percent(held, thread.samples_now)),
            Some(_) => "-".to_owned(),
            None => "no Python".to_owned(),
        };
        Row::new([
            format!("{:5.1}%", ratio(thread.samples_now * stats.period_ns, stats.interval_ns) * 100.0),
            gil,
            seconds(thread.cpu_ns),
            format!("{} ({tid}, PID {})", thread.name, thread.pid),
        ])
    });
    let header = Row::new(["CPU", "GIL held", "Time", "Thread (TID, PID)"]).style(Style::new().bold());
    let widths = [Constraint::Length(7), Constraint::Length(9), Constraint::Length(9), Constraint::Fill(1)];
    let title = format!(" Threads ({}) ", threads.len());
    frame.render_widget(Table::new(rows, widths).header(header).block(Block::bordered().title(title)), area);
}

fn draw_endpoints(frame: &mut Frame, area: Rect, stats: &LiveStats, endpoints: &[(&str, u64, u64)]) {
    let rows = endpoints.iter().take(MAX_PANEL_ROWS).map(|(name, now, ns)| {
        Row::new([format!("{:5.1}%", stats.percent_now(*now)), seconds(*ns), (*name).to_owned()])
    });
    let header = Row::new(["%CPU", "Time", "Endpoint"]).style(Style::new().bold());
    let widths = [Constraint::Length(7), Constraint::Length(9), Constraint::Fill(1)];
    frame.render_widget(Table::new(rows, widths).header(header).block(Block::bordered().title(" Endpoints ")), area);
}

/// `n` things, singular or plural.
fn count(n: usize, thing: &str) -> String {
    format!("{n} {thing}{}", if n == 1 { "" } else { "s" })
}

fn sort_column(sort: SortBy) -> usize {
    match sort {
        SortBy::OwnNow => 0,
        SortBy::TotalNow => 1,
        SortBy::OwnTime => 2,
        SortBy::TotalTime => 3,
    }
}

fn sort_name(sort: SortBy) -> &'static str {
    match sort {
        SortBy::OwnNow => "%Own",
        SortBy::TotalNow => "%Total",
        SortBy::OwnTime => "OwnTime",
        SortBy::TotalTime => "TotalTime",
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    ratio(part, whole) * 100.0
}

/// CPU time as the table shows it: seconds with two decimals.
fn seconds(ns: u64) -> String {
    format!("{:.2}s", ns as f64 / 1e9)
}

/// Elapsed time as `m:ss`.
fn clock(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    format!("{}:{:02}", secs / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use ratatui::{backend::TestBackend, Terminal};

    use super::*;
    use crate::aggregate::{Aggregator, Frame, Label, LabelValue};

    fn screen(stats: &LiveStats, view: &ViewState) -> String {
        let mut terminal = Terminal::new(TestBackend::new(100, 30)).unwrap();
        let header = Header {
            targets: "python3 (42)".into(),
            rate_hz: 100,
            elapsed: Duration::from_secs(75),
            lost_samples: 0,
            notice: Some("crashed: SIGSEGV".into()),
        };
        terminal.draw(|frame| draw(frame, stats, view, &header)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..buffer.area.height)
            .map(|y| (0..buffer.area.width).map(|x| buffer[(x, y)].symbol()).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn stats() -> LiveStats {
        let mut aggregator = Aggregator::new(10_000_000);
        let labels = |tid: &str, gil: &str| {
            vec![
                Label { key: "pid", value: LabelValue::Str("42".into()) },
                Label { key: "thread_id", value: LabelValue::Str(tid.into()) },
                Label { key: "thread_name", value: LabelValue::Str(format!("thread-{tid}")) },
                Label { key: "gil", value: LabelValue::Str(gil.into()) },
                Label { key: "endpoint", value: LabelValue::Str("/weather".into()) },
            ]
        };
        let (hot, main) = (Frame::python("hot_loop", "/srv/busy.py"), Frame::python("main", "/srv/busy.py"));
        for _ in 0..3 {
            aggregator.add([&hot, &main], labels("7", "held"));
        }
        aggregator.add([&main], labels("8", "released"));
        let mut profile = aggregator.take();
        profile.duration_ns = 100_000_000;
        let mut stats = LiveStats::default();
        stats.add_interval(&profile);
        stats
    }

    #[test]
    fn shows_functions_threads_endpoints_and_the_header() {
        let text = screen(&stats(), &ViewState::default());
        let row = |needle: &str| text.lines().find(|line| line.contains(needle)).unwrap_or_else(|| panic!("{text}"));
        assert!(row("hot_loop (busy.py)").contains(" 75.0%"), "{text}");
        assert!(row("main (busy.py)").contains("100.0%"), "{text}");
        assert!(row("thread-7 (7, PID 42)").contains("100%"), "{text}");
        assert!(row("/weather").contains("100.0%"), "{text}");
        assert!(row("profiler top").contains("python3 (42)  100 Hz  1:15  4 samples"), "{text}");
        assert!(row("CPU 0.40 cores").contains("GIL held in 75% of Python samples"), "{text}");
        assert!(row("crashed: SIGSEGV").contains("sorted by %Own"), "{text}");
    }

    #[test]
    fn sorting_and_scrolling_change_the_table() {
        let stats = stats();
        let first_function = |view: &ViewState| {
            let text = screen(&stats, view);
            let header = text.lines().position(|line| line.contains("Function (file)")).unwrap();
            text.lines().nth(header + 1).unwrap().to_owned()
        };
        assert!(first_function(&ViewState::default()).contains("hot_loop"));
        let by_total = ViewState { sort: SortBy::TotalNow, ..ViewState::default() };
        assert!(first_function(&by_total).contains("main"));
        assert!(first_function(&ViewState { scroll: 1, ..ViewState::default() }).contains("main"));
        assert!(screen(&stats, &ViewState { paused: true, ..ViewState::default() }).contains("PAUSED"));
    }
}
