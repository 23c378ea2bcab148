//! CPython support in userspace: recognize Python processes, hand their layout to the sampler, and turn the
//! code object addresses the sampler sends into Python frames (function, file, line).
pub mod code;
pub mod detect;
pub mod layout;
pub mod linetable;
pub mod memory;

use std::{collections::HashMap, sync::Arc};

use profiler_common::{PY_FRAME_ENTRY, PY_FRAME_SHIM, PyFrame};

pub use self::detect::Interpreter;
use self::code::CodeCache;
use crate::aggregate::{Frame, FrameKind};

/// A Python frame after resolution, with the kernel's frame flags (entry/shim) that the merge stage needs.
#[derive(Clone, Debug)]
pub struct PythonFrame {
    pub frame: Frame,
    /// (3.11) this frame is the first one its `_PyEval_EvalFrameDefault` call ran.
    pub entry: bool,
    /// (3.12+) a C-stack shim separating two `_PyEval_EvalFrameDefault` calls; carries no function.
    pub shim: bool,
}

enum ProcessState {
    Python(Arc<Interpreter>),
    /// Not Python, or a Python we cannot read (warned once).
    NativeOnly,
}

/// Python state of every profiled process.
#[derive(Default)]
pub struct Python {
    processes: HashMap<u32, ProcessState>,
    codes: CodeCache,
}

impl Python {
    /// Detects the interpreter of `pid` (once per process); `None` for native-only processes. An unsupported or
    /// unreadable Python is warned about once, naming the reason, and then profiled natively.
    pub fn detect(&mut self, pid: u32) -> Option<Arc<Interpreter>> {
        let state = self.processes.entry(pid).or_insert_with(|| match detect::detect(pid) {
            Ok(Some(interpreter)) => {
                tracing::debug!("PID {pid}: Python {} in {}", interpreter.version, interpreter.module_path);
                ProcessState::Python(Arc::new(interpreter))
            }
            Ok(None) => ProcessState::NativeOnly,
            Err(err) => {
                tracing::warn!(
                    "PID {pid} ({}) runs Python but its Python frames cannot be read: {err:#}; showing native stacks only",
                    detect::describe(pid).display()
                );
                ProcessState::NativeOnly
            }
        });
        match state {
            ProcessState::Python(interpreter) => Some(interpreter.clone()),
            ProcessState::NativeOnly => None,
        }
    }

    pub fn interpreter(&self, pid: u32) -> Option<&Arc<Interpreter>> {
        match self.processes.get(&pid)? {
            ProcessState::Python(interpreter) => Some(interpreter),
            ProcessState::NativeOnly => None,
        }
    }

    /// Resolves the sampled frames (innermost first). A frame whose code object cannot be read becomes
    /// `[unknown Python frame]` rather than disappearing, so the stack keeps its shape.
    pub fn frames(&mut self, pid: u32, sampled: &[PyFrame]) -> Vec<PythonFrame> {
        let Some(interpreter) = self.interpreter(pid).cloned() else { return Vec::new() };
        sampled
            .iter()
            .map(|raw| {
                let shim = raw.flags & PY_FRAME_SHIM != 0;
                let frame = if shim || raw.code == 0 {
                    python_frame("[python shim]".into(), None, None)
                } else {
                    match self.codes.resolve(pid, &interpreter, raw) {
                        Some(code) => python_frame(code.qualname.clone(), Some(code.filename.clone()), Some(code.line(raw.instr))),
                        None => python_frame("[unknown Python frame]".into(), None, None),
                    }
                };
                PythonFrame { frame, entry: raw.flags & PY_FRAME_ENTRY != 0, shim }
            })
            .collect()
    }

    pub fn forget_process(&mut self, pid: u32) {
        self.processes.remove(&pid);
        self.codes.forget_process(pid);
    }
}

fn python_frame(function: String, file: Option<String>, line: Option<u32>) -> Frame {
    Frame { kind: FrameKind::Python, function, file, line, module: None, address: 0, inlined: false }
}
