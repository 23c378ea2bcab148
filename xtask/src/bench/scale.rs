//! Section 9 of the report: the agent's cost as the work grows, as curves rather than one point. A master with
//! 1, 8 and 64 forked worker processes (a gunicorn/uvicorn pool), one process with 8, 64 and 512 threads, and a
//! master starting short-lived workers (churn), all running the same handler mix (bench/workloads/pool.py).
//!
//! Every worker is busy, so the machine's two CPUs are saturated at every point and the samples per second stay
//! the same: what grows with the points is what the agent keeps per process and per thread (maps, unwind tables,
//! Python state, thread names) and what it does per process (attaching, following forks and exits). The target's
//! CPU is the machine's busy time minus the agent's (the bench runs alone), because short-lived workers leave no
//! process to read it from. Only our profiler: py-spy follows a pool only with `--subprocesses`, which attaches a
//! sampler per process, and perf's cost does not depend on what a process is.
use std::{
    fs,
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{ensure, Context as _, Result};

use super::{
    agent::Agent,
    process::{monotonic, status_field},
    Bench, Tool, PYTHON,
};
use crate::demo;

/// After attaching: long enough for 64 processes' maps and unwind tables to be read.
pub(super) const SCALE_SETTLE: Duration = Duration::from_secs(4);
pub(super) const SCALE_WINDOW: Duration = Duration::from_secs(8);

/// One point of a curve.
#[derive(Clone, Debug)]
pub(super) struct ScalePoint {
    pub(super) mode: &'static str,
    pub(super) count: u32,
    /// Processes and threads the agent followed at the end of the window.
    pub(super) processes: usize,
    pub(super) threads: usize,
    pub(super) agent_per_target: f64,
    pub(super) agent_core_share: f64,
    pub(super) rss_end_mib: f64,
    pub(super) max_rss_mib: f64,
}

/// The machine's busy CPU time so far, in nanoseconds (`/proc/stat`'s first line, ticks of 10 ms).
fn machine_busy_ns() -> u64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let busy = [0, 1, 2, 5, 6].iter().filter_map(|&i| ticks.get(i)).sum::<u64>();
    busy * 10_000_000
}

/// The processes in `pid`'s tree and their threads.
fn tree(pid: u32) -> (usize, usize) {
    let mut processes = 0;
    let mut threads = 0;
    let mut queue = vec![pid];
    while let Some(pid) = queue.pop() {
        processes += 1;
        threads += fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count);
        let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        queue.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
    }
    (processes, threads)
}

fn rss_mib(pid: u32) -> f64 {
    status_field(pid, "VmRSS:")
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

impl Bench {
    /// 9. Each point once: the curves' shape is the result, and each point runs long enough to average.
    pub(super) fn scaling(&mut self) -> Result<Vec<ScalePoint>> {
        let mut points = Vec::new();
        for (mode, count) in [
            ("processes", 1),
            ("processes", 8),
            ("processes", 64),
            ("threads", 8),
            ("threads", 64),
            ("threads", 512),
            ("churn", 4),
        ] {
            let lifetime = (SCALE_SETTLE + SCALE_WINDOW + Duration::from_secs(60)).as_secs();
            let mut start = Command::new(PYTHON);
            start.arg(self.workload("pool.py")).args([mode, &count.to_string(), &lifetime.to_string()]);
            start.stdout(Stdio::piped());
            let mut workload = demo::spawn_background(&mut start)?;
            let pid = workload.0.id();
            let stdout = workload.0.stdout.take().context("pool.py's stdout")?;
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line)?;
            ensure!(line.trim() == "ready", "pool.py {mode} {count} did not start: {line:?}");
            let dir = self.run_dir(&format!("scale-{mode}-{count}"), Tool::Ours)?;
            let agent = Agent::start(self, Tool::Ours, pid, &dir)?.context("our profiler")?;
            thread::sleep(SCALE_SETTLE);
            let before = (agent.cpu_ns(), machine_busy_ns(), monotonic());
            thread::sleep(SCALE_WINDOW);
            let after = (agent.cpu_ns(), machine_busy_ns(), monotonic());
            let (processes, threads) = tree(pid);
            let rss_end_mib = rss_mib(agent.pid());
            let finished = agent.stop()?;
            // The whole pool: spawn_background made the master a process-group leader.
            // SAFETY: kill has no memory preconditions; the group is the workload's own.
            unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
            drop(workload);
            let agent_ns = after.0.saturating_sub(before.0) as f64;
            let target_ns = (after.1.saturating_sub(before.1) as f64 - agent_ns).max(1.0);
            let point = ScalePoint {
                mode,
                count,
                processes,
                threads,
                agent_per_target: agent_ns / target_ns,
                agent_core_share: agent_ns / after.2.saturating_sub(before.2) as f64,
                rss_end_mib,
                max_rss_mib: finished.max_rss_kib as f64 / 1024.0,
            };
            eprintln!(
                "  {mode} {count}: {processes} processes, {threads} threads; agent {:.2}% of the targets' CPU, {:.2}% \
                 of a core, RSS {rss_end_mib:.1} MiB (peak {:.1})",
                point.agent_per_target * 100.0,
                point.agent_core_share * 100.0,
                point.max_rss_mib
            );
            points.push(point);
        }
        Ok(points)
    }
}
