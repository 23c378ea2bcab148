//! `profiler run`: the continuous profiling agent. Samples the targets as `record` does; at the end of every
//! upload interval hands the window, one profile per service, to the uploader; logs a status line now and then;
//! on SIGTERM or SIGINT sends the last window within a deadline and exits 0.
//!
//! The sampling loop only ever queues windows (see `upload`), so a slow or dead server never delays sampling.
use std::{collections::HashMap, time::Duration};

use anyhow::{Context as _, Result};
use tokio::time::Instant;

use super::attach::{self, NoMatchYet, Prepared};
use crate::{
    aggregate::{Profile, StackCount},
    cli::RunConfig,
    crash::{
        budget::Suppression,
        groups::{describe_crash, CrashGroups},
        index::IndexEntry,
        Crash, CrashWriter, Written,
    },
    privilege,
    selection::TargetSpec,
    session::{Session, Wake},
    timeline::Totals,
    upload::{config::PendingCredentials, labels, split, Credentials, Protocol, UploadStats, Uploader},
};

/// How often the loop drains the ring buffers (the kernel wakes it early only when they fill up), looks at the
/// targets and checks whether a status line is due.
const TICK: Duration = Duration::from_millis(100);
/// Shutdown: the time the last windows get to reach the server (service managers give 10 s or more before
/// SIGKILL).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Crash signatures whose counts the agent keeps (the least recently seen go first).
const MAX_SIGNATURE_GROUPS: usize = 1024;

pub(crate) fn run(config: RunConfig) -> Result<()> {
    // Read while the agent still may (the key file can be root's alone).
    let credentials = config.credentials.clone().map(PendingCredentials::load).transpose()?;
    // Before the runtime starts its threads, so that they inherit the narrowed sets.
    let needs = privilege::Needs { kernel_symbols: config.attach.kernel_stacks, write_as_caller: false };
    // An agent may well start before the service it profiles: the session picks it up when it starts.
    let (prepared, crashes) =
        attach::prepare(&config.attach, needs, NoMatchYet::Wait, || CrashWriter::new(&config.attach.crash_dir))?;
    // The sampling loop runs on this thread, uploads (network, TLS) on the runtime's worker.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("profiler-upload")
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(agent(config, credentials, prepared, crashes))
}

async fn agent(
    config: RunConfig,
    credentials: Option<Credentials>,
    prepared: Prepared,
    crashes: CrashWriter,
) -> Result<()> {
    let mut session = attach::attach(&config.attach, &prepared, TICK).await?;
    let mut services = Services::new(&config);
    services.update(&session);
    if prepared.targets.is_empty() {
        tracing::warn!("no process matches {} yet: waiting for one to start", config.attach.target.describe());
    }

    let endpoint = config.upload.endpoint.clone();
    if endpoint.is_plain_http() && credentials.is_some() && !endpoint.is_loopback() {
        tracing::warn!("sending credentials over plain http to {endpoint} (--allow-insecure)");
    }
    let uploader = Uploader::start(config.upload.clone(), credentials, labels::hostname())?;
    tracing::info!(
        "profiling at {} Hz; a profile per service every {:?} to {endpoint} ({} API)",
        config.attach.rate_hz,
        config.upload_interval,
        config.upload.protocol
    );

    let started = Instant::now();
    let mut next_window = started + config.upload_interval;
    let mut status = Status::new(started, config.status_interval);
    let mut crashes = CrashOutlet { writer: crashes, groups: CrashGroups::new(MAX_SIGNATURE_GROUPS) };
    let reason = loop {
        let wake = session.wait(Some(next_window)).await?;
        let ready = session.pipeline.take_crashes();
        if crashes.report(ready, &mut session, &mut services, &uploader) {
            // The crashed process's samples went up with its crash; the window starts afresh.
            next_window = Instant::now() + config.upload_interval;
        }
        match wake {
            Wake::Deadline => {
                end_window(&mut session, &mut services, &uploader);
                next_window += config.upload_interval;
                // Fell behind (a suspended VM, say): start afresh rather than ending windows back to back.
                if next_window <= Instant::now() {
                    next_window = Instant::now() + config.upload_interval;
                }
            }
            Wake::Tick => {
                services.update(&session);
                if matches!(config.attach.target, TargetSpec::Pids(_)) && session.live_targets().next().is_none() {
                    break "every target process exited";
                }
                status.maybe_log(&session, &uploader);
            }
            Wake::Stop => break "stopping on signal",
        }
    };

    tracing::info!("{reason}: sending the last window (at most {FLUSH_TIMEOUT:?})");
    session.drain();
    let last = session.pipeline.take_all_crashes();
    crashes.report(last, &mut session, &mut services, &uploader);
    end_window(&mut session, &mut services, &uploader);
    let stats = uploader.finish(Instant::now() + FLUSH_TIMEOUT).await;
    if stats.queued > 0 {
        tracing::warn!(
            "{} window(s) ({} bytes) could not be sent before the shutdown deadline and are lost",
            stats.queued,
            stats.queued_bytes
        );
    }
    tracing::info!(
        "stopped: {} windows sent, {} retries, {} dropped, {} rejected",
        stats.sent,
        stats.retries,
        stats.dropped,
        stats.rejected
    );
    Ok(())
}

/// Where `run` sends crashes: the crash directory, and counts per signature for the log.
struct CrashOutlet {
    writer: CrashWriter,
    groups: CrashGroups,
}

impl CrashOutlet {
    /// Writes and uploads `crashes`: the window so far (so the crashed process's last samples are not lost with
    /// it) and the crash stack as its own profile labelled `crash=SIGNAL` and `crash_signature=ID`. A crash a budget
    /// suppressed is counted in the index and the log only. True when a window was ended.
    fn report(
        &mut self,
        crashes: Vec<Crash>,
        session: &mut Session,
        services: &mut Services,
        uploader: &Uploader,
    ) -> bool {
        let mut window_ended = false;
        for crash in crashes {
            let report = &crash.report;
            if crash.suppressed.is_none() {
                if !window_ended {
                    end_window(session, services, uploader);
                    window_ended = true;
                }
                tracing::error!("{}", report.to_text().trim_end());
            }
            let (base, suppressed) = match self.writer.write(&crash) {
                Ok(Written::Report(path)) => {
                    tracing::info!("crash report written to {}", path.display());
                    (path.file_stem().and_then(|s| s.to_str()).map(str::to_owned), None)
                }
                Ok(Written::IndexOnly(_, reason)) => (None, Some(reason)),
                Err(err) => {
                    tracing::error!("{err:#}");
                    (None, crash.suppressed.or(Some(Suppression::DirectoryFull)))
                }
            };
            let group = self.groups.add(&IndexEntry::of(report, base.as_deref(), suppressed));
            tracing::info!("PID {} ({}): {}", report.pid, report.process_name, describe_crash(group, crash.suppressed));
            if crash.suppressed.is_none() && crash.stack.total_samples() > 0 {
                let service = services.named(&report.process_name, report.pid);
                let labels =
                    [("crash", report.signal_name.as_str()), ("crash_signature", report.signature.id.as_str())];
                uploader.submit_labelled(&service, &crash.stack, &labels);
            }
        }
        window_ended
    }
}

/// Ends the current window: its samples, split per service, go to the upload queue.
fn end_window(session: &mut Session, services: &mut Services, uploader: &Uploader) {
    // Samples and lifecycle events already in the ring buffers belong to the window that is ending.
    session.drain();
    services.update(session);
    for profile in session.take_profiles() {
        if profile.stacks.is_empty() {
            tracing::debug!("no {} in this window: nothing to upload", profile.kind.describe());
            continue;
        }
        for (service, profile) in split::by_service(profile, |profile, stack| services.of(profile, stack)) {
            uploader.submit(&service, &profile);
        }
    }
    services.forget_exited(session);
}

/// Which service each profiled process's samples go to.
struct Services {
    /// `--app-name`: one service for everything.
    app_name: Option<String>,
    protocol: Protocol,
    /// Every process seen live during the current window, exited ones included until the window is taken.
    by_pid: HashMap<u32, String>,
}

impl Services {
    fn new(config: &RunConfig) -> Self {
        Self { app_name: config.app_name.clone(), protocol: config.upload.protocol, by_pid: HashMap::new() }
    }

    /// Records the processes the session profiles now (targets found later, children they forked).
    fn update(&mut self, session: &Session) {
        for target in session.live_targets() {
            if self.by_pid.get(&target.pid) != Some(&target.name) {
                let service =
                    self.app_name.clone().unwrap_or_else(|| labels::default_service_name(&target.name, self.protocol));
                tracing::info!("profiling {} (PID {}) as service `{service}`", target.name, target.pid);
                self.by_pid.insert(target.pid, target.name.clone());
            }
        }
    }

    /// The service of one stack: `--app-name`, else its process's name. A process that came and went between
    /// two looks at the targets (a short-lived child) is named by the process frame the pipeline gave it.
    fn of(&self, profile: &Profile, stack: &StackCount) -> String {
        if let Some(app_name) = &self.app_name {
            return app_name.clone();
        }
        let name = split::pid_of(stack)
            .and_then(|pid| self.by_pid.get(&pid).map(String::as_str))
            .or_else(|| split::process_name_of(profile, stack))
            .unwrap_or("unknown");
        labels::default_service_name(name, self.protocol)
    }

    /// The service of process `pid` (named `name` when it is not known any more).
    fn named(&self, name: &str, pid: u32) -> String {
        if let Some(app_name) = &self.app_name {
            return app_name.clone();
        }
        let name = self.by_pid.get(&pid).map_or(name, String::as_str);
        labels::default_service_name(name, self.protocol)
    }

    /// After a window is taken: forgets processes that are gone.
    fn forget_exited(&mut self, session: &Session) {
        let live: std::collections::HashSet<u32> = session.live_targets().map(|t| t.pid).collect();
        self.by_pid.retain(|pid, _| live.contains(pid));
    }
}

/// The periodic one-line status in the log.
struct Status {
    every: Duration,
    next: Instant,
    last: Instant,
    last_samples: u64,
}

impl Status {
    fn new(started: Instant, every: Duration) -> Self {
        Self { every, next: started + every, last: started, last_samples: 0 }
    }

    fn maybe_log(&mut self, session: &Session, uploader: &Uploader) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + self.every;
        let samples = session.pipeline.stats.samples;
        let rate = (samples - self.last_samples) as f64 / now.duration_since(self.last).as_secs_f64().max(1e-3);
        self.last = now;
        self.last_samples = samples;
        let targets = session.live_targets().count();
        let memory = session.pipeline.memory_totals(self.every.as_nanos() as u64);
        tracing::info!("{}", status_line(rate, targets, &memory, &uploader.stats(), session.lost_samples()));
    }
}

fn status_line(samples_per_s: f64, targets: usize, memory: &Totals, stats: &UploadStats, lost: u64) -> String {
    format!(
        "status: {samples_per_s:.1} samples/s, {targets} targets ({}), {} windows sent, {} retries, {} dropped, {} \
         rejected, queue {} windows / {} bytes, {lost} samples lost",
        memory.describe(),
        stats.sent,
        stats.retries,
        stats.dropped,
        stats.rejected,
        stats.queued,
        stats.queued_bytes
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_names_every_counter() {
        let stats = UploadStats { sent: 12, retries: 3, dropped: 1, rejected: 0, queued: 2, queued_bytes: 4096 };
        let memory = Totals { rss_kib: 102_400, rss_anon_kib: 81_920, growth_kib_per_s: 512.0, threads: 9 };
        assert_eq!(
            status_line(299.96, 2, &memory, &stats, 5),
            "status: 300.0 samples/s, 2 targets (RSS 100.0 MiB (anon 80.0 MiB, +0.5 MiB/s), 9 threads), 12 windows \
             sent, 3 retries, 1 dropped, 0 rejected, queue 2 windows / 4096 bytes, 5 samples lost"
        );
    }
}
