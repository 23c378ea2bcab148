//! Uploads profile windows to a Pyroscope-compatible server (Grafana Cloud Profiles, Pyroscope, Grafana Alloy)
//! without ever making the sampling loop wait for the network.
//!
//! The sampling loop hands each window to [`Uploader::submit`], which encodes it and puts it in a bounded
//! [`queue`] under a mutex held for microseconds; a separate tokio task takes windows oldest first and sends them
//! one at a time, retrying as [`client`] classifies the outcome. A dead or slow server therefore costs queued
//! bytes up to the bound, then the oldest windows, and nothing else. [`Uploader::finish`] flushes what is left
//! within a deadline at shutdown.
pub(crate) mod client;
pub(crate) mod config;
pub(crate) mod labels;
pub(crate) mod protocol;
pub(crate) mod queue;
pub(crate) mod split;

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use anyhow::Result;
use tokio::{
    sync::Notify,
    task::JoinHandle,
    time::{sleep_until, Instant},
};

pub(crate) use self::config::{Credentials, Endpoint, KeySource, Protocol, Secret, UploadConfig};
use self::{
    client::{Backoff, Client, Outcome},
    protocol::RequestBuilder,
    queue::{Queue, Upload},
};
use crate::aggregate::Profile;

const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Wrong credentials stay wrong until someone fixes them: keep trying, but rarely.
const AUTH_RETRY: Duration = Duration::from_secs(60);

/// Counters for the status line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct UploadStats {
    /// Windows the server accepted.
    pub sent: u64,
    /// Failed attempts that were retried (or are waiting to be).
    pub retries: u64,
    /// Windows dropped unsent: the queue was full or they grew older than the age bound.
    pub dropped: u64,
    /// Windows the server refused for good (a 4xx other than 401/403/408/429).
    pub rejected: u64,
    pub queued: usize,
    pub queued_bytes: usize,
}

struct State {
    queue: Queue,
    sent: u64,
    retries: u64,
    rejected: u64,
    /// Set by `finish`: send what is left by then, without waiting out long backoffs.
    flush_by: Option<Instant>,
}

struct Shared {
    state: Mutex<State>,
    /// A window was queued.
    work: Notify,
    /// `finish` was called: cut the current backoff short.
    flush: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters, not broken invariants: keep going.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The producer side of the upload queue, and the task that drains it.
pub(crate) struct Uploader {
    shared: Arc<Shared>,
    builder: RequestBuilder,
    max_queue_bytes: usize,
    task: JoinHandle<()>,
}

impl Uploader {
    /// Starts the upload task on the current tokio runtime.
    /// `credentials`: loaded (`PendingCredentials::load`) before the agent gave up the right to read the key.
    pub(crate) fn start(
        config: UploadConfig,
        credentials: Option<Credentials>,
        hostname: Option<String>,
    ) -> Result<Self> {
        let client = Client::new(credentials, config.tenant_id.clone())?;
        let builder = RequestBuilder::new(&config, hostname);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: Queue::new(config.max_queue_bytes, config.max_queue_age),
                sent: 0,
                retries: 0,
                rejected: 0,
                flush_by: None,
            }),
            work: Notify::new(),
            flush: Notify::new(),
        });
        let task =
            tokio::spawn(upload_loop(shared.clone(), client, config.endpoint.to_string(), config.request_timeout));
        Ok(Self { shared, builder, max_queue_bytes: config.max_queue_bytes, task })
    }

    /// Queues `profile` as the service `service`; never waits for the network.
    pub(crate) fn submit(&self, service: &str, profile: &Profile) {
        self.submit_labelled(service, profile, &[]);
    }

    /// Like `submit`, with labels that mark this one profile (a crash's stack: `crash=SIGSEGV`).
    pub(crate) fn submit_labelled(&self, service: &str, profile: &Profile, extra: &[(&str, &str)]) {
        let request = match self.builder.build(service, profile, extra) {
            Ok(request) => request,
            Err(err) => {
                tracing::warn!("dropping the window of {service}: {err:#}");
                return;
            }
        };
        let upload = Upload { service: service.to_owned(), request };
        let (dropped, total) = {
            let mut state = self.shared.lock();
            let dropped = state.queue.push(upload, std::time::Instant::now());
            (dropped, state.queue.dropped())
        };
        if dropped > 0 {
            tracing::warn!(
                "upload queue full ({} bytes) or windows older than --max-queue-age: dropped the {dropped} oldest \
                 window(s), {total} so far",
                self.max_queue_bytes
            );
        }
        self.shared.work.notify_one();
    }

    pub(crate) fn stats(&self) -> UploadStats {
        let state = self.shared.lock();
        UploadStats {
            sent: state.sent,
            retries: state.retries,
            dropped: state.queue.dropped(),
            rejected: state.rejected,
            queued: state.queue.len(),
            queued_bytes: state.queue.bytes(),
        }
    }

    /// Sends what is queued until all of it is delivered or `deadline` passes, then stops the task. What is
    /// still queued after that shows in the returned `queued`.
    pub(crate) async fn finish(mut self, deadline: Instant) -> UploadStats {
        self.shared.lock().flush_by = Some(deadline);
        self.shared.flush.notify_one();
        self.shared.work.notify_one();
        // The task checks the deadline between attempts and bounds each attempt by it; the grace covers the rest.
        if tokio::time::timeout_at(deadline + Duration::from_millis(250), &mut self.task).await.is_err() {
            self.task.abort();
        }
        self.stats()
    }
}

/// Sends queued windows oldest first, one at a time, each until it is delivered, refused for good or too old.
async fn upload_loop(shared: Arc<Shared>, client: Client, endpoint: String, timeout: Duration) {
    let mut backoff = Backoff::new(INITIAL_BACKOFF, MAX_BACKOFF);
    // Failed attempts since the last success: the first of a run is logged, the rest only counted.
    let mut failures_in_a_row = 0u64;
    let mut auth_reported = false;
    // A refusal (a wrong URL, say) would repeat for every window: each status is logged once, then counted.
    let mut refusals_reported: Vec<u16> = Vec::new();
    loop {
        let (next, flush_by) = {
            let mut state = shared.lock();
            (state.queue.next(std::time::Instant::now()), state.flush_by)
        };
        let Some((id, upload)) = next else {
            if flush_by.is_some() {
                return;
            }
            shared.work.notified().await;
            continue;
        };

        loop {
            let flush_by = shared.lock().flush_by;
            let now = Instant::now();
            if flush_by.is_some_and(|deadline| now >= deadline) {
                return;
            }
            let attempt_timeout = flush_by.map_or(timeout, |deadline| timeout.min(deadline - now));
            let delay = match client.send(&upload.request, attempt_timeout).await {
                Outcome::Delivered => {
                    {
                        let mut state = shared.lock();
                        state.queue.finish(id);
                        state.sent += 1;
                    }
                    if failures_in_a_row > 0 {
                        tracing::info!(
                            "uploads to {endpoint} go through again (after {failures_in_a_row} failed attempts)"
                        );
                    }
                    failures_in_a_row = 0;
                    auth_reported = false;
                    backoff.reset();
                    break;
                }
                Outcome::Rejected { status, message } => {
                    {
                        let mut state = shared.lock();
                        state.queue.finish(id);
                        state.rejected += 1;
                    }
                    let why =
                        if message.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {message}") };
                    if refusals_reported.contains(&status) {
                        tracing::debug!("the server refused the window of {} ({why})", upload.service);
                    } else {
                        refusals_reported.push(status);
                        tracing::error!(
                            "the server refused the window of {} ({why}); it is dropped, as are later windows it \
                             refuses (counted as rejected in the status line)",
                            upload.service
                        );
                    }
                    break;
                }
                Outcome::Unauthorized { status, message } => {
                    if flush_by.is_some() {
                        // Shutting down: the credentials will not become right before the deadline.
                        return;
                    }
                    if !auth_reported {
                        let said = if message.is_empty() { String::new() } else { format!(" (server: {message})") };
                        tracing::error!(
                            "upload rejected ({status}): check PYROSCOPE_USERNAME / API key{said}; retrying every {} s, \
                             profiling goes on",
                            AUTH_RETRY.as_secs()
                        );
                        auth_reported = true;
                    }
                    failures_in_a_row += 1;
                    AUTH_RETRY
                }
                Outcome::Retry { reason, after } => {
                    if failures_in_a_row == 0 {
                        tracing::warn!(
                            "upload to {endpoint} failed ({reason}); retrying with backoff, windows wait in the queue"
                        );
                    } else {
                        tracing::debug!("upload to {endpoint} failed again ({reason})");
                    }
                    failures_in_a_row += 1;
                    after.unwrap_or_else(|| backoff.next_delay())
                }
            };

            let kept = {
                let mut state = shared.lock();
                state.retries += 1;
                state.queue.retry(id, std::time::Instant::now())
            };
            if !kept {
                tracing::warn!("dropped a window of {}: it is older than --max-queue-age", upload.service);
                break;
            }
            let flush_by = shared.lock().flush_by;
            let wake = Instant::now() + delay;
            let wake = flush_by.map_or(wake, |deadline| wake.min(deadline));
            tokio::select! {
                _ = sleep_until(wake) => {}
                // Shutting down: stop waiting out a long backoff, there is little time left.
                _ = shared.flush.notified(), if flush_by.is_none() => {}
            }
        }
    }
}
