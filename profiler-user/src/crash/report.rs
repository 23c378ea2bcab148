//! A crash report: what a person needs to start debugging, as JSON (for tools) and text (for people).
use std::fmt::Write as _;

use serde::Serialize;

use super::signature::{CrashSignature, FrameNames};
use super::threads::ThreadAtCrash;
pub(crate) use crate::sample::signal_name;
use crate::{
    aggregate::{Frame, FrameKind},
    crash::fault::{Fault, Registers},
    sample::ExitStatus,
    timeline::MemoryPoint,
};

/// How the crash was observed.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CrashKind {
    /// The thread faulted or aborted: the stack is the one at the signal.
    Fault,
    /// Another process killed the target (e.g. the OOM killer's SIGKILL): no stack of the target exists.
    Killed { sender_pid: u32 },
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct CrashReport {
    pub kind: CrashKind,
    /// RFC 3339, UTC.
    pub time: String,
    pub pid: u32,
    pub tid: u32,
    pub process_name: String,
    pub thread_name: String,
    pub signal: u32,
    pub signal_name: String,
    pub si_code: i32,
    pub fault_address: Option<String>,
    pub python_version: Option<String>,
    /// Innermost first.
    pub stack: Vec<ReportFrame>,
    /// The faulting thread's GIL state ("held" or "released") when it runs Python code.
    pub gil: Option<&'static str>,
    /// The thread that held the GIL at the crash (the faulting one or another), when one did.
    pub gil_holder: Option<u32>,
    /// The process's other threads, as the kernel stopped them for its exit (by thread id).
    pub threads: Vec<ThreadAtCrash>,
    /// Other threads that were not captured (more than the kernel side takes, or no room to send them).
    pub threads_missed: u32,
    /// Samples of the process in the window before the crash (in the flame graph and pprof next to the report).
    pub window_samples: u64,
    pub window_seconds: f64,
    /// The process's resident memory and threads, read once a second, over the minute before the crash (oldest
    /// first; empty when the agent had not read it yet).
    pub memory: Vec<MemoryPoint>,
    /// asyncio's pending tasks, read when the crash record arrived (the process still exists then, dying), when
    /// the process imported asyncio.
    pub asyncio: Option<super::asyncio::AsyncioDump>,
    /// Why the tasks of a process that imported asyncio were not read ("not readable": it was already gone).
    pub asyncio_note: Option<String>,
    /// How the process ended (exit code or signal, from the kernel's exit record); `None` when it had not ended
    /// by the time the report was written (a handler that survived the signal, or a slow core dump).
    pub exit: Option<ExitStatus>,
    /// Every user register of the faulting thread at the signal (name → hex); `None` for a killed process or when
    /// the kernel could not read them.
    pub registers: Option<Registers>,
    /// What the fault hit: the address's class against the process's maps, the instruction (`crash::fault`).
    pub fault: Option<Fault>,
    /// What groups this crash with others like it (`signature`, `signature_title`, `signature_frames` in JSON).
    #[serde(flatten)]
    pub signature: CrashSignature,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct ReportFrame {
    pub kind: &'static str,
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub module: Option<String>,
    pub build_id: Option<String>,
    pub inlined: bool,
}

impl ReportFrame {
    pub(crate) fn from_frame(frame: &Frame) -> Self {
        Self {
            kind: match frame.kind {
                FrameKind::Native => "native",
                FrameKind::Kernel => "kernel",
                FrameKind::Python => "python",
                FrameKind::Truncated => "truncated",
                FrameKind::Context => "context",
            },
            function: frame.function.to_string(),
            file: frame.file.as_deref().map(str::to_owned),
            line: frame.line,
            module: frame.module.as_ref().map(|m| m.path.clone()),
            build_id: frame.module.as_ref().and_then(|m| m.build_id.clone()),
            inlined: frame.inlined,
        }
    }

    /// The names a crash signature is made of.
    pub(crate) fn names(&self) -> FrameNames<'_> {
        FrameNames {
            kind: self.kind,
            function: &self.function,
            file: self.file.as_deref(),
            module: self.module.as_deref(),
        }
    }
}

impl ReportFrame {
    /// The frame as one line of a text report: `  #3   function at file:line [module] (inlined)`, the format of
    /// the crash report's stack (`profiler dump` lists its threads' stacks the same way).
    pub(crate) fn to_line(&self, index: usize) -> String {
        let location = match (&self.file, self.line) {
            (Some(file), Some(line)) => format!(" at {file}:{line}"),
            (Some(file), None) => format!(" at {file}"),
            _ => String::new(),
        };
        let module = match (&self.module, self.kind) {
            (Some(module), _) => format!(" [{module}]"),
            (None, "python") => " [python]".into(),
            _ => String::new(),
        };
        let inlined = if self.inlined { " (inlined)" } else { "" };
        format!("  #{index:<3} {}{location}{module}{inlined}", self.function)
    }
}

impl CrashReport {
    pub(crate) fn to_text(&self) -> String {
        let mut text = String::new();
        let _ = write!(text, "crash: {} ({} {}) ", self.signal_name, self.process_name, self.pid);
        let _ = writeln!(text, "in thread {} ({}) at {}", self.thread_name, self.tid, self.time);
        let _ = writeln!(text, "signature: {} {}", self.signature.id, self.signature.title);
        match &self.kind {
            CrashKind::Fault => {
                if let Some(address) = &self.fault_address {
                    let _ = writeln!(text, "fault address: {address} (si_code {})", self.si_code);
                }
                if let Some(fault) = &self.fault {
                    let _ = writeln!(text, "fault: {}", fault.description);
                }
            }
            CrashKind::Killed { sender_pid } => {
                let _ = writeln!(text, "killed by PID {sender_pid}; a killed process has no stack of its own");
            }
        }
        if let Some(version) = &self.python_version {
            let _ = writeln!(text, "python: {version}");
        }
        match &self.exit {
            Some(exit) => {
                let _ = writeln!(text, "the process {exit}");
            }
            None => {
                let _ = writeln!(text, "the process had not ended when this report was written");
            }
        }
        if let Some(holder) = self.gil_holder {
            let who = if holder == self.tid { "this thread".to_owned() } else { format!("thread {holder}") };
            let _ = writeln!(text, "the GIL was held by {who}");
        }
        if !self.stack.is_empty() {
            let gil = self.gil.map_or(String::new(), |gil| format!(", GIL {gil}"));
            let _ = writeln!(text, "stack (innermost first{gil}):");
        }
        write_stack(&mut text, &self.stack);
        if !self.threads.is_empty() || self.threads_missed > 0 {
            let _ = writeln!(text, "\n{} other threads at the crash:", self.threads.len());
        }
        for thread in &self.threads {
            let _ = writeln!(text, "{}", thread.heading());
            write_stack(&mut text, &thread.stack);
        }
        if self.threads_missed > 0 {
            let _ = writeln!(text, "{} more threads were not captured (too many to copy at once)", self.threads_missed);
        }
        if let Some(registers) = &self.registers {
            let _ = writeln!(text, "registers:");
            text.push_str(&registers.to_text());
        }
        let _ = writeln!(text, "{} samples in the {:.0} s before the crash", self.window_samples, self.window_seconds);
        write_memory(&mut text, &self.memory);
        if let Some(asyncio) = &self.asyncio {
            asyncio.write_text(&mut text);
        }
        if let Some(note) = &self.asyncio_note {
            let _ = writeln!(text, "\nasyncio tasks not read: {note}");
        }
        text
    }
}

/// The memory timeline in two lines: where the resident set and the thread count went over the minute, and the
/// resident set as a sparkline.
fn write_memory(text: &mut String, points: &[MemoryPoint]) {
    let (Some(first), Some(last)) = (points.first(), points.last()) else { return };
    let rss = |p: &MemoryPoint| (p.rss_anon_kib + p.rss_file_kib + p.rss_shmem_kib) as f64 / 1024.0;
    let span = first.seconds_before - last.seconds_before;
    let rate = if span > 0.0 { format!(", {:+.1} MiB/s", (rss(last) - rss(first)) / span) } else { String::new() };
    let _ = writeln!(
        text,
        "memory in the {:.0} s before the crash: RSS {:.1} → {:.1} MiB{rate} (at the end: anon {:.1}, file {:.1}, \
         shmem {:.1} MiB); threads {} → {}",
        first.seconds_before,
        rss(first),
        rss(last),
        last.rss_anon_kib as f64 / 1024.0,
        last.rss_file_kib as f64 / 1024.0,
        last.rss_shmem_kib as f64 / 1024.0,
        first.threads,
        last.threads
    );
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let (low, high) = points.iter().map(rss).fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let line: String = points
        .iter()
        .map(|p| if high > low { BARS[(((rss(p) - low) / (high - low)) * 7.0).round() as usize] } else { BARS[0] })
        .collect();
    let _ = writeln!(text, "  RSS {low:.1}..{high:.1} MiB, a second per bar: {line}");
}

/// One line per frame, innermost first, numbered.
fn write_stack(text: &mut String, stack: &[ReportFrame]) {
    for (index, frame) in stack.iter().enumerate() {
        let _ = writeln!(text, "{}", frame.to_line(index));
    }
}

#[cfg(test)]
impl CrashReport {
    /// A fault report with every optional part empty, for tests to fill in what they check
    /// (`CrashReport { signal: 8, ..CrashReport::example() }`).
    pub(crate) fn example() -> Self {
        CrashReport {
            kind: CrashKind::Fault,
            time: "2026-11-22T02:00:00Z".into(),
            pid: 42,
            tid: 42,
            process_name: "python3".into(),
            thread_name: "python3".into(),
            signal: 11,
            signal_name: signal_name(11),
            si_code: 1,
            fault_address: None,
            python_version: None,
            stack: Vec::new(),
            gil: None,
            gil_holder: None,
            threads: Vec::new(),
            threads_missed: 0,
            window_samples: 0,
            window_seconds: 30.0,
            memory: Vec::new(),
            asyncio: None,
            asyncio_note: None,
            exit: None,
            registers: None,
            fault: None,
            signature: CrashSignature::of_fault("SIGSEGV", []),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_signal_address_and_frames() {
        let report = CrashReport {
            kind: CrashKind::Fault,
            time: "2026-11-22T02:00:00Z".into(),
            pid: 42,
            tid: 43,
            process_name: "python3".into(),
            thread_name: "worker".into(),
            signal: 11,
            signal_name: signal_name(11),
            si_code: 1,
            fault_address: Some("0x0".into()),
            python_version: Some("3.11".into()),
            stack: vec![
                ReportFrame {
                    kind: "native",
                    function: "crash_here".into(),
                    file: Some("crash.c".into()),
                    line: Some(7),
                    module: Some("/tmp/libcrash.so".into()),
                    build_id: None,
                    inlined: false,
                },
                ReportFrame {
                    kind: "python",
                    function: "handler".into(),
                    file: Some("app.py".into()),
                    line: Some(12),
                    module: None,
                    build_id: None,
                    inlined: false,
                },
            ],
            gil: Some("held"),
            gil_holder: Some(43),
            threads: Vec::new(),
            threads_missed: 0,
            window_samples: 5,
            window_seconds: 30.0,
            memory: Vec::new(),
            asyncio: None,
            asyncio_note: None,
            exit: Some(ExitStatus::Killed { signal: 11, core_dumped: false }),
            registers: None,
            fault: None,
            signature: CrashSignature::of_fault("SIGSEGV", []),
        };
        let signature_line = format!("\nsignature: {} SIGSEGV (no stack)\n", report.signature.id);
        let text = report.to_text();
        assert!(text.starts_with("crash: SIGSEGV (python3 42) in thread worker (43)"), "{text}");
        assert!(text.contains(&signature_line), "{text}");
        assert!(text.contains("fault address: 0x0"), "{text}");
        assert!(text.contains("#0   crash_here at crash.c:7 [/tmp/libcrash.so]"), "{text}");
        assert!(text.contains("#1   handler at app.py:12 [python]"), "{text}");
        assert!(text.contains("the process was ended by SIGSEGV\n"), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["signal_name"], "SIGSEGV");
        assert_eq!(json["stack"][1]["line"], 12);
        assert_eq!(json["exit"]["killed"]["signal"], 11);
        assert_eq!(json["signature"], report.signature.id.as_str());
        assert_eq!(json["signature_title"], "SIGSEGV (no stack)");
        assert!(json["fault"].is_null() && json["registers"].is_null());
    }

    #[test]
    fn text_and_json_carry_the_fault_and_registers() {
        use profiler_common::CrashRegs;

        use crate::{
            crash::fault::{analyze, FaultInput, MapsRead},
            sample::CrashCpuState,
        };
        let regs = CrashRegs { rip: 0x1139, rdi: 0, ..CrashRegs::default() };
        let cpu = CrashCpuState { regs, code: vec![0x8b, 0x47, 0x18] };
        let fault = analyze(&FaultInput {
            signal: 11,
            si_code: 1,
            fault_addr: Some(0x18),
            cpu: &cpu,
            mappings: &[],
            maps: MapsRead::Never,
        });
        let report = CrashReport {
            fault_address: Some("0x18".into()),
            registers: Some(Registers(regs)),
            fault: Some(fault),
            ..CrashReport::example()
        };
        let text = report.to_text();
        assert!(
            text.contains("\nfault: read of NULL + 0x18 through rdi (no mapping) by `mov eax,[rdi+0x18]` in 0x1139\n"),
            "{text}"
        );
        assert!(text.contains("registers:\n") && text.contains("rip 0x0000000000001139"), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["registers"]["rip"], "0x1139");
        assert_eq!(json["fault"]["class"], "null_page");
        assert_eq!(json["fault"]["access"], "read");
        assert_eq!(json["fault"]["instruction"], "mov eax,[rdi+0x18]");
        assert_eq!(json["fault"]["code_bytes"], "8b 47 18");
        assert_eq!(json["fault_address"], "0x18", "the existing fields stay");
    }
}
