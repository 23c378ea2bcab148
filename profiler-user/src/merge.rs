//! Joins the parts of one sample into the single stack the user sees, leaf first: kernel frames (with
//! `--kernel`), native frames with each `_PyEval_EvalFrameDefault` replaced by the Python frames it was running,
//! a truncation marker when unwinding stopped early, then the thread and process.
//!
//! C-extension frames (lxml, numpy, ...) stay where they were called; the interpreter's own frames between
//! Python frames are folded away unless asked for, since they say "Python called a function" and nothing more.
use std::sync::Arc;

use crate::{
    aggregate::{Frame, FrameKind, Module},
    python::PythonFrame,
    unwind::Truncation,
};

/// Who was sampled: becomes the synthetic root frames.
pub(crate) struct SampleContext<'a> {
    pub process_name: &'a str,
    pub thread_name: &'a str,
    /// The process's executable, kept as the process frame's module: pprof names it the main binary even when
    /// none of its own frames is left (an interpreter's are folded into the Python frames).
    pub executable: Option<&'a Arc<Module>>,
}

/// The Python side of a sample.
pub(crate) struct PythonStack<'a> {
    /// Innermost first.
    pub frames: &'a [PythonFrame],
    /// Path of the module holding the interpreter (its frames are interpreter internals).
    pub interpreter_module: &'a str,
    /// File offsets of evaluation-loop code without the `_PyEval_EvalFrameDefault` name.
    pub eval_ranges: &'a [std::ops::Range<u64>],
    /// Keep interpreter-internal native frames (`--native-python-internals`).
    pub keep_internals: bool,
}

pub(crate) fn merge(
    kernel: &[Arc<[Frame]>],
    native: &[Arc<[Frame]>],
    truncation: Option<Truncation>,
    python: Option<&PythonStack>,
    context: &SampleContext,
) -> Vec<Frame> {
    // Sized once: a Python stack is a few dozen frames, each clone a few small strings.
    let capacity =
        kernel.iter().chain(native).map(|f| f.len()).sum::<usize>() + python.map_or(0, |p| p.frames.len()) + 3;
    let mut frames: Vec<Frame> = Vec::with_capacity(capacity);
    frames.extend(kernel.iter().flat_map(|f| f.iter().cloned()));
    let marker = truncation.map(|t| synthetic(FrameKind::Truncated, truncation_name(t)));
    match python.filter(|p| !p.frames.is_empty()) {
        Some(python) => merge_python(&mut frames, native, python, marker),
        None => frames.extend(native.iter().flat_map(|f| f.iter().cloned()).chain(marker)),
    }
    frames.push(synthetic(FrameKind::Context, context.thread_name));
    frames.push(Frame { module: context.executable.cloned(), ..synthetic(FrameKind::Context, context.process_name) });
    frames
}

/// `marker` (the native stack was cut short) goes where the native frames end: between them and the Python
/// frames of the outer evaluation loops unwinding did not reach, so the gap shows where it is.
fn merge_python(out: &mut Vec<Frame>, native: &[Arc<[Frame]>], python: &PythonStack, marker: Option<Frame>) {
    let mut remaining = python.frames;
    for group in native {
        let Some(outer) = group.last() else { continue };
        if is_eval_frame(outer, python) {
            let (run, rest) = split_run(remaining);
            out.extend(run.iter().filter(|f| !f.shim).map(|f| f.frame.clone()));
            remaining = rest;
            if python.keep_internals {
                out.extend(group.iter().cloned());
            }
        } else if python.keep_internals || !in_module(outer, python.interpreter_module) {
            out.extend(group.iter().cloned());
        }
    }
    // Native unwinding stopped before the outer evaluation loops: their Python frames still go at the root.
    out.extend(marker);
    out.extend(remaining.iter().filter(|f| !f.shim).map(|f| f.frame.clone()));
}

/// The Python frames run by one `_PyEval_EvalFrameDefault` call: up to and including its entry frame (3.11) or
/// its C-stack shim (3.12+).
fn split_run(frames: &[PythonFrame]) -> (&[PythonFrame], &[PythonFrame]) {
    let end = frames.iter().position(|f| f.entry || f.shim).map_or(frames.len(), |i| i + 1);
    frames.split_at(end)
}

fn is_eval_frame(frame: &Frame, python: &PythonStack) -> bool {
    frame.kind == FrameKind::Native
        && (frame.function.starts_with("_PyEval_EvalFrameDefault")
            || (in_module(frame, python.interpreter_module)
                && python.eval_ranges.iter().any(|range| range.contains(&frame.address))))
}

fn in_module(frame: &Frame, module_path: &str) -> bool {
    frame.module.as_ref().is_some_and(|m| m.path == module_path)
}

/// The frame name that marks a stack cut short.
pub(crate) fn truncation_name(truncation: Truncation) -> &'static str {
    match truncation {
        Truncation::StackCopyEnd => "[truncated: stack deeper than the copy]",
        Truncation::UnwindError => "[truncated: no unwind info]",
        Truncation::TooDeep => "[truncated: too many frames]",
        Truncation::NoMaps => "[truncated: process gone]",
        Truncation::MapsChanged => "[unknown: code remapped]",
    }
}

/// The leaf frame an off-CPU stack gets in folded stacks and flame graphs, which have no labels: what the thread
/// waited for (`[wait: gil]`). pprof leaves it out, as every context frame: there the `wait` label says it.
pub(crate) fn wait_frame(reason: &str) -> Frame {
    synthetic(FrameKind::Context, &format!("[wait: {reason}]"))
}

fn synthetic(kind: FrameKind, name: &str) -> Frame {
    Frame { kind, function: name.into(), file: None, line: None, module: None, address: 0, inlined: false }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Module;

    const PYTHON: &str = "/usr/bin/python3.11";

    fn native(name: &str, module: &str) -> Arc<[Frame]> {
        let module = Some(Module { path: module.into(), build_id: None, executable: false });
        Arc::from([Frame {
            kind: FrameKind::Native,
            module: module.map(Arc::new),
            ..synthetic(FrameKind::Native, name)
        }])
    }

    fn py(name: &str, entry: bool) -> PythonFrame {
        PythonFrame { frame: synthetic(FrameKind::Python, name), entry, shim: false }
    }

    fn shim() -> PythonFrame {
        PythonFrame { frame: synthetic(FrameKind::Python, "[python shim]"), entry: false, shim: true }
    }

    fn names(frames: &[Frame]) -> Vec<&str> {
        frames.iter().map(|f| &*f.function).collect()
    }

    const CONTEXT: SampleContext = SampleContext { process_name: "app", thread_name: "worker", executable: None };

    #[test]
    fn orders_kernel_native_truncation_then_context() {
        let kernel: Arc<[Frame]> = Arc::from([synthetic(FrameKind::Kernel, "do_syscall_64")]);
        let frames = merge(
            &[kernel],
            &[native("read", "/libc"), native("main", "/a")],
            Some(Truncation::StackCopyEnd),
            None,
            &CONTEXT,
        );
        assert_eq!(
            names(&frames),
            ["do_syscall_64", "read", "main", "[truncated: stack deeper than the copy]", "worker", "app"]
        );
        assert_eq!(frames[3].kind, FrameKind::Truncated);
        assert_eq!(frames[5].kind, FrameKind::Context);
    }

    /// 3.11: a C extension called from Python called back into Python: two evaluation loops.
    #[test]
    fn replaces_each_eval_loop_by_its_python_frames_3_11() {
        let native_stack = [
            native("_PyEval_EvalFrameDefault", PYTHON),
            native("_PyFunction_Vectorcall", PYTHON),
            native("xmlParseChunk", "/usr/lib/libxml2.so.2"),
            native("cfunction_call", PYTHON),
            native("_PyEval_EvalFrameDefault", PYTHON),
            native("Py_RunMain", PYTHON),
            native("__libc_start_call_main", "/libc"),
        ];
        let python = [py("callback", true), py("parse", false), py("handler", false), py("<module>", true)];
        let stack =
            PythonStack { frames: &python, interpreter_module: PYTHON, eval_ranges: &[], keep_internals: false };
        let frames = merge(&[], &native_stack, None, Some(&stack), &CONTEXT);
        assert_eq!(
            names(&frames),
            ["callback", "xmlParseChunk", "parse", "handler", "<module>", "__libc_start_call_main", "worker", "app"]
        );
    }

    /// 3.12+: shim frames separate the runs and are not shown.
    #[test]
    fn shims_separate_runs_and_disappear_3_12() {
        let native_stack = [
            native("_PyEval_EvalFrameDefault", PYTHON),
            native("numpy_op", "/numpy/_multiarray_umath.so"),
            native("_PyEval_EvalFrameDefault", PYTHON),
        ];
        let python = [py("inner", false), shim(), py("compute", false), py("<module>", false), shim()];
        let stack =
            PythonStack { frames: &python, interpreter_module: PYTHON, eval_ranges: &[], keep_internals: false };
        let frames = merge(&[], &native_stack, None, Some(&stack), &CONTEXT);
        assert_eq!(names(&frames), ["inner", "numpy_op", "compute", "<module>", "worker", "app"]);
    }

    /// A split evaluation loop: its unnamed part (known by address) is an evaluation loop too.
    #[test]
    fn unnamed_eval_code_is_recognized_by_address() {
        let mut body = native("[python3.14+0x43fb60]", PYTHON);
        Arc::get_mut(&mut body).unwrap()[0].address = 0x3fb60;
        let native_stack = [body, native("main", PYTHON)];
        let python = [py("leaf", false), py("<module>", false), shim()];
        let ranges = [std::ops::Range { start: 0x3fb58, end: 0x5451f }];
        let stack =
            PythonStack { frames: &python, interpreter_module: PYTHON, eval_ranges: &ranges, keep_internals: false };
        let frames = merge(&[], &native_stack, None, Some(&stack), &CONTEXT);
        assert_eq!(names(&frames), ["leaf", "<module>", "worker", "app"]);
    }

    #[test]
    fn keeps_internals_on_request_and_python_frames_past_a_truncated_native_stack() {
        let native_stack = [native("_PyEval_EvalFrameDefault", PYTHON), native("PyObject_Call", PYTHON)];
        let python = [py("f", true), py("<module>", true)];
        let stack = PythonStack { frames: &python, interpreter_module: PYTHON, eval_ranges: &[], keep_internals: true };
        let frames = merge(&[], &native_stack, Some(Truncation::StackCopyEnd), Some(&stack), &CONTEXT);
        assert_eq!(
            names(&frames),
            [
                "f",
                "_PyEval_EvalFrameDefault",
                "PyObject_Call",
                "[truncated: stack deeper than the copy]",
                "<module>",
                "worker",
                "app"
            ]
        );
    }
}
