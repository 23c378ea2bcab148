//! Runs every fuzz target in fuzz/ for a bounded time (part of `cargo xtask test`), each from seeds this machine
//! has (its own /proc maps, a small system library), so that a short run starts from well-formed input and spends
//! its time on the malformed variants.
//!
//! A crash, a failed assertion in profiler::fuzzing or an overflow (the targets build with overflow checks) fails
//! the task; libFuzzer leaves the input in fuzz/artifacts/TARGET/, and `cargo +nightly fuzz run TARGET FILE`
//! replays it. Once fixed, the input goes to fuzz/regressions/TARGET/, which every run replays first.
use std::{fs, path::Path, process::Command};

use anyhow::{bail, Context as _, Result};

use crate::{cmd, Workspace};

/// The targets in fuzz/Cargo.toml.
const TARGETS: [&str; 5] = ["maps", "elf", "line_tables", "code_copy", "pprof"];

/// Small, real ELF files for the `elf` target's seed corpus: glibc's compatibility stubs, ~14 KiB each.
const ELF_SEEDS: [&str; 2] = ["/usr/lib/x86_64-linux-gnu/libdl.so.2", "/usr/lib/x86_64-linux-gnu/librt.so.1"];

pub fn fuzz(ws: &Workspace, seconds_each: u32) -> Result<()> {
    let fuzz_dir = ws.root.join("fuzz");
    let seeds = ws.target_dir.join("fuzz-seeds");
    write_seeds(&seeds)?;
    // Every target runs even after one fails: one finding must not hide the others.
    let mut failed = Vec::new();
    for target in TARGETS {
        let corpus = fuzz_dir.join("corpus").join(target);
        fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
        // cargo through rustup with the nightly toolchain: sanitizers and -Z flags need it.
        let mut run = Command::new("cargo");
        run.env("RUSTUP_TOOLCHAIN", "nightly")
            .env_remove("CARGO")
            .env_remove("RUSTC")
            .current_dir(&ws.root)
            .args(["fuzz", "run", "--fuzz-dir"])
            .arg(&fuzz_dir)
            // Overflow checks on: an overflowing offset in a parser is a wrong answer even where it cannot crash.
            .arg("--debug-assertions")
            .arg("--target-dir")
            .arg(ws.target_dir.join("fuzz"))
            .arg(target)
            .arg(&corpus);
        // Seeds, and the inputs of crashes found before (fuzz/regressions/TARGET/), replayed on every run.
        for extra in [seeds.join(target), fuzz_dir.join("regressions").join(target)] {
            if extra.is_dir() {
                run.arg(extra);
            }
        }
        run.arg("--").args([
            &format!("-max_total_time={seconds_each}"),
            "-timeout=10",
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
        ]);
        if let Err(err) = cmd::run(&mut run) {
            eprintln!("error: {err:#}");
            failed.push(target);
        }
    }
    if !failed.is_empty() {
        bail!("fuzz target(s) {} failed: the inputs are in fuzz/artifacts/TARGET/", failed.join(", "));
    }
    Ok(())
}

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
