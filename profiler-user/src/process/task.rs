//! The threads of a process as /proc shows them: their ids, names, scheduler state, and for a thread blocked in
//! the kernel, the system call it is in with its user stack pointer and program counter.
//!
//! `/proc/PID/task/TID/syscall` is what lets `profiler dump` unwind a thread without stopping it: the kernel
//! fills it from the registers the thread saved when it entered the kernel, which stay put while it sleeps.
//! Its format (proc(5), kernel `fs/proc/base.c` `proc_pid_syscall`): `running` for a thread on a CPU; `-1 SP PC`
//! for one blocked outside a system call (a page fault); otherwise `NR ARG1 … ARG6 SP PC`, the number in decimal
//! and the rest in `0x` hex.
// Values here come from a target (its files, its memory, its maps) or the kernel: no implicit arithmetic.
#![deny(clippy::arithmetic_side_effects)]
use std::fs;

/// Where a thread is, from its `syscall` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SyscallState {
    /// On a CPU (or runnable): its registers are not saved anywhere we can read.
    Running,
    /// Blocked in the kernel: in system call `number` (`None` when not in one, e.g. a page fault), with the user
    /// stack pointer and program counter it entered the kernel with.
    Blocked { number: Option<u64>, args: [u64; 6], sp: u64, pc: u64 },
}

impl SyscallState {
    /// Parses the contents of a `syscall` file; `None` for anything else (a future format, a truncated read).
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text == "running" {
            return Some(Self::Running);
        }
        let fields: Vec<&str> = text.split_ascii_whitespace().collect();
        match fields.as_slice() {
            ["-1", sp, pc] => Some(Self::Blocked { number: None, args: [0; 6], sp: hex(sp)?, pc: hex(pc)? }),
            [number, a1, a2, a3, a4, a5, a6, sp, pc] => {
                let mut args = [0u64; 6];
                for (slot, arg) in args.iter_mut().zip([a1, a2, a3, a4, a5, a6]) {
                    *slot = hex(arg)?;
                }
                Some(Self::Blocked { number: Some(number.parse().ok()?), args, sp: hex(sp)?, pc: hex(pc)? })
            }
            _ => None,
        }
    }
}

fn hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text.strip_prefix("0x")?, 16).ok()
}

/// The thread ids of a process (its `task` directory), sorted; empty when it is gone.
pub(crate) fn thread_ids(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut tids: Vec<u32> = entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok()).collect();
    tids.sort_unstable();
    tids
}

/// The thread's name (`comm`, which Python's `threading` sets from the thread's name on Linux, cut to 15 bytes).
pub(crate) fn thread_name(pid: u32, tid: u32) -> Option<String> {
    let name = fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
    Some(crate::sanitize::name(name.trim_end_matches('\n')).into_owned())
}

/// The thread's `syscall` file, parsed; `None` when the thread is gone or the file is unreadable.
pub(crate) fn syscall(pid: u32, tid: u32) -> Option<SyscallState> {
    SyscallState::parse(&fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?)
}

/// The scheduler state letter (`R` running, `S` sleeping, `D` uninterruptible, `T` stopped, `Z` zombie, …).
pub(crate) fn scheduler_state(pid: u32, tid: u32) -> Option<char> {
    state_letter(&fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?)
}

/// The state field of a `stat` line: the first field after the last `)` (the name may hold anything).
fn state_letter(stat: &str) -> Option<char> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

/// The kernel function the thread sleeps in (`wchan`), when the kernel shows it ("0" or empty otherwise).
pub(crate) fn wait_channel(pid: u32, tid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan")).ok()?;
    let text = text.trim();
    (!text.is_empty() && text != "0").then(|| crate::sanitize::name(text).into_owned())
}

/// The x86_64 name of a system call a thread can block in (`None` for others: they are shown by number).
pub(crate) fn syscall_name(number: u64) -> Option<&'static str> {
    const NAMES: &[(libc::c_long, &str)] = &[
        (libc::SYS_read, "read"),
        (libc::SYS_write, "write"),
        (libc::SYS_poll, "poll"),
        (libc::SYS_ioctl, "ioctl"),
        (libc::SYS_pread64, "pread64"),
        (libc::SYS_pwrite64, "pwrite64"),
        (libc::SYS_readv, "readv"),
        (libc::SYS_writev, "writev"),
        (libc::SYS_select, "select"),
        (libc::SYS_sched_yield, "sched_yield"),
        (libc::SYS_msync, "msync"),
        (libc::SYS_pause, "pause"),
        (libc::SYS_nanosleep, "nanosleep"),
        (libc::SYS_sendfile, "sendfile"),
        (libc::SYS_connect, "connect"),
        (libc::SYS_accept, "accept"),
        (libc::SYS_sendto, "sendto"),
        (libc::SYS_recvfrom, "recvfrom"),
        (libc::SYS_sendmsg, "sendmsg"),
        (libc::SYS_recvmsg, "recvmsg"),
        (libc::SYS_wait4, "wait4"),
        (libc::SYS_semop, "semop"),
        (libc::SYS_msgsnd, "msgsnd"),
        (libc::SYS_msgrcv, "msgrcv"),
        (libc::SYS_fcntl, "fcntl"),
        (libc::SYS_flock, "flock"),
        (libc::SYS_fsync, "fsync"),
        (libc::SYS_fdatasync, "fdatasync"),
        (libc::SYS_rt_sigtimedwait, "rt_sigtimedwait"),
        (libc::SYS_rt_sigsuspend, "rt_sigsuspend"),
        (libc::SYS_futex, "futex"),
        (libc::SYS_io_getevents, "io_getevents"),
        (libc::SYS_semtimedop, "semtimedop"),
        (libc::SYS_clock_nanosleep, "clock_nanosleep"),
        (libc::SYS_epoll_wait, "epoll_wait"),
        (libc::SYS_waitid, "waitid"),
        (libc::SYS_openat, "openat"),
        (libc::SYS_pselect6, "pselect6"),
        (libc::SYS_ppoll, "ppoll"),
        (libc::SYS_splice, "splice"),
        (libc::SYS_epoll_pwait, "epoll_pwait"),
        (libc::SYS_accept4, "accept4"),
        (libc::SYS_io_uring_enter, "io_uring_enter"),
        (libc::SYS_epoll_pwait2, "epoll_pwait2"),
        (libc::SYS_futex_waitv, "futex_waitv"),
    ];
    NAMES.iter().find(|(nr, _)| u64::try_from(*nr).ok() == Some(number)).map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(SyscallState::parse("running\n"), Some(SyscallState::Running));
        assert_eq!(
            SyscallState::parse("-1 0x7ffd0000 0x401000\n"),
            Some(SyscallState::Blocked { number: None, args: [0; 6], sp: 0x7ffd_0000, pc: 0x40_1000 })
        );
        assert_eq!(
            SyscallState::parse("202 0x7f1 0x80 0x0 0x0 0x0 0xffffffff 0x7ffc10 0x7f4a2b\n"),
            Some(SyscallState::Blocked {
                number: Some(202),
                args: [0x7f1, 0x80, 0, 0, 0, 0xffff_ffff],
                sp: 0x7f_fc10,
                pc: 0x7f_4a2b
            })
        );
    }

    #[test]
    fn malformed_lines_are_none_not_panics() {
        for text in [
            "",
            "run",
            "-1",
            "-1 0x1",
            "-1 12 0x1",
            "202 0x1 0x2 0x3 0x4 0x5 0x6 0x7",
            "202 0x1 0x2 0x3 0x4 0x5 0x6 0x7 0x8 0x9",
            "x 0x1 0x2 0x3 0x4 0x5 0x6 0x7 0x8",
            "-5 0x1 0x2 0x3 0x4 0x5 0x6 0x7 0x8",
            "202 0x1 0x2 0x3 0x4 0x5 0x6 0x7 0xffffffffffffffffff",
            "202 0x 0x2 0x3 0x4 0x5 0x6 0x7 0x8",
            "\u{0}\u{ff}é 0x1",
        ] {
            assert_eq!(SyscallState::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn reads_our_own_threads() {
        let me = std::process::id();
        let tids = thread_ids(me);
        assert!(tids.contains(&me), "{tids:?}");
        assert!(thread_name(me, me).is_some());
        // A thread reading its own file is in that read (syscall 0) as the kernel fills it.
        // SAFETY: gettid takes no arguments and cannot fail.
        let tid = unsafe { libc::gettid() } as u32;
        assert!(matches!(syscall(me, tid), Some(SyscallState::Blocked { number: Some(0), .. })));
        assert_eq!(scheduler_state(me, tid), Some('R'));
        assert_eq!(state_letter("12 (a) b) S 1 2"), Some('S'));
        assert_eq!(state_letter("garbage"), None);
        assert_eq!(syscall_name(202), Some("futex"));
        assert_eq!(syscall_name(230), Some("clock_nanosleep"));
        assert_eq!(syscall_name(100_000), None);
    }
}
