//! The one start-up path `record` and `run` share: preflight checks, the targets and a check that they can be
//! read, narrowing the agent's privileges, loading and attaching the programs, then adding the targets and the
//! descendants they already have.
//!
//! It comes in two halves because capabilities are per thread: `prepare` runs before the async runtime starts
//! its threads (they inherit the narrowed sets), `attach` inside it.
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::{
    aggregate::ProfileKind,
    cli::AttachConfig,
    privilege,
    process::{self, Process},
    sample::{preflight, SamplerOptions},
    selection::{self, TargetSpec},
    session::Session,
};

/// What `prepare` found and decided, for `attach`.
pub(crate) struct Prepared {
    /// The targets running now (for `run` with --name or --match-cmdline, possibly none yet).
    pub targets: Vec<Process>,
    privileges: privilege::Plan,
}

/// Whether a `--name` or `--match-cmdline` that matches nothing yet is an error (`record`) or something to
/// wait for (`run`: an agent may well start before the service it profiles).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoMatchYet {
    Fail,
    Wait,
}

/// `checks` are the command's own (its outputs, its crash directory), and what they make comes back with the
/// preparation: they run after preflight, so a missing privilege
/// or kernel feature is what a user hears about first, and before anything is loaded.
pub(crate) fn prepare<T>(
    config: &AttachConfig,
    needs: privilege::Needs,
    no_match: NoMatchYet,
    checks: impl FnOnce() -> Result<T>,
) -> Result<(Prepared, T)> {
    preflight::check()?;
    let checked = checks()?;
    let targets = match (&config.target, no_match) {
        (TargetSpec::Pids(_), _) | (_, NoMatchYet::Fail) => selection::resolve(&config.target)?,
        (spec, NoMatchYet::Wait) => selection::resolve(spec).unwrap_or_default(),
    };
    for target in &targets {
        process::check_readable(target.pid)?;
    }
    let privileges = privilege::before_loading(needs)?;
    Ok((Prepared { targets, privileges }, checked))
}

/// Loads and attaches the programs, drops what attaching needed on every thread of the runtime, and starts
/// profiling the targets and their existing descendants. `tick` bounds how stale the pipeline's processing is.
pub(crate) async fn attach(config: &AttachConfig, prepared: &Prepared, tick: Duration) -> Result<Session> {
    let options = SamplerOptions {
        rate_hz: config.rate_hz,
        kernel_stacks: config.kernel_stacks,
        off_cpu_rate_hz: config.pipeline.profiles.need_off_cpu().then_some(config.pipeline.off_cpu_rate_hz),
        memory_period_bytes: config
            .pipeline
            .profiles
            .contains(ProfileKind::Memory)
            .then_some(config.pipeline.memory_period_bytes),
        report_all_execs: config.target.follows_new_processes(),
    };
    let mut session = Session::start(&options, config.pipeline, tick)?;
    session.pipeline.set_labels(&config.labels);
    if let Some(debuginfod) = &config.debuginfod {
        // Names are a bonus: without the cache, profiling goes on with what the machine names.
        match crate::symbolize::Debuginfod::start(debuginfod) {
            Ok(debuginfod) => session.pipeline.fetch_debug_info_from(debuginfod),
            Err(err) => tracing::warn!("no debug info from debuginfod: {err:#}"),
        }
    }
    privilege::after_attach(&prepared.privileges)?;
    if tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
        // The runtime's worker (its only other thread so far) drops them too.
        let plan = prepared.privileges.clone();
        tokio::spawn(async move { privilege::after_attach(&plan) })
            .await
            .context("dropping capabilities on the runtime's worker thread")??;
    }
    privilege::verify_threads(&prepared.privileges)?;
    // With the final capabilities, which its thread inherits.
    crate::watchdog::start();
    session.set_follow_children(config.follow_children);
    session.follow_new_processes(&config.target);
    for target in &prepared.targets {
        session.add_target(target)?;
    }
    // Listed only now that the targets are in the kernel's map: from here on their forks are followed there, and
    // this catches the children forked before (uvicorn's and gunicorn's workers, or any forked while the
    // programs were loading).
    if config.follow_children {
        let roots: Vec<u32> = prepared.targets.iter().map(|t| t.pid).collect();
        for child in process::descendants(&roots).into_iter().filter(|d| !roots.contains(&d.pid)) {
            session.add_target(&child)?;
        }
    }
    session.pipeline.start_window();
    Ok(session)
}
