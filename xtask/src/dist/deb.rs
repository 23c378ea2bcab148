//! The Debian package, made by cargo-deb from the static build (`[package.metadata.deb]` in
//! profiler-user/Cargo.toml says what goes in it and why), its debug info in a separate `-dbgsym` package, and
//! checked by lintian: a warning or an error fails `dist`; each override is explained in
//! deploy/debian/profiler.lintian-overrides.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use super::binary::{self, StaticBinary, TARGET};
use crate::{cmd, Workspace};

pub struct Packages {
    /// `profiler_VERSION-1_amd64.deb`.
    pub deb: PathBuf,
    /// `profiler-dbgsym_VERSION-1_amd64.ddeb`: /usr/lib/debug/.build-id/xx/rest.debug.
    pub dbgsym: PathBuf,
}

pub fn package(ws: &Workspace, out: &Path, binary: &StaticBinary) -> Result<Packages> {
    let mut deb = ws.cargo();
    // --no-build: the binary `dist` built and checked; cargo-deb strips it the way binary.rs does.
    deb.args(["deb", "--package", "profiler-user", "--target", TARGET, "--no-build", "--dbgsym", "--output"]).arg(out);
    cmd::run(&mut deb)?;
    let deb = find(out, "profiler_", ".deb")?;
    let dbgsym = find(out, "profiler-dbgsym_", ".ddeb")?;

    // The package's binary must be the build `dist` split: same build-id.
    let unpacked = out.join("deb-contents");
    cmd::run(Command::new("dpkg-deb").arg("--extract").arg(&deb).arg(&unpacked))?;
    let packaged = binary::build_id(&unpacked.join("usr/bin/profiler"))?;
    fs::remove_dir_all(&unpacked).with_context(|| format!("removing {}", unpacked.display()))?;
    if packaged != binary.build_id {
        bail!("the package's /usr/bin/profiler has build-id {packaged}, the static build {}", binary.build_id);
    }
    lintian(&deb)?;
    Ok(Packages { deb, dbgsym })
}

/// The one file in `dir` named `prefix…suffix`.
fn find(dir: &Path, prefix: &str, suffix: &str) -> Result<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry.with_context(|| format!("listing {}", dir.display()))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with(prefix) && name.ends_with(suffix) {
            found.push(path);
        }
    }
    match <[PathBuf; 1]>::try_from(found) {
        Ok([path]) => Ok(path),
        Err(found) => bail!("expected one {prefix}*{suffix} in {}, found {found:?}", dir.display()),
    }
}

/// lintian with the tags of every severity shown, failing on warnings and errors. The package's own overrides
/// (installed in /usr/share/lintian/overrides/profiler) are applied. (`--show-overrides` would list them too, but
/// lintian 2.116 then exits with 2 whatever it found.)
fn lintian(deb: &Path) -> Result<()> {
    cmd::run(Command::new("lintian").args(["--fail-on", "error,warning", "--display-info"]).arg(deb))
        .context("lintian found problems in the package (or could not run: `cargo xtask setup` installs it)")
}
