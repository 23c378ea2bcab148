//! What the Python tests ran, for the README's version matrix: each test that checks every interpreter of
//! [`python_interpreters`] says, once it has passed, which check it was ([`passed`]); a line per interpreter goes
//! to the file named by `PROFILER_PYTHON_MATRIX` (when set: `cargo xtask test` sets it, empties the file first, and
//! turns it into the README's table once every test passed). A test run by hand writes nothing.
//!
//! A line is tab-separated: the check, the interpreter's name, what the cell says (`✓`, or a limit such as `not
//! read`), its full version, its lxml and numpy versions, and where it came from. The interpreter is asked for its
//! versions once per test binary.
use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    sync::{Mutex, OnceLock},
};

use crate::python::{python_interpreters, Interpreter};

/// The variable naming the file the lines go to.
pub const MATRIX_VAR: &str = "PROFILER_PYTHON_MATRIX";

/// The checks of the matrix, as the README's columns name them, in its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Each function's share of the CPU against the workload's own clock (python::python_split_…).
    Shares,
    /// Line numbers against the source (python::python_line_numbers_…).
    Lines,
    /// Threads and the `gil` label (python::python_threads_and_gil_labels).
    ThreadsGil,
    /// `threading`'s thread names (python::python_threads_go_by_…).
    ThreadNames,
    /// Off-CPU time and why each thread waited (waits::off_cpu_time_…).
    Waits,
    /// The Python frames of a crash report (crash_versions).
    Crash,
    /// `profiler dump`'s threads matched to kernel threads (dump::every_versions_…).
    Dump,
    /// The asyncio task tree in `profiler dump` (dump::asyncio_tasks_…).
    Asyncio,
}

impl Check {
    /// The column's key in the file (no spaces).
    pub fn key(self) -> &'static str {
        match self {
            Check::Shares => "shares",
            Check::Lines => "lines",
            Check::ThreadsGil => "threads-gil",
            Check::ThreadNames => "thread-names",
            Check::Waits => "off-cpu-waits",
            Check::Crash => "crash",
            Check::Dump => "dump",
            Check::Asyncio => "asyncio",
        }
    }
}

/// `check` passed on every interpreter the tests cover: call it after the test's last assertion.
pub fn all_passed(check: Check) {
    for interpreter in python_interpreters() {
        passed(check, interpreter, "✓");
    }
}

/// `check` passed on `interpreter`, with `cell` saying how (`✓`, or what was checked instead: `not read`).
pub fn passed(check: Check, interpreter: &Interpreter, cell: &str) {
    let Some(path) = std::env::var_os(MATRIX_VAR) else { return };
    let line = format!("{}\t{}\t{cell}\t{}\n", check.key(), interpreter.name, describe(interpreter));
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|err| panic!("opening {} ({MATRIX_VAR}): {err}", path.to_string_lossy()));
    // One write of a short line to a file opened for appending: lines of tests running at once do not mix.
    file.write_all(line.as_bytes())
        .unwrap_or_else(|err| panic!("writing {} ({MATRIX_VAR}): {err}", path.to_string_lossy()));
}

/// `VERSION\tLXML\tNUMPY\tORIGIN` of `interpreter`, asked once.
fn describe(interpreter: &Interpreter) -> String {
    static KNOWN: OnceLock<Mutex<BTreeMap<String, String>>> = OnceLock::new();
    let known = KNOWN.get_or_init(Default::default);
    if let Some(description) = known.lock().expect("the versions asked").get(&interpreter.name) {
        return description.clone();
    }
    let versions = interpreter.versions();
    let description = format!("{}\t{}", versions.replace(' ', "\t"), interpreter.origin);
    known.lock().expect("the versions asked").insert(interpreter.name.clone(), description.clone());
    description
}
