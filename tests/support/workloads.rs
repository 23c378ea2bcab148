//! The C workloads (native-burn and tests/workloads/one-busy-thread.c), built once per run, and facts about
//! workload binaries and sources read independently of the profiler (build-ids, a C function's lines).
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use crate::{scratch_root, workspace_root, Process};

/// The C workloads, built once per test run.
pub struct Workloads {
    /// examples/native-burn: three busy threads with a CPU split known by construction.
    pub native_burn: PathBuf,
    /// Its shared library, next to it.
    pub libburnlib: PathBuf,
    /// tests/workloads/one-busy-thread.c: a single thread that only spins.
    pub one_busy_thread: PathBuf,
}

pub fn workloads() -> &'static Workloads {
    static BUILT: OnceLock<Workloads> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = workspace_root();
        let out = scratch_root().join("workloads");
        run_to_success(Command::new("bash").arg(root.join("examples/native-burn/build.sh")).arg(&out));
        let one_busy_thread = out.join("one-busy-thread");
        compile_c(&["-fomit-frame-pointer"], &root.join("tests/workloads/one-busy-thread.c"), &one_busy_thread);
        // Canonical, as /proc/PID/maps and so the profiler's mappings name them.
        let canonical = |path: PathBuf| {
            fs::canonicalize(&path).unwrap_or_else(|err| panic!("the build left no {}: {err}", path.display()))
        };
        Workloads {
            native_burn: canonical(out.join("native-burn")),
            libburnlib: canonical(out.join("libburnlib.so")),
            one_busy_thread: canonical(one_busy_thread),
        }
    })
}

/// Compiles a C workload with `gcc -O2 -g` (or `$CC`), a build-id, and `flags`; panics with the compiler's output.
pub fn compile_c(flags: &[&str], source: &Path, output: &Path) {
    let mut cmd = Command::new(std::env::var_os("CC").unwrap_or_else(|| "gcc".into()));
    cmd.args(["-O2", "-g", "-Wall", "-Wextra", "-Wl,--build-id"]).args(flags).arg("-o").arg(output).arg(source);
    run_to_success(&mut cmd);
}

/// Runs `cmd` to completion; panics with its output unless it succeeds.
pub fn run_to_success(cmd: &mut Command) {
    let output = cmd.output().unwrap_or_else(|err| panic!("could not start {cmd:?}: {err}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
/// Starts native-burn, with a lifetime after which it ends by itself even if this test binary is killed before
/// its guard can kill it, and waits until its three threads are named.
pub fn start_native_burn(lifetime: Duration) -> Process {
    let mut process = Process::start(Command::new(&workloads().native_burn).arg(lifetime.as_secs().max(1).to_string()));
    process.wait_for_threads(&NATIVE_BURN_THREADS);
    process
}

/// native-burn's thread names: the main thread keeps the process's name.
pub const NATIVE_BURN_THREADS: [&str; 3] = ["native-burn", "burn-a", "burn-b"];
/// The GNU build-id of an ELF file as lowercase hex, read by binutils' `readelf`, independently of the profiler.
pub fn gnu_build_id(elf: &Path) -> String {
    let output = Command::new("readelf")
        .arg("-n")
        .arg(elf)
        .output()
        .unwrap_or_else(|err| panic!("could not run readelf (binutils): {err}"));
    assert!(
        output.status.success(),
        "readelf -n {} failed: {}",
        elf.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.trim().strip_prefix("Build ID:"))
        .map(|id| id.trim().to_ascii_lowercase())
        .unwrap_or_else(|| panic!("{} has no GNU build-id note:\n{text}", elf.display()))
}

/// The 1-based line range of the C function `name` in `source`: from the line of its definition to its closing
/// brace at column 0.
pub fn c_function_lines(source: &Path, name: &str) -> std::ops::RangeInclusive<i64> {
    let text = fs::read_to_string(source).unwrap_or_else(|err| panic!("reading {}: {err}", source.display()));
    let lines: Vec<&str> = text.lines().collect();
    let head = format!(" {name}(");
    let start = lines
        .iter()
        .position(|line| line.contains(&head) && !line.trim_end().ends_with(';'))
        .unwrap_or_else(|| panic!("no definition of {name} in {}", source.display()));
    let end = if lines[start].trim_end().ends_with('}') {
        start
    } else {
        start + lines[start..].iter().position(|line| *line == "}").unwrap_or_else(|| panic!("{name} never ends"))
    };
    (start as i64 + 1)..=(end as i64 + 1)
}
