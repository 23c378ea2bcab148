//! Lists the processes on the host and reads who each one is: name, command line, start time, parent,
//! descendants.
//!
//! A process is identified by (pid, start time), so that a reused PID is never taken for the process we chose.
use std::fs;

/// A running process, as /proc shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Process {
    pub pid: u32,
    /// The process name (`/proc/PID/comm`, at most 15 bytes).
    pub name: String,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
}

impl Process {
    /// The process `pid` if it runs (not a zombie).
    pub(crate) fn read(pid: u32) -> Option<Process> {
        let stat = read_stat(pid)?;
        if stat.state == 'Z' {
            return None;
        }
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        // The name is the process's to choose: escaped where it enters, like every name a target controls.
        let name = crate::sanitize::name(comm.trim_end_matches('\n')).into_owned();
        Some(Process { pid, name, start_time: stat.start_time })
    }

    /// True while the same process (same start time) still runs and is not a zombie.
    pub(crate) fn is_alive(&self) -> bool {
        read_stat(self.pid).is_some_and(|stat| stat.start_time == self.start_time && stat.state != 'Z')
    }
}

/// The command line of a process, arguments joined by spaces.
pub(crate) fn cmdline(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> =
        raw.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    Some(args.join(" "))
}

/// The PIDs of every process on the host (as far as this PID namespace shows them).
pub(crate) fn all_pids() -> impl Iterator<Item = u32> {
    fs::read_dir("/proc").into_iter().flatten().filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
}

/// The running descendants of `roots` (children, grandchildren, ...), found through each process's parent pid.
pub(crate) fn descendants(roots: &[u32]) -> Vec<Process> {
    let parents: Vec<(u32, u32)> = all_pids().filter_map(|pid| Some((pid, read_parent(pid)?))).collect();
    let mut found: Vec<u32> = roots.to_vec();
    let mut index = 0;
    while index < found.len() {
        let parent = found[index];
        found.extend(parents.iter().filter(|&&(_, ppid)| ppid == parent).map(|&(pid, _)| pid));
        index += 1;
    }
    found.into_iter().skip(roots.len()).filter_map(Process::read).collect()
}

fn read_parent(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].split_ascii_whitespace().nth(1)?.parse().ok()
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
    fn reads_this_process() {
        let me = Process::read(std::process::id()).unwrap();
        assert!(me.is_alive());
        assert!(Process::read(u32::MAX - 1).is_none());
    }
}
