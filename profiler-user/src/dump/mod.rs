//! `profiler dump`: every thread of a running process, now, without stopping it: the raw material (this file)
//! and the report made of it (`report`).
//!
//! A hung service is mostly threads blocked in the kernel (locks, sleeps, I/O). Such a thread's user registers
//! sit where it entered the kernel, and /proc shows its stack pointer and program counter
//! (`process::task::syscall`); its stack and Python frames cannot change until it wakes. So each is read from
//! outside with process_vm_readv — no ptrace, no signal, no pause — and the `syscall` file is read again after,
//! to catch a thread that woke meanwhile (read again once, then marked). Threads on a CPU have no saved
//! registers to read: the command samples them for a moment instead.
// Values here come from a target (its files, its memory, its maps) or the kernel: no implicit arithmetic.
#![deny(clippy::arithmetic_side_effects)]
pub(crate) mod report;

use std::collections::HashMap;

use profiler_common::{PyLayout, UserRegs, PY_GIL_HELD, PY_THREAD_FOUND};

use crate::{
    process::{
        memory,
        task::{self, SyscallState},
    },
    python::threads::{self as py_threads, PyStack, PyThread},
    sample::CpuSample,
};

/// How much of a blocked thread's stack is copied: more than a sample's 32 KiB, since a dump is taken once and a
/// hung thread is often deep (a web framework, a pool, a lock). The copy stops at the end of the stack mapping.
const STACK_COPY_MAX: usize = 512 * 1024;
const PAGE: u64 = 4096;
const PAGE_MASK: u64 = !4095;

/// One thread as read from /proc and its memory.
#[derive(Debug)]
pub(crate) struct ThreadSnapshot {
    pub tid: u32,
    pub name: String,
    /// The scheduler state letter (`S`, `D`, `R`, …).
    pub scheduler_state: Option<char>,
    /// The kernel function it sleeps in, when the kernel shows it.
    pub wait_channel: Option<String>,
    pub place: Place,
    /// Blocked threads: the copy of the top of the user stack, from `stack_base`.
    pub stack_base: u64,
    pub stack: Vec<u8>,
    /// The thread's Python state, when it has one (blocked threads: with its frames).
    pub python: Option<PythonThread>,
}

/// Where a thread was when it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// Blocked in the kernel. `moved`: its `syscall` file changed while it was read, twice: what was read may
    /// mix two moments.
    Blocked { syscall: Option<u64>, arg0: u64, sp: u64, pc: u64, moved: bool },
    /// On a CPU (or about to be): to be sampled.
    Running,
    /// Exited while the dump was taken.
    Gone,
}

impl ThreadSnapshot {
    /// A blocked thread as a sample of process `pid`, to be unwound and named as a sample is (`None` for a thread
    /// that was not blocked: it has no registers to start from).
    pub(crate) fn as_sample(&self, pid: u32) -> Option<CpuSample<'_>> {
        let Place::Blocked { sp, pc, .. } = self.place else { return None };
        let python = self.python.as_ref();
        let py_flags = python.map_or(0, |p| PY_THREAD_FOUND | if p.holds_gil { PY_GIL_HELD } else { 0 });
        Some(CpuSample::snapshot(
            pid,
            self.tid,
            self.name.clone(),
            // The frame pointer is not in /proc: CFI unwinding does without it for most frames.
            UserRegs { ip: pc, sp, bp: 0 },
            self.stack_base,
            &self.stack,
            python.map(|p| p.stack.frames.clone()).unwrap_or_default(),
            py_flags,
        ))
    }
}

#[derive(Clone, Debug)]
pub(crate) struct PythonThread {
    pub holds_gil: bool,
    /// Empty for running threads (their frames come from samples).
    pub stack: PyStack,
}

/// Every thread of a process, and the Python thread states no kernel thread was matched to.
#[derive(Debug, Default)]
pub(crate) struct ProcessSnapshot {
    pub threads: Vec<ThreadSnapshot>,
    /// Python thread states no kernel thread was matched to: a thread state can outlive its thread for a moment,
    /// and on 3.8–3.10, which know threads only by pthread id, one that `threading` does not know (a thread
    /// started from C) or all of them when `threading` cannot be read.
    pub unmatched_python: Vec<PyThread>,
    /// The TID of the thread holding the GIL, when known and held.
    pub gil_holder: Option<u32>,
    /// Whether the GIL holder is known for this interpreter at all.
    pub gil_known: bool,
    /// Why the Python threads could not be read, if they could not.
    pub python_error: Option<String>,
}

/// Reads every thread of `pid`. `layout`: the process's CPython layout, when it runs a Python we support.
/// `tids_by_ident`: kernel TIDs by pthread id, for versions whose thread states hold only that (3.8–3.10; see
/// `python::thread_names::tids_by_ident`).
pub(crate) fn snapshot(pid: u32, layout: Option<&PyLayout>, tids_by_ident: &HashMap<u64, u32>) -> ProcessSnapshot {
    let mut result = ProcessSnapshot::default();
    let python_threads = match layout.map(|layout| py_threads::threads(pid, layout)) {
        Some(Ok(threads)) => threads,
        Some(Err(err)) => {
            result.python_error = Some(format!("{err:#}"));
            Vec::new()
        }
        None => Vec::new(),
    };
    let python_threads: Vec<PyThread> = python_threads
        .into_iter()
        .map(|thread| match thread.tid {
            Some(_) => thread,
            None => PyThread { tid: tids_by_ident.get(&thread.thread_id).copied(), ..thread },
        })
        .collect();
    result.gil_known = layout.is_some_and(|l| l.gil_mode != profiler_common::GIL_UNKNOWN);
    result.gil_holder = python_threads.iter().find(|t| t.holds_gil).and_then(|t| t.tid);
    for tid in task::thread_ids(pid) {
        let python = python_threads.iter().find(|t| t.tid == Some(tid));
        result.threads.push(read_thread(pid, tid, layout, python));
    }
    result.unmatched_python = python_threads
        .into_iter()
        .filter(|thread| !thread.tid.is_some_and(|tid| result.threads.iter().any(|t| t.tid == tid)))
        .collect();
    result
}

/// Reads thread `tid` of `pid`: where it is and, when it is blocked, its stack copy and Python frames (`python`:
/// its thread state, when known).
pub(crate) fn read_thread(pid: u32, tid: u32, layout: Option<&PyLayout>, python: Option<&PyThread>) -> ThreadSnapshot {
    let mut thread = ThreadSnapshot {
        tid,
        name: task::thread_name(pid, tid).unwrap_or_else(|| "?".into()),
        scheduler_state: None,
        wait_channel: None,
        place: Place::Gone,
        stack_base: 0,
        stack: Vec::new(),
        python: python.map(|p| PythonThread { holds_gil: p.holds_gil, stack: PyStack::default() }),
    };
    for attempt in 0..2 {
        let Some(before) = task::syscall(pid, tid) else {
            thread.place = Place::Gone;
            return thread;
        };
        let SyscallState::Blocked { number, args, sp, pc } = before else {
            thread.place = Place::Running;
            thread.scheduler_state = task::scheduler_state(pid, tid);
            return thread;
        };
        thread.scheduler_state = task::scheduler_state(pid, tid);
        thread.wait_channel = task::wait_channel(pid, tid);
        (thread.stack_base, thread.stack) = copy_stack(pid, sp);
        if let (Some(layout), Some(python)) = (layout, python) {
            thread.python = Some(PythonThread {
                holds_gil: python.holds_gil,
                stack: py_threads::stack(pid, layout, python.tstate),
            });
        }
        let after = task::syscall(pid, tid);
        let moved = after != Some(before);
        thread.place = Place::Blocked { syscall: number, arg0: args[0], sp, pc, moved };
        if !moved || attempt == 1 {
            break;
        }
    }
    thread
}

/// Copies the user stack from the page holding `sp` upwards, a page at a time, until the mapping ends or
/// `STACK_COPY_MAX`. Returns the address of the first byte and the bytes.
fn copy_stack(pid: u32, sp: u64) -> (u64, Vec<u8>) {
    let base = sp & PAGE_MASK;
    let mut stack = Vec::new();
    let mut address = base;
    while stack.len() < STACK_COPY_MAX {
        match memory::read(pid, address, PAGE as usize) {
            Ok(page) => stack.extend_from_slice(&page),
            Err(_) => break,
        }
        let Some(next) = address.checked_add(PAGE) else { break };
        address = next;
    }
    (base, stack)
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, Barrier},
        time::Duration,
    };

    use super::*;

    #[test]
    fn a_sleeping_thread_of_ours_is_blocked_with_a_stack_copy() {
        let ready = Arc::new(Barrier::new(2));
        let signal = ready.clone();
        let sleeper = std::thread::Builder::new()
            .name("dump-sleeper".into())
            .spawn(move || {
                signal.wait();
                std::thread::sleep(Duration::from_secs(3));
            })
            .unwrap();
        ready.wait();
        std::thread::sleep(Duration::from_millis(200));
        let me = std::process::id();
        let snapshot = snapshot(me, None, &HashMap::new());
        let thread = snapshot.threads.iter().find(|t| t.name == "dump-sleeper").expect("the sleeper is listed");
        let Place::Blocked { syscall, sp, .. } = thread.place else { panic!("{:?}", thread.place) };
        assert_eq!(syscall.and_then(task::syscall_name), Some("clock_nanosleep"));
        assert!(thread.stack_base <= sp && sp < thread.stack_base + thread.stack.len() as u64, "{thread:?}");
        assert!(snapshot.python_error.is_none() && snapshot.unmatched_python.is_empty());
        sleeper.join().unwrap();
    }

    #[test]
    fn the_copy_stops_at_the_end_of_the_mapping() {
        let local = [7u8; 64];
        let (base, stack) = copy_stack(std::process::id(), local.as_ptr() as u64);
        assert!(stack.len() >= PAGE as usize && stack.len() <= STACK_COPY_MAX);
        assert_eq!(base % PAGE, 0);
        assert!(copy_stack(std::process::id(), 8).1.is_empty());
    }
}
