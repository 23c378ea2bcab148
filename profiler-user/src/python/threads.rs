//! The interpreter's threads read from userspace, for `profiler dump`: every `PyThreadState` with its thread id,
//! whether it holds the GIL, and its frame chain as the sampler would have sent it (`PyFrame`s, innermost first).
//!
//! This is the walk `profiler-ebpf/src/python.rs` does at sample time (same `PyLayout`, same rules: see
//! docs/cpython.md), done here with process_vm_readv. Reading frames from outside is racy for a thread that runs
//! (3.11+ frames are reused as soon as a call returns), so the dump reads them only for threads blocked in the
//! kernel, whose frames cannot change until they wake; the caller re-checks that the thread did not move.
// Values here come from a target (its files, its memory, its maps) or the kernel: no implicit arithmetic.
#![deny(clippy::arithmetic_side_effects)]
use anyhow::{Context as _, Result};
use profiler_common::{
    PyFrame, PyLayout, GIL_RUNTIME_TSTATE, GIL_STRUCT, NO_OFFSET, PY_FRAME_ENTRY, PY_FRAME_SHIM,
    PY_LAYOUT_FRAME_OBJECTS, PY_LAYOUT_IS_ENTRY_BYTE, PY_LAYOUT_TAGGED_CODE, PY_MAX_FRAMES, PY_MAX_THREADS,
};

use crate::process::memory;

/// One `PyThreadState` of the main interpreter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PyThread {
    /// Address of the thread state.
    pub tstate: u64,
    /// The kernel TID (3.11+), or `None` when the version knows threads only by pthread id (3.8–3.10).
    pub tid: Option<u32>,
    /// The thread id field as read: the native TID, or the pthread id.
    pub thread_id: u64,
    pub holds_gil: bool,
}

/// A thread's frame chain, innermost first, as the sampler sends it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PyStack {
    pub frames: Vec<PyFrame>,
    /// More than `PY_MAX_FRAMES` frames: the outermost are missing.
    pub truncated: bool,
    /// A read failed midway: the frames read so far are kept.
    pub read_failed: bool,
}

/// The thread states of the main interpreter (at most `PY_MAX_THREADS`), with the GIL holder marked.
pub(crate) fn threads(pid: u32, layout: &PyLayout) -> Result<Vec<PyThread>> {
    let interp = read_u64(pid, layout.runtime.checked_add(layout.runtime_interpreters_head))
        .context("reading the interpreter list of _PyRuntime")?;
    let by_pthread_id = by_pthread_id(layout);
    let gil_holder = gil_holder(pid, layout, interp);
    let mut tstate = read_u64(pid, interp.checked_add(layout.interp_threads_head)).context("reading thread states")?;
    let mut threads = Vec::new();
    while tstate != 0 && threads.len() < PY_MAX_THREADS {
        let thread_id = read_u64(pid, tstate.checked_add(layout.tstate_native_thread_id))
            .with_context(|| format!("reading the thread state at {tstate:#x}"))?;
        let tid = if by_pthread_id { None } else { u32::try_from(thread_id).ok() };
        threads.push(PyThread { tstate, tid, thread_id, holds_gil: gil_holder == Some(tstate) });
        tstate = read_u64(pid, tstate.checked_add(layout.tstate_next)).context("reading the thread list")?;
    }
    Ok(threads)
}

/// Whether the version's thread states know their thread by pthread id only (3.8–3.10, the versions of frame
/// objects), not by kernel TID.
pub(crate) fn by_pthread_id(layout: &PyLayout) -> bool {
    layout.flags & PY_LAYOUT_FRAME_OBJECTS != 0
}

/// The thread state holding the GIL, when the layout says how to tell and it is held.
fn gil_holder(pid: u32, layout: &PyLayout, interp: u64) -> Option<u64> {
    match layout.gil_mode {
        GIL_RUNTIME_TSTATE => read_u64(pid, layout.runtime.checked_add(layout.gil_holder)).filter(|&t| t != 0),
        GIL_STRUCT => {
            let base =
                if layout.gil_ptr == NO_OFFSET { interp } else { read_u64(pid, interp.checked_add(layout.gil_ptr))? };
            let locked = memory::read(pid, base.checked_add(layout.gil_locked)?, 4).ok()?;
            if memory::u32_at(&locked, 0)? == 0 {
                return None;
            }
            read_u64(pid, base.checked_add(layout.gil_holder)).filter(|&t| t != 0)
        }
        _ => None,
    }
}

/// The frame chain of thread state `tstate`, walked like the sampler walks it.
pub(crate) fn stack(pid: u32, layout: &PyLayout, tstate: u64) -> PyStack {
    let mut stack = PyStack::default();
    let Some(mut frame) = read_u64(pid, tstate.checked_add(layout.tstate_frame)) else {
        stack.read_failed = true;
        return stack;
    };
    if layout.cframe_current_frame != NO_OFFSET && frame != 0 {
        match read_u64(pid, frame.checked_add(layout.cframe_current_frame)) {
            Some(current) => frame = current,
            None => {
                stack.read_failed = true;
                return stack;
            }
        }
    }
    let frame_objects = layout.flags & PY_LAYOUT_FRAME_OBJECTS != 0;
    let code_mask = if layout.flags & PY_LAYOUT_TAGGED_CODE != 0 { !3u64 } else { !0u64 };
    while frame != 0 {
        if stack.frames.len() >= PY_MAX_FRAMES {
            stack.truncated = true;
            break;
        }
        let Some(raw) = read_frame(pid, layout, frame, frame_objects, code_mask) else {
            stack.read_failed = true;
            break;
        };
        stack.frames.push(raw);
        match read_u64(pid, frame.checked_add(layout.frame_previous)) {
            Some(previous) => frame = previous,
            None => {
                stack.read_failed = true;
                break;
            }
        }
    }
    stack
}

fn read_frame(pid: u32, layout: &PyLayout, frame: u64, frame_objects: bool, code_mask: u64) -> Option<PyFrame> {
    let code = read_u64(pid, frame.checked_add(layout.frame_code))? & code_mask;
    let instr = read_u64(pid, frame.checked_add(layout.frame_instr))?;
    // Frame objects have no owner byte: each is the only frame of its evaluation call.
    let owner = if frame_objects {
        0
    } else {
        let byte = memory::read(pid, frame.checked_add(layout.frame_owner)?, 1).ok()?;
        *byte.first()?
    };
    let flags = frame_flags(layout.flags, owner);
    let code_key = if code != 0 && flags & PY_FRAME_SHIM == 0 {
        memory::read(pid, code.checked_add(layout.code_filename)?, 16)
            .ok()
            .and_then(|pair| Some(memory::u64_at(&pair, 0)? ^ memory::u64_at(&pair, 8)?))
            .unwrap_or(0)
    } else {
        0
    };
    Some(PyFrame { code, instr, code_key, flags, _pad: 0 })
}

/// `PY_FRAME_ENTRY` / `PY_FRAME_SHIM` from the frame's owner (or 3.11 `is_entry`) byte, as the sampler sets them.
fn frame_flags(layout_flags: u32, owner: u8) -> u32 {
    if layout_flags & PY_LAYOUT_FRAME_OBJECTS != 0 {
        PY_FRAME_ENTRY
    } else if layout_flags & PY_LAYOUT_IS_ENTRY_BYTE != 0 {
        if owner != 0 {
            PY_FRAME_ENTRY
        } else {
            0
        }
    } else if owner >= 3 {
        PY_FRAME_SHIM
    } else {
        0
    }
}

fn read_u64(pid: u32, address: Option<u64>) -> Option<u64> {
    let bytes = memory::read(pid, address?, 8).ok()?;
    memory::u64_at(&bytes, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_flags_follow_the_sampler() {
        assert_eq!(frame_flags(PY_LAYOUT_FRAME_OBJECTS, 0), PY_FRAME_ENTRY);
        assert_eq!(frame_flags(PY_LAYOUT_IS_ENTRY_BYTE, 1), PY_FRAME_ENTRY);
        assert_eq!(frame_flags(PY_LAYOUT_IS_ENTRY_BYTE, 0), 0);
        assert_eq!(frame_flags(0, 3), PY_FRAME_SHIM);
        assert_eq!(frame_flags(PY_LAYOUT_TAGGED_CODE, 4), PY_FRAME_SHIM);
        assert_eq!(frame_flags(0, 2), 0);
    }

    /// A fake interpreter in our own memory: runtime → interpreter → two thread states, the second with two
    /// frames; 3.12's shape (cframe, owner byte, GIL struct behind a pointer).
    #[test]
    fn walks_a_fake_interpreter_in_our_own_memory() {
        let mut code = Box::new([0u64; 32]);
        let code_addr = code.as_ptr() as u64;
        code[14] = 0x1000; // co_filename at 112
        code[15] = 0x0110; // co_name at 120
        let mut outer = Box::new([0u64; 16]);
        let mut inner = Box::new([0u64; 16]);
        let outer_addr = outer.as_ptr() as u64;
        outer[0] = code_addr; // f_code at 0
        outer[1] = 0; // previous at 8
        outer[7] = 0x77; // prev_instr at 56
        outer[8] = 3 << 48; // owner byte at 70: a shim
        inner[0] = code_addr;
        inner[1] = outer_addr;
        inner[7] = 0x55;
        let inner_addr = inner.as_ptr() as u64;
        let cframe = Box::new([inner_addr, 0]);
        let mut second = Box::new([0u64; 32]);
        second[7] = cframe.as_ptr() as u64; // cframe at 56
        second[18] = 4242; // native_thread_id at 144
        let mut first = Box::new([0u64; 32]);
        first[1] = second.as_ptr() as u64; // next at 8
        first[18] = 4241;
        let gil = Box::new([0u64, second.as_ptr() as u64, 1]); // last_holder at 8, locked at 16
        let mut interp = Box::new([0u64; 64]);
        interp[9] = first.as_ptr() as u64; // threads.head at 72
        interp[48] = gil.as_ptr() as u64; // ceval.gil at 384
        let mut runtime = Box::new([0u64; 8]);
        runtime[5] = interp.as_ptr() as u64; // interpreters.head at 40
        let layout = PyLayout {
            runtime: runtime.as_ptr() as u64,
            ..crate::python::layout::for_version(
                crate::python::layout::Version { major: 3, minor: 12 },
                runtime.as_ptr() as u64,
                None,
            )
            .unwrap()
            .kernel
        };
        let me = std::process::id();
        let found = threads(me, &layout).unwrap();
        assert_eq!(found.iter().map(|t| t.tid).collect::<Vec<_>>(), [Some(4241), Some(4242)]);
        assert_eq!(found.iter().map(|t| t.holds_gil).collect::<Vec<_>>(), [false, true]);
        let stack = stack(me, &layout, found[1].tstate);
        assert!(!stack.read_failed && !stack.truncated, "{stack:?}");
        assert_eq!(stack.frames.len(), 2);
        assert_eq!((stack.frames[0].code, stack.frames[0].instr, stack.frames[0].flags), (code_addr, 0x55, 0));
        assert_eq!(stack.frames[0].code_key, 0x1000 ^ 0x0110);
        assert_eq!(stack.frames[1].flags, PY_FRAME_SHIM);
        // Nothing readable at the runtime address: an error, not a panic.
        let broken = PyLayout { runtime: 8, ..layout };
        assert!(threads(me, &broken).is_err());
        drop((code, outer, inner, cframe, second, first, gil, interp, runtime));
    }
}
