//! The pprof file opened in speedscope (<https://github.com/jlfwong/speedscope>), a flame graph viewer many people
//! read pprof with, as a person opens it: speedscope's released web app loaded from disk in headless Chromium, the
//! file chosen with its "Browse" button, the Sandwich view's table of functions read, sorted by a click on a column
//! and a function clicked.
//!
//! `go tool pprof` reads every pprof the tests write (support/go_pprof.rs), but a viewer with a decoder of its own
//! can still fail on a file Go accepts, or show something else: speedscope inflates the gzip and decodes
//! profile.proto with its own code, shows one sample type (the default one, else the last), names a location by
//! the function of its last line and drops locations that have no line, which would move time to the callers. So
//! the import must succeed without speedscope's error or its "Unrecognized format" alert, and the table must list
//! every function of the recording, with the time and the share of all samples it shows for each, self and total,
//! equal (to the precision it prints) to what the folded stacks of the same recording count. The recording is
//! native-burn's, whose functions, call chains and hot leaves are known by construction
//! (examples/native-burn/main.c). The table is the DOM; the flame graphs are WebGL canvases, which are not read.
//!
//! speedscope is its npm package, pinned and checked (support/speedscope.rs). Screenshots of each step are left in
//! the test's directory, kept when the test fails.
use std::collections::{BTreeMap, BTreeSet};

use profiler_tests::{
    browser::{require_chromium, Bounds, Page},
    exclusive_cpu, read_pprof, require_root,
    speedscope::{require_speedscope, VERSION},
    Folded, TestDir,
};
use serde::Deserialize;

use crate::browser::record_native_burn;

/// The window, in CSS pixels: tall enough that the table shows every function of native-burn without scrolling
/// (speedscope draws only the rows in view).
const WINDOW: (u32, u32) = (1280, 1000);

/// The pprof file, named as `profiler record -o` writes pprof; speedscope names the profile after it.
const PPROF: &str = "native-burn.pb.gz";

/// Functions of native-burn that every recording of it has, by construction: the main thread's chain and both
/// workers' (examples/native-burn/main.c and burnlib.c).
const KNOWN: [&str; 14] = [
    "run_main_loop",
    "level_1",
    "level_2",
    "level_3",
    "hot_main_a",
    "hot_main_b",
    "thread_a_entry",
    "a_level_1",
    "lib_dispatch",
    "lib_hot_x",
    "thread_b_entry",
    "b_level_1",
    "b_level_2",
    "hot_b",
];
/// The leaves native-burn spins in, the only functions with self time by construction: the top of the table
/// sorted by self time.
const HOT_LEAVES: [&str; 4] = ["hot_main_a", "hot_main_b", "lib_hot_x", "hot_b"];
/// The function clicked in the table.
const CLICKED: &str = "hot_main_a";

/// What the page shows, read by one script: speedscope's landing page, its error, the toolbar, the table.
const READ_PAGE: &str = r#"(() => {
    const bounds = element => {
        const b = element.getBoundingClientRect();
        return { left: b.left, top: b.top, width: b.width, height: b.height };
    };
    const divs = Array.from(document.querySelectorAll("div"));
    const browse = Array.from(document.querySelectorAll("label")).find(label => label.textContent === "Browse");
    const rows = Array.from(document.querySelectorAll("tr")).filter(tr => tr.querySelectorAll("td").length === 3);
    const scroller = rows.length === 0 ? null : (() => {
        for (let element = rows[0].parentElement; element; element = element.parentElement) {
            if (["auto", "scroll"].includes(getComputedStyle(element).overflowY)) return element;
        }
        return null;
    })();
    return {
        title: document.title,
        browse: browse ? bounds(browse) : null,
        error: divs.some(div => div.textContent === "😿 Something went wrong."),
        text: document.body.innerText.slice(0, 600),
        tabs: divs
            .filter(div => /^\S*(Time Order|Left Heavy|Sandwich)$/.test(div.textContent) && div.children.length === 1)
            .map(div => ({
                text: div.textContent.replace(/^\S*(?=Time|Left|Sandwich)/u, ""),
                background: getComputedStyle(div).backgroundColor,
                bounds: bounds(div),
            })),
        header: Array.from(document.querySelectorAll("th"))
            .map(th => ({ text: th.textContent.trim(), bounds: bounds(th) })),
        rows: rows.map(tr => ({
            total: tr.cells[0].textContent,
            self: tr.cells[1].textContent,
            name: tr.cells[2].textContent,
            background: getComputedStyle(tr).backgroundColor,
            bounds: bounds(tr),
        })),
        empty: Array.from(document.querySelectorAll("tr"))
            .filter(tr => tr.cells.length === 1 && tr.querySelector("td"))
            .map(tr => tr.textContent),
        overflows: scroller !== null && scroller.scrollHeight > scroller.clientHeight + 1,
        panels: divs.filter(div => ["Callers", "Callees"].includes(div.textContent) && div.children.length === 0)
            .map(div => div.textContent),
    };
})()"#;

/// What the page shows at one moment.
#[derive(Debug, Deserialize)]
struct View {
    /// speedscope sets it to `NAME - speedscope` once a profile is imported.
    title: String,
    /// The landing page's "Browse" button (a label for the hidden file input), while shown.
    browse: Option<Bounds>,
    /// speedscope's error screen ("Something went wrong.") is shown.
    error: bool,
    /// The start of the page's text, for failure messages.
    text: String,
    /// The toolbar's view tabs, without their emoji: Time Order, Left Heavy, Sandwich.
    tabs: Vec<Tab>,
    /// The table's column headers.
    header: Vec<Header>,
    /// The table's rows as drawn, top to bottom (only those in view: speedscope draws no others).
    rows: Vec<Row>,
    /// The table's message when it has no rows ("No symbols found.").
    empty: Vec<String>,
    /// The table's list scrolls: some rows are not drawn.
    overflows: bool,
    /// The labels of the caller and callee flame graphs shown beside the table once a function is selected.
    panels: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Tab {
    text: String,
    /// Its computed background colour, which tells the active tab from the others.
    background: String,
    bounds: Bounds,
}

#[derive(Debug, Deserialize)]
struct Header {
    text: String,
    bounds: Bounds,
}

/// One row of the Sandwich view's table: `TIME (SHARE%)` of all samples in the function and its callees (total)
/// and in the function itself (self), and the function's name.
#[derive(Debug, Deserialize, Clone)]
struct Row {
    total: String,
    #[serde(rename = "self")]
    self_: String,
    name: String,
    /// Its computed background colour: rows are striped, and a selected row is drawn in another colour.
    background: String,
    bounds: Bounds,
}

impl View {
    fn read(page: &Page) -> View {
        page.eval(READ_PAGE)
    }

    fn tab(&self, name: &str) -> &Tab {
        self.tabs.iter().find(|tab| tab.text == name).unwrap_or_else(|| {
            panic!("speedscope shows no {name:?} tab; its tabs: {:?}; the page: {:?}", self.tabs, self.text)
        })
    }

    fn header(&self, name: &str) -> &Header {
        self.header.iter().find(|header| header.text == name).unwrap_or_else(|| {
            panic!("the table has no {name:?} column; its columns: {:?}; the page: {:?}", self.header, self.text)
        })
    }

    fn row(&self, name: &str) -> &Row {
        self.rows.iter().find(|row| row.name == name).unwrap_or_else(|| panic!("the table has no row {name:?}"))
    }

    fn describe_rows(&self) -> String {
        self.rows
            .iter()
            .map(|row| format!("  {:<16} {:<18} {}", row.total, row.self_, row.name))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A value speedscope printed: the interval of true values that print so.
#[derive(Debug, Clone, Copy)]
struct Printed {
    low: f64,
    high: f64,
}

impl Printed {
    fn contains(&self, value: f64) -> bool {
        // A little slack for the floating point of both sides.
        self.low - 1e-9 <= value && value <= self.high + 1e-9
    }

    /// A number printed with `toFixed`, times `scale`: half a unit of its last digit either side.
    fn fixed(digits: &str, scale: f64) -> Option<Printed> {
        let value: f64 = digits.parse().ok()?;
        let decimals = digits.split_once('.').map_or(0, |(_, fraction)| fraction.len());
        let half = 0.5 * 10f64.powi(-(decimals as i32));
        Some(Printed { low: (value - half) * scale, high: (value + half) * scale })
    }

    /// A time as speedscope prints nanoseconds (its `TimeFormatter`): `M:SS` (seconds floored) from a minute,
    /// else `N.NNs`, `N.NNms`, `N.NNµs` or `N.NNns`. In seconds.
    fn time(text: &str) -> Option<Printed> {
        if let Some((minutes, seconds)) = text.split_once(':') {
            let whole = minutes.parse::<f64>().ok()? * 60.0 + seconds.parse::<f64>().ok()?;
            return Some(Printed { low: whole, high: whole + 1.0 });
        }
        [("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9), ("s", 1.0)]
            .into_iter()
            .find_map(|(unit, scale)| text.strip_suffix(unit).map(|digits| (digits, scale)))
            .and_then(|(digits, scale)| Printed::fixed(digits, scale))
    }

    /// A share as speedscope prints it (`formatPercent`): `100%`, `>99%`, `<0.01%`, else with 2, 1 or no decimals.
    /// In percent.
    fn percent(text: &str) -> Option<Printed> {
        let number = text.strip_suffix('%')?;
        match number {
            "100" => Some(Printed { low: 100.0, high: 100.0 }),
            ">99" => Some(Printed { low: 99.0, high: 100.0 }),
            "<0.01" => Some(Printed { low: 0.0, high: 0.01 }),
            _ => Printed::fixed(number, 1.0),
        }
    }

    /// `TIME (SHARE%)`, the text of a cell, as its time (seconds) and share (percent).
    fn cell(text: &str) -> (Printed, Printed) {
        text.trim()
            .strip_suffix(')')
            .and_then(|rest| rest.split_once(" ("))
            .and_then(|(time, share)| Some((Printed::time(time)?, Printed::percent(share)?)))
            .unwrap_or_else(|| panic!("a table cell that is not `TIME (SHARE%)`: {text:?}"))
    }
}

/// What the folded stacks count for one function: the samples with it on the stack (once per sample), and those
/// with it as the leaf.
#[derive(Debug, Default, Clone, Copy)]
struct Counted {
    total: u64,
    self_: u64,
}

/// Every function of the folded stacks (frames after the process and the thread, which pprof keeps as labels and
/// speedscope does not show), by name.
fn functions(folded: &Folded) -> BTreeMap<String, Counted> {
    let mut functions: BTreeMap<String, Counted> = BTreeMap::new();
    for (frames, count) in &folded.stacks {
        let stack = frames.get(2..).unwrap_or_default();
        for name in BTreeSet::from_iter(stack) {
            functions.entry(name.clone()).or_default().total += count;
        }
        if let Some(leaf) = stack.last() {
            functions.entry(leaf.clone()).or_default().self_ += count;
        }
    }
    functions
}

#[test]
fn speedscope_imports_the_pprof_and_lists_our_functions() {
    if !require_root() || !require_chromium() {
        return;
    }
    let Some(app) = require_speedscope() else { return };
    // Held while Chromium runs too: it would take CPU from the workloads of the tests that measure shares.
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("speedscope");
    let folded = record_native_burn(&dir, PPROF);
    let pprof = dir.join(PPROF);
    let period_seconds = sample_period_seconds(&read_pprof(&pprof));

    let page = Page::open(&app, WINDOW.0, WINDOW.1);
    page.wait_for(
        "Array.from(document.querySelectorAll('label')).some(label => label.textContent === 'Browse')",
        "speedscope's landing page with its Browse button",
    );
    page.screenshot(&dir.join("1-landing.png"));
    let landing = View::read(&page);
    assert!(landing.tabs.is_empty(), "view tabs before any profile is loaded: {:?}", landing.tabs);

    // "Browse", and the file chosen: speedscope reads it and either shows it, or says it failed (its error screen,
    // or an alert for a file it does not recognize or finds empty).
    let browse = landing.browse.unwrap_or_else(|| panic!("speedscope's landing page shows no Browse button"));
    let dialogs = page.watch_dialogs();
    page.click_and_choose_file(browse.center(), &pprof);
    page.wait_until("speedscope to show the profile (its view tabs) or its error", || {
        let opened = dialogs.opened();
        assert!(opened.is_empty(), "speedscope {VERSION} opened {} on importing {PPROF}", opened.join(" and "));
        page.eval::<bool>(
            "document.body.innerText.includes('Something went wrong') || \
             Array.from(document.querySelectorAll('div')).some(div => div.textContent === '🥪Sandwich')",
        )
    });
    drop(dialogs);
    page.screenshot(&dir.join("2-imported.png"));
    let imported = View::read(&page);
    assert!(!imported.error, "speedscope {VERSION} failed to import {PPROF}; the page shows: {:?}", imported.text);
    assert_eq!(imported.title, format!("{PPROF} - speedscope"), "the page's title once {PPROF} is imported");
    let tab_names: Vec<&str> = imported.tabs.iter().map(|tab| tab.text.as_str()).collect();
    assert_eq!(tab_names, ["Time Order", "Left Heavy", "Sandwich"], "speedscope's view tabs");

    page.click(imported.tab("Sandwich").bounds.center());
    page.wait_for(
        "Array.from(document.querySelectorAll('th')).some(th => th.textContent.trim() === 'Symbol Name')",
        "the Sandwich view's table",
    );
    page.screenshot(&dir.join("3-sandwich.png"));
    let sandwich = View::read(&page);
    // The tab clicked is drawn as the active one, as Time Order was when the profile opened in it.
    let active = &imported.tab("Time Order").background;
    assert!(
        &sandwich.tab("Sandwich").background == active
            && sandwich.tab("Time Order").background == imported.tab("Sandwich").background
            && active != &imported.tab("Sandwich").background,
        "after a click on Sandwich the tabs are {:?}; before it, with Time Order active, {:?}",
        sandwich.tabs,
        imported.tabs
    );
    let header: Vec<&str> = sandwich.header.iter().map(|header| header.text.as_str()).collect();
    assert_eq!(header, ["Total", "Self", "Symbol Name"], "the Sandwich view's columns");
    let expected = functions(&folded);
    check_table(&sandwich, &expected, folded.total(), period_seconds);
    check_sorted(&sandwich, "self", |row| &row.self_);
    let top: BTreeSet<&str> = sandwich.rows.iter().take(HOT_LEAVES.len()).map(|row| row.name.as_str()).collect();
    assert_eq!(
        top,
        BTreeSet::from(HOT_LEAVES),
        "the top of the table by self time (speedscope's default order) is not native-burn's hot leaves:\n{}",
        sandwich.describe_rows()
    );

    // A click on "Total" sorts by total time, the highest first.
    page.click(sandwich.header("Total").bounds.center());
    page.screenshot(&dir.join("4-by-total.png"));
    let by_total = View::read(&page);
    check_table(&by_total, &expected, folded.total(), period_seconds);
    check_sorted(&by_total, "total", |row| &row.total);
    let highest = expected.values().map(|counted| counted.total).max().expect("functions in the folded stacks");
    let first = by_total.rows.first().expect("rows in the table");
    assert_eq!(
        expected[&first.name].total,
        highest,
        "sorted by total time, the table starts with {:?}, which the folded stacks count in {} samples; the most \
         any function has is {highest}:\n{}",
        first.name,
        expected[&first.name].total,
        by_total.describe_rows()
    );

    // A click on a function selects it and shows its callers and callees beside the table.
    assert!(by_total.panels.is_empty(), "callers and callees shown before any function is selected");
    page.click(by_total.row(CLICKED).bounds.center());
    page.wait_for(
        "Array.from(document.querySelectorAll('div')).some(div => div.textContent === 'Callees')",
        "the callers and callees of the function clicked",
    );
    page.screenshot(&dir.join("5-selected.png"));
    let selected = View::read(&page);
    assert_eq!(selected.panels, ["Callers", "Callees"], "beside the table once {CLICKED} is clicked");
    let changed: Vec<String> = selected
        .rows
        .iter()
        .filter(|row| row.background != by_total.row(&row.name).background)
        .map(|row| {
            format!("{} ({} before the click, {} after)", row.name, by_total.row(&row.name).background, row.background)
        })
        .collect();
    assert!(
        changed.len() == 1 && changed[0].starts_with(&format!("{CLICKED} (")),
        "a click on {CLICKED} should draw its row alone as selected; the rows drawn otherwise: {changed:?}"
    );
}

/// The seconds one sample stands for: the pprof's `period`, in the nanoseconds of its `period_type`. speedscope
/// shows the sample type's values, which the profiler writes as samples × period.
fn sample_period_seconds(profile: &profiler::pprof::proto::Profile) -> f64 {
    let string = |index: i64| profile.string_table.get(index as usize).map_or("", String::as_str);
    let unit = profile.period_type.as_ref().map_or("", |period_type| string(period_type.unit));
    assert_eq!(unit, "nanoseconds", "the pprof's period_type unit");
    assert!(profile.period > 0, "the pprof's period: {}", profile.period);
    profile.period as f64 * 1e-9
}

/// Every function of the folded stacks is a row, and no other; each row's self and total time is its samples ×
/// the period, and its shares are its samples of all the samples, to the precision speedscope prints.
fn check_table(view: &View, expected: &BTreeMap<String, Counted>, samples: u64, period_seconds: f64) {
    assert!(view.empty.is_empty(), "the table says {:?}", view.empty);
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for row in &view.rows {
        *names.entry(row.name.as_str()).or_default() += 1;
    }
    let twice: Vec<&str> = names.iter().filter(|(_, rows)| **rows > 1).map(|(name, _)| *name).collect();
    assert!(twice.is_empty(), "functions on more than one row: {twice:?}\n{}", view.describe_rows());
    let missing: Vec<&str> = expected.keys().map(String::as_str).filter(|name| !names.contains_key(name)).collect();
    let extra: Vec<&str> = names.keys().copied().filter(|name| !expected.contains_key(*name)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the table's functions are not the folded stacks': missing {missing:?}, not in the folded stacks {extra:?} \
         (the list {} scroll); the table:\n{}",
        if view.overflows { "does" } else { "does not" },
        view.describe_rows()
    );
    let unknown: Vec<&str> = KNOWN.iter().copied().filter(|name| !names.contains_key(name)).collect();
    assert!(
        unknown.is_empty(),
        "native-burn's functions missing from the table: {unknown:?}\n{}",
        view.describe_rows()
    );

    let mut wrong = Vec::new();
    for row in &view.rows {
        let counted = expected[&row.name];
        for (column, cell, count) in [("total", &row.total, counted.total), ("self", &row.self_, counted.self_)] {
            let (time, share) = Printed::cell(cell);
            let seconds = count as f64 * period_seconds;
            let percent = 100.0 * count as f64 / samples as f64;
            if !time.contains(seconds) || !share.contains(percent) {
                wrong.push(format!(
                    "{}: {column} {cell:?}, where the folded stacks have {count} of {samples} samples: {seconds:.3} s, \
                     {percent:.3}%",
                    row.name
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "the table's times or shares are not the folded stacks':\n{}", wrong.join("\n"));
}

/// The rows are in descending order of `column`'s time.
fn check_sorted(view: &View, column: &str, cell: impl Fn(&Row) -> &String) {
    let times: Vec<Printed> = view.rows.iter().map(|row| Printed::cell(cell(row)).0).collect();
    let unsorted = times.windows(2).any(|pair| pair[0].high < pair[1].low);
    assert!(!unsorted, "the table is not sorted by {column} time, highest first:\n{}", view.describe_rows());
}
