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
    /// A regular expression matched against the command line (arguments joined by spaces).
    Cmdline(String),
}

impl TargetSpec {
    /// Whether a process that just started (or exec'd) with this name is one to profile. `Pids` never matches
    /// new processes (their children are followed by the kernel instead).
    pub fn matches_new(&self, pid: u32, comm: &str) -> bool {
        match self {
            TargetSpec::Pids(_) => false,
            TargetSpec::Name(name) => comm_matches(comm, name),
            TargetSpec::Cmdline(pattern) => {
                regex::Regex::new(pattern).is_ok_and(|re| read_cmdline(pid).is_some_and(|cmd| re.is_match(&cmd)))
            }
        }
    }

    /// True when new processes can match (`--name`, `--match-cmdline`).
    pub fn follows_new_processes(&self) -> bool {
        !matches!(self, TargetSpec::Pids(_))
    }
}

/// The command line of a process, arguments joined by spaces.
pub fn read_cmdline(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> =
        raw.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    Some(args.join(" "))
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
        TargetSpec::Cmdline(pattern) => {
            let re = regex::Regex::new(pattern).map_err(|err| anyhow::anyhow!("--match-cmdline `{pattern}`: {err}"))?;
            let me = std::process::id();
            let found: Vec<Target> = list_pids()
                .filter(|&pid| pid != me && read_cmdline(pid).is_some_and(|cmd| re.is_match(&cmd)))
                .filter_map(read_target)
                .collect();
            if found.is_empty() {
                bail!("no running process has a command line matching `{pattern}` (try `pgrep -af '{pattern}'`)");
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

/// The running descendants of `roots` (children, grandchildren, ...), found through each process's parent pid.
pub fn descendants(roots: &[u32]) -> Vec<Target> {
    let parents: Vec<(u32, u32)> = list_pids().filter_map(|pid| Some((pid, read_parent(pid)?))).collect();
    let mut found: Vec<u32> = roots.to_vec();
    let mut index = 0;
    while index < found.len() {
        let parent = found[index];
        found.extend(parents.iter().filter(|&&(_, ppid)| ppid == parent).map(|&(pid, _)| pid));
        index += 1;
    }
    found.into_iter().skip(roots.len()).filter_map(read_target).collect()
}

fn read_parent(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].split_ascii_whitespace().nth(1)?.parse().ok()
}

/// The process `pid` if it runs (not a zombie).
pub fn read_target(pid: u32) -> Option<Target> {
    let stat = read_stat(pid)?;
    if stat.state == 'Z' {
        return None;
    }
    let name = crate::sanitize::name(fs::read_to_string(format!("/proc/{pid}/comm")).ok()?.trim_end_matches('\n')).into_owned();
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
    fn finds_descendants_of_this_process() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let found = descendants(&[std::process::id()]);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found.iter().any(|t| t.pid == child.id()), "{found:?}");
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
