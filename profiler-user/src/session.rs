//! A profiling session: the loaded sampler, its ring buffer and the pipeline, driven by one event loop.
//!
//! `record` and `run` differ only in what they do between wake-ups (status line, end conditions, upload
//! windows), so the loop that feeds samples through the pipeline lives here once.
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{Signal, SignalKind, signal},
    time::{Instant, Interval, MissedTickBehavior, interval, sleep_until},
};

use crate::{
    pipeline::{Pipeline, PipelineOptions},
    sample::{Sampler, SamplerOptions},
    target::Target,
};

/// Why `wait` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The periodic tick: time for status and housekeeping.
    Tick,
    /// The deadline passed.
    Deadline,
    /// SIGINT or SIGTERM.
    Stop,
}

pub struct Session {
    sampler: Sampler,
    ring: AsyncFd<RingBuf<MapData>>,
    pub pipeline: Pipeline,
    tick: Interval,
    interrupt: Signal,
    terminate: Signal,
}

impl Session {
    /// Loads and attaches the sampler; must run inside the tokio runtime.
    pub fn start(options: &SamplerOptions, pipeline: PipelineOptions, tick_every: Duration) -> Result<Self> {
        let mut sampler = Sampler::load(options)?;
        let ring = sampler.take_samples().context("the sampler's ring buffer was already taken")?;
        // SAFETY: the RingBuf owns its map fd, which stays open and unchanged until the AsyncFd is dropped.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|err| anyhow!("polling the ring buffer: {err}"))?;
        let mut tick = interval(tick_every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Self {
            sampler,
            ring,
            pipeline: Pipeline::new(1_000_000_000 / options.rate_hz, pipeline),
            tick,
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    pub fn add_target(&mut self, target: &Target) -> Result<()> {
        self.pipeline.set_process_name(target.pid, &target.name);
        if let Some(layout) = self.pipeline.python_layout(target.pid) {
            self.sampler.set_python_layout(target.pid, &layout)?;
        }
        self.sampler.add_target(target.pid)
    }

    /// Stops sampling a process; its samples already queued are still processed.
    pub fn remove_target(&mut self, pid: u32) {
        self.sampler.remove_target(pid);
    }

    /// Feeds samples through the pipeline until the next tick, the deadline or a stop signal.
    pub async fn wait(&mut self, deadline: Option<Instant>) -> Result<Wake> {
        loop {
            tokio::select! {
                guard = self.ring.readable_mut() => {
                    let mut guard = guard.context("waiting for samples")?;
                    let ring = guard.get_inner_mut();
                    while let Some(record) = ring.next() {
                        self.pipeline.process_record(&record, &self.sampler);
                    }
                    guard.clear_ready();
                }
                _ = async { sleep_until(deadline.unwrap()).await }, if deadline.is_some() => return Ok(Wake::Deadline),
                _ = self.interrupt.recv() => return Ok(Wake::Stop),
                _ = self.terminate.recv() => return Ok(Wake::Stop),
                _ = self.tick.tick() => return Ok(Wake::Tick),
            }
        }
    }

    /// Processes every record already in the ring buffer (at the end of a recording or window).
    pub fn drain(&mut self) {
        let ring = self.ring.get_mut();
        while let Some(record) = ring.next() {
            self.pipeline.process_record(&record, &self.sampler);
        }
    }

    /// Samples the kernel dropped because the ring buffer was full.
    pub fn lost_samples(&self) -> u64 {
        self.sampler.lost_samples().unwrap_or_else(|err| {
            tracing::warn!("{err:#}");
            0
        })
    }
}
