//! The CPU sampler: a perf_event program run on every CPU at the sampling rate (`cpu-clock`); with the memory
//! profile, also the capture of the page faults memory.rs picks, which it hands over by a tail call.
//!
//! For a target thread it sends the user registers and a copy of the top of the user stack, so userspace can
//! unwind with DWARF CFI (the target needs no frame pointers). A handed-over fault differs from a tick only in its
//! kind, flags, address and weight, which come from `FAULT_HANDOVER` (zeros for a tick) and are added in without a
//! branch: the verifier then checks the capture, most of its work, once for both (a branch on the kind made the
//! verifiers of 5.15 and 6.1 explore it once per way the fault path ended).
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::perf_event,
    programs::{tracing::StackIdContext as _, PerfEventContext},
};
use profiler_common::{FaultHandover, SampleRecord, SamplerConfig, FLAG_KERNEL_STACK, FLAG_USER_MODE, KIND_CPU};

use crate::{
    capture::{fill, CaptureInfo},
    maps::{FAULT_HANDOVER, KERNEL_STACKS, LOST_SAMPLES, SAMPLES, TARGETS},
};

/// Written by userspace before load (aya `EbpfLoader::override_global`).
// SAFETY: no other symbol of the object is named SAMPLER_CONFIG; userspace sets it by this name before load.
#[unsafe(no_mangle)]
static SAMPLER_CONFIG: SamplerConfig =
    SamplerConfig { kernel_stacks: 0, _reserved: 0, memory_period_bytes: 0, off_cpu_gap_ns: 0 };

/// What userspace wrote into `SAMPLER_CONFIG` before load.
#[inline(always)]
pub fn config() -> SamplerConfig {
    // SAFETY: a read of a static of plain integers; volatile so the compiler reads what userspace wrote into
    // .rodata before load instead of folding the initializer.
    unsafe { core::ptr::read_volatile(&SAMPLER_CONFIG) }
}

#[perf_event]
pub fn sample_cpu(ctx: PerfEventContext) -> u32 {
    try_sample_cpu(&ctx);
    0
}

#[inline(always)]
fn try_sample_cpu(ctx: &PerfEventContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: the value is only tested for presence, never read; a map value stays valid for the program's run.
    if unsafe { TARGETS.get(&tgid) }.is_none() {
        return;
    }
    // What a page fault handed over with this run (all zeros for a tick), taken so that the next tick sees zeros.
    let Some(handover) = FAULT_HANDOVER.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's value of a per-CPU array, valid for the program's run; no other program runs on this CPU
    // meanwhile (perf programs do not nest).
    let handover = unsafe { core::ptr::replace(handover, FaultHandover::default()) };
    let Some(mut entry) = SAMPLES.reserve::<SampleRecord>(0) else {
        count_lost();
        return;
    };
    // The interrupted context says whether the tick hit user mode.
    // SAFETY: `ctx.ctx` is the bpf_perf_event_data the kernel passed to this program, valid for its run; the
    // verifier checks the read against the context's type.
    let interrupted_cs = unsafe { (*ctx.ctx).regs.cs };
    let mut flags = if interrupted_cs & 3 == 3 { FLAG_USER_MODE } else { 0 };
    let mut kernel_stack_id = -1i64;
    if config().kernel_stacks != 0 {
        if let Ok(id) = ctx.get_stackid(&KERNEL_STACKS, 0) {
            kernel_stack_id = id;
            flags |= FLAG_KERNEL_STACK;
        }
    }
    let info = CaptureInfo {
        kind: KIND_CPU + handover.kind_offset,
        flags: flags | handover.flags,
        kernel_stack_id,
        fault_addr: handover.fault_addr,
        capture_credit: handover.capture_credit,
        ..CaptureInfo::NONE
    };
    // SAFETY: the entry was reserved in SAMPLES for a SampleRecord and is ours until submitted below.
    unsafe { fill(entry.as_mut_ptr(), tgid, pid_tgid as u32, info) };
    // Waking the reader for every sample would preempt the sampled thread on its own CPU, once per tick, and
    // bias the very thing being measured; userspace drains on its own timer, and is woken early only when the
    // buffer fills up.
    // Early wake-up when a quarter of the ring is used: userspace sizes the ring for about half a second of samples
    // of every CPU, so that is an eighth of a second of a fully busy machine.
    entry.submit(samples_wakeup());
}

pub const BPF_RB_NO_WAKEUP: u64 = 1;
pub const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_RING_SIZE: u64 = 1;

/// The submit flag for a record in `SAMPLES`: wake the reader only when a quarter of the ring is used.
#[inline(always)]
pub fn samples_wakeup() -> u64 {
    let full = SAMPLES.query(BPF_RB_AVAIL_DATA) > SAMPLES.query(BPF_RB_RING_SIZE) / 4;
    if full {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

#[inline(always)]
pub fn count_lost() {
    if let Some(counter) = LOST_SAMPLES.get_ptr_mut(0) {
        // SAFETY: a pointer to this CPU's value of a per-CPU array, valid for the program's run and touched by no
        // other CPU; the program is not preempted on its CPU.
        unsafe { *counter += 1 };
    }
}
