//! `profiler record`: sample the targets until the duration ends, Ctrl-C, or (for --pid without --duration) the
//! targets exit; then print a summary and write every output.
use std::{io::IsTerminal as _, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result};
use tokio::time::Instant;

use super::{
    attach::{self, NoMatchYet, Prepared},
    status::StatusLine,
    summary, waits,
};
use crate::{
    aggregate::ProfileKind,
    cli::RecordConfig,
    crash::{Crash, CrashWriter, Written},
    output::{self, OutputFormat},
    privilege,
    selection::TargetSpec,
    session::Wake,
};

/// Userspace drains on this tick rather than being woken per sample (which would bias what it measures), so the
/// tick bounds how stale processing is: short, so names are read while short-lived processes still exist.
const TICK: Duration = Duration::from_millis(50);

pub(crate) fn run(config: RecordConfig) -> Result<()> {
    let needs = privilege::Needs { kernel_symbols: config.attach.kernel_stacks, write_as_caller: true };
    let (prepared, crash_writer) = attach::prepare(&config.attach, needs, NoMatchYet::Fail, || {
        for path in output_paths(&config).map(|(path, _, _)| path).chain(config.stats_json.clone()) {
            output::check_writable(&path)?;
        }
        CrashWriter::new(&config.attach.crash_dir)
    })?;
    // One thread: the only one whose capabilities there are to narrow.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(record(config, prepared, crash_writer))
}

async fn record(config: RecordConfig, prepared: Prepared, mut crashes: CrashWriter) -> Result<()> {
    let mut session = attach::attach(&config.attach, &prepared, TICK).await?;
    let targets = prepared.targets;

    let started = Instant::now();
    let deadline = config.duration.map(|duration| started + duration);
    let ends_with_targets = config.duration.is_none() && matches!(config.attach.target, TargetSpec::Pids(_));
    let mut status = StatusLine::new(std::io::stderr().is_terminal());
    while session.wait(deadline).await? == Wake::Tick {
        write_crashes(session.pipeline.take_crashes(), &mut crashes);
        if ends_with_targets && session.live_targets().next().is_none() {
            break;
        }
        status.show(started.elapsed(), &session.pipeline.stats, session.lost_samples());
    }
    let live: Vec<u32> = session.live_targets().map(|t| t.pid).collect();
    // While they are still targets: their threads blocked since before sampling began.
    session.read_blocked_threads();
    for pid in live {
        session.remove_target(pid);
    }
    // Samples already in the ring buffer are part of the recording.
    session.drain();
    status.clear();
    write_crashes(session.pipeline.take_all_crashes(), &mut crashes);

    let elapsed = started.elapsed();
    let profiles = session.take_profiles();
    let cpu = profiles.iter().find(|p| p.kind == ProfileKind::Cpu).cloned().unwrap_or_default();
    summary::print(&mut std::io::stderr(), &cpu, &session.pipeline.stats, session.lost_samples(), elapsed)?;
    waits::print(&mut std::io::stderr(), &profiles)?;
    summary::print_memory(&mut std::io::stderr(), &profiles, &session.pipeline.stats)?;
    if let Some(path) = &config.stats_json {
        summary::write_json(path, &session.pipeline.stats, session.lost_samples(), elapsed)?;
    }
    let names: Vec<String> = targets.iter().map(|t| format!("{} ({})", t.name, t.pid)).collect();
    let title = format!("profiler record: {}", names.join(", "));
    for (path, format, kind) in output_paths(&config) {
        let Some(profile) = profiles.iter().find(|p| p.kind == kind) else { continue };
        let title = if kind == ProfileKind::Cpu { title.clone() } else { format!("{title}: {}", kind.describe()) };
        match (&config.group_by, format) {
            (Some(key), OutputFormat::FlameGraphSvg | OutputFormat::Folded) => {
                output::write_profile(&output::group::by_label(profile, key), &path, format, &title)?
            }
            _ => output::write_profile(profile, &path, format, &title)?,
        }
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Every file the recording writes: each output the user named, once per profile kind asked for.
fn output_paths(config: &RecordConfig) -> impl Iterator<Item = (PathBuf, OutputFormat, ProfileKind)> + '_ {
    config.outputs.iter().flat_map(|(path, format)| {
        config
            .attach
            .pipeline
            .profiles
            .iter()
            .enumerate()
            .map(move |(index, kind)| (output::path_for(path, kind, index == 0), *format, kind))
    })
}

/// Writes the reports of `crashes` and prints each to stderr; a crash a budget suppressed is one line.
fn write_crashes(crashes: Vec<Crash>, writer: &mut CrashWriter) {
    for crash in crashes {
        let report = &crash.report;
        if crash.suppressed.is_none() {
            eprint!("{}", report.to_text());
        }
        match writer.write(&crash) {
            Ok(Written::Report(path)) => eprintln!("crash report written to {}", path.display()),
            Ok(Written::IndexOnly(index, reason)) => eprintln!(
                "crash: {} ({} {}), signature {} {}: {}, counted in {}",
                report.signal_name,
                report.process_name,
                report.pid,
                report.signature.id,
                report.signature.title,
                reason.describe(),
                index.display()
            ),
            Err(err) => tracing::error!("{err:#}"),
        }
    }
}
