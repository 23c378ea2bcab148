//! The other threads of a crashing process, each captured in its own context as the kernel stops it.
//!
//! A fatal signal ends a process by sending SIGKILL to each of its other threads; each one then takes that SIGKILL
//! in `get_signal` (the `signal_deliver` tracepoint) on its way out, still with its memory mapped and its user
//! registers saved where the sampler reads them. A thread blocked in the kernel (a lock, a sleep, I/O) is woken
//! for it and shows the system call it was waiting in; a thread running on another CPU is interrupted for it and
//! shows where it ran, microseconds after the fault. So the capture is the CPU sample's own, with no walk over
//! other tasks' kernel structures, which the verifier would price far higher.
use aya_ebpf::{
    bindings::BPF_RB_AVAIL_DATA,
    helpers::{bpf_get_current_pid_tgid, generated::bpf_ktime_get_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use core::intrinsics::{atomic_xadd, AtomicOrdering};
use profiler_common::{CrashRecord, CRASH_MAX_THREADS, KIND_CRASH_THREAD};

use crate::{
    capture::{fill, CaptureInfo},
    crash::copy_code_names,
    maps::{CRASHES, CRASHES_BYTES, CRASHING},
};

const SIGKILL: u64 = 9;
/// Threads are captured this long after the fault at most: a process that survives its fault (a handler that
/// recovers) and is killed much later is not the crash's picture any more.
const CAPTURE_WINDOW_NS: u64 = 5_000_000_000;
/// Room left in the crash ring for crashes of other processes: threads are not captured into the last of it.
const RING_RESERVE_BYTES: u64 = 4 * core::mem::size_of::<CrashRecord>() as u64;

/// raw_tracepoint/signal_deliver(int sig, struct kernel_siginfo *info, struct k_sigaction *ka).
#[raw_tracepoint(tracepoint = "signal_deliver")]
pub fn crash_thread(ctx: RawTracePointContext) -> u32 {
    if ctx.arg::<u64>(0) != SIGKILL {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    let Some(crashing) = CRASHING.get_ptr_mut(&tgid) else {
        return 0;
    };
    // SAFETY: a map value pointer stays valid for this program's run; the fields are plain integers, copied.
    let (time_ns, fault_tid, captured) = unsafe { ((*crashing).time_ns, (*crashing).tid, (*crashing).captured) };
    // SAFETY: bpf_ktime_get_ns takes no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if tid == fault_tid || now.wrapping_sub(time_ns) > CAPTURE_WINDOW_NS {
        return 0;
    }
    // The counters are added to atomically but read plainly (an add that returns the old value needs a newer BPF
    // instruction set than the one the programs are built for): threads stopping on several CPUs at once can
    // overshoot the limit by a few.
    let free = CRASHES_BYTES.saturating_sub(CRASHES.query(u64::from(BPF_RB_AVAIL_DATA)));
    let entry = if free < RING_RESERVE_BYTES || captured >= CRASH_MAX_THREADS {
        None
    } else {
        CRASHES.reserve::<CrashRecord>(0)
    };
    let Some(mut entry) = entry else {
        // SAFETY: as above; an atomic add to a u32 of the map value.
        unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(&raw mut (*crashing).missed, 1) };
        return 0;
    };
    // SAFETY: as above: an atomic add to a u32 of the map value, which stays valid for this program's run.
    unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(&raw mut (*crashing).captured, 1) };
    let info = CaptureInfo { kind: KIND_CRASH_THREAD, ..CaptureInfo::NONE };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points to a reserved ring-buffer entry of a CrashRecord, ours until submitted: what `fill`
    // and `copy_code_names` require.
    unsafe {
        fill(&raw mut (*record).sample, tgid, tid, info);
        copy_code_names(record, tgid);
    }
    entry.submit(0);
    0
}
