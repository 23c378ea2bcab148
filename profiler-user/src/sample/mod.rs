//! Kernel sampler → typed sample events.
//!
//! `preflight` says what the machine or the user lacks before anything is loaded, `loader` loads and attaches the
//! embedded kernel programs, `event` turns ring-buffer bytes into typed samples.
pub mod btf;
pub mod event;
pub mod loader;
pub mod preflight;
pub mod tracefs;

pub use event::{CpuSample, CrashSignal, ExitStatus, Lifecycle, TimedLifecycle, monotonic_ns, signal_name};
pub use loader::{Sampler, SamplerOptions};
