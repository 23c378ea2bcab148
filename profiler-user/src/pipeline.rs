//! Runs every stage on each sample record: parse → unwind → symbolize → merge → aggregate, and keeps the
//! counters the status line and summary report.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use profiler_common::PyLayout;

use crate::{
    aggregate::{Aggregator, Frame, Label, LabelValue, Profile},
    crash::{Crash, CrashReport, Crashed, Reraises, recent::RecentStacks},
    merge::{PythonStack, SampleContext, merge},
    python::Python,
    sample::{CpuSample, Sampler},
    symbolize::Symbolizer,
    unwind::Unwinder,
};

/// Choices that change what a sample becomes.
#[derive(Clone, Copy, Debug, Default)]
pub struct PipelineOptions {
    /// Keep the interpreter's own native frames between Python frames.
    pub native_python_internals: bool,
    /// Keep only samples of threads holding the GIL.
    pub gil_only: bool,
    /// Seconds of each process's samples kept for crash reports (0: none).
    pub crash_window_secs: u64,
}

/// Counters over the whole recording.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub samples: u64,
    /// Samples whose native stack reached the thread's root.
    pub complete_stacks: u64,
    /// Records that did not parse (a kernel/userspace version mismatch).
    pub bad_records: u64,
    /// Samples left out by `--gil-only`.
    pub filtered_samples: u64,
    pub crashes: u64,
    pub threads: HashSet<u32>,
}

pub struct Pipeline {
    unwinder: Unwinder,
    symbolizer: Symbolizer,
    aggregator: Aggregator,
    python: Python,
    recent: RecentStacks,
    crashes: Vec<Crash>,
    reraises: Reraises,
    options: PipelineOptions,
    process_names: HashMap<u32, String>,
    pub stats: Stats,
}

impl Pipeline {
    pub fn new(period_ns: u64, options: PipelineOptions) -> Self {
        Self {
            unwinder: Unwinder::default(),
            symbolizer: Symbolizer::new(),
            aggregator: Aggregator::new(period_ns),
            python: Python::default(),
            recent: RecentStacks::new(options.crash_window_secs * 1_000_000_000),
            crashes: Vec::new(),
            reraises: Reraises::default(),
            options,
            process_names: HashMap::new(),
            stats: Stats::default(),
        }
    }

    /// Prepares for samples of a process that is already running (its maps and unwind tables).
    pub fn prepare_process(&mut self, pid: u32) {
        self.unwinder.preload(pid);
    }

    /// `pid` is loading code: re-read its maps soon (before a crash in that code leaves nothing to read).
    pub fn maps_changed(&mut self, pid: u32) {
        self.unwinder.mark_stale(pid);
    }

    /// Re-reads the maps of processes that loaded code since the last call.
    pub fn refresh_changed_maps(&mut self) {
        self.unwinder.refresh_stale();
    }

    /// Names the process in outputs (otherwise the sampled thread's name of its first sample is used).
    pub fn set_process_name(&mut self, pid: u32, name: &str) {
        self.process_names.insert(pid, name.to_owned());
    }

    /// The CPython layout the sampler needs for `pid`, when it runs a Python we support.
    pub fn python_layout(&mut self, pid: u32) -> Option<PyLayout> {
        self.python.detect(pid).map(|interpreter| interpreter.layouts.kernel)
    }

    /// Parses a ring-buffer record; a malformed one is counted (and reported once), never fatal.
    pub fn parse_record<'r>(&mut self, record: &'r [u8]) -> Option<CpuSample<'r>> {
        match CpuSample::parse(record) {
            Ok(sample) => Some(sample),
            Err(err) => {
                if self.stats.bad_records == 0 {
                    tracing::warn!("dropping malformed sample records: {err:#}");
                }
                self.stats.bad_records += 1;
                None
            }
        }
    }

    pub fn process_sample(&mut self, sample: &CpuSample, sampler: &Sampler) {
        if sample.crash.is_some() {
            self.process_crash(sample, sampler);
            return;
        }
        if self.options.gil_only && !sample.holds_gil() {
            self.stats.filtered_samples += 1;
            return;
        }
        let (frames, labels, complete) = self.stack_of(sample, sampler);
        self.recent.add(sample.time_ns, sample.pid, &frames, &labels);
        self.aggregator.add(&frames, labels);

        self.stats.samples += 1;
        self.stats.complete_stacks += u64::from(complete);
        self.stats.threads.insert(sample.tid);
    }

    /// The merged stack of a sample (leaf first, context frames last), its labels, and whether native unwinding
    /// reached the thread's root.
    fn stack_of(&mut self, sample: &CpuSample, sampler: &Sampler) -> (Vec<Frame>, Vec<Label>, bool) {
        let native = self.unwinder.unwind(sample);
        let kernel: Vec<Arc<_>> = sample
            .kernel_stack_id
            .and_then(|id| sampler.kernel_stack(id))
            .unwrap_or_default()
            .into_iter()
            .map(|address| self.symbolizer.kernel(address))
            .collect();
        let native_frames: Vec<Arc<_>> = native.frames.iter().map(|frame| self.symbolizer.native(frame)).collect();
        let process_name = self.process_names.entry(sample.pid).or_insert_with(|| sample.comm.clone());
        let context = SampleContext { process_name, thread_name: &sample.comm };
        let python_frames = self.python.frames(sample.pid, &sample.py_frames, &sample.code_copies);
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
            Label { key: "thread_name", value: LabelValue::Str(sample.comm.clone()) },
        ];
        if sample.is_python_thread() {
            let gil = if sample.holds_gil() { "held" } else { "released" };
            labels.push(Label { key: "gil", value: LabelValue::Str(gil.into()) });
        }
        (frames, labels, native.truncation.is_none())
    }

    fn process_crash(&mut self, sample: &CpuSample, sampler: &Sampler) {
        let Some(signal) = sample.crash else { return };
        if self.reraises.is_reraise(sample.pid, sample.tid, signal.signal, sample.time_ns) {
            return;
        }
        let (frames, labels, _) = self.stack_of(sample, sampler);
        let process_name = self.process_name(sample.pid, &sample.comm);
        let report = self.crashed(sample.pid, sample.tid, &process_name, &sample.comm).fault(signal, &frames);
        let mut stack = Aggregator::new(self.aggregator.period_ns());
        stack.add(&frames, labels);
        self.push_crash(report, sample.time_ns, stack.take());
    }

    /// Another process killed target `pid` with `signal`: a report without a stack, with the window before.
    pub fn process_killed(&mut self, pid: u32, sender: u32, signal: u32, time_ns: u64) {
        let name = self.process_name(pid, "?");
        let report = self.crashed(pid, pid, &name, &name).killed(sender, signal);
        self.push_crash(report, time_ns, Profile::default());
    }

    fn crashed<'a>(&self, pid: u32, tid: u32, process_name: &'a str, thread_name: &'a str) -> Crashed<'a> {
        Crashed {
            pid,
            tid,
            process_name,
            thread_name,
            python_version: self.python.interpreter(pid).map(|i| i.version.to_string()),
            window_secs: self.options.crash_window_secs,
        }
    }

    fn push_crash(&mut self, mut report: CrashReport, time_ns: u64, stack: Profile) {
        let mut window = Aggregator::new(self.aggregator.period_ns());
        report.window_samples = self.recent.window(report.pid, time_ns, &mut window);
        self.stats.crashes += 1;
        self.crashes.push(Crash { report, window: window.take(), stack });
    }

    fn process_name(&self, pid: u32, fallback: &str) -> String {
        self.process_names.get(&pid).cloned().unwrap_or_else(|| fallback.to_owned())
    }

    /// Crashes seen since the last call.
    pub fn take_crashes(&mut self) -> Vec<Crash> {
        std::mem::take(&mut self.crashes)
    }

    /// `pid` started or exec'd a new image: its old memory map and interpreter are gone.
    pub fn expect_new_image(&mut self, pid: u32, name: &str) {
        self.unwinder.forget_process(pid);
        self.python.expect_new_image(pid);
        self.set_process_name(pid, name);
    }

    /// A target forked `child`: same name, same interpreter until it execs.
    pub fn inherit(&mut self, child: u32, parent: u32) {
        if let Some(name) = self.process_names.get(&parent).cloned() {
            self.process_names.insert(child, name);
        }
        self.python.inherit(child, parent);
        self.unwinder.inherit(child, parent);
    }

    /// Interpreters found since the last call in processes that started or exec'd.
    pub fn new_python_layouts(&mut self) -> Vec<(u32, PyLayout)> {
        self.python.poll_pending()
    }

    /// Frees what was kept for a process that exited.
    pub fn forget_process(&mut self, pid: u32) {
        self.unwinder.forget_process(pid);
        self.python.forget_process(pid);
        self.recent.forget_process(pid);
        self.process_names.remove(&pid);
    }

    /// The aggregated samples since the last call.
    pub fn take_profile(&mut self) -> Profile {
        self.aggregator.take()
    }
}
