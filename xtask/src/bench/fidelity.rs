//! Section 5 of the report: how truthful each profiler's shares are, against a split known by construction
//! (native-burn) or measured by the workload itself (split.py).
//!
//! Kept apart because it judges what the profilers recorded, not what they cost: one long-running workload that
//! the profilers take in turn, and the pooling of shares over the rounds.
use std::{
    collections::BTreeMap,
    fs,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};

use super::{
    agent::{Agent, Finished, Stack, StageCosts},
    in_rounds,
    process::wait_for_threads,
    Bench, PerTool, Tool, FIDELITY_WINDOW, PYTHON, SETTLE,
};
use crate::demo;

/// Shares of each function (within its thread) measured by one tool in one recording, with the truth of the
/// same stretch, and the share of samples whose stack reached the thread's root.
#[derive(Clone, Debug, Default)]
pub(super) struct FidelityRun {
    shares: Vec<Share>,
    pub(super) complete: f64,
    pub(super) samples: u64,
    pub(super) stages: Option<StageCosts>,
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

impl FidelityRun {
    /// One recording's run, from its shares, the share of complete stacks (`complete` says what those reach) and
    /// all its stacks, reported as it is taken.
    fn logged(
        round: usize,
        tool: Tool,
        shares: Vec<Share>,
        complete: f64,
        all: &[&Stack],
        finished: &Finished,
        reaching: &str,
    ) -> Result<Self> {
        let samples = all.iter().map(|s| s.count).sum();
        let run = FidelityRun { shares, complete, samples, stages: finished.stage_costs()? };
        eprintln!(
            "  round {}: {:<24} {} samples, worst error {:.1} pp, {:.1}% {reaching}",
            round + 1,
            tool.name(),
            run.samples,
            worst_error(std::slice::from_ref(&run)),
            run.complete
        );
        Ok(run)
    }
}

/// Shares of the rounds of one tool pooled: (function, truth %, measured %, binomial standard error of the
/// measured share in percentage points: the part of the error that sampling alone explains).
pub(super) fn pooled_shares(runs: &[FidelityRun]) -> Vec<(String, f64, f64, f64)> {
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
pub(super) fn worst_error(runs: &[FidelityRun]) -> f64 {
    pooled_shares(runs).iter().map(|(_, truth, measured, _)| (truth - measured).abs()).fold(f64::NAN, f64::max)
}

impl Bench {
    /// 5. examples/native-burn, whose split is known by construction: in the main thread `hot_main_a` 60% and
    ///    `hot_main_b` 40%; `burn-a` is all `lib_hot_x` (through libburnlib.so), `burn-b` all `hot_b`.
    pub(super) fn fidelity_native(&mut self, rounds: usize) -> Result<PerTool<FidelityRun>> {
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
        let runs = in_rounds(&[Tool::Ours, Tool::Perf], rounds, |round, tool| {
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
            FidelityRun::logged(round, tool, shares, complete, &all, &finished, "complete")
        })?;
        drop(workload);
        Ok(runs)
    }

    /// 5. tests/workloads/python/split.py, which measures its own split with `time.thread_time_ns`: `py_hot`
    ///    (pure Python), `lxml_parse` and `numpy_compute` (Python calling C extensions).
    pub(super) fn fidelity_python(&mut self, rounds: usize) -> Result<PerTool<FidelityRun>> {
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
        let runs = in_rounds(&[Tool::Ours, Tool::PySpy], rounds, |round, tool| {
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
            FidelityRun::logged(round, tool, shares, complete, &all, &finished, "reach <module>")
        })?;
        drop(workload);
        Ok(runs)
    }
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
