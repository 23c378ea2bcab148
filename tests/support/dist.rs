//! What `cargo xtask dist` made, for the packaging tests: the static binary, the Debian package and the OCI image
//! layout, in `PROFILER_DIST` (set by `cargo xtask test`, which runs `dist` first) or else the workspace's
//! `target/dist/`.
use std::{
    fs,
    path::{Path, PathBuf},
    thread,
};

use crate::workspace_root;

pub struct Dist {
    dir: PathBuf,
}

/// The artifacts, if `dist` made them. Otherwise `None` after saying so, except under `CI=true`, where a test
/// skipped for that would hide a broken pipeline, so it fails instead.
pub fn dist() -> Option<Dist> {
    let (dir, from) = match std::env::var_os("PROFILER_DIST") {
        Some(dir) => (PathBuf::from(dir), "PROFILER_DIST"),
        None => (workspace_root().join("target/dist"), "the default location (PROFILER_DIST is unset)"),
    };
    let dist = Dist { dir };
    let missing: Vec<PathBuf> =
        [dist.binary(), dist.layout().join("index.json")].into_iter().filter(|p| !p.is_file()).collect();
    let deb = dist.find(".deb");
    if missing.is_empty() && deb.is_some() {
        return Some(dist);
    }
    let test = thread::current().name().unwrap_or("this test").to_owned();
    let why = format!("no complete `cargo xtask dist` output in {} ({from}): missing {missing:?}", dist.dir.display());
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: {why}, and CI=true does not allow skipping it");
    eprintln!("skipping {test}: {why}; run `cargo xtask dist`");
    None
}

impl Dist {
    /// The stripped static binary.
    pub fn binary(&self) -> PathBuf {
        self.dir.join("profiler")
    }

    /// Its split-off debug info.
    pub fn debug_info(&self) -> PathBuf {
        self.dir.join("profiler.debug")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `profiler_VERSION-1_amd64.deb`.
    pub fn deb(&self) -> PathBuf {
        self.find(".deb").unwrap_or_else(|| panic!("no .deb in {}", self.dir.display()))
    }

    /// The OCI image layout.
    pub fn layout(&self) -> PathBuf {
        self.dir.join("oci")
    }

    /// The references the image layout is tagged with (`org.opencontainers.image.ref.name` of its index).
    pub fn image_references(&self) -> Vec<String> {
        let index = self.layout().join("index.json");
        let text = fs::read_to_string(&index).unwrap_or_else(|err| panic!("reading {}: {err}", index.display()));
        let index: serde_json::Value = serde_json::from_str(&text).expect("index.json is JSON");
        index["manifests"]
            .as_array()
            .expect("index.json has manifests")
            .iter()
            .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str().map(str::to_owned))
            .collect()
    }

    fn find(&self, suffix: &str) -> Option<PathBuf> {
        fs::read_dir(&self.dir).ok()?.flatten().map(|e| e.path()).find(|p| {
            p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("profiler_"))
                && p.to_string_lossy().ends_with(suffix)
        })
    }
}
