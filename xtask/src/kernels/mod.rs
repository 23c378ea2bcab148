//! `cargo xtask kernels`: the profiler on the kernels servers run, booted from the distributions' own packages.
//!
//! The README promises Linux 5.15 or newer, and the rest of the test suite runs on this machine's kernel only.
//! Verifiers, BTF layouts and sysctl defaults (Debian's and Ubuntu's `perf_event_paranoid` patches) differ from
//! kernel to kernel, and only booting the kernel a user has shows what they would see. So for each kernel of
//! [`KERNELS`] this:
//!
//! 1. fetches the distribution's kernel package by name (resolving the meta-package a user would install) with a
//!    private apt configuration (no change to this machine's apt state) and keeps its `vmlinuz` under
//!    [`CACHE_DIR`], with a stamp naming the recipe and the package, so a warm run needs no network and a changed
//!    recipe fetches again;
//! 2. builds one initramfs holding a static busybox, the profiler under test, the native workloads, Debian's
//!    CPython with the part of its standard library the guest uses, and `kernels/init.sh` as `/init`. Nothing
//!    is shared with the host (no 9p, no network device), so no kernel module is needed and the generic and cloud
//!    kernels boot the same way;
//! 3. boots it with qemu under TCG (KVM is not usable here: nested guests hang), two CPUs, serial console. The
//!    guest runs the scenarios a user would — `record` of a parent whose children are a native program with a
//!    known split, a Python loop, a process that forks and one that crashes; `run` pushing to a receiver on the
//!    guest's loopback — on the distribution's default settings, and reports on the console;
//! 4. checks what a user would look at: the programs loaded and attached, function names and the native split in
//!    the folded output, the Python functions, the forked child's function, the crash report, the push.
//!
//! Emulation is 10–50 times slower than the host, so the smoke run (`--smoke`) records for a
//! few seconds; `cargo xtask kernels` records longer, waits for a periodic upload as well as the last one, and
//! rewrites the README's list of tested kernels when every kernel passed.
//!
//! The steps live in files of their own: `fetch.rs` (1), `initramfs.rs` (2), `boot.rs` (3) and `report.rs` (reading
//! the console and the checks of 4); this file holds the matrix, the run over it and the results table.
mod boot;
mod fetch;
mod initramfs;
mod report;

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use self::report::{check, Report};
use crate::Workspace;

/// Where the kernels (and the apt state that fetched them) are kept across runs.
pub const CACHE_DIR: &str = "/var/cache/profiler-kernels";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Archive {
    Debian,
    Ubuntu,
}

/// One kernel of the matrix: a distribution's kernel as its users get it.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    /// Short and unique: `ubuntu-22.04`, `debian-12`, ...
    pub name: &'static str,
    /// What a person calls it.
    pub label: &'static str,
    archive: Archive,
    /// The suites apt reads (an update suite first, so the newest build is taken).
    suites: &'static [&'static str],
    /// The meta-package a user installs; its `linux-image-*` dependency is the kernel.
    meta: &'static str,
}

/// The kernels of the matrix, oldest first. This machine's own kernel is the rest of the test suite's.
pub const KERNELS: [Kernel; 4] = [
    Kernel {
        name: "ubuntu-22.04",
        label: "Ubuntu 22.04 (5.15)",
        archive: Archive::Ubuntu,
        suites: &["jammy-updates", "jammy"],
        meta: "linux-image-generic",
    },
    Kernel {
        name: "debian-12",
        label: "Debian 12 (6.1, cloud)",
        archive: Archive::Debian,
        suites: &["bookworm"],
        meta: "linux-image-cloud-amd64",
    },
    Kernel {
        name: "ubuntu-24.04",
        label: "Ubuntu 24.04 (6.8)",
        archive: Archive::Ubuntu,
        suites: &["noble-updates", "noble"],
        meta: "linux-image-generic",
    },
    Kernel {
        name: "debian-13",
        label: "Debian 13 (6.12, cloud)",
        archive: Archive::Debian,
        suites: &["trixie"],
        meta: "linux-image-cloud-amd64",
    },
];

/// How much to run in each guest.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// `cargo xtask kernels --smoke`: short recordings, a few minutes per kernel under emulation.
    Smoke,
    /// `cargo xtask kernels`: longer recordings and a periodic upload as well as the last one.
    Full,
}

impl Mode {
    /// Seconds `record` runs once attached, and seconds `run` runs before it is stopped.
    fn seconds(self) -> (u32, u32) {
        match self {
            Mode::Smoke => (12, 2),
            Mode::Full => (25, 20),
        }
    }
}

/// Boots every kernel of `names` (all when empty), one after another, and fails unless each passed every check.
pub fn run(ws: &Workspace, profiler: &Path, mode: Mode, names: &[String]) -> Result<()> {
    let kernels: Vec<Kernel> = if names.is_empty() {
        KERNELS.to_vec()
    } else {
        names
            .iter()
            .map(|name| {
                KERNELS.iter().find(|k| k.name == name).copied().with_context(|| {
                    let known: Vec<&str> = KERNELS.iter().map(|k| k.name).collect();
                    format!("no kernel named {name} in the matrix (there are {})", known.join(", "))
                })
            })
            .collect::<Result<_>>()?
    };
    let work = ws.target_dir.join("kernels");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let started = Instant::now();
    let mut images = Vec::new();
    for kernel in &kernels {
        images.push((*kernel, fetch::ensure_kernel(kernel)?));
    }
    let fetched = started.elapsed();
    let initramfs = initramfs::build_initramfs(ws, profiler, mode, &work)?;
    eprintln!("kernels: fetched in {:.0?}, initramfs {} built", fetched, initramfs.display());

    let mut outcomes = Vec::new();
    for (kernel, vmlinuz) in images {
        let log = work.join(format!("{}.log", kernel.name));
        eprintln!("kernels: booting {} ({}); serial console in {}", kernel.label, vmlinuz.display(), log.display());
        let boot_started = Instant::now();
        let mut console = boot::boot(&vmlinuz, &initramfs, &log, boot_timeout(mode));
        let mut boots = 1;
        if let Ok(text) = &console {
            if !Report::parse(text).ran_its_script() {
                // Nothing of ours has run yet: the kernel or the emulator stopped before `/init` printed its
                // first line. Once, CI saw a guest power off 8 s into a boot that passes every other time; one
                // more boot tells such a stop from a kernel that cannot boot the image, and the table says so.
                eprintln!(
                    "kernels: {} stopped before its script ran; the console's last lines:\n{}\nkernels: booting it once more",
                    kernel.label,
                    console_tail(text, 30)
                );
                let first = log.with_extension("first-boot.log");
                let _ = fs::rename(&log, &first);
                console = boot::boot(&vmlinuz, &initramfs, &log, boot_timeout(mode));
                boots = 2;
            }
        }
        let elapsed = boot_started.elapsed();
        let outcome = match console {
            Ok(console) => {
                let report = Report::parse(&console);
                let mut failures = check(&report, mode);
                if !report.ran_its_script() {
                    failures.push(format!("the console's last lines:\n{}", console_tail(&console, 30)));
                }
                Outcome { kernel, elapsed, boots, report: Some(report), failures }
            }
            Err(err) => Outcome { kernel, elapsed, boots, report: None, failures: vec![format!("{err:#}")] },
        };
        eprintln!("{}", outcome.describe(&log));
        outcomes.push(outcome);
    }
    eprintln!("\n{}", table(&outcomes));
    let failed: Vec<&str> = outcomes.iter().filter(|o| !o.failures.is_empty()).map(|o| o.kernel.name).collect();
    if !failed.is_empty() {
        bail!("the profiler failed on {} (serial logs in {})", failed.join(", "), work.display());
    }
    if mode == Mode::Full && names.is_empty() {
        update_readme(ws, &outcomes)?;
    }
    Ok(())
}

fn boot_timeout(mode: Mode) -> Duration {
    match mode {
        Mode::Smoke => Duration::from_secs(12 * 60),
        Mode::Full => Duration::from_secs(20 * 60),
    }
}

/// The last `lines` lines of a console, indented, for a failure CI's log must show (the log file stays behind on
/// the CI machine).
fn console_tail(console: &str, lines: usize) -> String {
    let all: Vec<&str> = console.lines().filter(|line| !line.trim().is_empty()).collect();
    let start = all.len().saturating_sub(lines);
    all[start..].iter().map(|line| format!("    | {line}")).collect::<Vec<_>>().join("\n")
}

struct Outcome {
    kernel: Kernel,
    elapsed: Duration,
    /// 2 when the first boot stopped before the guest's script ran.
    boots: u32,
    report: Option<Report>,
    failures: Vec<String>,
}

impl Outcome {
    fn describe(&self, log: &Path) -> String {
        let mut text = String::new();
        if self.failures.is_empty() {
            let _ = write!(text, "kernels: {} passed in {:.0?}", self.kernel.label, self.elapsed);
        } else {
            let _ = write!(
                text,
                "kernels: {} FAILED in {:.0?} (console in {}):",
                self.kernel.label,
                self.elapsed,
                log.display()
            );
            for failure in &self.failures {
                let _ = write!(text, "\n  - {failure}");
            }
        }
        text
    }
}

fn table(outcomes: &[Outcome]) -> String {
    let mut text = String::from(
        "| kernel | release | perf_event_paranoid | boot to done | record start | run start | result |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let seconds = |value: Option<f64>| value.map_or("-".to_owned(), |s| format!("{s:.0} s"));
    for outcome in outcomes {
        let report = outcome.report.as_ref();
        let _ = writeln!(
            text,
            "| {} | {} | {} | {:.0} s | {} | {} | {} |",
            outcome.kernel.label,
            report.map_or("-", |r| r.release.as_str()),
            report.map_or("-", |r| r.paranoid.as_str()),
            outcome.elapsed.as_secs_f64(),
            seconds(report.and_then(|r| r.startup("record"))),
            seconds(report.and_then(|r| r.startup("push"))),
            match (outcome.failures.is_empty(), outcome.boots) {
                (true, 1) => "pass".to_owned(),
                (true, _) => "pass (second boot; the first stopped before the script)".to_owned(),
                (false, _) => format!("{} failed", outcome.failures.len()),
            },
        );
    }
    text
}

/// Rewrites the README's list of tested kernels from a full run in which all passed.
fn update_readme(ws: &Workspace, outcomes: &[Outcome]) -> Result<()> {
    let mut block = String::new();
    for outcome in outcomes {
        let Some(report) = &outcome.report else { continue };
        let mut warnings = report.warnings("record.log");
        warnings.extend(report.warnings("run.log"));
        warnings.sort();
        warnings.dedup();
        let _ = write!(
            block,
            "  - {} `{}` (perf_event_paranoid={} by default)",
            outcome.kernel.label, report.release, report.paranoid
        );
        if warnings.is_empty() {
            block.push_str(": everything works\n");
        } else {
            let _ = writeln!(block, ": works; warns: {}", warnings.join("; "));
        }
    }
    crate::readme::replace_block(ws, "kernels", "cargo xtask kernels", &block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consoles_tail_is_its_last_non_empty_lines_indented() {
        let console = "one\n\ntwo\r\nthree\n\n";
        assert_eq!(console_tail(console, 2), "    | two\r\n    | three".replace("\r", ""));
        assert_eq!(console_tail(console, 10).lines().count(), 3);
        assert_eq!(console_tail("", 5), "");
    }
}
