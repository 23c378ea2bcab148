//! Installs what building and running the profiler needs, and does nothing (quickly) when it is all there.
//!
//! Every step first checks with a cheap query (dpkg-query, rustup, `bpf-linker --version`, /proc/self/mounts, a
//! stamp file) and installs only what is missing, so every other task can start with it: a fresh Debian machine
//! and a warm one take the same path.
use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{cmd, Workspace};

/// Debian packages the build and the tests need. LLVM 22 with Polly, zstd and zlib: bpf-linker links against
/// them. gcc: the linker rustc drives, and the compiler of the native test workloads. g++: its libstdc++
/// development files, which bpf-linker links with (g++ pulls the version that matches the system's gcc).
/// python3-venv: the quake-monitor virtualenv (Debian splits `venv`'s ensurepip out of python3). python3-lxml,
/// python3-numpy: the Python test workloads run on the system interpreter with its own C extensions, with no
/// virtualenv in the way. debootstrap: the roots with other CPython versions that the tests profile. linux-perf:
/// the reference profiler `cargo xtask bench` measures beside ours. systemd: `systemd-analyze`, which checks the
/// service unit in deploy/. strace: lists the system calls the agent makes, which the unit's and the DaemonSet's
/// seccomp allow lists must hold. qemu-system-x86, busybox-static, cpio: the kernel matrix (kernels/) boots the
/// distributions' kernels with a busybox initramfs. golang-go: `go tool pprof`, which every pprof the tests read
/// must open in. debuginfod: elfutils' server, which serves a test library's debug file. tmux: the terminal the
/// `profiler top` tests type into and read. chromium: the browser the flame graph SVG is opened, searched and
/// zoomed in (tests/integration/browser.rs). curl: fetches speedscope's release from the npm registry for the test
/// that opens our pprof in it.
const DEBIAN_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "gcc",
    "g++",
    "python3-venv",
    "python3-lxml",
    "python3-numpy",
    "debootstrap",
    "linux-perf",
    "systemd",
    "strace",
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "golang-go",
    "debuginfod",
    "tmux",
    "chromium",
    "curl",
];

/// What `cargo xtask dist` and its tests (tests/integration/packaging.rs) need beyond [`DEBIAN_PACKAGES`]:
/// musl-tools (musl-gcc, for the C parts of the static build's crates), binutils (strip, objcopy, readelf: the
/// debug info split), ca-certificates (the image's CA bundle), lintian (checks the .deb), umoci (makes the OCI
/// image), runc (runs it; Debian 12's crun refuses a hybrid cgroup hierarchy), systemd-container (systemd-nspawn,
/// which boots a root to install the .deb into).
const DIST_PACKAGES: &[&str] =
    &["musl-tools", "binutils", "ca-certificates", "lintian", "umoci", "runc", "systemd-container"];

/// The interpreter of the quake-monitor virtualenv: Debian's own CPython 3.11 (the `python3` on PATH may be
/// another build, such as pyenv's).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// The example app whose dependencies the virtualenv holds, relative to the workspace root.
pub const QUAKE_MONITOR: &str = "examples/quake-monitor";

/// In the virtualenv: records which requirements.txt it was made from.
const VENV_STAMP: &str = ".requirements-stamp";

/// Where Debian's llvm-22 puts `llvm-config`, which bpf-linker's build script finds LLVM through.
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

/// The bpf-linker series that works with LLVM 22 and the aya crate set (docs/ARCHITECTURE.md, "Build toolchain").
const BPF_LINKER_SERIES: &str = "0.13";

/// The eBPF programs build with `-Z build-std`, which needs nightly and its standard library sources.
const NIGHTLY: &str = "nightly";

const TRACEFS: &str = "/sys/kernel/tracing";

pub fn setup(ws: &Workspace) -> Result<()> {
    debian_packages(DEBIAN_PACKAGES)?;
    rust_src()?;
    clippy()?;
    bpf_linker()?;
    tracefs();
    quake_venv(ws)?;
    validate_venv(ws)?;
    flask_venv(ws)?;
    Ok(())
}

/// The virtualenv with the quake-monitor app's dependencies (FastAPI, uvicorn, lxml, numpy).
pub fn quake_venv_dir(ws: &Workspace) -> PathBuf {
    ws.target_dir.join("quake-venv")
}

fn debian_packages(packages: &[&str]) -> Result<()> {
    let query = cmd::probe(Command::new("dpkg-query").args(["-W", "-f=${Package}\t${Status}\n"]).args(packages))?;
    let Some(query) = query else {
        eprintln!(
            "warning: no dpkg-query, so not a Debian system: install by hand LLVM 22 with its development files \
             and Polly, zstd and zlib development files, gcc and g++, Python 3 with venv, lxml and numpy, and \
             debootstrap"
        );
        return Ok(());
    };
    // dpkg-query exits 1 when a package is unknown but still lists the known ones: read the list, not the status.
    let listing = String::from_utf8_lossy(&query.stdout);
    let installed =
        |package: &str| listing.lines().any(|line| line.split_once('\t') == Some((package, "install ok installed")));
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        eprintln!("ok: Debian packages {}", packages.join(" "));
        return Ok(());
    }
    let missing = missing.join(" ");
    if !cmd::is_root() {
        bail!(
            "installing Debian packages needs root: run `sudo apt-get install --no-install-recommends {missing}`, \
             or `cargo xtask setup` as root"
        );
    }
    eprintln!("installing: Debian packages {missing}");
    let apt = |args: &[&str]| {
        let mut apt = Command::new("apt-get");
        apt.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        apt
    };
    cmd::run(&mut apt(&["update"]))?;
    let mut install = apt(&["install", "-y", "--no-install-recommends"]);
    cmd::run(install.args(missing.split(' ')))
}

fn rust_src() -> Result<()> {
    let mut list = Command::new("rustup");
    list.args(["component", "list", "--installed", "--toolchain", NIGHTLY]);
    let components = cmd::probe(&mut list)?
        .context("rustup not found: the eBPF programs build with rustup's nightly toolchain and its rust-src")?;
    if !components.status.success() {
        // No nightly toolchain at all.
        eprintln!("installing: {NIGHTLY} toolchain with rust-src");
        return cmd::run(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]));
    }
    if String::from_utf8_lossy(&components.stdout).lines().any(|line| line.trim() == "rust-src") {
        eprintln!("ok: rust-src for the {NIGHTLY} toolchain");
        return Ok(());
    }
    eprintln!("installing: rust-src for the {NIGHTLY} toolchain");
    cmd::run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

/// What `cargo xtask dist` (and `cargo xtask test --dist`) needs beyond [`setup`]: its Debian packages, the musl
/// target and cargo-deb. Apart, so the other tasks do not install them.
pub fn dist_tools() -> Result<()> {
    debian_packages(DIST_PACKAGES)?;
    static_target()?;
    cargo_deb()
}

/// The Rust target of the static binary `cargo xtask dist` ships (its standard library for musl).
const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";

fn static_target() -> Result<()> {
    let mut list = Command::new("rustup");
    list.args(["target", "list", "--installed"]);
    let installed = cmd::probe(&mut list)?.context("rustup not found: the static build needs rustup's musl target")?;
    if String::from_utf8_lossy(&installed.stdout).lines().any(|line| line.trim() == STATIC_TARGET) {
        eprintln!("ok: Rust target {STATIC_TARGET}");
        return Ok(());
    }
    eprintln!("installing: Rust target {STATIC_TARGET}");
    cmd::run(Command::new("rustup").args(["target", "add", STATIC_TARGET]))
}

/// `cargo xtask test` runs clippy: the parsers' arithmetic lint is part of the test stage.
fn clippy() -> Result<()> {
    let cargo = || Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    if cmd::probe(cargo().args(["clippy", "--version"]))?.is_some_and(|output| output.status.success()) {
        eprintln!("ok: clippy");
        return Ok(());
    }
    eprintln!("installing: clippy");
    cmd::run(Command::new("rustup").args(["component", "add", "clippy"]))
}

/// The version line of the bpf-linker on PATH, if there is one.
fn bpf_linker_version() -> Result<Option<String>> {
    let output = cmd::probe(Command::new("bpf-linker").arg("--version"))?;
    Ok(output
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned()))
}

fn is_wanted_bpf_linker(version: &str) -> bool {
    version.strip_prefix("bpf-linker ").is_some_and(|v| v.starts_with(&format!("{BPF_LINKER_SERIES}.")))
}

fn bpf_linker() -> Result<()> {
    let found = bpf_linker_version()?;
    if let Some(version) = found.as_deref().filter(|v| is_wanted_bpf_linker(v)) {
        eprintln!("ok: {version}");
        return Ok(());
    }
    let was = found.map_or_else(|| "not installed".to_owned(), |v| format!("found {v}"));
    eprintln!("installing: bpf-linker {BPF_LINKER_SERIES} built against LLVM 22 ({was}; compiles for minutes)");
    let mut path = OsString::from(format!("{LLVM_BIN}:"));
    path.push(env::var_os("PATH").unwrap_or_default());
    cmd::run(
        Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .env("PATH", path)
            .args(["install", "bpf-linker", "--version", &format!("~{BPF_LINKER_SERIES}")])
            .args(["--no-default-features", "--features", "llvm-22", "--locked"]),
    )?;
    match bpf_linker_version()? {
        Some(version) if is_wanted_bpf_linker(&version) => Ok(()),
        Some(version) => bail!(
            "after `cargo install`, the bpf-linker on PATH is still {version}: put cargo's bin \
                                directory ($CARGO_HOME/bin, usually ~/.cargo/bin) first on PATH"
        ),
        None => bail!(
            "bpf-linker was installed but is not on PATH: add cargo's bin directory ($CARGO_HOME/bin, \
                       usually ~/.cargo/bin) to PATH"
        ),
    }
}

/// Tracepoints attach through tracefs; a missing mount only disables them, so failing to mount is a warning.
fn tracefs() {
    let mounted = fs::read_to_string("/proc/self/mounts").is_ok_and(|mounts| {
        mounts.lines().any(|line| {
            let mut fields = line.split(' ').skip(1);
            fields.next() == Some(TRACEFS) && fields.next() == Some("tracefs")
        })
    });
    if mounted {
        eprintln!("ok: tracefs mounted at {TRACEFS}");
        return;
    }
    if !cmd::is_root() {
        eprintln!(
            "warning: tracefs is not mounted at {TRACEFS} and mounting it needs root: run `sudo mount -t \
                   tracefs tracefs {TRACEFS}`"
        );
        return;
    }
    eprintln!("installing: tracefs mount at {TRACEFS}");
    if let Err(err) = cmd::run(Command::new("mount").args(["-t", "tracefs", "tracefs", TRACEFS])) {
        eprintln!("warning: {err:#}; tracepoints will not attach");
    }
}

/// Makes the virtualenv from requirements.txt, again whenever that file changes: the stamp in it holds the hash of
/// the file it was made from, so a warm run costs one small read and a hash.
fn quake_venv(ws: &Workspace) -> Result<()> {
    ensure_venv(&quake_venv_dir(ws), &ws.root.join(QUAKE_MONITOR).join("requirements.txt"))
}

/// A virtualenv of Debian's Python at `venv` with the packages of `requirements`, made again whenever that file
/// changes.
pub fn ensure_venv(venv: &Path, requirements: &Path) -> Result<()> {
    let wanted = fs::read(requirements).with_context(|| format!("reading {}", requirements.display()))?;
    // The venv's own path too: its scripts' #! lines name it, so a moved target directory needs a new venv.
    let wanted = format!("fnv1a64 {:016x} of requirements.txt for {}\n", fnv1a64(&wanted), venv.display());
    let stamp = venv.join(VENV_STAMP);
    // `exists` follows the symlink: a venv whose interpreter went away (a Python upgrade) is made again.
    if venv.join("bin/python").exists() && fs::read_to_string(&stamp).is_ok_and(|found| found == wanted) {
        eprintln!("ok: Python virtualenv {}", venv.display());
        return Ok(());
    }
    eprintln!("installing: Python virtualenv {} from {}", venv.display(), requirements.display());
    make_venv(venv, requirements)?;
    fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))
}

fn make_venv(venv: &Path, requirements: &Path) -> Result<()> {
    // --clear: packages that requirements.txt no longer names must not linger from the previous install.
    cmd::run(Command::new(SYSTEM_PYTHON).args(["-m", "venv", "--clear"]).arg(venv))?;
    // Wheels only: building lxml or numpy from source would need compilers and headers that setup does not
    // install, and would take minutes; a missing wheel should fail at once, naming the package.
    cmd::run(
        Command::new(venv.join("bin/python"))
            .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--only-binary=:all:"])
            .arg("--requirement")
            .arg(requirements),
    )
}

/// The Flask app of the endpoint-label tests (tests/workloads/endpoints), relative to the workspace root.
const FLASK_REQUIREMENTS: &str = "tests/workloads/endpoints/requirements.txt";

/// The virtualenv with Flask for the endpoint-label tests (tests/integration/endpoints.rs).
pub fn flask_venv_dir(ws: &Workspace) -> PathBuf {
    ws.target_dir.join("flask-venv")
}

fn flask_venv(ws: &Workspace) -> Result<()> {
    ensure_venv(&flask_venv_dir(ws), &ws.root.join(FLASK_REQUIREMENTS))
}

/// The offline validators of deploy/: kubernetes-validate (the Kubernetes OpenAPI schemas of many releases, so no
/// cluster is needed), pinned so that a new release cannot change what the tests accept.
const VALIDATE_REQUIREMENTS: &str = "kubernetes-validate==1.37.0\n";

/// The virtualenv with the validators of deploy/ (tests/integration/deploy.rs).
pub fn validate_venv_dir(ws: &Workspace) -> PathBuf {
    ws.target_dir.join("validate-venv")
}

fn validate_venv(ws: &Workspace) -> Result<()> {
    let venv = validate_venv_dir(ws);
    let wanted = format!("fnv1a64 {:016x} for {}\n", fnv1a64(VALIDATE_REQUIREMENTS.as_bytes()), venv.display());
    let stamp = venv.join(VENV_STAMP);
    if venv.join("bin/kubernetes-validate").exists() && fs::read_to_string(&stamp).is_ok_and(|found| found == wanted) {
        eprintln!("ok: validators in {}", venv.display());
        return Ok(());
    }
    eprintln!("installing: validators ({}) in {}", VALIDATE_REQUIREMENTS.trim(), venv.display());
    fs::create_dir_all(&ws.target_dir).with_context(|| format!("creating {}", ws.target_dir.display()))?;
    let requirements = ws.target_dir.join("validate-requirements.txt");
    fs::write(&requirements, VALIDATE_REQUIREMENTS).with_context(|| format!("writing {}", requirements.display()))?;
    make_venv(&venv, &requirements)?;
    fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))
}

/// cargo-fuzz builds and runs the fuzz targets in fuzz/, on the nightly toolchain the eBPF build already needs.
/// Only exploratory fuzzing (`cargo xtask fuzz`) needs it: the test stage replays the corpus with cargo test.
const CARGO_FUZZ_SERIES: &str = "0.13";

pub fn cargo_fuzz() -> Result<()> {
    let cargo = || Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let version = cmd::probe(cargo().args(["fuzz", "--version"]))?
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned());
    if let Some(version) = version.as_deref().filter(|v| v.starts_with(&format!("cargo-fuzz {CARGO_FUZZ_SERIES}."))) {
        eprintln!("ok: {version}");
        return Ok(());
    }
    eprintln!("installing: cargo-fuzz {CARGO_FUZZ_SERIES} (compiles for a minute)");
    cmd::run(cargo().args(["install", "cargo-fuzz", "--version", &format!("~{CARGO_FUZZ_SERIES}"), "--locked"]))
}

/// cargo-deb makes the Debian package of `cargo xtask dist` (and so of `cargo xtask test`, whose packaging tests
/// install it).
const CARGO_DEB_SERIES: &str = "3";

fn cargo_deb() -> Result<()> {
    let cargo = || Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let version = cmd::probe(cargo().args(["deb", "--version"]))?
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned());
    if let Some(version) = version.as_deref().filter(|v| v.starts_with(&format!("cargo-deb {CARGO_DEB_SERIES}."))) {
        eprintln!("ok: {version}");
        return Ok(());
    }
    eprintln!("installing: cargo-deb {CARGO_DEB_SERIES} (compiles for a few minutes)");
    cmd::run(cargo().args(["install", "cargo-deb", "--version", &format!("^{CARGO_DEB_SERIES}"), "--locked"]))
}

/// FNV-1a, 64-bit: stable across Rust releases and machines (std's hashers promise neither), and plenty to tell
/// two versions of a small file apart.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
