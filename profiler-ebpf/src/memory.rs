//! Memory growth: how many bytes a target's page fault mapped in, and which faults the memory profile captures.
//!
//! `sample_page_fault` runs at the end of every handled page fault (the `page-faults-min` and `page-faults-maj`
//! perf events, period 1, on every CPU) and hands the faults it captures to the CPU sampler for their stacks.
//!
//! A fault maps one page, or a 2 MiB huge page (THP: numpy asks for them for its large arrays, and `always` mode
//! gives them to any large anonymous mapping), so counting faults would weigh a huge page 512 times too little. The size is read from the process's own
//! resident-page counters instead: a huge page is added to them at once (before 6.2 they are atomics, and since
//! then percpu counters whose batch is far below 512 pages), while single pages reach them in small batches or not
//! at all (before 6.2 a thread caches them). So a rise of 512 pages or more since the process's last fault is
//! huge pages (rounded down to whole ones: the rest is single pages flushed along, each counted at its own fault),
//! and anything less is one page.
//!
//! Captures are sampled by bytes, as tcmalloc's and Go's heap profilers sample allocations: a fault of `size` bytes
//! is captured with probability size / period (always when it is larger), and then stands for size / that
//! probability, i.e. the period or its own size. Each fault is decided on its own, so the estimate of every stack's
//! bytes is unbiased whatever the mix of sizes, and a huge page (2 MiB, more than the default period) is always
//! captured.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_prandom_u32},
    macros::perf_event,
    programs::PerfEventContext,
};
use profiler_common::{FaultHandover, FLAG_FAULT_ADDR, KIND_CPU, KIND_PAGE_FAULT};

use crate::{
    maps::{CPU_SAMPLER, FAULT_HANDOVER, RESIDENT_PAGES, TARGETS},
    sampler::config,
    task,
};

#[perf_event]
pub fn sample_page_fault(ctx: PerfEventContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: the value is only tested for presence, never read; a map value stays valid for the program's run.
    if unsafe { TARGETS.get(&tgid) }.is_none() {
        return 0;
    }
    let Some(weight) = capture_weight(tgid, config().memory_period_bytes) else { return 0 };
    let Some(handover) = FAULT_HANDOVER.get_ptr_mut(0) else { return 0 };
    // SAFETY: `ctx.ctx` is the bpf_perf_event_data the kernel passed, valid for the run (its `addr` is the faulting
    // address); `handover` is this CPU's value of a per-CPU array, which the sampler reads right after.
    unsafe {
        *handover = FaultHandover {
            kind_offset: KIND_PAGE_FAULT - KIND_CPU,
            flags: FLAG_FAULT_ADDR,
            fault_addr: (*ctx.ctx).addr,
            capture_credit: weight,
        };
        // Does not return when the sampler is there; if it is not (not set yet), the handover is cleared for the
        // next tick.
        CPU_SAMPLER.tail_call(&ctx, 0);
        *handover = FaultHandover::default();
    }
    0
}

/// x86_64's base page.
const PAGE_BYTES: u64 = 4096;
/// A rise of this many resident pages in one fault is a huge page (a PMD: 2 MiB of 4 KiB pages).
const HUGE_PAGE_PAGES: u64 = 512;

/// The bytes the current (target) process's fault just now stands for when it is to be captured, `None` when it
/// is not (or the process's resident pages cannot be read on this kernel).
#[inline(always)]
fn capture_weight(tgid: u32, period_bytes: u64) -> Option<u64> {
    let pages = task::current_resident_pages()?;
    let bytes = match RESIDENT_PAGES.get_ptr_mut(&tgid) {
        Some(last) => {
            // SAFETY: a map value pointer stays valid for the program's run; the value is a plain integer, read
            // and written in place (another CPU may do the same: the race costs a few pages' attribution).
            let rise = pages - unsafe { *last };
            unsafe { *last = pages };
            if rise >= HUGE_PAGE_PAGES as i64 {
                (rise as u64 & !(HUGE_PAGE_PAGES - 1)) * PAGE_BYTES
            } else {
                PAGE_BYTES
            }
        }
        None => {
            let _ = RESIDENT_PAGES.insert(&tgid, &pages, 0);
            PAGE_BYTES
        }
    };
    if bytes >= period_bytes {
        return Some(bytes);
    }
    // Captured with probability bytes / period: a 32-bit random fraction of the period below `bytes`, without a
    // division (period_bytes < 2^31, so the product fits).
    // SAFETY: the helper takes no arguments.
    let random = u64::from(unsafe { bpf_get_prandom_u32() });
    ((random * period_bytes) >> 32 < bytes).then_some(period_bytes)
}
