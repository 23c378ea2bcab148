//! Which processes we profile: resolves `--pid` and `--name` to running processes and tells when they are gone.
//!
//! A process is identified by (pid, start time) so that a reused PID is never taken for the process we chose.
use std::fs;

use anyhow::{Result, bail};

/// A process chosen for profiling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub pid: u32,
    /// The process name (`/proc/PID/comm`, at most 15 bytes).
    pub name: String,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
}

/// How the user named the processes to profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    Pids(Vec<u32>),
    Name(String),
}

/// Resolves the spec against the running processes; an empty result is an error that says what to check.
pub fn resolve(spec: &TargetSpec) -> Result<Vec<Target>> {
    match spec {
        TargetSpec::Pids(pids) => pids
            .iter()
            .map(|&pid| {
                read_target(pid).ok_or_else(|| {
                    anyhow::anyhow!("no process with PID {pid} is running (check it with `ps -p {pid}`)")
                })
            })
            .collect(),
        TargetSpec::Name(name) => {
            let found: Vec<Target> = list_pids().filter_map(read_target).filter(|t| comm_matches(&t.name, name)).collect();
            if found.is_empty() {
                bail!(
                    "no running process is named `{name}` (names are the first 15 bytes of the executable name, as \
                     `ps -e -o comm` shows them; try `pgrep -l {name}`)"
                );
            }
            Ok(found)
        }
    }
}

impl Target {
    /// True while the same process (same start time) still runs and is not a zombie.
    pub fn is_alive(&self) -> bool {
        read_stat(self.pid).is_some_and(|stat| stat.start_time == self.start_time && stat.state != 'Z')
    }
}

/// The kernel truncates comm to 15 bytes, so a longer name matches on its first 15 bytes.
fn comm_matches(comm: &str, wanted: &str) -> bool {
    let wanted = truncate_to_comm(wanted);
    comm == wanted
}

fn truncate_to_comm(name: &str) -> &str {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

fn list_pids() -> impl Iterator<Item = u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
}

fn read_target(pid: u32) -> Option<Target> {
    let stat = read_stat(pid)?;
    if stat.state == 'Z' {
        return None;
    }
    let name = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?.trim_end_matches('\n').to_owned();
    Some(Target { pid, name, start_time: stat.start_time })
}

struct ProcStat {
    state: char,
    start_time: u64,
}

fn read_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `/proc/PID/stat`: the comm field is in parentheses and may itself contain spaces and parentheses, so fields
/// are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<ProcStat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state (field 3) comes field 4; start time is field 22.
    let start_time = fields.nth(22 - 4)?.parse().ok()?;
    Some(ProcStat { state, start_time })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_comm() {
        let stat = "1234 (a) b (c) R 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21";
        let parsed = parse_stat(stat).unwrap();
        assert_eq!(parsed.state, 'R');
        assert_eq!(parsed.start_time, 987654);
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) R 1 2").is_none());
    }

    #[test]
    fn long_names_match_on_their_comm_prefix() {
        assert!(comm_matches("quake-monitor-w", "quake-monitor-worker"));
        assert!(comm_matches("uvicorn", "uvicorn"));
        assert!(!comm_matches("uvicorn", "uvicor"));
    }

    #[test]
    fn resolves_this_process_and_rejects_missing_ones() {
        let me = std::process::id();
        let targets = resolve(&TargetSpec::Pids(vec![me])).unwrap();
        assert_eq!(targets[0].pid, me);
        assert!(targets[0].is_alive());

        let err = resolve(&TargetSpec::Pids(vec![u32::MAX - 1])).unwrap_err().to_string();
        assert!(err.contains("no process with PID"), "{err}");
        let err = resolve(&TargetSpec::Name("no-such-process-name".into())).unwrap_err().to_string();
        assert!(err.contains("no running process is named `no-such-process-name`"), "{err}");
    }
}
