//! Section 7 of the report: what the memory profile (`--profile memory`: every page fault of a target sized and
//! sampled in the kernel, see profiler-ebpf's memory.rs) costs, on a service and on a process that does little but
//! grow.
//!
//! The demo app saturated is the service case: its memory is steady, so the cost is the fault path's lookups. grow.py
//! (tests/workloads/python/grow.py) is the worst case: it touches about a GiB of new memory a second, so nearly every
//! one of its faults runs the program and hundreds a second are captured.
use std::{fs, path::Path, thread, time::Duration};

use anyhow::{Context as _, Result};

use super::{
    agent::Agent,
    in_rounds,
    process::{bpf_run_times, monotonic, process_cpu_ns, BpfStats, BPF_PROG_TYPE_PERF_EVENT},
    Bench, PerTool, Tool, LOAD_SECONDS, PYTHON, SETTLE,
};
use crate::demo;

/// How long grow.py is measured per round.
const GROW_SECONDS: u64 = 10;

/// One run of one workload with one configuration.
#[derive(Clone, Debug, Default)]
pub(super) struct MemoryRun {
    /// The workload's own rate: requests/s (the app) or rounds/s (grow.py).
    pub(super) work_per_s: f64,
    /// The profiler's CPU time / the workload's CPU time over the window.
    pub(super) agent_per_target: f64,
    /// In-kernel time of our perf_event program (CPU ticks and, with the memory profile, every page fault of the
    /// machine) / the workload's CPU time.
    pub(super) sampler_share: f64,
}

/// Both workloads' runs, per configuration.
pub(super) struct MemoryCosts {
    pub(super) app: PerTool<MemoryRun>,
    pub(super) grow: PerTool<MemoryRun>,
}

const TOOLS: [Tool; 3] = [Tool::None, Tool::Ours, Tool::OursMemory];

impl Bench {
    pub(super) fn memory_cost(&mut self, rounds: usize) -> Result<MemoryCosts> {
        // In-kernel times are counted only while this is held.
        let _bpf_stats = BpfStats::enable();
        let (server, pid, url) = self.start_app()?;
        let app = in_rounds(&TOOLS, rounds, |round, tool| {
            let dir = self.run_dir("memory-app", tool)?;
            let run = self.measure(&dir, tool, pid, || self.load(&url, LOAD_SECONDS))?;
            eprintln!("  round {}: {:<40} app {}", round + 1, tool.name(), run.describe("requests/s"));
            Ok(run)
        })?;
        drop(server);

        let script = self.root.join("tests/workloads/python/grow.py");
        let totals = self.runs.join("grow.json");
        let mut start = std::process::Command::new(PYTHON);
        start.arg(&script).arg(&totals);
        let grower = demo::spawn_background(&mut start)?;
        let pid = grower.0.id();
        let rounds_done = || -> Result<f64> {
            let text = fs::read_to_string(&totals).with_context(|| format!("reading {}", totals.display()))?;
            let json: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {text}"))?;
            json["rounds"].as_f64().context("no `rounds` in grow.py's totals")
        };
        while rounds_done().is_err() {
            thread::sleep(Duration::from_millis(100));
        }
        let grow = in_rounds(&TOOLS, rounds, |round, tool| {
            let dir = self.run_dir("memory-grow", tool)?;
            let run = self.measure(&dir, tool, pid, || {
                let (before, started) = (rounds_done()?, monotonic());
                thread::sleep(Duration::from_secs(GROW_SECONDS));
                Ok((rounds_done()? - before) / ((monotonic() - started) as f64 / 1e9))
            })?;
            eprintln!("  round {}: {:<40} grow.py {}", round + 1, tool.name(), run.describe("rounds/s"));
            Ok(run)
        })?;
        drop(grower);
        Ok(MemoryCosts { app, grow })
    }

    /// Starts `tool` on `pid`, runs `work` (which returns the workload's rate over its window) and reads the
    /// profiler's and the program's CPU around it.
    fn measure(&self, dir: &Path, tool: Tool, pid: u32, work: impl FnOnce() -> Result<f64>) -> Result<MemoryRun> {
        let agent = Agent::start(self, tool, pid, dir)?;
        thread::sleep(SETTLE);
        let agent_pid = agent.as_ref().map_or(0, Agent::pid);
        let agent_cpu = || agent.as_ref().map_or(0, Agent::cpu_ns);
        let program = || bpf_run_times(agent_pid).get(&BPF_PROG_TYPE_PERF_EVENT).map_or(0, |t| t.0);
        let before = (agent_cpu(), process_cpu_ns(pid), program());
        let work_per_s = work()?;
        let after = (agent_cpu(), process_cpu_ns(pid), program());
        if let Some(agent) = agent {
            agent.stop()?;
        }
        let target_s = after.1.saturating_sub(before.1) as f64 / 1e9;
        Ok(MemoryRun {
            work_per_s,
            agent_per_target: after.0.saturating_sub(before.0) as f64 / 1e9 / target_s,
            sampler_share: after.2.saturating_sub(before.2) as f64 / 1e9 / target_s,
        })
    }
}

impl MemoryRun {
    fn describe(&self, unit: &str) -> String {
        format!(
            "{:.1} {unit}, agent {:.2}% of its CPU, in-kernel {:.2}%",
            self.work_per_s,
            self.agent_per_target * 100.0,
            self.sampler_share * 100.0
        )
    }
}
