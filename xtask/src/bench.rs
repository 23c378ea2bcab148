//! `cargo xtask bench`: what the profiler costs the processes it watches and the machine it runs on, and how
//! truthful its profiles are, measured side by side with py-spy and perf in one run and written to
//! bench/RESULTS.md.
//!
//! A lone absolute time says little on a shared machine, so every figure comes from configurations run in turn
//! (no profiler, ours, py-spy, perf, then again in the same order), reported as the median over rounds and as a
//! ratio to the baseline measured in the same rounds. Costs are read from the kernel's clocks rather than the
//! wall: a process's CPU time is the sum of its threads' `schedstat` run times (nanoseconds, where /proc's
//! `stat` ticks are 10 ms), its peak RSS comes from `wait4`. Sampling windows are marked inside the workloads
//! (bench/workloads/busy_threads.py runs a function named `in_window` between two SIGUSR1s), so a profiler's
//! start-up and shutdown never fall inside what is counted.
//!
//! The sections, in the order of issue 7: target slowdown (a CPU-bound Python + C-extension script's wall time,
//! the demo app's requests/s under a saturating load), agent cost (CPU per second and per sample, peak RSS, with
//! 1 and 8 busy threads), sampling (effective rate per busy thread, lost samples), our userspace cost per stage
//! (`profiler record --stats-json`), and fidelity (each function's share against a split known by construction
//! or measured by the workload itself).
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    io::{self, BufRead as _, Read as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};

use crate::{cmd, demo, setup, Workspace};

/// The sampling rate of every profiler: the rate the targets below are stated for.
const RATE_HZ: u32 = 100;
/// The targets of issue 7.
const MAX_SLOWDOWN: f64 = 0.01;
const MAX_AGENT_CORE_SHARE: f64 = 0.01;
const MAX_RSS_MIB: f64 = 40.0;
const RATE_TOLERANCE_HZ: f64 = 2.0;
const MAX_ERROR_PP: f64 = 3.0;

/// fixed_work.py's rounds: 3 to 6 s of work on this machine, long next to a profiler's attach and short enough to
/// repeat.
const FIXED_WORK_ROUNDS: &str = "300";
/// The demo app's load: closed-loop connections, each sending its next request when the last is answered, so
/// requests/s is what the app can serve.
const LOAD_CONNECTIONS: &str = "4";
const LOAD_SECONDS: u64 = 5;
/// Sampling window of the agent-cost runs, and of each fidelity recording.
const COST_WINDOW: Duration = Duration::from_secs(6);
const FIDELITY_WINDOW: Duration = Duration::from_secs(8);
/// After a profiler has installed its SIGINT handler, time for it to finish attaching (our loader adds the
/// targets and reads their unwind tables after that) before anything is measured.
const SETTLE: Duration = Duration::from_millis(1000);
/// How long a profiler may take to start, and to write its output once stopped.
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(60);
const AGENT_STOP_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Options {
    /// Rounds of each interleaved comparison (medians over them).
    pub rounds: usize,
}

/// The profilers compared; `None` is the baseline without any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Tool {
    None,
    Ours,
    PySpy,
    Perf,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::None => "no profiler",
            Tool::Ours => "profiler record",
            Tool::PySpy => "py-spy --native",
            Tool::Perf => "perf --call-graph dwarf",
        }
    }
}

/// Paths and programs every section uses.
struct Bench {
    root: PathBuf,
    profiler: PathBuf,
    py_spy: PathBuf,
    quake_venv: PathBuf,
    native_burn: PathBuf,
    /// Each profiler run's outputs go to a numbered directory here.
    runs: PathBuf,
    next_run: u32,
}

/// Debian's Python, with python3-lxml and python3-numpy from setup: every Python workload runs on it (the
/// interpreter the design's targets describe).
const PYTHON: &str = "/usr/bin/python3";

pub fn bench(ws: &Workspace, options: &Options) -> Result<()> {
    ensure!(options.rounds >= 1, "--rounds must be at least 1");
    if !cmd::is_root() {
        bail!("the benchmarks load eBPF programs and attach py-spy and perf to other processes: run them as root");
    }
    let started = Instant::now();
    let bench_venv = ws.target_dir.join("bench-venv");
    setup::ensure_venv(&bench_venv, &ws.root.join("bench/requirements.txt"))?;
    let built = ws.build_profiler(true)?;
    let out = ws.target_dir.join("bench");
    let runs = out.join("runs");
    // Outputs of an earlier run must not pass for this one's.
    let _ = fs::remove_dir_all(&runs);
    fs::create_dir_all(&runs).with_context(|| format!("creating {}", runs.display()))?;
    // Every round measures this copy: a build in the same tree while the benchmark runs replaces the original.
    let profiler = out.join("profiler");
    fs::copy(&built, &profiler).with_context(|| format!("copying {} to {}", built.display(), profiler.display()))?;
    cmd::run(Command::new("bash").arg(ws.root.join("examples/native-burn/build.sh")).arg(out.join("native-burn")))?;
    let mut bench = Bench {
        root: ws.root.clone(),
        profiler,
        py_spy: bench_venv.join("bin/py-spy"),
        quake_venv: setup::quake_venv_dir(ws),
        native_burn: out.join("native-burn/native-burn"),
        runs,
        next_run: 0,
    };
    let machine = Machine::describe(&bench)?;
    let rounds = options.rounds;

    eprintln!("== target slowdown: CPU-bound script");
    let script = bench.script_slowdown(rounds)?;
    eprintln!("== target slowdown: demo app requests/s");
    let app = bench.app_slowdown(rounds)?;
    let mut costs = Vec::new();
    for threads in [1, 8] {
        eprintln!("== agent cost and sampling rate: {threads} busy thread(s)");
        costs.push((threads, bench.agent_cost(threads, rounds)?));
    }
    eprintln!("== fidelity: native-burn");
    let native = bench.fidelity_native(rounds)?;
    eprintln!("== fidelity: split.py");
    let python = bench.fidelity_python(rounds)?;

    let mut machine = machine;
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    machine
        .lines
        .push(("load average at the end".into(), load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")));
    let results = Results { machine, rounds, script, app, costs, native, python, took: started.elapsed() };
    let markdown = results.render();
    println!("{markdown}");
    let path = ws.root.join("bench/RESULTS.md");
    fs::write(&path, &markdown).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {} ({:.0} s in all)", path.display(), started.elapsed().as_secs_f64());
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// The sections

/// One configuration's measurements over the rounds.
type PerTool<T> = BTreeMap<Tool, Vec<T>>;

/// Agent cost and sampling of one tool in one run, over the marked window.
#[derive(Clone, Debug, Default)]
struct CostRun {
    /// CPU time of the profiler process in the window / the target's CPU time in the window: the share of a core
    /// the profiler takes per fully busy target thread.
    agent_per_target: f64,
    agent_cpu_per_second: f64,
    /// Microseconds of the profiler's CPU per sample taken in the window.
    agent_us_per_sample: f64,
    /// Samples in the window per second of the target's CPU time: the rate per busy thread.
    rate_hz: f64,
    /// What the rate is made of, to pool the rounds.
    samples: u64,
    target_cpu_s: f64,
    /// The profiler's CPU over its whole run, start-up included, and its peak RSS.
    total_cpu_s: f64,
    max_rss_mib: f64,
    /// Of the RSS at the end of the window, what the BPF maps (ring buffers) mapped into it take.
    bpf_map_rss_mib: f64,
    lost: Option<u64>,
    stages: Option<StageCosts>,
    /// Ours only: the time our sampling program ran in the kernel over the window (kernel.bpf_stats_enabled),
    /// per target sample, and against the target's CPU time: a slowdown measured without the noise of wall time.
    bpf_us_per_sample: Option<f64>,
    bpf_target_share: Option<f64>,
}

/// Our userspace cost per sample and stage, in microseconds, from `--stats-json`.
#[derive(Clone, Debug, Default)]
struct StageCosts {
    cold: [f64; 6],
    warm: [f64; 6],
    cold_samples: u64,
    warm_samples: u64,
}

const STAGES: [&str; 6] = ["unwind", "python", "symbolize", "merge", "aggregate", "total"];

/// Shares of each function (within its thread) measured by one tool in one recording, with the truth of the
/// same stretch, and the share of samples whose stack reached the thread's root.
#[derive(Clone, Debug, Default)]
struct FidelityRun {
    shares: Vec<Share>,
    complete: f64,
    samples: u64,
    stages: Option<StageCosts>,
}

/// One function's share in one recording: the truth as a fraction (`truth_part` of `truth_whole`: units of work,
/// or nanoseconds of the thread's CPU time) and the samples that hit it of the thread's samples. Kept as counts,
/// so rounds pool into one estimate with more samples than any round alone.
#[derive(Clone, Debug, Default)]
struct Share {
    function: String,
    truth_part: f64,
    truth_whole: f64,
    hits: u64,
    samples: u64,
}

/// Shares of the rounds of one tool pooled: (function, truth %, measured %, binomial standard error of the
/// measured share in percentage points: the part of the error that sampling alone explains).
fn pooled_shares(runs: &[FidelityRun]) -> Vec<(String, f64, f64, f64)> {
    let Some(first) = runs.first() else { return Vec::new() };
    (0..first.shares.len())
        .map(|i| {
            let sum = |f: fn(&Share) -> f64| runs.iter().map(|r| f(&r.shares[i])).sum::<f64>();
            let truth = 100.0 * sum(|s| s.truth_part) / sum(|s| s.truth_whole);
            let samples = sum(|s| s.samples as f64);
            let p = sum(|s| s.hits as f64) / samples;
            (first.shares[i].function.clone(), truth, 100.0 * p, 100.0 * (p * (1.0 - p) / samples).sqrt())
        })
        .collect()
}

/// The largest error of any function, pooled over the rounds, in percentage points.
fn worst_error(runs: &[FidelityRun]) -> f64 {
    pooled_shares(runs).iter().map(|(_, truth, measured, _)| (truth - measured).abs()).fold(f64::NAN, f64::max)
}

impl Bench {
    /// A fresh directory for one profiler run's outputs.
    fn run_dir(&mut self, what: &str, tool: Tool) -> Result<PathBuf> {
        self.next_run += 1;
        let tool = format!("{tool:?}").to_lowercase();
        let dir = self.runs.join(format!("{:03}-{what}-{tool}", self.next_run));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    fn workload(&self, name: &str) -> PathBuf {
        self.root.join("bench/workloads").join(name)
    }

    /// 1. The wall time of fixed_work.py, started at SIGUSR1 once the profiler is attached.
    fn script_slowdown(&mut self, rounds: usize) -> Result<PerTool<f64>> {
        let mut times = PerTool::new();
        for round in 0..rounds {
            for tool in in_turn(&[Tool::None, Tool::Ours, Tool::PySpy, Tool::Perf], round) {
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
                times.entry(tool).or_insert_with(Vec::new).push(seconds);
            }
        }
        Ok(times)
    }

    /// 1. The demo app's requests/s under a load it cannot keep up with, profiled by each tool in turn.
    fn app_slowdown(&mut self, rounds: usize) -> Result<PerTool<f64>> {
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

        let mut throughput = PerTool::new();
        for round in 0..rounds {
            for tool in in_turn(&[Tool::None, Tool::Ours, Tool::PySpy, Tool::Perf], round) {
                let dir = self.run_dir("app", tool)?;
                let agent = Agent::start(self, tool, pid, &dir)?;
                thread::sleep(SETTLE);
                let rate = self.load(&url, LOAD_SECONDS)?;
                if let Some(agent) = agent {
                    agent.stop()?;
                }
                eprintln!("  round {}: {:<24} {rate:.1} requests/s", round + 1, tool.name());
                throughput.entry(tool).or_insert_with(Vec::new).push(rate);
            }
        }
        drop(server);
        Ok(throughput)
    }

    /// Runs bench/workloads/saturate.py against the app for `seconds` and returns the requests/s it reports.
    fn load(&self, url: &str, seconds: u64) -> Result<f64> {
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
    fn agent_cost(&mut self, threads: usize, rounds: usize) -> Result<PerTool<CostRun>> {
        let mut costs = PerTool::new();
        let bpf_stats_guard = BpfStats::enable();
        let bpf_stats = bpf_stats_guard.is_some();
        for round in 0..rounds {
            for tool in in_turn(&[Tool::Ours, Tool::PySpy, Tool::Perf], round) {
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
                costs.entry(tool).or_insert_with(Vec::new).push(run);
            }
        }
        Ok(costs)
    }

    /// 5. examples/native-burn, whose split is known by construction: in the main thread `hot_main_a` 60% and
    /// `hot_main_b` 40%; `burn-a` is all `lib_hot_x` (through libburnlib.so), `burn-b` all `hot_b`.
    fn fidelity_native(&mut self, rounds: usize) -> Result<PerTool<FidelityRun>> {
        const TRUTH: [(&str, &str, f64); 4] = [
            ("native-burn", "hot_main_a", 60.0),
            ("native-burn", "hot_main_b", 40.0),
            ("burn-a", "lib_hot_x", 100.0),
            ("burn-b", "hot_b", 100.0),
        ];
        let lifetime = (FIDELITY_WINDOW + SETTLE + Duration::from_secs(20)).as_secs() * rounds as u64 * 2;
        let workload = demo::spawn_background(Command::new(&self.native_burn).arg(lifetime.to_string()))?;
        let pid = workload.0.id();
        wait_for_threads(pid, 3)?;
        let mut runs = PerTool::new();
        for round in 0..rounds {
            for tool in in_turn(&[Tool::Ours, Tool::Perf], round) {
                let dir = self.run_dir("native", tool)?;
                let agent = Agent::start(self, tool, pid, &dir)?.context("a profiler")?;
                thread::sleep(FIDELITY_WINDOW);
                let finished = agent.stop()?;
                let stacks = finished.stacks()?;
                let shares = TRUTH
                    .iter()
                    .map(|(thread, function, truth)| {
                        let of_thread: Vec<&Stack> = stacks.iter().filter(|s| s.thread == *thread).collect();
                        let (hits, samples) = count(&of_thread, |s| s.leaf() == *function);
                        let function = format!("{function} ({thread})");
                        Share { function, truth_part: *truth, truth_whole: 100.0, hits, samples }
                    })
                    .collect();
                let all: Vec<&Stack> = stacks.iter().collect();
                let complete = percent(&all, |s| {
                    s.root().is_some_and(|root| ["_start", "clone3", "__clone3", "clone"].contains(&root))
                });
                let samples = all.iter().map(|s| s.count).sum();
                let run = FidelityRun { shares, complete, samples, stages: finished.stage_costs()? };
                eprintln!(
                    "  round {}: {:<24} {} samples, worst error {:.1} pp, {:.1}% complete",
                    round + 1,
                    tool.name(),
                    run.samples,
                    worst_error(std::slice::from_ref(&run)),
                    run.complete
                );
                runs.entry(tool).or_insert_with(Vec::new).push(run);
            }
        }
        drop(workload);
        Ok(runs)
    }

    /// 5. tests/workloads/python/split.py, which measures its own split with `time.thread_time_ns`: `py_hot`
    /// (pure Python), `lxml_parse` and `numpy_compute` (Python calling C extensions).
    fn fidelity_python(&mut self, rounds: usize) -> Result<PerTool<FidelityRun>> {
        const FUNCTIONS: [&str; 3] = ["py_hot", "lxml_parse", "numpy_compute"];
        let dir = self.runs.join("split");
        fs::create_dir_all(&dir)?;
        let totals = dir.join("split.json");
        let mut start = Command::new(PYTHON);
        start.arg(self.root.join("tests/workloads/python/split.py")).arg(&totals);
        let mut workload = demo::spawn_background(start.env("PYTHONDONTWRITEBYTECODE", "1"))?;
        let pid = workload.0.id();
        // Past the imports and the first calls (one-time work: caches, lazy initialisation).
        let give_up = Instant::now() + Duration::from_secs(60);
        while read_totals(&totals).map_or(true, |t| t.get("writes").copied().unwrap_or(0.0) < 3.0) {
            if let Some(status) = workload.0.try_wait()? {
                bail!("split.py exited ({status}) before it was profiled");
            }
            ensure!(Instant::now() < give_up, "split.py wrote no {} within a minute", totals.display());
            thread::sleep(Duration::from_millis(50));
        }
        let mut runs = PerTool::new();
        for round in 0..rounds {
            for tool in in_turn(&[Tool::Ours, Tool::PySpy], round) {
                let dir = self.run_dir("python", tool)?;
                let agent = Agent::start(self, tool, pid, &dir)?.context("a profiler")?;
                thread::sleep(SETTLE);
                let before = read_totals(&totals)?;
                thread::sleep(FIDELITY_WINDOW);
                let after = read_totals(&totals)?;
                let finished = agent.stop()?;
                let stacks = finished.stacks()?;
                let all: Vec<&Stack> = stacks.iter().collect();
                let cpu = after["thread_cpu_ns"] - before["thread_cpu_ns"];
                let shares = FUNCTIONS
                    .iter()
                    .map(|f| {
                        let (hits, samples) = count(&all, |s| s.has(f));
                        Share {
                            function: f.to_string(),
                            truth_part: after[*f] - before[*f],
                            truth_whole: cpu,
                            hits,
                            samples,
                        }
                    })
                    .collect();
                let complete = percent(&all, |s| s.has("<module>"));
                let samples = all.iter().map(|s| s.count).sum();
                let run = FidelityRun { shares, complete, samples, stages: finished.stage_costs()? };
                eprintln!(
                    "  round {}: {:<24} {} samples, worst error {:.1} pp, {:.1}% reach <module>",
                    round + 1,
                    tool.name(),
                    run.samples,
                    worst_error(std::slice::from_ref(&run)),
                    run.complete
                );
                runs.entry(tool).or_insert_with(Vec::new).push(run);
            }
        }
        drop(workload);
        Ok(runs)
    }
}

/// The configurations of one round: all of them, each round starting one further along (A B C, B C A, C A B),
/// so that no configuration always runs after the same one (a profiler still freeing memory, a build starting).
fn in_turn(tools: &[Tool], round: usize) -> Vec<Tool> {
    let mut tools = tools.to_vec();
    let shift = round % tools.len();
    tools.rotate_left(shift);
    tools
}

/// The samples of `stacks` that `matches`, and all the samples of `stacks`.
fn count(stacks: &[&Stack], matches: impl Fn(&Stack) -> bool) -> (u64, u64) {
    let total: u64 = stacks.iter().map(|s| s.count).sum();
    (stacks.iter().filter(|s| matches(s)).map(|s| s.count).sum(), total)
}

/// Percentage of the samples of `stacks` that `matches`.
fn percent(stacks: &[&Stack], matches: impl Fn(&Stack) -> bool) -> f64 {
    let (hit, total) = count(stacks, matches);
    if total == 0 {
        f64::NAN
    } else {
        100.0 * hit as f64 / total as f64
    }
}

/// split.py's JSON totals: `thread_cpu_ns`, `writes` and nanoseconds per function.
fn read_totals(path: &Path) -> Result<BTreeMap<String, f64>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut totals = BTreeMap::new();
    for (key, value) in value.as_object().into_iter().flatten() {
        if let Some(number) = value.as_f64() {
            totals.insert(key.clone(), number);
        }
    }
    for (key, value) in value["functions"].as_object().into_iter().flatten() {
        totals.insert(key.clone(), value.as_f64().unwrap_or(0.0));
    }
    Ok(totals)
}

// ---------------------------------------------------------------------------------------------------------------
// Running a profiler

/// A profiler attached to a target, in its own process group so the bench's Ctrl-C does not reach it first; it
/// is reaped here with `wait4`, which also gives its CPU time and peak RSS, and killed if the bench leaves early.
struct Agent {
    tool: Tool,
    child: Option<Child>,
    dir: PathBuf,
}

/// What a stopped profiler left.
struct Finished {
    tool: Tool,
    dir: PathBuf,
    cpu_s: f64,
    max_rss_kib: i64,
    /// What the tool printed, both streams.
    output: String,
}

impl Agent {
    /// Starts `tool` on `pid` (nothing for `Tool::None`) and returns once it has installed its SIGINT handler,
    /// which each of them does as it begins to sample.
    fn start(bench: &Bench, tool: Tool, pid: u32, dir: &Path) -> Result<Option<Agent>> {
        let pid_arg = pid.to_string();
        let rate = RATE_HZ.to_string();
        let mut command = match tool {
            Tool::None => return Ok(None),
            Tool::Ours => {
                let mut ours = Command::new(&bench.profiler);
                ours.args(["record", "--pid", &pid_arg, "--rate", &rate, "-o", "profile.folded"]);
                ours.args(["--stats-json", "stats.json"]);
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
        let deadline = Instant::now() + AGENT_START_TIMEOUT;
        while !catches_sigint(agent.pid()) {
            if let Some(status) = agent.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("`{line}` exited at once ({status}): {}", fs::read_to_string(dir.join("output.txt"))?);
            }
            ensure!(Instant::now() < deadline, "`{line}` did not start within {AGENT_START_TIMEOUT:?}");
            thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(agent))
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// CPU time of the profiler so far, all its threads.
    fn cpu_ns(&self) -> u64 {
        process_cpu_ns(self.pid())
    }

    /// Stops it with SIGINT (every one of them then writes its output) and waits.
    fn stop(self) -> Result<Finished> {
        signal(self.pid(), libc::SIGINT);
        self.wait()
    }

    /// Waits a little for a profiler whose target exited to end by itself, else stops it.
    fn finish_after_target(self) -> Result<Finished> {
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
    fn stacks(&self) -> Result<Vec<Stack>> {
        match self.tool {
            Tool::Ours => {
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
    fn perf_samples_between(&self, from: u64, to: u64) -> Result<u64> {
        Ok(self.perf_stacks()?.iter().filter(|s| s.time_ns.is_some_and(|t| (from..=to).contains(&t))).count() as u64)
    }

    /// Samples the tool says it lost: ours counts them, perf reports lost chunks; py-spy's errors are samples it
    /// failed to take.
    fn lost(&self) -> Result<Option<u64>> {
        match self.tool {
            Tool::Ours => Ok(self.stats_json()?.and_then(|stats| stats["lost_samples"].as_u64())),
            Tool::Perf => Ok(Some(number_before(&self.output, " chunks").unwrap_or(0))),
            Tool::PySpy => Ok(number_after(&self.output, "Errors: ")),
            Tool::None => Ok(None),
        }
    }

    fn stats_json(&self) -> Result<Option<serde_json::Value>> {
        if self.tool != Tool::Ours {
            return Ok(None);
        }
        let path = self.dir.join("stats.json");
        let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Some(serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?))
    }

    fn stage_costs(&self) -> Result<Option<StageCosts>> {
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
struct Stack {
    thread: String,
    frames: Vec<String>,
    count: u64,
    time_ns: Option<u64>,
}

impl Stack {
    fn has(&self, function: &str) -> bool {
        self.frames.iter().any(|f| function_name(f) == function)
    }

    fn leaf(&self) -> &str {
        self.frames.last().map_or("", |f| function_name(f))
    }

    fn root(&self) -> Option<&str> {
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

// ---------------------------------------------------------------------------------------------------------------
// Processes, from /proc

/// `prog_type` of perf-event BPF programs (our sampler), in fdinfo.
const BPF_PROG_TYPE_PERF_EVENT: u32 = 7;
const BPF_STATS_SWITCH: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// The kernel's run-time accounting of BPF programs, on while this lives (it costs two clock reads per program
/// run, so it is off by default); the previous setting is put back.
struct BpfStats {
    previous: String,
}

impl BpfStats {
    fn enable() -> Option<Self> {
        let previous = fs::read_to_string(BPF_STATS_SWITCH).ok()?;
        match fs::write(BPF_STATS_SWITCH, "1") {
            Ok(()) => Some(Self { previous }),
            Err(err) => {
                eprintln!("warning: cannot enable {BPF_STATS_SWITCH} ({err}): no in-kernel cost figures");
                None
            }
        }
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS_SWITCH, self.previous.trim());
    }
}

/// Per BPF program type, the total run time (ns) and run count of the programs `pid` holds open, from the
/// fdinfo of its program file descriptors.
fn bpf_run_times(pid: u32) -> BTreeMap<u32, (u64, u64)> {
    let mut times = BTreeMap::new();
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return times };
    for fd in fds.flatten() {
        let Ok(info) = fs::read_to_string(fd.path()) else { continue };
        let field = |name: &str| {
            info.lines().find_map(|line| line.strip_prefix(name)).and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(kind), Some(_), Some(ns), Some(runs)) =
            (field("prog_type:"), field("prog_id:"), field("run_time_ns:"), field("run_cnt:"))
        {
            let entry = times.entry(kind as u32).or_insert((0, 0));
            entry.0 += ns;
            entry.1 += runs;
        }
    }
    times
}

/// CPU time of every thread of `pid`, in nanoseconds (the first field of each thread's schedstat).
fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|task| fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn status_field(pid: u32, field: &str) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| line.strip_prefix(field)).map(|value| value.trim().to_owned())
}

/// Whether the process has a SIGINT handler: each profiler installs one as it begins to sample.
fn catches_sigint(pid: u32) -> bool {
    status_field(pid, "SigCgt:")
        .and_then(|mask| u64::from_str_radix(&mask, 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGINT - 1)) != 0)
}

/// Whether the process is still running (a zombie waiting to be reaped counts as ended).
fn process_exists_unreaped(pid: u32) -> bool {
    status_field(pid, "State:").is_some_and(|state| !state.starts_with('Z'))
}

fn wait_for_threads(pid: u32, threads: usize) -> Result<()> {
    wait_until(|| fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| tasks.count() >= threads))
        .with_context(|| format!("process {pid} never had {threads} threads"))
}

fn wait_until(ready: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        ensure!(Instant::now() < deadline, "timed out after a minute");
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Resident KiB of the process's BPF map mappings (ring buffers: their data pages are mapped twice, so a 16 MiB
/// ring can show as 32 MiB once the consumer has read all of it).
fn bpf_map_rss_kib(pid: u32) -> u64 {
    let Ok(smaps) = fs::read_to_string(format!("/proc/{pid}/smaps")) else { return 0 };
    let mut in_bpf_map = false;
    let mut kib = 0;
    for line in smaps.lines() {
        if line.split_whitespace().next().is_some_and(|first| first.contains('-') && !first.ends_with(':')) {
            in_bpf_map = line.contains("anon_inode:bpf-map");
        } else if let Some(rss) = line.strip_prefix("Rss:").filter(|_| in_bpf_map) {
            kib += rss.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap_or(0);
        }
    }
    kib
}

fn signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill has no memory preconditions; the pids are our own unreaped children.
        unsafe { libc::kill(pid, signal) };
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of perf's `-k CLOCK_MONOTONIC` timestamps.
fn monotonic() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

// ---------------------------------------------------------------------------------------------------------------
// The report

/// Where the numbers were measured.
struct Machine {
    lines: Vec<(String, String)>,
}

impl Machine {
    fn describe(bench: &Bench) -> Result<Self> {
        let read = |path: &str| fs::read_to_string(path).unwrap_or_default();
        let first_line = |command: &mut Command| {
            cmd::probe(command).ok().flatten().map_or_else(
                || "not found".to_owned(),
                |out| {
                    let text =
                        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                    text.lines().next().unwrap_or("").trim().to_owned()
                },
            )
        };
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map_or_else(|| "unknown".to_owned(), |l| l.trim_start_matches([' ', '\t', ':']).to_owned());
        let cores = thread::available_parallelism().map_or(0, |n| n.get());
        let memory = read("/proc/meminfo")
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .nth(1)
            .unwrap_or("0")
            .parse::<f64>()
            .unwrap_or(0.0)
            / 1024.0
            / 1024.0;
        let commit = first_line(Command::new("git").current_dir(&bench.root).args(["describe", "--always", "--dirty"]));
        let date = first_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]));
        Ok(Self {
            lines: vec![
                ("date".into(), date),
                ("machine".into(), format!("{cpu}, {cores} CPUs, {memory:.1} GiB")),
                ("kernel".into(), read("/proc/sys/kernel/osrelease").trim().to_owned()),
                (
                    "load average at start".into(),
                    read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
                ),
                (
                    "profiler".into(),
                    format!("{} ({commit})", first_line(Command::new(&bench.profiler).arg("--version"))),
                ),
                ("py-spy".into(), first_line(Command::new(&bench.py_spy).arg("--version"))),
                ("perf".into(), first_line(Command::new("perf").arg("--version"))),
                ("Python".into(), first_line(Command::new(PYTHON).arg("--version"))),
            ],
        })
    }
}

struct Results {
    machine: Machine,
    rounds: usize,
    script: PerTool<f64>,
    app: PerTool<f64>,
    costs: Vec<(usize, PerTool<CostRun>)>,
    native: PerTool<FidelityRun>,
    python: PerTool<FidelityRun>,
    took: Duration,
}

fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.into_iter().filter(|v| !v.is_nan()).collect();
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

/// Samples per second of the target's CPU time over all rounds together: a sampling rate is a count, and the
/// pooled count has a smaller random error than any round's (ours samples each CPU every 10 ms and keeps the
/// ticks that hit a target, so one round's count varies by about a percent).
fn pooled_rate(runs: &[CostRun]) -> f64 {
    runs.iter().map(|r| r.samples as f64).sum::<f64>() / runs.iter().map(|r| r.target_cpu_s).sum::<f64>()
}

/// How far apart the rounds without a profiler are, as a fraction of their median: the noise floor of a slowdown.
fn baseline_spread(values: &PerTool<f64>) -> f64 {
    let base: Vec<f64> = values.get(&Tool::None).cloned().unwrap_or_default();
    let (min, max) = base.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    (max - min) / median(base)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

impl Results {
    fn render(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Benchmarks\n");
        let _ = writeln!(
            md,
            "Written by `cargo xtask bench` ({:.0} s). Every figure is the median of {} rounds in which the \
             configurations ran in turn (A B C, B C A, C A B, …), on the same machine at the same time; ratios are \
             to the \
             baseline of the same rounds. All profilers sample at {RATE_HZ} Hz.\n",
            self.took.as_secs_f64(),
            self.rounds
        );
        for (key, value) in &self.machine.lines {
            let _ = writeln!(md, "- {key}: {value}");
        }
        md.push('\n');
        self.render_summary(&mut md);
        self.render_slowdown(&mut md);
        self.render_costs(&mut md);
        self.render_stages(&mut md);
        self.render_fidelity(&mut md);
        md
    }

    fn ours_cost(&self, threads: usize) -> Option<&Vec<CostRun>> {
        self.costs.iter().find(|(t, _)| *t == threads).and_then(|(_, costs)| costs.get(&Tool::Ours))
    }

    fn slowdown(values: &PerTool<f64>, tool: Tool, higher_is_better: bool) -> f64 {
        let base = median(values.get(&Tool::None).into_iter().flatten().copied());
        let with = median(values.get(&tool).into_iter().flatten().copied());
        if higher_is_better {
            base / with - 1.0
        } else {
            with / base - 1.0
        }
    }

    fn render_summary(&self, md: &mut String) {
        let _ = writeln!(md, "## Targets\n");
        let _ = writeln!(md, "| target | ours | verdict |\n| --- | --- | --- |");
        for (what, values, higher_is_better) in
            [("CPU-bound script, wall time", &self.script, false), ("demo app, requests/s", &self.app, true)]
        {
            let slowdown = Self::slowdown(values, Tool::Ours, higher_is_better);
            let noise = baseline_spread(values);
            let judged = if slowdown <= MAX_SLOWDOWN {
                "met".to_owned()
            } else if slowdown <= noise {
                format!("not resolved: within the baseline's own spread of {:.1}%", noise * 100.0)
            } else {
                verdict(false).to_owned()
            };
            let _ = writeln!(
                md,
                "| target slowdown ≤ {:.0}%: {what} | {:+.1}% | {judged} |",
                MAX_SLOWDOWN * 100.0,
                slowdown * 100.0
            );
        }
        for threads in [1, 8] {
            let Some(runs) = self.ours_cost(threads) else { continue };
            let share = median(runs.iter().map(|r| r.agent_per_target));
            let rss = median(runs.iter().map(|r| r.max_rss_mib));
            let bpf_maps = median(runs.iter().map(|r| r.bpf_map_rss_mib));
            let in_kernel = median(runs.iter().filter_map(|r| r.bpf_target_share));
            let rate = pooled_rate(runs);
            let lost = runs.iter().filter_map(|r| r.lost).max().unwrap_or(0);
            let _ = writeln!(
                md,
                "| agent CPU ≤ {:.0}% of a core per busy thread ({threads} busy) | {:.2}% | {} |",
                MAX_AGENT_CORE_SHARE * 100.0,
                share * 100.0,
                verdict(share <= MAX_AGENT_CORE_SHARE)
            );
            let _ = writeln!(
                md,
                "| peak RSS ≤ {MAX_RSS_MIB:.0} MB ({threads} busy) | {rss:.1} MiB, of which BPF maps {bpf_maps:.1} MiB | {} |",
                verdict(rss <= MAX_RSS_MIB)
            );
            if !in_kernel.is_nan() {
                let _ = writeln!(
                    md,
                    "| target slowdown ≤ {:.0}%: our sampler's in-kernel time / the target's CPU time ({threads} busy) | \
                     {:.2}% | {} |",
                    MAX_SLOWDOWN * 100.0,
                    in_kernel * 100.0,
                    verdict(in_kernel <= MAX_SLOWDOWN)
                );
            }
            let _ = writeln!(
                md,
                "| rate {RATE_HZ} ± {RATE_TOLERANCE_HZ:.0} Hz per busy thread ({threads} busy) | {rate:.1} Hz | {} |",
                verdict((rate - f64::from(RATE_HZ)).abs() <= RATE_TOLERANCE_HZ)
            );
            if threads == 8 {
                let _ =
                    writeln!(md, "| 0 lost samples ({threads} busy) | {lost} (worst round) | {} |", verdict(lost == 0));
            }
        }
        for (name, runs) in [("native", &self.native), ("Python / mixed", &self.python)] {
            let error = runs.get(&Tool::Ours).map_or(f64::NAN, |runs| worst_error(runs));
            let _ = writeln!(
                md,
                "| attribution error ≤ {MAX_ERROR_PP:.0} pp ({name}, worst function) | {error:.1} pp | {} |",
                verdict(error <= MAX_ERROR_PP)
            );
        }
        md.push('\n');
    }

    fn render_slowdown(&self, md: &mut String) {
        let _ = writeln!(md, "## 1. Target slowdown\n");
        let _ = writeln!(
            md,
            "`bench/workloads/fixed_work.py`: {FIXED_WORK_ROUNDS} rounds of a pure-Python loop, an lxml parse and \
             a numpy sort, timed from SIGUSR1 (sent once the profiler is attached) to the end. Demo app: \
             `examples/quake-monitor` under uvicorn, driven by `bench/workloads/saturate.py` ({LOAD_CONNECTIONS} \
             closed-loop connections, so the app is the bottleneck) for {LOAD_SECONDS} s per round.\n"
        );
        let _ = writeln!(
            md,
            "| profiler | script wall time | vs none | app requests/s | vs none |\n| --- | --- | --- | --- | --- |"
        );
        for tool in [Tool::None, Tool::Ours, Tool::PySpy, Tool::Perf] {
            let time = median(self.script.get(&tool).into_iter().flatten().copied());
            let rate = median(self.app.get(&tool).into_iter().flatten().copied());
            let _ = writeln!(
                md,
                "| {} | {time:.3} s | {:+.1}% | {rate:.1} | {:+.1}% |",
                tool.name(),
                Self::slowdown(&self.script, tool, false) * 100.0,
                (rate / median(self.app.get(&Tool::None).into_iter().flatten().copied()) - 1.0) * 100.0
            );
        }
        let spread = |values: &PerTool<f64>| baseline_spread(values) * 100.0;
        let _ = writeln!(
            md,
            "\nNoise: without any profiler the rounds spread over {:.1}% (script) and {:.1}% (app) of their median; \
             a difference smaller than that is not a measured slowdown. The in-kernel cost of our sampler (section \
             2) bounds our share of it without that noise.",
            spread(&self.script),
            spread(&self.app)
        );
        md.push('\n');
    }

    fn render_costs(&self, md: &mut String) {
        let _ = writeln!(md, "## 2. Agent cost and 3. sampling\n");
        let _ = writeln!(
            md,
            "`bench/workloads/busy_threads.py N`: N threads sorting numpy arrays (the GIL released, so all N are \
             runnable). Over a {:.0} s window marked in the workload: the profiler's CPU time (all its threads, \
             from schedstat) per second, per sample, and against the target's CPU time in the same window (the \
             share of a core the profiler costs per fully busy thread); samples in the window per second of the \
             target's CPU time, all rounds pooled (the rate per busy thread: cpu-clock samples a thread only \
             while it runs, so with \
             more busy threads than CPUs this is still {RATE_HZ} Hz). Total CPU includes start-up (loading and \
             verifying eBPF programs, reading unwind tables). py-spy samples by wall clock, every thread that is \
             not idle, so its rate per CPU-second exceeds {RATE_HZ} Hz when threads wait for a CPU; perf and py-spy \
             count lost samples differently (perf: lost chunks, py-spy: sampling errors).\n",
            COST_WINDOW.as_secs_f64()
        );
        let _ = writeln!(
            md,
            "| busy threads | profiler | % of a core per busy thread | CPU ms per s | µs per sample | rate per busy \
             thread | lost | total CPU | peak RSS | of which BPF maps |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        let mut in_kernel = String::new();
        for (threads, costs) in &self.costs {
            for (tool, runs) in costs {
                let m = |f: fn(&CostRun) -> f64| median(runs.iter().map(f));
                let lost = runs
                    .iter()
                    .map(|r| r.lost.map_or("?".to_owned(), |l| l.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ");
                let _ = writeln!(
                    md,
                    "| {threads} | {} | {:.2}% | {:.1} | {:.0} | {:.1} Hz | {lost} | {:.2} s | {:.1} MiB | {:.1} MiB |",
                    tool.name(),
                    m(|r| r.agent_per_target) * 100.0,
                    m(|r| r.agent_cpu_per_second) * 1000.0,
                    m(|r| r.agent_us_per_sample),
                    pooled_rate(runs),
                    m(|r| r.total_cpu_s),
                    m(|r| r.max_rss_mib),
                    m(|r| r.bpf_map_rss_mib),
                );
                let bpf_us: Vec<f64> = runs.iter().filter_map(|r| r.bpf_us_per_sample).collect();
                let bpf_share: Vec<f64> = runs.iter().filter_map(|r| r.bpf_target_share).collect();
                if !bpf_us.is_empty() && !bpf_share.is_empty() {
                    let (us, share) = (median(bpf_us), median(bpf_share));
                    let _ = writeln!(in_kernel, "| {threads} | {us:.1} µs | {:.3}% |", share * 100.0);
                }
            }
        }
        md.push('\n');
        if !in_kernel.is_empty() {
            let _ = writeln!(
                md,
                "Our sampler's own cost runs in the kernel, in the context of the sampled thread, so it is part of \
                 the target's slowdown and not of the profiler's CPU time. Measured with kernel.bpf_stats_enabled \
                 over the same windows (every run of the perf-event program, other processes' ticks that it \
                 dismisses included, so an upper bound):\n"
            );
            let header = "| busy threads | in-kernel time per sample | of the target's CPU time |\n| --- | --- | --- |";
            let _ = writeln!(md, "{header}\n{in_kernel}");
        }
    }

    fn render_stages(&self, md: &mut String) {
        let _ = writeln!(md, "## 4. Our userspace cost per sample, by stage\n");
        let _ = writeln!(
            md,
            "From `profiler record --stats-json`: time per stage, in µs per sample; cold is each process's first \
             100 samples (maps, unwind tables, symbols and code objects read for the first time), warm the rest. \
             Medians over the rounds. The stages are timed by the wall clock, so a stage during which the profiler \
             waited for a CPU counts that wait: native-burn keeps both CPUs busy with its three threads.\n"
        );
        let _ = writeln!(
            md,
            "| workload | caches | samples | {} |\n| --- | --- | --- |{}",
            STAGES.join(" | "),
            " --- |".repeat(STAGES.len())
        );
        let mut rows: Vec<(String, Vec<StageCosts>)> = Vec::new();
        for (threads, costs) in &self.costs {
            let stages = costs.get(&Tool::Ours).into_iter().flatten().filter_map(|r| r.stages.clone()).collect();
            rows.push((format!("busy_threads.py {threads}"), stages));
        }
        for (name, runs) in [("native-burn", &self.native), ("split.py", &self.python)] {
            let stages = runs.get(&Tool::Ours).into_iter().flatten().filter_map(|r| r.stages.clone()).collect();
            rows.push((name.to_owned(), stages));
        }
        for (name, stages) in rows {
            for (warmth, pick) in [("cold", 0), ("warm", 1)] {
                let samples =
                    median(stages.iter().map(|s| if pick == 0 { s.cold_samples } else { s.warm_samples } as f64));
                let values: Vec<String> = (0..STAGES.len())
                    .map(|i| {
                        format!("{:.1}", median(stages.iter().map(|s| if pick == 0 { s.cold[i] } else { s.warm[i] })))
                    })
                    .collect();
                let _ = writeln!(md, "| {name} | {warmth} | {samples:.0} | {} |", values.join(" | "));
            }
        }
        md.push('\n');
    }

    fn render_fidelity(&self, md: &mut String) {
        let _ = writeln!(md, "## 5. Fidelity\n");
        let _ = writeln!(
            md,
            "Each function's share of its thread's samples against the truth, in percent, over {:.0} s recordings \
             of one running process that the profilers take in turn; the rounds' samples are pooled, and ±σ is the \
             binomial standard error of the measured share (what sampling alone explains). native-burn's split is \
             by construction (the \
             main thread gives `hot_main_a` 3 units of work and `hot_main_b` 2; its other threads each run one \
             function); split.py measures its own with `time.thread_time_ns` around each call, over the same \
             stretch (its shares include the C-extension code each function calls). py-spy cannot profile a \
             program without Python and perf does not see Python functions, so each workload has the two \
             profilers that can read it. Complete: stacks reaching the thread's root (`_start` or `clone3`; for \
             Python, the script's `<module>`).\n",
            FIDELITY_WINDOW.as_secs_f64()
        );
        let _ = writeln!(
            md,
            "| workload | profiler | function | truth | measured | error |\n| --- | --- | --- | --- | --- | --- |"
        );
        for (workload, runs) in [("native-burn", &self.native), ("split.py", &self.python)] {
            for (tool, runs) in runs {
                for (function, truth, measured, sigma) in pooled_shares(runs) {
                    let error = (truth - measured).abs();
                    let _ = writeln!(
                        md,
                        "| {workload} | {} | `{function}` | {truth:.1}% | {measured:.1}% ± {sigma:.1} | {error:.1} pp |",
                        tool.name()
                    );
                }
            }
        }
        md.push('\n');
        let _ = writeln!(md, "| workload | profiler | samples per round | worst error | complete stacks |");
        let _ = writeln!(md, "| --- | --- | --- | --- | --- |");
        for (workload, runs) in [("native-burn", &self.native), ("split.py", &self.python)] {
            for (tool, runs) in runs {
                let _ = writeln!(
                    md,
                    "| {workload} | {} | {:.0} | {:.1} pp | {:.1}% |",
                    tool.name(),
                    median(runs.iter().map(|r| r.samples as f64)),
                    worst_error(runs),
                    median(runs.iter().map(|r| r.complete))
                );
            }
        }
    }
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
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0]), 2.5);
        assert!(median([]).is_nan());
    }

    #[test]
    fn numbers_in_tool_messages() {
        assert_eq!(number_before("Processed 10 events and lost 3 chunks!", " chunks"), Some(3));
        assert_eq!(number_after("Samples: 812 Errors: 0\n", "Errors: "), Some(0));
    }
}
