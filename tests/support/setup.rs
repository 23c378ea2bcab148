//! Where every test starts: the workspace and the `profiler` binary under test, a `profiler` command with nothing
//! inherited, the root check, and the CPU lock that keeps profiling tests from running at the same time.
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, MutexGuard},
    thread,
};

/// The workspace root, from this crate's location at compile time.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The `profiler` binary under test: `PROFILER_BIN` (set by `cargo xtask test`), else the workspace's release
/// build.
pub fn profiler_bin() -> PathBuf {
    let (path, from) = match std::env::var_os("PROFILER_BIN") {
        Some(path) => (PathBuf::from(path), "PROFILER_BIN"),
        None => (workspace_root().join("target/release/profiler"), "the default location (PROFILER_BIN is unset)"),
    };
    assert!(
        path.is_file(),
        "no profiler binary at {} ({from}): run the tests with `cargo xtask test`, or build it first with \
         `cargo build --release -p profiler-user`",
        path.display()
    );
    path
}

/// A `profiler` command with nothing inherited that could change its behaviour between machines.
pub fn profiler() -> Command {
    let mut cmd = Command::new(profiler_bin());
    // Run outside the source tree: the default crash directory (./crashes) is relative to the working directory,
    // and a test's killed workload there would leave reports in the checkout.
    cmd.env_remove("RUST_LOG").env_remove("RUST_BACKTRACE").current_dir(std::env::temp_dir());
    cmd
}

/// True when the test can load eBPF programs. Otherwise it says why and returns false so the test can return early,
/// except under `CI=true`, where a skipped test would hide a broken setup, so it fails instead.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let test = thread::current().name().unwrap_or("this test").to_owned();
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("{test} needs root (it loads eBPF programs), and CI=true does not allow skipping it: run as root");
    }
    eprintln!("skipping {test}: it needs root (it loads eBPF programs); run `cargo xtask test` as root");
    false
}

/// Held by every test that profiles. The machine has few cores: a second busy workload or profiler running at the
/// same time would take CPU from the measured threads and change what the tests measure. A test that failed while
/// holding it does not stop the others (the poison is ignored: the lock guards no data).
pub fn exclusive_cpu() -> MutexGuard<'static, ()> {
    static CPU: Mutex<()> = Mutex::new(());
    CPU.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
