//! `profiler record`: sample the targets until the duration ends, Ctrl-C, or (for --pid without --duration) the
//! targets exit; then print a summary and write every output.
use std::{io::IsTerminal as _, time::Duration};

use anyhow::{Context as _, Result};
use tokio::time::Instant;

use super::{RecordConfig, status::StatusLine, summary};
use crate::{
    crash::{Crash, CrashWriter},
    output, privilege,
    sample::{SamplerOptions, preflight},
    session::{Session, Wake},
    target::{self, TargetSpec},
};

pub fn run(config: RecordConfig) -> Result<()> {
    preflight::check()?;
    for path in config.outputs.iter().map(|(path, _)| path).chain(&config.stats_json) {
        output::check_writable(path)?;
    }
    let crash_writer = CrashWriter::new(&config.crash_dir)?;
    let targets = target::resolve(&config.target)?;
    for target in &targets {
        crate::unwind::process::check_readable(target.pid)?;
    }
    let privileges = privilege::before_loading(privilege::Needs { kernel_symbols: config.kernel_stacks, write_as_caller: true })?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(record(config, targets, crash_writer, privileges))
}

async fn record(
    config: RecordConfig,
    targets: Vec<target::Target>,
    mut crashes: CrashWriter,
    privileges: privilege::Plan,
) -> Result<()> {
    let options = SamplerOptions {
        rate_hz: config.rate_hz,
        kernel_stacks: config.kernel_stacks,
        report_all_execs: config.target.follows_new_processes(),
    };
    // Userspace drains on this tick rather than being woken per sample (which would bias what it measures), so
    // the tick bounds how stale processing is: short, so names are read while short-lived processes still exist.
    let mut session = Session::start(&options, config.pipeline, Duration::from_millis(50))?;
    // One thread (a current-thread runtime): it is the only one to narrow.
    privilege::after_attach(&privileges)?;
    privilege::verify_threads(&privileges)?;
    session.set_follow_children(config.follow_children);
    session.follow_new_processes(&config.target);
    for target in &targets {
        session.add_target(target)?;
    }
    // Listed only now that the targets are in the kernel's map: from here on their forks are followed there, and
    // this catches the children forked before (while the programs were loading, say).
    if config.follow_children {
        let roots: Vec<u32> = targets.iter().map(|t| t.pid).collect();
        for child in target::descendants(&roots).into_iter().filter(|d| !roots.contains(&d.pid)) {
            session.add_target(&child)?;
        }
    }

    let started = Instant::now();
    let deadline = config.duration.map(|duration| started + duration);
    let ends_with_targets = config.duration.is_none() && matches!(config.target, TargetSpec::Pids(_));
    let mut status = StatusLine::new(std::io::stderr().is_terminal());
    while session.wait(deadline).await? == Wake::Tick {
        write_crashes(session.pipeline.take_crashes(), &mut crashes);
        if ends_with_targets && session.live_targets().next().is_none() {
            break;
        }
        status.show(started.elapsed(), &session.pipeline.stats, session.lost_samples());
    }
    let live: Vec<u32> = session.live_targets().map(|t| t.pid).collect();
    for pid in live {
        session.remove_target(pid);
    }
    // Samples already in the ring buffer are part of the recording.
    session.drain();
    status.clear();
    write_crashes(session.pipeline.take_all_crashes(), &mut crashes);

    let elapsed = started.elapsed();
    let profile = session.pipeline.take_profile();
    summary::print(&mut std::io::stderr(), &profile, &session.pipeline.stats, session.lost_samples(), elapsed)?;
    if let Some(path) = &config.stats_json {
        summary::write_json(path, &session.pipeline.stats, session.lost_samples(), elapsed)?;
    }
    let names: Vec<String> = targets.iter().map(|t| format!("{} ({})", t.name, t.pid)).collect();
    let title = format!("profiler record: {}", names.join(", "));
    for (path, format) in &config.outputs {
        output::write_profile(&profile, path, *format, &title)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Writes the reports of `crashes` and prints each to stderr.
fn write_crashes(crashes: Vec<Crash>, writer: &mut CrashWriter) {
    for crash in crashes {
        eprint!("{}", crash.report.to_text());
        match writer.write(&crash) {
            Ok(path) => eprintln!("crash report written to {}", path.display()),
            Err(err) => tracing::error!("{err:#}"),
        }
    }
}
