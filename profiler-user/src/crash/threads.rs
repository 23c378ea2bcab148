//! The other threads of a crashed process: what each was doing when the fault ended the process.
//!
//! The kernel captures them as it stops them for the process's exit (see the kernel's `crash_threads.rs`): a
//! thread waiting in the kernel shows the system call it waited in (a lock is a futex, `time.sleep` a
//! clock_nanosleep, I/O a read or poll), a thread that was running shows where it ran, stopped by the exit
//! microseconds after the fault. A race between threads (one frees, one reads) shows up as the other thread's
//! stack in the middle of the freeing.
use serde::Serialize;

use super::report::ReportFrame;
use crate::{aggregate::Frame, sample::CpuSample};

/// One other thread of the crashed process.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ThreadAtCrash {
    pub tid: u32,
    /// The thread's name: Python's (`threading`) when the profiler read it, else the kernel's (`comm`).
    pub name: String,
    /// `running` (on a CPU, or waiting for one) or `waiting` (blocked in a system call).
    pub state: &'static str,
    /// The system call it was waiting in, by name (or number when this build does not know it).
    pub syscall: Option<String>,
    /// "held" or "released" for a thread that runs Python code.
    pub gil: Option<&'static str>,
    /// How long after the fault the kernel stopped it, in milliseconds.
    pub stopped_after_ms: f64,
    /// Innermost first.
    pub stack: Vec<ReportFrame>,
}

impl ThreadAtCrash {
    /// The thread captured in `sample`, named `name`, whose merged stack is `frames`, for a fault at
    /// `fault_time_ns`.
    pub(crate) fn new(sample: &CpuSample, name: String, frames: &[Frame], fault_time_ns: u64) -> Self {
        Self {
            tid: sample.tid,
            name,
            state: if sample.syscall.is_some() { "waiting" } else { "running" },
            syscall: sample.syscall.map(syscall_name),
            gil: gil_state(sample),
            stopped_after_ms: sample.time_ns.saturating_sub(fault_time_ns) as f64 / 1e6,
            stack: frames
                .iter()
                .filter(|f| f.kind != crate::aggregate::FrameKind::Context)
                .map(ReportFrame::from_frame)
                .collect(),
        }
    }

    /// The heading of its section in the text report.
    pub(crate) fn heading(&self) -> String {
        let doing = match &self.syscall {
            Some(syscall) => format!("waiting in {syscall}"),
            None => "running".to_owned(),
        };
        let gil = self.gil.map_or(String::new(), |gil| format!(", GIL {gil}"));
        format!(
            "thread {} ({}): {doing}{gil} (stopped {:.1} ms after the fault)",
            self.name, self.tid, self.stopped_after_ms
        )
    }
}

/// "held" or "released" for a thread that has Python state, `None` for one that never ran Python.
pub(crate) fn gil_state(sample: &CpuSample) -> Option<&'static str> {
    sample.is_python_thread().then(|| if sample.holds_gil() { "held" } else { "released" })
}

/// The x86_64 system call numbered `nr`, by name.
fn syscall_name(nr: u64) -> String {
    usize::try_from(nr)
        .ok()
        .and_then(syscalls::x86_64::Sysno::new)
        .map_or_else(|| format!("system call {nr}"), |sysno| sysno.name().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_calls_threads_wait_in() {
        assert_eq!(syscall_name(202), "futex");
        assert_eq!(syscall_name(230), "clock_nanosleep");
        assert_eq!(syscall_name(7), "poll");
        assert_eq!(syscall_name(100_000), "system call 100000");
        assert_eq!(syscall_name(u64::MAX), format!("system call {}", u64::MAX));
    }
}
