//! The report: the machine the numbers were measured on, and bench/RESULTS.md rendered from the sections'
//! results (medians over the rounds, ratios to the baseline, the verdict on each target of issue 7).
//!
//! Kept apart because it only describes and formats: it runs no profiler and no workload, and the format of
//! RESULTS.md changes on its own.
use std::{fmt::Write as _, fs, process::Command, thread, time::Duration};

use anyhow::Result;

use super::{
    agent::{StageCosts, STAGES},
    cost::{CostRun, OffCpuRun},
    fidelity::{pooled_shares, worst_error, FidelityRun},
    memory::{MemoryCosts, MemoryRun},
    Bench, PerTool, Tool, COST_WINDOW, FIDELITY_WINDOW, FIXED_WORK_ROUNDS, LOAD_CONNECTIONS, LOAD_SECONDS,
    MAX_AGENT_CORE_SHARE, MAX_ERROR_PP, MAX_RSS_MIB, MAX_SLOWDOWN, PYTHON, RATE_HZ, RATE_TOLERANCE_HZ,
};
use crate::cmd;

/// Where the numbers were measured.
pub(super) struct Machine {
    pub(super) lines: Vec<(String, String)>,
}

impl Machine {
    pub(super) fn describe(bench: &Bench) -> Result<Self> {
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

pub(super) struct Results {
    pub(super) machine: Machine,
    pub(super) rounds: usize,
    pub(super) script: PerTool<f64>,
    pub(super) app: PerTool<f64>,
    pub(super) costs: Vec<(usize, PerTool<CostRun>)>,
    pub(super) off_cpu: PerTool<OffCpuRun>,
    pub(super) memory: MemoryCosts,
    pub(super) uploads: Vec<super::upload::UploadRun>,
    pub(super) scaling: Vec<super::scale::ScalePoint>,
    pub(super) native: PerTool<FidelityRun>,
    pub(super) python: PerTool<FidelityRun>,
    pub(super) took: Duration,
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
/// The verdict on a slowdown: met, or not resolved when the baseline's own rounds spread wider than it, else missed.
fn judge_slowdown(slowdown: f64, noise: f64) -> String {
    if slowdown <= MAX_SLOWDOWN {
        "met".to_owned()
    } else if slowdown <= noise {
        format!("not resolved: within the baseline's own spread of {:.1}%", noise * 100.0)
    } else {
        verdict(false).to_owned()
    }
}

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
    pub(super) fn render(&self) -> String {
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
        self.render_off_cpu(&mut md);
        self.render_memory(&mut md);
        self.render_uploads(&mut md);
        self.render_scaling(&mut md);
        md
    }

    fn render_scaling(&self, md: &mut String) {
        let _ = writeln!(
            md,
            "## 9. Scaling: processes, threads, churn

`profiler record --pid MASTER` of              bench/workloads/pool.py: a master and N forked workers (a gunicorn/uvicorn pool), one process with N              threads, and a master starting 4 short-lived workers a second (each lives about a second). Every              worker runs the same handler mix (a Python loop, JSON, a numpy sort) without pause, so both CPUs are              busy at every point and the samples per second stay about the same: what changes is what the agent              keeps and does per process and per thread. One run per point, measured over {} s after {} s of              settling; the targets' CPU is the machine's busy time less the agent's. Only our profiler (py-spy              follows a pool only with `--subprocesses`, one sampler per process).\n",
            super::scale::SCALE_WINDOW.as_secs(),
            super::scale::SCALE_SETTLE.as_secs()
        );
        let _ = writeln!(
            md,
            "| workload | N | processes followed | threads | agent CPU / targets' CPU | agent, % of a core | agent RSS \
             at the end | peak RSS |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for p in &self.scaling {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.2}% | {:.2}% | {:.1} MiB | {:.1} MiB |",
                p.mode,
                p.count,
                p.processes,
                p.threads,
                p.agent_per_target * 100.0,
                p.agent_core_share * 100.0,
                p.rss_end_mib,
                p.max_rss_mib
            );
        }
        let rss = |mode: &str, count: u32| {
            self.scaling.iter().find(|p| p.mode == mode && p.count == count).map(|p| p.rss_end_mib)
        };
        if let (Some(eight), Some(sixty_four)) = (rss("processes", 8), rss("processes", 64)) {
            let _ = writeln!(
                md,
                "\nEach worker from the 9th to the 64th added {:.2} MiB to the agent's RSS (target: at most 0.5 MiB).",
                (sixty_four - eight) / 56.0
            );
        }
        if let (Some(few), Some(many)) = (rss("threads", 64), rss("threads", 512)) {
            let _ =
                writeln!(md, "Each thread from the 65th to the 512th added {:.1} KiB.", (many - few) * 1024.0 / 448.0);
        }
        md.push('\n');
    }

    fn render_uploads(&self, md: &mut String) {
        let _ = writeln!(
            md,
            "## 8. Upload volume

`profiler run --pid APP` with its defaults (15 s windows, push API) against a              loopback receiver that counts what arrives, for about 45 s per configuration and the last window sent              at SIGINT: the demo app idle (its scheduler thread only) and saturated as in section 6 (every              handler, two threads busy). Bodies are the gzip'd pprof in the push request; the wire adds the HTTP              headers. The app's owners estimated the Python SDK's upload at 1–2 KB/s.
"
        );
        let _ = writeln!(
            md,
            "| demo app | profiles | requests | bodies | on the wire |
| --- | --- | --- | --- | --- |"
        );
        for run in &self.uploads {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.0} B/s | {:.0} B/s |",
                run.scenario,
                run.profiles,
                run.requests,
                run.body_bytes as f64 / run.seconds,
                run.wire_bytes as f64 / run.seconds
            );
        }
        md.push('\n');
    }

    fn render_memory(&self, md: &mut String) {
        let _ = writeln!(
            md,
            "## 7. Memory profile\n\n`--profile cpu,memory` against `--profile cpu` and no profiler, on two workloads: the \
             demo app saturated as in section 6 (a service whose memory is steady: the cost is the program run at \
             every page fault of the machine), and tests/workloads/python/grow.py (numpy arrays and bytearrays of \
             fresh memory, about a GiB a second: nearly every fault is a target's, hundreds a second are captured). \
             Medians over the rounds: the workload's own rate, the profiler's CPU against the workload's, and the \
             in-kernel time of our perf_event program (ticks and faults) against the workload's CPU.\n"
        );
        let _ = writeln!(
            md,
            "| workload | configuration | rate | vs none | agent CPU / target CPU | in-kernel perf_event program |\n\
             | --- | --- | --- | --- | --- | --- |"
        );
        for (name, unit, runs) in
            [("demo app", "requests/s", &self.memory.app), ("grow.py", "rounds/s", &self.memory.grow)]
        {
            let medians = |tool: Tool| {
                let runs = runs.get(&tool)?;
                let of = |field: fn(&MemoryRun) -> f64| median(runs.iter().map(field));
                Some(MemoryRun {
                    work_per_s: of(|r| r.work_per_s),
                    agent_per_target: of(|r| r.agent_per_target),
                    sampler_share: of(|r| r.sampler_share),
                })
            };
            let base = medians(Tool::None).map_or(f64::NAN, |r| r.work_per_s);
            for tool in [Tool::None, Tool::Ours, Tool::OursMemory] {
                let Some(r) = medians(tool) else { continue };
                let _ = writeln!(
                    md,
                    "| {name} | {} | {:.1} {unit} | {:+.1}% | {:.2}% | {:.2}% |",
                    tool.name(),
                    r.work_per_s,
                    (r.work_per_s / base - 1.0) * 100.0,
                    r.agent_per_target * 100.0,
                    r.sampler_share * 100.0
                );
            }
        }
        md.push('\n');
    }

    /// Medians of one configuration's off-CPU runs.
    fn off_cpu_medians(&self, tool: Tool) -> Option<OffCpuRun> {
        let runs = self.off_cpu.get(&tool)?;
        let of = |field: fn(&OffCpuRun) -> f64| median(runs.iter().map(field));
        Some(OffCpuRun {
            requests_per_s: of(|r| r.requests_per_s),
            switches_per_s: of(|r| r.switches_per_s),
            agent_per_target: of(|r| r.agent_per_target),
            cpu_sampler_share: of(|r| r.cpu_sampler_share),
            off_cpu_sampler_share: of(|r| r.off_cpu_sampler_share),
        })
    }

    fn render_off_cpu(&self, md: &mut String) {
        let _ = writeln!(
            md,
            "## 6. Off-CPU sampling
"
        );
        let _ = writeln!(
            md,
            "The demo app saturated as in section 1 ({LOAD_CONNECTIONS} closed-loop connections for {LOAD_SECONDS} s \
             per round): its event loop and worker threads switch thousands of times a second, the worst case for a \
             sampler on `sched_switch`. Per configuration, medians over the rounds: the app's requests/s, its \
             context switches per second (all threads), the profiler's CPU time against the app's CPU time, and the \
             in-kernel time of our CPU sampler (perf_event programs) and off-CPU sampler (raw tracepoint programs on \
             sched_switch), against the app's CPU time, from kernel.bpf_stats_enabled (every run, other processes' \
             switches that it dismisses included: an upper bound).\n"
        );
        let _ = writeln!(
            md,
            "| configuration | requests/s | vs none | app switches/s | agent CPU / app CPU | in-kernel CPU sampler | \
             in-kernel off-CPU sampler |\n| --- | --- | --- | --- | --- | --- | --- |"
        );
        let base = self.off_cpu_medians(Tool::None).map_or(f64::NAN, |r| r.requests_per_s);
        for tool in [Tool::None, Tool::Ours, Tool::OursOffCpu] {
            let Some(r) = self.off_cpu_medians(tool) else { continue };
            let _ = writeln!(
                md,
                "| {} | {:.1} | {:+.1}% | {:.0} | {:.2}% | {:.2}% | {:.2}% |",
                tool.name(),
                r.requests_per_s,
                (r.requests_per_s / base - 1.0) * 100.0,
                r.switches_per_s,
                r.agent_per_target * 100.0,
                r.cpu_sampler_share * 100.0,
                r.off_cpu_sampler_share * 100.0
            );
        }
        md.push('\n');
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
            let judged = judge_slowdown(slowdown, baseline_spread(values));
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
        if let (Some(none), Some(with)) = (self.off_cpu_medians(Tool::None), self.off_cpu_medians(Tool::OursOffCpu)) {
            let rates: PerTool<f64> = self
                .off_cpu
                .iter()
                .map(|(tool, runs)| (*tool, runs.iter().map(|r| r.requests_per_s).collect()))
                .collect();
            let slowdown = Self::slowdown(&rates, Tool::OursOffCpu, true);
            let judged = judge_slowdown(slowdown, baseline_spread(&rates));
            let _ = writeln!(
                md,
                "| target slowdown ≤ {:.0}%: demo app saturated ({:.0} switches/s), with off-CPU sampling, requests/s | \
                 {:+.1}% | {judged} |",
                MAX_SLOWDOWN * 100.0,
                none.switches_per_s,
                slowdown * 100.0
            );
            let in_kernel = with.cpu_sampler_share + with.off_cpu_sampler_share;
            let _ = writeln!(
                md,
                "| target slowdown ≤ {:.0}%: our samplers' in-kernel time (CPU + off-CPU) / the app's CPU time, same load \
                 | {:.2}% | {} |",
                MAX_SLOWDOWN * 100.0,
                in_kernel * 100.0,
                verdict(in_kernel <= MAX_SLOWDOWN)
            );
            let _ = writeln!(
                md,
                "| agent CPU ≤ {:.0}% of the app's CPU, with off-CPU sampling, same load | {:.2}% | {} |",
                MAX_AGENT_CORE_SHARE * 100.0,
                with.agent_per_target * 100.0,
                verdict(with.agent_per_target <= MAX_AGENT_CORE_SHARE)
            );
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
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0]), 2.5);
        assert!(median([]).is_nan());
    }
}
