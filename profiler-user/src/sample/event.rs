//! Typed view of one ring-buffer record.
//!
//! The record is borrowed, not copied: the stack copy (up to 32 KiB) is unwound in place.
// Values here come from a target (its files, its memory, its maps) or the kernel: no implicit arithmetic.
#![deny(clippy::arithmetic_side_effects)]
use anyhow::{bail, Context as _, Result};
pub(crate) use profiler_common::OffCpuEnd;
use profiler_common::{
    CrashRecord, CrashRegs, LifecycleEvent, PyCodeCopy, PyFrame, SampleHeader, SampleRecord, UserRegs,
    CRASH_CODE_COPIES, CRASH_CODE_LEN, EVENT_EXEC, EVENT_EXIT, EVENT_FORK, EVENT_MMAP_EXEC, EVENT_SIGNAL,
    FLAG_FAULT_ADDR, FLAG_GIL_WAIT, FLAG_KERNEL_STACK, FLAG_PREEMPTED, KIND_CPU, KIND_CRASH, KIND_CRASH_THREAD,
    KIND_OFF_CPU, KIND_OFF_CPU_END, KIND_PAGE_FAULT, NO_FIELD, PY_GIL_HELD, PY_MAX_FRAMES, PY_THREAD_FOUND,
    STACK_COPY_MAX,
};

/// A record of the sample ring: a stack (a CPU sample, a crash, a thread leaving its CPU) or the end of an
/// off-CPU period whose start was captured.
// A record is a borrowed view, parsed, handled and dropped one at a time: never stored, so its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Record<'a> {
    Sample(CpuSample<'a>),
    OffCpuEnd(OffCpuEnd),
}

impl<'a> Record<'a> {
    /// Parses a ring-buffer record by its kind (the first four bytes of every record).
    pub(crate) fn parse(record: &'a [u8]) -> Result<Self> {
        let kind = record.get(..4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
        if kind != Some(KIND_OFF_CPU_END) {
            return CpuSample::parse(record).map(Record::Sample);
        }
        if record.len() < size_of::<OffCpuEnd>() {
            bail!("off-CPU end record of {} bytes is shorter than {}", record.len(), size_of::<OffCpuEnd>());
        }
        // SAFETY: OffCpuEnd is plain old data valid for any bit pattern; the length was checked.
        Ok(Record::OffCpuEnd(unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) }))
    }

    pub(crate) fn time_ns(&self) -> u64 {
        match self {
            Record::Sample(sample) => sample.time_ns,
            Record::OffCpuEnd(end) => end.time_ns,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        match self {
            Record::Sample(sample) => sample.pid,
            Record::OffCpuEnd(end) => end.pid,
        }
    }
}

/// A target thread off its CPU at a window's end, as the off-CPU sampler's bookkeeping (`OFF_CPU_THREADS`) has it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InProgress {
    pub pid: u32,
    pub tid: u32,
    /// CLOCK_MONOTONIC ns when it left.
    pub since_ns: u64,
    /// Its leaving was captured (then a `KIND_OFF_CPU` record has its stack).
    pub captured: bool,
    /// It waits for its interpreter's GIL.
    pub gil_wait: bool,
}

/// How a thread left its CPU (`KIND_OFF_CPU` records).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OffCpuStart {
    /// Preempted: still runnable, waiting for a CPU.
    pub preempted: bool,
    /// Blocked on its interpreter's GIL.
    pub gil_wait: bool,
    /// The scheduler state it left in (1 interruptible sleep, 2 uninterruptible, ...).
    pub task_state: u32,
    /// Its capture credit at this leaving: what its capture probability was computed from.
    pub capture_credit: u64,
}

impl OffCpuStart {
    /// The probability the kernel captured this leaving with, for a capture gap of `gap_ns` (see profiler-ebpf's
    /// off_cpu.rs).
    pub(crate) fn capture_probability(&self, gap_ns: u64) -> f64 {
        if gap_ns == 0 || self.capture_credit >= gap_ns {
            1.0
        } else {
            self.capture_credit as f64 / gap_ns as f64
        }
    }
}

/// A timer sample of one thread of a profiled process.
#[derive(Debug)]
pub(crate) struct CpuSample<'a> {
    pub pid: u32,
    pub tid: u32,
    /// CLOCK_MONOTONIC nanoseconds.
    pub time_ns: u64,
    /// Thread name at sample time.
    pub comm: String,
    pub regs: UserRegs,
    /// User address of `stack[0]`.
    pub stack_base: u64,
    pub stack: &'a [u8],
    pub kernel_stack_id: Option<u32>,
    /// Python frames, innermost first (empty for threads that never ran Python).
    pub py_frames: Vec<PyFrame>,
    /// `PY_*` flags of the sample (thread found, GIL held, truncated, read failed).
    pub py_flags: u32,
    /// Set for crash samples.
    pub crash: Option<CrashSignal>,
    /// Another thread of a crashing process, captured as the kernel stopped it for the process's exit.
    pub crash_thread: bool,
    /// The system call the thread was in when it last entered the kernel, `None` when it entered from running
    /// user code (for a crash thread: it was on a CPU, or waiting for one).
    pub syscall: Option<u64>,
    /// The first argument of that system call (for a futex, the address waited on).
    pub syscall_arg0: u64,
    /// Set for a thread leaving its CPU.
    pub off_cpu: Option<OffCpuStart>,
    /// Set for a page fault captured for the memory profile.
    pub page_fault: Option<PageFault>,
    /// For a GIL holder: threads of its process blocked on the GIL at that moment (while off-CPU sampling runs).
    pub gil_waiters: u32,
    /// Crash samples: names and line tables of the innermost Python frames' code objects, copied at the crash.
    pub code_copies: Vec<PyCodeCopy>,
    /// Crash samples: every user register and the code at the instruction pointer, when the kernel read them.
    pub crash_cpu: Option<CrashCpuState>,
}

/// The faulting thread's registers and the bytes of code at its instruction pointer, as copied at the signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CrashCpuState {
    pub regs: CrashRegs,
    /// Up to `CRASH_CODE_LEN` bytes at `regs.rip`; empty when they could not be read (a jump to an unmapped
    /// address).
    pub code: Vec<u8>,
}

/// A target's page fault captured for the memory profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PageFault {
    /// The address the thread touched.
    pub address: u64,
    /// The bytes the process grew by since the last captured fault, this one's included: what the capture weighs.
    pub bytes: u64,
}

/// The fatal signal a thread generated for itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CrashSignal {
    pub signal: u32,
    pub si_code: i32,
    /// The faulting address for SIGSEGV/SIGBUS/SIGILL/SIGFPE, when the kernel gives one.
    pub fault_addr: Option<u64>,
}

impl<'a> CpuSample<'a> {
    /// Parses a ring-buffer record; a record of the wrong size or kind is an error (a version mismatch between
    /// the embedded kernel object and this binary would otherwise produce garbage stacks).
    pub(crate) fn parse(record: &'a [u8]) -> Result<Self> {
        let header_len = size_of::<SampleHeader>();
        if record.len() < header_len {
            bail!("sample record of {} bytes is shorter than its {header_len}-byte header", record.len());
        }
        // SAFETY: SampleHeader is plain old data valid for any bit pattern; the length was checked.
        let header: SampleHeader = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
        if ![KIND_CPU, KIND_CRASH, KIND_CRASH_THREAD, KIND_OFF_CPU, KIND_PAGE_FAULT].contains(&header.kind) {
            bail!("unexpected sample record kind {}", header.kind);
        }
        let (frames_area, stack_area) = record[header_len..]
            .split_at_checked(size_of::<[PyFrame; PY_MAX_FRAMES]>())
            .with_context(|| format!("sample record of {} bytes has no room for its Python frames", record.len()))?;
        let py_frame_count = (header.py_frame_count as usize).min(PY_MAX_FRAMES);
        let py_frames = frames_area
            .chunks_exact(size_of::<PyFrame>())
            .take(py_frame_count)
            .map(|frame| {
                // SAFETY: PyFrame is plain old data and the chunk is exactly one of them.
                unsafe { std::ptr::read_unaligned(frame.as_ptr().cast::<PyFrame>()) }
            })
            .collect();
        let stack_len = (header.stack_len as usize).min(STACK_COPY_MAX).min(stack_area.len());
        let crash_record = header.kind == KIND_CRASH || header.kind == KIND_CRASH_THREAD;
        let code_copies = if crash_record && record.len() >= size_of::<CrashRecord>() {
            record[size_of::<SampleRecord>()..]
                .chunks_exact(size_of::<PyCodeCopy>())
                .take(CRASH_CODE_COPIES)
                .map(|copy| {
                    // SAFETY: plain old data, and the chunk is exactly one of them.
                    unsafe { std::ptr::read_unaligned(copy.as_ptr().cast::<PyCodeCopy>()) }
                })
                .filter(|copy| copy.code != 0)
                .collect()
        } else {
            Vec::new()
        };
        let crash_cpu = if header.kind == KIND_CRASH { crash_cpu_state(record) } else { None };
        let comm_len = header.comm.iter().position(|&b| b == 0).unwrap_or(header.comm.len());
        Ok(Self {
            pid: header.pid,
            tid: header.tid,
            time_ns: header.time_ns,
            comm: crate::sanitize::name(&String::from_utf8_lossy(&header.comm[..comm_len])).into_owned(),
            regs: header.regs,
            stack_base: header.stack_base,
            stack: &stack_area[..stack_len],
            kernel_stack_id: (header.flags & FLAG_KERNEL_STACK != 0 && header.kernel_stack_id >= 0)
                .then_some(header.kernel_stack_id as u32),
            py_frames,
            py_flags: header.py_flags,
            crash: (header.kind == KIND_CRASH).then_some(CrashSignal {
                signal: header.signal,
                si_code: header.si_code,
                fault_addr: (header.flags & FLAG_FAULT_ADDR != 0).then_some(header.fault_addr),
            }),
            crash_thread: header.kind == KIND_CRASH_THREAD,
            syscall: u64::try_from(header.syscall).ok(),
            syscall_arg0: header.syscall_arg0,
            off_cpu: (header.kind == KIND_OFF_CPU).then_some(OffCpuStart {
                preempted: header.flags & FLAG_PREEMPTED != 0,
                gil_wait: header.flags & FLAG_GIL_WAIT != 0,
                task_state: header.task_state,
                capture_credit: header.capture_credit,
            }),
            page_fault: (header.kind == KIND_PAGE_FAULT)
                .then_some(PageFault { address: header.fault_addr, bytes: header.capture_credit }),
            // The kernel reads the count for every sample; it is this thread's doing only while it holds the GIL.
            gil_waiters: if header.py_flags & PY_GIL_HELD != 0 {
                header.gil_waiters.min(u32::from(u16::MAX))
            } else {
                0
            },
            code_copies,
            crash_cpu,
        })
    }

    /// A thread's state that userspace read itself (`profiler dump`): registers, a copy of its stack and its
    /// Python frames, unwound and named as a sample is.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn snapshot(
        pid: u32,
        tid: u32,
        comm: String,
        regs: UserRegs,
        stack_base: u64,
        stack: &'a [u8],
        py_frames: Vec<PyFrame>,
        py_flags: u32,
    ) -> Self {
        Self {
            pid,
            tid,
            time_ns: monotonic_ns(),
            comm,
            regs,
            stack_base,
            stack,
            kernel_stack_id: None,
            py_frames,
            py_flags,
            crash: None,
            crash_thread: false,
            syscall: None,
            syscall_arg0: 0,
            off_cpu: None,
            page_fault: None,
            gil_waiters: 0,
            code_copies: Vec::new(),
            crash_cpu: None,
        }
    }

    /// True when the thread has Python state (it runs Python code).
    pub(crate) fn is_python_thread(&self) -> bool {
        self.py_flags & PY_THREAD_FOUND != 0
    }

    pub(crate) fn holds_gil(&self) -> bool {
        self.py_flags & PY_GIL_HELD != 0
    }
}

/// The registers and code of a crash record; `None` for a record too short to hold them or whose registers the
/// kernel could not read.
fn crash_cpu_state(record: &[u8]) -> Option<CrashCpuState> {
    let bytes = record.get(..size_of::<CrashRecord>())?;
    // SAFETY: CrashRecord's tail fields are plain old data; the slice is exactly one record long.
    let (regs, code, code_len, regs_len) = unsafe {
        let crash = bytes.as_ptr().cast::<CrashRecord>();
        (
            std::ptr::read_unaligned(&raw const (*crash).regs),
            std::ptr::read_unaligned(&raw const (*crash).code),
            std::ptr::read_unaligned(&raw const (*crash).code_len),
            std::ptr::read_unaligned(&raw const (*crash).regs_len),
        )
    };
    if regs_len as usize != size_of::<CrashRegs>() {
        return None;
    }
    let code_len = (code_len as usize).min(CRASH_CODE_LEN);
    Some(CrashCpuState { regs, code: code[..code_len].to_vec() })
}

/// A process lifecycle change and when it happened (CLOCK_MONOTONIC ns, the clock of `CpuSample::time_ns`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TimedLifecycle {
    pub time_ns: u64,
    pub event: Lifecycle,
}

/// A process lifecycle change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    /// A target forked `pid`; the kernel already samples it.
    Fork { pid: u32, parent: u32 },
    /// `pid` exec'd a new image named `comm`.
    Exec { pid: u32, comm: String },
    /// The last thread of target `pid` exited; the kernel no longer samples it. `status` is `None` when this
    /// kernel's BTF did not say where the exit code is.
    Exit { pid: u32, status: Option<ExitStatus> },
    /// Process `sender` sent target `pid` the fatal signal `signal`.
    Signal { pid: u32, sender: u32, signal: u32 },
    /// Target `pid` is mapping a file executable: its memory map is about to change.
    MapsChanged { pid: u32 },
}

/// How a process ended, decoded from the kernel's `exit_code` (the wait status `waitpid` would give its parent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ExitStatus {
    /// It called `exit(code)` (or returned from `main`).
    Exited { code: u8 },
    /// A signal ended it.
    Killed { signal: u32, core_dumped: bool },
}

impl ExitStatus {
    pub(crate) fn from_kernel(exit_code: u32) -> Self {
        match exit_code & 0x7f {
            0 => Self::Exited { code: (exit_code >> 8) as u8 },
            signal => Self::Killed { signal, core_dumped: exit_code & 0x80 != 0 },
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::Exited { code } => write!(f, "exited with code {code}"),
            Self::Killed { signal, core_dumped } => {
                write!(f, "was ended by {}", signal_name(signal))?;
                if core_dumped {
                    write!(f, " (core dumped)")
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of the kernel's `bpf_ktime_get_ns`, which stamps samples and events.
pub(crate) fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    // Seconds since boot: centuries away from overflowing.
    (now.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(now.tv_nsec as u64)
}

/// `SIGSEGV`-style names of the signals that end processes.
pub(crate) fn signal_name(signal: u32) -> String {
    let name = match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        other => return format!("signal {other}"),
    };
    name.into()
}

impl TimedLifecycle {
    pub(crate) fn parse(record: &[u8]) -> Result<Self> {
        if record.len() < size_of::<LifecycleEvent>() {
            bail!("lifecycle event of {} bytes is too short", record.len());
        }
        // SAFETY: plain old data, length checked.
        let event: LifecycleEvent = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
        let comm_len = event.comm.iter().position(|&b| b == 0).unwrap_or(event.comm.len());
        let lifecycle = match event.kind {
            EVENT_FORK => Lifecycle::Fork { pid: event.pid, parent: event.parent },
            EVENT_EXEC => Lifecycle::Exec {
                pid: event.pid,
                comm: crate::sanitize::name(&String::from_utf8_lossy(&event.comm[..comm_len])).into_owned(),
            },
            EVENT_EXIT => Lifecycle::Exit {
                pid: event.pid,
                status: (event.exit_code != NO_FIELD).then(|| ExitStatus::from_kernel(event.exit_code)),
            },
            EVENT_SIGNAL => Lifecycle::Signal { pid: event.pid, sender: event.parent, signal: event.signal },
            EVENT_MMAP_EXEC => Lifecycle::MapsChanged { pid: event.pid },
            kind => bail!("unknown lifecycle event kind {kind}"),
        };
        Ok(Self { time_ns: event.time_ns, event: lifecycle })
    }
}

#[cfg(test)]
// Test data is built here, not read from a target: the module's arithmetic rule is for target data.
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use profiler_common::{SampleRecord, COMM_LEN, STACK_COPY_MAX};

    use super::*;

    fn record(stack_len: u32, flags: u32) -> Vec<u8> {
        let mut comm = [0u8; COMM_LEN];
        comm[..6].copy_from_slice(b"worker");
        let header = SampleHeader {
            kind: KIND_CPU,
            cpu: 1,
            pid: 42,
            tid: 43,
            time_ns: 7,
            regs: UserRegs { ip: 0x1000, sp: 0x7ff0_0010, bp: 0 },
            stack_base: 0x7ff0_0000,
            stack_len,
            flags,
            kernel_stack_id: 5,
            comm,
            py_frame_count: 2,
            py_flags: PY_THREAD_FOUND | PY_GIL_HELD,
            signal: 0,
            si_code: 0,
            fault_addr: 0,
            syscall: 202,
            syscall_arg0: 0,
            task_state: 0,
            gil_waiters: 0,
            capture_credit: 0,
        };
        let mut bytes = vec![0u8; size_of::<SampleRecord>()];
        // SAFETY (both writes): `bytes` is a SampleRecord's size, which holds the header and a frame after it;
        // write_unaligned needs no alignment, and both types are plain integers.
        unsafe { std::ptr::write_unaligned(bytes.as_mut_ptr().cast(), header) };
        let frame = PyFrame { code: 0xc0de, instr: 0x1234, code_key: 9, flags: 1, _pad: 0 };
        unsafe { std::ptr::write_unaligned(bytes[size_of::<SampleHeader>()..].as_mut_ptr().cast(), frame) };
        bytes
    }

    #[test]
    fn parses_header_and_bounds_the_stack() {
        let bytes = record(8192, profiler_common::FLAG_USER_MODE | FLAG_KERNEL_STACK);
        let sample = CpuSample::parse(&bytes).unwrap();
        assert_eq!((sample.pid, sample.tid), (42, 43));
        assert_eq!(sample.comm, "worker");
        assert_eq!(sample.stack.len(), 8192);
        assert_eq!(sample.kernel_stack_id, Some(5));
        assert_eq!(sample.py_frames.len(), 2);
        assert_eq!(sample.py_frames[0].code, 0xc0de);
        assert!(sample.is_python_thread() && sample.holds_gil());
        assert_eq!(sample.syscall, Some(202));
        assert!(sample.crash.is_none() && !sample.crash_thread);
    }

    #[test]
    fn a_thread_captured_at_a_crash_is_neither_a_cpu_sample_nor_the_crash() {
        let mut bytes = record(0, 0);
        // kind is the header's first field; syscall -1: it was running user code.
        bytes[..4].copy_from_slice(&KIND_CRASH_THREAD.to_ne_bytes());
        let syscall_at = std::mem::offset_of!(SampleHeader, syscall);
        bytes[syscall_at..syscall_at + 8].copy_from_slice(&(-1i64).to_ne_bytes());
        let sample = CpuSample::parse(&bytes).unwrap();
        assert!(sample.crash_thread && sample.crash.is_none());
        assert_eq!(sample.syscall, None);
    }

    #[test]
    fn clamps_an_overlong_stack_len_and_ignores_stack_id_without_flag() {
        let bytes = record(u32::MAX, 0);
        let sample = CpuSample::parse(&bytes).unwrap();
        assert_eq!(sample.stack.len(), STACK_COPY_MAX);
        assert_eq!(sample.kernel_stack_id, None);
    }

    #[test]
    fn decodes_exit_statuses() {
        assert_eq!(ExitStatus::from_kernel(0), ExitStatus::Exited { code: 0 });
        assert_eq!(ExitStatus::from_kernel(3 << 8), ExitStatus::Exited { code: 3 });
        assert_eq!(ExitStatus::from_kernel(9), ExitStatus::Killed { signal: 9, core_dumped: false });
        assert_eq!(ExitStatus::from_kernel(11 | 0x80), ExitStatus::Killed { signal: 11, core_dumped: true });
        assert_eq!(ExitStatus::from_kernel(3 << 8).to_string(), "exited with code 3");
        assert_eq!(ExitStatus::from_kernel(11 | 0x80).to_string(), "was ended by SIGSEGV (core dumped)");
    }

    #[test]
    fn crash_records_carry_registers_and_code() {
        let mut bytes = record(0, 0);
        bytes[..4].copy_from_slice(&KIND_CRASH.to_ne_bytes());
        bytes.resize(size_of::<CrashRecord>(), 0);
        let regs = CrashRegs { rdi: 0x18, rip: 0x1000, ..CrashRegs::default() };
        let tail = size_of::<SampleRecord>() + size_of::<[PyCodeCopy; CRASH_CODE_COPIES]>();
        // SAFETY: `bytes` is a CrashRecord's size, so the registers fit at their offset `tail`; write_unaligned needs
        // no alignment.
        unsafe { std::ptr::write_unaligned(bytes[tail..].as_mut_ptr().cast(), regs) };
        let code_at = tail + size_of::<CrashRegs>();
        bytes[code_at..code_at + 3].copy_from_slice(&[0x8b, 0x47, 0x18]);
        // An overlong code_len is clamped; a regs_len that is not the struct's size means no registers.
        bytes[code_at + CRASH_CODE_LEN..code_at + CRASH_CODE_LEN + 4].copy_from_slice(&99u32.to_ne_bytes());
        let regs_len = (size_of::<CrashRegs>() as u32).to_ne_bytes();
        bytes[code_at + CRASH_CODE_LEN + 4..code_at + CRASH_CODE_LEN + 8].copy_from_slice(&regs_len);
        let sample = CpuSample::parse(&bytes).unwrap();
        let cpu = sample.crash_cpu.expect("registers");
        assert_eq!((cpu.regs.rdi, cpu.regs.rip), (0x18, 0x1000));
        assert_eq!(cpu.code.len(), CRASH_CODE_LEN);
        assert_eq!(&cpu.code[..3], &[0x8b, 0x47, 0x18]);

        bytes[code_at + CRASH_CODE_LEN + 4..code_at + CRASH_CODE_LEN + 8].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(CpuSample::parse(&bytes).unwrap().crash_cpu, None, "registers the kernel could not read");
        assert_eq!(CpuSample::parse(&record(0, 0)).unwrap().crash_cpu, None, "a CPU sample has none");
    }

    #[test]
    fn rejects_short_records() {
        assert!(CpuSample::parse(&[0u8; 8]).is_err());
    }
}
