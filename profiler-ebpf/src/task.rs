//! Reads of the current task's `task_struct` at offsets userspace found in this kernel's BTF.
//!
//! aya-ebpf has no CO-RE field relocations for Rust programs, so the fields we need that no tracepoint carries (a
//! thread's TLS base, an exiting process's exit code, its address space's resident-page counters) are read at
//! offsets written before load.
use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel, generated};
use profiler_common::{TaskOffsets, NO_FIELD};

/// Written by userspace before load.
// SAFETY: no other symbol of the object is named TASK_OFFSETS; userspace sets it by this name before load.
#[unsafe(no_mangle)]
static TASK_OFFSETS: TaskOffsets = TaskOffsets::UNKNOWN;

#[inline(always)]
fn offsets() -> TaskOffsets {
    // SAFETY: a read of a static of plain integers; volatile so that what userspace wrote before load is read.
    unsafe { core::ptr::read_volatile(&TASK_OFFSETS) }
}

/// The current thread's TLS base (what glibc's `pthread_self()` returns), if this kernel's layout is known.
#[inline(always)]
pub fn current_fsbase() -> Option<u64> {
    let offset = offsets().fsbase;
    if offset == NO_FIELD {
        return None;
    }
    // SAFETY: bpf_get_current_task takes no arguments; bpf_probe_read_kernel copies 8 bytes by value from the
    // task at an offset found in this kernel's BTF, and fails cleanly if the address is unreadable.
    let task = unsafe { bpf_get_current_task() };
    unsafe { bpf_probe_read_kernel((task + u64::from(offset)) as *const u64) }.ok()
}

/// The kernel thread id of `task` (a `task_struct` pointer the kernel passed), if this kernel's layout is known.
#[inline(always)]
pub fn pid_of(task: u64) -> Option<u32> {
    let offset = offsets().pid;
    if offset == NO_FIELD || task == 0 {
        return None;
    }
    // SAFETY: a by-value copy of 4 bytes at a BTF offset inside a task the kernel handed us; fails cleanly.
    unsafe { bpf_probe_read_kernel((task + u64::from(offset)) as *const u32) }.ok()
}

/// The current thread's scheduler state (`__state`), or 0 (running) when unknown.
#[inline(always)]
pub fn current_state() -> u32 {
    let offset = offsets().state;
    if offset == NO_FIELD {
        return 0;
    }
    // SAFETY: as in `current_fsbase`: a by-value copy at a BTF offset that fails cleanly.
    let task = unsafe { bpf_get_current_task() };
    unsafe { bpf_probe_read_kernel((task + u64::from(offset)) as *const u32) }.unwrap_or(0)
}

/// The current process's resident pages (file + anonymous + shared memory, as its `mm_struct`'s counters have
/// them), if this kernel's layout is known.
#[inline(always)]
pub fn current_resident_pages() -> Option<i64> {
    let offsets = offsets();
    if offsets.mm == NO_FIELD {
        return None;
    }
    // SAFETY: as in `current_fsbase`: by-value copies at BTF offsets (the task's mm pointer, then counters inside
    // the mm it points to), each failing cleanly if the address is unreadable.
    let task = unsafe { bpf_get_current_task() };
    let mm = unsafe { bpf_probe_read_kernel((task + u64::from(offsets.mm)) as *const u64) }.ok()?;
    if mm == 0 {
        return None;
    }
    let mut pages = 0i64;
    for offset in offsets.rss_pages {
        if offset != NO_FIELD {
            pages += unsafe { bpf_probe_read_kernel((mm + u64::from(offset)) as *const i64) }.unwrap_or(0);
        }
    }
    Some(pages)
}

/// The current (exiting) thread's `exit_code`, or `NO_FIELD` when unknown.
#[inline(always)]
pub fn current_exit_code() -> u32 {
    let offset = offsets().exit_code;
    if offset == NO_FIELD {
        return NO_FIELD;
    }
    // SAFETY: as in `current_fsbase`: a by-value copy at a BTF offset that fails cleanly.
    let task = unsafe { bpf_get_current_task() };
    match unsafe { bpf_probe_read_kernel((task + u64::from(offset)) as *const i32) } {
        Ok(code) => code as u32,
        Err(_) => NO_FIELD,
    }
}

/// The current thread's name (`comm`), written by the helper straight into `dst`, which it zero-fills if it fails.
/// aya's `bpf_get_current_comm()` fills a zeroed local array first, and that zeroing is a call to
/// compiler-builtins' `memset`: a BPF-to-BPF call, which costs verifiers before 6.4 their precision tracking (see
/// python.rs).
#[inline(always)]
pub fn current_comm(dst: &mut [u8; 16]) {
    // SAFETY: the helper writes at most 16 bytes into `dst`, which is 16 bytes long and borrowed mutably.
    unsafe { generated::bpf_get_current_comm(dst.as_mut_ptr().cast(), 16) };
}
