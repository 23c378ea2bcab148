//! Kernel sampler → typed sample events.
//!
//! `preflight` says what the machine or the user lacks before anything is loaded, `loader` loads and attaches the
//! embedded kernel programs, `event` turns ring-buffer bytes into typed samples,
//! `map_changes` takes the kernel's note of code mappings for whoever re-reads a process's maps.
pub(crate) mod btf;
pub(crate) mod event;
pub(crate) mod loader;
pub(crate) mod map_changes;
pub(crate) mod preflight;
pub(crate) mod tracefs;

pub(crate) use event::{
    monotonic_ns, signal_name, CpuSample, CrashCpuState, CrashSignal, ExitStatus, InProgress, Lifecycle, OffCpuEnd,
    OffCpuStart, Record, TimedLifecycle,
};
pub(crate) use loader::{Sampler, SamplerOptions};
