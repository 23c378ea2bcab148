//! The dump as people and tools read it: every thread by name and TID, where it is (which system call it waits
//! in, or running), whether it holds the GIL, and its stack, in the crash report's frame format; and as JSON.
use std::fmt::Write as _;

use serde::Serialize;

use super::Place;
use crate::{
    crash::{asyncio::AsyncioDump, report::ReportFrame},
    process::task,
    unwind::Truncation,
};

#[derive(Clone, Debug, Serialize)]
pub(crate) struct DumpReport {
    /// RFC 3339, UTC.
    pub time: String,
    pub pid: u32,
    pub process_name: String,
    pub python_version: Option<String>,
    /// Whether this interpreter's GIL holder can be read at all; when it can, `gil_holder` is the TID holding it
    /// (`None`: nobody holds it).
    pub gil_known: bool,
    pub gil_holder: Option<u32>,
    /// How long the threads that were on a CPU were sampled.
    pub burst_ms: u64,
    /// Why the Python threads could not be read, if they could not (the stacks are native only then).
    pub python_error: Option<String>,
    pub threads: Vec<ThreadDump>,
    /// asyncio's pending tasks, when the process imported asyncio and they could be read.
    pub asyncio: Option<AsyncioDump>,
    /// Why the tasks of a process that imported asyncio could not be read, if they could not.
    pub asyncio_note: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct ThreadDump {
    /// `None` for a Python thread state no kernel thread was matched to.
    pub tid: Option<u32>,
    pub name: String,
    /// `blocked`, `running`, `gone` or `python-only`.
    pub state: &'static str,
    /// For people: "waiting in futex (syscall 202)", "running (sampled)", …
    pub description: String,
    /// The system call a blocked thread is in (`None` outside one, e.g. a page fault).
    pub syscall: Option<u64>,
    pub syscall_name: Option<&'static str>,
    pub scheduler_state: Option<String>,
    pub wait_channel: Option<String>,
    /// `None` for threads without Python state.
    pub holds_gil: Option<bool>,
    /// Running threads: samples of this thread in the burst, and of them the ones with the stack shown.
    pub samples: Option<u64>,
    pub samples_of_stack: Option<u64>,
    /// The thread moved (woke, or entered another call) while it was read, twice in a row: its stack may mix two
    /// moments.
    pub moved_while_read: bool,
    /// Why native unwinding stopped before the thread's root, if it did.
    pub native_truncated: Option<String>,
    /// Innermost first.
    pub stack: Vec<ReportFrame>,
}

/// What a person reads for a blocked thread's system call.
pub(crate) fn describe_syscall(number: Option<u64>) -> String {
    let Some(number) = number else { return "blocked outside a system call (a page fault or a stop)".into() };
    match task::syscall_name(number) {
        Some(name @ ("futex" | "futex_waitv")) => format!("waiting in {name} (syscall {number})"),
        Some(name @ ("clock_nanosleep" | "nanosleep" | "pause")) => format!("sleeping in {name} (syscall {number})"),
        Some(
            name @ ("poll" | "ppoll" | "select" | "pselect6" | "epoll_wait" | "epoll_pwait" | "epoll_pwait2"
            | "io_uring_enter" | "io_getevents"),
        ) => format!("waiting for I/O in {name} (syscall {number})"),
        Some(name @ ("wait4" | "waitid")) => format!("waiting for a child in {name} (syscall {number})"),
        Some(name) => format!("blocked in {name} (syscall {number})"),
        None => format!("blocked in syscall {number}"),
    }
}

/// The `state` and `description` of a thread from where it was.
pub(crate) fn describe_place(place: &Place, sampled: Option<(u64, u64)>) -> (&'static str, String) {
    match place {
        Place::Blocked { syscall, moved, .. } => {
            let moved = if *moved { ", moved while read" } else { "" };
            ("blocked", format!("{}{moved}", describe_syscall(*syscall)))
        }
        Place::Running => match sampled {
            Some((samples, of_stack)) => {
                ("running", format!("running (sampled: this stack in {of_stack} of {samples} samples)"))
            }
            None => ("running", "running (not sampled: it left the CPU before the sampler saw it)".into()),
        },
        Place::Gone => ("gone", "exited while the dump was taken".into()),
    }
}

/// Why a dump's native stack ended early, for the report.
pub(crate) fn describe_truncation(truncation: Truncation) -> &'static str {
    match truncation {
        Truncation::StackCopyEnd => "a caller's frame lies beyond the copied stack",
        Truncation::UnwindError => {
            "no unwind rule for a frame (a dump knows only the stack and instruction pointers of a blocked \
             thread, not its frame pointer)"
        }
        Truncation::TooDeep => "more than 256 frames",
        Truncation::NoMaps => "the process exited",
        Truncation::MapsChanged => "the process mapped new code while it was read",
    }
}

impl DumpReport {
    pub(crate) fn to_text(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "dump: {} (PID {}) at {}", self.process_name, self.pid, self.time);
        if let Some(version) = &self.python_version {
            let gil = match (self.gil_known, self.gil_holder) {
                (false, _) => String::new(),
                (true, None) => ", GIL not held".into(),
                (true, Some(tid)) => {
                    let name = self.threads.iter().find(|t| t.tid == Some(tid)).map_or("?", |t| t.name.as_str());
                    format!(", GIL held by thread {name} ({tid})")
                }
            };
            let _ = writeln!(text, "python: {version}{gil}");
        }
        if let Some(error) = &self.python_error {
            let _ = writeln!(text, "Python threads not read: {error}");
        }
        let sampled = match self.burst_ms {
            0 => "no thread was on a CPU".to_owned(),
            ms => format!("threads on a CPU sampled for {ms} ms"),
        };
        let _ = writeln!(text, "{} threads; {sampled}", self.threads.len());
        for thread in &self.threads {
            let tid = thread.tid.map_or_else(|| "no kernel thread".to_owned(), |tid| tid.to_string());
            let gil = match thread.holds_gil {
                Some(true) => ", holds the GIL",
                _ => "",
            };
            let _ = writeln!(text, "\nthread {} ({tid}): {}{gil}", thread.name, thread.description);
            for (index, frame) in thread.stack.iter().enumerate() {
                let _ = writeln!(text, "{}", frame.to_line(index));
            }
            if let Some(reason) = &thread.native_truncated {
                let _ = writeln!(text, "  (native unwinding stopped early: {reason})");
            }
        }
        if let Some(asyncio) = &self.asyncio {
            asyncio.write_text(&mut text);
        }
        if let Some(note) = &self.asyncio_note {
            let _ = writeln!(text, "\nasyncio tasks not read: {note}");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: &'static str, function: &str, file: Option<&str>, line: Option<u32>) -> ReportFrame {
        ReportFrame {
            kind,
            function: function.into(),
            file: file.map(Into::into),
            line,
            module: (kind == "native").then(|| "/usr/lib/libc.so.6".into()),
            build_id: None,
            inlined: false,
        }
    }

    #[test]
    fn blocked_threads_say_where_they_wait() {
        assert_eq!(describe_syscall(Some(202)), "waiting in futex (syscall 202)");
        assert_eq!(describe_syscall(Some(230)), "sleeping in clock_nanosleep (syscall 230)");
        assert_eq!(describe_syscall(Some(232)), "waiting for I/O in epoll_wait (syscall 232)");
        assert_eq!(describe_syscall(Some(0)), "blocked in read (syscall 0)");
        assert_eq!(describe_syscall(Some(99_999)), "blocked in syscall 99999");
        assert!(describe_syscall(None).starts_with("blocked outside a system call"));
        let running = describe_place(&Place::Running, Some((40, 37)));
        assert_eq!(running, ("running", "running (sampled: this stack in 37 of 40 samples)".into()));
        let moved = describe_place(&Place::Blocked { syscall: Some(202), arg0: 0, sp: 1, pc: 2, moved: true }, None);
        assert_eq!(moved.1, "waiting in futex (syscall 202), moved while read");
    }

    #[test]
    fn text_lists_threads_with_gil_and_frames() {
        let thread = ThreadDump {
            tid: Some(43),
            name: "locker-a".into(),
            state: "blocked",
            description: describe_syscall(Some(202)),
            syscall: Some(202),
            syscall_name: Some("futex"),
            scheduler_state: Some("S".into()),
            wait_channel: None,
            holds_gil: Some(false),
            samples: None,
            samples_of_stack: None,
            moved_while_read: false,
            native_truncated: None,
            stack: vec![
                frame("native", "__futex_abstimed_wait_common", None, None),
                frame("python", "take_second_lock", Some("deadlock.py"), Some(12)),
            ],
        };
        let report = DumpReport {
            time: "2026-11-22T02:00:00Z".into(),
            pid: 42,
            process_name: "python3".into(),
            python_version: Some("3.11".into()),
            gil_known: true,
            gil_holder: Some(44),
            burst_ms: 200,
            python_error: None,
            threads: vec![
                thread.clone(),
                ThreadDump { tid: Some(44), name: "spinner".into(), holds_gil: Some(true), ..thread },
            ],
            asyncio: None,
            asyncio_note: Some("asyncio tasks are read on CPython 3.8 to 3.15, not 3.7".into()),
        };
        let text = report.to_text();
        assert!(text.starts_with("dump: python3 (PID 42) at 2026-11-22T02:00:00Z\n"), "{text}");
        assert!(text.contains("python: 3.11, GIL held by thread spinner (44)\n"), "{text}");
        assert!(text.contains("\nthread locker-a (43): waiting in futex (syscall 202)\n"), "{text}");
        assert!(text.contains("\nthread spinner (44): waiting in futex (syscall 202), holds the GIL\n"), "{text}");
        assert!(text.contains("  #0   __futex_abstimed_wait_common [/usr/lib/libc.so.6]\n"), "{text}");
        assert!(text.contains("  #1   take_second_lock at deadlock.py:12 [python]\n"), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["threads"][0]["syscall_name"], "futex");
        assert_eq!(json["threads"][0]["stack"][1]["function"], "take_second_lock");
        assert_eq!(json["gil_holder"], 44);
        assert!(text.ends_with("\nasyncio tasks not read: asyncio tasks are read on CPython 3.8 to 3.15, not 3.7\n"));
    }
}
