//! The fuzz targets in fuzz/, two ways: `replay` (part of `cargo xtask test`) runs every committed input once,
//! and `fuzz` (`cargo xtask fuzz`) explores for new ones.
//!
//! A test stage must pass or fail the same way every time: a fuzzer that runs for a fixed time finds a bug in one
//! run and not in the next, so a submission would be rejected for a bug it did not touch, or land because the
//! fuzzer looked elsewhere. So the test stage only replays what is committed: the corpus (fuzz/corpus/TARGET/,
//! inputs that reach the parsers' branches) and every past finding (fuzz/regressions/TARGET/), through the same
//! entry points (profiler::fuzzing) with overflow checks on. Exploring is a separate task with its own budget;
//! what it finds is fixed, then its input goes to fuzz/regressions/ and is replayed from then on.
use std::{fs, path::Path, process::Command};

use anyhow::{bail, Context as _, Result};

use crate::{cmd, Workspace};

/// The targets in fuzz/Cargo.toml.
pub const TARGETS: [&str; 9] =
    ["maps", "elf", "line_tables", "code_copy", "pprof", "cfa", "python_symbols", "eval_ranges", "thread_names"];

/// Small, real ELF files for the `elf` target's seeds: glibc's compatibility stubs, ~14 KiB each.
const ELF_SEEDS: [&str; 2] = ["/usr/lib/x86_64-linux-gnu/libdl.so.2", "/usr/lib/x86_64-linux-gnu/librt.so.1"];

/// Replays the committed corpus and the past findings of every target (`profiler::fuzzing`'s unit tests) in
/// the `fuzz-replay` profile: overflow checks and debug assertions on, as in the fuzzers' own builds.
pub fn replay(ws: &Workspace) -> Result<()> {
    let mut test = ws.cargo();
    test.args(["test", "--profile", "fuzz-replay", "--package", "profiler-user", "--lib", "--", "fuzzing::"]);
    cmd::run(&mut test).context("a committed fuzz input fails: see the test output above")
}

pub struct Options {
    pub seconds_each: u32,
    /// Empty: all of them.
    pub targets: Vec<String>,
    pub merge: bool,
}

/// Runs each target for `seconds_each`, from the committed corpus, the seeds and the past findings; new inputs
/// go to target/fuzz-corpus/TARGET/ (the working tree stays clean) and, with `merge`, the ones that add
/// coverage are merged into fuzz/corpus/TARGET/.
pub fn fuzz(ws: &Workspace, options: &Options) -> Result<()> {
    for target in &options.targets {
        if !TARGETS.contains(&target.as_str()) {
            bail!("no fuzz target named {target:?}: the targets are {}", TARGETS.join(", "));
        }
    }
    let fuzz_dir = ws.root.join("fuzz");
    let seeds = ws.target_dir.join("fuzz-seeds");
    write_seeds(&seeds)?;
    // Every target runs even after one fails: one finding must not hide the others.
    let mut failed = Vec::new();
    for target in TARGETS.into_iter().filter(|t| options.targets.is_empty() || options.targets.iter().any(|o| o == t)) {
        let working = ws.target_dir.join("fuzz-corpus").join(target);
        fs::create_dir_all(&working).with_context(|| format!("creating {}", working.display()))?;
        let committed = fuzz_dir.join("corpus").join(target);
        let mut run = cargo_fuzz(ws, target);
        // libFuzzer writes what it finds into the first directory only.
        run.arg(&working);
        for extra in [committed.clone(), seeds.join(target), fuzz_dir.join("regressions").join(target)] {
            if extra.is_dir() {
                run.arg(extra);
            }
        }
        run.arg("--").args([
            &format!("-max_total_time={}", options.seconds_each),
            "-timeout=10",
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
        ]);
        if let Err(err) = cmd::run(&mut run) {
            eprintln!("error: {err:#}");
            failed.push(target);
            continue;
        }
        if options.merge {
            fs::create_dir_all(&committed).with_context(|| format!("creating {}", committed.display()))?;
            let mut merge = cargo_fuzz(ws, target);
            merge.arg(&committed).arg(&working).args(["--", "-merge=1"]);
            cmd::run(&mut merge)?;
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzz target(s) {} failed: the inputs are in fuzz/artifacts/TARGET/; fix the parser, then move the \
             input to fuzz/regressions/TARGET/",
            failed.join(", ")
        );
    }
    Ok(())
}

/// `cargo fuzz run TARGET` through rustup's nightly (sanitizers and -Z flags need it), with overflow checks on:
/// an overflowing offset in a parser is a wrong answer even where it cannot crash.
fn cargo_fuzz(ws: &Workspace, target: &str) -> Command {
    let mut run = Command::new("cargo");
    run.env("RUSTUP_TOOLCHAIN", "nightly")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .current_dir(&ws.root)
        .args(["fuzz", "run", "--fuzz-dir"])
        .arg(ws.root.join("fuzz"))
        .arg("--debug-assertions")
        .arg("--target-dir")
        .arg(ws.target_dir.join("fuzz"))
        .arg(target);
    run
}

/// Seeds this machine has: its own /proc maps, small system libraries.
fn write_seeds(seeds: &Path) -> Result<()> {
    let maps = seeds.join("maps");
    fs::create_dir_all(&maps).with_context(|| format!("creating {}", maps.display()))?;
    let own = fs::read("/proc/self/maps").context("reading /proc/self/maps")?;
    fs::write(maps.join("self"), own).context("writing the maps seed")?;
    let elf = seeds.join("elf");
    fs::create_dir_all(&elf).with_context(|| format!("creating {}", elf.display()))?;
    for path in ELF_SEEDS.iter().map(Path::new).filter(|p| p.is_file()) {
        let name = path.file_name().expect("a file name");
        fs::copy(path, elf.join(name)).with_context(|| format!("copying {}", path.display()))?;
    }
    Ok(())
}
