//! speedscope (<https://github.com/jlfwong/speedscope>), the web flame graph viewer that imports pprof, as its
//! authors release it: the `speedscope` package of the npm registry carries the built web app
//! (`dist/release/index.html` and its script), which opens from disk in a browser with no server.
//!
//! One version is pinned ([`VERSION`]) with the digest the registry published for its tarball ([`INTEGRITY`], npm's
//! `dist.integrity`), and the tarball's digest is compared with it here. It is fetched once from the registry's
//! tarball address with curl (no Node.js needed; `cargo xtask setup` installs curl), unpacked with
//! `tar` under [`CACHE_DIR`]`/speedscope-VERSION`, and reused from there: a lock file keeps two test binaries from
//! racing, and the directory is renamed into place only once complete, so a half-made one is never used.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    thread,
};

use base64::Engine as _;

use crate::python::{file_digest, FileLock, CACHE_DIR};

/// The speedscope release the tests open.
pub const VERSION: &str = "1.25.0";
/// The registry's `dist.integrity` of `speedscope-1.25.0.tgz`: SHA-512, base64.
pub const INTEGRITY: &str =
    "sha512-cpf9HWTZf1ijLXBJrk87Ve/54tnYx6rlf0gUThvn3ook6h63hLXVOQiMf44PT+XoV503cPfvfiT5gP5vojp6Ag==";

/// Where the release's web app is, inside the unpacked package.
const APP: &str = "package/dist/release/index.html";
/// The file the release names itself in (`speedscope@VERSION`, the date and the commit it was built from).
const RELEASE_NOTE: &str = "package/dist/release/release.txt";

/// speedscope's `index.html`, made ready once per run (see the module's docs). `None`, after saying why, when it
/// cannot be had (no curl, or the registry does not answer), so the test can return early; except under `CI=true`,
/// where a skipped test would hide a broken setup, so it fails instead. A tarball whose digest is not [`INTEGRITY`]
/// fails the test whatever `CI` says: that is not a missing tool but a wrong file.
pub fn require_speedscope() -> Option<PathBuf> {
    static READY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match READY.get_or_init(ensure_speedscope) {
        Ok(app) => Some(app.clone()),
        Err(why) => {
            let test = thread::current().name().unwrap_or("this test").to_owned();
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                panic!("{test} needs speedscope {VERSION}, and CI=true does not allow skipping it: {why}");
            }
            eprintln!("skipping {test}: it needs speedscope {VERSION}: {why}");
            None
        }
    }
}

/// The unpacked release at `CACHE_DIR/speedscope-VERSION`, fetched and unpacked when missing; `Err` says why it
/// could not be fetched.
fn ensure_speedscope() -> Result<PathBuf, String> {
    let cache = Path::new(CACHE_DIR);
    let dir = cache.join(format!("speedscope-{VERSION}"));
    let ready = || dir.join(APP).is_file();
    if ready() {
        return Ok(dir.join(APP));
    }
    fs::create_dir_all(cache).map_err(|err| format!("creating {}: {err}", cache.display()))?;
    let _lock = FileLock::acquire(&cache.join(format!("speedscope-{VERSION}.lock")));
    if ready() {
        return Ok(dir.join(APP));
    }
    // Ours alone while we hold the lock: whatever is there is left from a run that was killed.
    let partial = cache.join(format!("speedscope-{VERSION}.partial"));
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial).map_err(|err| format!("creating {}: {err}", partial.display()))?;
    let tarball = partial.join(format!("speedscope-{VERSION}.tgz"));
    let url = format!("https://registry.npmjs.org/speedscope/-/speedscope-{VERSION}.tgz");
    eprintln!("fetching speedscope {VERSION} from {url} into {}", dir.display());
    let fetch = Command::new("curl")
        .args(["--fail", "--silent", "--show-error", "--location", "--retry", "2", "--max-time", "120", "--output"])
        .arg(&tarball)
        .arg(&url)
        .output()
        .map_err(|err| {
            let _ = fs::remove_dir_all(&partial);
            format!("could not run curl: {err}")
        })?;
    if !fetch.status.success() {
        let _ = fs::remove_dir_all(&partial);
        return Err(format!("fetching {url} failed ({}): {}", fetch.status, String::from_utf8_lossy(&fetch.stderr)));
    }
    let digest = integrity(&tarball);
    assert!(
        digest == INTEGRITY,
        "{} is not the speedscope {VERSION} the registry published: its digest is {digest:?}, the registry's \
         {INTEGRITY:?}",
        tarball.display()
    );
    let unpack = Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&partial)
        .output()
        .unwrap_or_else(|err| panic!("could not run tar: {err}"));
    assert!(
        unpack.status.success(),
        "unpacking {} failed ({}): {}",
        tarball.display(),
        unpack.status,
        String::from_utf8_lossy(&unpack.stderr)
    );
    assert!(partial.join(APP).is_file(), "speedscope {VERSION}'s package has no {APP}");
    let note = fs::read_to_string(partial.join(RELEASE_NOTE)).unwrap_or_default();
    assert!(
        note.lines().next() == Some(&format!("speedscope@{VERSION}")),
        "speedscope {VERSION}'s {RELEASE_NOTE} names another release: {note:?}"
    );
    let _ = fs::remove_file(&tarball);
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&partial, &dir)
        .unwrap_or_else(|err| panic!("renaming {} to {}: {err}", partial.display(), dir.display()));
    Ok(dir.join(APP))
}

/// `file`'s digest written as npm's `integrity` is: `sha512-` and the SHA-512 in base64.
fn integrity(file: &Path) -> String {
    let hex = file_digest("sha512", file);
    assert_eq!(hex.len(), 128, "sha512sum gave no digest of {}: {hex:?}", file.display());
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("sha512sum writes hex"))
        .collect();
    format!("sha512-{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}
