//! A profiling session: the loaded sampler, its ring buffers, the pipeline and the set of live targets, driven
//! by one event loop.
//!
//! `record` and `run` differ only in what they do between wake-ups (status line, end conditions, upload
//! windows), so the loop that feeds samples through the pipeline and follows process lifecycles lives here once.
use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use anyhow::{anyhow, Context as _, Result};
use aya::maps::{MapData, RingBuf};
use profiler_common::PyLayout;
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, Signal, SignalKind},
    time::{interval, sleep_until, Instant, Interval, MissedTickBehavior},
};

use crate::{
    dump::{self, Place},
    pipeline::{Pipeline, PipelineOptions},
    process::task,
    process::Process,
    python::threads as py_threads,
    sample::{CpuSample, Lifecycle, Sampler, SamplerOptions, TimedLifecycle},
    selection::{self, TargetSpec},
};

/// Why `wait` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The periodic tick: time for status and housekeeping.
    Tick,
    /// The deadline passed.
    Deadline,
    /// SIGINT or SIGTERM.
    Stop,
}

pub(crate) struct Session {
    sampler: Sampler,
    samples: AsyncFd<RingBuf<MapData>>,
    events: AsyncFd<RingBuf<MapData>>,
    crashes: AsyncFd<RingBuf<MapData>>,
    pub pipeline: Pipeline,
    tick: Interval,
    interrupt: Signal,
    terminate: Signal,
    live: HashMap<u32, Process>,
    /// Matches processes that start later (`--name`, `--match-cmdline`); `None` for `--pid` sessions.
    matcher: Option<TargetSpec>,
    follow_children: bool,
    lost_events_seen: u64,
    /// When the targets were last checked for liveness and pending interpreters: not on every (short) tick.
    last_scan: Option<Instant>,
    /// When the targets' memory and threads were last read for their timelines.
    last_timeline: Option<Instant>,
}

/// How often `housekeeping` looks at /proc for every target.
const SCAN_EVERY: Duration = Duration::from_millis(250);
/// How often each target's memory and threads are read (`timeline`).
const TIMELINE_EVERY: Duration = Duration::from_secs(1);

impl Session {
    /// Loads and attaches the sampler; must run inside the tokio runtime.
    pub(crate) fn start(options: &SamplerOptions, pipeline: PipelineOptions, tick_every: Duration) -> Result<Self> {
        let mut sampler = Sampler::load(options)?;
        let samples = register(sampler.take_samples().context("the sample ring buffer was already taken")?)?;
        let events = register(sampler.take_events().context("the event ring buffer was already taken")?)?;
        let crashes = register(sampler.take_crashes().context("the crash ring buffer was already taken")?)?;
        let mut tick = interval(tick_every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut pipeline = Pipeline::new(1_000_000_000 / options.rate_hz, pipeline);
        pipeline.take_map_changes_from(sampler.untaken_map_changes()?);
        Ok(Self {
            sampler,
            samples,
            events,
            crashes,
            pipeline,
            tick,
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            live: HashMap::new(),
            matcher: None,
            follow_children: true,
            lost_events_seen: 0,
            last_scan: None,
            last_timeline: None,
        })
    }

    /// Whether processes forked by targets are profiled too (default: yes).
    pub(crate) fn set_follow_children(&mut self, follow: bool) {
        self.follow_children = follow;
    }

    /// Profiles processes that start later and match `spec` (needs `SamplerOptions::report_all_execs`).
    pub(crate) fn follow_new_processes(&mut self, spec: &TargetSpec) {
        self.matcher = spec.follows_new_processes().then(|| spec.clone());
    }

    pub(crate) fn add_target(&mut self, target: &Process) -> Result<()> {
        let _busy = crate::watchdog::busy(target.pid, "reading its maps, unwind tables and interpreter");
        self.pipeline.set_process_name(target.pid, &target.name);
        self.pipeline.prepare_process(target.pid);
        if let Some(layout) = self.pipeline.python_layout(target.pid) {
            python_found(&mut self.sampler, target.pid, &layout)?;
        }
        self.sampler.add_target(target.pid, self.follow_children)?;
        self.live.insert(target.pid, target.clone());
        Ok(())
    }

    /// Stops sampling a process; its samples already queued are still processed.
    pub(crate) fn remove_target(&mut self, pid: u32) {
        self.sampler.remove_target(pid);
        self.live.remove(&pid);
    }

    /// The processes being profiled now.
    pub(crate) fn live_targets(&self) -> impl Iterator<Item = &Process> {
        self.live.values()
    }

    /// Feeds samples through the pipeline and follows lifecycle events until the next tick, the deadline or a
    /// stop signal.
    pub(crate) async fn wait(&mut self, deadline: Option<Instant>) -> Result<Wake> {
        loop {
            tokio::select! {
                guard = self.samples.readable_mut() => {
                    guard.context("waiting for samples")?.clear_ready();
                    self.drain();
                }
                guard = self.events.readable_mut() => {
                    guard.context("waiting for lifecycle events")?.clear_ready();
                    self.drain();
                }
                guard = self.crashes.readable_mut() => {
                    guard.context("waiting for crashes")?.clear_ready();
                    self.drain();
                }
                _ = async { sleep_until(deadline.unwrap()).await }, if deadline.is_some() => return Ok(Wake::Deadline),
                _ = self.interrupt.recv() => return Ok(Wake::Stop),
                _ = self.terminate.recv() => return Ok(Wake::Stop),
                _ = self.tick.tick() => {
                    // Records already queued (a crash, a process's last samples) come before forgetting anyone.
                    self.drain();
                    self.housekeeping();
                    return Ok(Wake::Tick);
                }
            }
        }
    }

    /// Processes every record in the ring buffers, samples, crashes and lifecycle events merged in time order:
    /// a sample taken after an exec must be unwound with the new image's maps, a crash report's window must hold
    /// the samples taken before it, and a process's last samples and crash come before its exit frees its state.
    pub(crate) fn drain(&mut self) {
        // Disjoint borrows: the sample ring is read while the pipeline and target set change.
        let Session { samples, events, crashes, pipeline, sampler, live, matcher, follow_children, .. } = self;
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let mut read_until = read_pending(crashes, events, &mut pending);
        pipeline.set_upcoming_map_changes(map_changes(&pending));
        let handle =
            |pending: Pending, pipeline: &mut Pipeline, sampler: &mut Sampler, live: &mut HashMap<u32, Process>| {
                match pending {
                    Pending::Crash { record, .. } => {
                        if let Some(record) = pipeline.parse_record(&record) {
                            pipeline.process_record(&record, sampler);
                        }
                    }
                    Pending::Event(event) => {
                        handle_event(pipeline, sampler, live, matcher.as_ref(), *follow_children, event)
                    }
                }
            };
        let ring = samples.get_mut();
        while let Some(record) = ring.next() {
            let Some(sample) = pipeline.parse_record(&record) else { continue };
            // Samples keep arriving while we work: one newer than the last look at the other rings may come after
            // an event we have not read yet (an exec whose new maps it needs).
            // Also when the maps in use were read after the last look: a code mapping between the two would make
            // them the wrong maps for this sample (see `Unwinder::unwind`).
            if sample.time_ns() > read_until || pipeline.maps_read_at(sample.pid()) > read_until {
                read_until = read_pending(crashes, events, &mut pending);
                pipeline.set_upcoming_map_changes(map_changes(&pending));
            }
            let mut handled_map_change = false;
            while pending.front().is_some_and(|p| p.time_ns() <= sample.time_ns()) {
                let next = pending.pop_front().expect("front exists");
                handled_map_change |=
                    matches!(&next, Pending::Event(e) if matches!(e.event, Lifecycle::MapsChanged { .. }));
                handle(next, pipeline, sampler, live);
            }
            if handled_map_change {
                pipeline.set_upcoming_map_changes(map_changes(&pending));
            }
            pipeline.process_record(&sample, sampler);
        }
        for next in pending {
            handle(next, pipeline, sampler, live);
        }
    }

    fn housekeeping(&mut self) {
        {
            let _busy = crate::watchdog::busy(0, "re-reading the maps of processes that loaded code");
            self.pipeline.refresh_changed_maps();
        }
        if self.last_timeline.is_none_or(|at| at.elapsed() >= TIMELINE_EVERY) {
            self.last_timeline = Some(Instant::now());
            let _busy = crate::watchdog::busy(0, "reading the targets' memory and thread counts");
            for pid in self.live.keys() {
                // A process that just exited has no status: its timeline ends with its last reading.
                if let Ok(status) = crate::process::status::read(*pid) {
                    self.pipeline.add_timeline_point(*pid, crate::sample::monotonic_ns(), status);
                }
            }
        }
        if self.last_scan.is_some_and(|at| at.elapsed() < SCAN_EVERY) {
            return;
        }
        self.last_scan = Some(Instant::now());
        let layouts = {
            let _busy = crate::watchdog::busy(0, "looking for the interpreters of new processes");
            self.pipeline.new_python_layouts()
        };
        for (pid, layout) in layouts {
            if let Err(err) = python_found(&mut self.sampler, pid, &layout) {
                tracing::warn!("{err:#}");
            }
        }
        // Exit events can be lost (ring full) and exits of processes we never got an event for (already dead
        // when added) must not keep them "live".
        let dead: Vec<u32> = self.live.values().filter(|t| !t.is_alive()).map(|t| t.pid).collect();
        for pid in dead {
            self.live.remove(&pid);
            self.sampler.remove_target(pid);
            self.pipeline.forget_process(pid);
        }
        let lost = self.sampler.lost_events();
        if lost > self.lost_events_seen {
            self.lost_events_seen = lost;
            tracing::warn!("lifecycle events were lost; rescanning for target processes");
            if let Some(found) = self.matcher.as_ref().and_then(|spec| selection::resolve(spec).ok()) {
                let new: Vec<Process> = found.into_iter().filter(|t| !self.live.contains_key(&t.pid)).collect();
                for target in new {
                    if let Err(err) = self.add_target(&target) {
                        tracing::warn!("{err:#}");
                    }
                }
            }
        }
    }

    /// Every profile asked for over the window since the last call (see `Pipeline::take_profiles`).
    pub(crate) fn take_profiles(&mut self) -> Vec<crate::aggregate::Profile> {
        let off_cpu_now = self.sampler.off_cpu_now();
        self.read_blocked_threads();
        self.pipeline.take_profiles(&off_cpu_now)
    }

    /// Reads the target threads the kernel has not reported since sampling began (blocked since before it, as a
    /// thread waiting for a long job or a long sleep is) from outside, as `profiler dump` does, so off-CPU and
    /// wall-clock profiles count them too.
    pub(crate) fn read_blocked_threads(&mut self) {
        if !self.pipeline.wants_off_cpu() {
            return;
        }
        let pids: Vec<u32> = self.live.keys().copied().collect();
        for pid in pids {
            let unseen: Vec<u32> =
                task::thread_ids(pid).into_iter().filter(|&tid| !self.pipeline.off_cpu_seen(tid)).collect();
            if unseen.is_empty() {
                continue;
            }
            let _busy = crate::watchdog::busy(pid, "reading its blocked threads");
            let layout = self.pipeline.python_interpreter(pid).map(|interpreter| interpreter.layouts.kernel);
            let python = layout.and_then(|layout| py_threads::threads(pid, &layout).ok()).unwrap_or_default();
            for tid in unseen {
                let thread_state = python.iter().find(|thread| thread.tid == Some(tid));
                let thread = dump::read_thread(pid, tid, layout.as_ref(), thread_state);
                if matches!(thread.place, Place::Blocked { moved: false, .. }) {
                    self.pipeline.blocked_throughout(pid, &thread);
                }
            }
        }
    }

    /// Samples the kernel dropped because the ring buffer was full.
    pub(crate) fn lost_samples(&self) -> u64 {
        self.sampler.lost_samples().unwrap_or_else(|err| {
            tracing::warn!("{err:#}");
            0
        })
    }
}

/// Hands the kernel programs what they need of a Python process: its layout, and where its GIL is.
fn python_found(sampler: &mut Sampler, pid: u32, layout: &PyLayout) -> Result<()> {
    sampler.set_python_layout(pid, layout)?;
    match crate::python::gil::locate(pid, layout) {
        Some(gil) => sampler.set_python_gil(pid, gil),
        None => {
            tracing::debug!("PID {pid}: GIL not found; its GIL waits count as lock waits");
            Ok(())
        }
    }
}

/// Moves the crash records and lifecycle events in their rings into `pending`, kept in time order, and returns the
/// time up to which `pending` is complete.
fn read_pending(
    crashes: &mut AsyncFd<RingBuf<MapData>>,
    events: &mut AsyncFd<RingBuf<MapData>>,
    pending: &mut VecDeque<Pending>,
) -> u64 {
    let now = crate::sample::monotonic_ns();
    let ring = crashes.get_mut();
    while let Some(record) = ring.next() {
        // Copied out: the ring's items borrow it, and crashes are rare.
        let record = record.to_vec();
        let time_ns = CpuSample::parse(&record).map(|s| s.time_ns).unwrap_or(0);
        pending.push_back(Pending::Crash { time_ns, record });
    }
    let ring = events.get_mut();
    while let Some(record) = ring.next() {
        match TimedLifecycle::parse(&record) {
            Ok(event) => pending.push_back(Pending::Event(event)),
            Err(err) => tracing::warn!("dropping a malformed lifecycle event: {err:#}"),
        }
    }
    // Crashes before events at the same instant: a crash precedes the exit it causes.
    pending.make_contiguous().sort_by_key(|p| (p.time_ns(), matches!(p, Pending::Event(_))));
    // A code-mapping event is stamped with the time its mmap call began but written when it returned: events
    // stamped up to a few milliseconds ago may still be on their way.
    now.saturating_sub(EVENT_BACKDATING_NS)
}

/// How far before it is written an event may be stamped (an mmap call's duration, with a wide margin).
const EVENT_BACKDATING_NS: u64 = 10_000_000;

/// The code mappings among `pending` events: (pid, time).
fn map_changes(pending: &VecDeque<Pending>) -> impl Iterator<Item = (u32, u64)> + '_ {
    pending.iter().filter_map(|p| match p {
        Pending::Event(TimedLifecycle { time_ns, event: Lifecycle::MapsChanged { pid } }) => Some((*pid, *time_ns)),
        _ => None,
    })
}

/// A crash record or lifecycle event waiting for its turn among the samples.
enum Pending {
    Crash { time_ns: u64, record: Vec<u8> },
    Event(TimedLifecycle),
}

impl Pending {
    fn time_ns(&self) -> u64 {
        match self {
            Pending::Crash { time_ns, .. } => *time_ns,
            Pending::Event(event) => event.time_ns,
        }
    }
}

fn handle_event(
    pipeline: &mut Pipeline,
    sampler: &mut Sampler,
    live: &mut HashMap<u32, Process>,
    matcher: Option<&TargetSpec>,
    follow_children: bool,
    timed: TimedLifecycle,
) {
    tracing::trace!("lifecycle event {timed:?}");
    match timed.event {
        Lifecycle::Fork { pid, parent } => {
            // The kernel samples the child from its first tick; its samples may be processed after it is gone
            // (a short-lived child), so it inherits the parent's state whether or not it still runs.
            pipeline.inherit(pid, parent);
            tracing::debug!("following PID {pid}, forked by {parent}");
            if let Some(mut target) = Process::read(pid) {
                if let Some(parent_target) = live.get(&parent) {
                    target.name = parent_target.name.clone();
                }
                live.insert(pid, target);
            }
        }
        Lifecycle::Exec { pid, comm } => {
            if live.contains_key(&pid) {
                start_tracking(pipeline, sampler, live, pid, &comm);
            } else if matcher.is_some_and(|m| m.matches_new(pid, &comm)) {
                if let Err(err) = sampler.add_target(pid, follow_children) {
                    tracing::warn!("{err:#}");
                    return;
                }
                tracing::info!("profiling PID {pid} ({comm}), which just started");
                start_tracking(pipeline, sampler, live, pid, &comm);
            }
        }
        Lifecycle::Exit { pid, status } => {
            let threads_missed = sampler.take_crash_threads_missed(pid);
            pipeline.process_exited(pid, status, threads_missed);
            live.remove(&pid);
            sampler.remove_target(pid);
            pipeline.forget_process(pid);
        }
        Lifecycle::Signal { pid, sender, signal } => {
            pipeline.process_killed(pid, sender, signal, timed.time_ns);
        }
        Lifecycle::MapsChanged { pid } => pipeline.maps_changed(pid, timed.time_ns),
    }
}

/// A target (new, or one that replaced its image) whose interpreter is yet to be found.
fn start_tracking(
    pipeline: &mut Pipeline,
    sampler: &mut Sampler,
    live: &mut HashMap<u32, Process>,
    pid: u32,
    comm: &str,
) {
    pipeline.expect_new_image(pid, comm);
    match Process::read(pid) {
        Some(target) => {
            live.insert(pid, target);
        }
        None => {
            live.remove(&pid);
            sampler.remove_target(pid);
        }
    }
}

fn register(ring: RingBuf<MapData>) -> Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged until the AsyncFd is dropped.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|err| anyhow!("polling a ring buffer: {err}"))
}
