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
//! Emulation is 10–50 times slower than the host, so the smoke run that `cargo xtask test` does records for a
//! few seconds; `cargo xtask kernels` records longer, waits for a periodic upload as well as the last one, and
//! rewrites the README's list of tested kernels when every kernel passed.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{fs::PermissionsExt as _, io::AsRawFd as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{cmd, Workspace};

/// Where the kernels (and the apt state that fetched them) are kept across runs.
pub const CACHE_DIR: &str = "/var/cache/profiler-kernels";

/// Bumped when the way a kernel is fetched or unpacked changes, so cached kernels are fetched again.
const RECIPE_VERSION: u32 = 1;

/// Ubuntu's archive keyring, as tests/python_support.rs fetches and checks it for the debootstrap roots (same
/// place, same digest: one download serves both).
const UBUNTU_KEYRING_DIR: &str = "/var/cache/profiler-roots/ubuntu-keyring";
const UBUNTU_KEYRING_URL: &str =
    "http://archive.ubuntu.com/ubuntu/pool/main/u/ubuntu-keyring/ubuntu-keyring_2021.03.26_all.deb";
const UBUNTU_KEYRING_SHA256: &str = "1a4dd63e5c76728960a2edddae22e2e0fc53df8e8b87806deb971030ac704eb0";
const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

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
    /// `cargo xtask test`: short recordings, a minute or two per kernel under emulation.
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
        images.push((*kernel, ensure_kernel(kernel)?));
    }
    let fetched = started.elapsed();
    let initramfs = build_initramfs(ws, profiler, mode, &work)?;
    eprintln!("kernels: fetched in {:.0?}, initramfs {} built", fetched, initramfs.display());

    let mut outcomes = Vec::new();
    for (kernel, vmlinuz) in images {
        let log = work.join(format!("{}.log", kernel.name));
        eprintln!("kernels: booting {} ({}); serial console in {}", kernel.label, vmlinuz.display(), log.display());
        let boot_started = Instant::now();
        let console = boot(&vmlinuz, &initramfs, &log, boot_timeout(mode));
        let elapsed = boot_started.elapsed();
        let outcome = match console {
            Ok(console) => {
                let report = Report::parse(&console);
                let failures = check(&report, mode);
                Outcome { kernel, elapsed, report: Some(report), failures }
            }
            Err(err) => Outcome { kernel, elapsed, report: None, failures: vec![format!("{err:#}")] },
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

// ---------------------------------------------------------------------------------------------------------------
// Fetching kernels

/// The kernel image of `kernel` under [`CACHE_DIR`], fetched when missing or fetched by another recipe.
fn ensure_kernel(kernel: &Kernel) -> Result<PathBuf> {
    let dir = Path::new(CACHE_DIR).join(kernel.name);
    let vmlinuz = dir.join("vmlinuz");
    let stamp = dir.join("stamp");
    let recipe = format!("recipe {RECIPE_VERSION}: {:?} {} {}\n", kernel.archive, kernel.suites.join(","), kernel.meta);
    let ready = || vmlinuz.is_file() && fs::read_to_string(&stamp).is_ok_and(|s| s.starts_with(&recipe));
    if ready() {
        return Ok(vmlinuz);
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _lock = FileLock::acquire(&dir.join("lock"))?;
    if ready() {
        return Ok(vmlinuz);
    }
    eprintln!("kernels: fetching {} ({} from {})", kernel.label, kernel.meta, kernel.suites.join(", "));
    let apt = PrivateApt::new(kernel, &dir.join("apt"))?;
    apt.update()?;
    let package = apt.kernel_package(kernel.meta)?;
    let download = dir.join("download");
    let _ = fs::remove_dir_all(&download);
    fs::create_dir_all(&download).with_context(|| format!("creating {}", download.display()))?;
    apt.download(&package, &download)?;
    let deb = only_file(&download, ".deb")?;
    let unpacked = download.join("unpacked");
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let image = only_file(&unpacked.join("boot"), "")
        .with_context(|| format!("{} holds no kernel image in /boot", deb.display()))?;
    fs::copy(&image, &vmlinuz).with_context(|| format!("copying {} to {}", image.display(), vmlinuz.display()))?;
    let deb_name = deb.file_name().unwrap_or_default().to_string_lossy().into_owned();
    fs::remove_dir_all(&download).with_context(|| format!("removing {}", download.display()))?;
    fs::write(&stamp, format!("{recipe}{deb_name}\n")).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(vmlinuz)
}

/// The one file in `dir` whose name starts with `vmlinuz` (when `suffix` is empty) or ends with `suffix`.
fn only_file(dir: &Path, suffix: &str) -> Result<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let wanted = if suffix.is_empty() { name.starts_with("vmlinuz") } else { name.ends_with(suffix) };
        if wanted {
            found.push(path);
        }
    }
    match <[PathBuf; 1]>::try_from(found) {
        Ok([path]) => Ok(path),
        Err(found) => bail!(
            "expected one {} in {}, found {found:?}",
            if suffix.is_empty() { "vmlinuz*" } else { suffix },
            dir.display()
        ),
    }
}

/// apt with its own lists, cache and sources: reads another release's archive without touching this machine's apt
/// state (Dir::State::status is empty, so nothing counts as installed).
struct PrivateApt {
    options: Vec<String>,
}

impl PrivateApt {
    fn new(kernel: &Kernel, dir: &Path) -> Result<PrivateApt> {
        let state = dir.join("state");
        let cache = dir.join("cache");
        for sub in [state.join("lists/partial"), cache.join("archives/partial")] {
            fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
        }
        let (mirror, keyring) = match kernel.archive {
            Archive::Debian => ("http://deb.debian.org/debian", PathBuf::from(DEBIAN_KEYRING)),
            Archive::Ubuntu => ("http://archive.ubuntu.com/ubuntu", ubuntu_keyring()?),
        };
        let sources: String = kernel
            .suites
            .iter()
            .map(|suite| format!("deb [signed-by={}] {mirror} {suite} main\n", keyring.display()))
            .collect();
        let list = dir.join("sources.list");
        fs::write(&list, sources).with_context(|| format!("writing {}", list.display()))?;
        let empty_status = dir.join("status");
        fs::write(&empty_status, "").with_context(|| format!("writing {}", empty_status.display()))?;
        let options = [
            format!("Dir::State={}", state.display()),
            format!("Dir::State::status={}", empty_status.display()),
            format!("Dir::Cache={}", cache.display()),
            format!("Dir::Etc::SourceList={}", list.display()),
            "Dir::Etc::SourceParts=/dev/null".to_owned(),
            "APT::Architecture=amd64".to_owned(),
            // Downloads land in a directory of root's; apt's sandbox user could not write there.
            "APT::Sandbox::User=root".to_owned(),
        ];
        Ok(PrivateApt { options: options.iter().flat_map(|o| ["-o".to_owned(), o.clone()]).collect() })
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args(&self.options);
        cmd
    }

    fn update(&self) -> Result<()> {
        cmd::run(self.command("apt-get").args(["-q", "update"]))
    }

    /// The `linux-image-*` package `meta` depends on.
    fn kernel_package(&self, meta: &str) -> Result<String> {
        let mut depends = self.command("apt-cache");
        depends.args(["depends", meta]);
        let output = depends.output().with_context(|| format!("running `{}`", cmd::display(&depends)))?;
        let text = String::from_utf8_lossy(&output.stdout);
        text.lines()
            .filter_map(|line| line.trim().strip_prefix("Depends: "))
            .find(|package| package.starts_with("linux-image-"))
            .map(str::to_owned)
            .with_context(|| format!("`{}` names no linux-image-* package:\n{text}", cmd::display(&depends)))
    }

    fn download(&self, package: &str, into: &Path) -> Result<()> {
        cmd::run(self.command("apt-get").current_dir(into).args(["-q", "download", package]))
    }
}

/// Ubuntu's archive keyring, fetched once and checked against [`UBUNTU_KEYRING_SHA256`].
fn ubuntu_keyring() -> Result<PathBuf> {
    let dir = Path::new(UBUNTU_KEYRING_DIR);
    let keyring = dir.join("usr/share/keyrings/ubuntu-archive-keyring.gpg");
    if !keyring.exists() {
        let parent = dir.parent().context("the keyring directory has a parent")?;
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let deb = parent.join("ubuntu-keyring.deb");
        cmd::run(Command::new("curl").args(["-fsSL", "--retry", "3", "-o"]).arg(&deb).arg(UBUNTU_KEYRING_URL))?;
        cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dir))?;
    }
    let output = Command::new("sha256sum").arg(&keyring).output().context("running sha256sum")?;
    let digest = String::from_utf8_lossy(&output.stdout);
    if digest.split_whitespace().next() != Some(UBUNTU_KEYRING_SHA256) {
        bail!(
            "{} does not have the expected SHA-256 ({UBUNTU_KEYRING_SHA256}): {digest}; remove {} to fetch it again",
            keyring.display(),
            dir.display()
        );
    }
    Ok(keyring)
}

/// An exclusive `flock` on a file, held until dropped.
struct FileLock(fs::File);

impl FileLock {
    fn acquire(path: &Path) -> Result<FileLock> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        // SAFETY: flock on a descriptor we own; it has no memory-safety preconditions.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!("locking {}: {}", path.display(), std::io::Error::last_os_error());
        }
        Ok(FileLock(file))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The initramfs

/// Debian's CPython, which the guest runs the Python workload and the receiver with (its libpython is linked in
/// statically, so the binary, a few libraries and the modules the scripts import are all it needs).
const PYTHON: &str = "/usr/bin/python3.11";

const CA_CERTIFICATES: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Standard-library modules the guest's scripts import (their dependencies follow).
const PYTHON_MODULES: &str = "socket, zlib, sys";

/// Builds `work/initramfs.cpio` (uncompressed: the kernel unpacks it at once, where gzip would cost seconds of
/// emulated CPU) from a staging directory.
fn build_initramfs(ws: &Workspace, profiler: &Path, mode: Mode, work: &Path) -> Result<PathBuf> {
    let stage = work.join("initramfs");
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    let w = stage.join("w");
    for dir in ["bin", "etc", "proc", "sys", "dev", "tmp", "root", "w"] {
        fs::create_dir_all(stage.join(dir)).with_context(|| format!("creating {}", stage.join(dir).display()))?;
    }
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() || !shared_libraries(busybox)?.is_empty() {
        bail!(
            "{} is missing or not statically linked: install Debian's busybox-static (`cargo xtask setup`)",
            busybox.display()
        );
    }
    let mut elves = Vec::new();
    copy(busybox, &stage.join("bin/busybox"))?;
    write_executable(&stage.join("init"), include_str!("kernels/init.sh"))?;
    // Without its debug information (tens of megabytes the guest would unpack for nothing).
    cmd::run(Command::new("objcopy").arg("--strip-debug").arg(profiler).arg(stage.join("profiler")))?;
    elves.push(stage.join("profiler"));

    // The workloads, built as the integration tests build them.
    cmd::run(Command::new("bash").arg(ws.root.join("examples/native-burn/build.sh")).arg(&w))?;
    elves.extend([w.join("native-burn"), w.join("libburnlib.so")]);
    // No sibling calls, as tests/lifecycle_support.rs builds family: child_burn must stay on the stack.
    for (source, name) in
        [("tests/workloads/lifecycle/family.c", "family"), ("tests/workloads/crash/crash-by-name.c", "crash-by-name")]
    {
        cmd::run(
            Command::new(std::env::var_os("CC").unwrap_or_else(|| "gcc".into()))
                .args(["-O2", "-g", "-fomit-frame-pointer", "-fno-optimize-sibling-calls", "-Wl,--build-id", "-o"])
                .arg(w.join(name))
                .arg(ws.root.join(source)),
        )?;
        elves.push(w.join(name));
    }
    copy(&ws.root.join("tests/workloads/python/spin.py"), &w.join("spin.py"))?;
    fs::write(w.join("receiver.py"), include_str!("kernels/receiver.py")).context("writing receiver.py")?;

    // Python: the interpreter and the modules the scripts import, with their compiled forms.
    copy(Path::new(PYTHON), &stage.join(PYTHON.trim_start_matches('/')))?;
    std::os::unix::fs::symlink("python3.11", stage.join("usr/bin/python3")).context("linking python3")?;
    elves.push(stage.join(PYTHON.trim_start_matches('/')));
    let listing = Command::new(PYTHON)
        .args([
            "-c",
            &format!(
                "import importlib.util, {PYTHON_MODULES}\n\
             for m in list(sys.modules.values()):\n\
             \x20   f = getattr(m, '__file__', None)\n\
             \x20   if f:\n\
             \x20       print(f)\n\
             \x20       if f.endswith('.py'):\n\
             \x20           print(importlib.util.cache_from_source(f))\n"
            ),
        ])
        .output()
        .with_context(|| format!("running {PYTHON}"))?;
    if !listing.status.success() {
        bail!("{PYTHON} could not list its modules: {}", String::from_utf8_lossy(&listing.stderr));
    }
    for line in String::from_utf8_lossy(&listing.stdout).lines() {
        let from = Path::new(line);
        if from.is_file() {
            let to = stage.join(line.trim_start_matches('/'));
            copy(from, &to)?;
            if line.ends_with(".so") {
                elves.push(to);
            }
        }
    }

    // The shared libraries of every binary, where the dynamic loader looks for them.
    for elf in &elves {
        for library in shared_libraries(elf)? {
            let to = stage.join(library.to_string_lossy().trim_start_matches('/'));
            if !to.exists() {
                copy(&library, &to)?;
            }
        }
    }
    // The system's CA certificates, as every server has them: `profiler run` sets up its HTTPS client with them
    // even for a plain-http receiver.
    copy(Path::new(CA_CERTIFICATES), &stage.join(CA_CERTIFICATES.trim_start_matches('/')))?;
    let (record_seconds, push_seconds) = mode.seconds();
    fs::write(
        stage.join("etc/kernels.conf"),
        format!(
            "MODE={}\nRECORD_SECONDS={record_seconds}\nPUSH_SECONDS={push_seconds}\n",
            match mode {
                Mode::Smoke => "smoke",
                Mode::Full => "full",
            }
        ),
    )
    .context("writing kernels.conf")?;

    let cpio = work.join("initramfs.cpio");
    let out = fs::File::create(&cpio).with_context(|| format!("creating {}", cpio.display()))?;
    let status = Command::new("sh")
        .args(["-c", "find . | LC_ALL=C sort | cpio --quiet -o -H newc"])
        .current_dir(&stage)
        .stdout(out)
        .status()
        .context("running cpio")?;
    if !status.success() {
        bail!("making {} with cpio failed ({status}): install cpio (`cargo xtask setup`)", cpio.display());
    }
    Ok(cpio)
}

/// The libraries `ldd` resolves for `elf`, and its dynamic loader.
fn shared_libraries(elf: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new("ldd").arg(elf).output().context("running ldd")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    let mut libraries = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        match path {
            Some(path) if path.starts_with('/') => libraries.push(PathBuf::from(path)),
            Some("not") => bail!("{}: a library is missing: {line}", elf.display()),
            _ => {}
        }
    }
    Ok(libraries)
}

/// Copies a file (following symlinks), making the parent directories.
fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn write_executable(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).with_context(|| format!("chmod {}", path.display()))
}

// ---------------------------------------------------------------------------------------------------------------
// Booting

/// Boots `vmlinuz` with `initramfs` under TCG and returns what the guest wrote to its console (also written to
/// `log` as it comes, with the `@@step` lines echoed here so a long boot shows progress).
fn boot(vmlinuz: &Path, initramfs: &Path, log: &Path, timeout: Duration) -> Result<String> {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2", "-m", "2048"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 quiet panic=-1", "-nographic", "-no-reboot"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let line = cmd::display(&qemu);
    let mut child = qemu
        .spawn()
        .with_context(|| format!("could not start `{line}`: install qemu-system-x86 (`cargo xtask setup`)"))?;
    let stdout = child.stdout.take().context("qemu's stdout")?;
    let mut log_file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let (sender, receiver) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut console = String::new();
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line).replace('\r', "");
            let _ = writeln!(log_file, "{line}");
            if let Some(marker) = line.find("@@step ").map(|at| &line[at..]) {
                eprintln!("  {}", marker.trim_start_matches("@@"));
            }
            console.push_str(&line);
            console.push('\n');
        }
        let _ = sender.send(());
        console
    });
    let deadline = Instant::now() + timeout;
    let finished = loop {
        if receiver.recv_timeout(Duration::from_millis(200)).is_ok() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    if !finished {
        let _ = child.kill();
    }
    let status = child.wait().context("waiting for qemu")?;
    let console = reader.join().map_err(|_| anyhow::anyhow!("the console reader panicked"))?;
    if !finished {
        bail!("the guest did not power off within {timeout:?}; its console is in {}", log.display());
    }
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
        }
        bail!("`{line}` failed ({status}): {}", stderr.trim());
    }
    Ok(console)
}

// ---------------------------------------------------------------------------------------------------------------
// What the guest reported

/// A scenario's progress: guest uptimes in seconds, and the profiler's exit code.
#[derive(Clone, Debug, Default)]
struct Step {
    start: Option<f64>,
    attached: Option<f64>,
    end: Option<f64>,
    rc: Option<i32>,
}

/// The guest's console, read.
#[derive(Debug, Default)]
struct Report {
    release: String,
    paranoid: String,
    steps: BTreeMap<String, Step>,
    /// Files by name; a name sent twice (crash reports) keeps every copy.
    files: BTreeMap<String, Vec<String>>,
    pushes: Vec<String>,
    done: Option<f64>,
}

impl Report {
    fn parse(console: &str) -> Report {
        let mut report = Report::default();
        let mut file: Option<(String, String)> = None;
        for line in console.lines() {
            // Kernel messages or a terminal reset may precede a marker on its line.
            let marker = line.find("@@").map(|at| &line[at + 2..]);
            if let Some((name, text)) = file.as_mut() {
                if marker == Some("eof") {
                    report.files.entry(name.clone()).or_default().push(std::mem::take(text));
                    file = None;
                } else {
                    text.push_str(line);
                    text.push('\n');
                }
                continue;
            }
            let Some(marker) = marker else { continue };
            let mut words = marker.split_whitespace();
            match words.next() {
                Some("kernel") => report.release = words.collect::<Vec<_>>().join(" "),
                Some("paranoid") => report.paranoid = words.collect::<Vec<_>>().join(" "),
                Some("file") => file = Some((words.next().unwrap_or("").to_owned(), String::new())),
                Some("push") => report.pushes.push(words.collect::<Vec<_>>().join(" ")),
                Some("done") => report.done = words.next().and_then(|w| w.parse().ok()),
                Some("step") => {
                    let (Some(name), Some(what)) = (words.next(), words.next()) else { continue };
                    let step = report.steps.entry(name.to_owned()).or_default();
                    let mut time = None;
                    for word in words {
                        if let Some(rc) = word.strip_prefix("rc=") {
                            step.rc = rc.parse().ok();
                        } else {
                            time = word.parse().ok();
                        }
                    }
                    match what {
                        "start" => step.start = time,
                        "attached" => step.attached = time,
                        "end" => step.end = time,
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        // The receiver's lines reach the console inside its log file.
        let pushes: Vec<String> = report
            .files
            .get("receiver.log")
            .into_iter()
            .flatten()
            .flat_map(|text| text.lines())
            .filter_map(|line| line.split_once("@@push ").map(|(_, push)| push.trim().to_owned()))
            .collect();
        report.pushes.extend(pushes);
        report
    }

    fn file(&self, name: &str) -> &str {
        self.files.get(name).and_then(|copies| copies.first()).map_or("", String::as_str)
    }

    /// Seconds from starting the profiler to its programs being attached.
    fn startup(&self, step: &str) -> Option<f64> {
        let step = self.steps.get(step)?;
        Some(step.attached? - step.start?)
    }

    /// The profiler's warnings in `log` (tracing's WARN lines), without their timestamps: what degrades.
    fn warnings(&self, log: &str) -> Vec<String> {
        let mut warnings: Vec<String> = self
            .file(log)
            .lines()
            .filter_map(|line| line.split_once(" WARN ").map(|(_, message)| message.trim().to_owned()))
            .collect();
        warnings.dedup();
        warnings
    }
}

/// Samples per function name in folded stacks (a function counts once per stack).
fn function_samples(folded: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in folded.lines() {
        let Some((stack, count)) = line.rsplit_once(' ') else { continue };
        let Ok(count) = count.parse::<u64>() else { continue };
        let mut seen: Vec<&str> = Vec::new();
        for frame in stack.split(';') {
            // Python frames carry their file: `spin_step (/w/spin.py)`.
            let name = frame.split(" (").next().unwrap_or(frame);
            if !seen.contains(&name) {
                seen.push(name);
                *counts.entry(name.to_owned()).or_insert(0) += count;
            }
        }
    }
    counts
}

/// What a user would check, as a list of failures (empty when all is well).
fn check(report: &Report, mode: Mode) -> Vec<String> {
    let mut failures = Vec::new();
    let mut fail = |message: String| failures.push(message);
    if report.release.is_empty() {
        fail("the guest never ran its script (no @@kernel line on the console)".into());
        return failures;
    }
    let record_log = report.file("record.log");
    let error =
        |log: &str| log.lines().filter(|l| l.starts_with("error:")).last().unwrap_or("(no error line)").to_owned();
    let record = report.steps.get("record").cloned().unwrap_or_default();
    if record.attached.is_none() {
        fail(format!("record: the programs were not loaded and attached: {}", error(record_log)));
    }
    if record.rc != Some(0) {
        fail(format!("record exited with {:?}: {}", record.rc, error(record_log)));
    }
    let samples = function_samples(report.file("record.folded"));
    let count = |name: &str| samples.get(name).copied().unwrap_or(0);
    if record.attached.is_some() {
        for name in ["hot_main_a", "hot_main_b", "lib_hot_x", "hot_b"] {
            if count(name) == 0 {
                fail(format!("record: no sample names native-burn's {name}"));
            }
        }
        let (a, b) = (count("hot_main_a"), count("hot_main_b"));
        if a + b >= 20 {
            let share = a as f64 / (a + b) as f64;
            // 60 % by construction; emulation and two busy vCPUs blur it, not this much.
            if !(0.45..=0.75).contains(&share) {
                fail(format!("record: hot_main_a has {:.0} % of hot_main_a + hot_main_b (60 % by construction; {a} and {b} samples)", share * 100.0));
            }
        } else {
            fail(format!("record: too few samples in hot_main_a and hot_main_b to judge their split ({a} and {b})"));
        }
        for name in ["spin_step", "spin_forever"] {
            if count(name) == 0 {
                fail(format!("record: no sample names the Python function {name} (tests/workloads/python/spin.py)"));
            }
        }
        if count("child_burn") == 0 {
            fail(
                "record: no sample names child_burn, from the child family forked after attaching (fork not followed)"
                    .into(),
            );
        }
        let crash = report.files.get("crash.txt").and_then(|c| c.first());
        match crash {
            None => fail("record: no crash report for crash-by-name's SIGSEGV".into()),
            Some(text) if !(text.contains("SIGSEGV") && text.contains("crash_here")) => {
                fail(format!("record: the crash report does not show SIGSEGV in crash_here:\n{text}"))
            }
            Some(_) => {}
        }
    }

    let run_log = report.file("run.log");
    let push = report.steps.get("push").cloned().unwrap_or_default();
    if push.attached.is_none() {
        fail(format!("run: the programs were not loaded and attached: {}", error(run_log)));
    } else {
        if push.rc != Some(0) {
            fail(format!("run exited with {:?} after SIGTERM: {}", push.rc, error(run_log)));
        }
        let good = |p: &&String| {
            p.starts_with("/push.v1.PusherService/Push ") && p.contains("service=yes") && p.contains("hot_main_a")
        };
        let wanted = if mode == Mode::Full { 2 } else { 1 };
        let received = report.pushes.iter().filter(good).count();
        if received < wanted {
            fail(format!(
                "run: {received} push(es) naming service kernels-smoke and hot_main_a reached the receiver, {wanted} \
                 wanted; it saw: {:?}",
                report.pushes
            ));
        }
    }
    if report.done.is_none() {
        fail("the guest's script did not finish".into());
    }
    failures
}

// ---------------------------------------------------------------------------------------------------------------
// Results

struct Outcome {
    kernel: Kernel,
    elapsed: Duration,
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
            if outcome.failures.is_empty() { "pass".to_owned() } else { format!("{} failed", outcome.failures.len()) },
        );
    }
    text
}

const README_BEGIN: &str = "<!-- kernels:begin (written by `cargo xtask kernels`) -->";
const README_END: &str = "<!-- kernels:end -->";

/// Rewrites the README's list of tested kernels (between its markers) from a full run in which all passed.
fn update_readme(ws: &Workspace, outcomes: &[Outcome]) -> Result<()> {
    let path = ws.root.join("README.md");
    let readme = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let (Some(begin), Some(end)) = (readme.find(README_BEGIN), readme.find(README_END)) else {
        bail!("{} has no {README_BEGIN} … {README_END} block to write the tested kernels into", path.display());
    };
    let mut block = format!("{README_BEGIN}\n");
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
    block.push_str(README_END);
    let updated = format!("{}{block}{}", &readme[..begin], &readme[end + README_END.len()..]);
    if updated != readme {
        fs::write(&path, updated).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("kernels: updated the tested kernels in {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "\x1bc@@kernel 6.1.0-50-cloud-amd64\n@@paranoid 3\n@@step record start 4.10\n\
        @@step record attached 40.5\n@@step record end rc=0 60.25\n@@file record.folded\n\
        native-burn;main;run_main_loop;level_1;level_2;level_3;hot_main_a 30\n\
        native-burn;main;run_main_loop;level_1;level_2;level_3;hot_main_b 20\n\
        python3;python3;<module> (/w/spin.py);spin_forever (/w/spin.py);spin_step (/w/spin.py) 7\n\
        \n@@eof\n@@file crash.txt\nSIGSEGV in crash_here\n@@eof\n@@file crash.txt\nsecond\n@@eof\n\
        [   61.0] random kernel line\n@@push /push.v1.PusherService/Push application/proto 812 service=yes functions=hot_main_a\n\
        @@file receiver.log\n@@receiver listening\n@@push /push.v1.PusherService/Push application/proto 9 service=no functions=none\n\
        @@eof\n@@done 90.5\n";

    #[test]
    fn reads_the_console() {
        let report = Report::parse(CONSOLE);
        assert_eq!(report.release, "6.1.0-50-cloud-amd64");
        assert_eq!(report.paranoid, "3");
        let record = &report.steps["record"];
        assert_eq!(
            (record.start, record.attached, record.end, record.rc),
            (Some(4.1), Some(40.5), Some(60.25), Some(0))
        );
        assert_eq!(report.startup("record"), Some(36.4));
        assert_eq!(report.files["crash.txt"].len(), 2);
        assert!(report.file("record.folded").contains("hot_main_b 20"));
        assert_eq!(report.pushes.len(), 2);
        assert!(report.pushes[1].ends_with("service=no functions=none"), "{:?}", report.pushes);
        assert_eq!(report.done, Some(90.5));
    }

    #[test]
    fn counts_each_function_once_per_stack() {
        let counts = function_samples("p;main;f;f;g 3\np;main;f 2\n\np;x (/a.py);y (/a.py) 4\n");
        assert_eq!(counts["f"], 5);
        assert_eq!(counts["g"], 3);
        assert_eq!(counts["main"], 5);
        assert_eq!(counts["x"], 4);
    }

    #[test]
    fn names_what_failed() {
        let failures = check(&Report::parse(CONSOLE), Mode::Smoke);
        let all = failures.join("\n");
        assert!(all.contains("lib_hot_x"), "{all}");
        assert!(all.contains("child_burn"), "{all}");
        assert!(all.contains("run: the programs were not loaded"), "{all}");
        assert!(!all.contains("spin_step"), "{all}");
        assert!(!all.contains("crash report"), "{all}");
        assert!(!all.contains("split"), "{all}");
    }

    #[test]
    fn reads_warnings_without_timestamps() {
        let mut report = Report::default();
        report.files.insert(
            "record.log".into(),
            vec!["2026-12-06T23:00:00.1Z  WARN this kernel's BTF has no x\n2026-12-06T23:00:01Z  INFO fine\n".into()],
        );
        assert_eq!(report.warnings("record.log"), ["this kernel's BTF has no x"]);
    }
}
