//! Running a profiler: starting each tool on a target, stopping it and reaping it with `wait4` (its CPU time and
//! peak RSS), and reading what it left (stacks in each tool's format, lost samples, our `--stats-json`).
//!
//! Kept apart so that every section drives a profiler the same way and the differences between the tools (their
//! command lines, output formats and exit statuses) are in one place.
use std::{
    fs, io,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};

use super::{
    process::{catches_sigint, process_cpu_ns, process_exists_unreaped, signal},
    Bench, Tool, AGENT_START_TIMEOUT, AGENT_STOP_TIMEOUT, RATE_HZ,
};
use crate::cmd;

/// Our userspace cost per sample and stage, in microseconds, from `--stats-json`.
#[derive(Clone, Debug, Default)]
pub(super) struct StageCosts {
    pub(super) cold: [f64; 6],
    pub(super) warm: [f64; 6],
    pub(super) cold_samples: u64,
    pub(super) warm_samples: u64,
}

pub(super) const STAGES: [&str; 6] = ["unwind", "python", "symbolize", "merge", "aggregate", "total"];

/// A profiler attached to a target, in its own process group so the bench's Ctrl-C does not reach it first; it
/// is reaped here with `wait4`, which also gives its CPU time and peak RSS, and killed if the bench leaves early.
pub(super) struct Agent {
    tool: Tool,
    child: Option<Child>,
    dir: PathBuf,
}

/// What a stopped profiler left.
pub(super) struct Finished {
    tool: Tool,
    dir: PathBuf,
    pub(super) cpu_s: f64,
    pub(super) max_rss_kib: i64,
    /// What the tool printed, both streams.
    output: String,
}

/// Waits until a profiler started as `line` has installed its SIGINT handler, which each of them does as it begins
/// to sample; fails with what it wrote to `output` if it exits first.
pub(super) fn wait_until_sampling(child: &mut Child, line: &str, output: &Path) -> Result<()> {
    let deadline = Instant::now() + AGENT_START_TIMEOUT;
    while !catches_sigint(child.id()) {
        if let Some(status) = child.try_wait().ok().flatten() {
            bail!("`{line}` exited at once ({status}): {}", fs::read_to_string(output)?);
        }
        ensure!(Instant::now() < deadline, "`{line}` did not start within {AGENT_START_TIMEOUT:?}");
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

impl Agent {
    /// Starts `tool` on `pid` (nothing for `Tool::None`) and returns once it has installed its SIGINT handler,
    /// which each of them does as it begins to sample.
    pub(super) fn start(bench: &Bench, tool: Tool, pid: u32, dir: &Path) -> Result<Option<Agent>> {
        let pid_arg = pid.to_string();
        let rate = RATE_HZ.to_string();
        let mut command = match tool {
            Tool::None => return Ok(None),
            Tool::Ours | Tool::OursOffCpu | Tool::OursMemory => {
                let mut ours = Command::new(&bench.profiler);
                ours.args(["record", "--pid", &pid_arg, "--rate", &rate, "-o", "profile.folded"]);
                ours.args(["--stats-json", "stats.json"]);
                let kinds = match tool {
                    Tool::OursOffCpu => Some("cpu,off-cpu"),
                    Tool::OursMemory => Some("cpu,memory"),
                    _ => None,
                };
                if let Some(kinds) = kinds {
                    ours.args(["--profile", kinds]);
                }
                ours
            }
            Tool::PySpy => {
                let mut py_spy = Command::new(&bench.py_spy);
                py_spy.args(["record", "--native", "--rate", &rate, "--pid", &pid_arg]);
                py_spy.args(["--format", "raw", "--output", "profile.txt"]);
                py_spy
            }
            Tool::Perf => {
                let mut perf = Command::new("perf");
                // CLOCK_MONOTONIC timestamps, to count the samples inside a window timed here.
                perf.args(["record", "-F", &rate, "--call-graph", "dwarf", "-k", "CLOCK_MONOTONIC"]);
                perf.args(["-p", &pid_arg, "-o", "perf.data"]);
                perf
            }
        };
        // Both streams in one file: py-spy prints its summary (samples, errors) on stdout, the others on stderr.
        let output = fs::File::create(dir.join("output.txt"))?;
        command.current_dir(dir).stdin(Stdio::null()).stdout(output.try_clone()?).stderr(output).process_group(0);
        let line = cmd::display(&command);
        let child = command.spawn().with_context(|| format!("could not start `{line}`"))?;
        let mut agent = Agent { tool, child: Some(child), dir: dir.to_owned() };
        if let Some(child) = agent.child.as_mut() {
            wait_until_sampling(child, &line, &dir.join("output.txt"))?;
        }
        Ok(Some(agent))
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// CPU time of the profiler so far, all its threads.
    pub(super) fn cpu_ns(&self) -> u64 {
        process_cpu_ns(self.pid())
    }

    /// Stops it with SIGINT (every one of them then writes its output) and waits.
    pub(super) fn stop(self) -> Result<Finished> {
        signal(self.pid(), libc::SIGINT);
        self.wait()
    }

    /// Waits a little for a profiler whose target exited to end by itself, else stops it.
    pub(super) fn finish_after_target(self) -> Result<Finished> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !process_exists_unreaped(self.pid()) {
                return self.wait();
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.stop()
    }

    fn wait(mut self) -> Result<Finished> {
        let child = self.child.take().context("the profiler was already reaped")?;
        let pid = libc::pid_t::try_from(child.id())?;
        let deadline = Instant::now() + AGENT_STOP_TIMEOUT;
        let (status, usage) = loop {
            let mut status = 0;
            // SAFETY: an all-zero rusage is a valid value of the plain C struct; wait4 writes only to what we own.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: as above; the pid is our unreaped child.
            match unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) } {
                0 if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                0 => {
                    // SAFETY: our unreaped child.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                    bail!("{} did not finish within {AGENT_STOP_TIMEOUT:?}", self.tool.name());
                }
                -1 => bail!("waiting for {}: {}", self.tool.name(), io::Error::last_os_error()),
                _ => break (status, usage),
            }
        };
        let output = fs::read_to_string(self.dir.join("output.txt")).unwrap_or_default();
        // perf exits with the signal's status when interrupted; the others with 0.
        let ok = libc::WIFEXITED(status) && (libc::WEXITSTATUS(status) == 0 || self.tool == Tool::Perf)
            || libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGINT && self.tool == Tool::Perf;
        ensure!(ok, "{} failed (wait status {status:#x}):\n{output}", self.tool.name());
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Ok(Finished {
            tool: self.tool,
            dir: self.dir.clone(),
            cpu_s: seconds(usage.ru_utime) + seconds(usage.ru_stime),
            max_rss_kib: usage.ru_maxrss,
            output,
        })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Finished {
    /// The recorded stacks, whatever the tool's format.
    pub(super) fn stacks(&self) -> Result<Vec<Stack>> {
        match self.tool {
            Tool::Ours | Tool::OursOffCpu | Tool::OursMemory => {
                // process;thread;root;…;leaf count
                let stacks = parse_folded(&self.dir.join("profile.folded"))?;
                Ok(stacks
                    .into_iter()
                    .map(|(mut frames, count)| {
                        let thread = if frames.len() >= 2 { frames.remove(1) } else { String::new() };
                        frames.remove(0);
                        Stack { thread, frames, count, time_ns: None }
                    })
                    .collect())
            }
            // root;…;leaf count, with Python frames as `function (file:line)`; no thread.
            Tool::PySpy => Ok(parse_folded(&self.dir.join("profile.txt"))?
                .into_iter()
                .map(|(frames, count)| Stack { thread: String::new(), frames, count, time_ns: None })
                .collect()),
            Tool::Perf => self.perf_stacks(),
            Tool::None => Ok(Vec::new()),
        }
    }

    /// `perf script` over the recording: one header line per sample (`comm tid time:`), then its frames leaf
    /// first, one per line (`address symbol+offset (dso)`), then an empty line.
    fn perf_stacks(&self) -> Result<Vec<Stack>> {
        let mut script = Command::new("perf");
        script.current_dir(&self.dir).args(["script", "-i", "perf.data", "-F", "comm,tid,time,ip,sym"]);
        let output = script.stderr(Stdio::null()).output().with_context(|| cmd::display(&script))?;
        ensure!(output.status.success(), "`{}` failed", cmd::display(&script));
        let text = String::from_utf8_lossy(&output.stdout);
        let mut stacks = Vec::new();
        for block in text.split("\n\n") {
            let mut lines = block.lines().filter(|l| !l.trim().is_empty());
            let Some(header) = lines.next() else { continue };
            let mut words: Vec<&str> = header.split_whitespace().collect();
            let time_ns = words
                .pop()
                .and_then(|t| t.trim_end_matches(':').parse::<f64>().ok())
                .map(|seconds| (seconds * 1e9) as u64);
            // The comm may hold spaces; the tid is the word before the time.
            words.pop();
            let thread = words.join(" ");
            let mut frames: Vec<String> =
                lines.filter_map(|line| line.split_whitespace().nth(1).map(str::to_owned)).collect();
            frames.reverse();
            stacks.push(Stack { thread, frames, count: 1, time_ns });
        }
        Ok(stacks)
    }

    /// perf's samples with timestamps in [from, to] (CLOCK_MONOTONIC ns): perf does not see Python functions, so
    /// its window is cut by time.
    pub(super) fn perf_samples_between(&self, from: u64, to: u64) -> Result<u64> {
        Ok(self.perf_stacks()?.iter().filter(|s| s.time_ns.is_some_and(|t| (from..=to).contains(&t))).count() as u64)
    }

    /// Samples the tool says it lost: ours counts them, perf reports lost chunks; py-spy's errors are samples it
    /// failed to take.
    pub(super) fn lost(&self) -> Result<Option<u64>> {
        match self.tool {
            Tool::Ours | Tool::OursOffCpu | Tool::OursMemory => {
                Ok(self.stats_json()?.and_then(|stats| stats["lost_samples"].as_u64()))
            }
            Tool::Perf => Ok(Some(number_before(&self.output, " chunks").unwrap_or(0))),
            Tool::PySpy => Ok(number_after(&self.output, "Errors: ")),
            Tool::None => Ok(None),
        }
    }

    fn stats_json(&self) -> Result<Option<serde_json::Value>> {
        if !matches!(self.tool, Tool::Ours | Tool::OursOffCpu | Tool::OursMemory) {
            return Ok(None);
        }
        let path = self.dir.join("stats.json");
        let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Some(serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?))
    }

    pub(super) fn stage_costs(&self) -> Result<Option<StageCosts>> {
        let Some(stats) = self.stats_json()? else { return Ok(None) };
        let per_sample = |part: &serde_json::Value| {
            let samples = part["samples"].as_u64().unwrap_or(0);
            let us = |stage: &str| {
                let ns = part[format!("{stage}_ns")].as_f64().unwrap_or(0.0);
                if samples == 0 {
                    f64::NAN
                } else {
                    ns / 1e3 / samples as f64
                }
            };
            (STAGES.map(us), samples)
        };
        let (cold, cold_samples) = per_sample(&stats["stages"]["cold"]);
        let (warm, warm_samples) = per_sample(&stats["stages"]["warm"]);
        Ok(Some(StageCosts { cold, warm, cold_samples, warm_samples }))
    }
}

/// One distinct stack: the thread it was sampled in (when the tool says), frames root first as bare function
/// names, and how many samples.
pub(super) struct Stack {
    pub(super) thread: String,
    frames: Vec<String>,
    pub(super) count: u64,
    time_ns: Option<u64>,
}

impl Stack {
    pub(super) fn has(&self, function: &str) -> bool {
        self.frames.iter().any(|f| function_name(f) == function)
    }

    pub(super) fn leaf(&self) -> &str {
        self.frames.last().map_or("", |f| function_name(f))
    }

    pub(super) fn root(&self) -> Option<&str> {
        self.frames.first().map(|f| function_name(f))
    }
}

/// The function of a frame as any of the tools prints it: without py-spy's ` (file:line)`, our ` (file)`,
/// perf's `+0x1f` and ` (inlined)`.
fn function_name(frame: &str) -> &str {
    let name = frame.split(" (").next().unwrap_or(frame);
    match name.rfind("+0x") {
        Some(at) if at > 0 && !name.starts_with('[') => &name[..at],
        _ => name,
    }
}

/// `frame;frame;… count` lines.
fn parse_folded(path: &Path) -> Result<Vec<(Vec<String>, u64)>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (stack, count) = line.rsplit_once(' ')?;
            Some((stack.split(';').map(str::to_owned).collect(), count.trim().parse().ok()?))
        })
        .collect())
}

fn number_before(text: &str, marker: &str) -> Option<u64> {
    let before = &text[..text.find(marker)?];
    before.split_whitespace().last()?.parse().ok()
}

fn number_after(text: &str, marker: &str) -> Option<u64> {
    let after = &text[text.find(marker)? + marker.len()..];
    after.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_of_every_tool() {
        assert_eq!(function_name("py_hot (split.py:57)"), "py_hot");
        assert_eq!(function_name("py_hot (/x/split.py)"), "py_hot");
        assert_eq!(function_name("__libc_start_main_impl (inlined)"), "__libc_start_main_impl");
        assert_eq!(function_name("hot_main_a+0x17"), "hot_main_a");
        assert_eq!(function_name("[libfoo.so+0x1a2b]"), "[libfoo.so+0x1a2b]");
        assert_eq!(function_name("<module>"), "<module>");
    }

    #[test]
    fn numbers_in_tool_messages() {
        assert_eq!(number_before("Processed 10 events and lost 3 chunks!", " chunks"), Some(3));
        assert_eq!(number_after("Samples: 812 Errors: 0\n", "Errors: "), Some(0));
    }
}
