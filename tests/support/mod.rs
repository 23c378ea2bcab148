//! The root of the `profiler-tests` library: the helpers the integration tests (tests/integration/) share, one
//! module per job, and re-exported here so that a test names them `profiler_tests::NAME`.
//!
//! Everything here panics on failure, with a message that says what to look at: these are test helpers.

/// A `profiler run` agent in the background, and how it stopped.
pub mod agent;
/// The Alloy configuration checker (syntax and the schemas of the components the deploy config uses).
pub mod alloy;
/// Headless Chromium driven through the DevTools protocol: a page opened, clicked and read as a person would.
pub mod browser;
/// The crash workloads and a workload process expected to crash.
pub mod crash;
/// The crash reports the profiler writes.
pub mod crash_report;
/// What `cargo xtask dist` made: the static binary, the Debian package, the OCI image.
pub mod dist;
/// `go tool pprof`, the reference reader every pprof the tests read must open in.
pub mod go_pprof;
/// The lifecycle workloads, the demo app under uvicorn, and readers for what they wrote.
pub mod lifecycle;
/// A booted systemd container (systemd-nspawn) to install the Debian package into.
pub mod machine;
/// What the Python tests ran, for the README's version matrix.
pub mod matrix;
mod output;
mod process;
/// Python interpreters made ready once, and readers for the profiler's Python frames.
pub mod python;
/// A loopback stand-in for Pyroscope.
pub mod receiver;
mod recorder;
mod run;
mod scratch;
mod setup;
/// speedscope's web app, the pprof viewer, from its npm package: fetched once, checked, cached.
pub mod speedscope;
/// A terminal (tmux) a test types into and reads, for `profiler top`.
pub mod terminal;
mod totals;
mod workloads;

pub use output::{count_where, is_truncation, read_pprof, Folded, Summary};
pub use process::{
    assert_sampled, collect_output, send_signal, steal_time, unused_pid, wait_with_limit, CpuTime, Process,
};
pub use recorder::{Recorder, SETTLE};
pub use run::{run, wait_for_sigint_handler, Run};
pub use scratch::{scratch_root, TestDir};
pub use setup::{exclusive_cpu, profiler, profiler_bin, require_root, workspace_root};
pub use totals::{read_totals, wait_for_totals};
pub use workloads::{
    c_function_lines, compile_c, gnu_build_id, run_to_success, start_native_burn, workloads, Workloads,
    NATIVE_BURN_THREADS,
};

// The module names before tests/support/, for branches written against them; to be removed once those are merged.
// `crash_support::Recorder` is left out on purpose: it became `Recorder::start_recording`, and `finish` takes a
// `what`, so code written for the old one fails to compile rather than silently recording with less settling.
#[doc(hidden)]
pub use agent as agent_support;
#[doc(hidden)]
pub use lifecycle as lifecycle_support;
#[doc(hidden)]
pub use python as python_support;

/// The old `crash_support` module: the crash workloads and the crash reports, and `SETTLE`.
#[doc(hidden)]
pub mod crash_support {
    pub use crate::{crash::*, crash_report::*, SETTLE};
}
