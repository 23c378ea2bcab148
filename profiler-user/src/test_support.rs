//! Helpers the unit tests of several modules share (integration tests have theirs in tests/support/).
use std::{os::unix::fs::PermissionsExt as _, path::PathBuf};

/// A fresh directory under the system temp dir, `profiler-MODULE-TAG-PID`, removed on drop. Mode 0755 whatever
/// the umask: the crash writer refuses a directory others can write.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(module: &str, tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("profiler-{module}-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
