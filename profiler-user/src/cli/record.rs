//! `profiler record`: sample the targets until the duration ends, Ctrl-C, or (for --pid without --duration) the
//! targets exit; then write every output and print a summary.
use std::{
    io::IsTerminal as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval, sleep_until},
};

use super::{RecordConfig, status::StatusLine, summary};
use crate::{
    output,
    pipeline::Pipeline,
    sample::{Sampler, SamplerOptions, preflight},
    target::{self, TargetSpec},
};

pub fn run(config: RecordConfig) -> Result<()> {
    preflight::check()?;
    for (path, _) in &config.outputs {
        output::check_writable(path)?;
    }
    let targets = target::resolve(&config.target)?;
    for target in &targets {
        crate::unwind::process::check_readable(target.pid)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(record(config, targets))
}

async fn record(config: RecordConfig, targets: Vec<target::Target>) -> Result<()> {
    let mut sampler = Sampler::load(&SamplerOptions { rate_hz: config.rate_hz, kernel_stacks: config.kernel_stacks })?;
    let ring = sampler.take_samples().context("the sampler's ring buffer was already taken")?;
    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged until the AsyncFd is dropped.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|err| anyhow::anyhow!("polling the ring buffer: {err}"))?;
    let mut pipeline = Pipeline::new(1_000_000_000 / config.rate_hz);
    for target in &targets {
        pipeline.set_process_name(target.pid, &target.name);
        sampler.add_target(target.pid)?;
    }

    let started = Instant::now();
    let deadline = config.duration.map(|d| tokio::time::Instant::from_std(started + d));
    let ends_with_targets = config.duration.is_none() && matches!(config.target, TargetSpec::Pids(_));
    let mut status = StatusLine::new(std::io::stderr().is_terminal());
    let mut tick = interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut alive = targets.clone();

    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting for samples")?;
                let ring = guard.get_inner_mut();
                while let Some(record) = ring.next() {
                    pipeline.process_record(&record, &sampler);
                }
                guard.clear_ready();
            }
            _ = async { sleep_until(deadline.unwrap()).await }, if deadline.is_some() => break,
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = tick.tick() => {
                alive.retain(|target| {
                    let running = target.is_alive();
                    if !running {
                        sampler.remove_target(target.pid);
                    }
                    running
                });
                if ends_with_targets && alive.is_empty() {
                    break;
                }
                status.show(started.elapsed(), &pipeline.stats, sampler.lost_samples().unwrap_or(0));
            }
        }
    }
    for target in &targets {
        sampler.remove_target(target.pid);
    }
    // Samples already in the ring buffer are part of the recording.
    let ring = ring.get_mut();
    while let Some(record) = ring.next() {
        pipeline.process_record(&record, &sampler);
    }
    status.clear();

    let elapsed = started.elapsed();
    let lost = sampler.lost_samples()?;
    let profile = pipeline.take_profile();
    let title = format!("profiler record: {}", targets.iter().map(|t| format!("{} ({})", t.name, t.pid)).collect::<Vec<_>>().join(", "));
    summary::print(&mut std::io::stderr(), &profile, &pipeline.stats, lost, elapsed)?;
    for (path, format) in &config.outputs {
        output::write_profile(&profile, path, *format, &title)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
