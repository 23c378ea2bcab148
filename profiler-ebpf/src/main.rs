//! Kernel side of the profiler: one module per probe, shared maps in `maps`.
//!
//! Every program returns at once for processes that are not in `TARGETS`, so an idle system-wide attachment
//! costs a hash lookup per tick.
#![no_std]
#![no_main]
// Atomic adds to map values (crash_threads.rs): core's atomic types are not available for the BPF target.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod capture;
mod crash;
mod crash_threads;
mod lifecycle;
mod maps;
mod memory;
mod off_cpu;
mod python;
mod sampler;
mod task;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves the programs cannot panic; this is unreachable.
    loop {}
}

// bpf_probe_read_user and bpf_task_pt_regs are GPL-only helpers.
// SAFETY: the loader reads the license from the "license" section under the symbol LICENSE, which nothing else in
// the object defines; the static is a NUL-terminated string, as the kernel expects.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
