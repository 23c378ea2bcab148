//! Sections 1 to 3 of the report: what each profiler costs the target (a script's wall time, the demo app's
//! requests/s) and the machine (its CPU time and peak RSS), and the rate it samples at.
//!
//! Kept apart from fidelity because these runs measure costs around a profiler (a fresh workload per run, CPU
//! read over a marked window), where fidelity reads the profiles it wrote.
use std::{
    fs,
    io::{self, BufRead as _, Read as _},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{ensure, Context as _, Result};

use super::{
    agent::{Agent, StageCosts},
    in_rounds,
    process::{
        bpf_map_rss_kib, bpf_run_times, monotonic, process_cpu_ns, signal, wait_for_threads, BpfStats,
        BPF_PROG_TYPE_PERF_EVENT, BPF_PROG_TYPE_RAW_TRACEPOINT,
    },
    Bench, PerTool, Tool, COST_WINDOW, FIXED_WORK_ROUNDS, LOAD_CONNECTIONS, LOAD_SECONDS, PYTHON, SETTLE,
};
use crate::{cmd, demo, setup};

/// One run of the off-CPU section: the app under load, with one configuration.
#[derive(Clone, Debug, Default)]
pub(super) struct OffCpuRun {
    pub(super) requests_per_s: f64,
    /// The app's context switches per second (every thread, voluntary and not).
    pub(super) switches_per_s: f64,
    /// The profiler's CPU time / the app's CPU time over the load.
    pub(super) agent_per_target: f64,
    /// In-kernel time of the CPU sampler (perf_event programs) and of the off-CPU sampler (raw tracepoint
    /// programs: the crash probes run only at a crash) / the app's CPU time.
    pub(super) cpu_sampler_share: f64,
    pub(super) off_cpu_sampler_share: f64,
}

/// Context switches of every thread of `pid` so far (`voluntary_ctxt_switches` + `nonvoluntary_ctxt_switches`).
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|line| line.contains("ctxt_switches:"))
                .filter_map(|line| line.split_whitespace().nth(1).and_then(|n| n.parse::<u64>().ok()))
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Agent cost and sampling of one tool in one run, over the marked window.
#[derive(Clone, Debug, Default)]
pub(super) struct CostRun {
    /// CPU time of the profiler process in the window / the target's CPU time in the window: the share of a core
    /// the profiler takes per fully busy target thread.
    pub(super) agent_per_target: f64,
    pub(super) agent_cpu_per_second: f64,
    /// Microseconds of the profiler's CPU per sample taken in the window.
    pub(super) agent_us_per_sample: f64,
    /// Samples in the window per second of the target's CPU time: the rate per busy thread.
    rate_hz: f64,
    /// What the rate is made of, to pool the rounds.
    pub(super) samples: u64,
    pub(super) target_cpu_s: f64,
    /// The profiler's CPU over its whole run, start-up included, and its peak RSS.
    pub(super) total_cpu_s: f64,
    pub(super) max_rss_mib: f64,
    /// Of the RSS at the end of the window, what the BPF maps (ring buffers) mapped into it take.
    pub(super) bpf_map_rss_mib: f64,
    pub(super) lost: Option<u64>,
    pub(super) stages: Option<StageCosts>,
    /// Ours only: the time our sampling program ran in the kernel over the window (kernel.bpf_stats_enabled),
    /// per target sample, and against the target's CPU time: a slowdown measured without the noise of wall time.
    pub(super) bpf_us_per_sample: Option<f64>,
    pub(super) bpf_target_share: Option<f64>,
}

impl Bench {
    /// 1. The wall time of fixed_work.py, started at SIGUSR1 once the profiler is attached.
    pub(super) fn script_slowdown(&mut self, rounds: usize) -> Result<PerTool<f64>> {
        in_rounds(&[Tool::None, Tool::Ours, Tool::PySpy, Tool::Perf], rounds, |round, tool| {
            let mut start = Command::new(PYTHON);
            start.arg(self.workload("fixed_work.py")).arg(FIXED_WORK_ROUNDS).stdout(Stdio::piped());
            let mut workload = demo::spawn_background(&mut start)?;
            let pid = workload.0.id();
            let mut stdout = io::BufReader::new(workload.0.stdout.take().context("fixed_work.py's stdout")?);
            let mut line = String::new();
            stdout.read_line(&mut line)?;
            ensure!(line.trim() == "ready", "fixed_work.py did not get ready: `{}`", line.trim());
            let dir = self.run_dir("script", tool)?;
            let agent = Agent::start(self, tool, pid, &dir)?;
            thread::sleep(SETTLE);
            signal(pid, libc::SIGUSR1);
            let mut seconds = String::new();
            stdout.read_to_string(&mut seconds)?;
            let status = workload.0.wait()?;
            ensure!(status.success(), "fixed_work.py failed ({status})");
            let seconds: f64 =
                seconds.trim().parse().with_context(|| format!("fixed_work.py printed `{}`", seconds.trim()))?;
            if let Some(agent) = agent {
                // Each profiler ends by itself when its only target exits.
                agent.finish_after_target()?;
            }
            eprintln!("  round {}: {:<24} {seconds:.3} s", round + 1, tool.name());
            Ok(seconds)
        })
    }

    /// 1. The demo app's requests/s under a load it cannot keep up with, profiled by each tool in turn.
    pub(super) fn app_slowdown(&mut self, rounds: usize) -> Result<PerTool<f64>> {
        let (server, _, url) = self.start_app()?;
        let throughput = in_rounds(&[Tool::None, Tool::Ours, Tool::PySpy, Tool::Perf], rounds, |round, tool| {
            let dir = self.run_dir("app", tool)?;
            let agent = Agent::start(self, tool, server.0.id(), &dir)?;
            thread::sleep(SETTLE);
            let rate = self.load(&url, LOAD_SECONDS)?;
            if let Some(agent) = agent {
                agent.stop()?;
            }
            eprintln!("  round {}: {:<24} {rate:.1} requests/s", round + 1, tool.name());
            Ok(rate)
        })?;
        drop(server);
        Ok(throughput)
    }

    /// Section 6, off-CPU sampling where it costs most: the demo app saturated (its event loop and worker threads switch
    /// thousands of times a second), without a profiler, with CPU sampling, and with off-CPU sampling too; the
    /// app's requests/s, its context switches, the agent's CPU and the sampler's in-kernel time over the load.
    pub(super) fn off_cpu_cost(&mut self, rounds: usize) -> Result<PerTool<OffCpuRun>> {
        // In-kernel times are counted only while this is held (they read 0 otherwise).
        let _bpf_stats = BpfStats::enable();
        let (server, pid, url) = self.start_app()?;
        let runs = in_rounds(&[Tool::None, Tool::Ours, Tool::OursOffCpu], rounds, |round, tool| {
            let dir = self.run_dir("offcpu", tool)?;
            let agent = Agent::start(self, tool, pid, &dir)?;
            thread::sleep(SETTLE);
            let agent_pid = agent.as_ref().map_or(0, Agent::pid);
            let agent_cpu = || agent.as_ref().map_or(0, Agent::cpu_ns);
            let bpf = || {
                let times = bpf_run_times(agent_pid);
                [BPF_PROG_TYPE_PERF_EVENT, BPF_PROG_TYPE_RAW_TRACEPOINT].map(|kind| times.get(&kind).map_or(0, |t| t.0))
            };
            let before = (agent_cpu(), process_cpu_ns(pid), context_switches(pid), bpf(), monotonic());
            let rate = self.load(&url, LOAD_SECONDS)?;
            let after = (agent_cpu(), process_cpu_ns(pid), context_switches(pid), bpf(), monotonic());
            if let Some(agent) = agent {
                agent.stop()?;
            }
            let window_s = (after.4 - before.4) as f64 / 1e9;
            let target_s = after.1.saturating_sub(before.1) as f64 / 1e9;
            let run = OffCpuRun {
                requests_per_s: rate,
                switches_per_s: after.2.saturating_sub(before.2) as f64 / window_s,
                agent_per_target: after.0.saturating_sub(before.0) as f64 / 1e9 / target_s,
                cpu_sampler_share: after.3[0].saturating_sub(before.3[0]) as f64 / 1e9 / target_s,
                off_cpu_sampler_share: after.3[1].saturating_sub(before.3[1]) as f64 / 1e9 / target_s,
            };
            eprintln!(
                "  round {}: {:<40} {rate:.1} requests/s, {:.0} switches/s, agent {:.2}% of the app's CPU, in-kernel \
                 {:.2}% (CPU sampler) + {:.2}% (off-CPU sampler)",
                round + 1,
                tool.name(),
                run.switches_per_s,
                run.agent_per_target * 100.0,
                run.cpu_sampler_share * 100.0,
                run.off_cpu_sampler_share * 100.0
            );
            Ok(run)
        })?;
        drop(server);
        Ok(runs)
    }

    /// Serves the demo app with uvicorn on a free port, warmed up: the server, its pid and its URL.
    pub(super) fn start_app(&mut self) -> Result<(demo::KillOnDrop, u32, String)> {
        let app = self.root.join(setup::QUAKE_MONITOR);
        let port = demo::free_port()?;
        let log_path = self.runs.join("uvicorn.log");
        let log = fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut serve = Command::new(self.quake_venv.join("bin/uvicorn"));
        serve.args(["app:app", "--host", "127.0.0.1", "--port", &port.to_string(), "--workers", "1"]);
        serve.stdout(log.try_clone()?).stderr(log).current_dir(&app).env("PYTHONDONTWRITEBYTECODE", "1");
        let mut server = demo::spawn_background(&mut serve)?;
        demo::wait_until_serving(&mut server.0, port, &log_path)?;
        let pid = server.0.id();
        let url = format!("http://127.0.0.1:{port}");
        // A first load warms the app (imports on first request, the feed cache) outside every measurement.
        self.load(&url, 2)?;
        Ok((server, pid, url))
    }

    /// Runs bench/workloads/saturate.py against the app for `seconds` and returns the requests/s it reports.
    pub(super) fn load(&self, url: &str, seconds: u64) -> Result<f64> {
        let mut load = Command::new(PYTHON);
        load.arg(self.workload("saturate.py")).args([url, &seconds.to_string(), LOAD_CONNECTIONS]);
        let output = load.output().with_context(|| format!("running `{}`", cmd::display(&load)))?;
        let text = String::from_utf8_lossy(&output.stdout);
        ensure!(output.status.success(), "`{}` failed: {text}", cmd::display(&load));
        // "R requests/s, E errors"
        text.split_whitespace()
            .next()
            .and_then(|number| number.parse().ok())
            .with_context(|| format!("no requests/s in saturate.py's output: {text}"))
    }

    /// 2. and 3. A fresh busy_threads.py per run; the profiler's CPU and the target's CPU over the marked window.
    pub(super) fn agent_cost(&mut self, threads: usize, rounds: usize) -> Result<PerTool<CostRun>> {
        let bpf_stats_guard = BpfStats::enable();
        let bpf_stats = bpf_stats_guard.is_some();
        in_rounds(&[Tool::Ours, Tool::PySpy, Tool::Perf], rounds, |round, tool| {
            let lifetime = (COST_WINDOW + Duration::from_secs(60)).as_secs();
            let mut start = Command::new(PYTHON);
            start.arg(self.workload("busy_threads.py")).arg(threads.to_string()).arg(lifetime.to_string());
            let workload = demo::spawn_background(&mut start)?;
            let pid = workload.0.id();
            wait_for_threads(pid, threads + 1)?;
            let dir = self.run_dir(&format!("cost{threads}"), tool)?;
            let agent = Agent::start(self, tool, pid, &dir)?.context("a profiler")?;
            thread::sleep(SETTLE);
            let bpf_before = bpf_run_times(agent.pid());
            let (agent_before, target_before, clock_before) = (agent.cpu_ns(), process_cpu_ns(pid), monotonic());
            signal(pid, libc::SIGUSR1);
            thread::sleep(COST_WINDOW);
            signal(pid, libc::SIGUSR1);
            let (agent_after, target_after, clock_after) = (agent.cpu_ns(), process_cpu_ns(pid), monotonic());
            let bpf_after = bpf_run_times(agent.pid());
            let sampler_ns = bpf_after
                .get(&BPF_PROG_TYPE_PERF_EVENT)
                .map(|a| a.0)
                .unwrap_or(0)
                .saturating_sub(bpf_before.get(&BPF_PROG_TYPE_PERF_EVENT).map(|b| b.0).unwrap_or(0));
            let bpf_map_rss = bpf_map_rss_kib(agent.pid());
            // Samples of the window's last ticks still travel through ring buffers and queues.
            thread::sleep(Duration::from_millis(300));
            let finished = agent.stop()?;
            drop(workload);

            let target_s = (target_after - target_before) as f64 / 1e9;
            let agent_s = agent_after.saturating_sub(agent_before) as f64 / 1e9;
            let window_s = (clock_after - clock_before) as f64 / 1e9;
            let samples = match tool {
                Tool::Perf => finished.perf_samples_between(clock_before, clock_after)?,
                _ => finished.stacks()?.iter().filter(|s| s.has("in_window")).map(|s| s.count).sum(),
            };
            let run = CostRun {
                agent_per_target: agent_s / target_s,
                agent_cpu_per_second: agent_s / window_s,
                agent_us_per_sample: if samples == 0 { f64::NAN } else { agent_s * 1e6 / samples as f64 },
                rate_hz: samples as f64 / target_s,
                samples,
                target_cpu_s: target_s,
                total_cpu_s: finished.cpu_s,
                max_rss_mib: finished.max_rss_kib as f64 / 1024.0,
                bpf_map_rss_mib: bpf_map_rss as f64 / 1024.0,
                lost: finished.lost()?,
                stages: finished.stage_costs()?,
                bpf_us_per_sample: (bpf_stats && tool == Tool::Ours && samples > 0)
                    .then(|| sampler_ns as f64 / 1e3 / samples as f64),
                bpf_target_share: (bpf_stats && tool == Tool::Ours).then(|| sampler_ns as f64 / 1e9 / target_s),
            };
            eprintln!(
                "  round {}: {:<24} target {:.2} CPU-s, {samples} samples = {:.1} Hz/busy thread; agent \
                     {:.2}% of a core per busy thread, {:.0} µs/sample, peak RSS {:.1} MiB, lost {:?}",
                round + 1,
                tool.name(),
                target_s,
                run.rate_hz,
                100.0 * run.agent_per_target,
                run.agent_us_per_sample,
                run.max_rss_mib,
                run.lost
            );
            Ok(run)
        })
    }
}
