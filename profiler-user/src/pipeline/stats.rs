//! The counters over a whole recording that the status line, the summary and `--stats-json` report, with the
//! userspace time each pipeline stage took.
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

/// Counters over the whole recording.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stats {
    pub samples: u64,
    /// Samples whose native stack reached the thread's root.
    pub complete_stacks: u64,
    /// Records that did not parse (a kernel/userspace version mismatch).
    pub bad_records: u64,
    /// Samples left out by `--gil-only`.
    pub filtered_samples: u64,
    /// Captured off-CPU periods (a thread's stack as it left its CPU).
    pub off_cpu_samples: u64,
    /// Sampled page faults (the memory profile).
    pub page_fault_samples: u64,
    pub crashes: u64,
    /// Crashes counted but not looked at: over a budget before unwinding (see `crash::budget`).
    pub crashes_over_budget: u64,
    /// Crashes handed out for the crash index only: over a budget once their signature was known.
    pub crashes_suppressed: u64,
    /// The threads sampled so far, per live process; a process's set is folded into `exited_threads` at its
    /// exit, so a fork storm does not grow it without end.
    pub threads: HashMap<u32, HashSet<u32>>,
    pub exited_threads: u64,
    pub exited_processes: u64,
    /// Where the userspace time of each process's first `COLD_SAMPLES` samples went (caches filling: maps and
    /// unwind tables read, DWARF parsed, code objects read), and of the samples after them.
    pub cold: StageTimes,
    pub warm: StageTimes,
    /// Samples seen per live process so far, to tell its cold samples from its warm ones.
    pub process_samples: HashMap<u32, u64>,
}

impl Stats {
    /// Threads sampled in the whole recording.
    pub(crate) fn thread_count(&self) -> u64 {
        self.exited_threads + self.threads.values().map(|t| t.len() as u64).sum::<u64>()
    }

    /// Processes sampled in the whole recording.
    pub(crate) fn process_count(&self) -> u64 {
        self.exited_processes + self.process_samples.len() as u64
    }

    /// Folds what was kept per thread and process of `pid` into the counts.
    pub(super) fn forget_process(&mut self, pid: u32) {
        if let Some(threads) = self.threads.remove(&pid) {
            self.exited_threads += threads.len() as u64;
        }
        if self.process_samples.remove(&pid).is_some() {
            self.exited_processes += 1;
        }
    }
}

/// A process's first this many samples count as cold in [`Stats`].
pub(crate) const COLD_SAMPLES: u64 = 100;

/// Userspace time spent per pipeline stage over some samples: two `Instant` reads per stage and sample (tens of
/// nanoseconds), so it is always on and `--stats-json` can report it from any recording.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StageTimes {
    pub samples: u64,
    /// Native unwinding of the stack copy (framehop), maps and unwind tables included.
    pub unwind: Duration,
    /// Code objects → Python function, file and line.
    pub python: Duration,
    /// Native and kernel addresses → functions (blazesym behind the per-address cache).
    pub symbolize: Duration,
    /// Native and Python frames → one stack, and its labels.
    pub merge: Duration,
    /// The stack counted in the profile and kept in the crash window.
    pub aggregate: Duration,
}

impl StageTimes {
    pub(crate) fn total(&self) -> Duration {
        self.unwind + self.python + self.symbolize + self.merge + self.aggregate
    }

    pub(super) fn add(&mut self, other: &StageTimes) {
        self.samples += other.samples;
        self.unwind += other.unwind;
        self.python += other.python;
        self.symbolize += other.symbolize;
        self.merge += other.merge;
        self.aggregate += other.aggregate;
    }
}

/// Hands out the time since the previous lap: one stage's share.
pub(super) struct Lap(Instant);

impl Lap {
    pub(super) fn start() -> Self {
        Self(Instant::now())
    }

    pub(super) fn lap(&mut self) -> Duration {
        let now = Instant::now();
        now.duration_since(std::mem::replace(&mut self.0, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_process_counters_are_folded_at_exit() {
        let mut stats = Stats::default();
        for pid in 0..1000 {
            stats.threads.entry(pid).or_default().extend([pid, pid + 100_000]);
            stats.process_samples.insert(pid, 5);
        }
        for pid in 0..999 {
            stats.forget_process(pid);
        }
        assert_eq!((stats.thread_count(), stats.process_count()), (2000, 1000));
        assert_eq!((stats.threads.len(), stats.process_samples.len()), (1, 1), "nothing kept of exited processes");
    }
}
