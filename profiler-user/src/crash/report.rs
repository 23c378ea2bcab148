//! A crash report: what a person needs to start debugging, as JSON (for tools) and text (for people).
use std::fmt::Write as _;

use serde::Serialize;

use super::signature::{CrashSignature, FrameNames};
pub(crate) use crate::sample::signal_name;
use crate::{
    aggregate::{Frame, FrameKind},
    sample::ExitStatus,
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
    /// Samples of the process in the window before the crash (in the flame graph and pprof next to the report).
    pub window_samples: u64,
    pub window_seconds: f64,
    /// How the process ended (exit code or signal, from the kernel's exit record); `None` when it had not ended
    /// by the time the report was written (a handler that survived the signal, or a slow core dump).
    pub exit: Option<ExitStatus>,
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
            function: frame.function.clone(),
            file: frame.file.clone(),
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
        if !self.stack.is_empty() {
            let _ = writeln!(text, "stack (innermost first):");
        }
        for (index, frame) in self.stack.iter().enumerate() {
            let location = match (&frame.file, frame.line) {
                (Some(file), Some(line)) => format!(" at {file}:{line}"),
                (Some(file), None) => format!(" at {file}"),
                _ => String::new(),
            };
            let module = match (&frame.module, frame.kind) {
                (Some(module), _) => format!(" [{module}]"),
                (None, "python") => " [python]".into(),
                _ => String::new(),
            };
            let inlined = if frame.inlined { " (inlined)" } else { "" };
            let _ = writeln!(text, "  #{index:<3} {}{location}{module}{inlined}", frame.function);
        }
        let _ = writeln!(text, "{} samples in the {:.0} s before the crash", self.window_samples, self.window_seconds);
        text
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
            window_samples: 5,
            window_seconds: 30.0,
            exit: Some(ExitStatus::Killed { signal: 11, core_dumped: false }),
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
    }
}
