//! The static binary: built for `x86_64-unknown-linux-musl` (Rust links musl in statically; the link adds a GNU
//! build-id, see .cargo/config.toml), checked to need no dynamic loader or library, then stripped with its debug
//! info split off the way Debian's dh_strip and cargo-deb do it.
//!
//! Why musl rather than a static glibc: a statically linked glibc still loads NSS modules of its own version for
//! name resolution (getaddrinfo, which the uploads use), so it would depend on the host's glibc after all; musl's
//! resolver reads /etc/resolv.conf and /etc/hosts itself.
use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{cmd, Workspace};

/// The Rust target of the static binary.
pub const TARGET: &str = "x86_64-unknown-linux-musl";

pub struct StaticBinary {
    /// `target/dist/profiler`: stripped, with a `.gnu_debuglink` to `profiler.debug`.
    pub stripped: PathBuf,
    /// `target/dist/profiler.debug`: the debug info (compressed), nothing else.
    pub debug: PathBuf,
    /// The GNU build-id, in hex.
    pub build_id: String,
}

/// `cargo build --release --target x86_64-unknown-linux-musl`; returns the unstripped binary.
pub fn build(ws: &Workspace) -> Result<PathBuf> {
    let mut build = ws.cargo();
    build.args(["build", "--release", "--package", "profiler-user", "--target", TARGET]);
    cmd::run(&mut build)?;
    let built = ws.target_dir.join(TARGET).join("release/profiler");
    check_static(&built)?;
    Ok(built)
}

/// Fails unless the ELF file at `path` asks for no interpreter and no shared library.
fn check_static(path: &Path) -> Result<()> {
    let headers = cmd::stdout(Command::new("readelf").args(["--wide", "--program-headers", "--dynamic"]).arg(path))?;
    if headers.lines().any(|line| line.trim_start().starts_with("INTERP") || line.contains("(NEEDED)")) {
        bail!("{} is not static: it needs a dynamic loader or shared libraries:\n{headers}", path.display());
    }
    Ok(())
}

/// Strips `built` into `out/profiler` and keeps its debug info in `out/profiler.debug`, also reachable as
/// `out/.build-id/xx/rest.debug`.
pub fn split_debug_info(built: &Path, out: &Path) -> Result<StaticBinary> {
    let build_id = build_id(built)?;
    let stripped = out.join("profiler");
    let debug = out.join("profiler.debug");
    // As dh_strip: symbols no relocation needs, the compiler's .comment and the generic .note section go; the
    // .note.gnu.build-id stays.
    cmd::run(
        Command::new("strip")
            .args(["--strip-unneeded", "--remove-section=.comment", "--remove-section=.note", "-o"])
            .arg(&stripped)
            .arg(built),
    )?;
    cmd::run(
        Command::new("objcopy").args(["--only-keep-debug", "--compress-debug-sections=zlib"]).arg(built).arg(&debug),
    )?;
    // The link holds the file name and a CRC of the debug file: gdb and blazesym look for it next to the binary.
    cmd::run(Command::new("objcopy").arg("--add-gnu-debuglink=profiler.debug").arg("profiler").current_dir(out))?;
    let found = self::build_id(&stripped)?;
    if found != build_id {
        bail!("stripping changed the build-id from {build_id} to {found}");
    }
    // Where a debugger looks a build-id up (`set debug-file-directory target/dist`, or /usr/lib/debug once
    // installed): .build-id/ + the first byte + / + the rest + .debug.
    let by_id = out.join(".build-id").join(&build_id[..2]);
    fs::create_dir_all(&by_id).with_context(|| format!("creating {}", by_id.display()))?;
    symlink("../../profiler.debug", by_id.join(format!("{}.debug", &build_id[2..])))
        .with_context(|| format!("linking the debug info in {}", by_id.display()))?;
    Ok(StaticBinary { stripped, debug, build_id })
}

/// The GNU build-id of an ELF file, in hex, from `readelf --notes`.
pub fn build_id(path: &Path) -> Result<String> {
    let notes = cmd::stdout(Command::new("readelf").args(["--wide", "--notes"]).arg(path))?;
    notes
        .lines()
        .find_map(|line| line.split("Build ID: ").nth(1))
        .map(|id| id.trim().to_owned())
        .filter(|id| id.len() > 2 && id.chars().all(|c| c.is_ascii_hexdigit()))
        .with_context(|| format!("{} has no GNU build-id", path.display()))
}
