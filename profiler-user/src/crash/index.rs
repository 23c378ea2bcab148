//! The crash directory's index, `index.jsonl`: one JSON line per crash the agent saw, reported or suppressed by a
//! budget, so that `profiler crashes` can count every crash of a group without reading every report, and can
//! count the ones that have no report at all. The writer appends to it (crash/writer.rs); this module is the
//! line format and how a directory is read back: the index (the older, rotated file first), or, without one (a
//! directory written before the index existed), the `crash-*.json` reports themselves.
use std::{
    fs,
    io::{self, BufRead as _, Read as _},
    path::Path,
};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    budget::Suppression,
    report::CrashReport,
    signature::{CrashSignature, FrameNames},
};

/// The index the writer appends to.
pub(crate) const INDEX_FILE: &str = "index.jsonl";
/// Where the index goes when it reaches [`INDEX_MAX_BYTES`] (replacing the one before).
pub(crate) const OLDER_INDEX_FILE: &str = "index.1.jsonl";
/// The most one index file holds (some 8,000 crashes); with the older one, what the directory keeps of its history.
pub(crate) const INDEX_MAX_BYTES: u64 = 4 << 20;
/// Reports larger than this are not read when the directory has no index (ours are a few KiB).
const MAX_REPORT_BYTES: u64 = 16 << 20;

/// One crash, as a line of the index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct IndexEntry {
    pub signature: String,
    pub title: String,
    /// RFC 3339, UTC, to the second (the report's time).
    pub time: String,
    pub pid: u32,
    pub process_name: String,
    pub signal: String,
    /// The report's file name without extension (`crash-PID-SIGNAL-MILLIS`); `None` when no report was written.
    pub report: Option<String>,
    /// Why no report was written, when a budget or the quota left it out.
    #[serde(default)]
    pub suppressed: Option<Suppression>,
    /// The names the signature is made of, innermost first.
    #[serde(default)]
    pub frames: Vec<String>,
}

impl IndexEntry {
    pub(crate) fn of(report: &CrashReport, report_base: Option<&str>, suppressed: Option<Suppression>) -> Self {
        Self {
            signature: report.signature.id.clone(),
            title: report.signature.title.clone(),
            time: report.time.clone(),
            pid: report.pid,
            process_name: report.process_name.clone(),
            signal: report.signal_name.clone(),
            report: report_base.map(str::to_owned),
            suppressed,
            frames: report.signature.frames.clone(),
        }
    }

    /// The line appended to the index, newline included.
    pub(crate) fn to_line(&self) -> Result<Vec<u8>> {
        let mut line = serde_json::to_vec(self).context("encoding a crash index line")?;
        line.push(b'\n');
        Ok(line)
    }
}

/// Whether `base` is a report name this profiler writes (`crash-` and letters, digits, `-`): a name read from a
/// file someone may have edited must not lead anywhere else in the file system.
pub(crate) fn is_report_base(base: &str) -> bool {
    base.starts_with("crash-") && base.len() <= 128 && base.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// What a crash directory says about its crashes.
pub(crate) struct DirectoryCrashes {
    /// Oldest first, as written.
    pub entries: Vec<IndexEntry>,
    /// Lines of the index (or reports, without one) that could not be read.
    pub unreadable: usize,
    /// True when the entries come from the reports, the directory having no index.
    pub from_reports: bool,
}

/// Reads the crashes of `dir`: its index, or its reports when it has none.
pub(crate) fn read_dir(dir: &Path) -> Result<DirectoryCrashes> {
    let mut found = DirectoryCrashes { entries: Vec::new(), unreadable: 0, from_reports: false };
    let mut any_index = false;
    for name in [OLDER_INDEX_FILE, INDEX_FILE] {
        let path = dir.join(name);
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
        };
        any_index = true;
        // Bounded: the writer rotates at the cap, so more is someone else's doing.
        let reader = io::BufReader::new(file.take(INDEX_MAX_BYTES * 2));
        for line in reader.split(b'\n') {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<IndexEntry>(&line) {
                Ok(entry) => found.entries.push(entry),
                Err(_) => found.unreadable += 1,
            }
        }
    }
    if !any_index {
        found.from_reports = true;
        read_reports(dir, &mut found)?;
    }
    Ok(found)
}

/// The entries of the `crash-*.json` reports of `dir`, in the order of their names' times.
fn read_reports(dir: &Path, found: &mut DirectoryCrashes) -> Result<()> {
    let listing = fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    let mut reports: Vec<(u128, String)> = Vec::new();
    for entry in listing.flatten() {
        let name = entry.file_name();
        let Some(base) = name.to_str().and_then(|n| n.strip_suffix(".json")) else { continue };
        if is_report_base(base) && entry.file_type().is_ok_and(|t| t.is_file()) {
            reports.push((millis_of(base), base.to_owned()));
        }
    }
    reports.sort();
    for (_, base) in reports {
        match read_report(&dir.join(format!("{base}.json")), &base) {
            Some(entry) => found.entries.push(entry),
            None => found.unreadable += 1,
        }
    }
    Ok(())
}

/// The time in a report's name (`crash-PID-SIGNAL-MILLIS[-RANDOM]`), for ordering; 0 when there is none.
fn millis_of(base: &str) -> u128 {
    base.split('-').rev().find_map(|part| part.parse::<u128>().ok().filter(|_| part.len() >= 10)).unwrap_or(0)
}

/// An index entry for one report file; its signature from the report, or worked out from its stack (a report
/// written before signatures existed).
fn read_report(path: &Path, base: &str) -> Option<IndexEntry> {
    let file = fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_REPORT_BYTES).read_to_end(&mut bytes).ok()?;
    let json: Value = serde_json::from_slice(&bytes).ok()?;
    let text = |key: &str| json.get(key).and_then(Value::as_str);
    let signal = text("signal_name")?.to_owned();
    let signature = match serde_json::from_value::<CrashSignature>(json.clone()) {
        Ok(signature) => signature,
        Err(_) if json.get("kind").is_some_and(|kind| kind.get("killed").is_some()) => CrashSignature::of_kill(&signal),
        Err(_) => {
            let stack = json.get("stack").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            CrashSignature::of_fault(&signal, stack.iter().map(frame_names))
        }
    };
    Some(IndexEntry {
        signature: signature.id,
        title: signature.title,
        time: text("time")?.to_owned(),
        pid: json.get("pid").and_then(Value::as_u64).and_then(|pid| u32::try_from(pid).ok())?,
        process_name: text("process_name").unwrap_or("?").to_owned(),
        signal,
        report: Some(base.to_owned()),
        suppressed: None,
        frames: signature.frames,
    })
}

/// A frame of a report's JSON stack, as a signature reads it.
fn frame_names(frame: &Value) -> FrameNames<'_> {
    let text = |key: &str| frame.get(key).and_then(Value::as_str);
    FrameNames {
        kind: text("kind").unwrap_or_default(),
        function: text("function").unwrap_or_default(),
        file: text("file"),
        module: text("module"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    fn report() -> CrashReport {
        CrashReport {
            signal: 8,
            signal_name: "SIGFPE".into(),
            signature: CrashSignature::of_fault(
                "SIGFPE",
                [FrameNames { kind: "native", function: "divide", file: None, module: Some("/x/libcrash.so") }],
            ),
            ..CrashReport::example()
        }
    }

    #[test]
    fn a_line_reads_back_as_written() {
        let entry = IndexEntry::of(&report(), Some("crash-42-SIGFPE-1700000000000"), None);
        let line = entry.to_line().unwrap();
        assert!(line.ends_with(b"}\n") && line.iter().filter(|&&b| b == b'\n').count() == 1);
        assert_eq!(serde_json::from_slice::<IndexEntry>(&line).unwrap(), entry);
        let suppressed = IndexEntry::of(&report(), None, Some(Suppression::SameSignature));
        let json: Value = serde_json::from_slice(&suppressed.to_line().unwrap()).unwrap();
        assert_eq!(json["suppressed"], "same_signature");
        assert_eq!(json["frames"][0], "divide (libcrash.so)");
    }

    #[test]
    fn reads_both_index_files_and_counts_bad_lines() {
        let tmp = TempDir::new("crash-index", "read");
        let first = IndexEntry::of(&report(), Some("crash-42-SIGFPE-1700000000000"), None);
        let second = IndexEntry { pid: 43, ..first.clone() };
        fs::write(tmp.0.join(OLDER_INDEX_FILE), first.to_line().unwrap()).unwrap();
        let mut newer = b"{not json\n\n".to_vec();
        newer.extend(second.to_line().unwrap());
        fs::write(tmp.0.join(INDEX_FILE), newer).unwrap();
        let read = read_dir(&tmp.0).unwrap();
        assert_eq!(read.entries, [first, second]);
        assert_eq!(read.unreadable, 1);
        assert!(!read.from_reports);
    }

    #[test]
    fn without_an_index_reads_the_reports_and_signs_old_ones() {
        let tmp = TempDir::new("crash-index", "reports");
        let with_signature = report();
        fs::write(tmp.0.join("crash-42-SIGFPE-1700000000001.json"), serde_json::to_vec(&with_signature).unwrap())
            .unwrap();
        // A report from before signatures: worked out from its stack, to the same id.
        let mut old = serde_json::to_value(&with_signature).unwrap();
        for key in ["signature", "signature_title", "signature_frames"] {
            old.as_object_mut().unwrap().remove(key);
        }
        old["stack"] = serde_json::json!([{"kind": "native", "function": "divide", "file": null, "line": 3,
            "module": "/y/libcrash.so", "build_id": null, "inlined": false}]);
        fs::write(tmp.0.join("crash-41-SIGFPE-1700000000000.json"), serde_json::to_vec(&old).unwrap()).unwrap();
        fs::write(tmp.0.join("crash-40-SIGFPE-1700000000002.json"), b"garbage").unwrap();
        fs::write(tmp.0.join("notes.json"), b"{}").unwrap();
        let read = read_dir(&tmp.0).unwrap();
        assert!(read.from_reports);
        assert_eq!(read.unreadable, 1);
        let bases: Vec<_> = read.entries.iter().map(|e| e.report.clone().unwrap()).collect();
        assert_eq!(bases, ["crash-41-SIGFPE-1700000000000", "crash-42-SIGFPE-1700000000001"]);
        assert_eq!(read.entries[0].signature, read.entries[1].signature);
    }

    #[test]
    fn report_names_cannot_lead_elsewhere() {
        assert!(is_report_base("crash-42-SIGSEGV-1700000000000-0a1b2c3d"));
        assert!(!is_report_base("crash-../../etc/shadow"));
        assert!(!is_report_base("/etc/passwd"));
        assert!(!is_report_base("notes"));
    }
}
