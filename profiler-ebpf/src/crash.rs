//! Crash capture: when a profiled thread generates SIGSEGV, SIGBUS, SIGILL, SIGFPE or SIGABRT for itself (a fault
//! or `abort()`), take the same payload as a CPU sample, at the moment the signal is generated: before any
//! handler (faulthandler, the app's own) runs and before the process dies.
//!
//! Signals sent to a target by another process (SIGKILL from the OOM killer, `kill -SEGV`) carry no stack of the
//! target; they are reported as lifecycle events so the report can say how the process ended.
use core::{
    ffi::c_void,
    ptr::{read_volatile, write_volatile},
};

use aya_ebpf::helpers::generated as raw;
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated::{bpf_get_current_task, bpf_get_current_task_btf, bpf_ktime_get_ns, bpf_task_pt_regs},
    },
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use profiler_common::{
    CrashRecord, CrashRegs, CrashingProcess, PyCodeCopy, PyLayout, CRASH_CODE_COPIES, CRASH_CODE_LEN,
    CRASH_FILENAME_LEN, CRASH_LINETABLE_LEN, CRASH_QUALNAME_LEN, EVENT_SIGNAL, FLAG_FAULT_ADDR, KIND_CRASH,
    PY_FRAME_SHIM,
};

use crate::{
    capture::{fill, CaptureInfo},
    lifecycle::{config, send},
    maps::{CRASHES, CRASHING, LOST_SAMPLES, PY_PROCESSES, TARGETS},
};

const SIGILL: i32 = 4;
const SIGABRT: i32 = 6;
const SIGBUS: i32 = 7;
const SIGFPE: i32 = 8;
const SIGKILL: i32 = 9;
const SIGSEGV: i32 = 11;

fn is_crash_signal(sig: i32) -> bool {
    matches!(sig, SIGSEGV | SIGBUS | SIGILL | SIGFPE | SIGABRT)
}

/// raw_tracepoint/signal_generate(int sig, struct kernel_siginfo *info, struct task_struct *task, int group,
/// int result): the raw form gives the siginfo (si_code, fault address) that the formatted tracepoint lacks.
#[raw_tracepoint(tracepoint = "signal_generate")]
pub fn signal_generate(ctx: RawTracePointContext) -> u32 {
    let sig: i32 = ctx.arg::<u64>(0) as i32;
    if !is_crash_signal(sig) {
        return 0;
    }
    // Only a thread signalling itself (a fault, abort) is the thread whose stack explains the crash.
    let task: u64 = ctx.arg(2);
    // SAFETY: the helper takes no arguments; its result is only compared.
    if task != unsafe { bpf_get_current_task() } {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: the value is only tested for presence, never read; a map value stays valid for the program's run.
    if unsafe { TARGETS.get(&tgid) }.is_none() {
        return 0;
    }
    // The other threads are captured as the kernel stops them for the process's exit (crash_threads.rs).
    // SAFETY: bpf_ktime_get_ns takes no arguments.
    let crashing =
        CrashingProcess { time_ns: unsafe { bpf_ktime_get_ns() }, tid: pid_tgid as u32, ..Default::default() };
    let _ = CRASHING.insert(&tgid, &crashing, 0);
    let Some(mut entry) = CRASHES.reserve::<CrashRecord>(0) else {
        if let Some(counter) = LOST_SAMPLES.get_ptr_mut(0) {
            // SAFETY: this CPU's value of a per-CPU array, valid for the program's run and touched by no other CPU.
            unsafe { *counter += 1 };
        }
        return 0;
    };
    // SEND_SIG_NOINFO (0) and SEND_SIG_PRIV (1) are markers, not pointers. kernel_siginfo: si_signo, si_errno,
    // si_code (ints), then the union, whose fault variant starts with the address (8-byte aligned: offset 16).
    let siginfo: u64 = ctx.arg(1);
    let mut flags = 0;
    let (mut si_code, mut fault_addr) = (0, 0);
    if siginfo > 1 {
        // SAFETY (both reads): bpf_probe_read_kernel copies an integer by value from the kernel's siginfo, the
        // tracepoint's own argument, and fails cleanly if the address is unreadable.
        si_code = unsafe { bpf_probe_read_kernel((siginfo + 8) as *const i32) }.unwrap_or(0);
        // Only faults carry an address; abort() is a plain signal. The address may well be 0 (NULL).
        if sig != SIGABRT {
            if let Ok(address) = unsafe { bpf_probe_read_kernel((siginfo + 16) as *const u64) } {
                fault_addr = address;
                flags |= FLAG_FAULT_ADDR;
            }
        }
    }
    // No kernel stack: at this point it is only the signal-delivery path (fault handler → force_sig), the same
    // for every crash; the user stack is what explains it.
    let info = CaptureInfo { kind: KIND_CRASH, flags, signal: sig as u32, si_code, fault_addr, ..CaptureInfo::NONE };
    let record = entry.as_mut_ptr();
    // SAFETY: the entry was reserved in CRASHES for a CrashRecord and is ours until submitted below, which is what
    // each of the three requires.
    unsafe {
        // Before `fill`'s loops, so nothing of it is carried through them.
        copy_registers_and_code(record);
        fill(&raw mut (*record).sample, tgid, pid_tgid as u32, info);
        copy_code_names(record, tgid);
    }
    entry.submit(0);
    0
}

/// Copies all the thread's saved user registers and the code at its instruction pointer into the record: what
/// userspace needs to say what the fault hit and by which instruction. Without a branch: each helper writes
/// straight into the record (zero-filling what it cannot read) and the lengths follow from the helpers' results by
/// arithmetic, so the verifier has no extra paths to explore.
///
/// # Safety
/// `record` must point to a CrashRecord reserved in a ring buffer and not yet submitted.
#[inline(always)]
unsafe fn copy_registers_and_code(record: *mut CrashRecord) {
    const REGS_LEN: u32 = size_of::<CrashRegs>() as u32;
    // SAFETY: the record is ours (the caller's contract). pt_regs come from bpf_task_pt_regs of the current task;
    // bpf_probe_read_kernel copies REGS_LEN bytes of them into `regs`, which is that size (CrashRegs mirrors
    // pt_regs). The code read copies CRASH_CODE_LEN bytes into `code`, which is that long, from the target's rip:
    // an address from the target, not trusted, on which bpf_probe_read_user fails cleanly (zero-filling) if it is
    // unmapped.
    unsafe {
        let user_regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const c_void;
        let read = raw::bpf_probe_read_kernel((&raw mut (*record).regs).cast(), REGS_LEN, user_regs);
        write_volatile(&raw mut (*record).regs_len, len_if_read(read, REGS_LEN));
        let rip = read_volatile(&raw const (*record).regs.rip);
        let read =
            raw::bpf_probe_read_user((&raw mut (*record).code).cast(), CRASH_CODE_LEN as u32, rip as *const c_void);
        write_volatile(&raw mut (*record).code_len, len_if_read(read, CRASH_CODE_LEN as u32));
    }
}

/// `len` when a probe-read helper returned 0 (success), 0 when it returned a negative error.
#[inline(always)]
fn len_if_read(result: i64, len: u32) -> u32 {
    (!(result >> 63)) as u32 & len
}

/// How many of the innermost Python frames get their code object copied: `CRASH_CODE_COPIES`, unless userspace
/// lowered it before load for a kernel whose verifier gives up on that many (a constant of the frozen .rodata, so
/// the verifier checks only that many iterations).
// SAFETY: no other symbol of the object is named CRASH_COPY_LIMIT; userspace sets it by this name before load.
#[unsafe(no_mangle)]
static CRASH_COPY_LIMIT: u32 = CRASH_CODE_COPIES as u32;

/// Copies the names and line tables of the innermost Python frames' code objects: userspace reads code objects
/// lazily, and a crashed process is gone before it gets to them.
///
/// # Safety
/// `record` must point to a CrashRecord reserved in a ring buffer and not yet submitted, whose sample `fill` has
/// written.
#[inline(always)]
pub(crate) unsafe fn copy_code_names(record: *mut CrashRecord, tgid: u32) {
    // SAFETY (the record's fields): the record is ours until submitted (the caller's contract); `codes` and
    // `sample` are disjoint fields, so the mutable and shared borrows do not overlap.
    let codes = unsafe { &mut (*record).codes };
    for copy in codes.iter_mut() {
        copy.code = 0;
    }
    // SAFETY: a map value stays valid for the program's run; userspace writes a layout once per process, and a
    // torn one would only make the reads below fail (they are all probe reads).
    let Some(layout) = (unsafe { PY_PROCESSES.get(&tgid) }) else { return };
    let count = unsafe { (*record).sample.header.py_frame_count } as usize;
    let frames = unsafe { &(*record).sample.py_frames };
    // SAFETY: a read of a static u32; volatile so that what userspace wrote before load is read.
    let limit = unsafe { core::ptr::read_volatile(&CRASH_COPY_LIMIT) } as usize;
    for index in 0..CRASH_CODE_COPIES {
        if index >= count || index >= limit {
            break;
        }
        let frame = &frames[index];
        if frame.code == 0 || frame.flags & PY_FRAME_SHIM != 0 {
            continue;
        }
        copy_code(&mut codes[index], frame.code, layout);
    }
}

/// Fills `copy` for the code object at `code`. Each field is read by a helper straight into the record, which
/// zero-fills what it cannot read (an empty name, a line table of length 0), instead of a branch per read: the
/// verifier explores every combination of the branches in every iteration of the loop over frames, and before 6.8
/// it merged too few of them, so this probe went over the million instructions it may take to verify.
#[inline(always)]
fn copy_code(copy: &mut PyCodeCopy, code: u64, layout: &PyLayout) {
    // SAFETY: every destination is a field of `copy` (borrowed mutably) and every length is that field's size:
    // first_line 4 bytes, qualname CRASH_QUALNAME_LEN, filename CRASH_FILENAME_LEN, linetable CRASH_LINETABLE_LEN.
    // The sources are addresses in the target, not trusted; bpf_probe_read_user(_str) fails cleanly on an unmapped
    // one, zero-filling the destination.
    unsafe {
        write_volatile(&raw mut copy.code, code);
        read_user_into((&raw mut copy.first_line).cast(), 4, code.wrapping_add(layout.code_firstlineno));
        let qualname = read_u64_or_zero(code.wrapping_add(layout.code_qualname));
        raw::bpf_probe_read_user_str(
            copy.qualname.as_mut_ptr().cast(),
            CRASH_QUALNAME_LEN as u32,
            qualname.wrapping_add(layout.unicode_ascii_data) as *const c_void,
        );
        let filename = read_u64_or_zero(code.wrapping_add(layout.code_filename));
        raw::bpf_probe_read_user_str(
            copy.filename.as_mut_ptr().cast(),
            CRASH_FILENAME_LEN as u32,
            filename.wrapping_add(layout.unicode_ascii_data) as *const c_void,
        );
        // A bytes object: size at 16, data at 32 in every supported version. The read is fixed-size (the verifier
        // wants it so); a table shorter than the buffer leaves harmless trailing bytes that `linetable_len`
        // excludes.
        let table = read_u64_or_zero(code.wrapping_add(layout.code_linetable));
        let size = read_u64_or_zero(table.wrapping_add(16));
        let copied =
            read_user_into(copy.linetable.as_mut_ptr().cast(), CRASH_LINETABLE_LEN as u32, table.wrapping_add(32));
        let len = if !copied {
            0
        } else if size > CRASH_LINETABLE_LEN as u64 {
            CRASH_LINETABLE_LEN as u32
        } else {
            size as u32
        };
        write_volatile(&raw mut copy.linetable_len, len);
    }
}

/// Reads `size` bytes at user address `address` into `dst` (zeroed if unreadable); true when read.
///
/// # Safety
/// `dst` must be valid for writes of `size` bytes.
#[inline(always)]
unsafe fn read_user_into(dst: *mut c_void, size: u32, address: u64) -> bool {
    // SAFETY: `dst` is the caller's to guarantee; `address` is not trusted and the helper fails cleanly on it.
    unsafe { raw::bpf_probe_read_user(dst, size, address as *const c_void) == 0 }
}

/// The u64 at user address `address`, 0 if unreadable.
#[inline(always)]
fn read_u64_or_zero(address: u64) -> u64 {
    let mut value = 0u64;
    // SAFETY: `value` is 8 bytes, the size read.
    unsafe { read_user_into((&raw mut value).cast(), 8, address) };
    value
}

/// signal/signal_generate (formatted): fatal signals another process sends to a target.
#[tracepoint]
pub fn signal_to_target(ctx: TracePointContext) -> u32 {
    let config = config();
    // SAFETY: read_at is a bpf_probe_read_kernel of an i32 from the tracepoint's record, at offsets userspace read
    // from this tracepoint's format file: a by-value copy that fails cleanly.
    let (Ok(sig), Ok(pid)) = (unsafe { ctx.read_at::<i32>(config.signal_sig as usize) }, unsafe {
        ctx.read_at::<i32>(config.signal_pid as usize)
    }) else {
        return 0;
    };
    if !(sig == SIGKILL || is_crash_signal(sig)) || pid <= 0 {
        return 0;
    }
    let sender = (bpf_get_current_pid_tgid() >> 32) as u32;
    // Self-sent crash signals are captured with their stack by `signal_generate`.
    if sender == pid as u32 && sig != SIGKILL {
        return 0;
    }
    // SAFETY: only tested for presence, never read.
    if unsafe { TARGETS.get(&(pid as u32)) }.is_some() {
        send(EVENT_SIGNAL, pid as u32, sender, sig as u32);
    }
    0
}
