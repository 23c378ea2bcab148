//! Python frame capture, run inside the CPU sampler for threads of a Python process.
//!
//! The frames live on the interpreter's own data stack and are gone by the time userspace could read them, so the
//! chain is walked here, at sample time: thread → PyThreadState (from the interpreter's thread list, matched on
//! the native thread id, or for 3.8–3.10 on the pthread id, which is the thread's TLS base; `_Py_tss_tstate` is
//! cleared while the GIL is released) → current frame → previous ...
//! Only code object addresses are sent; userspace turns them into names.
use aya_ebpf::helpers::bpf_probe_read_user;
use profiler_common::{
    PyFrame, PyLayout, GIL_RUNTIME_TSTATE, GIL_STRUCT, NO_OFFSET, PY_FRAMES_TRUNCATED, PY_FRAME_ENTRY, PY_FRAME_SHIM,
    PY_GIL_HELD, PY_LAYOUT_FRAME_OBJECTS, PY_LAYOUT_IS_ENTRY_BYTE, PY_LAYOUT_TAGGED_CODE, PY_MAX_FRAMES,
    PY_MAX_THREADS, PY_READ_FAILED, PY_THREAD_FOUND,
};

use crate::maps::{PY_PROCESSES, PY_THREADS};

/// How many frames of a thread are walked: `PY_MAX_FRAMES`, unless userspace lowered it before load for a kernel
/// whose verifier gives up on that many (the verifier walks every iteration, and older ones prune fewer of the
/// loop's paths). A constant of the frozen .rodata, so the verifier knows it and checks only that many.
// SAFETY: no other symbol of the object is named PY_FRAME_LIMIT; userspace sets it by this name before load.
#[unsafe(no_mangle)]
static PY_FRAME_LIMIT: u32 = PY_MAX_FRAMES as u32;

/// The same for the off-CPU sampler's capture: its program is a little larger than the CPU sampler's (the period's
/// bookkeeping comes first), so on kernels that already need a shorter walk it needs a shorter one still.
// SAFETY: no other symbol of the object is named OFF_CPU_PY_FRAME_LIMIT; userspace sets it by this name before load.
#[unsafe(no_mangle)]
static OFF_CPU_PY_FRAME_LIMIT: u32 = PY_MAX_FRAMES as u32;

/// Fills `frames` (innermost first) for thread `tid` of process `tgid`; returns (frame count, `PY_*` flags).
/// Processes without a layout return (0, 0) after one map lookup. `off_cpu`: walk as far as
/// `OFF_CPU_PY_FRAME_LIMIT` (a constant at each call site, so each program reads one of the limits).
#[inline(always)]
pub fn capture(tgid: u32, tid: u32, frames: &mut [PyFrame; PY_MAX_FRAMES], off_cpu: bool) -> (u32, u32) {
    // SAFETY: a map value stays valid for the program's run; userspace writes a layout once per process, and a
    // torn one would only make the reads below fail or stop early (they are all probe reads).
    let Some(layout) = (unsafe { PY_PROCESSES.get(&tgid) }) else {
        return (0, 0);
    };
    let Some(interp) = read_u64(layout.runtime.wrapping_add(layout.runtime_interpreters_head)) else {
        return (0, PY_READ_FAILED);
    };
    let frame_objects = layout.flags & PY_LAYOUT_FRAME_OBJECTS != 0;
    let thread_key = if frame_objects {
        match crate::task::current_fsbase() {
            Some(fsbase) => fsbase,
            None => return (0, 0),
        }
    } else {
        u64::from(tid)
    };
    let Some(tstate) = find_thread_state(layout, interp, tid, thread_key) else {
        return (0, 0);
    };
    let mut flags = PY_THREAD_FOUND;
    if holds_gil(layout, interp, tstate) {
        flags |= PY_GIL_HELD;
    }

    let Some(mut frame) = read_u64(tstate.wrapping_add(layout.tstate_frame)) else {
        return (0, flags | PY_READ_FAILED);
    };
    if layout.cframe_current_frame != NO_OFFSET && frame != 0 {
        match read_u64(frame.wrapping_add(layout.cframe_current_frame)) {
            Some(current) => frame = current,
            None => return (0, flags | PY_READ_FAILED),
        }
    }
    let code_mask = if layout.flags & PY_LAYOUT_TAGGED_CODE != 0 { !3u64 } else { !0u64 };
    let mut count = 0u32;
    // SAFETY: reads of a static u32; volatile so that what userspace wrote before load is read.
    let limit = if off_cpu {
        unsafe { core::ptr::read_volatile(&OFF_CPU_PY_FRAME_LIMIT) }
    } else {
        unsafe { core::ptr::read_volatile(&PY_FRAME_LIMIT) }
    };
    for slot in frames.iter_mut() {
        if frame == 0 || count >= limit {
            break;
        }
        let (Some(code), Some(instr)) =
            (read_u64(frame.wrapping_add(layout.frame_code)), read_u64(frame.wrapping_add(layout.frame_instr)))
        else {
            return (count, flags | PY_READ_FAILED);
        };
        // Frame objects have no owner byte: each is the only frame of its evaluation call.
        let owner = if frame_objects {
            0
        } else {
            match read_u8(frame.wrapping_add(layout.frame_owner)) {
                Some(owner) => owner,
                None => return (count, flags | PY_READ_FAILED),
            }
        };
        let code = code & code_mask;
        let frame_flags = if frame_objects {
            PY_FRAME_ENTRY
        } else if layout.flags & PY_LAYOUT_IS_ENTRY_BYTE != 0 {
            if owner != 0 {
                PY_FRAME_ENTRY
            } else {
                0
            }
        } else if owner >= 3 {
            PY_FRAME_SHIM
        } else {
            0
        };
        let code_key = if code != 0 && frame_flags & PY_FRAME_SHIM == 0 {
            // SAFETY: a by-value copy from an address in the target, not trusted; bpf_probe_read_user fails
            // cleanly if it is unmapped.
            match unsafe { bpf_probe_read_user((code.wrapping_add(layout.code_filename)) as *const [u64; 2]) } {
                Ok([filename, name]) => filename ^ name,
                Err(_) => 0,
            }
        } else {
            0
        };
        *slot = PyFrame { code, instr, code_key, flags: frame_flags, _pad: 0 };
        count += 1;
        match read_u64(frame.wrapping_add(layout.frame_previous)) {
            Some(previous) => frame = previous,
            None => return (count, flags | PY_READ_FAILED),
        }
    }
    if frame != 0 {
        flags |= PY_FRAMES_TRUNCATED;
    }
    (count, flags)
}

/// The PyThreadState whose thread id field (native TID, or pthread id for 3.8–3.10) is `key`; cached per `tid`
/// and re-validated, since thread states are freed and reused.
///
/// Inlined, as everything the programs call is: a BPF-to-BPF call makes verifiers before 6.4 give up precision
/// tracking across it and mark every scalar precise, which stops them from pruning the frame loop's states, and
/// the sampler then exceeds the million instructions a program may take to verify (Debian 12's 6.1, Ubuntu
/// 22.04's 5.15).
#[inline(always)]
fn find_thread_state(layout: &PyLayout, interp: u64, tid: u32, key: u64) -> Option<u64> {
    // SAFETY: a map value stays valid for the program's run; the u64 is copied at once, and re-validated below.
    if let Some(&cached) = unsafe { PY_THREADS.get(&tid) } {
        if read_u64(cached.wrapping_add(layout.tstate_native_thread_id)) == Some(key) {
            return Some(cached);
        }
    }
    let mut tstate = read_u64(interp.wrapping_add(layout.interp_threads_head))?;
    for _ in 0..PY_MAX_THREADS {
        if tstate == 0 {
            return None;
        }
        if read_u64(tstate.wrapping_add(layout.tstate_native_thread_id))? == key {
            let _ = PY_THREADS.insert(&tid, &tstate, 0);
            return Some(tstate);
        }
        tstate = read_u64(tstate.wrapping_add(layout.tstate_next))?;
    }
    None
}

#[inline(always)]
fn holds_gil(layout: &PyLayout, interp: u64, tstate: u64) -> bool {
    match layout.gil_mode {
        GIL_RUNTIME_TSTATE => read_u64(layout.runtime.wrapping_add(layout.gil_holder)) == Some(tstate),
        GIL_STRUCT => {
            let base = if layout.gil_ptr == NO_OFFSET {
                interp
            } else {
                match read_u64(interp.wrapping_add(layout.gil_ptr)) {
                    Some(gil) => gil,
                    None => return false,
                }
            };
            // SAFETY: a by-value copy from an address in the target, not trusted; fails cleanly if unmapped.
            let locked = unsafe { bpf_probe_read_user(base.wrapping_add(layout.gil_locked) as *const u32) };
            matches!(locked, Ok(l) if l != 0) && read_u64(base.wrapping_add(layout.gil_holder)) == Some(tstate)
        }
        _ => false,
    }
}

#[inline(always)]
fn read_u64(address: u64) -> Option<u64> {
    // SAFETY: bpf_probe_read_user copies 8 bytes by value from `address`, which comes from the target and is not
    // trusted; it fails cleanly on an unmapped address.
    unsafe { bpf_probe_read_user(address as *const u64) }.ok()
}

#[inline(always)]
fn read_u8(address: u64) -> Option<u8> {
    // SAFETY: as in `read_u64`, one byte.
    unsafe { bpf_probe_read_user(address as *const u8) }.ok()
}
