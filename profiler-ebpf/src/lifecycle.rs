//! Keeps the set of profiled processes current without polling: forks of targets are added before the child
//! first runs (so it is sampled from its first tick), exits are removed, and execs are reported so userspace can
//! match new processes by name and reload the memory map of a target that replaced its image.
use core::{
    intrinsics::{atomic_xadd, AtomicOrdering},
    ptr::write_volatile,
};

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use profiler_common::{
    LifecycleConfig, LifecycleEvent, EVENT_EXEC, EVENT_EXIT, EVENT_FORK, EVENT_MMAP_EXEC, NO_FIELD,
    TARGET_FOLLOW_CHILDREN,
};

use crate::maps::{
    CODE_MMAPS_IN_FLIGHT, EVENTS, LOST_EVENTS, PENDING_MMAPS, PY_PROCESSES, RESIDENT_PAGES, TARGETS,
    UNTAKEN_MAP_CHANGES,
};

/// Written by userspace before load from the tracepoint formats.
// SAFETY: no other symbol of the object is named LIFECYCLE_CONFIG; userspace sets it by this name before load.
#[unsafe(no_mangle)]
static LIFECYCLE_CONFIG: LifecycleConfig = LifecycleConfig {
    report_all_execs: 0,
    newtask_pid: 8,
    newtask_clone_flags: 32,
    exit_pid: 24,
    exit_group_dead: 32,
    signal_sig: 8,
    signal_pid: 36,
};

const CLONE_THREAD: u64 = 0x0001_0000;

#[inline(always)]
pub fn config() -> LifecycleConfig {
    // SAFETY: a read of a static of plain integers; volatile so that what userspace wrote before load is read.
    unsafe { core::ptr::read_volatile(&LIFECYCLE_CONFIG) }
}

/// task/task_newtask runs in the parent, before the child can be scheduled.
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let config = config();
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: a map value stays valid for the program's run; the flags word is copied at once.
    let Some(&flags) = (unsafe { TARGETS.get(&parent) }) else { return 0 };
    if flags & TARGET_FOLLOW_CHILDREN == 0 {
        return 0;
    }
    // SAFETY: read_at is a bpf_probe_read_kernel from the tracepoint's record, at offsets userspace read from the
    // tracepoint's format file: a by-value copy that fails cleanly.
    let (Ok(child), Ok(clone_flags)) = (unsafe { ctx.read_at::<i32>(config.newtask_pid as usize) }, unsafe {
        ctx.read_at::<u64>(config.newtask_clone_flags as usize)
    }) else {
        return 0;
    };
    if clone_flags & CLONE_THREAD != 0 || child <= 0 {
        return 0;
    }
    let child = child as u32;
    let _ = TARGETS.insert(&child, &flags, 0);
    // The child is a copy of the parent: same interpreter at the same addresses until it execs.
    // SAFETY: a map value stays valid for the program's run; it is only copied into another entry.
    if let Some(layout) = unsafe { PY_PROCESSES.get(&parent) } {
        let _ = PY_PROCESSES.insert(&child, layout, 0);
    }
    send(EVENT_FORK, child, parent, 0);
    0
}

/// sched/sched_process_exec runs in the new image: comm is already the new one.
#[tracepoint]
pub fn process_exec(_ctx: TracePointContext) -> u32 {
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: only tested for presence, never read.
    let is_target = unsafe { TARGETS.get(&pid) }.is_some();
    if is_target {
        // The old interpreter layout and resident pages describe the old image.
        let _ = PY_PROCESSES.remove(&pid);
        let _ = RESIDENT_PAGES.remove(&pid);
    }
    if is_target || config().report_all_execs != 0 {
        send(EVENT_EXEC, pid, 0, 0);
    }
    0
}

/// sched/sched_process_exit runs once per exiting thread; the process is gone when its last thread goes.
#[tracepoint]
pub fn process_exit(ctx: TracePointContext) -> u32 {
    let config = config();
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: only tested for presence, never read.
    if unsafe { TARGETS.get(&tgid) }.is_none() {
        return 0;
    }
    let group_dead = if config.exit_group_dead == NO_FIELD {
        pid_tgid as u32 == tgid
    } else {
        // SAFETY: a by-value bpf_probe_read_kernel from the tracepoint's record, at the format file's offset.
        matches!(unsafe { ctx.read_at::<u8>(config.exit_group_dead as usize) }, Ok(dead) if dead != 0)
    };
    if group_dead {
        let _ = TARGETS.remove(&tgid);
        let _ = PY_PROCESSES.remove(&tgid);
        let _ = RESIDENT_PAGES.remove(&tgid);
        let _ = UNTAKEN_MAP_CHANGES.remove(&tgid);
        let _ = CODE_MMAPS_IN_FLIGHT.remove(&tgid);
        // The last thread's exit_code is the process's: exit_group() and fatal signals give every thread the
        // group's code.
        send_exit(tgid, crate::task::current_exit_code());
    }
    0
}

/// syscalls/sys_enter_mmap: a target mapping a file executable is loading code (dlopen of a C extension); its
/// memory map must be re-read before a crash in that code leaves nothing to read. The event goes out when the
/// call returns (`mmap_done`), once the mapping exists.
#[tracepoint]
pub fn mmap_exec(ctx: TracePointContext) -> u32 {
    const PROT_EXEC: u64 = 4;
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: only tested for presence, never read.
    if unsafe { TARGETS.get(&((pid_tgid >> 32) as u32)) }.is_none() {
        return 0;
    }
    // The record layout of syscall-entry tracepoints is fixed: args start at 16, 8 bytes each.
    // SAFETY: by-value bpf_probe_read_kernel copies from the tracepoint's record; they fail cleanly.
    let (Ok(prot), Ok(fd)) = (unsafe { ctx.read_at::<u64>(32) }, unsafe { ctx.read_at::<i64>(48) }) else {
        return 0;
    };
    if prot & PROT_EXEC != 0 && fd >= 0 {
        // SAFETY: bpf_ktime_get_ns takes no arguments.
        if PENDING_MMAPS.insert(&(pid_tgid as u32), &unsafe { bpf_ktime_get_ns() }, 0).is_ok() {
            count_code_mmap_in_flight((pid_tgid >> 32) as u32, 1);
        }
    }
    0
}

/// Adds `delta` (1, or u32::MAX to take one away) to the process's count of code mmaps in flight.
#[inline(always)]
fn count_code_mmap_in_flight(tgid: u32, delta: u32) {
    const BPF_NOEXIST: u64 = 1;
    for _ in 0..2 {
        if let Some(count) = CODE_MMAPS_IN_FLIGHT.get_ptr_mut(&tgid) {
            // SAFETY: a map value stays valid for the program's run; the add is atomic against other CPUs'.
            unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(count, delta) };
            return;
        }
        if delta == 1 && CODE_MMAPS_IN_FLIGHT.insert(&tgid, &1, BPF_NOEXIST).is_ok() {
            return;
        }
    }
}

/// syscalls/sys_exit_mmap: the executable mapping of a target now exists. Only the first of the mappings userspace
/// has not taken yet sends an event (see `UNTAKEN_MAP_CHANGES`).
#[tracepoint]
pub fn mmap_done(_ctx: TracePointContext) -> u32 {
    const BPF_NOEXIST: u64 = 1;
    const BPF_EXIST: u64 = 2;
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // SAFETY: a map value stays valid for the program's run; the u64 is copied at once.
    let Some(&entered_ns) = (unsafe { PENDING_MMAPS.get(&tid) }) else {
        return 0;
    };
    let _ = PENDING_MMAPS.remove(&tid);
    let tgid = (pid_tgid >> 32) as u32;
    count_code_mmap_in_flight(tgid, u32::MAX);
    // SAFETY: bpf_ktime_get_ns takes no arguments.
    let done_ns = unsafe { bpf_ktime_get_ns() };
    // Updates, never writes through a pointer: userspace's lookup-and-delete takes the entry either before an
    // update (which then fails and sends an event) or after it (and sees its time).
    if UNTAKEN_MAP_CHANGES.insert(&tgid, &done_ns, BPF_EXIST).is_ok() {
        return 0;
    }
    if UNTAKEN_MAP_CHANGES.insert(&tgid, &done_ns, BPF_NOEXIST).is_ok() {
        // Stamped with the time the call began: the new mapping shows in /proc/PID/maps before this tracepoint
        // runs, and userspace must know that maps read after that instant may not fit samples taken before it.
        if !output(EVENT_MMAP_EXEC, tgid, 0, 0, entered_ns, NO_FIELD) {
            // No event: the next mapping must try again.
            let _ = UNTAKEN_MAP_CHANGES.remove(&tgid);
        }
    } else {
        // Another thread of the process created the entry between the two updates, and sent the event.
        let _ = UNTAKEN_MAP_CHANGES.insert(&tgid, &done_ns, BPF_EXIST);
    }
    0
}

#[inline(always)]
pub fn send(kind: u32, pid: u32, parent: u32, signal: u32) {
    // SAFETY: bpf_ktime_get_ns takes no arguments.
    let _ = output(kind, pid, parent, signal, unsafe { bpf_ktime_get_ns() }, NO_FIELD);
}

#[inline(always)]
fn send_exit(pid: u32, exit_code: u32) {
    // SAFETY: bpf_ktime_get_ns takes no arguments.
    let _ = output(EVENT_EXIT, pid, 0, 0, unsafe { bpf_ktime_get_ns() }, exit_code);
}

/// Sends an event, with the current thread's name, written field by field into the ring buffer: a struct built on
/// the stack would be zeroed or copied with calls to compiler-builtins' `memset`/`memcpy`, BPF-to-BPF calls that
/// older verifiers handle worse (see python.rs). False when the ring buffer had no room (counted in `LOST_EVENTS`).
#[inline(always)]
fn output(kind: u32, pid: u32, parent: u32, signal: u32, time_ns: u64, exit_code: u32) -> bool {
    let Some(mut entry) = EVENTS.reserve::<LifecycleEvent>(0) else {
        if let Some(counter) = LOST_EVENTS.get_ptr_mut(0) {
            // SAFETY: this CPU's value of a per-CPU array, valid for the program's run and touched by no other CPU.
            unsafe { *counter += 1 };
        }
        return false;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: the entry was reserved in EVENTS for a LifecycleEvent and is ours until submitted below; each write
    // is to one of its fields.
    unsafe {
        write_volatile(&raw mut (*event).kind, kind);
        write_volatile(&raw mut (*event).pid, pid);
        write_volatile(&raw mut (*event).parent, parent);
        write_volatile(&raw mut (*event).signal, signal);
        write_volatile(&raw mut (*event).time_ns, time_ns);
        write_volatile(&raw mut (*event).exit_code, exit_code);
        write_volatile(&raw mut (*event)._pad, 0);
        crate::task::current_comm(&mut (*event).comm);
    }
    entry.submit(0);
    true
}
