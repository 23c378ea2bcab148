//! Integration tests of `profiler record` against real processes: one test binary, helpers in tests/support/.
//!
//! The tests that profile need root and take `exclusive_cpu()`, so they run one at a time whatever
//! `--test-threads` says: the shares and rates they measure depend on the CPU the workloads get.
mod browser;
mod crash;
mod debuginfod;
mod demo_crash;
mod deploy;
mod dump;
mod endpoints;
mod errors;
mod hostile;
mod interrupt;
mod lifecycle;
mod memory;
mod native;
mod packaging;
mod python;
mod rate;
mod soak;
mod speedscope;
mod top;
mod unwind;
mod upload;
mod waits;
