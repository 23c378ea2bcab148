//! Off-CPU periods → stacks weighted by time: the captured starts (a stack as the thread left its CPU) joined with
//! their ends, scaled per thread to the exact off-CPU time the kernel counted.
//!
//! The kernel captures a thread's leaving only now and then (see profiler-ebpf's off_cpu.rs) but adds every
//! period to the thread's total. So, per thread and window, the captured periods say *where* the thread waited
//! (their stacks, in proportion to their durations) and the total says *how long*: each captured period's duration
//! is scaled by `total / captured`, and a thread's off-CPU time in the profile is exact. Off-CPU time counted for a
//! thread with no captured period in the window yet is carried over to its next window that has one.
//!
//! The kernel captures a leaving with a known probability (see profiler-ebpf's off_cpu.rs), so each captured
//! period counts for its duration / that probability: captures of the periods that follow a long one are more
//! likely, and this undoes it.
//!
//! A period still going on at the end of a window (a thread asleep across it) gives the window the part that fell
//! in it, so a long sleep shows in every window it spans rather than all at once in the last: a captured one from
//! its start time, one not captured from the start the kernel keeps for it (`InProgress`).
//!
//! A thread that has not left its CPU since sampling began (nor run) was blocked before it began: the kernel never
//! sees its period start. The session reads such threads from outside at each window's end (their stack, as
//! `profiler dump` does) and gives them the whole window (`blocked_throughout`), until they are seen.
pub(crate) mod reason;

use std::collections::{HashMap, HashSet};

use crate::aggregate::{Aggregator, Frame, Label, Profile, ProfileKind};
pub(crate) use crate::sample::InProgress;
use crate::sample::OffCpuEnd;

/// The kernel's capture gap for `rate_hz` captures per second per thread (`--off-cpu-rate`): the sampler and the
/// pipeline, which weighs each capture by the probability the kernel gave it, must use the same.
pub(crate) fn capture_gap_ns(rate_hz: u64) -> u64 {
    1_000_000_000 / rate_hz.max(1)
}

/// A captured period whose end has not been seen yet.
struct Open {
    pid: u32,
    /// CLOCK_MONOTONIC ns when it left its CPU.
    start_ns: u64,
    /// Nanoseconds of it already given to earlier windows.
    attributed_ns: u64,
    /// 1 / the probability it was captured with.
    weight: f64,
    /// A wait for the GIL (see [`Stratum`]).
    stratum: Stratum,
    frames: Vec<Frame>,
    labels: Vec<Label>,
}

/// The two kinds of periods the kernel counts apart, each thread's captured periods of a kind being scaled to that
/// kind's exact total: so how long a thread waited for the GIL is exact, not an estimate from its captures, however
/// few of them there are and however the rest of its waits go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stratum {
    GilWait,
    Other,
}

impl Stratum {
    pub(crate) fn of(gil_wait: bool) -> Self {
        if gil_wait {
            Stratum::GilWait
        } else {
            Stratum::Other
        }
    }

    fn index(self) -> usize {
        match self {
            Stratum::GilWait => 0,
            Stratum::Other => 1,
        }
    }
}

/// Per [`Stratum`], indexed by `Stratum::index`.
type ByStratum<T> = [T; 2];

/// One kind of a thread's off-CPU time in the current window.
struct Part {
    /// Captured periods' stacks, weighted by their durations / capture probabilities.
    captured: Aggregator,
    captured_ns: u64,
    /// The exact off-CPU time of this kind to give this window (and any carried over).
    exact_ns: u64,
}

/// One thread's off-CPU time in the current window.
struct Window {
    pid: u32,
    parts: ByStratum<Part>,
}

impl Window {
    /// `ns` of the captured period `open`, weighed by the inverse of its capture probability.
    fn add(&mut self, open: &Open, ns: u64) {
        let part = &mut self.parts[open.stratum.index()];
        let weighted = (ns as f64 * open.weight).round() as u64;
        part.captured.add_weighted(&open.frames, open.labels.clone(), weighted);
        part.captured_ns = part.captured_ns.saturating_add(weighted);
    }

    fn add_exact(&mut self, stratum: Stratum, ns: u64) {
        let part = &mut self.parts[stratum.index()];
        part.exact_ns = part.exact_ns.saturating_add(ns);
    }

    /// The window's captured stacks, each kind with the factor that scales it to its exact time. The time of a
    /// kind with no captured period in the window goes to the other kind's stacks (the thread's total stays
    /// exact); a thread with none of either keeps its time for a later window (`None`).
    fn take(&mut self) -> Option<Vec<(Profile, f64)>> {
        let captured_ns: u64 = self.parts.iter().map(|part| part.captured_ns).sum();
        if captured_ns == 0 {
            return None;
        }
        let unseen_ns: u64 = self.parts.iter().filter(|part| part.captured_ns == 0).map(|part| part.exact_ns).sum();
        let mut out = Vec::new();
        for part in self.parts.iter_mut().filter(|part| part.captured_ns > 0) {
            // Only one kind can be unseen when another was captured: all of its time goes to that one.
            let exact_ns = part.exact_ns.saturating_add(unseen_ns);
            out.push((part.captured.take(), exact_ns as f64 / part.captured_ns as f64));
        }
        Some(out)
    }

    fn has_time(&self) -> bool {
        self.parts.iter().any(|part| part.exact_ns > 0)
    }

    fn has_captures(&self) -> bool {
        self.parts.iter().any(|part| part.captured_ns > 0)
    }
}

/// The kernel's running totals of a thread's off-CPU time, all of it and its GIL waits.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    all: u64,
    gil_wait: u64,
}

impl Totals {
    fn of(end: &OffCpuEnd) -> Self {
        Self { all: end.total_off_cpu_ns, gil_wait: end.total_gil_wait_ns }
    }

    /// What was added since `earlier`, per stratum.
    fn since(self, earlier: Totals) -> ByStratum<u64> {
        let gil_wait = self.gil_wait.saturating_sub(earlier.gil_wait);
        let other = self.all.saturating_sub(earlier.all).saturating_sub(gil_wait);
        let mut out = [0; 2];
        out[Stratum::GilWait.index()] = gil_wait;
        out[Stratum::Other.index()] = other;
        out
    }
}

/// Off-CPU periods of every target thread.
#[derive(Default)]
pub(crate) struct OffCpuPeriods {
    open: HashMap<u32, Open>,
    windows: HashMap<u32, Window>,
    /// The kernel's running totals of each thread's off-CPU time at its last reported end.
    totals: HashMap<u32, Totals>,
    /// Uncaptured periods going on at a window's end, by thread: the part already given to windows, which the next
    /// reported end's total includes again.
    counted_early: HashMap<u32, CountedEarly>,
    /// Threads the kernel reported since sampling began (a CPU sample or a leaving).
    seen: HashSet<u32>,
    /// Threads blocked since before sampling began, as read at this window's end.
    blocked: Vec<(u32, Vec<Frame>, Vec<Label>)>,
    /// CLOCK_MONOTONIC ns when the current window began (0: not started).
    window_start_ns: u64,
}

/// The part of a thread's uncaptured periods given to windows before the kernel reported them.
#[derive(Default)]
struct CountedEarly {
    /// The start of the period going on when last looked at, and how much of it was counted.
    since_ns: u64,
    of_current: u64,
    /// Counted since the thread's last reported end, per stratum.
    total: ByStratum<u64>,
}

impl OffCpuPeriods {
    /// Starts the first window at `now_ns`.
    pub(crate) fn start_window(&mut self, now_ns: u64) {
        self.window_start_ns = now_ns;
    }

    /// The kernel reported thread `tid` (it ran, or left its CPU).
    pub(crate) fn mark_seen(&mut self, tid: u32) {
        self.seen.insert(tid);
    }

    pub(crate) fn was_seen(&self, tid: u32) -> bool {
        self.seen.contains(&tid)
    }

    /// Thread `tid` of `pid`, never seen, is blocked now with this stack: blocked since before sampling began, so
    /// for the whole window.
    pub(crate) fn blocked_throughout(&mut self, tid: u32, frames: Vec<Frame>, labels: Vec<Label>) {
        self.blocked.push((tid, frames, labels));
    }

    /// Thread `tid` of `pid` left its CPU at `start_ns` with this stack, to wait for the GIL or not (`stratum`),
    /// captured with `probability` (a period whose end was never reported, its record lost, is dropped).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        &mut self,
        pid: u32,
        tid: u32,
        start_ns: u64,
        stratum: Stratum,
        probability: f64,
        frames: Vec<Frame>,
        labels: Vec<Label>,
    ) {
        let weight = if probability > 0.0 { 1.0 / probability } else { 1.0 };
        self.open.insert(tid, Open { pid, start_ns, attributed_ns: 0, weight, stratum, frames, labels });
    }

    /// A captured period ended: its stack gets its remaining duration, and the thread's window the kernel's count
    /// of every period since the last end reported, per stratum.
    pub(crate) fn end(&mut self, end: &OffCpuEnd) {
        let now = Totals::of(end);
        // The kernel counts a thread from its first switch after the programs were attached.
        let previous = self.totals.insert(end.tid, now).unwrap_or_default();
        let mut since_last = now.since(previous);
        let open = self.open.remove(&end.tid);
        if let Some(open) = &open {
            let counted = &mut since_last[open.stratum.index()];
            *counted = counted.saturating_sub(open.attributed_ns);
        }
        let early = self.counted_early.remove(&end.tid).map_or([0; 2], |early| early.total);
        let window = self.window(end.pid, end.tid);
        for stratum in [Stratum::GilWait, Stratum::Other] {
            let index = stratum.index();
            window.add_exact(stratum, since_last[index].saturating_sub(early[index]));
        }
        if let Some(open) = open {
            let rest = end.off_cpu_ns.saturating_sub(open.attributed_ns);
            window.add(&open, rest);
        }
    }

    fn window(&mut self, pid: u32, tid: u32) -> &mut Window {
        let part = || Part { captured: Aggregator::of_kind(ProfileKind::OffCpu, 1), captured_ns: 0, exact_ns: 0 };
        self.windows.entry(tid).or_insert_with(|| Window { pid, parts: [part(), part()] })
    }

    /// Ends the window at `now_ns` (CLOCK_MONOTONIC): each thread's captured stacks, and the factor that scales
    /// them to its exact off-CPU time. Threads with off-CPU time but no captured stack yet keep it for later.
    /// `in_progress`: the target threads off their CPU now.
    pub(crate) fn take_window(&mut self, now_ns: u64, in_progress: &[InProgress]) -> Vec<(Profile, f64)> {
        let window_ns = now_ns.saturating_sub(self.window_start_ns);
        self.window_start_ns = now_ns;
        let mut out = Vec::new();
        for (tid, frames, labels) in std::mem::take(&mut self.blocked) {
            if self.seen.contains(&tid) {
                continue;
            }
            let mut whole = Aggregator::of_kind(ProfileKind::OffCpu, 1);
            whole.add_weighted(&frames, labels, window_ns);
            out.push((whole.take(), 1.0));
        }
        for thread in in_progress.iter().filter(|thread| !thread.captured) {
            let stratum = Stratum::of(thread.gil_wait);
            let early = self.counted_early.entry(thread.tid).or_default();
            if early.since_ns != thread.since_ns {
                *early = CountedEarly { since_ns: thread.since_ns, of_current: 0, total: early.total };
            }
            let part = now_ns.saturating_sub(thread.since_ns).saturating_sub(early.of_current);
            early.of_current = early.of_current.saturating_add(part);
            let counted = &mut early.total[stratum.index()];
            *counted = counted.saturating_add(part);
            self.window(thread.pid, thread.tid).add_exact(stratum, part);
        }
        let ongoing: Vec<(u32, u32, u64)> = self
            .open
            .iter_mut()
            .map(|(&tid, open)| {
                let part = now_ns.saturating_sub(open.start_ns).saturating_sub(open.attributed_ns);
                open.attributed_ns = open.attributed_ns.saturating_add(part);
                (tid, open.pid, part)
            })
            .collect();
        for (tid, pid, part) in ongoing {
            let Some(open) = self.open.remove(&tid) else { continue };
            let window = self.window(pid, tid);
            window.add(&open, part);
            window.add_exact(open.stratum, part);
            self.open.insert(tid, open);
        }
        self.windows.retain(|_, window| match window.take() {
            Some(scaled) => {
                out.extend(scaled);
                false
            }
            None => window.has_time(),
        });
        out
    }

    /// Forgets the open periods and running totals of `pid`'s threads (it exited); time already counted stays for
    /// the next window.
    pub(crate) fn forget_process(&mut self, pid: u32) {
        let gone: Vec<u32> = self.open.iter().filter(|(_, open)| open.pid == pid).map(|(&tid, _)| tid).collect();
        for tid in gone {
            self.open.remove(&tid);
            self.totals.remove(&tid);
            self.counted_early.remove(&tid);
            self.seen.remove(&tid);
        }
        self.windows.retain(|_, window| window.pid != pid || window.has_captures());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(tid: u32, time_ns: u64, off_cpu_ns: u64, total_off_cpu_ns: u64) -> OffCpuEnd {
        gil_end(tid, time_ns, off_cpu_ns, total_off_cpu_ns, 0)
    }

    fn gil_end(tid: u32, time_ns: u64, off_cpu_ns: u64, total_off_cpu_ns: u64, total_gil_wait_ns: u64) -> OffCpuEnd {
        OffCpuEnd { kind: 0, pid: 1, tid, _pad: 0, time_ns, off_cpu_ns, total_off_cpu_ns, total_gil_wait_ns }
    }

    impl OffCpuPeriods {
        fn take_window_now(&mut self, now_ns: u64) -> Vec<(Profile, f64)> {
            self.take_window(now_ns, &[])
        }
    }

    fn at(name: &str) -> Vec<Frame> {
        vec![Frame::native(name)]
    }

    /// (function, scaled ns) of a window, summed over threads.
    fn weights(window: Vec<(Profile, f64)>) -> Vec<(String, u64)> {
        let mut total = Aggregator::of_kind(ProfileKind::OffCpu, 1);
        for (profile, scale) in &window {
            total.add_profile(profile, *scale, &[]);
        }
        let profile = total.take();
        let mut out: Vec<(String, u64)> =
            profile.stacks.iter().map(|s| (profile.frame(s.frames[0]).function.to_string(), s.count)).collect();
        out.sort();
        out
    }

    #[test]
    fn captured_periods_are_scaled_to_the_threads_exact_total() {
        let mut periods = OffCpuPeriods::default();
        // Thread 7: a 10 ms sleep captured, then uncaptured periods of 30 ms in all, then a 10 ms lock wait captured.
        periods.start(1, 7, 1_000, Stratum::Other, 1.0, at("sleep"), Vec::new());
        periods.end(&end(7, 10_001_000, 10_000_000, 10_000_000));
        periods.start(1, 7, 50_000_000, Stratum::Other, 1.0, at("lock"), Vec::new());
        periods.end(&end(7, 60_000_000, 10_000_000, 50_000_000));
        // 50 ms exact, two captured periods of 10 ms each: each stands for 25 ms.
        assert_eq!(
            weights(periods.take_window_now(70_000_000)),
            [("lock".into(), 25_000_000), ("sleep".into(), 25_000_000)]
        );
        assert!(periods.take_window_now(80_000_000).is_empty());
    }

    #[test]
    fn a_period_spanning_windows_is_split_between_them() {
        let mut periods = OffCpuPeriods::default();
        periods.start(1, 9, 0, Stratum::Other, 1.0, at("sleep"), Vec::new());
        assert_eq!(weights(periods.take_window_now(400)), [("sleep".into(), 400)]);
        assert_eq!(weights(periods.take_window_now(1_000)), [("sleep".into(), 600)]);
        periods.end(&end(9, 1_500, 1_500, 1_500));
        assert_eq!(weights(periods.take_window_now(2_000)), [("sleep".into(), 500)]);
    }

    #[test]
    fn a_capture_stands_for_the_periods_its_probability_left_out() {
        let mut periods = OffCpuPeriods::default();
        // A 10 ms sleep captured for sure, then a 10 ms lock wait captured with probability 1/4: it stands for 40 ms
        // of lock waits the exact total (60 ms) says happened.
        periods.start(1, 7, 0, Stratum::Other, 1.0, at("sleep"), Vec::new());
        periods.end(&end(7, 10_000_000, 10_000_000, 10_000_000));
        periods.start(1, 7, 50_000_000, Stratum::Other, 0.25, at("lock"), Vec::new());
        periods.end(&end(7, 60_000_000, 10_000_000, 60_000_000));
        assert_eq!(
            weights(periods.take_window_now(70_000_000)),
            [("lock".into(), 48_000_000), ("sleep".into(), 12_000_000)]
        );
    }

    #[test]
    fn gil_waits_are_scaled_to_their_own_exact_total() {
        let mut periods = OffCpuPeriods::default();
        // A 10 ms GIL wait captured for sure, then a 10 ms sleep captured with probability 1/4; the kernel counted
        // 100 ms off the CPU in all, 40 ms of it waiting for the GIL. Scaled together, the GIL would get 100 · 10/50
        // = 20 ms; each kind scaled to its own total, it gets its exact 40 ms.
        periods.start(1, 7, 0, Stratum::GilWait, 1.0, at("gil"), Vec::new());
        periods.end(&gil_end(7, 10_000_000, 10_000_000, 10_000_000, 10_000_000));
        periods.start(1, 7, 20_000_000, Stratum::Other, 0.25, at("sleep"), Vec::new());
        periods.end(&gil_end(7, 30_000_000, 10_000_000, 100_000_000, 40_000_000));
        assert_eq!(
            weights(periods.take_window_now(40_000_000)),
            [("gil".into(), 40_000_000), ("sleep".into(), 60_000_000)]
        );
    }

    #[test]
    fn a_kind_without_captures_goes_to_the_other_kinds_stacks() {
        let mut periods = OffCpuPeriods::default();
        // GIL waits counted (30 ms) but none captured in the window: the thread's total stays exact on its sleep.
        periods.start(1, 7, 0, Stratum::Other, 1.0, at("sleep"), Vec::new());
        periods.end(&gil_end(7, 10_000_000, 10_000_000, 40_000_000, 30_000_000));
        assert_eq!(weights(periods.take_window_now(50_000_000)), [("sleep".into(), 40_000_000)]);
    }

    #[test]
    fn an_uncaptured_period_at_the_window_end_counts_once() {
        let mut periods = OffCpuPeriods::default();
        periods.start(1, 4, 0, Stratum::Other, 1.0, at("io"), Vec::new());
        periods.end(&end(4, 100, 100, 100));
        // Off since 200, not captured: 300 of it go to this window, the rest with the next end.
        let off = [InProgress { pid: 1, tid: 4, since_ns: 200, captured: false, gil_wait: false }];
        assert_eq!(weights(periods.take_window(500, &off)), [("io".into(), 400)]);
        periods.start(1, 4, 1_000, Stratum::Other, 1.0, at("io"), Vec::new());
        periods.end(&end(4, 1_100, 100, 100 + 700 + 100));
        assert_eq!(weights(periods.take_window_now(2_000)), [("io".into(), 500)]);
    }

    #[test]
    fn a_thread_blocked_since_before_sampling_gets_whole_windows_until_seen() {
        let mut periods = OffCpuPeriods::default();
        periods.start_window(1_000);
        periods.blocked_throughout(5, at("join"), Vec::new());
        assert_eq!(weights(periods.take_window_now(11_000)), [("join".into(), 10_000)]);
        periods.mark_seen(5);
        periods.blocked_throughout(5, at("join"), Vec::new());
        assert!(periods.take_window_now(21_000).is_empty(), "a thread seen is the kernel's to report");
    }

    #[test]
    fn time_without_a_captured_stack_waits_for_one() {
        let mut periods = OffCpuPeriods::default();
        // An end whose start record was lost: counted, but there is no stack to give it to yet.
        periods.end(&end(3, 100, 100, 100));
        assert!(periods.take_window_now(200).is_empty());
        periods.start(1, 3, 300, Stratum::Other, 1.0, at("io"), Vec::new());
        periods.end(&end(3, 400, 100, 200));
        assert_eq!(weights(periods.take_window_now(500)), [("io".into(), 200)]);
    }
}
