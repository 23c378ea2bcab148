//! Each target's resident memory and thread count over the last minute, read from /proc once a second: for the
//! crash reports ("the 60 s before the crash") and `run`'s status line (growth rate).
//!
//! A point per second per process is cheap (one read of `/proc/PID/status`, ~10 µs) and enough for the question
//! the timelines answer: did memory or the thread count climb before the crash, and how fast. The memory profile
//! (sampled page faults) says which code made it climb.
use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use crate::process::status::ProcessStatus;

/// How far back a timeline reaches.
pub(crate) const KEEP_NS: u64 = 60_000_000_000;
/// Points kept per process at most (a second apart, with some slack for a late tick).
const MAX_POINTS: usize = 90;

/// One reading of a process's memory and threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Point {
    /// CLOCK_MONOTONIC ns, the clock of the samples.
    pub time_ns: u64,
    pub status: ProcessStatus,
}

/// A point as a crash report carries it: relative to the crash.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub(crate) struct MemoryPoint {
    pub seconds_before: f64,
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
    pub rss_shmem_kib: u64,
    pub threads: u64,
}

/// The timelines of the live targets.
#[derive(Default)]
pub(crate) struct Timelines {
    by_pid: HashMap<u32, VecDeque<Point>>,
}

impl Timelines {
    pub(crate) fn add(&mut self, pid: u32, time_ns: u64, status: ProcessStatus) {
        let points = self.by_pid.entry(pid).or_default();
        points.push_back(Point { time_ns, status });
        while points.len() > MAX_POINTS || points.front().is_some_and(|p| p.time_ns + KEEP_NS < time_ns) {
            points.pop_front();
        }
    }

    pub(crate) fn forget_process(&mut self, pid: u32) {
        self.by_pid.remove(&pid);
    }

    /// `pid`'s points of the minute before `time_ns`, oldest first, as seconds before it.
    pub(crate) fn before(&self, pid: u32, time_ns: u64) -> Vec<MemoryPoint> {
        let Some(points) = self.by_pid.get(&pid) else { return Vec::new() };
        points
            .iter()
            .filter(|p| p.time_ns <= time_ns && p.time_ns + KEEP_NS >= time_ns)
            .map(|p| MemoryPoint {
                seconds_before: (time_ns - p.time_ns) as f64 / 1e9,
                rss_anon_kib: p.status.rss_anon_kib,
                rss_file_kib: p.status.rss_file_kib,
                rss_shmem_kib: p.status.rss_shmem_kib,
                threads: p.status.threads,
            })
            .collect()
    }

    /// Over every live target: the resident set now (KiB), its growth per second over the last `over_ns` (each
    /// process from its oldest point in that span), and the threads now.
    pub(crate) fn totals(&self, over_ns: u64) -> Totals {
        let mut totals = Totals::default();
        for points in self.by_pid.values() {
            let Some(last) = points.back() else { continue };
            totals.rss_kib += last.status.rss_kib();
            totals.rss_anon_kib += last.status.rss_anon_kib;
            totals.threads += last.status.threads;
            let since = last.time_ns.saturating_sub(over_ns);
            if let Some(first) = points.iter().find(|p| p.time_ns >= since).filter(|p| p.time_ns < last.time_ns) {
                let seconds = (last.time_ns - first.time_ns) as f64 / 1e9;
                totals.growth_kib_per_s += (last.status.rss_kib() as f64 - first.status.rss_kib() as f64) / seconds;
            }
        }
        totals
    }
}

/// The targets' memory and threads together (see [`Timelines::totals`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Totals {
    pub rss_kib: u64,
    pub rss_anon_kib: u64,
    pub growth_kib_per_s: f64,
    pub threads: u64,
}

impl Totals {
    /// For status lines: `RSS 412.0 MiB (anon 380.5 MiB, +2.1 MiB/s), 14 threads`.
    pub(crate) fn describe(&self) -> String {
        format!(
            "RSS {:.1} MiB (anon {:.1} MiB, {:+.1} MiB/s), {} threads",
            self.rss_kib as f64 / 1024.0,
            self.rss_anon_kib as f64 / 1024.0,
            self.growth_kib_per_s / 1024.0,
            self.threads
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(rss_anon_kib: u64, threads: u64) -> ProcessStatus {
        ProcessStatus { rss_anon_kib, rss_file_kib: 1000, rss_shmem_kib: 0, threads }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn keeps_a_minute_and_says_it_relative_to_the_crash() {
        let mut timelines = Timelines::default();
        for second in 0..100 {
            timelines.add(7, second * S, status(second * 1024, 2 + second / 50));
        }
        let points = timelines.before(7, 99 * S);
        assert_eq!(points.len(), 61, "the last minute, both ends included");
        assert_eq!(points.first().unwrap().seconds_before, 60.0);
        assert_eq!(points.last().unwrap().seconds_before, 0.0);
        assert_eq!((points.last().unwrap().rss_anon_kib, points.last().unwrap().threads), (99 * 1024, 3));
        assert!(timelines.before(8, 99 * S).is_empty());
        timelines.forget_process(7);
        assert!(timelines.before(7, 99 * S).is_empty());
    }

    #[test]
    fn totals_add_processes_and_rate_each_over_the_span() {
        let mut timelines = Timelines::default();
        for second in 0..=20 {
            // 1 MiB/s and a flat one.
            timelines.add(1, second * S, status(second * 1024, 4));
            timelines.add(2, second * S, status(5000, 3));
        }
        let totals = timelines.totals(10 * S);
        assert_eq!((totals.rss_kib, totals.threads), (20 * 1024 + 1000 + 5000 + 1000, 7));
        assert!((totals.growth_kib_per_s - 1024.0).abs() < 1e-6, "{totals:?}");
        assert_eq!(totals.describe(), "RSS 26.8 MiB (anon 24.9 MiB, +1.0 MiB/s), 7 threads");
    }
}
