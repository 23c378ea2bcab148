//! A process's resident memory and thread count, from `/proc/PID/status` (proc(5)): the points of the memory
//! timelines (`timeline`).
//!
//! `status` is where the kernel splits the resident set by kind (`RssAnon`, `RssFile`, `RssShmem`, in kB, since
//! 4.5), which `statm` does not; `Threads` is the thread count. A field that is missing or unreadable is 0: the
//! file is the kernel's, but its lines are parsed as untrusted text all the same.
// Values here come from a target (its files, its memory, its maps) or the kernel: no implicit arithmetic.
#![deny(clippy::arithmetic_side_effects)]
use std::fs;

use anyhow::{Context as _, Result};

/// What `/proc/PID/status` says of a process's memory and threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProcessStatus {
    /// Resident anonymous memory (heap, stacks, arenas, anonymous mappings), KiB.
    pub rss_anon_kib: u64,
    /// Resident pages of mapped files (code, libraries, mapped data files), KiB.
    pub rss_file_kib: u64,
    /// Resident shared memory (shmem, tmpfs, shared anonymous mappings), KiB.
    pub rss_shmem_kib: u64,
    pub threads: u64,
}

impl ProcessStatus {
    /// The resident set: all three kinds.
    pub(crate) fn rss_kib(&self) -> u64 {
        self.rss_anon_kib.saturating_add(self.rss_file_kib).saturating_add(self.rss_shmem_kib)
    }

    /// Parses the text of a `status` file; `None` when it has none of the fields (not a status file, or a kernel
    /// thread, which has no memory of its own).
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut status = Self::default();
        let mut found = false;
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else { continue };
            let slot = match key {
                "RssAnon" => &mut status.rss_anon_kib,
                "RssFile" => &mut status.rss_file_kib,
                "RssShmem" => &mut status.rss_shmem_kib,
                "Threads" => &mut status.threads,
                _ => continue,
            };
            let number = value.trim().trim_end_matches("kB").trim_end();
            *slot = number.parse().unwrap_or(0);
            found = true;
        }
        found.then_some(status)
    }
}

/// Reads process `pid`'s status now.
pub(crate) fn read(pid: u32) -> Result<ProcessStatus> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    ProcessStatus::parse(&text).with_context(|| format!("{path} has no memory or thread fields"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_resident_kinds_and_threads() {
        let text = "Name:\tpython3\nVmRSS:\t   51200 kB\nRssAnon:\t   40960 kB\nRssFile:\t   10000 kB\n\
                    RssShmem:\t     240 kB\nThreads:\t7\n";
        let status = ProcessStatus::parse(text).unwrap();
        assert_eq!(status, ProcessStatus { rss_anon_kib: 40960, rss_file_kib: 10000, rss_shmem_kib: 240, threads: 7 });
        assert_eq!(status.rss_kib(), 51200);
    }

    #[test]
    fn garbage_gives_zeros_or_nothing() {
        assert_eq!(ProcessStatus::parse("Name:\tx\n"), None);
        let status = ProcessStatus::parse("RssAnon:\t-5 kB\nThreads:\t99999999999999999999999\n").unwrap();
        assert_eq!((status.rss_anon_kib, status.threads), (0, 0));
    }

    #[test]
    fn reads_this_process() {
        let status = read(std::process::id()).unwrap();
        assert!(status.rss_anon_kib > 0 && status.threads >= 1, "{status:?}");
    }
}
