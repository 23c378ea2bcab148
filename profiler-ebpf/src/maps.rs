//! Maps shared by the kernel programs; userspace finds them by these names.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf, StackTrace},
};
use profiler_common::TargetFlags;

/// Processes (tgids) to sample; userspace keeps it current.
#[map]
pub static TARGETS: HashMap<u32, TargetFlags> = HashMap::with_max_entries(16384, 0);

/// Sample records to userspace. 16 MiB holds ~480 full records: half a second of 8 busy threads at 100 Hz, far
/// longer than userspace takes to drain it.
#[map]
pub static SAMPLES: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Samples that could not be sent (ring buffer full), counted per CPU so userspace can report them.
#[map]
pub static LOST_SAMPLES: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Kernel stacks, referenced from records by id when kernel stacks are enabled.
#[map]
pub static KERNEL_STACKS: StackTrace = StackTrace::with_max_entries(16384, 0);
