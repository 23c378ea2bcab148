//! How many crash reports a target may cause. Each report costs files in the crash directory, a full report in the
//! log and (in `run`) the end of the current window for every service, so a target that faults in a loop under a
//! signal handler, or forks children that crash, could turn the agent into a file and log flood. Reports are
//! budgeted per process and in all, per minute of the targets' time; what is over the budget is counted, and one
//! log line says which process tripped which budget.
use std::collections::HashMap;

/// Reports one process may cause per minute (a crash re-raised by its handler is one).
pub(crate) const PER_PROCESS_PER_MINUTE: u32 = 3;
/// Reports of all processes together per minute (a fork storm of crashing children).
pub(crate) const TOTAL_PER_MINUTE: u32 = 20;
const MINUTE_NS: u64 = 60_000_000_000;

#[derive(Default)]
struct Window {
    start_ns: u64,
    count: u32,
    logged: bool,
}

impl Window {
    /// Counts one more at `time_ns`; true while within `limit` for the current minute.
    fn take(&mut self, time_ns: u64, limit: u32) -> bool {
        if self.count == 0 || time_ns.saturating_sub(self.start_ns) >= MINUTE_NS {
            *self = Window { start_ns: time_ns, count: 0, logged: false };
        }
        self.count = self.count.saturating_add(1);
        self.count <= limit
    }
}

#[derive(Default)]
pub(crate) struct CrashBudget {
    per_process: HashMap<u32, Window>,
    total: Window,
}

impl CrashBudget {
    /// Whether a crash of `pid` (named `name`) at `time_ns` (CLOCK_MONOTONIC) may be reported; logs once per
    /// minute when a budget trips.
    pub(crate) fn allow(&mut self, pid: u32, name: &str, time_ns: u64) -> bool {
        let window = self.per_process.entry(pid).or_default();
        if !window.take(time_ns, PER_PROCESS_PER_MINUTE) {
            if !std::mem::replace(&mut window.logged, true) {
                tracing::warn!(
                    "PID {pid} ({name}) crashed more than {PER_PROCESS_PER_MINUTE} times in a minute (crash-report \
                     budget per process): its further crashes this minute are counted, not reported"
                );
            }
            return false;
        }
        if !self.total.take(time_ns, TOTAL_PER_MINUTE) {
            if !std::mem::replace(&mut self.total.logged, true) {
                tracing::warn!(
                    "more than {TOTAL_PER_MINUTE} crashes in a minute, the last of PID {pid} ({name}) (crash-report \
                     budget of all targets): further crashes this minute are counted, not reported"
                );
            }
            return false;
        }
        true
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

    #[test]
    fn a_process_crashing_in_a_loop_gets_three_reports_a_minute() {
        let mut budget = CrashBudget::default();
        let allowed = (0..100).filter(|i| budget.allow(7, "loop", i * SECOND / 10)).count();
        assert_eq!(allowed, PER_PROCESS_PER_MINUTE as usize);
        assert!(budget.allow(7, "loop", 61 * SECOND), "a new minute");
        assert!(budget.allow(8, "other", 61 * SECOND), "another process has its own budget");
    }

    #[test]
    fn many_crashing_processes_share_a_total() {
        let mut budget = CrashBudget::default();
        let allowed = (0..100u32).filter(|&pid| budget.allow(pid, "child", u64::from(pid) * SECOND / 10)).count();
        assert_eq!(allowed, TOTAL_PER_MINUTE as usize);
    }
}
