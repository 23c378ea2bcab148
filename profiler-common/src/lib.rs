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

/// `SampleHeader::flags`: the tick interrupted user mode (otherwise the thread was in the kernel and the registers
/// are the ones it saved on kernel entry).
pub const FLAG_USER_MODE: u32 = 1 << 0;
/// `SampleHeader::flags`: `kernel_stack_id` is valid.
pub const FLAG_KERNEL_STACK: u32 = 1 << 1;

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
}

/// One sample as it sits in the ring buffer: header, then the copied user stack.
#[repr(C)]
pub struct SampleRecord {
    pub header: SampleHeader,
    pub stack: [u8; STACK_COPY_MAX],
}

/// Settings userspace writes into the kernel programs' read-only data before loading them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SamplerConfig {
    /// Non-zero: also record the kernel stack of each sample.
    pub kernel_stacks: u32,
    pub _reserved: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] integers and arrays of integers, valid for any bit pattern.
    unsafe impl aya::Pod for super::SamplerConfig {}
}
