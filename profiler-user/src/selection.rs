//! Which processes we profile: the user's choice (`--pid`, `--name`, `--match-cmdline`) resolved against the
//! running processes, and matched against the processes that start later.
use anyhow::{bail, Result};

use crate::process::{self, Process};

/// How the user named the processes to profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TargetSpec {
    Pids(Vec<u32>),
    Name(String),
    /// Matched against the command line (arguments joined by spaces).
    Cmdline(CmdlinePattern),
}

/// A `--match-cmdline` regular expression, compiled once: it is matched at every exec on the host.
#[derive(Clone, Debug)]
pub(crate) struct CmdlinePattern(regex::Regex);

impl CmdlinePattern {
    pub(crate) fn new(pattern: &str) -> Result<Self> {
        match regex::Regex::new(pattern) {
            Ok(regex) => Ok(Self(regex)),
            Err(err) => bail!("--match-cmdline `{pattern}` is not a valid regular expression: {err}"),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        self.0.as_str()
    }

    fn matches(&self, pid: u32) -> bool {
        process::cmdline(pid).is_some_and(|cmdline| self.0.is_match(&cmdline))
    }
}

impl PartialEq for CmdlinePattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for CmdlinePattern {}

impl TargetSpec {
    /// Whether a process that just started (or exec'd) with this name is one to profile. `Pids` never matches
    /// new processes (their children are followed by the kernel instead).
    pub(crate) fn matches_new(&self, pid: u32, comm: &str) -> bool {
        match self {
            TargetSpec::Pids(_) => false,
            TargetSpec::Name(name) => comm_matches(comm, name),
            TargetSpec::Cmdline(pattern) => pattern.matches(pid),
        }
    }

    /// True when new processes can match (`--name`, `--match-cmdline`).
    pub(crate) fn follows_new_processes(&self) -> bool {
        !matches!(self, TargetSpec::Pids(_))
    }

    /// For messages: "the PIDs [1, 2]", "the name `uvicorn`", ...
    pub(crate) fn describe(&self) -> String {
        match self {
            TargetSpec::Pids(pids) => format!("the PIDs {pids:?}"),
            TargetSpec::Name(name) => format!("the name `{name}`"),
            TargetSpec::Cmdline(pattern) => format!("the command line pattern `{}`", pattern.as_str()),
        }
    }
}

/// Resolves the spec against the running processes; an empty result is an error that says what to check.
pub(crate) fn resolve(spec: &TargetSpec) -> Result<Vec<Process>> {
    match spec {
        TargetSpec::Pids(pids) => pids
            .iter()
            .map(|&pid| {
                Process::read(pid).ok_or_else(|| {
                    anyhow::anyhow!("no process with PID {pid} is running (check it with `ps -p {pid}`)")
                })
            })
            .collect(),
        TargetSpec::Name(name) => {
            let found: Vec<Process> =
                process::all_pids().filter_map(Process::read).filter(|p| comm_matches(&p.name, name)).collect();
            if found.is_empty() {
                bail!(
                    "no running process is named `{name}` (names are the first 15 bytes of the executable name, as \
                     `ps -e -o comm` shows them; try `pgrep -l {name}`)"
                );
            }
            Ok(found)
        }
        TargetSpec::Cmdline(pattern) => {
            let me = std::process::id();
            let found: Vec<Process> = process::all_pids()
                .filter(|&pid| pid != me && pattern.matches(pid))
                .filter_map(Process::read)
                .collect();
            if found.is_empty() {
                let pattern = pattern.as_str();
                bail!("no running process has a command line matching `{pattern}` (try `pgrep -af '{pattern}'`)");
            }
            Ok(found)
        }
    }
}

/// The kernel truncates comm to 15 bytes, so a longer name matches on its first 15 bytes.
fn comm_matches(comm: &str, wanted: &str) -> bool {
    let mut end = wanted.len().min(15);
    while !wanted.is_char_boundary(end) {
        end -= 1;
    }
    comm == &wanted[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_command_line_pattern_is_compiled_once_and_checked() {
        let pattern = CmdlinePattern::new("uvicorn .*app").unwrap();
        assert_eq!(pattern.as_str(), "uvicorn .*app");
        let err = CmdlinePattern::new("(").unwrap_err().to_string();
        assert!(err.contains("not a valid regular expression"), "{err}");
        let me = TargetSpec::Cmdline(
            CmdlinePattern::new(&regex::escape(&process::cmdline(std::process::id()).unwrap())).unwrap(),
        );
        assert!(me.matches_new(std::process::id(), ""));
    }
}
