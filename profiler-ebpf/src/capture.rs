//! Fills a sample record for the current thread: user registers, a copy of the top of its user stack, its Python
//! frames. Shared by the CPU sampler and the crash probe, so a crash carries the same payload as a CPU sample.
use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_probe_read_kernel, bpf_probe_read_user_buf,
        generated::{bpf_get_current_task_btf, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_task_pt_regs},
    },
};
use core::ptr::write_volatile;

use profiler_common::{SampleRecord, UserRegs, KIND_OFF_CPU, STACK_CHUNK, STACK_CHUNKS};

use crate::maps::PY_GIL;

/// What the caller knows that the capture does not.
pub struct CaptureInfo {
    pub kind: u32,
    pub flags: u32,
    pub kernel_stack_id: i64,
    pub signal: u32,
    pub si_code: i32,
    pub fault_addr: u64,
    /// `KIND_OFF_CPU`: the thread's state as it left, its capture credit, and the first argument of the system call
    /// it blocked in (read by the caller, which needs it anyway).
    pub task_state: u32,
    pub capture_credit: u64,
    pub syscall_arg0: u64,
}

impl CaptureInfo {
    /// Nothing known: a base for the fields a caller sets.
    pub const NONE: Self = Self {
        kind: 0,
        flags: 0,
        kernel_stack_id: -1,
        signal: 0,
        si_code: 0,
        fault_addr: 0,
        task_state: 0,
        capture_credit: 0,
        syscall_arg0: 0,
    };
}

/// Fills `record` (reserved in a ring buffer) for the current thread of process `tgid`.
///
/// # Safety
/// `record` must point to a `SampleRecord` reserved in a ring buffer and not yet submitted: every field of it is
/// written through the pointer.
#[inline(always)]
pub unsafe fn fill(record: *mut SampleRecord, tgid: u32, tid: u32, info: CaptureInfo) {
    // The task's saved user registers: on kernel entry (tick, syscall, fault) they are saved at the top of its
    // kernel stack, so they are the user ones whatever the current context.
    // SAFETY: neither helper takes a pointer of ours; bpf_get_current_task_btf gives the current task (a pointer
    // the verifier tracks), and bpf_task_pt_regs of the current task its saved user pt_regs, valid while it runs
    // this program.
    let user_regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const pt_regs;
    // SAFETY: `&(*user_regs).rip` only computes an address (no read in Rust); bpf_probe_read_kernel copies the
    // field by value and fails cleanly (then 0) if it is unreadable.
    let regs = unsafe {
        UserRegs {
            ip: bpf_probe_read_kernel(&(*user_regs).rip).unwrap_or(0),
            sp: bpf_probe_read_kernel(&(*user_regs).rsp).unwrap_or(0),
            bp: bpf_probe_read_kernel(&(*user_regs).rbp).unwrap_or(0),
        }
    };

    // What the caller knows goes into the record first: left in registers until the end, each combination of it
    // (user or kernel mode, kernel stack or not, a fault address read or not) would be carried separately through
    // the loops below, and older verifiers (5.15, 6.1) refuse the crash probe as too complex.
    // SAFETY: `record` points to a reserved, unsubmitted SampleRecord (the caller's contract), so its header's
    // fields may be written; orig_rax is copied by bpf_probe_read_kernel from the pt_regs above, as for `regs`.
    unsafe {
        let header = &mut (*record).header;
        write_volatile(&raw mut header.kind, info.kind);
        write_volatile(&raw mut header.flags, info.flags);
        write_volatile(&raw mut header.kernel_stack_id, info.kernel_stack_id);
        write_volatile(&raw mut header.signal, info.signal);
        write_volatile(&raw mut header.si_code, info.si_code);
        write_volatile(&raw mut header.fault_addr, info.fault_addr);
        let syscall = bpf_probe_read_kernel(&(*user_regs).orig_rax).map_or(-1, |nr| nr as i64);
        write_volatile(&raw mut header.syscall, syscall);
        write_volatile(&raw mut header.syscall_arg0, info.syscall_arg0);
        write_volatile(&raw mut header.task_state, info.task_state);
        write_volatile(&raw mut header.capture_credit, info.capture_credit);
    }

    // Page-sized reads at constant offsets from the page holding sp (the verifier refuses variable-length
    // reads); the first unreadable page is the end of the stack mapping.
    let stack_base = regs.sp & !(STACK_CHUNK as u64 - 1);
    let mut stack_len = 0u32;
    // SAFETY: `record` is ours until submitted (the caller's contract). Each read lands in a constant,
    // in-bounds page of the record's stack buffer; the source address comes from the target's sp, is not
    // trusted, and bpf_probe_read_user_buf fails cleanly on an unmapped page. python::capture writes only into the
    // record's py_frames, and current_comm only into its comm.
    unsafe {
        let stack = &mut (*record).stack;
        for chunk in 0..STACK_CHUNKS {
            let offset = chunk * STACK_CHUNK;
            let dst = &mut stack[offset..offset + STACK_CHUNK];
            let src = (stack_base + offset as u64) as *const u8;
            if regs.sp == 0 || bpf_probe_read_user_buf(src, dst).is_err() {
                break;
            }
            stack_len += STACK_CHUNK as u32;
        }
        let off_cpu = info.kind == KIND_OFF_CPU;
        let (py_frame_count, py_flags) = crate::python::capture(tgid, tid, &mut (*record).py_frames, off_cpu);

        let header = &mut (*record).header;
        header.cpu = bpf_get_smp_processor_id();
        header.pid = tgid;
        header.tid = tid;
        header.time_ns = bpf_ktime_get_ns();
        header.regs = regs;
        header.stack_base = stack_base;
        header.stack_len = stack_len;
        crate::task::current_comm(&mut header.comm);
        header.py_frame_count = py_frame_count;
        header.py_flags = py_flags;
        // Read whether or not this thread holds the GIL (userspace uses it only if it does): a branch on `py_flags`
        // here would make the verifier track it precisely through the frame walk's loop and explore that loop
        // once per value, doubling the programs' verification.
        header.gil_waiters = gil_waiters(tgid);
    }
}

/// Threads of process `tgid` blocked on its GIL now (0 when unknown); a value that wrapped below zero while a
/// decrement raced userspace's reset reads as 0. Meaningful only for a thread holding the GIL.
#[inline(always)]
fn gil_waiters(tgid: u32) -> u32 {
    // SAFETY: a map value pointer stays valid for the program's run; the field is a plain integer, copied.
    match unsafe { PY_GIL.get(&tgid) } {
        Some(gil) if gil.waiters < 1 << 16 => gil.waiters,
        _ => 0,
    }
}
