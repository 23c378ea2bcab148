//! Crash reports: the stack at the fault (or how the process was killed) and the last seconds of profile before
//! it, written to the crash directory as JSON + text + flame graph + pprof, and echoed to stderr.
pub(crate) mod asyncio;
pub(crate) mod budget;
mod dir;
pub(crate) mod fault;
pub(crate) mod groups;
pub(crate) mod index;
mod memory_chart;
pub(crate) mod recent;
pub(crate) mod report;
pub(crate) mod signature;
pub(crate) mod threads;
pub(crate) mod writer;

use std::time::SystemTime;

pub(crate) use self::report::{CrashKind, CrashReport};
pub(crate) use self::writer::{CrashWriter, Written};
use self::{
    report::{signal_name, ReportFrame},
    signature::CrashSignature,
};
use crate::{
    aggregate::{Frame, FrameKind, Profile},
    sample::CrashSignal,
};

/// Who crashed, as the pipeline knows it.
pub(crate) struct Crashed<'a> {
    pub pid: u32,
    pub tid: u32,
    pub process_name: &'a str,
    pub thread_name: &'a str,
    pub python_version: Option<String>,
    pub window_secs: u64,
}

impl Crashed<'_> {
    /// The report of a thread that faulted or aborted, with its merged stack (leaf first).
    pub(crate) fn fault(self, signal: CrashSignal, frames: &[Frame]) -> CrashReport {
        let stack: Vec<ReportFrame> =
            frames.iter().filter(|f| f.kind != FrameKind::Context).map(ReportFrame::from_frame).collect();
        let signature = CrashSignature::of_fault(&signal_name(signal.signal), stack.iter().map(ReportFrame::names));
        self.report(CrashKind::Fault, signal.signal, signal.si_code, signal.fault_addr, stack, signature)
    }

    /// The report of a process another process killed: no stack of its own exists.
    pub(crate) fn killed(self, sender_pid: u32, signal: u32) -> CrashReport {
        let signature = CrashSignature::of_kill(&signal_name(signal));
        self.report(CrashKind::Killed { sender_pid }, signal, 0, None, Vec::new(), signature)
    }

    fn report(
        self,
        kind: CrashKind,
        signal: u32,
        si_code: i32,
        fault: Option<u64>,
        stack: Vec<ReportFrame>,
        signature: CrashSignature,
    ) -> CrashReport {
        CrashReport {
            kind,
            time: rfc3339_now(),
            pid: self.pid,
            tid: self.tid,
            process_name: self.process_name.to_owned(),
            thread_name: self.thread_name.to_owned(),
            signal,
            signal_name: signal_name(signal),
            si_code,
            fault_address: fault.map(|a| format!("{a:#x}")),
            python_version: self.python_version,
            stack,
            gil: None,
            gil_holder: None,
            threads: Vec::new(),
            threads_missed: 0,
            window_samples: 0,
            window_seconds: self.window_secs as f64,
            memory: Vec::new(),
            asyncio: None,
            asyncio_note: None,
            exit: None,
            registers: None,
            fault: None,
            signature,
        }
    }
}

/// Tells a new crash from the same one raised again: a handler that logs and re-raises (faulthandler does)
/// generates the signal a second time in the same thread. Kept per thread and signal, so that alternating signals
/// cannot make every one look new.
#[derive(Default)]
pub(crate) struct Reraises {
    last: std::collections::HashMap<(u32, u32, u32), u64>,
}

impl Reraises {
    const WINDOW_NS: u64 = 5_000_000_000;
    /// Entries beyond this are pruned of the old ones (a storm of crashing threads).
    const MAX_ENTRIES: usize = 1024;

    /// True when this (pid, tid, signal) was reported less than five seconds before `time_ns`.
    pub(crate) fn is_reraise(&mut self, pid: u32, tid: u32, signal: u32, time_ns: u64) -> bool {
        if let Some(&at) = self.last.get(&(pid, tid, signal)) {
            if time_ns.saturating_sub(at) < Self::WINDOW_NS {
                return true;
            }
        }
        if self.last.len() >= Self::MAX_ENTRIES {
            self.last.retain(|_, at| time_ns.saturating_sub(*at) < Self::WINDOW_NS);
        }
        self.last.insert((pid, tid, signal), time_ns);
        false
    }

    /// The process exited.
    pub(crate) fn forget_process(&mut self, pid: u32) {
        self.last.retain(|(p, _, _), _| *p != pid);
    }
}

/// A crash as the pipeline hands it over: the report, the profile of the window before it, and the stack at
/// the crash as a one-sample profile (empty for a killed process), which `run` uploads on its own.
pub(crate) struct Crash {
    /// When the fault happened (CLOCK_MONOTONIC ns, the clock of samples).
    pub time_ns: u64,
    pub report: CrashReport,
    pub window: Profile,
    pub stack: Profile,
    /// Set when a report budget left this crash out (the same signature too often): it is counted in the crash
    /// directory's index, and written and uploaded no further.
    pub suppressed: Option<budget::Suppression>,
}

/// Now as RFC 3339 UTC, to the second.
pub(crate) fn rfc3339_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reraise_within_seconds_is_the_same_crash() {
        let mut reraises = Reraises::default();
        assert!(!reraises.is_reraise(1, 2, 11, 0));
        assert!(reraises.is_reraise(1, 2, 11, 1_000_000_000));
        assert!(!reraises.is_reraise(1, 3, 11, 1_000_000_000));
        assert!(!reraises.is_reraise(1, 3, 11, 10_000_000_000));
        // Alternating signals in one thread: each is the same crash raised again within the window.
        assert!(!reraises.is_reraise(5, 5, 7, 20_000_000_000));
        assert!(!reraises.is_reraise(5, 5, 11, 20_100_000_000));
        assert!(reraises.is_reraise(5, 5, 7, 20_200_000_000));
        assert!(reraises.is_reraise(5, 5, 11, 20_300_000_000));
    }

    #[test]
    fn formats_time_as_rfc3339() {
        let now = rfc3339_now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'));
    }
}
