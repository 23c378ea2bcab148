//! The off-CPU sampler: `sched_switch`, where a target thread leaves its CPU and where it comes back.
//!
//! As it leaves, the thread is still the current task with its user registers saved at kernel entry, so its stack
//! is captured exactly as the CPU sampler captures one; how long it stays off is known only when it is switched in
//! again (an `OffCpuEnd` record then). Capturing every switch would cost a full capture per context switch, and a
//! Python service switches thousands of times a second; so each thread has a capture credit that grows with time
//! (by the time between two of its leavings, up to `OFF_CPU_CREDIT_GAPS` gaps of `off_cpu_gap_ns`) and a capture
//! spends a gap of it; a leaving is captured with probability credit / gap, at most 1. A thread that switches less
//! often than once per gap (a sleeper, a blocked reader, most of a web service's threads) keeps its credit full and
//! has every period captured; a busy one costs about one capture per gap, what CPU sampling costs. The record
//! carries the credit, so userspace knows the probability and weighs each captured period by its inverse: that
//! makes the estimate unbiased (the probability is decided before the period it selects, from the past only).
//! Every period, captured or not, is added to the thread's total here, and a GIL wait to its GIL-wait total too;
//! userspace scales each thread's captured GIL waits to the latter and its other captured periods to the rest.
//!
//! A futex wait on the address range of the process's GIL (`PY_GIL`, located by userspace) counts the thread as a
//! GIL waiter until it runs again; the CPU sampler reports that count with the samples of the thread that holds it.
use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated::{bpf_get_current_task_btf, bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_task_pt_regs},
    },
    macros::raw_tracepoint,
    programs::{tracing::StackIdContext as _, RawTracePointContext},
};
use core::intrinsics::{atomic_xadd, AtomicOrdering};
use profiler_common::{
    OffCpuEnd, OffCpuThread, SampleRecord, FLAG_GIL_WAIT, FLAG_KERNEL_STACK, FLAG_PREEMPTED, KIND_OFF_CPU,
    KIND_OFF_CPU_END, OFF_CPU_CAPTURED, OFF_CPU_CREDIT_GAPS, OFF_CPU_GIL_WAIT,
};

use crate::{
    capture::{fill, CaptureInfo},
    maps::{KERNEL_STACKS, OFF_CPU_THREADS, PY_GIL, SAMPLES, TARGETS},
    sampler::{config, count_lost, samples_wakeup},
    task,
};

/// `TASK_DEAD`: the thread's last switch (it exits).
const TASK_DEAD: u32 = 0x80;
/// x86_64 `futex(2)`.
const SYS_FUTEX: u64 = 202;

/// raw_tracepoint/sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next, ...), for `next`:
/// the end of its period. Its own program, apart from the capture's, so that the verifier explores the capture
/// once and not once per way this half can end (older verifiers need minutes for each under emulation).
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn off_cpu_in(ctx: RawTracePointContext) -> u32 {
    if config().off_cpu_gap_ns != 0 {
        // SAFETY: bpf_ktime_get_ns takes no arguments.
        switched_in(ctx.arg::<u64>(2), unsafe { bpf_ktime_get_ns() });
    }
    0
}

/// raw_tracepoint/sched_switch, for `prev`, which runs it (the current task): the start of its period.
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn off_cpu_out(ctx: RawTracePointContext) -> u32 {
    let gap = config().off_cpu_gap_ns;
    if gap != 0 {
        // SAFETY: bpf_ktime_get_ns takes no arguments.
        switched_out(&ctx, unsafe { bpf_ktime_get_ns() }, gap);
    }
    0
}

/// Ends the off-CPU period of `next` if it is a target thread that has one.
#[inline(always)]
fn switched_in(next: u64, now: u64) {
    let Some(tid) = task::pid_of(next) else { return };
    let Some(thread) = OFF_CPU_THREADS.get_ptr_mut(&tid) else { return };
    // SAFETY: a map value pointer stays valid for this program's run. A thread is switched in on one CPU and out
    // only by itself, so nothing else writes this entry meanwhile.
    let (since, flags, tgid, total, gil_wait) = unsafe {
        let since = (*thread).since_ns;
        if since == 0 {
            return;
        }
        let off = now.saturating_sub(since);
        let total = (*thread).total_ns.wrapping_add(off);
        let flags = (*thread).flags;
        let mut gil_wait = (*thread).gil_wait_ns;
        if flags & OFF_CPU_GIL_WAIT != 0 {
            gil_wait = gil_wait.wrapping_add(off);
        }
        (*thread).since_ns = 0;
        (*thread).total_ns = total;
        (*thread).gil_wait_ns = gil_wait;
        (*thread).flags = 0;
        (since, flags, (*thread).tgid, total, gil_wait)
    };
    if flags & OFF_CPU_GIL_WAIT != 0 {
        if let Some(gil) = PY_GIL.get_ptr_mut(&tgid) {
            // SAFETY: an atomic add (of -1) to a u32 of a map value, which stays valid for this program's run.
            unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(&raw mut (*gil).waiters, u32::MAX) };
        }
    }
    if flags & OFF_CPU_CAPTURED == 0 {
        return;
    }
    let Some(mut entry) = SAMPLES.reserve::<OffCpuEnd>(0) else {
        count_lost();
        return;
    };
    let end = OffCpuEnd {
        kind: KIND_OFF_CPU_END,
        pid: tgid,
        tid,
        _pad: 0,
        time_ns: now,
        off_cpu_ns: now.saturating_sub(since),
        total_off_cpu_ns: total,
        total_gil_wait_ns: gil_wait,
    };
    entry.write(end);
    entry.submit(samples_wakeup());
}

/// Starts an off-CPU period for the current thread if it belongs to a target, capturing its stack when its
/// thread's gap has passed.
#[inline(always)]
fn switched_out(ctx: &RawTracePointContext, now: u64, gap: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // SAFETY: the value is only tested for presence.
    if unsafe { TARGETS.get(&tgid) }.is_none() {
        return;
    }
    let state = task::current_state();
    if state & TASK_DEAD != 0 {
        let _ = OFF_CPU_THREADS.remove(&tid);
        return;
    }
    // Preempted (in the kernel, or on its way back to user mode: that `schedule()` does not say so) is still
    // runnable: its state is TASK_RUNNING (0).
    let preempted = (ctx.arg::<u64>(0) & 0xff != 0) | (state == 0);
    // SAFETY: as in capture.rs: the current task's saved user pt_regs; fields copied by value, 0 if unreadable.
    let (syscall, arg0) = unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const pt_regs;
        (bpf_probe_read_kernel(&(*regs).orig_rax).unwrap_or(u64::MAX), bpf_probe_read_kernel(&(*regs).rdi).unwrap_or(0))
    };
    let mut gil_wait = false;
    if !preempted && syscall == SYS_FUTEX {
        if let Some(gil) = PY_GIL.get_ptr_mut(&tgid) {
            // SAFETY: a map value pointer, valid for this program's run; the range is plain integers, copied, and
            // the count is added to atomically.
            unsafe {
                if (*gil).start <= arg0 && arg0 < (*gil).end {
                    gil_wait = true;
                    atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(&raw mut (*gil).waiters, 1);
                }
            }
        }
    }

    let thread = match OFF_CPU_THREADS.get_ptr_mut(&tid) {
        Some(thread) => thread,
        None => {
            let fresh =
                OffCpuThread { since_ns: 0, total_ns: 0, gil_wait_ns: 0, last_out_ns: 0, credit_ns: 0, tgid, flags: 0 };
            if OFF_CPU_THREADS.insert(&tid, &fresh, 0).is_err() {
                return;
            }
            match OFF_CPU_THREADS.get_ptr_mut(&tid) {
                Some(thread) => thread,
                None => return,
            }
        }
    };
    // SAFETY: a map value pointer, valid for this program's run; only this thread writes it while it runs.
    let (capture, credit) = unsafe {
        let last = (*thread).last_out_ns;
        let most = gap.wrapping_mul(OFF_CPU_CREDIT_GAPS);
        let credit =
            if last == 0 { most } else { (*thread).credit_ns.saturating_add(now.saturating_sub(last)).min(most) };
        // p = credit / gap as a 32-bit fraction, compared with a 32-bit random number without a division (whose
        // by-zero panic path the verifier would refuse): r < p·2^32 ⇔ r·gap < credit·2^32. gap is at most a
        // second, so r·gap fits; credit ≥ gap is certain, so credit·2^32 is only computed below 2^30.
        // SAFETY: bpf_get_prandom_u32 takes no arguments.
        let threshold = if credit >= gap { u64::MAX } else { credit << 32 };
        let capture = u64::from(bpf_get_prandom_u32()).wrapping_mul(gap) < threshold;
        (*thread).credit_ns = if capture { credit.saturating_sub(gap) } else { credit };
        (*thread).last_out_ns = now;
        (*thread).since_ns = now;
        (*thread).tgid = tgid;
        (*thread).flags = if gil_wait { OFF_CPU_GIL_WAIT } else { 0 };
        (capture, credit)
    };
    if !capture {
        return;
    }
    let Some(mut entry) = SAMPLES.reserve::<SampleRecord>(0) else {
        count_lost();
        return;
    };
    // Marked before the capture, so that no value of this prologue is live across its loops (each would be one
    // more state for the verifier to carry through them).
    // SAFETY: as above.
    unsafe { (*thread).flags |= OFF_CPU_CAPTURED };
    let mut flags = if preempted { FLAG_PREEMPTED } else { 0 };
    if gil_wait {
        flags |= FLAG_GIL_WAIT;
    }
    let mut kernel_stack_id = -1i64;
    if config().kernel_stacks != 0 {
        if let Ok(id) = ctx.get_stackid(&KERNEL_STACKS, 0) {
            kernel_stack_id = id;
            flags |= FLAG_KERNEL_STACK;
        }
    }
    let info = CaptureInfo {
        kind: KIND_OFF_CPU,
        flags,
        kernel_stack_id,
        task_state: state,
        capture_credit: credit,
        syscall_arg0: arg0,
        ..CaptureInfo::NONE
    };
    // SAFETY: the entry was reserved in SAMPLES for a SampleRecord and is ours until submitted below.
    unsafe { fill(entry.as_mut_ptr(), tgid, tid, info) };
    entry.submit(samples_wakeup());
}
