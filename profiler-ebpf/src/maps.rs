//! Maps shared by the kernel programs; userspace finds them by these names.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf, StackTrace},
};
use profiler_common::{CrashingProcess, FaultHandover, OffCpuThread, PyGil, PyLayout, TargetFlags};

/// Processes (tgids) to sample; userspace keeps it current.
#[map]
pub static TARGETS: HashMap<u32, TargetFlags> = HashMap::with_max_entries(16384, 0);

/// Sample records to userspace. Userspace sets the size at load (`sample::loader::samples_ring_bytes`): about half
/// a second of records from every CPU at the sampling rate.
#[map]
pub static SAMPLES: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Samples that could not be sent (ring buffer full), counted per CPU so userspace can report them.
#[map]
pub static LOST_SAMPLES: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Kernel stacks, referenced from records by id when kernel stacks are enabled.
#[map]
pub static KERNEL_STACKS: StackTrace = StackTrace::with_max_entries(16384, 0);

/// Per-process CPython layout (tgid → where the interpreter keeps its threads and frames); written by userspace
/// when it recognizes a Python process.
#[map]
pub static PY_PROCESSES: HashMap<u32, PyLayout> = HashMap::with_max_entries(4096, 0);

/// Kernel thread id → its PyThreadState, so the interpreter's thread list is walked once per thread, not per
/// sample. Entries are checked against the thread state's own native thread id before use.
#[map]
pub static PY_THREADS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(65536, 0);

/// Process lifecycle events (fork, exec, exit) to userspace: few and small, so a small buffer.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Lifecycle events that could not be sent (ring buffer full); userspace rescans /proc when it sees this grow.
#[map]
pub static LOST_EVENTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Size of `CRASHES`: the faulting thread's record and those of about ninety other threads of the process at once
/// (userspace drains it as they come).
pub const CRASHES_BYTES: u64 = 4 * 1024 * 1024;

/// Crash samples: their own buffer, so a backlog of CPU samples can never cost us the crash.
#[map]
pub static CRASHES: RingBuf = RingBuf::with_byte_size(CRASHES_BYTES as u32, 0);

/// Processes with a faulting thread (tgid → when, which thread, how many others captured); written by the crash
/// probe, read by `crash_threads`, deleted by userspace when the process is gone.
#[map]
pub static CRASHING: HashMap<u32, CrashingProcess> = HashMap::with_max_entries(1024, 0);

/// Threads of targets inside an executable file mmap (entered, not yet returned), with the time they entered it.
#[map]
pub static PENDING_MMAPS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4096, 0);

/// Target processes with code mappings userspace has not taken yet (tgid → when the latest one's mmap returned).
/// The first mapping sends an event and creates the entry; the ones after it only move the time, until userspace
/// takes the entry (lookup-and-delete, atomic against these updates) as it handles the event. A process mapping
/// code in a loop so sends one event per look of userspace instead of one per mmap.
#[map]
pub static UNTAKEN_MAP_CHANGES: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16384, 0);

/// How many threads of each target process are inside an executable file mmap (tgid → count): maps read while
/// one is may already show its mapping, whose event is still to come.
#[map]
pub static CODE_MMAPS_IN_FLIGHT: LruHashMap<u32, u32> = LruHashMap::with_max_entries(16384, 0);

/// Target threads' off-CPU bookkeeping (TID → when it left, its total, its next capture): written at every switch of
/// a target thread while off-CPU sampling runs; an exiting thread's entry is removed at its last switch.
#[map]
pub static OFF_CPU_THREADS: LruHashMap<u32, OffCpuThread> = LruHashMap::with_max_entries(65536, 0);

/// Where each Python process's GIL is and how many of its threads wait for it (tgid → range, waiters); written by
/// userspace once it located the GIL.
#[map]
pub static PY_GIL: HashMap<u32, PyGil> = HashMap::with_max_entries(4096, 0);

/// Each target process's resident pages after its last page fault (tgid → pages; see memory.rs): written at every
/// page fault of a target while the memory profile runs, removed by userspace at the process's exit and by the
/// kernel at its exec (and by the LRU if both miss one).
#[map]
pub static RESIDENT_PAGES: LruHashMap<u32, i64> = LruHashMap::with_max_entries(16384, 0);

/// The CPU sampler (index 0, set by userspace), which the page-fault program hands a captured fault over to (a tail
/// call: the capture is verified once, in the sampler).
#[map]
pub static CPU_SAMPLER: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Per CPU: what the page-fault program knows of the fault it hands over (see `FaultHandover`); the sampler reads
/// and clears it. Nothing runs between the two on a CPU: perf programs do not nest.
#[map]
pub static FAULT_HANDOVER: PerCpuArray<FaultHandover> = PerCpuArray::with_max_entries(1, 0);
