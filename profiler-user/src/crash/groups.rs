//! Crashes grouped by signature: how many, since when, until when, in which processes, and the newest report of
//! each. `profiler crashes` builds the groups of a crash directory from its index; `run` keeps them for the crashes
//! it sees (bounded, a long-lived agent cannot grow them without end).
use std::collections::HashMap;

use serde::Serialize;

use super::{budget::Suppression, index::IndexEntry};

/// Process names kept per group (the first ones seen).
const MAX_PROCESS_NAMES: usize = 8;

/// The crashes of one signature.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct CrashGroup {
    pub signature: String,
    pub title: String,
    /// The names the signature is made of, innermost first.
    pub frames: Vec<String>,
    /// Every crash of the group, reported or not.
    pub count: u64,
    /// Crashes with report files.
    pub reports: u64,
    /// Crashes a budget or the quota left without report files.
    pub suppressed: u64,
    pub first_seen: String,
    pub last_seen: String,
    /// The names of the processes that crashed, first seen first.
    pub processes: Vec<String>,
    /// The newest crash's pid.
    pub last_pid: u32,
    /// The newest report's file name without extension.
    pub newest_report: Option<String>,
    /// The order of the last crash among all (ties of `last_seen`, which is to the second).
    #[serde(skip)]
    last_order: u64,
}

/// Groups by signature id, at most `max` of them: past it, the group seen least recently is forgotten.
pub(crate) struct CrashGroups {
    groups: HashMap<String, CrashGroup>,
    max: usize,
    added: u64,
}

impl CrashGroups {
    pub(crate) fn new(max: usize) -> Self {
        Self { groups: HashMap::new(), max: max.max(1), added: 0 }
    }

    /// Counts one crash; returns its group.
    pub(crate) fn add(&mut self, entry: &IndexEntry) -> &CrashGroup {
        self.added += 1;
        if self.groups.len() >= self.max && !self.groups.contains_key(&entry.signature) {
            let stalest = self.groups.values().min_by_key(|g| g.last_order).map(|g| g.signature.clone());
            if let Some(stalest) = stalest {
                self.groups.remove(&stalest);
            }
        }
        let group = self.groups.entry(entry.signature.clone()).or_insert_with(|| CrashGroup {
            signature: entry.signature.clone(),
            title: entry.title.clone(),
            frames: entry.frames.clone(),
            count: 0,
            reports: 0,
            suppressed: 0,
            first_seen: entry.time.clone(),
            last_seen: entry.time.clone(),
            processes: Vec::new(),
            last_pid: entry.pid,
            newest_report: None,
            last_order: 0,
        });
        group.count += 1;
        if entry.report.is_some() {
            group.reports += 1;
            group.newest_report = entry.report.clone();
        }
        if entry.suppressed.is_some() {
            group.suppressed += 1;
        }
        // RFC 3339 UTC to the second compares as text.
        if entry.time < group.first_seen {
            group.first_seen = entry.time.clone();
        }
        if entry.time >= group.last_seen {
            group.last_seen = entry.time.clone();
            group.last_pid = entry.pid;
        }
        if group.processes.len() < MAX_PROCESS_NAMES && !group.processes.contains(&entry.process_name) {
            group.processes.push(entry.process_name.clone());
        }
        group.last_order = self.added;
        group
    }

    /// Every group, the one seen last at the end.
    pub(crate) fn newest_last(&self) -> Vec<&CrashGroup> {
        let mut groups: Vec<&CrashGroup> = self.groups.values().collect();
        groups.sort_by(|a, b| (&a.last_seen, a.last_order).cmp(&(&b.last_seen, b.last_order)));
        groups
    }

    /// The groups whose signature starts with `prefix` (any case).
    pub(crate) fn matching(&self, prefix: &str) -> Vec<&CrashGroup> {
        let prefix = prefix.to_ascii_lowercase();
        self.newest_last().into_iter().filter(|g| g.signature.starts_with(&prefix)).collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.groups.len()
    }
}

/// A group's counts in words: `10 crashes (3 reports, 7 suppressed)`.
pub(crate) fn describe_counts(group: &CrashGroup) -> String {
    let crashes = if group.count == 1 { "1 crash".to_owned() } else { format!("{} crashes", group.count) };
    if group.suppressed == 0 {
        return crashes;
    }
    let reports = if group.reports == 1 { "1 report".to_owned() } else { format!("{} reports", group.reports) };
    format!("{crashes} ({reports}, {} suppressed)", group.suppressed)
}

/// How `run` says what it did with one crash of a group.
pub(crate) fn describe_crash(group: &CrashGroup, suppressed: Option<Suppression>) -> String {
    let what = match suppressed {
        Some(reason) => format!(" ({})", reason.describe()),
        None => String::new(),
    };
    format!("crash signature {} ({}): {} so far{what}", group.signature, group.title, describe_counts(group))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(signature: &str, time: &str, pid: u32, report: bool) -> IndexEntry {
        IndexEntry {
            signature: signature.into(),
            title: format!("SIGSEGV in {signature}"),
            time: time.into(),
            pid,
            process_name: if pid.is_multiple_of(2) { "python3".into() } else { "worker".into() },
            signal: "SIGSEGV".into(),
            report: report.then(|| format!("crash-{pid}-SIGSEGV-1700000000000")),
            suppressed: (!report).then_some(Suppression::SameSignature),
            frames: vec![signature.into()],
        }
    }

    #[test]
    fn counts_first_and_last_seen_and_processes() {
        let mut groups = CrashGroups::new(100);
        groups.add(&entry("aaaa", "2026-01-01T00:00:05Z", 2, true));
        groups.add(&entry("bbbb", "2026-01-01T00:00:06Z", 3, true));
        groups.add(&entry("aaaa", "2026-01-01T00:00:07Z", 5, false));
        groups.add(&entry("aaaa", "2026-01-01T00:00:01Z", 4, true));
        let listed = groups.newest_last();
        assert_eq!(listed.iter().map(|g| g.signature.as_str()).collect::<Vec<_>>(), ["bbbb", "aaaa"]);
        let a = listed[1];
        assert_eq!((a.count, a.reports, a.suppressed), (3, 2, 1));
        assert_eq!(
            (a.first_seen.as_str(), a.last_seen.as_str(), a.last_pid),
            ("2026-01-01T00:00:01Z", "2026-01-01T00:00:07Z", 5)
        );
        assert_eq!(a.processes, ["python3", "worker"]);
        assert_eq!(a.newest_report.as_deref(), Some("crash-4-SIGSEGV-1700000000000"));
        assert_eq!(describe_counts(a), "3 crashes (2 reports, 1 suppressed)");
        assert_eq!(describe_counts(listed[0]), "1 crash");
    }

    #[test]
    fn prefixes_find_groups_and_the_number_of_groups_is_bounded() {
        let mut groups = CrashGroups::new(2);
        groups.add(&entry("ab12", "2026-01-01T00:00:01Z", 2, true));
        groups.add(&entry("ab34", "2026-01-01T00:00:02Z", 2, true));
        assert_eq!(groups.matching("AB").len(), 2);
        assert_eq!(groups.matching("ab3")[0].signature, "ab34");
        assert!(groups.matching("ff").is_empty());
        groups.add(&entry("cd56", "2026-01-01T00:00:03Z", 2, true));
        assert_eq!(groups.len(), 2);
        assert!(groups.matching("ab12").is_empty(), "the group seen least recently went");
    }
}
