//! Why a thread left its CPU, from what the kernel saw as it left: preempted or blocked, the system call it blocked
//! in and that call's first argument, and whether the futex it waits on is its interpreter's GIL.
//!
//! - `cpu`: preempted (still runnable: it waits for a CPU, not for anything of its own).
//! - `gil`: a futex wait on an address inside the process's GIL (`python::gil` locates it; the kernel compares).
//! - `lock`: any other futex wait: `threading.Lock`, a `Condition`, a queue, a C library's mutex; and `sched_yield`,
//!   which spinning locks call while they wait: a free-threaded CPython's `PyMutex` yields up to 40 times before it
//!   sleeps on a futex (`MAX_SPIN_COUNT` in `Python/lock.c`), so on a busy machine most of a contended lock's wait is
//!   spent yielding. (A yield leaves the thread runnable, but what it waits for is the lock.)
//! - `sleep`: `nanosleep`/`clock_nanosleep`, and `select`/`poll` with no file descriptors (Python 3.8–3.10's
//!   `time.sleep` is a `select` with none).
//! - `io`: a read, write, send, receive, accept, connect, poll/select/epoll on descriptors, fsync, or open.
//! - `other`: anything else (waiting for a child, a page fault, a signal, ...).

use crate::sample::OffCpuStart;

/// The `wait` label's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitReason {
    Gil,
    Lock,
    Io,
    Sleep,
    Cpu,
    Other,
}

impl WaitReason {
    pub(crate) fn label(self) -> &'static str {
        match self {
            WaitReason::Gil => "gil",
            WaitReason::Lock => "lock",
            WaitReason::Io => "io",
            WaitReason::Sleep => "sleep",
            WaitReason::Cpu => "cpu",
            WaitReason::Other => "other",
        }
    }
}

// x86_64 system call numbers.
const READ: u64 = 0;
const WRITE: u64 = 1;
const OPEN: u64 = 2;
const POLL: u64 = 7;
const PREAD64: u64 = 17;
const PWRITE64: u64 = 18;
const READV: u64 = 19;
const WRITEV: u64 = 20;
const SELECT: u64 = 23;
const SCHED_YIELD: u64 = 24;
const NANOSLEEP: u64 = 35;
const SENDFILE: u64 = 40;
const CONNECT: u64 = 42;
const ACCEPT: u64 = 43;
const SENDTO: u64 = 44;
const RECVFROM: u64 = 45;
const SENDMSG: u64 = 46;
const RECVMSG: u64 = 47;
const FSYNC: u64 = 74;
const FDATASYNC: u64 = 75;
const FUTEX: u64 = 202;
const IO_GETEVENTS: u64 = 208;
const EPOLL_WAIT: u64 = 232;
const CLOCK_NANOSLEEP: u64 = 230;
const OPENAT: u64 = 257;
const PSELECT6: u64 = 270;
const PPOLL: u64 = 271;
const SPLICE: u64 = 275;
const EPOLL_PWAIT: u64 = 281;
const ACCEPT4: u64 = 288;
const PREADV: u64 = 295;
const PWRITEV: u64 = 296;
const RECVMMSG: u64 = 299;
const SENDMMSG: u64 = 307;
const PREADV2: u64 = 327;
const PWRITEV2: u64 = 328;
const IO_URING_ENTER: u64 = 426;
const FUTEX_WAITV: u64 = 449;
const EPOLL_PWAIT2: u64 = 441;

/// Why the thread described by `start` left its CPU, blocked in `syscall` (`None`: it entered the kernel from
/// user code, by a fault or an interrupt) with first argument `arg0`.
pub(crate) fn classify(start: OffCpuStart, syscall: Option<u64>, arg0: u64) -> WaitReason {
    // Left runnable, so taken for preempted, but by its own choice: a spinning lock's yield.
    if syscall == Some(SCHED_YIELD) {
        return WaitReason::Lock;
    }
    if start.preempted {
        return WaitReason::Cpu;
    }
    if start.gil_wait {
        return WaitReason::Gil;
    }
    let Some(nr) = syscall else { return WaitReason::Other };
    match nr {
        FUTEX | FUTEX_WAITV => WaitReason::Lock,
        NANOSLEEP | CLOCK_NANOSLEEP => WaitReason::Sleep,
        // No descriptors to wait on: only the timeout (Python 3.8–3.10's time.sleep).
        SELECT | PSELECT6 | POLL | PPOLL if arg0 == 0 => WaitReason::Sleep,
        READ | WRITE | OPEN | OPENAT | POLL | PPOLL | SELECT | PSELECT6 | PREAD64 | PWRITE64 | READV | WRITEV
        | PREADV | PWRITEV | PREADV2 | PWRITEV2 | SENDFILE | SPLICE | CONNECT | ACCEPT | ACCEPT4 | SENDTO
        | RECVFROM | SENDMSG | RECVMSG | RECVMMSG | SENDMMSG | FSYNC | FDATASYNC | EPOLL_WAIT | EPOLL_PWAIT
        | EPOLL_PWAIT2 | IO_GETEVENTS | IO_URING_ENTER => WaitReason::Io,
        _ => WaitReason::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCKED: OffCpuStart = OffCpuStart { preempted: false, gil_wait: false, task_state: 1, capture_credit: 0 };

    #[test]
    fn reasons_follow_the_system_call() {
        assert_eq!(classify(BLOCKED, Some(FUTEX), 0x7f00), WaitReason::Lock);
        assert_eq!(classify(OffCpuStart { gil_wait: true, ..BLOCKED }, Some(FUTEX), 0x7f00), WaitReason::Gil);
        assert_eq!(classify(BLOCKED, Some(CLOCK_NANOSLEEP), 1), WaitReason::Sleep);
        assert_eq!(classify(BLOCKED, Some(SELECT), 0), WaitReason::Sleep, "3.8–3.10 time.sleep");
        assert_eq!(classify(BLOCKED, Some(SELECT), 5), WaitReason::Io);
        assert_eq!(classify(BLOCKED, Some(RECVFROM), 5), WaitReason::Io);
        assert_eq!(classify(BLOCKED, Some(EPOLL_WAIT), 5), WaitReason::Io);
        assert_eq!(classify(BLOCKED, Some(61), 0), WaitReason::Other, "wait4");
        assert_eq!(classify(BLOCKED, None, 0), WaitReason::Other, "a page fault");
    }

    #[test]
    fn a_preempted_thread_waits_for_a_cpu_whatever_it_was_doing() {
        let preempted = OffCpuStart { preempted: true, gil_wait: false, task_state: 0, capture_credit: 0 };
        assert_eq!(classify(preempted, None, 0), WaitReason::Cpu);
        assert_eq!(classify(preempted, Some(FUTEX), 0), WaitReason::Cpu);
    }

    #[test]
    fn a_yield_is_a_spinning_lock_waiting() {
        // sched_yield leaves the thread runnable (state 0, which the kernel side reports as preempted).
        let yielded = OffCpuStart { preempted: true, gil_wait: false, task_state: 0, capture_credit: 0 };
        assert_eq!(classify(yielded, Some(SCHED_YIELD), 0), WaitReason::Lock);
        assert_eq!(classify(BLOCKED, Some(SCHED_YIELD), 0), WaitReason::Lock);
    }
}
