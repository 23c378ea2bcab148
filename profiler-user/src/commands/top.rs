//! `profiler top`: a live view of what the targets run, refreshed in the terminal, like `py-spy top` (for every
//! process's native and Python frames) and without stopping them.
//!
//! The start-up is `record`'s; then each refresh takes the CPU profile of the interval from the pipeline and hands
//! it to the view (top/), whose keys are read between the session's ticks. Crashes and exits of the targets show
//! as a notice in the header; log lines are held while the view owns the screen and printed after it.
use std::{io::IsTerminal as _, time::Duration};

use anyhow::{bail, Context as _, Result};
use ratatui::{
    crossterm::event::{self, Event},
    DefaultTerminal,
};
use tokio::time::Instant;

use super::attach::{self, NoMatchYet, Prepared};
use crate::{
    aggregate::ProfileKind,
    cli::TopConfig,
    logging, privilege,
    process::Process,
    selection::TargetSpec,
    session::{Session, Wake},
    top::{self, Header, KeyAction, LiveStats, ViewState},
};

/// How often the session wakes to read keys: keys feel immediate well under 100 ms.
const TICK: Duration = Duration::from_millis(50);

pub(crate) fn run(config: TopConfig) -> Result<()> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!(
            "profiler top needs a terminal (its input and output are not one): run it in a terminal, or use \
             `profiler record -o profile.svg` to write a profile"
        );
    }
    let needs = privilege::Needs { kernel_symbols: config.attach.kernel_stacks, write_as_caller: false };
    let (prepared, ()) = attach::prepare(&config.attach, needs, NoMatchYet::Fail, || Ok(()))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(top(config, prepared))
}

async fn top(config: TopConfig, prepared: Prepared) -> Result<()> {
    let mut session = attach::attach(&config.attach, &prepared, TICK).await?;
    let logs = logging::hold();
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let shown = show(&config, &prepared.targets, &mut session, &mut terminal, &logs).await;
    ratatui::restore();
    // Now that the screen is the shell's again.
    drop(logs);
    shown
}

/// Runs the view until `q`, Ctrl-C or SIGTERM.
async fn show(
    config: &TopConfig,
    targets: &[Process],
    session: &mut Session,
    terminal: &mut DefaultTerminal,
    logs: &logging::HeldLogs,
) -> Result<()> {
    let started = Instant::now();
    let mut next_refresh = started + config.refresh;
    let ends_with_targets = matches!(config.attach.target, TargetSpec::Pids(_));
    let mut header = Header { rate_hz: config.attach.rate_hz, ..Header::default() };
    let (mut stats, mut view) = (LiveStats::default(), ViewState::default());
    let mut event_notice: Option<String> = None;
    let mut redraw = true;
    loop {
        while event::poll(Duration::ZERO).context("reading the terminal")? {
            match event::read().context("reading the terminal")? {
                Event::Key(key) => match top::on_key(key, &mut view, &mut stats) {
                    KeyAction::Quit => return Ok(()),
                    KeyAction::Redraw => redraw = true,
                    KeyAction::Ignore => {}
                },
                Event::Resize(..) => redraw = true,
                _ => {}
            }
        }
        for crash in session.pipeline.take_crashes() {
            let report = &crash.report;
            event_notice = Some(format!(
                "{} ({}) crashed: {} in {}",
                report.process_name, report.pid, report.signal_name, report.signature.title
            ));
        }
        if ends_with_targets && event_notice.is_none() && session.live_targets().next().is_none() {
            event_notice = Some("the targets have exited (q to quit)".to_owned());
            redraw = true;
        }
        if Instant::now() >= next_refresh {
            let profiles = session.take_profiles();
            if !view.paused {
                if let Some(cpu) = profiles.iter().find(|profile| profile.kind == ProfileKind::Cpu) {
                    stats.add_interval(cpu);
                }
            }
            next_refresh = Instant::now() + config.refresh;
            redraw = true;
        }
        if redraw {
            // The targets now: children and later matches come, exited ones go.
            let live: Vec<&Process> = session.live_targets().collect();
            header.targets = if live.is_empty() { describe(targets.iter()) } else { describe(live.into_iter()) };
            header.elapsed = started.elapsed();
            header.lost_samples = session.lost_samples();
            header.notice = event_notice.clone().or_else(|| logs.latest());
            terminal.draw(|frame| top::draw(frame, &stats, &view, &header)).context("drawing on the terminal")?;
            redraw = false;
        }
        if session.wait(None).await? == Wake::Stop {
            return Ok(());
        }
    }
}

/// The targets as the header names them: the first few by name and PID, then how many more.
fn describe<'p>(targets: impl Iterator<Item = &'p Process>) -> String {
    const NAMED: usize = 2;
    let mut targets: Vec<&Process> = targets.collect();
    targets.sort_by_key(|target| target.pid);
    let mut names: Vec<String> = targets.iter().take(NAMED).map(|t| format!("{} ({})", t.name, t.pid)).collect();
    if targets.len() > NAMED {
        names.push(format!("and {} more", targets.len() - NAMED));
    }
    names.join(", ")
}
