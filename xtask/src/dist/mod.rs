//! `cargo xtask dist`: everything a release ships, built from a clean checkout into `target/dist/`.
//!
//! - `profiler`: the static binary (musl: it depends on no glibc version, so the one file runs on every x86_64
//!   Linux from the kernel floor up, whatever the distribution), stripped; its debug info split off next to it as
//!   `profiler.debug`, named in the binary's `.gnu_debuglink`, and again under `.build-id/xx/rest.debug`, where
//!   debuggers and symbolizers look it up by the binary's GNU build-id (binary.rs);
//! - `profiler_VERSION-1_amd64.deb` and its `profiler-dbgsym_VERSION-1_amd64.ddeb`, made by cargo-deb from that
//!   build and checked by lintian (deb.rs);
//! - `oci/` and `profiler_VERSION_oci.tar`: the OCI image of the DaemonSet (deploy/kubernetes/profiler.yaml), the
//!   static binary and a CA bundle on nothing else, made offline with umoci (image.rs).
//!
//! The three come from one build: the binary in the package and in the image has the build-id of `profiler`.
mod binary;
mod deb;
mod image;

use std::{fs, path::PathBuf, time::Instant};

use anyhow::{Context as _, Result};

use crate::Workspace;

/// The version every artifact carries: the workspace's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn dir(ws: &Workspace) -> PathBuf {
    ws.target_dir.join("dist")
}

/// Builds everything into `target/dist/` (emptied first) and returns that directory.
pub fn dist(ws: &Workspace) -> Result<PathBuf> {
    let started = Instant::now();
    let out = dir(ws);
    // Nothing from an earlier run may be taken for this one's.
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let built = binary::build(ws)?;
    let binary = binary::split_debug_info(&built, &out)?;
    let deb = deb::package(ws, &out, &binary)?;
    let image = image::build(&out, &binary)?;
    eprintln!("dist: done in {:.0?}, in {}:", started.elapsed(), out.display());
    for path in [&binary.stripped, &binary.debug, &deb.deb, &deb.dbgsym, &image.archive] {
        let size = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
        eprintln!("  {:>8.1} MiB  {}", size as f64 / (1024.0 * 1024.0), path.display());
    }
    eprintln!("  image {} in {} (build-id {})", image.reference, image.layout.display(), binary.build_id);
    Ok(out)
}
