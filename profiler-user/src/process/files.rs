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
    use std::os::unix::fs::FileExt as _;
    let mut magic = [0u8; 4];
    TargetFile::open(pid, mapping, root).is_ok_and(|target| target.file.read_exact_at(&mut magic, 0).is_ok())
        && magic == *b"\x7fELF"
}

/// A file a target maps, opened so that the target cannot choose what we read or make us wait: through
/// `/proc/PID/map_files/` when permitted (the very file mapped), else by path without following a final symlink
/// and without blocking (`O_PATH`, then reopened only once it is known to be a regular file), and accepted only
/// when it is the file of the maps entry (same device and inode). A FIFO, a device or another file planted at
/// the path is refused, never opened for reading.
///
/// Every consumer reads through it: unwind tables and Python detection with `pread` (`file`), the symbolizer,
/// which opens by path, through `path`: `/proc/self/fd/N` of this open file, so it reopens the same inode,
/// or of a private copy (see `symbolizer_path`).
pub(crate) struct TargetFile {
    pub(crate) file: std::fs::File,
    /// The file's size when it was opened.
    pub(crate) size: u64,
    /// Whether someone other than root may write (and so truncate) the file.
    pub(crate) writable_by_others: bool,
    /// A sealed copy in memory, made on demand for consumers that map the file (see `symbolizer_path`).
    copy: std::sync::OnceLock<Option<std::fs::File>>,
}

/// The largest file copied into memory for the symbolizer (a library a target could truncate under it).
pub(crate) const MAX_COPY_BYTES: u64 = 64 << 20;

impl TargetFile {
    /// Opens the file behind `mapping` of process `pid` (whose root is `root`).
    pub(crate) fn open(pid: u32, mapping: &Mapping, root: &Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        // map_files entries are links the kernel resolves to the mapped file itself: followed. A path under the
        // target's root is the target's to change: its last step is not followed.
        let candidates =
            [(map_file(pid, mapping), true), (resolve_path(root, mapping.path.trim_end_matches(" (deleted)")), false)];
        let mut last_error = None;
        for (path, follow) in &candidates {
            match open_checked(path, mapping, *follow) {
                Ok(file) => return Ok(file),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.expect("two candidates")).with_context(|| format!("opening {} of PID {pid}", mapping.path))
    }

    /// A path that opens this very file (for libraries that only take paths). When the file could be truncated
    /// by someone other than root while it is mapped here (a library a target owns), the path is that of a
    /// sealed private copy, since touching a mapping past a truncated file's end kills the reader with SIGBUS;
    /// `None` when such a file is larger than `MAX_COPY_BYTES`.
    pub(crate) fn symbolizer_path(&self) -> Option<PathBuf> {
        use std::os::fd::AsRawFd as _;
        if !self.writable_by_others {
            return Some(PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd())));
        }
        let copy = self.copy.get_or_init(|| {
            if self.size > MAX_COPY_BYTES {
                tracing::warn!(
                    "not symbolizing a {} MiB file others can write: over the {} MiB copy limit (MAX_COPY_BYTES)",
                    self.size >> 20,
                    MAX_COPY_BYTES >> 20
                );
                return None;
            }
            sealed_copy(&self.file, self.size).map_err(|err| tracing::warn!("copying a target's file: {err:#}")).ok()
        });
        copy.as_ref().map(|copy| PathBuf::from(format!("/proc/self/fd/{}", copy.as_raw_fd())))
    }
}

impl TargetFile {
    /// The path `symbolizer_path` gave out, if it gave one, without making a copy: what a cache keyed by that
    /// path holds for this file.
    pub(crate) fn symbolizer_path_given(&self) -> Option<PathBuf> {
        use std::os::fd::AsRawFd as _;
        if !self.writable_by_others {
            return Some(PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd())));
        }
        let copy = self.copy.get()?.as_ref()?;
        Some(PathBuf::from(format!("/proc/self/fd/{}", copy.as_raw_fd())))
    }
}

/// A file's device as `/proc/PID/maps` writes it (`Mapping::dev`).
fn device_number(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    (u64::from(libc::major(meta.dev())) << 32) | u64::from(libc::minor(meta.dev()))
}

/// Whether `mapping` maps the executable process `pid` runs (`/proc/PID/exe`, by device and inode; a `stat`
/// through the link, which opens nothing). False when the process is gone.
pub(crate) fn is_executable_of(pid: u32, mapping: &Mapping) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(format!("/proc/{pid}/exe"))
        .is_ok_and(|meta| (device_number(&meta), meta.ino()) == (mapping.dev, mapping.inode))
}

fn open_checked(path: &Path, mapping: &Mapping, follow: bool) -> std::io::Result<TargetFile> {
    use std::os::{fd::AsRawFd as _, unix::fs::MetadataExt as _, unix::fs::OpenOptionsExt as _};
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    // O_PATH opens nothing: no FIFO open that waits for a writer, no device driver called.
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC | if follow { 0 } else { libc::O_NOFOLLOW })
        .open(path)?;
    let meta = handle.metadata()?;
    if !meta.file_type().is_file() {
        return Err(invalid(format!("{} is not a regular file", path.display())));
    }
    if (device_number(&meta), meta.ino()) != (mapping.dev, mapping.inode) {
        return Err(invalid(format!("{} is not the file the process maps (another device or inode)", path.display())));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))?;
    let writable_by_others = meta.uid() != 0 || meta.mode() & 0o022 != 0;
    Ok(TargetFile { file, size: meta.len(), writable_by_others, copy: std::sync::OnceLock::new() })
}

/// The first `size` bytes of `file` in a sealed memfd (no one can shrink, grow or write it).
fn sealed_copy(file: &std::fs::File, size: u64) -> anyhow::Result<std::fs::File> {
    use std::os::{fd::FromRawFd as _, unix::fs::FileExt as _};
    // SAFETY: a valid C string; the fd returned is owned below.
    let fd = unsafe { libc::memfd_create(c"profiler-copy".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    anyhow::ensure!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd nobody else owns.
    let copy = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut buffer = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while offset < size {
        let want = usize::try_from((size - offset).min(buffer.len() as u64)).unwrap_or(buffer.len());
        let read = file.read_at(&mut buffer[..want], offset)?;
        if read == 0 {
            break; // truncated meanwhile: the copy ends where the file did
        }
        copy.write_all_at(&buffer[..read], offset)?;
        offset = offset.saturating_add(read as u64);
    }
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on our own fd with integer arguments.
    anyhow::ensure!(
        unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) } == 0,
        "sealing: {}",
        std::io::Error::last_os_error()
    );
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping_of(path: &Path) -> Mapping {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(path).unwrap();
        Mapping {
            start: 0,
            end: 0,
            executable: true,
            readable: true,
            writable: false,
            shared: false,
            file_offset: 0,
            dev: device_number(&meta),
            inode: meta.ino(),
            path: path.display().to_string(),
        }
    }

    #[test]
    fn a_fifo_or_another_file_at_the_path_is_refused_without_blocking() {
        let dir = std::env::temp_dir().join(format!("profiler-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let real = dir.join("lib.so");
        std::fs::write(&real, b"\x7fELF and more").unwrap();
        let mapping = mapping_of(&real);
        let opened = open_checked(&real, &mapping, false).unwrap();
        assert_eq!(opened.size, 13);
        // The same name, now a FIFO: refused at once (a plain open would wait for a writer forever).
        std::fs::remove_file(&real).unwrap();
        let fifo = std::ffi::CString::new(real.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let err = open_checked(&real, &mapping, false).err().unwrap();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        // Another regular file at the path: not the mapped inode.
        std::fs::remove_file(&real).unwrap();
        std::fs::write(&real, b"other").unwrap();
        let err = open_checked(&real, &mapping, false).err().unwrap();
        assert!(err.to_string().contains("inode"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_copy_survives_the_truncation_of_its_file() {
        use std::io::Read as _;
        let path = std::env::temp_dir().join(format!("profiler-copy-{}", std::process::id()));
        std::fs::write(&path, vec![7u8; 3 << 20]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let copy = sealed_copy(&file, 3 << 20).unwrap();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
        let mut bytes = Vec::new();
        std::fs::File::open(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&copy)))
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        assert_eq!(bytes.len(), 3 << 20);
        assert!(copy.set_len(0).is_err(), "the copy is sealed");
        let _ = std::fs::remove_file(&path);
    }
}
