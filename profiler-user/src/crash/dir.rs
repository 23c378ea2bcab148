//! The crash directory's file-system calls, each relative to the directory's fd and never through a link: what
//! lets the writer (writer.rs) put files where a target can predict the names without letting anyone else choose
//! where the bytes go. Report files are created `O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600; the index is appended
//! `O_APPEND|O_NOFOLLOW` and only when it is a regular file of ours with one name; the directory itself is refused
//! when someone other than root or us could plant names in it.
use std::{
    ffi::CString,
    fs::File,
    io::{self, Write as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

use anyhow::{bail, Context as _, Result};

use super::index::{INDEX_FILE, OLDER_INDEX_FILE};

/// Creates every `base.EXT` new (never through a link); on a name already taken removes what it created and
/// fails with `AlreadyExists`.
pub(super) fn create_all(dir: i32, base: &str, files: &[(&str, Vec<u8>)]) -> io::Result<()> {
    let mut created: Vec<CString> = Vec::new();
    let result = (|| {
        for (extension, bytes) in files {
            let name = CString::new(format!("{base}.{extension}")).map_err(io::Error::other)?;
            // SAFETY: a valid fd and C string; the returned fd is owned by the File.
            let fd = unsafe {
                libc::openat(
                    dir,
                    name.as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    0o600 as libc::c_uint,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            created.push(name);
            // SAFETY: `fd` was just opened above, is valid (checked) and owned by nothing else.
            let mut file = unsafe { File::from_raw_fd(fd) };
            file.write_all(bytes)?;
        }
        Ok(())
    })();
    if result.is_err() {
        for name in &created {
            // SAFETY: a valid fd and C string; these are the files this call made.
            unsafe { libc::unlinkat(dir, name.as_ptr(), 0) };
        }
    }
    result
}

/// Appends `line` to the index in `dir` with one write; when it would pass `cap`, the index is moved to
/// `OLDER_INDEX_FILE` first. True when it was moved.
pub(super) fn append_line(dir: i32, line: &[u8], cap: u64) -> io::Result<bool> {
    let mut file = open_index(dir, 0)?;
    let mut rotated = false;
    let size = file.metadata()?.len();
    if size > 0 && size + line.len() as u64 > cap {
        let (from, to) = (c_name(INDEX_FILE), c_name(OLDER_INDEX_FILE));
        // SAFETY: a valid fd and C strings. rename replaces a link at the new name; it never follows one.
        if unsafe { libc::renameat(dir, from.as_ptr(), dir, to.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        file = open_index(dir, libc::O_EXCL)?;
        rotated = true;
    }
    // O_APPEND and one write: a line is never interleaved with another writer's.
    let written = file.write(line)?;
    if written != line.len() {
        return Err(io::Error::other(format!("a short write ({written} of {} bytes)", line.len())));
    }
    Ok(rotated)
}

/// Opens (creating) the index for appending: never through a link, and only a file of ours with no other name
/// (in a sticky directory another user could have made it, or linked one of root's files to it).
fn open_index(dir: i32, extra_flags: i32) -> io::Result<File> {
    let name = c_name(INDEX_FILE);
    // SAFETY: a valid fd and C string; the returned fd is owned by the File.
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC | extra_flags,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let meta = fstat(&fd)?;
    // SAFETY: no arguments, cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.st_mode & libc::S_IFMT != libc::S_IFREG || meta.st_uid != euid || meta.st_nlink != 1 {
        return Err(io::Error::other(format!(
            "{INDEX_FILE} is not a regular file of user {euid} with one name: not appending to it (remove it)"
        )));
    }
    Ok(File::from(fd))
}

fn c_name(name: &str) -> CString {
    CString::new(name).expect("a constant without NUL")
}

/// Refuses a directory someone other than root or us could plant names in (owner, or group/other write without
/// the sticky bit).
pub(super) fn check_dir(fd: &OwnedFd, path: &Path) -> Result<()> {
    let meta = fstat(fd).with_context(|| format!("reading the crash directory {}", path.display()))?;
    // SAFETY: no arguments, cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.st_uid != 0 && meta.st_uid != euid {
        bail!(
            "the crash directory {} belongs to user {}, who could plant links in it: use a directory only root can \
             write (--crash-dir)",
            path.display(),
            meta.st_uid
        );
    }
    if meta.st_mode & 0o022 != 0 && meta.st_mode & libc::S_ISVTX == 0 {
        bail!(
            "the crash directory {} is writable by other users and not sticky (mode {:o}): use a directory only \
             root can write (--crash-dir), or `chmod go-w` it",
            path.display(),
            meta.st_mode & 0o7777
        );
    }
    Ok(())
}

/// Creates and removes a file, so that a directory we cannot write fails at startup, not at the first crash.
pub(super) fn probe(fd: &OwnedFd, path: &Path) -> Result<()> {
    let name = CString::new(format!(".probe-{}", std::process::id())).expect("no NUL");
    // SAFETY: a valid fd and C string.
    let probe = unsafe {
        libc::openat(
            fd.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    if probe < 0 {
        bail!("cannot create files in the crash directory {}: {}", path.display(), io::Error::last_os_error());
    }
    // SAFETY: the fd just opened, and the name just created.
    unsafe {
        libc::close(probe);
        libc::unlinkat(fd.as_raw_fd(), name.as_ptr(), 0);
    }
    Ok(())
}

/// Bytes in `crash-*` regular files of the directory.
pub(super) fn used_bytes(fd: &OwnedFd) -> u64 {
    let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd())) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_name().as_bytes().starts_with(b"crash-"))
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

pub(super) fn open_dir_nofollow(at: i32, name: &CString, path: &Path) -> Result<OwnedFd> {
    open_dir(at, name, libc::O_DIRECTORY | libc::O_NOFOLLOW).map_err(|err| {
        if err.raw_os_error() == Some(libc::ELOOP) || err.raw_os_error() == Some(libc::ENOTDIR) {
            anyhow::anyhow!(
                "the crash directory {} is a symbolic link or not a directory: give the real directory (--crash-dir)",
                path.display()
            )
        } else {
            anyhow::anyhow!("cannot open the crash directory {}: {err}", path.display())
        }
    })
}

pub(super) fn open_dir(at: i32, name: &CString, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: a valid C string; the fd returned is owned below.
    let fd = unsafe { libc::openat(at, name.as_ptr(), flags | libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut meta: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and out-pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut meta) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(meta)
}

pub(super) fn lstat(path: &Path) -> io::Result<std::fs::Metadata> {
    std::fs::symlink_metadata(path)
}

pub(super) fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).with_context(|| format!("a NUL in the path {}", path.display()))
}

/// The directory `path` is in; `.` for a bare name.
pub(super) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}
