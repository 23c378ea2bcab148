//! CPython support in userspace: recognize Python processes, hand their layout to the sampler, and turn the
//! code object addresses the sampler sends into Python frames (function, file, line).
// Values here come from a target (its files, its memory, its maps) or the kernel: no implicit arithmetic.
#![deny(clippy::arithmetic_side_effects)]
pub(crate) mod asyncio_tasks;
pub(crate) mod code;
pub(crate) mod detect;
pub(crate) mod eval_ranges;
pub(crate) mod gil;
pub(crate) mod layout;
pub(crate) mod linetable;
pub(crate) mod thread_names;
pub(crate) mod threads;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use profiler_common::{PyCodeCopy, PyFrame, PyLayout, PY_FRAME_ENTRY, PY_FRAME_SHIM};

use self::code::CodeCache;
pub(crate) use self::detect::Interpreter;
use crate::aggregate::{Frame, FrameKind};

/// A Python frame after resolution, with the kernel's frame flags (entry/shim) that the merge stage needs.
#[derive(Clone, Debug)]
pub(crate) struct PythonFrame {
    pub frame: Frame,
    /// This frame is the first one its `_PyEval_EvalFrameDefault` call ran (3.11+ mark it; in 3.8–3.10 every
    /// frame is).
    pub entry: bool,
    /// (3.12+) a C-stack shim separating two `_PyEval_EvalFrameDefault` calls; carries no function.
    pub shim: bool,
}

enum ProcessState {
    Python(Arc<Interpreter>),
    /// Not Python, or a Python we cannot read (warned once).
    NativeOnly,
    /// Just started or exec'd: the dynamic loader may not have mapped libpython yet, so detection is retried
    /// for a while before the process is taken for native-only.
    Pending {
        since: Instant,
    },
}

/// How long a new process may take to map its interpreter.
const DETECTION_GRACE: Duration = Duration::from_secs(3);

/// Python state of every profiled process.
#[derive(Default)]
pub(crate) struct Python {
    processes: HashMap<u32, ProcessState>,
    /// What was read of each interpreter file, for every process mapping it.
    interpreter_files: detect::InterpreterFiles,
    codes: CodeCache,
    thread_names: thread_names::ThreadNames,
}

impl Python {
    /// Detects the interpreter of a running process (once per process); `None` for native-only processes. An
    /// unsupported or unreadable Python is warned about once, naming the reason, and then profiled natively.
    pub(crate) fn detect(&mut self, pid: u32) -> Option<Arc<Interpreter>> {
        let files = &mut self.interpreter_files;
        self.processes.entry(pid).or_insert_with(|| settle(pid, detect::detect(pid, files)));
        self.interpreter(pid).cloned()
    }

    /// A process started or exec'd: detect its interpreter over the next ticks (`poll_pending`).
    pub(crate) fn expect_new_image(&mut self, pid: u32) {
        self.codes.forget_process(pid);
        self.thread_names.forget_process(pid);
        self.processes.insert(pid, ProcessState::Pending { since: Instant::now() });
    }

    /// A forked child runs the parent's interpreter at the same addresses until it execs.
    pub(crate) fn inherit(&mut self, child: u32, parent: u32) {
        if let Some(interpreter) = self.interpreter(parent).cloned() {
            self.processes.insert(child, ProcessState::Python(interpreter));
        }
    }

    /// Retries detection of new processes; returns the layouts found, for the sampler.
    pub(crate) fn poll_pending(&mut self) -> Vec<(u32, PyLayout)> {
        let mut found = Vec::new();
        for (&pid, state) in self.processes.iter_mut() {
            let ProcessState::Pending { since } = *state else { continue };
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                // Gone before its interpreter was found (a short-lived helper process): nothing to report.
                *state = ProcessState::NativeOnly;
                continue;
            }
            let result = detect::detect(pid, &mut self.interpreter_files);
            let settled = matches!(result, Ok(Some(_))) || since.elapsed() >= DETECTION_GRACE;
            if settled {
                *state = settle(pid, result);
                if let ProcessState::Python(interpreter) = state {
                    found.push((pid, interpreter.layouts.kernel));
                }
            }
        }
        found
    }

    pub(crate) fn interpreter(&self, pid: u32) -> Option<&Arc<Interpreter>> {
        match self.processes.get(&pid)? {
            ProcessState::Python(interpreter) => Some(interpreter),
            ProcessState::NativeOnly | ProcessState::Pending { .. } => None,
        }
    }

    /// Resolves the sampled frames (innermost first). A frame whose code object cannot be read becomes
    /// `[unknown Python frame]` rather than disappearing, so the stack keeps its shape.
    /// `copies` (crash samples only) are names the kernel copied at the crash; they are used for the frames
    /// whose code object can no longer be read.
    pub(crate) fn frames(&mut self, pid: u32, sampled: &[PyFrame], copies: &[PyCodeCopy]) -> Vec<PythonFrame> {
        let Some(interpreter) = self.interpreter(pid).cloned() else { return Vec::new() };
        sampled
            .iter()
            .map(|raw| {
                let shim = raw.flags & PY_FRAME_SHIM != 0;
                let frame = if shim || raw.code == 0 {
                    python_frame("[python shim]".into(), None, None)
                } else {
                    let copied = || {
                        let copy = copies.iter().find(|c| c.code == raw.code)?;
                        code::CodeInfo::from_copy(copy, &interpreter.layouts.code).map(Arc::new)
                    };
                    match self.codes.resolve(pid, &interpreter, raw).or_else(copied) {
                        Some(code) => {
                            python_frame(code.qualname.clone(), Some(code.filename.clone()), code.line(raw.instr))
                        }
                        None => python_frame("[unknown Python frame]".into(), None, None),
                    }
                };
                PythonFrame { frame, entry: raw.flags & PY_FRAME_ENTRY != 0, shim }
            })
            .collect()
    }

    /// Python's name of thread `tid` (`threading.Thread.name`), read from the process at most once a second when
    /// the thread has none yet (at once when `urgent`); `None` for threads `threading` does not know and processes
    /// that are not Python.
    pub(crate) fn thread_name(&mut self, pid: u32, tid: u32, urgent: bool) -> Option<Arc<str>> {
        let interpreter = self.interpreter(pid)?.clone();
        self.thread_names.name(pid, tid, &interpreter, urgent)
    }

    pub(crate) fn forget_process(&mut self, pid: u32) {
        self.processes.remove(&pid);
        self.codes.forget_process(pid);
        self.thread_names.forget_process(pid);
    }
}

fn settle(pid: u32, result: anyhow::Result<Option<Interpreter>>) -> ProcessState {
    match result {
        Ok(Some(interpreter)) => {
            let build = if interpreter.layouts.free_threaded() { " (free-threaded: no GIL)" } else { "" };
            tracing::debug!("PID {pid}: Python {}{build} in {}", interpreter.version, interpreter.module_path);
            ProcessState::Python(Arc::new(interpreter))
        }
        Ok(None) => ProcessState::NativeOnly,
        // It exited while being read (a short-lived child): nothing to warn about, its samples are its last.
        Err(err) if crate::process::Process::read(pid).is_none() => {
            tracing::debug!("PID {pid} exited while its Python was being located: {err:#}");
            ProcessState::NativeOnly
        }
        Err(err) => {
            tracing::warn!(
                "PID {pid} ({}) runs Python but its Python frames cannot be read: {err:#}; showing native stacks only",
                detect::describe(pid).display()
            );
            ProcessState::NativeOnly
        }
    }
}

fn python_frame(function: Arc<str>, file: Option<Arc<str>>, line: Option<u32>) -> Frame {
    Frame { kind: FrameKind::Python, function, file, line, module: None, address: 0, inlined: false }
}
