//! The dump as people and tools read it: every thread by name and TID, where it is (which system call it waits
//! in, or running), whether it holds the GIL, and its stack, in the crash report's frame format; and as JSON.
use std::fmt::Write as _;

use serde::Serialize;

use super::Place;
use crate::{
    crash::report::ReportFrame,
    process::task,
    python::asyncio_tasks::{AsyncioTasks, Waiter},
    unwind::Truncation,
};

/// Levels of the task tree printed; deeper tasks are still in the JSON.
const MAX_TREE_DEPTH: usize = 32;

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

/// asyncio's pending tasks: which task awaits which, and the coroutines each is suspended in.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct AsyncioDump {
    pub pending: usize,
    /// Some tasks were left out (too many, or the read budget ran out): the list is not whole.
    pub truncated: bool,
    pub tasks: Vec<TaskDump>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct TaskDump {
    /// The task object's address, which `awaits` and `awaited_by` refer to.
    pub id: String,
    /// `Task.get_name()`.
    pub name: String,
    /// `running` (the event loop is stepping it), `waiting` (on a future or task) or `ready` (to be stepped).
    pub state: &'static str,
    /// For people: "task request-1", "gather of g1, g2", "a _asyncio.Future".
    pub waits_on: String,
    /// The tasks it awaits (directly, or through a `gather`), by `id`.
    pub awaits: Vec<String>,
    /// The pending tasks awaiting it, by `id`.
    pub awaited_by: Vec<String>,
    /// The coroutines it is suspended in, innermost first.
    pub coroutines: Vec<ReportFrame>,
    /// Why the coroutine chain ends early, if it does.
    pub chain_cut: Option<String>,
}

fn task_id(address: u64) -> String {
    format!("{address:#x}")
}

impl AsyncioDump {
    /// The tasks as reported; `frames` names a task's coroutines (innermost first).
    pub(crate) fn new(
        read: &AsyncioTasks,
        mut frames: impl FnMut(&[profiler_common::PyFrame]) -> Vec<ReportFrame>,
    ) -> Self {
        let name_of = |address: u64| {
            read.tasks.iter().find(|t| t.address == address).map_or_else(|| task_id(address), |t| t.name.clone())
        };
        let awaits_of = |waiter: &Waiter| match waiter {
            Waiter::Task(task) => vec![*task],
            Waiter::Gather(children) => children.clone(),
            Waiter::Nothing | Waiter::Future(_) | Waiter::Unreadable => Vec::new(),
        };
        let tasks = read
            .tasks
            .iter()
            .map(|task| {
                let awaits = awaits_of(&task.waiter);
                let waits_on = match &task.waiter {
                    Waiter::Nothing => "nothing".to_owned(),
                    Waiter::Task(other) => format!("task {}", name_of(*other)),
                    Waiter::Gather(children) => {
                        let names: Vec<String> = children.iter().map(|&child| name_of(child)).collect();
                        format!("gather of {}", names.join(", "))
                    }
                    Waiter::Future(type_name) => format!("a {type_name}"),
                    Waiter::Unreadable => "a future that could not be read".to_owned(),
                };
                let state = match (&task.waiter, task.running) {
                    (_, true) => "running",
                    (Waiter::Nothing, false) => "ready",
                    _ => "waiting",
                };
                let awaited_by = read
                    .tasks
                    .iter()
                    .filter(|other| awaits_of(&other.waiter).contains(&task.address))
                    .map(|other| task_id(other.address))
                    .collect();
                TaskDump {
                    id: task_id(task.address),
                    name: task.name.clone(),
                    state,
                    waits_on,
                    awaits: awaits.into_iter().map(task_id).collect(),
                    awaited_by,
                    coroutines: frames(&task.coroutines),
                    chain_cut: task.chain_cut.map(str::to_owned),
                }
            })
            .collect::<Vec<_>>();
        Self { pending: tasks.len(), truncated: read.truncated, tasks }
    }

    /// The tree, like `python -m asyncio pstree`: tasks no pending task awaits first, each followed by the tasks
    /// it awaits, indented.
    fn write_text(&self, text: &mut String) {
        let more = if self.truncated { ", more left out" } else { "" };
        let _ = writeln!(text, "\nasyncio tasks ({} pending{more}):", self.pending);
        let mut printed = vec![false; self.tasks.len()];
        let mut roots: Vec<usize> = (0..self.tasks.len()).filter(|&i| self.tasks[i].awaited_by.is_empty()).collect();
        // By name, so that two dumps of the same tree read alike (the registries' order is their hash tables').
        roots.sort_by(|&a, &b| self.tasks[a].name.cmp(&self.tasks[b].name));
        for root in roots {
            self.write_task(text, root, 0, &mut printed);
        }
        // Tasks only awaited from a cycle.
        for index in 0..self.tasks.len() {
            if !printed[index] {
                self.write_task(text, index, 0, &mut printed);
            }
        }
    }

    fn write_task(&self, text: &mut String, index: usize, depth: usize, printed: &mut [bool]) {
        let Some(task) = self.tasks.get(index) else { return };
        let indent = "    ".repeat(depth.saturating_add(1));
        let branch = if depth == 0 { "" } else { "└─ " };
        if printed[index] {
            let _ = writeln!(text, "{indent}{branch}task {} (shown above)", task.name);
            return;
        }
        printed[index] = true;
        let waits = match task.state {
            "running" => "running".to_owned(),
            "ready" => "ready to run".to_owned(),
            _ => format!("awaits {}", task.waits_on),
        };
        let _ = writeln!(text, "{indent}{branch}task {} ({}): {waits}", task.name, task.id);
        for frame in &task.coroutines {
            let location = match (&frame.file, frame.line) {
                (Some(file), Some(line)) => format!(" at {file}:{line}"),
                (Some(file), None) => format!(" at {file}"),
                _ => String::new(),
            };
            let _ = writeln!(text, "{indent}      {}{location}", frame.function);
        }
        if let Some(cut) = &task.chain_cut {
            let _ = writeln!(text, "{indent}      (the coroutine chain stops here: {cut})");
        }
        if depth >= MAX_TREE_DEPTH {
            return;
        }
        for awaited in &task.awaits {
            if let Some(child) = self.tasks.iter().position(|t| &t.id == awaited) {
                self.write_task(text, child, depth.saturating_add(1), printed);
            }
        }
    }
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
            asyncio_note: Some("asyncio tasks are read on CPython 3.11 to 3.15, not 3.10".into()),
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
        assert!(text.ends_with("\nasyncio tasks not read: asyncio tasks are read on CPython 3.11 to 3.15, not 3.10\n"));
    }

    #[test]
    fn tasks_print_as_a_tree_of_who_awaits_whom() {
        use profiler_common::PyFrame;

        use crate::python::asyncio_tasks::AsyncTask;
        let frame = |code| PyFrame { code, ..PyFrame::default() };
        let task = |address, name: &str, waiter, coroutines: &[u64]| AsyncTask {
            address,
            name: name.into(),
            waiter,
            running: false,
            coroutines: coroutines.iter().map(|&code| frame(code)).collect(),
            chain_cut: None,
        };
        let read = AsyncioTasks {
            tasks: vec![
                task(0x30, "request-1", Waiter::Future("_asyncio.Future".into()), &[1, 2]),
                task(0x20, "server", Waiter::Task(0x30), &[3]),
                task(0x10, "Task-1", Waiter::Task(0x20), &[4]),
                task(0x40, "batch", Waiter::Gather(vec![0x50, 0x60]), &[5]),
                task(0x50, "fetch-a", Waiter::Nothing, &[]),
                AsyncTask { running: true, ..task(0x60, "fetch-b", Waiter::Nothing, &[]) },
            ],
            truncated: false,
        };
        let names = ["sleep", "handle", "serve", "main", "run_batch"];
        let asyncio = AsyncioDump::new(&read, |frames| {
            frames.iter().map(|f| frame_of(names[f.code as usize - 1], "app.py", 7)).collect()
        });
        assert_eq!(asyncio.tasks[0].awaited_by, ["0x20"]);
        assert_eq!(asyncio.tasks[3].awaits, ["0x50", "0x60"]);
        assert_eq!(asyncio.tasks[4].state, "ready");
        assert_eq!(asyncio.tasks[5].state, "running");
        let mut text = String::new();
        asyncio.write_text(&mut text);
        let expected = "
asyncio tasks (6 pending):
    task Task-1 (0x10): awaits task server
          main at app.py:7
        └─ task server (0x20): awaits task request-1
              serve at app.py:7
            └─ task request-1 (0x30): awaits a _asyncio.Future
                  sleep at app.py:7
                  handle at app.py:7
    task batch (0x40): awaits gather of fetch-a, fetch-b
          run_batch at app.py:7
        └─ task fetch-a (0x50): ready to run
        └─ task fetch-b (0x60): running
";
        assert_eq!(text, expected);
        let json = serde_json::to_value(&asyncio).unwrap();
        assert_eq!(json["tasks"][1]["waits_on"], "task request-1");
        assert_eq!(json["tasks"][0]["coroutines"][1]["function"], "handle");
    }

    fn frame_of(function: &str, file: &str, line: u32) -> ReportFrame {
        frame("python", function, Some(file), Some(line))
    }
}
