//! Parses `/proc/PID/maps` into the executable file mappings that unwinding and symbolization need, and the whole
//! address space a crash's fault address is placed in (`crash::fault`).
//!
//! Lines that do not parse are skipped and counted, never fatal: a process can change its mappings while we read.
// Values here come from a target (its files, its memory, its maps) or the kernel: no implicit arithmetic.
#![deny(clippy::arithmetic_side_effects)]
use std::fs;

use anyhow::{Context as _, Result};

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mapping {
    pub start: u64,
    pub end: u64,
    pub executable: bool,
    pub readable: bool,
    pub writable: bool,
    /// `s` (MAP_SHARED) rather than `p`.
    pub shared: bool,
    /// Offset in the file of the byte mapped at `start`.
    pub file_offset: u64,
    /// (major << 32 | minor, inode): identifies the file system-wide, whatever its path in the process's mount
    /// namespace.
    pub dev: u64,
    pub inode: u64,
    /// The path column; empty for anonymous memory, `[vdso]`-style for kernel-provided regions. Deleted files
    /// keep the kernel's ` (deleted)` suffix.
    pub path: String,
}

impl Mapping {
    pub(crate) fn is_file_backed(&self) -> bool {
        self.inode != 0 && self.path.starts_with('/')
    }

    /// The permissions column as `/proc/PID/maps` shows it (`r-xp`).
    pub(crate) fn perms(&self) -> String {
        let flag = |set: bool, c: char| if set { c } else { '-' };
        [
            flag(self.readable, 'r'),
            flag(self.writable, 'w'),
            flag(self.executable, 'x'),
            if self.shared { 's' } else { 'p' },
        ]
        .into_iter()
        .collect()
    }
}

/// The mappings of a process and how many lines could not be parsed.
#[derive(Debug, Default)]
pub(crate) struct ProcessMaps {
    pub mappings: Vec<Mapping>,
    pub malformed_lines: usize,
}

pub(crate) fn read(pid: u32) -> Result<ProcessMaps> {
    let text = fs::read_to_string(format!("/proc/{pid}/maps")).with_context(|| format!("reading /proc/{pid}/maps"))?;
    Ok(parse(&text))
}

pub(crate) fn parse(text: &str) -> ProcessMaps {
    let mut maps = ProcessMaps::default();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        match parse_line(line) {
            Some(mapping) => maps.mappings.push(mapping),
            None => maps.malformed_lines = maps.malformed_lines.saturating_add(1),
        }
    }
    maps
}

fn parse_line(line: &str) -> Option<Mapping> {
    // address perms offset dev inode [path]; the path may contain spaces, so split off five fields only.
    let mut fields = line.splitn(6, ' ');
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    let file_offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let inode = fields.next()?.parse().ok()?;
    let path = fields.next().unwrap_or("").trim_start().to_owned();
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    if start >= end || perms.len() < 4 {
        return None;
    }
    let dev = (u64::from_str_radix(major, 16).ok()? << 32) | u64::from_str_radix(minor, 16).ok()?;
    let perms = perms.as_bytes();
    Some(Mapping {
        start,
        end,
        executable: perms[2] == b'x',
        readable: perms[0] == b'r',
        writable: perms[1] == b'w',
        shared: perms[3] == b's',
        file_offset,
        dev,
        inode,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
00400000-00423000 r--p 00000000 fe:01 1312                               /usr/bin/python3.11
00423000-0067d000 r-xp 00023000 fe:01 1312                               /usr/bin/python3.11
7f0e1c000000-7f0e1c021000 rw-p 00000000 00:00 0 
7f0e1c200000-7f0e1c228000 r-xp 00028000 103:02 5555 /opt/my lib/libx.so (deleted)
7ffd4a1f2000-7ffd4a1f4000 r-xp 00000000 00:00 0                          [vdso]
this is not a maps line
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn parses_file_anonymous_and_special_mappings() {
        let maps = parse(SAMPLE);
        assert_eq!(maps.malformed_lines, 1);
        assert_eq!(maps.mappings.len(), 6);
        let text = &maps.mappings[1];
        assert_eq!((text.start, text.end, text.file_offset), (0x423000, 0x67d000, 0x23000));
        assert!(text.executable && text.is_file_backed());
        assert_eq!(text.perms(), "r-xp");
        assert_eq!(maps.mappings[2].perms(), "rw-p");
        assert!(maps.mappings[2].writable && !maps.mappings[2].executable);
        assert_eq!(text.path, "/usr/bin/python3.11");
        assert_eq!(text.dev, (0xfe << 32) | 1);
        assert!(!maps.mappings[2].is_file_backed());
        assert_eq!(maps.mappings[3].path, "/opt/my lib/libx.so (deleted)");
        assert_eq!(maps.mappings[4].path, "[vdso]");
        assert!(!maps.mappings[4].is_file_backed());
    }

    #[test]
    fn rejects_inverted_or_truncated_lines() {
        assert_eq!(parse("2000-1000 r-xp 0 00:00 0\n").malformed_lines, 1);
        assert_eq!(parse("1000-2000 r-xp 0\n").malformed_lines, 1);
        assert_eq!(parse("1000-2000 r-xp zz 00:00 0\n").malformed_lines, 1);
    }
}
