//! The other threads of a crashing process, each captured in its own context as the kernel stops it.
//!
//! A fatal signal ends a process by sending SIGKILL to each of its other threads; each one then takes that SIGKILL
//! in `get_signal` (the `signal_deliver` tracepoint) on its way out, still with its memory mapped and its user
//! registers saved where the sampler reads them. A thread blocked in the kernel (a lock, a sleep, I/O) is woken
//! for it and shows the system call it was waiting in; a thread running on another CPU is interrupted for it and
//! shows where it ran, microseconds after the fault. So the capture is the CPU sample's own, with no walk over
//! other tasks' kernel structures, which the verifier would price far higher.
//!
//! The capture itself is the crash probe's (`crash::signal_generate`, attached to `signal_deliver` as well): one
//! program verified once, since the verifier's cost of a full capture is most of the agent's start-up on old
//! kernels. This module decides whether a delivery is one to capture and keeps the counts.
use aya_ebpf::{bindings::BPF_RB_AVAIL_DATA, helpers::generated::bpf_ktime_get_ns};
use core::intrinsics::{atomic_xadd, AtomicOrdering};
use profiler_common::{CrashRecord, CRASH_MAX_THREADS};

use crate::maps::{CRASHES, CRASHES_BYTES, CRASHING};

/// Threads are captured this long after the fault at most: a process that survives its fault (a handler that
/// recovers) and is killed much later is not the crash's picture any more.
const CAPTURE_WINDOW_NS: u64 = 5_000_000_000;
/// Room left in the crash ring for crashes of other processes: threads are not captured into the last of it.
const RING_RESERVE_BYTES: u64 = 4 * core::mem::size_of::<CrashRecord>() as u64;

/// Whether thread `tid` of process `tgid`, taking a SIGKILL, is another thread of a process that faulted in the
/// last seconds and there is room to capture it; counts it as captured, or as missed when there is no room.
#[inline(always)]
pub fn claim(tgid: u32, tid: u32) -> bool {
    let Some(crashing) = CRASHING.get_ptr_mut(&tgid) else {
        return false;
    };
    // SAFETY: a map value pointer stays valid for the whole program run.
    let (time_ns, fault_tid, captured) = unsafe { ((*crashing).time_ns, (*crashing).tid, (*crashing).captured) };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if tid == fault_tid || now.wrapping_sub(time_ns) > CAPTURE_WINDOW_NS {
        return false;
    }
    // The counters are added to atomically but read plainly (an add that returns the old value needs a newer BPF
    // instruction set than the one the programs are built for): threads stopping on several CPUs at once can
    // overshoot the limit by a few.
    let free = CRASHES_BYTES.saturating_sub(CRASHES.query(u64::from(BPF_RB_AVAIL_DATA)));
    let room = free >= RING_RESERVE_BYTES && captured < CRASH_MAX_THREADS;
    // SAFETY: atomic adds to u32 fields of the map value, valid as above.
    unsafe {
        if room {
            atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(&raw mut (*crashing).captured, 1);
        } else {
            atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(&raw mut (*crashing).missed, 1);
        }
    }
    room
}

/// A claimed thread whose record could not be reserved after all: counted as missed, not captured.
#[inline(always)]
pub fn unclaim(tgid: u32) {
    let Some(crashing) = CRASHING.get_ptr_mut(&tgid) else {
        return;
    };
    // SAFETY: atomic adds to u32 fields of a map value, which stays valid for the program run.
    unsafe {
        atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(&raw mut (*crashing).captured, u32::MAX);
        atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(&raw mut (*crashing).missed, 1);
    }
}
