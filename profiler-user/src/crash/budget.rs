//! How many crash reports targets may cause. Each report costs files in the crash directory, a full report in the
//! log and (in `run`) the end of the current window for every service, so a target that faults in a loop under a
//! signal handler, or forks children that crash, could turn the agent into a file and log flood; and one crash that
//! repeats by the hundred would crowd out a different one. Crashes are budgeted per minute of the targets' time in
//! two steps:
//!
//! - before their stack is unwound (`admit`): per process, and in all, so a storm costs no unwinding. What is over
//!   is counted in the recording's totals only;
//! - once their signature is known (`report`): per signature, then in all. What is over is "suppressed": it gets a
//!   line in the crash directory's index (so `profiler crashes` counts it in its group) but no report files.
//!
//! One log line says which budget tripped, once per minute and budget.
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::signature::CrashSignature;

/// Crashes one process may cause per minute (a crash re-raised by its handler is one).
pub(crate) const PER_PROCESS_PER_MINUTE: u32 = 3;
/// Crashes of all processes together whose stacks are unwound per minute (a fork storm of crashing children).
pub(crate) const EXAMINED_PER_MINUTE: u32 = 200;
/// Full reports of one signature per minute: the same crash again is counted in the index, not written again.
pub(crate) const PER_SIGNATURE_PER_MINUTE: u32 = 3;
/// Full reports of all processes together per minute.
pub(crate) const TOTAL_PER_MINUTE: u32 = 20;
/// Signatures whose minute is tracked; past it, expired ones are dropped, then new ones go by the total alone.
const MAX_SIGNATURES: usize = 1024;
const MINUTE_NS: u64 = 60_000_000_000;

/// Why a crash got an index line but no report files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Suppression {
    /// More than [`PER_SIGNATURE_PER_MINUTE`] crashes of its signature this minute.
    SameSignature,
    /// More than [`TOTAL_PER_MINUTE`] reports this minute.
    AllTargets,
    /// The crash directory is over its quota.
    DirectoryFull,
}

impl Suppression {
    /// As the log and `profiler crashes` say it.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Suppression::SameSignature => "suppressed, same signature",
            Suppression::AllTargets => "suppressed, too many crashes of all targets",
            Suppression::DirectoryFull => "suppressed, crash directory full",
        }
    }
}

#[derive(Default)]
struct Window {
    start_ns: u64,
    count: u32,
    logged: bool,
}

impl Window {
    /// Counts one more at `time_ns`; true while within `limit` for the current minute.
    fn take(&mut self, time_ns: u64, limit: u32) -> bool {
        if self.count == 0 || self.expired(time_ns) {
            *self = Window { start_ns: time_ns, count: 0, logged: false };
        }
        self.count = self.count.saturating_add(1);
        self.count <= limit
    }

    fn expired(&self, time_ns: u64) -> bool {
        time_ns.saturating_sub(self.start_ns) >= MINUTE_NS
    }

    /// True the first time this minute (the caller logs).
    fn first_trip(&mut self) -> bool {
        !std::mem::replace(&mut self.logged, true)
    }
}

#[derive(Default)]
pub(crate) struct CrashBudget {
    per_process: HashMap<u32, Window>,
    examined: Window,
    per_signature: HashMap<String, Window>,
    reports: Window,
}

impl CrashBudget {
    /// Whether a crash of `pid` (named `name`) at `time_ns` (CLOCK_MONOTONIC) may be looked at (its stack unwound);
    /// logs once per minute when a budget trips.
    pub(crate) fn admit(&mut self, pid: u32, name: &str, time_ns: u64) -> bool {
        let window = self.per_process.entry(pid).or_default();
        if !window.take(time_ns, PER_PROCESS_PER_MINUTE) {
            if window.first_trip() {
                tracing::warn!(
                    "PID {pid} ({name}) crashed more than {PER_PROCESS_PER_MINUTE} times in a minute (crash-report \
                     budget per process): its further crashes this minute are counted, not reported"
                );
            }
            return false;
        }
        if !self.examined.take(time_ns, EXAMINED_PER_MINUTE) {
            if self.examined.first_trip() {
                tracing::warn!(
                    "more than {EXAMINED_PER_MINUTE} crashes in a minute, the last of PID {pid} ({name}) (crash \
                     budget of all targets): further crashes this minute are counted, not reported"
                );
            }
            return false;
        }
        true
    }

    /// Whether an admitted crash with `signature` at `time_ns` gets a full report, or why not; logs once per minute
    /// when a budget trips.
    pub(crate) fn report(&mut self, signature: &CrashSignature, time_ns: u64) -> Result<(), Suppression> {
        if self.per_signature.len() >= MAX_SIGNATURES && !self.per_signature.contains_key(&signature.id) {
            self.per_signature.retain(|_, window| !window.expired(time_ns));
        }
        let tracked = self.per_signature.len() < MAX_SIGNATURES || self.per_signature.contains_key(&signature.id);
        if tracked {
            let window = self.per_signature.entry(signature.id.clone()).or_default();
            if !window.take(time_ns, PER_SIGNATURE_PER_MINUTE) {
                if window.first_trip() {
                    tracing::warn!(
                        "signature {} ({}) crashed more than {PER_SIGNATURE_PER_MINUTE} times in a minute: its \
                         further crashes this minute go to the crash index only ({})",
                        signature.id,
                        signature.title,
                        Suppression::SameSignature.describe()
                    );
                }
                return Err(Suppression::SameSignature);
            }
        }
        if !self.reports.take(time_ns, TOTAL_PER_MINUTE) {
            if self.reports.first_trip() {
                tracing::warn!(
                    "more than {TOTAL_PER_MINUTE} crash reports in a minute (crash-report budget of all targets): \
                     further crashes this minute go to the crash index only ({})",
                    Suppression::AllTargets.describe()
                );
            }
            return Err(Suppression::AllTargets);
        }
        Ok(())
    }

    /// The process exited: its budget goes with it (a new process with its pid starts afresh).
    pub(crate) fn forget_process(&mut self, pid: u32) {
        self.per_process.remove(&pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn signature(name: &str) -> CrashSignature {
        CrashSignature::of_fault(
            "SIGSEGV",
            [super::super::signature::FrameNames {
                kind: "native",
                function: name,
                file: None,
                module: Some("/x/liby.so"),
            }],
        )
    }

    #[test]
    fn a_process_crashing_in_a_loop_gets_three_reports_a_minute() {
        let mut budget = CrashBudget::default();
        let allowed = (0..100).filter(|i| budget.admit(7, "loop", i * SECOND / 10)).count();
        assert_eq!(allowed, PER_PROCESS_PER_MINUTE as usize);
        assert!(budget.admit(7, "loop", 61 * SECOND), "a new minute");
        assert!(budget.admit(8, "other", 61 * SECOND), "another process has its own budget");
    }

    #[test]
    fn many_crashing_processes_share_a_total() {
        let mut budget = CrashBudget::default();
        let admitted = (0..1000u32).filter(|&pid| budget.admit(pid, "child", u64::from(pid) * SECOND / 100)).count();
        assert_eq!(admitted, EXAMINED_PER_MINUTE as usize);
        let reported = (0..100u32)
            .filter(|&i| budget.report(&signature(&format!("f{i}")), u64::from(i) * SECOND / 10).is_ok())
            .count();
        assert_eq!(reported, TOTAL_PER_MINUTE as usize);
        assert_eq!(budget.report(&signature("late"), 30 * SECOND), Err(Suppression::AllTargets));
    }

    #[test]
    fn one_signature_repeating_does_not_crowd_out_another() {
        let mut budget = CrashBudget::default();
        let (same, other) = (signature("same"), signature("other"));
        let outcomes: Vec<_> = (0..10).map(|i| budget.report(&same, i * SECOND)).collect();
        let reported = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(reported, PER_SIGNATURE_PER_MINUTE as usize);
        assert!(outcomes[PER_SIGNATURE_PER_MINUTE as usize..].iter().all(|o| *o == Err(Suppression::SameSignature)));
        assert_eq!(budget.report(&other, 11 * SECOND), Ok(()), "suppressed ones do not count in the total");
        assert_eq!(budget.report(&same, 70 * SECOND), Ok(()), "a new minute");
    }

    #[test]
    fn signatures_tracked_are_bounded() {
        let mut budget = CrashBudget::default();
        for i in 0..(MAX_SIGNATURES as u64 * 3) {
            let _ = budget.report(&signature(&format!("f{i}")), i * 100 * SECOND);
        }
        assert!(budget.per_signature.len() <= MAX_SIGNATURES);
    }
}
