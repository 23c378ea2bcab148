//! The crash half of the pipeline: a fault's sample becomes a report (its stack, registers, what the fault hit, the
//! other threads the kernel captured as the process went, the window before it), held until the process's exit says
//! how it ended, within the per-signature report budget.
use std::time::{Duration, Instant};

use super::{thread_name_label, Pipeline, StageTimes};
use crate::{
    aggregate::{Aggregator, Profile},
    crash::{
        budget::Suppression,
        fault::{self, FaultInput, MapsRead, Registers},
        threads::{gil_state, ThreadAtCrash},
        Crash, CrashKind, CrashReport, Crashed,
    },
    process::maps::{self, Mapping},
    sample::{CpuSample, ExitStatus, Sampler},
};

/// How long a crash report waits for the exit of its process (which says how it ended) before it is written
/// anyway: the exit follows within milliseconds unless a handler survives the signal or a core dump is slow.
const EXIT_WAIT: Duration = Duration::from_secs(2);

impl Pipeline {
    pub(super) fn process_crash(&mut self, sample: &CpuSample, sampler: &Sampler) {
        let Some(signal) = sample.crash else { return };
        if self.reraises.is_reraise(sample.pid, sample.tid, signal.signal, sample.time_ns) {
            return;
        }
        let name = self.process_name(sample.pid, &sample.comm);
        if !self.crash_budget.admit(sample.pid, &name, sample.time_ns) {
            self.stats.crashes_over_budget += 1;
            return;
        }
        // The process is dying but its memory is there until its last thread exits: read its tasks first, before
        // the unwinding and symbolization below take their milliseconds, or never. A read that fails because it is
        // gone says so ("not readable") rather than showing nothing or a part.
        let tasks = self.asyncio_tasks(sample.pid);
        let (frames, labels, _) = self.stack_of(sample, sampler, &mut StageTimes::default());
        let process_name = self.process_name(sample.pid, &sample.comm);
        let thread_name = thread_name_label(&labels).unwrap_or(&sample.comm).to_owned();
        let mut report = self.crashed(sample.pid, sample.tid, &process_name, &thread_name).fault(signal, &frames);
        report.asyncio = tasks.tasks;
        report.asyncio_note = tasks.note;
        report.gil = gil_state(sample).filter(|_| self.has_gil(sample.pid));
        report.gil_holder = sample.holds_gil().then_some(sample.tid);
        if let Some(cpu) = &sample.crash_cpu {
            let (mappings, maps) = self.maps_at_crash(sample.pid, cpu.regs.rip);
            report.registers = Some(Registers(cpu.regs));
            report.fault = Some(fault::analyze(&FaultInput {
                signal: signal.signal,
                si_code: signal.si_code,
                fault_addr: signal.fault_addr,
                cpu,
                mappings: &mappings,
                maps,
            }));
        }
        let mut stack = Aggregator::new(self.aggregator.period());
        stack.add(&frames, labels);
        self.push_crash(report, sample.time_ns, stack.take());
    }

    /// Another thread of a process whose fault is being reported, as the kernel stopped it for the exit: added to
    /// that report (ignored when no report is pending: over budget, suppressed as one more of its signature, or a
    /// handler survived and the process was killed much later).
    pub(super) fn process_crash_thread(&mut self, sample: &CpuSample, sampler: &Sampler) {
        let pending = self.crashes.iter().rposition(|(_, crash)| {
            crash.report.pid == sample.pid && crash.report.kind == CrashKind::Fault && crash.time_ns <= sample.time_ns
        });
        let Some(index) = pending else { return };
        let crash = &self.crashes[index].1;
        if crash.suppressed.is_some() || crash.report.threads.iter().any(|thread| thread.tid == sample.tid) {
            return;
        }
        let (frames, labels, _) = self.stack_of(sample, sampler, &mut StageTimes::default());
        let name = thread_name_label(&labels).unwrap_or(&sample.comm).to_owned();
        let has_gil = self.has_gil(sample.pid);
        let crash = &mut self.crashes[index].1;
        let mut thread = ThreadAtCrash::new(sample, name, &frames, crash.time_ns);
        if !has_gil {
            thread.gil = None;
        }
        if sample.holds_gil() {
            crash.report.gil_holder = Some(sample.tid);
        }
        let at = crash.report.threads.partition_point(|other| other.tid < thread.tid);
        crash.report.threads.insert(at, thread);
    }

    /// The maps to place a crash's fault address in: read now if the process still has them (they then hold what it
    /// mapped since the unwinder's copy, a new thread's stack say) and they map the same file at the faulting
    /// instruction as that copy (so not a new process under a reused PID); otherwise the unwinder's copy.
    fn maps_at_crash(&self, pid: u32, rip: u64) -> (Vec<Mapping>, MapsRead) {
        let held = self.unwinder.mappings(pid);
        let code_at_rip = |mappings: &[Mapping]| {
            mappings.iter().find(|m| (m.start..m.end).contains(&rip)).map(|m| (m.start, m.dev, m.inode))
        };
        if let Ok(now) = maps::read(pid) {
            if !now.mappings.is_empty() && (held.is_empty() || code_at_rip(&now.mappings) == code_at_rip(held)) {
                return (now.mappings, MapsRead::AtTheCrash);
            }
        }
        if held.is_empty() {
            (Vec::new(), MapsRead::Never)
        } else {
            (held.to_vec(), MapsRead::BeforeTheCrash)
        }
    }

    /// Another process killed target `pid` with `signal`: a report without a stack, with the window before.
    pub(crate) fn process_killed(&mut self, pid: u32, sender: u32, signal: u32, time_ns: u64) {
        let name = self.process_name(pid, "?");
        if !self.crash_budget.admit(pid, &name, time_ns) {
            self.stats.crashes_over_budget += 1;
            return;
        }
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

    /// Hands out a crash once its process ends: with its window, or, over a report budget for its signature,
    /// as a suppressed crash (an index line only, so the window is not gathered).
    fn push_crash(&mut self, mut report: CrashReport, time_ns: u64, stack: Profile) {
        let suppressed: Option<Suppression> = self.crash_budget.report(&report.signature, time_ns).err();
        let mut window = Aggregator::new(self.aggregator.period());
        if suppressed.is_none() {
            report.window_samples = self.recent.window(report.pid, time_ns, &mut window);
            report.memory = self.timelines.before(report.pid, time_ns);
        } else {
            self.stats.crashes_suppressed += 1;
        }
        self.stats.crashes += 1;
        self.crashes.push((Instant::now(), Crash { time_ns, report, window: window.take(), stack, suppressed }));
    }

    /// Crashes whose report is complete: the process's exit was seen, or `EXIT_WAIT` passed without it.
    pub(crate) fn take_crashes(&mut self) -> Vec<Crash> {
        let (ready, held) = std::mem::take(&mut self.crashes)
            .into_iter()
            .partition(|(since, crash)| crash.report.exit.is_some() || since.elapsed() >= EXIT_WAIT);
        self.crashes = held;
        ready.into_iter().map(|(_, crash)| crash).collect()
    }

    /// Every crash not handed out yet (at the end of a session).
    pub(crate) fn take_all_crashes(&mut self) -> Vec<Crash> {
        std::mem::take(&mut self.crashes).into_iter().map(|(_, crash)| crash).collect()
    }

    /// The last thread of `pid` exited: completes its crash reports and logs how it ended (a clean exit only at
    /// debug level: a fork storm would otherwise flood the log).
    /// `threads_missed`: other threads the kernel did not capture at its crash, if it crashed.
    pub(crate) fn process_exited(&mut self, pid: u32, status: Option<ExitStatus>, threads_missed: Option<u32>) {
        let Some(status) = status else { return };
        for (_, crash) in self.crashes.iter_mut().filter(|(_, c)| c.report.pid == pid) {
            crash.report.exit = Some(status);
            crash.report.threads_missed = threads_missed.unwrap_or(0);
        }
        let name = self.process_name(pid, "?");
        if status == (ExitStatus::Exited { code: 0 }) {
            tracing::debug!("PID {pid} ({name}) {status}");
        } else {
            tracing::info!("PID {pid} ({name}) {status}");
        }
    }
}
