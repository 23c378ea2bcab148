//! Puts crash reports on disk without letting anyone else choose where the bytes go.
//!
//! The agent runs as root and writes names a target can predict (`crash-PID-SIGNAL-MS.*`, part of the text
//! being function names the target chose), so every file is created relative to one directory fd with
//! `O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600: a symlink or file already at a name is never opened, a fresh name is
//! taken instead. A directory that another user could write (and that is not sticky) is refused at startup, as is
//! one that is itself a symlink. The directory is made when the first crash comes, so a recording without
//! crashes leaves nothing behind; startup only checks that it could be made. What the directory may hold is
//! bounded (`QUOTA_BYTES`): past it, reports go to the log only.
//!
//! Every crash, reported or suppressed by a budget, also gets a line in the directory's index (crash/index.rs),
//! appended with `O_APPEND|O_NOFOLLOW` to a file that must be ours alone; at `INDEX_MAX_BYTES` the index is moved
//! to `index.1.jsonl` (replacing the one before) and starts afresh.
//!
//! The system calls that make those guarantees are in dir.rs; this file decides what is written, and where.
use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _, Result};

use super::{
    budget::Suppression,
    dir::{
        append_line, c_path, check_dir, create_all, lstat, open_dir, open_dir_nofollow, parent_dir, probe, used_bytes,
    },
    index::{IndexEntry, INDEX_FILE, INDEX_MAX_BYTES, OLDER_INDEX_FILE},
    Crash,
};
use crate::output::{self, OutputFormat};

/// The most the crash directory may hold in `crash-*` files before reports stop being written there.
pub(crate) const QUOTA_BYTES: u64 = 64 << 20;
/// Names tried for one report before giving up (the first is the predictable one, then random suffixes).
const NAME_ATTEMPTS: usize = 16;

/// Writes crash reports into one directory.
pub(crate) struct CrashWriter {
    path: PathBuf,
    /// Open once made (or found); `None` until the first crash when it did not exist at startup.
    dir: Option<OwnedFd>,
    /// Bytes of `crash-*` files in the directory, counted when it was opened plus what was written since.
    used: u64,
    quota: u64,
    quota_logged: bool,
    index_cap: u64,
    /// Whether the log said that the index was rotated, or could not be written.
    index_rotation_logged: bool,
    index_error_logged: bool,
}

/// What became of one crash.
#[derive(Debug, PartialEq)]
pub(crate) enum Written {
    /// The report files; the path of the text report.
    Report(PathBuf),
    /// Only a line in the index (a budget suppressed the report): the index's path.
    IndexOnly(PathBuf, Suppression),
}

impl CrashWriter {
    /// Checks that the directory is safe to write, or could be made; makes nothing.
    pub(crate) fn new(path: &Path) -> Result<Self> {
        let mut writer = Self {
            path: path.to_owned(),
            dir: None,
            used: 0,
            quota: QUOTA_BYTES,
            quota_logged: false,
            index_cap: INDEX_MAX_BYTES,
            index_rotation_logged: false,
            index_error_logged: false,
        };
        match lstat(path) {
            Ok(_) => writer.open_existing()?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                // The nearest directory that exists is where the missing ones would be made
                // (`/var/lib/profiler/crashes` on a host where nothing made `/var/lib/profiler` yet).
                let mut parent = parent_dir(path);
                while lstat(parent).is_err_and(|err| err.kind() == io::ErrorKind::NotFound) {
                    parent = parent_dir(parent);
                }
                let meta = std::fs::metadata(parent).with_context(|| {
                    format!("cannot create the crash directory {}: {} is not usable", path.display(), parent.display())
                })?;
                if !meta.is_dir() {
                    bail!(
                        "cannot create the crash directory {}: {} is not a directory",
                        path.display(),
                        parent.display()
                    );
                }
                let c_parent = c_path(parent)?;
                // SAFETY: a valid C string; faccessat only reads it.
                if unsafe {
                    libc::faccessat(libc::AT_FDCWD, c_parent.as_ptr(), libc::W_OK | libc::X_OK, libc::AT_EACCESS)
                } != 0
                {
                    bail!(
                        "cannot create the crash directory {}: {} is not writable ({}); choose another with --crash-dir",
                        path.display(),
                        parent.display(),
                        io::Error::last_os_error()
                    );
                }
            }
            Err(err) => bail!("the crash directory {} is not usable: {err}", path.display()),
        }
        Ok(writer)
    }

    /// A smaller quota (tests).
    #[cfg(test)]
    pub(crate) fn with_quota(mut self, bytes: u64) -> Self {
        self.quota = bytes;
        self
    }

    /// A smaller index (tests).
    #[cfg(test)]
    pub(crate) fn with_index_cap(mut self, bytes: u64) -> Self {
        self.index_cap = bytes;
        self
    }

    fn open_existing(&mut self) -> Result<()> {
        let fd = open_dir_nofollow(libc::AT_FDCWD, &c_path(&self.path)?, &self.path)?;
        check_dir(&fd, &self.path)?;
        probe(&fd, &self.path)?;
        self.used = used_bytes(&fd);
        self.dir = Some(fd);
        Ok(())
    }

    /// The directory, made now if it did not exist (the parent is the user's path; the last step is never a
    /// symlink).
    fn dir(&mut self) -> Result<&OwnedFd> {
        if self.dir.is_none() {
            let parent_path = parent_dir(&self.path);
            // The parents are the operator's path (checked at startup): made as needed, like `mkdir -p`.
            std::fs::create_dir_all(parent_path)
                .with_context(|| format!("cannot create the crash directory's parent {}", parent_path.display()))?;
            let parent = open_dir(libc::AT_FDCWD, &c_path(parent_path)?, libc::O_DIRECTORY)
                .with_context(|| format!("opening {}", parent_path.display()))?;
            let name = match self.path.file_name() {
                Some(name) => CString::new(name.as_bytes()).context("a NUL in the crash directory's name")?,
                None => c_path(&self.path)?,
            };
            // SAFETY: a valid fd and C string.
            if unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o700) } != 0 {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::AlreadyExists {
                    bail!("cannot create the crash directory {}: {err}", self.path.display());
                }
            }
            let fd = open_dir_nofollow(parent.as_raw_fd(), &name, &self.path)?;
            check_dir(&fd, &self.path)?;
            self.used = used_bytes(&fd);
            self.dir = Some(fd);
        }
        Ok(self.dir.as_ref().expect("just opened"))
    }

    /// Writes the report files and the crash's index line (only the line for a suppressed crash).
    pub(crate) fn write(&mut self, crash: &Crash) -> Result<Written> {
        if let Some(reason) = crash.suppressed {
            self.append_index(&IndexEntry::of(&crash.report, None, Some(reason)))?;
            return Ok(Written::IndexOnly(self.path.join(INDEX_FILE), reason));
        }
        match self.write_report(crash) {
            Ok(base) => {
                let written = self.path.join(format!("{base}.txt"));
                if let Err(err) = self.append_index(&IndexEntry::of(&crash.report, Some(&base), None)) {
                    self.index_failed(&err);
                }
                Ok(Written::Report(written))
            }
            Err(err) => {
                let full = Some(Suppression::DirectoryFull);
                if let Err(err) = self.append_index(&IndexEntry::of(&crash.report, None, full)) {
                    self.index_failed(&err);
                }
                Err(err)
            }
        }
    }

    /// Logs, once, that index lines are being lost.
    fn index_failed(&mut self, err: &anyhow::Error) {
        if !std::mem::replace(&mut self.index_error_logged, true) {
            tracing::warn!("{err:#}: `profiler crashes` will not count these crashes");
        }
    }

    /// Appends one line to the index, moving a full index aside first.
    fn append_index(&mut self, entry: &IndexEntry) -> Result<()> {
        let line = entry.to_line()?;
        let cap = self.index_cap;
        let dir = self.dir()?.as_raw_fd();
        let index = self.path.join(INDEX_FILE);
        let rotated = append_line(dir, &line, cap).with_context(|| format!("appending to {}", index.display()))?;
        if rotated && !std::mem::replace(&mut self.index_rotation_logged, true) {
            tracing::info!(
                "{} reached {} KiB: moved to {OLDER_INDEX_FILE} (replacing the one before), a new index started",
                index.display(),
                cap >> 10
            );
        }
        Ok(())
    }

    /// Writes the report files; returns their name without extension.
    fn write_report(&mut self, crash: &Crash) -> Result<String> {
        let report = &crash.report;
        let json = serde_json::to_string_pretty(report).context("encoding the crash report")?;
        let mut files: Vec<(&str, Vec<u8>)> = vec![("json", json.into_bytes()), ("txt", report.to_text().into_bytes())];
        if crash.window.total_samples() > 0 {
            let title = format!(
                "{} {} ({}): the {:.0} s before the crash",
                report.signal_name, report.process_name, report.pid, report.window_seconds
            );
            for (extension, format) in [("svg", OutputFormat::FlameGraphSvg), ("pb.gz", OutputFormat::Pprof)] {
                files.push((extension, output::render(&crash.window, format, &title)?));
            }
        }
        let chart_title = format!(
            "{} {} ({}): memory and threads before the crash",
            report.signal_name, report.process_name, report.pid
        );
        if let Some(chart) = super::memory_chart::render(&report.memory, &chart_title) {
            files.push(("memory.svg", chart.into_bytes()));
        }
        let size: u64 = files.iter().map(|(_, bytes)| bytes.len() as u64).sum();
        let dir = self.dir()?.as_raw_fd();
        if self.used + size > self.quota {
            if !std::mem::replace(&mut self.quota_logged, true) {
                tracing::warn!(
                    "the crash directory {} holds {} KiB, its quota is {} KiB: reports of PID {} and later crashes go \
                     to the log only until it is emptied",
                    self.path.display(),
                    self.used >> 10,
                    self.quota >> 10,
                    report.pid
                );
            }
            bail!("the report of PID {} was not written: the crash directory is over its quota", report.pid);
        }
        let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        let predictable = format!("crash-{}-{}-{stamp}", report.pid, report.signal_name);
        for attempt in 0..NAME_ATTEMPTS {
            let base = if attempt == 0 {
                predictable.clone()
            } else {
                format!("{predictable}-{:08x}", getrandom::u32().unwrap_or(attempt as u32))
            };
            match create_all(dir, &base, &files) {
                Ok(()) => {
                    self.used += size;
                    return Ok(base);
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                    tracing::warn!(
                        "{}/{base}.* is taken (a file or link already there): trying another name",
                        self.path.display()
                    );
                }
                Err(err) => bail!("writing the crash report {}/{base}.*: {err}", self.path.display()),
            }
        }
        bail!(
            "no free name for the crash report of PID {} in {} after {NAME_ATTEMPTS} tries",
            report.pid,
            self.path.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, MetadataExt as _, PermissionsExt as _};

    use super::*;
    use crate::test_support::TempDir;
    use crate::{
        aggregate::Profile,
        crash::{index, CrashReport},
    };

    fn crash(pid: u32) -> Crash {
        Crash {
            time_ns: 0,
            report: CrashReport {
                pid,
                tid: pid,
                process_name: "victim".into(),
                thread_name: "victim".into(),
                ..CrashReport::example()
            },
            window: Profile::default(),
            stack: Profile::default(),
            suppressed: None,
        }
    }

    /// The path of the text report `write` wrote.
    fn report_path(written: Written) -> PathBuf {
        match written {
            Written::Report(path) => path,
            other => panic!("no report written: {other:?}"),
        }
    }

    #[test]
    fn makes_the_directory_only_when_a_crash_comes() {
        let tmp = TempDir::new("crash-writer", "lazy");
        let dir = tmp.0.join("crashes");
        let mut writer = CrashWriter::new(&dir).unwrap();
        assert!(!dir.exists(), "made before any crash");
        let text = report_path(writer.write(&crash(7)).unwrap());
        assert!(text.starts_with(&dir));
        let meta = std::fs::metadata(&text).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
    }

    #[test]
    fn never_writes_through_a_planted_link() {
        let tmp = TempDir::new("crash-writer", "links");
        let victim = tmp.0.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let dir = tmp.0.join("crashes");
        std::fs::create_dir(&dir).unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
        for ms in now..now + 3000 {
            for extension in ["json", "txt"] {
                symlink(&victim, dir.join(format!("crash-7-SIGSEGV-{ms}.{extension}"))).unwrap();
            }
        }
        let mut writer = CrashWriter::new(&dir).unwrap();
        let text = report_path(writer.write(&crash(7)).unwrap());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(std::fs::symlink_metadata(&text).unwrap().is_file());
        assert!(std::fs::read_to_string(&text).unwrap().starts_with("crash: SIGSEGV (victim 7)"));
    }

    #[test]
    fn refuses_a_directory_others_can_write() {
        let tmp = TempDir::new("crash-writer", "open");
        let dir = tmp.0.join("crashes");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = format!("{:#}", CrashWriter::new(&dir).err().unwrap());
        assert!(err.contains("writable by other users") && !err.contains('\n'), "{err}");
        // Sticky, like /tmp: others cannot remove or rename our files there, and names they plant are skipped.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        CrashWriter::new(&dir).unwrap();
        let link = tmp.0.join("link");
        symlink(&dir, &link).unwrap();
        let err = format!("{:#}", CrashWriter::new(&link).err().unwrap());
        assert!(err.contains("symbolic link"), "{err}");
    }

    #[test]
    fn stops_writing_at_the_quota() {
        let tmp = TempDir::new("crash-writer", "quota");
        CrashWriter::new(&tmp.0).unwrap().write(&crash(1)).unwrap();
        // What the directory holds already counts: one more report does not fit.
        let held: u64 = std::fs::read_dir(&tmp.0)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().as_bytes().starts_with(b"crash-"))
            .map(|e| e.metadata().unwrap().len())
            .sum();
        let mut writer = CrashWriter::new(&tmp.0).unwrap().with_quota(held + 100);
        let err = format!("{:#}", writer.write(&crash(2)).unwrap_err());
        assert!(err.contains("quota"), "{err}");
        // Still counted in the index.
        let entries = index::read_dir(&tmp.0).unwrap().entries;
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].suppressed, Some(Suppression::DirectoryFull));
        assert_eq!(entries[1].report, None);
    }

    #[test]
    fn every_crash_gets_an_index_line_and_suppressed_ones_only_that() {
        let tmp = TempDir::new("crash-writer", "index");
        let mut writer = CrashWriter::new(&tmp.0).unwrap();
        let text = report_path(writer.write(&crash(7)).unwrap());
        let mut again = crash(8);
        again.suppressed = Some(Suppression::SameSignature);
        let index = tmp.0.join(INDEX_FILE);
        assert_eq!(writer.write(&again).unwrap(), Written::IndexOnly(index.clone(), Suppression::SameSignature));
        let entries = index::read_dir(&tmp.0).unwrap().entries;
        assert_eq!(entries.len(), 2);
        let base = text.file_stem().unwrap().to_str().unwrap();
        assert_eq!(entries[0].report.as_deref(), Some(base));
        assert_eq!((entries[1].pid, entries[1].report.as_deref()), (8, None));
        assert_eq!(entries[1].suppressed, Some(Suppression::SameSignature));
        assert_eq!(entries[0].signature, entries[1].signature);
        assert!(!std::fs::read_dir(&tmp.0).unwrap().any(|e| e.unwrap().file_name().to_str().unwrap().contains("-8-")));
        assert_eq!(std::fs::metadata(&index).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_full_index_is_moved_aside() {
        let tmp = TempDir::new("crash-writer", "rotate");
        let mut writer = CrashWriter::new(&tmp.0).unwrap().with_index_cap(1000);
        let mut suppressed = crash(9);
        suppressed.suppressed = Some(Suppression::SameSignature);
        for _ in 0..30 {
            writer.write(&suppressed).unwrap();
        }
        let newer = std::fs::metadata(tmp.0.join(INDEX_FILE)).unwrap().len();
        let older = std::fs::metadata(tmp.0.join(OLDER_INDEX_FILE)).unwrap().len();
        assert!(newer <= 1000 && older <= 1000, "{newer} {older}");
        let kept = index::read_dir(&tmp.0).unwrap().entries.len();
        assert!((2..30).contains(&kept), "{kept}");
    }

    #[test]
    fn never_appends_to_a_planted_index() {
        let tmp = TempDir::new("crash-writer", "planted");
        let victim = tmp.0.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        symlink(&victim, tmp.0.join(INDEX_FILE)).unwrap();
        let mut writer = CrashWriter::new(&tmp.0).unwrap();
        let mut suppressed = crash(9);
        suppressed.suppressed = Some(Suppression::SameSignature);
        assert!(writer.write(&suppressed).is_err());
        std::fs::remove_file(tmp.0.join(INDEX_FILE)).unwrap();
        std::fs::hard_link(&victim, tmp.0.join(INDEX_FILE)).unwrap();
        let err = format!("{:#}", writer.write(&suppressed).unwrap_err());
        assert!(err.contains("one name") && !err.contains('\n'), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }
}
