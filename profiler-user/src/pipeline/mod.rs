//! Runs every stage on each sample record: parse → unwind → symbolize → merge → aggregate, and keeps the
//! counters the status line and summary report. The crash half (a fault's sample → a report) is crashes.rs.
mod asyncio;
mod crashes;
mod stats;

use std::{collections::HashMap, sync::Arc, time::Instant};

use profiler_common::PyLayout;

use self::stats::Lap;
pub(crate) use self::stats::{StageTimes, Stats, COLD_SAMPLES};

use crate::{
    aggregate::{label_value, Aggregator, Frame, FrameKind, Label, LabelValue, Profile, ProfileKind, ProfileKinds},
    crash::{budget::CrashBudget, recent::RecentStacks, Crash, Reraises},
    dump::{Place, ThreadSnapshot},
    labels::{LabelConfig, Labeler},
    merge::{merge, wait_frame, PythonStack, SampleContext},
    offcpu::{self, reason, InProgress, OffCpuPeriods},
    process::status::ProcessStatus,
    python::Python,
    sample::{monotonic_ns, CpuSample, OffCpuEnd, OffCpuStart, Record, Sampler},
    symbolize::Symbolizer,
    timeline::{Timelines, Totals},
    unwind::{Truncation, Unwinder},
};

/// A process's memory growth per captured page fault by default, as Go's and tcmalloc's heap profilers sample
/// (512 KiB): fine enough to split a few MiB of growth, rare enough that a process growing by a GiB a second
/// costs ~2k captures (see profiler-ebpf's memory.rs).
pub(crate) const DEFAULT_MEMORY_PERIOD_KIB: u64 = 512;
/// The kernel multiplies the period by a 32-bit random number: under 2 GiB keeps that product in 64 bits, and
/// 1 GiB is coarser than anyone needs.
pub(crate) const MAX_MEMORY_PERIOD_KIB: u64 = 1 << 20;

/// Choices that change what a sample becomes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PipelineOptions {
    /// The profiles to make.
    pub profiles: ProfileKinds,
    /// Off-CPU captures per second per thread the kernel aims at (see `offcpu::capture_gap_ns`).
    pub off_cpu_rate_hz: u64,
    /// Mean bytes of a process's growth per captured page fault (see `DEFAULT_MEMORY_PERIOD_KIB`).
    pub memory_period_bytes: u64,
    /// Keep the interpreter's own native frames between Python frames.
    pub native_python_internals: bool,
    /// Keep only samples of threads holding the GIL.
    pub gil_only: bool,
    /// Seconds of each process's samples kept for crash reports (0: none).
    pub crash_window_secs: u64,
}

pub(crate) struct Pipeline {
    unwinder: Unwinder,
    symbolizer: Symbolizer,
    aggregator: Aggregator,
    /// Off-CPU periods waiting for their end or their window's scaling, and the two profiles made of them (when
    /// asked for).
    off_cpu: OffCpuPeriods,
    off_cpu_profile: Option<Aggregator>,
    wall_profile: Option<Aggregator>,
    memory_profile: Option<Aggregator>,
    python: Python,
    /// Labels from the stack: the automatic `endpoint`, the `--labels` rules.
    labeler: Labeler,
    recent: RecentStacks,
    /// Crashes not handed out yet, each held until its process's exit says how it ended (or `EXIT_WAIT`).
    crashes: Vec<(Instant, Crash)>,
    reraises: Reraises,
    crash_budget: CrashBudget,
    options: PipelineOptions,
    process_names: HashMap<u32, String>,
    /// Each target's memory and threads over the last minute (for crash reports and status lines).
    timelines: Timelines,
    /// Per process, the times of code mappings the session has read but not handled yet (see `Unwinder::unwind`).
    upcoming_map_changes: HashMap<u32, Vec<u64>>,
    pub stats: Stats,
}

impl Pipeline {
    pub(crate) fn new(period_ns: u64, options: PipelineOptions) -> Self {
        Self {
            unwinder: Unwinder::default(),
            symbolizer: Symbolizer::new(),
            aggregator: Aggregator::new(period_ns),
            off_cpu: OffCpuPeriods::default(),
            off_cpu_profile: options
                .profiles
                .contains(ProfileKind::OffCpu)
                .then(|| Aggregator::of_kind(ProfileKind::OffCpu, 1)),
            wall_profile: options
                .profiles
                .contains(ProfileKind::Wall)
                .then(|| Aggregator::of_kind(ProfileKind::Wall, 1)),
            memory_profile: options
                .profiles
                .contains(ProfileKind::Memory)
                .then(|| Aggregator::of_kind(ProfileKind::Memory, 1)),
            python: Python::default(),
            labeler: Labeler::default(),
            recent: RecentStacks::new(options.crash_window_secs * 1_000_000_000),
            crashes: Vec::new(),
            reraises: Reraises::default(),
            crash_budget: CrashBudget::default(),
            options,
            process_names: HashMap::new(),
            timelines: Timelines::default(),
            upcoming_map_changes: HashMap::new(),
            stats: Stats::default(),
        }
    }

    /// Labels stacks as `config` says (the automatic `endpoint` label alone until then).
    pub(crate) fn set_labels(&mut self, config: &LabelConfig) {
        self.labeler = Labeler::new(config);
    }

    /// Prepares for samples of a process that is already running (its maps and unwind tables).
    pub(crate) fn prepare_process(&mut self, pid: u32) {
        self.unwinder.preload(pid);
    }

    /// The code mappings (pid, CLOCK_MONOTONIC ns) read from the kernel and not handled yet: samples taken before
    /// them must not be named with maps read after them.
    pub(crate) fn set_upcoming_map_changes(&mut self, changes: impl Iterator<Item = (u32, u64)>) {
        self.upcoming_map_changes.clear();
        for (pid, time_ns) in changes {
            self.upcoming_map_changes.entry(pid).or_default().push(time_ns);
        }
    }

    /// Asks debuginfod servers for the debug files of modules whose frames stay unnamed.
    pub(crate) fn fetch_debug_info_from(&mut self, debuginfod: crate::symbolize::Debuginfod) {
        self.symbolizer.fetch_debug_info_from(debuginfod);
    }

    /// Where the kernel notes the code mappings that follow a mapping event: taken at each re-read of a process's
    /// maps (without it, as on recorded data, every mapping is an event of its own).
    pub(crate) fn take_map_changes_from(&mut self, changes: crate::sample::map_changes::UntakenMapChanges) {
        self.unwinder.take_map_changes_from(changes);
    }

    /// `pid` is loading code since `time_ns`: re-read its maps soon (before a crash in that code leaves nothing to
    /// read).
    pub(crate) fn maps_changed(&mut self, pid: u32, time_ns: u64) {
        let _busy = crate::watchdog::busy(pid, "re-reading its maps");
        self.unwinder.mark_stale(pid, time_ns);
    }

    /// When the maps used for `pid`'s samples were read (CLOCK_MONOTONIC ns; 0 if never).
    pub(crate) fn maps_read_at(&self, pid: u32) -> u64 {
        self.unwinder.maps_read_at(pid)
    }

    /// Re-reads the maps of processes that loaded code since the last call.
    pub(crate) fn refresh_changed_maps(&mut self) {
        self.unwinder.refresh_stale();
    }

    /// Names the process in outputs (otherwise the sampled thread's name of its first sample is used).
    pub(crate) fn set_process_name(&mut self, pid: u32, name: &str) {
        self.process_names.insert(pid, name.to_owned());
    }

    /// The CPython layout the sampler needs for `pid`, when it runs a Python we support.
    pub(crate) fn python_layout(&mut self, pid: u32) -> Option<PyLayout> {
        self.python.detect(pid).map(|interpreter| interpreter.layouts.kernel)
    }

    /// Parses a ring-buffer record; a malformed one is counted (and reported once), never fatal.
    pub(crate) fn parse_record<'r>(&mut self, record: &'r [u8]) -> Option<Record<'r>> {
        match Record::parse(record) {
            Ok(record) => Some(record),
            Err(err) => {
                if self.stats.bad_records == 0 {
                    tracing::warn!("dropping malformed sample records: {err:#}");
                }
                self.stats.bad_records += 1;
                None
            }
        }
    }

    pub(crate) fn process_record(&mut self, record: &Record, sampler: &Sampler) {
        match record {
            Record::Sample(sample) => self.process_sample(sample, sampler),
            Record::OffCpuEnd(end) => self.process_off_cpu_end(end),
        }
    }

    fn process_sample(&mut self, sample: &CpuSample, sampler: &Sampler) {
        let _busy = crate::watchdog::busy(sample.pid, "unwinding and naming a sample");
        if self.wants_off_cpu() {
            self.off_cpu.mark_seen(sample.tid);
        }
        if sample.off_cpu.is_some() {
            self.process_off_cpu_start(sample, sampler);
            return;
        }
        if sample.crash.is_some() {
            self.process_crash(sample, sampler);
            return;
        }
        if sample.crash_thread {
            self.process_crash_thread(sample, sampler);
            return;
        }
        if sample.page_fault.is_some() {
            self.process_page_fault(sample, sampler);
            return;
        }
        if self.options.gil_only && !sample.holds_gil() {
            self.stats.filtered_samples += 1;
            return;
        }
        let mut times = StageTimes { samples: 1, ..StageTimes::default() };
        let (frames, labels, complete) = self.stack_of(sample, sampler, &mut times);
        let mut lap = Lap::start();
        self.recent.add(sample.time_ns, sample.pid, &frames, &labels);
        if let Some(wall) = &mut self.wall_profile {
            wall.add_weighted(&frames, labels.clone(), self.aggregator.period());
        }
        self.aggregator.add(&frames, labels);
        times.aggregate = lap.lap();
        let seen = self.stats.process_samples.entry(sample.pid).or_default();
        *seen += 1;
        if *seen <= COLD_SAMPLES {
            self.stats.cold.add(&times)
        } else {
            self.stats.warm.add(&times)
        }

        self.stats.samples += 1;
        self.stats.complete_stacks += u64::from(complete);
        self.stats.threads.entry(sample.pid).or_default().insert(sample.tid);
    }

    /// The merged stack of a sample (leaf first, context frames last), its labels, and whether native unwinding
    /// reached the thread's root.
    /// `times` gets the time each stage took.
    fn stack_of(
        &mut self,
        sample: &CpuSample,
        sampler: &Sampler,
        times: &mut StageTimes,
    ) -> (Vec<Frame>, Vec<Label>, bool) {
        let mut lap = Lap::start();
        let later_map_changes = self.upcoming_map_changes.get(&sample.pid).map_or(&[][..], Vec::as_slice);
        let native = self.unwinder.unwind(sample, later_map_changes);
        times.unwind = lap.lap();
        let kernel: Vec<Arc<_>> = sample
            .kernel_stack_id
            .and_then(|id| sampler.kernel_stack(id))
            .unwrap_or_default()
            .into_iter()
            .map(|address| self.symbolizer.kernel(address))
            .collect();
        let native_frames: Vec<Arc<_>> = native.frames.iter().map(|frame| self.symbolizer.native(frame)).collect();
        times.symbolize = lap.lap();
        let thread_name = self.thread_name(sample);
        let process_name = self.process_names.entry(sample.pid).or_insert_with(|| sample.comm.clone());
        let executable = self.unwinder.executable(sample.pid);
        let context = SampleContext { process_name, thread_name: &thread_name, executable };
        let python_frames = self.python.frames(sample.pid, &sample.py_frames, &sample.code_copies);
        times.python = lap.lap();
        let interpreter = self.python.interpreter(sample.pid);
        let python = interpreter.map(|interpreter| PythonStack {
            frames: &python_frames,
            interpreter_module: &interpreter.module_path,
            eval_ranges: &interpreter.eval_ranges,
            keep_internals: self.options.native_python_internals,
        });
        let frames = merge(&kernel, &native_frames, native.truncation, python.as_ref(), &context);
        let mut labels = vec![
            Label { key: "pid", value: LabelValue::Str(sample.pid.to_string()) },
            Label { key: "thread_id", value: LabelValue::Str(sample.tid.to_string()) },
            Label { key: "thread_name", value: LabelValue::Str(thread_name) },
        ];
        if sample.is_python_thread() && self.has_gil(sample.pid) {
            let gil = if sample.holds_gil() { "held" } else { "released" };
            labels.push(Label { key: "gil", value: LabelValue::Str(gil.into()) });
            // Held while others wait for it: the code that makes them wait.
            if sample.holds_gil() && sample.gil_waiters > 0 {
                labels.push(Label { key: "gil_waiters", value: LabelValue::Str(sample.gil_waiters.to_string()) });
            }
        }
        if let Some(start) = sample.off_cpu {
            let wait = reason::classify(start, sample.syscall, sample.syscall_arg0);
            labels.push(Label { key: "wait", value: LabelValue::Str(wait.label().into()) });
        }
        labels.extend(self.labeler.labels_of(&frames));
        times.merge = lap.lap();
        (frames, labels, native.truncation.is_none())
    }

    /// Whether the Python of `pid` has a GIL the sampler can see: not a free-threaded build, whose threads get no
    /// `gil` label (nor a GIL state in crash reports) rather than a `released` that would say there is one. A
    /// process no longer known (its exit handled before a late record) is taken to have one: only the kernel's
    /// layout, which userspace gave it, can have found its thread state, and it says "released" unless held.
    pub(crate) fn has_gil(&self, pid: u32) -> bool {
        self.python.interpreter(pid).is_none_or(|interpreter| interpreter.layouts.has_gil())
    }

    /// Whether off-CPU periods are wanted (an off-CPU or wall-clock profile).
    pub(crate) fn wants_off_cpu(&self) -> bool {
        self.off_cpu_profile.is_some() || self.wall_profile.is_some()
    }

    /// Whether the kernel reported thread `tid` since sampling began (see `offcpu`).
    pub(crate) fn off_cpu_seen(&self, tid: u32) -> bool {
        self.off_cpu.was_seen(tid)
    }

    /// A thread of `pid` the kernel has not reported, read from outside while blocked (`thread`): blocked since
    /// before sampling began, so off its CPU for the whole window, waiting in system call `syscall`.
    pub(crate) fn blocked_throughout(&mut self, pid: u32, thread: &ThreadSnapshot) {
        let Some(sample) = thread.as_sample(pid) else { return };
        let Place::Blocked { syscall, arg0, .. } = thread.place else { return };
        let (mut frames, _) = self.snapshot_stack(&sample);
        let start = OffCpuStart { preempted: false, gil_wait: false, task_state: 1, capture_credit: 0 };
        let wait = reason::classify(start, syscall, arg0);
        frames.insert(0, wait_frame(wait.label()));
        let mut labels = vec![
            Label { key: "pid", value: LabelValue::Str(pid.to_string()) },
            Label { key: "thread_id", value: LabelValue::Str(thread.tid.to_string()) },
            Label { key: "thread_name", value: LabelValue::Str(self.thread_name(&sample)) },
        ];
        if sample.is_python_thread() && self.has_gil(pid) {
            let gil = if sample.holds_gil() { "held" } else { "released" };
            labels.push(Label { key: "gil", value: LabelValue::Str(gil.into()) });
        }
        labels.push(Label { key: "wait", value: LabelValue::Str(wait.label().into()) });
        labels.extend(self.labeler.labels_of(&frames));
        self.off_cpu.blocked_throughout(thread.tid, frames, labels);
    }

    /// A target thread left its CPU and the kernel captured its stack: held until the period's end says how long.
    fn process_off_cpu_start(&mut self, sample: &CpuSample, sampler: &Sampler) {
        if self.off_cpu_profile.is_none() && self.wall_profile.is_none() {
            return;
        }
        let Some(start) = sample.off_cpu else { return };
        let (mut frames, labels, _) = self.stack_of(sample, sampler, &mut StageTimes::default());
        let wait = reason::classify(start, sample.syscall, sample.syscall_arg0);
        frames.insert(0, wait_frame(wait.label()));
        self.stats.off_cpu_samples += 1;
        let probability = start.capture_probability(offcpu::capture_gap_ns(self.options.off_cpu_rate_hz));
        let stratum = offcpu::Stratum::of(start.gil_wait);
        self.off_cpu.start(sample.pid, sample.tid, sample.time_ns, stratum, probability, frames, labels);
    }

    /// A captured page fault: its stack gets the bytes of growth the capture stands for in the memory profile.
    fn process_page_fault(&mut self, sample: &CpuSample, sampler: &Sampler) {
        let (Some(fault), true) = (sample.page_fault, self.memory_profile.is_some()) else { return };
        let (frames, labels, _) = self.stack_of(sample, sampler, &mut StageTimes::default());
        self.stats.page_fault_samples += 1;
        if let Some(memory) = &mut self.memory_profile {
            memory.add_weighted(&frames, labels, fault.bytes);
        }
    }

    fn process_off_cpu_end(&mut self, end: &OffCpuEnd) {
        self.off_cpu.end(end);
    }

    /// The merged stack of a thread that `profiler dump` read itself (registers from /proc, a copy of its stack,
    /// its Python frames walked in userspace), built as a sample's is but without kernel frames: leaf first,
    /// context frames last, and why native unwinding stopped early, when it did.
    ///
    /// Unlike a sample's, the interpreter's native frames below the innermost Python frame stay: for a thread
    /// that waits, they say what it waits in (`lock_PyThread_acquire_lock`, `time_sleep`, a socket call), which
    /// is what a hang is diagnosed by. The interpreter's frames between Python frames are folded as usual.
    pub(crate) fn snapshot_stack(&mut self, sample: &CpuSample) -> (Vec<Frame>, Option<Truncation>) {
        let native = self.unwinder.unwind(sample, &[]);
        let native_frames: Vec<Arc<_>> = native.frames.iter().map(|frame| self.symbolizer.native(frame)).collect();
        let thread_name = self.thread_name(sample);
        let process_name = self.process_names.entry(sample.pid).or_insert_with(|| sample.comm.clone());
        let executable = self.unwinder.executable(sample.pid);
        let context = SampleContext { process_name, thread_name: &thread_name, executable };
        let python_frames = self.python.frames(sample.pid, &sample.py_frames, &[]);
        let interpreter = self.python.interpreter(sample.pid);
        let python = |keep_internals| {
            interpreter.map(|interpreter| PythonStack {
                frames: &python_frames,
                interpreter_module: &interpreter.module_path,
                eval_ranges: &interpreter.eval_ranges,
                keep_internals,
            })
        };
        let folded = python(self.options.native_python_internals);
        let mut frames = merge(&[], &native_frames, native.truncation, folded.as_ref(), &context);
        let is_python = |frame: &Frame| frame.kind == FrameKind::Python;
        if let Some(first_python) = frames.iter().position(is_python) {
            let everything = merge(&[], &native_frames, native.truncation, python(true).as_ref(), &context);
            let leaf = everything.iter().position(is_python).unwrap_or(0);
            frames.splice(..first_python, everything[..leaf].iter().cloned());
        }
        (frames, native.truncation)
    }

    /// The name of a sample's thread: Python's (`threading`), else the kernel's (`comm`). See [`thread_name`].
    /// A crashing thread's name is read at once if it has none (the process will soon be gone), not within the
    /// once-a-second limit.
    fn thread_name(&mut self, sample: &CpuSample) -> String {
        let urgent = sample.crash.is_some() || sample.crash_thread;
        self.name_thread(sample.pid, sample.tid, &sample.comm, urgent)
    }

    /// The name thread `tid` of `pid`, whose kernel name is `comm`, goes by (see [`thread_name`]); Python's names
    /// are read from the process when this thread has none yet, at most once a second unless `urgent`.
    pub(crate) fn name_thread(&mut self, pid: u32, tid: u32, comm: &str, urgent: bool) -> String {
        let python = self.python.thread_name(pid, tid, urgent);
        let process_name = self.process_names.get(&pid).map_or(comm, String::as_str);
        thread_name(pid, tid, comm, process_name, python.as_deref())
    }

    /// The interpreter of `pid`, when it runs a Python we support (detected when it was added as a target).
    pub(crate) fn python_interpreter(&self, pid: u32) -> Option<Arc<crate::python::Interpreter>> {
        self.python.interpreter(pid).cloned()
    }

    /// Python frames read outside a sample (a suspended coroutine's, for `dump`), named and given lines as a
    /// sample's are.
    pub(crate) fn python_frames(&mut self, pid: u32, frames: &[profiler_common::PyFrame]) -> Vec<Frame> {
        self.python.frames(pid, frames, &[]).into_iter().map(|frame| frame.frame).collect()
    }

    fn process_name(&self, pid: u32, fallback: &str) -> String {
        self.process_names.get(&pid).cloned().unwrap_or_else(|| fallback.to_owned())
    }

    /// `pid` started or exec'd a new image: its old memory map and interpreter are gone.
    pub(crate) fn expect_new_image(&mut self, pid: u32, name: &str) {
        let unmapped = self.unwinder.forget_process(pid);
        self.symbolizer.forget_files(&unmapped);
        self.python.expect_new_image(pid);
        self.set_process_name(pid, name);
    }

    /// A target forked `child`: same name, same interpreter until it execs.
    pub(crate) fn inherit(&mut self, child: u32, parent: u32) {
        if let Some(name) = self.process_names.get(&parent).cloned() {
            self.process_names.insert(child, name);
        }
        self.python.inherit(child, parent);
        self.unwinder.inherit(child, parent);
    }

    /// Interpreters found since the last call in processes that started or exec'd.
    pub(crate) fn new_python_layouts(&mut self) -> Vec<(u32, PyLayout)> {
        self.python.poll_pending()
    }

    /// A reading of target `pid`'s memory and threads at `time_ns` (CLOCK_MONOTONIC), for its timeline.
    pub(crate) fn add_timeline_point(&mut self, pid: u32, time_ns: u64, status: ProcessStatus) {
        self.timelines.add(pid, time_ns, status);
    }

    /// The live targets' memory and threads together, growth over the last `over_ns`.
    pub(crate) fn memory_totals(&self, over_ns: u64) -> Totals {
        self.timelines.totals(over_ns)
    }

    /// Frees what was kept for a process that exited.
    pub(crate) fn forget_process(&mut self, pid: u32) {
        self.timelines.forget_process(pid);
        // A file no process maps is read again, under a new id, if a process maps it later (a restarted service):
        // its symbols would otherwise stay cached under the old id for the agent's life.
        let unmapped = self.unwinder.forget_process(pid);
        self.symbolizer.forget_files(&unmapped);
        if !unmapped.is_empty() {
            // Their unwind tables and symbols were megabytes, freed now (rarely: only the last process mapping
            // a file frees it).
            drop(unmapped);
            crate::heap::release_free_memory();
        }
        self.python.forget_process(pid);
        self.recent.forget_process(pid);
        self.off_cpu.forget_process(pid);
        self.process_names.remove(&pid);
        self.reraises.forget_process(pid);
        self.crash_budget.forget_process(pid);
        self.stats.forget_process(pid);
    }

    /// Starts the profiles' window now: the targets are all being sampled from here on, so the time the programs
    /// and targets took to set up is not counted as time of theirs that went unsampled.
    pub(crate) fn start_window(&mut self) {
        self.off_cpu.start_window(monotonic_ns());
        self.aggregator.restart_window();
        for aggregator in
            [&mut self.off_cpu_profile, &mut self.wall_profile, &mut self.memory_profile].into_iter().flatten()
        {
            aggregator.restart_window();
        }
    }

    /// The aggregated CPU samples since the last call.
    pub(crate) fn take_profile(&mut self) -> Profile {
        self.aggregator.take()
    }

    /// Every profile asked for, over the window since the last call, in the order asked for (see
    /// `PipelineOptions::profiles`). `off_cpu_now`: the target threads off their CPU at this moment.
    pub(crate) fn take_profiles(&mut self, off_cpu_now: &[InProgress]) -> Vec<Profile> {
        let off_cpu = self.off_cpu.take_window(monotonic_ns(), off_cpu_now);
        for aggregator in [&mut self.off_cpu_profile, &mut self.wall_profile].into_iter().flatten() {
            for (profile, scale) in &off_cpu {
                aggregator.add_profile(profile, *scale, &[]);
            }
        }
        let mut cpu = Some(self.aggregator.take());
        let mut off = self.off_cpu_profile.as_mut().map(Aggregator::take);
        let mut wall = self.wall_profile.as_mut().map(Aggregator::take);
        let mut memory = self.memory_profile.as_mut().map(Aggregator::take);
        self.options
            .profiles
            .iter()
            .filter_map(|kind| match kind {
                ProfileKind::Cpu => cpu.take(),
                ProfileKind::OffCpu => off.take(),
                ProfileKind::Wall => wall.take(),
                ProfileKind::Memory => memory.take(),
            })
            .collect()
    }
}

/// The name a thread goes by in labels, context frames and reports, from its kernel name (`comm`), its
/// process's name and Python's name for it (`threading.Thread.name`, when `threading` knows the thread).
///
/// Python's name, except one `threading` made up (`MainThread`, `Thread-N (target)`, `Dummy-N`) when the OS name
/// says more: the main thread keeps the process's name, and a thread the program named itself (`prctl`, a C
/// library's threads) keeps that name. 3.14+ give threading's names to the OS, cut to 15 bytes: a name that is
/// the start of Python's is Python's.
pub(crate) fn thread_name(pid: u32, tid: u32, comm: &str, process_name: &str, python: Option<&str>) -> String {
    match python {
        Some(python)
            if !crate::python::thread_names::is_default_name(python)
                || (tid != pid && (comm == process_name || python.starts_with(comm))) =>
        {
            python.to_owned()
        }
        _ => comm.to_owned(),
    }
}

/// The `thread_name` label `stack_of` gave a sample.
fn thread_name_label(labels: &[Label]) -> Option<&str> {
    label_value(labels, "thread_name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_go_by_pythons_name_unless_it_is_made_up_and_the_os_name_says_more() {
        let name = |tid, comm, python| thread_name(100, tid, comm, "uvicorn", python);
        assert_eq!(name(101, "uvicorn", Some("scheduler")), "scheduler");
        assert_eq!(name(101, "uvicorn", Some("AnyIO worker thread")), "AnyIO worker thread");
        assert_eq!(name(101, "uvicorn", None), "uvicorn");
        assert_eq!(name(101, "uvicorn", Some("Thread-3 (work)")), "Thread-3 (work)");
        // Named by the program through prctl; or by 3.14, cut to 15 bytes.
        assert_eq!(name(101, "spinner", Some("Thread-3 (spin)")), "spinner");
        assert_eq!(name(101, "Thread-3 (worke", Some("Thread-3 (worker)")), "Thread-3 (worker)");
        assert_eq!(name(101, "sched", Some("scheduler")), "scheduler");
        // The main thread keeps the process's name, unless Python's was changed.
        assert_eq!(name(100, "uvicorn", Some("MainThread")), "uvicorn");
        assert_eq!(name(100, "uvicorn", Some("event-loop")), "event-loop");
    }
}
