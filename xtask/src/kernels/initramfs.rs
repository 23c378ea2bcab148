//! Step 2 of `cargo xtask kernels`: the one initramfs every kernel boots (busybox, the profiler under test, the
//! workloads, Debian's CPython with the modules the guest imports, `init.sh` as `/init`).
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use super::Mode;
use crate::{cmd, Workspace};

/// Debian's CPython, which the guest runs the Python workload and the receiver with (its libpython is linked in
/// statically, so the binary, a few libraries and the modules the scripts import are all it needs).
const PYTHON: &str = "/usr/bin/python3.11";

const CA_CERTIFICATES: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Standard-library modules the guest's scripts import (their dependencies follow).
const PYTHON_MODULES: &str = "socket, zlib, sys, ctypes, json";

/// Builds `work/initramfs.cpio` (uncompressed: the kernel unpacks it at once, where gzip would cost seconds of
/// emulated CPU) from a staging directory.
pub(super) fn build_initramfs(ws: &Workspace, profiler: &Path, mode: Mode, work: &Path) -> Result<PathBuf> {
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
    write_executable(&stage.join("init"), include_str!("init.sh"))?;
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
    for script in ["spin.py", "grow.py"] {
        copy(&ws.root.join("tests/workloads/python").join(script), &w.join(script))?;
    }
    fs::write(w.join("receiver.py"), include_str!("receiver.py")).context("writing receiver.py")?;

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
