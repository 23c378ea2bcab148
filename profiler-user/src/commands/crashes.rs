//! `profiler crashes`: what a crash directory holds, as the owners of a service need it — the distinct crashes
//! (signatures) with how often, since when and in which processes each happened, the newest last; then one report
//! to read. Reads the directory's index (or its reports, when it has none); needs no privileges beyond reading the
//! directory, and loads nothing into the kernel.
use std::{
    fmt::Write as _,
    fs,
    io::{self, Read as _, Write as _},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use crate::{
    cli::{CrashQuery, CrashesConfig},
    crash::{
        groups::{describe_counts, CrashGroup, CrashGroups},
        index::{self, is_report_base, DirectoryCrashes, INDEX_FILE},
    },
};

/// Groups a directory can list (a directory is bounded by its index's size, some 16,000 crashes).
const MAX_GROUPS: usize = 100_000;
/// Reports larger than this are not printed (ours are a few KiB).
const MAX_REPORT_BYTES: u64 = 16 << 20;

pub(crate) fn run(config: CrashesConfig) -> Result<()> {
    let mut out = io::stdout().lock();
    let text = match &config.show {
        Some(CrashQuery::Report(base)) => read_report(base, config.json)?,
        Some(CrashQuery::Signature(prefix)) => {
            let crashes = load(&config.dir)?;
            let (group, base) = newest_report(&config.dir, &crashes, prefix, config.json)?;
            eprintln!(
                "signature {}: {}, last seen {}; its newest report:",
                group.signature,
                describe_counts(&group),
                group.last_seen
            );
            read_report(&base, config.json)?
        }
        None => {
            let crashes = load(&config.dir)?;
            if config.json {
                list_json(&config.dir, &crashes)?
            } else {
                list_text(&config.dir, &crashes)
            }
        }
    };
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).context("writing to stdout")
}

/// The crashes of `dir`; an error saying what to do when there are none to show.
fn load(dir: &Path) -> Result<DirectoryCrashes> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => bail!("{} is not a directory: give the crash directory with --dir", dir.display()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => bail!(
            "there is no crash directory {}: give the one the profiler wrote to with --dir (record's --crash-dir, \
             ./crashes by default; run's is /var/lib/profiler/crashes)",
            dir.display()
        ),
        Err(err) => bail!("cannot read the crash directory {}: {err}", dir.display()),
    }
    let crashes = index::read_dir(dir)?;
    if crashes.unreadable > 0 {
        let what = if crashes.from_reports { "reports" } else { "index lines" };
        eprintln!("warning: {} {what} in {} could not be read and are not counted", crashes.unreadable, dir.display());
    }
    if crashes.entries.is_empty() {
        bail!(
            "no crashes recorded in {}: it holds no {INDEX_FILE} and no crash-*.json reports (is it the directory \
             the profiler wrote to? see --dir)",
            dir.display()
        );
    }
    Ok(crashes)
}

fn groups_of(crashes: &DirectoryCrashes) -> CrashGroups {
    let mut groups = CrashGroups::new(MAX_GROUPS);
    for entry in &crashes.entries {
        groups.add(entry);
    }
    groups
}

/// The list, as people read it.
fn list_text(dir: &Path, crashes: &DirectoryCrashes) -> String {
    let groups = groups_of(crashes);
    let listed = groups.newest_last();
    let mut text = String::new();
    let signatures = if listed.len() == 1 { "1 signature".to_owned() } else { format!("{} signatures", listed.len()) };
    let _ = writeln!(
        text,
        "{} crashes in {}, {signatures}, the most recent last{}:",
        crashes.entries.len(),
        dir.display(),
        if crashes.from_reports { " (from the reports: the directory has no index)" } else { "" }
    );
    for group in &listed {
        let _ = writeln!(text, "\n{}  {}", group.signature, describe_counts(group));
        let _ = writeln!(text, "    {}", group.title);
        let _ = writeln!(
            text,
            "    first seen {}, last seen {} (PID {}), in {}",
            group.first_seen,
            group.last_seen,
            group.last_pid,
            group.processes.join(", ")
        );
        if !group.frames.is_empty() {
            let _ = writeln!(text, "    top frames: {}", group.frames.join(" ← "));
        }
        match &group.newest_report {
            Some(base) => {
                let _ = writeln!(text, "    newest report: {}", dir.join(format!("{base}.txt")).display());
            }
            None => {
                let _ = writeln!(text, "    no report written (all suppressed by the crash-report budgets)");
            }
        }
    }
    let _ = writeln!(text, "\nto read the newest report of one: profiler crashes --dir {} SIGNATURE", dir.display());
    text
}

#[derive(Serialize)]
struct JsonList<'a> {
    dir: &'a Path,
    /// Every crash counted (reported or suppressed).
    crashes: usize,
    /// `index` or `reports` (a directory without an index).
    source: &'static str,
    unreadable: usize,
    /// The most recent last.
    groups: Vec<&'a CrashGroup>,
}

fn list_json(dir: &Path, crashes: &DirectoryCrashes) -> Result<String> {
    let groups = groups_of(crashes);
    let list = JsonList {
        dir,
        crashes: crashes.entries.len(),
        source: if crashes.from_reports { "reports" } else { "index" },
        unreadable: crashes.unreadable,
        groups: groups.newest_last(),
    };
    let mut json = serde_json::to_string_pretty(&list).context("encoding the crash groups")?;
    json.push('\n');
    Ok(json)
}

/// The one group starting with `prefix`, and its newest report that is still on disk (as a path without extension).
fn newest_report(dir: &Path, crashes: &DirectoryCrashes, prefix: &str, json: bool) -> Result<(CrashGroup, PathBuf)> {
    let groups = groups_of(crashes);
    let group = match groups.matching(prefix)[..] {
        [] => bail!(
            "no crash signature starting with `{prefix}` in {}: `profiler crashes --dir {}` lists them",
            dir.display(),
            dir.display()
        ),
        [group] => group.clone(),
        ref several => {
            let ids: Vec<&str> = several.iter().take(5).map(|g| g.signature.as_str()).collect();
            bail!(
                "`{prefix}` starts {} signatures in {} ({}{}): give more of its digits",
                several.len(),
                dir.display(),
                ids.join(", "),
                if several.len() > ids.len() { ", …" } else { "" }
            )
        }
    };
    let extension = if json { "json" } else { "txt" };
    let newest = crashes
        .entries
        .iter()
        .rev()
        .filter(|entry| entry.signature == group.signature)
        .filter_map(|entry| entry.report.as_deref())
        .filter(|base| is_report_base(base))
        .map(|base| dir.join(base))
        .find(|base| with_extension(base, extension).is_file());
    match newest {
        Some(base) => Ok((group, base)),
        None => bail!(
            "signature {} has {} in {} but no report file left to show (suppressed by the per-signature budget, \
             over the directory's quota, or removed)",
            group.signature,
            describe_counts(&group),
            dir.display()
        ),
    }
}

fn with_extension(base: &Path, extension: &str) -> PathBuf {
    let mut path = base.as_os_str().to_owned();
    path.push(".");
    path.push(extension);
    PathBuf::from(path)
}

/// The text (or JSON) file of the report at `base`.
fn read_report(base: &Path, json: bool) -> Result<String> {
    let path = with_extension(base, if json { "json" } else { "txt" });
    let file = fs::File::open(&path).map_err(|err| {
        if err.kind() == io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "there is no report {}: `profiler crashes --dir DIR` lists the crashes and their reports",
                path.display()
            )
        } else {
            anyhow::anyhow!("cannot read the report {}: {err}", path.display())
        }
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_REPORT_BYTES).read_to_end(&mut bytes).with_context(|| format!("reading {}", path.display()))?;
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crash::{budget::Suppression, index::IndexEntry};
    use crate::test_support::TempDir;

    fn entry(signature: &str, second: u32, report: Option<&str>) -> IndexEntry {
        IndexEntry {
            signature: signature.into(),
            title: format!("SIGSEGV in f_{signature}"),
            time: format!("2026-01-01T00:00:{second:02}Z"),
            pid: 100 + second,
            process_name: "python3".into(),
            signal: "SIGSEGV".into(),
            report: report.map(str::to_owned),
            suppressed: report.is_none().then_some(Suppression::SameSignature),
            frames: vec![format!("f_{signature} (libx.so)")],
        }
    }

    /// A directory with an index of two signatures; `aaaa…` has one report file left.
    fn directory(tag: &str) -> TempDir {
        let tmp = TempDir::new("crashes-cmd", tag);
        let mut index = Vec::new();
        for e in [
            entry("aaaa000000000001", 1, Some("crash-101-SIGSEGV-1700000000001")),
            entry("bbbb000000000002", 2, Some("crash-102-SIGSEGV-1700000000002")),
            entry("aaaa000000000001", 3, None),
            entry("aaaa000000000001", 4, Some("crash-104-SIGSEGV-1700000000004")),
        ] {
            index.extend(e.to_line().unwrap());
        }
        fs::write(tmp.0.join(INDEX_FILE), index).unwrap();
        fs::write(tmp.0.join("crash-101-SIGSEGV-1700000000001.txt"), "crash: first\n").unwrap();
        fs::write(tmp.0.join("crash-104-SIGSEGV-1700000000004.txt"), "crash: newest\n").unwrap();
        tmp
    }

    #[test]
    fn lists_groups_newest_last() {
        let tmp = directory("list");
        let crashes = load(&tmp.0).unwrap();
        let text = list_text(&tmp.0, &crashes);
        assert!(text.starts_with("4 crashes in "), "{text}");
        let (b, a) = (text.find("bbbb000000000002").unwrap(), text.find("aaaa000000000001").unwrap());
        assert!(b < a, "the group seen last comes last:\n{text}");
        assert!(text.contains("aaaa000000000001  3 crashes (2 reports, 1 suppressed)"), "{text}");
        assert!(text.contains("first seen 2026-01-01T00:00:01Z, last seen 2026-01-01T00:00:04Z (PID 104)"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&list_json(&tmp.0, &crashes).unwrap()).unwrap();
        assert_eq!(json["crashes"], 4);
        assert_eq!(json["groups"][1]["signature"], "aaaa000000000001");
        assert_eq!(json["groups"][1]["count"], 3);
        assert_eq!(json["groups"][1]["suppressed"], 1);
    }

    #[test]
    fn shows_the_newest_report_left_of_a_signature() {
        let tmp = directory("show");
        let crashes = load(&tmp.0).unwrap();
        let (group, base) = newest_report(&tmp.0, &crashes, "aaaa", false).unwrap();
        assert_eq!(group.count, 3);
        assert_eq!(read_report(&base, false).unwrap(), "crash: newest\n");
        fs::remove_file(tmp.0.join("crash-104-SIGSEGV-1700000000004.txt")).unwrap();
        let (_, base) = newest_report(&tmp.0, &crashes, "aaaa", false).unwrap();
        assert_eq!(read_report(&base, false).unwrap(), "crash: first\n");
        let one_line = |err: anyhow::Error| {
            let err = format!("{err:#}");
            assert!(!err.contains('\n'), "{err}");
            err
        };
        assert!(one_line(newest_report(&tmp.0, &crashes, "bbbb", false).unwrap_err()).contains("no report file left"));
        assert!(one_line(newest_report(&tmp.0, &crashes, "cc", false).unwrap_err()).contains("lists them"));
        let err = one_line(newest_report(&tmp.0, &crashes, "", false).unwrap_err());
        assert!(err.contains("starts 2 signatures"), "{err}");
    }

    #[test]
    fn says_what_to_do_without_crashes() {
        let tmp = TempDir::new("crashes-cmd", "empty");
        let err = format!("{:#}", load(&tmp.0).err().unwrap());
        assert!(err.contains("no crashes recorded") && !err.contains('\n'), "{err}");
        let err = format!("{:#}", load(&tmp.0.join("missing")).err().unwrap());
        assert!(err.contains("there is no crash directory") && err.contains("--dir"), "{err}");
        let err = format!("{:#}", read_report(&tmp.0.join("crash-1-SIGSEGV-1"), false).unwrap_err());
        assert!(err.contains("there is no report"), "{err}");
    }
}
