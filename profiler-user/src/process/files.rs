//! Finding, from the agent's mount namespace, the files a process maps: its root directory (a container's or a
//! chroot's), the path of a mapped file under it, and `/proc/PID/map_files/` for a file deleted or replaced
//! since it was mapped.
//!
//! Every stage that opens a target's file (unwind tables, Python detection, symbolization) goes through here,
//! so that how such a file is opened is decided in one place.
use std::path::{Path, PathBuf};

use super::maps::Mapping;

/// Where to open a file a process maps. The kernel shows map paths relative to *our* root when the file is
/// reachable from it (a chrooted process's files appear under the chroot directory), and relative to the
/// process's own root otherwise (a container in another mount namespace).
pub(crate) fn resolve_path(root: &Path, mapped: &str) -> PathBuf {
    let in_their_root = root.join(mapped.trim_start_matches('/'));
    if root == Path::new("/") || in_their_root.exists() || !Path::new(mapped).exists() {
        in_their_root
    } else {
        PathBuf::from(mapped)
    }
}

/// The process's root directory as seen from here: `/` for processes in our mount namespace (so files are
/// opened, and cached by the symbolizer, under one path for all of them), `/proc/PID/root` for containers.
pub(crate) fn process_root(pid: u32) -> PathBuf {
    let theirs = PathBuf::from(format!("/proc/{pid}/root"));
    match (std::fs::read_link(&theirs), std::fs::read_link("/proc/self/root")) {
        (Ok(a), Ok(b)) if a == b && same_mount_namespace(pid) => PathBuf::from("/"),
        _ => theirs,
    }
}

fn same_mount_namespace(pid: u32) -> bool {
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).ok();
    ns(&pid.to_string()).is_some_and(|theirs| Some(theirs) == ns("self"))
}

/// The process's own view of a mapping's file: reachable even when the file was deleted or replaced since.
pub(crate) fn map_file(pid: u32, mapping: &Mapping) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", mapping.start, mapping.end))
}

/// Whether the mapped file starts like an ELF file (memfd trampolines, JIT code and other executable memory do
/// not, and are not worth a warning).
pub(crate) fn looks_like_elf(pid: u32, mapping: &Mapping, root: &Path) -> bool {
    let path = resolve_path(root, &mapping.path);
    let path = if path.exists() { path } else { map_file(pid, mapping) };
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic)).is_ok()
        && magic == *b"\x7fELF"
}
