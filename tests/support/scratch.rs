//! Scratch space: one directory per test run, one per test inside it, removed at exit unless a test failed.
use std::{
    fs,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        OnceLock,
    },
    thread,
};

/// Set when a test fails, so its files are kept for a look instead of removed at exit.
static KEEP_SCRATCH: AtomicBool = AtomicBool::new(false);

/// This run's scratch directory, `$TMPDIR/profiler-tests.PID`, removed when the test binary exits unless a test
/// failed.
pub fn scratch_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("profiler-tests.{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap_or_else(|err| panic!("creating {}: {err}", root.display()));
        // A static is never dropped; exit handlers do run when the test harness returns or exits.
        extern "C" fn remove_scratch_root() {
            if let Some(root) = ROOT.get() {
                if KEEP_SCRATCH.load(Ordering::SeqCst) {
                    eprintln!("test files kept in {}", root.display());
                } else {
                    let _ = fs::remove_dir_all(root);
                }
            }
        }
        // SAFETY: registers a plain function that touches only statics, which outlive it.
        unsafe { libc::atexit(remove_scratch_root) };
        root
    })
}

/// A fresh directory for one test's files. When the test fails its files are kept and their place printed.
pub struct TestDir(PathBuf);

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let dir = scratch_root().join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("creating {}: {err}", dir.display()));
        TestDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        keep_on_panic(&self.0);
    }
}

/// Keeps `dir` (and the rest of the scratch space) when the current test is failing.
fn keep_on_panic(dir: &Path) {
    if thread::panicking() {
        KEEP_SCRATCH.store(true, Ordering::SeqCst);
        eprintln!("keeping this test's files: {}", dir.display());
    }
}
