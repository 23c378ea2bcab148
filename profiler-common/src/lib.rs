//! Plain-old-data types that cross the kernel/userspace boundary.
//!
//! Both sides compile this crate (the kernel side for `bpfel-unknown-none`), so every type here is `#[repr(C)]`,
//! `Copy`, free of pointers and padding-stable: userspace reinterprets ring-buffer bytes as these structs.
#![no_std]

/// Bytes of user stack copied per sample: enough for a deep native stack of a busy thread, small enough that a
/// record fits the ring buffer hundreds of times over.
pub const STACK_COPY_MAX: usize = 32 * 1024;
/// The stack is copied in page-sized reads at constant offsets (the verifier rejects variable-length reads).
pub const STACK_CHUNK: usize = 4096;
pub const STACK_CHUNKS: usize = STACK_COPY_MAX / STACK_CHUNK;
/// Linux `TASK_COMM_LEN`.
pub const COMM_LEN: usize = 16;

/// `SampleHeader::kind` of a timer (CPU) sample.
pub const KIND_CPU: u32 = 1;
/// `SampleHeader::kind` of a crash: the thread generated a fatal signal for itself (fault, abort).
pub const KIND_CRASH: u32 = 2;
/// `SampleHeader::kind` of another thread of a crashing process, captured as the kernel stops it for the
/// process's exit (its own delivery of the SIGKILL that ends a process's other threads).
pub const KIND_CRASH_THREAD: u32 = 3;

/// `SampleHeader::kind` of a target thread leaving its CPU (`sched_switch`): its stack where it stopped; how long it
/// stayed off follows in an [`OffCpuEnd`] when it runs again.
pub const KIND_OFF_CPU: u32 = 4;
/// `OffCpuEnd::kind`: a thread whose leaving was captured (`KIND_OFF_CPU`) runs again.
pub const KIND_OFF_CPU_END: u32 = 5;
/// `SampleHeader::kind` of a target's page fault chosen for the memory profile (with probability its size /
/// `SamplerConfig::memory_period_bytes`, at most 1): the stack that touched memory not mapped in yet, the faulting
/// address in `fault_addr`, the bytes it stands for in `capture_credit`.
pub const KIND_PAGE_FAULT: u32 = 6;

/// Threads of one crashing process captured besides the faulting one; the rest are counted, not captured.
pub const CRASH_MAX_THREADS: u32 = 128;

/// `SampleHeader::flags`: the tick interrupted user mode (otherwise the thread was in the kernel and the registers
/// are the ones it saved on kernel entry).
pub const FLAG_USER_MODE: u32 = 1 << 0;
/// `SampleHeader::flags`: `kernel_stack_id` is valid.
pub const FLAG_KERNEL_STACK: u32 = 1 << 1;
/// `SampleHeader::flags`: `fault_addr` holds the faulting address (which may be 0: a NULL dereference).
pub const FLAG_FAULT_ADDR: u32 = 1 << 2;
/// `SampleHeader::flags` (`KIND_OFF_CPU`): the thread was preempted (it stays runnable and waits for a CPU), rather
/// than blocking.
pub const FLAG_PREEMPTED: u32 = 1 << 3;
/// `SampleHeader::flags` (`KIND_OFF_CPU`): the thread blocks on the futex of its interpreter's GIL.
pub const FLAG_GIL_WAIT: u32 = 1 << 4;

/// Python frames walked per sample; deeper stacks keep their innermost frames and are marked truncated.
pub const PY_MAX_FRAMES: usize = 128;
/// Threads of one interpreter searched for the sampled thread's PyThreadState.
pub const PY_MAX_THREADS: usize = 256;

/// `SampleHeader::py_flags`: the thread has a PyThreadState (it runs or ran Python code).
pub const PY_THREAD_FOUND: u32 = 1 << 0;
/// `SampleHeader::py_flags`: the thread held the GIL at sample time.
pub const PY_GIL_HELD: u32 = 1 << 1;
/// `SampleHeader::py_flags`: the frame chain had more than `PY_MAX_FRAMES` frames.
pub const PY_FRAMES_TRUNCATED: u32 = 1 << 2;
/// `SampleHeader::py_flags`: a read of the interpreter's memory failed midway.
pub const PY_READ_FAILED: u32 = 1 << 3;

/// `PyFrame::flags`: the last Python frame run by its `_PyEval_EvalFrameDefault` call (3.11's `is_entry`; every
/// frame in 3.8–3.10, where each frame object is evaluated by a call of its own).
pub const PY_FRAME_ENTRY: u32 = 1 << 0;
/// `PyFrame::flags`: (3.12+) a C-stack shim frame that separates two `_PyEval_EvalFrameDefault` calls; it is not
/// a Python function.
pub const PY_FRAME_SHIM: u32 = 1 << 1;

/// One Python frame as the kernel saw it; userspace resolves `code` to a name lazily.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyFrame {
    /// Address of the code object.
    pub code: u64,
    /// Address of the instruction (3.11–3.12 the last executed one, 3.13+ the current one); 3.8–3.10: the eight
    /// bytes at `f_lasti`, whose low 32 bits are the last instruction's offset (bytes up to 3.9, code units in
    /// 3.10; -1 before the first).
    pub instr: u64,
    /// `co_filename ^ co_name` pointers of the code object at sample time: lets userspace tell a reused code
    /// object address from the one that was sampled.
    pub code_key: u64,
    pub flags: u32,
    pub _pad: u32,
}

/// How the GIL holder is found (`PyLayout::gil_mode`).
pub const GIL_UNKNOWN: u32 = 0;
/// 3.11: `*(runtime + gil_holder)` is the holding PyThreadState.
pub const GIL_RUNTIME_TSTATE: u32 = 1;
/// 3.12+: a gil struct at `*(interp + gil_ptr)` (or inline at `interp` when `gil_ptr` is `NO_OFFSET`) with
/// `locked` (int) at `gil_locked` and the last holder at `gil_holder`.
pub const GIL_STRUCT: u32 = 2;

/// An absent field or indirection.
pub const NO_OFFSET: u64 = u64::MAX;

/// `PyLayout::flags`: frames mark entry with the 3.11 `is_entry` byte at `frame_owner`.
pub const PY_LAYOUT_IS_ENTRY_BYTE: u32 = 1 << 0;
/// `PyLayout::flags`: the frame's code pointer is a tagged stack reference (3.14+): clear the low bits.
pub const PY_LAYOUT_TAGGED_CODE: u32 = 1 << 1;
/// `PyLayout::flags` (3.8–3.10): frames are `PyFrameObject`s, each evaluated by its own `_PyEval_EvalFrameDefault`
/// call (every frame is an entry frame), and threads are known by their pthread id (`thread_id` at
/// `tstate_native_thread_id`), which is the thread's TLS base (fs_base on x86_64), not its kernel TID.
pub const PY_LAYOUT_FRAME_OBJECTS: u32 = 1 << 2;

/// Where things are in one CPython process's memory: written by userspace per process, read by the sampler.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PyLayout {
    /// `PY_VERSION_HEX >> 16`, e.g. 0x030b for 3.11.
    pub version: u32,
    pub flags: u32,
    /// Address of `_PyRuntime` in the process.
    pub runtime: u64,
    pub runtime_interpreters_head: u64,
    pub interp_threads_head: u64,
    pub tstate_next: u64,
    pub tstate_native_thread_id: u64,
    /// Offset of the current frame pointer, or of the `cframe` pointer when `cframe_current_frame` is set.
    pub tstate_frame: u64,
    pub cframe_current_frame: u64,
    pub frame_code: u64,
    pub frame_previous: u64,
    pub frame_instr: u64,
    /// 3.11: `is_entry`; 3.12+: `owner` (one byte either way).
    pub frame_owner: u64,
    /// `co_filename`; `co_name` follows it directly in every supported version.
    pub code_filename: u64,
    pub gil_mode: u32,
    pub _pad: u32,
    pub gil_ptr: u64,
    pub gil_locked: u64,
    pub gil_holder: u64,
    /// For crash captures, which copy names while the process still exists: `co_qualname`, `co_firstlineno`,
    /// `co_linetable`, and where a compact ASCII string's characters start.
    pub code_qualname: u64,
    pub code_firstlineno: u64,
    pub code_linetable: u64,
    pub unicode_ascii_data: u64,
}

/// `TARGETS` value flag: also profile processes this one forks.
pub const TARGET_FOLLOW_CHILDREN: u32 = 1 << 0;

/// `LifecycleEvent::kind`: a target forked a process (already added to `TARGETS` by the kernel side).
pub const EVENT_FORK: u32 = 1;
/// `LifecycleEvent::kind`: a process exec'd (a target, or any process when exec reporting is on).
pub const EVENT_EXEC: u32 = 2;
/// `LifecycleEvent::kind`: the last thread of a target exited (already removed from `TARGETS`).
pub const EVENT_EXIT: u32 = 3;
/// `LifecycleEvent::kind`: another process sent a target a fatal signal (e.g. SIGKILL from the OOM killer).
pub const EVENT_SIGNAL: u32 = 4;
/// `LifecycleEvent::kind`: a target is mapping a file executable (loading a library): its maps are stale.
pub const EVENT_MMAP_EXEC: u32 = 5;

/// A process lifecycle change, sent through the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LifecycleEvent {
    pub kind: u32,
    pub pid: u32,
    /// Fork: the parent; signal: the sender; otherwise 0.
    pub parent: u32,
    /// Signal: the signal number; otherwise 0.
    pub signal: u32,
    pub time_ns: u64,
    pub comm: [u8; COMM_LEN],
    /// Exit: the kernel's `exit_code` of the last thread (wait-status encoding: `status << 8`, or the killing
    /// signal with 0x80 for a core dump); `NO_FIELD` when this kernel's BTF does not say where it is.
    pub exit_code: u32,
    pub _pad: u32,
}

/// Where the fields the lifecycle programs read sit in their tracepoint records (read from tracefs formats at
/// start, so a kernel that moves them is handled or refused, never misread).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// Non-zero: send an `EVENT_EXEC` for every exec on the system (needed to match `--name` targets that
    /// start later); otherwise only for targets.
    pub report_all_execs: u32,
    /// `task/task_newtask`: `pid` (the child) and `clone_flags`.
    pub newtask_pid: u32,
    pub newtask_clone_flags: u32,
    /// `sched/sched_process_exit`: `pid` (the exiting thread) and `group_dead` (`NO_FIELD` if absent).
    pub exit_pid: u32,
    pub exit_group_dead: u32,
    /// `signal/signal_generate`: `sig` and `pid` (the receiving thread).
    pub signal_sig: u32,
    pub signal_pid: u32,
}

/// A tracepoint field that this kernel does not have.
pub const NO_FIELD: u32 = u32::MAX;

/// Keys of the `TARGETS` map are tgids; the value says why the process is profiled (reserved for lifecycle
/// tracking; any value means "sample it").
pub type TargetFlags = u32;

/// The user-mode registers needed to start an x86_64 CFI unwind.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserRegs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

/// Fixed part of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SampleHeader {
    pub kind: u32,
    pub cpu: u32,
    /// tgid (the process id userspace knows).
    pub pid: u32,
    /// Kernel thread id.
    pub tid: u32,
    /// `bpf_ktime_get_ns`: CLOCK_MONOTONIC.
    pub time_ns: u64,
    pub regs: UserRegs,
    /// User address of `stack[0]`: the start of the page holding `regs.sp`.
    pub stack_base: u64,
    /// Bytes of `stack` that hold copied memory; the copy stops at the first unreadable page.
    pub stack_len: u32,
    pub flags: u32,
    /// Id in the kernel stack-trace map when `FLAG_KERNEL_STACK` is set.
    pub kernel_stack_id: i64,
    pub comm: [u8; COMM_LEN],
    /// Valid entries of `SampleRecord::py_frames`, innermost first.
    pub py_frame_count: u32,
    pub py_flags: u32,
    /// Crash samples: the signal, its `si_code` and (SIGSEGV, SIGBUS, SIGILL, SIGFPE) the fault address.
    pub signal: u32,
    pub si_code: i32,
    pub fault_addr: u64,
    /// The system call the thread was in when it last entered the kernel (its saved `orig_rax`), or -1 when it
    /// entered from running user code (an interrupt or a fault). For `KIND_CRASH_THREAD`: what it was waiting in,
    /// or -1 when it was on a CPU (or waiting for one).
    pub syscall: i64,
    /// `KIND_OFF_CPU`: the first argument of that system call (its saved `rdi`): for a futex, the address waited on.
    pub syscall_arg0: u64,
    /// `KIND_OFF_CPU`: the task's state as it left the CPU (`TASK_INTERRUPTIBLE` 1, `TASK_UNINTERRUPTIBLE` 2, ...).
    pub task_state: u32,
    /// How many threads of its process were blocked waiting for the GIL at that moment (only counted while off-CPU
    /// sampling runs); it means something only when this thread holds the GIL (`PY_GIL_HELD`).
    pub gil_waiters: u32,
    /// `KIND_OFF_CPU`: the thread's capture credit when this leaving was captured (see `OffCpuThread::credit_ns`):
    /// it was captured with probability credit / `SamplerConfig::off_cpu_gap_ns`, at most 1, and userspace weighs
    /// the period by the inverse (nanoseconds). `KIND_PAGE_FAULT`: the bytes this capture stands for: the fault's size
    /// divided by the probability it had of being captured.
    pub capture_credit: u64,
}

/// A thread whose leaving its CPU was captured runs again: how long it was off, sent through `SAMPLES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffCpuEnd {
    pub kind: u32,
    pub pid: u32,
    pub tid: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns` when it was switched back in.
    pub time_ns: u64,
    /// How long this period off the CPU lasted.
    pub off_cpu_ns: u64,
    /// Every period off the CPU of this thread so far, captured or not: what the captured ones stand for.
    pub total_off_cpu_ns: u64,
    /// The part of `total_off_cpu_ns` spent waiting for the GIL, which captured GIL waits stand for.
    pub total_gil_wait_ns: u64,
}

/// How many gaps of capture credit a thread can save up: a burst of switches after a quiet stretch is captured
/// whole up to this many.
pub const OFF_CPU_CREDIT_GAPS: u64 = 4;

/// `OffCpuThread::flags`: the current period off the CPU was captured (an `OffCpuEnd` follows it).
pub const OFF_CPU_CAPTURED: u32 = 1 << 0;
/// `OffCpuThread::flags`: the current period is a wait for the GIL (counted in `PyGil::waiters`).
pub const OFF_CPU_GIL_WAIT: u32 = 1 << 1;

/// A target thread's off-CPU bookkeeping in the kernel (`OFF_CPU_THREADS`, keyed by TID).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OffCpuThread {
    /// When it left the CPU (0: it is running).
    pub since_ns: u64,
    /// Sum of its periods off the CPU so far.
    pub total_ns: u64,
    /// The part of `total_ns` spent waiting for the GIL.
    pub gil_wait_ns: u64,
    /// When it last left its CPU.
    pub last_out_ns: u64,
    /// Capture credit: grows by the time between two leavings (up to `OFF_CPU_CREDIT_GAPS` gaps), and a capture
    /// spends one gap of it. A leaving is captured with probability credit / gap, at most 1: a thread that
    /// switches less often than once per gap has every period captured, a busier one about one per gap.
    pub credit_ns: u64,
    pub tgid: u32,
    pub flags: u32,
}

/// Where a Python process's GIL is (`PY_GIL`, keyed by tgid): a futex wait inside `start..end` is a GIL wait.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PyGil {
    pub start: u64,
    pub end: u64,
    /// Threads of the process blocked on the GIL now (added to atomically by the kernel; may briefly read as a
    /// wrapped negative while a decrement races a reset).
    pub waiters: u32,
    pub _pad: u32,
}

/// What the page-fault program hands the CPU sampler (per CPU, `FAULT_HANDOVER`) with a fault it captures: the
/// sampler adds these into its record without a branch (all zero for a timer tick), so the verifier checks its
/// capture once for both.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultHandover {
    /// Added to `KIND_CPU`: `KIND_PAGE_FAULT - KIND_CPU` for a fault.
    pub kind_offset: u32,
    /// Or'ed into the flags: `FLAG_FAULT_ADDR` for a fault.
    pub flags: u32,
    pub fault_addr: u64,
    /// The bytes the capture stands for (`SampleHeader::capture_credit`).
    pub capture_credit: u64,
}

/// One sample as it sits in the ring buffer: header, Python frames, then the copied user stack.
#[repr(C)]
pub struct SampleRecord {
    pub header: SampleHeader,
    pub py_frames: [PyFrame; PY_MAX_FRAMES],
    pub stack: [u8; STACK_COPY_MAX],
}

/// Python frames whose names a crash record carries (innermost first).
pub const CRASH_CODE_COPIES: usize = 16;
pub const CRASH_QUALNAME_LEN: usize = 64;
pub const CRASH_FILENAME_LEN: usize = 128;
pub const CRASH_LINETABLE_LEN: usize = 256;

/// A code object's names and line table, copied at crash time: the crashed process is gone by the time
/// userspace could read them.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PyCodeCopy {
    pub code: u64,
    pub first_line: u32,
    /// Bytes of `linetable` that hold the table (0: not copied).
    pub linetable_len: u32,
    /// NUL-terminated ASCII (empty: not copied).
    pub qualname: [u8; CRASH_QUALNAME_LEN],
    pub filename: [u8; CRASH_FILENAME_LEN],
    pub linetable: [u8; CRASH_LINETABLE_LEN],
}

/// The faulting thread's user registers, in the x86_64 kernel's `struct pt_regs` order, so the crash probe copies
/// them with one fixed-size read of the saved `pt_regs` (the layout is the kernel's user ABI for ptrace too, and
/// the same on every supported kernel: FRED (6.9+) only renamed bits inside `cs`/`ss`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    /// The system call number on syscall entry, -1 (all ones) for a fault.
    pub orig_rax: u64,
    pub rip: u64,
    pub cs: u64,
    pub eflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Bytes of code copied at the faulting `rip`: the longest x86 instruction is 15 bytes.
pub const CRASH_CODE_LEN: usize = 16;

/// A crash as it sits in the crash ring buffer: a sample plus the names of its innermost Python frames, the
/// thread's registers and the code at its instruction pointer (what the fault hit, and by which instruction).
#[repr(C)]
pub struct CrashRecord {
    pub sample: SampleRecord,
    pub codes: [PyCodeCopy; CRASH_CODE_COPIES],
    /// All user registers at the signal (zero if the kernel's copy could not be read: `regs_len` 0).
    pub regs: CrashRegs,
    /// The instruction bytes at `regs.rip`; `code_len` of them are valid (0: unreadable, e.g. a jump to NULL).
    pub code: [u8; CRASH_CODE_LEN],
    pub code_len: u32,
    /// Bytes of `regs` copied: `size_of::<CrashRegs>()` or 0.
    pub regs_len: u32,
}

/// A process whose thread faulted: the other threads are captured as the kernel stops them, for a short while.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CrashingProcess {
    /// `bpf_ktime_get_ns` of the fault.
    pub time_ns: u64,
    /// The faulting thread (its own record is the crash record).
    pub tid: u32,
    /// Other threads captured so far.
    pub captured: u32,
    /// Other threads not captured: over `CRASH_MAX_THREADS`, or no room in the crash ring.
    pub missed: u32,
    pub _reserved: u32,
}

/// Settings userspace writes into the kernel programs' read-only data before loading them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SamplerConfig {
    /// Non-zero: also record the kernel stack of each sample.
    pub kernel_stacks: u32,
    pub _reserved: u32,
    /// Mean bytes of a target's memory growth per captured page fault (0: the memory profile is off).
    pub memory_period_bytes: u64,
    /// A thread's off-CPU periods are captured about once per this many nanoseconds at most (0: off-CPU sampling
    /// is off).
    pub off_cpu_gap_ns: u64,
}

/// Where fields of this kernel's `task_struct` sit, found by userspace in the kernel's BTF and written before
/// load (the layout differs per build and config, and these are not in any tracepoint record). `NO_FIELD` when
/// absent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskOffsets {
    /// `task_struct.mm` (the thread's address space; NULL for kernel threads).
    pub mm: u32,
    /// In `mm_struct`, the 64-bit page counts of resident file, anonymous and shared-memory pages (`rss_stat`'s
    /// `MM_FILEPAGES`, `MM_ANONPAGES`, `MM_SHMEMPAGES`: atomics before 6.2, percpu counters' shared part since).
    pub rss_pages: [u32; 3],
    /// `task_struct.exit_code` (int).
    pub exit_code: u32,
    /// `task_struct.thread.fsbase` (unsigned long): the thread's TLS base, which glibc's `pthread_self()` returns.
    pub fsbase: u32,
    /// `task_struct.pid` (int): the kernel thread id.
    pub pid: u32,
    /// `task_struct.__state` (5.14+) or `.state`: the scheduler state.
    pub state: u32,
}

impl TaskOffsets {
    pub const UNKNOWN: Self = Self {
        mm: NO_FIELD,
        rss_pages: [NO_FIELD; 3],
        exit_code: NO_FIELD,
        fsbase: NO_FIELD,
        pid: NO_FIELD,
        state: NO_FIELD,
    };
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] integers and arrays of integers, valid for any bit pattern.
    unsafe impl aya::Pod for super::SamplerConfig {}
    unsafe impl aya::Pod for super::PyLayout {}
    unsafe impl aya::Pod for super::LifecycleConfig {}
    unsafe impl aya::Pod for super::TaskOffsets {}
    unsafe impl aya::Pod for super::CrashingProcess {}
    unsafe impl aya::Pod for super::OffCpuThread {}
    unsafe impl aya::Pod for super::OffCpuEnd {}
    unsafe impl aya::Pod for super::PyGil {}
}
