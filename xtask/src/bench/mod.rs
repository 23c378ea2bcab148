//! `cargo xtask bench`: what the profiler costs the processes it watches and the machine it runs on, and how
//! truthful its profiles are, measured side by side with py-spy and perf in one run and written to
//! bench/RESULTS.md.
//!
//! A lone absolute time says little on a shared machine, so every figure comes from configurations run in turn
//! (no profiler, ours, py-spy, perf; each round starts one further along), reported as the median over rounds
//! and as a ratio to the baseline measured in the same rounds. Costs are read from the kernel's clocks rather than the
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
//!
//! The code is laid out by what each part owns: this file the command (options, the profilers compared, the order
//! of the rounds, the run from start to RESULTS.md); `cost` the slowdown, agent-cost and off-CPU sections (1 to 3,
//! 6), `fidelity` section 5, `memory` section 7, `upload` section 8 (bytes pushed to Pyroscope), `scale` section 9 (processes, threads, churn), `agent` starting
//! and stopping a profiler and reading what it recorded, `process` what is read from /proc and the kernel, and
//! `report` the markdown.
use std::{
    collections::BTreeMap,
    fs,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};

use self::report::{Machine, Results};
use crate::{cmd, setup, Workspace};

mod agent;
mod cost;
mod fidelity;
mod memory;
mod process;
mod report;
mod scale;
mod upload;

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
    /// Ours with the off-CPU sampler too (`--profile cpu,off-cpu`).
    OursOffCpu,
    /// Ours with the memory profile too (`--profile cpu,memory`).
    OursMemory,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::None => "no profiler",
            Tool::Ours => "profiler record",
            Tool::PySpy => "py-spy --native",
            Tool::Perf => "perf --call-graph dwarf",
            Tool::OursOffCpu => "profiler record --profile cpu,off-cpu",
            Tool::OursMemory => "profiler record --profile cpu,memory",
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
    eprintln!("== off-CPU sampling: demo app saturated");
    let off_cpu = bench.off_cpu_cost(rounds)?;
    eprintln!("== memory profile: demo app saturated, and grow.py");
    let memory = bench.memory_cost(rounds)?;
    eprintln!("== upload volume: `profiler run` on the demo app, idle and saturated");
    let uploads = bench.upload_volume()?;
    eprintln!("== scaling: 1, 8, 64 processes; 8, 64, 512 threads; churn");
    let scaling = bench.scaling()?;
    eprintln!("== fidelity: native-burn");
    let native = bench.fidelity_native(rounds)?;
    eprintln!("== fidelity: split.py");
    let python = bench.fidelity_python(rounds)?;

    let mut machine = machine;
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    machine
        .lines
        .push(("load average at the end".into(), load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")));
    let results = Results {
        machine,
        rounds,
        script,
        app,
        costs,
        off_cpu,
        memory,
        uploads,
        scaling,
        native,
        python,
        took: started.elapsed(),
    };
    let mut markdown = results.render();
    println!("{markdown}");
    let path = ws.root.join("bench/RESULTS.md");
    // The hour-long soak is its own task (`cargo xtask soak`); its section stays until it runs again.
    if let Some(soak) = fs::read_to_string(&path).ok().as_deref().and_then(|old| crate::readme::block(old, "soak")) {
        markdown.push('\n');
        markdown.push_str(soak);
        markdown.push('\n');
    }
    fs::write(&path, &markdown).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {} ({:.0} s in all)", path.display(), started.elapsed().as_secs_f64());
    Ok(())
}

/// One configuration's measurements over the rounds.
type PerTool<T> = BTreeMap<Tool, Vec<T>>;

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
}

/// The configurations of one round: all of them, each round starting one further along (A B C, B C A, C A B),
/// so that no configuration always runs after the same one (a profiler still freeing memory, a build starting).
fn in_turn(tools: &[Tool], round: usize) -> Vec<Tool> {
    let mut tools = tools.to_vec();
    let shift = round % tools.len();
    tools.rotate_left(shift);
    tools
}

/// Runs `measure` once for every configuration in every round, in the order of `in_turn`, and gathers what it
/// returns by configuration: the round loop of every comparison.
fn in_rounds<T>(
    tools: &[Tool],
    rounds: usize,
    mut measure: impl FnMut(usize, Tool) -> Result<T>,
) -> Result<PerTool<T>> {
    let mut measured = PerTool::new();
    for round in 0..rounds {
        for tool in in_turn(tools, round) {
            measured.entry(tool).or_insert_with(Vec::new).push(measure(round, tool)?);
        }
    }
    Ok(measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_round_starts_one_further_along() {
        let (a, b, c) = (Tool::None, Tool::Ours, Tool::Perf);
        let mut order = Vec::new();
        let measured = in_rounds(&[a, b, c], 4, |round, tool| {
            order.push(tool);
            Ok(round)
        })
        .unwrap();
        assert_eq!(order, [a, b, c, b, c, a, c, a, b, a, b, c]);
        assert_eq!(measured.len(), 3);
        assert_eq!(measured[&b], [0, 1, 2, 3]);
    }
}
