//! The end-of-recording summary: counts, unwind quality, the top functions by self and total time, and CPU by
//! endpoint (the `endpoint` label, when the targets served requests); and the same counters with the per-stage
//! userspace cost as JSON (`--stats-json`), for benchmarks.
use std::{
    collections::{HashMap, HashSet},
    fs,
    io::{self, Write},
    path::Path,
    time::Duration,
};

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::{
    aggregate::{label_value, FrameKind, Profile, ProfileKind},
    labels::endpoint::ENDPOINT,
    pipeline::{StageTimes, Stats, COLD_SAMPLES},
};

const TOP: usize = 10;

pub(crate) fn print(
    out: &mut impl Write,
    profile: &Profile,
    stats: &Stats,
    lost: u64,
    elapsed: Duration,
) -> io::Result<()> {
    let complete = if stats.samples == 0 { 0.0 } else { 100.0 * stats.complete_stacks as f64 / stats.samples as f64 };
    writeln!(
        out,
        "{} samples of {} threads in {:.1} s, {} lost; {:.1}% of stacks unwound to the thread's root",
        stats.samples,
        stats.thread_count(),
        elapsed.as_secs_f64(),
        lost,
        complete
    )?;
    if lost > 0 {
        writeln!(out, "warning: {lost} samples were lost because the ring buffer was full (userspace fell behind)")?;
    }
    if stats.samples == 0 {
        writeln!(out, "warning: no samples: the targets did not run on a CPU while recording")?;
    }
    let (self_counts, total_counts) = function_counts(profile);
    let total = profile.total_samples().max(1) as f64;
    for (heading, counts) in [("self", &self_counts), ("total", &total_counts)] {
        if counts.is_empty() {
            continue;
        }
        writeln!(out, "top functions by {heading} time:")?;
        let mut ranked: Vec<(&str, u64)> = counts.iter().map(|(name, &count)| (*name, count)).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        for (name, count) in ranked.into_iter().take(TOP) {
            writeln!(out, "  {:5.1}%  {count:>7}  {name}", 100.0 * count as f64 / total)?;
        }
    }
    let endpoints = label_counts(profile, ENDPOINT);
    if endpoints.iter().any(|(value, _)| value.is_some()) {
        writeln!(out, "CPU by endpoint (the `endpoint` label; samples outside a request handler have none):")?;
        for (value, count) in endpoints.iter().take(TOP + 1) {
            let name = value.unwrap_or("(no endpoint)");
            writeln!(out, "  {:5.1}%  {count:>7}  {name}", 100.0 * *count as f64 / total)?;
        }
    }
    Ok(())
}

/// The memory profile's summary, when there is one: how much the targets grew, and where (Python functions when the
/// stacks have any, as that is the code to change; else native ones), by endpoint and by thread.
pub(crate) fn print_memory(out: &mut impl Write, profiles: &[Profile], stats: &Stats) -> io::Result<()> {
    let Some(memory) = profiles.iter().find(|p| p.kind == ProfileKind::Memory) else { return Ok(()) };
    let total = memory.total();
    writeln!(
        out,
        "memory growth: {} in {:.1} s ({} page faults captured; freed memory is not subtracted)",
        mib(total),
        memory.duration_ns as f64 / 1e9,
        stats.page_fault_samples
    )?;
    if total == 0 {
        return Ok(());
    }
    let python = memory.frames.iter().any(|f| f.kind == FrameKind::Python);
    let mut by_function: HashMap<&str, u64> = HashMap::new();
    for stack in &memory.stacks {
        let mut seen = HashSet::new();
        for frame in stack.frames.iter().map(|&id| memory.frame(id)) {
            let wanted = if python { frame.kind == FrameKind::Python } else { frame.kind != FrameKind::Context };
            if wanted && seen.insert(&*frame.function) {
                *by_function.entry(&*frame.function).or_default() += stack.count;
            }
        }
    }
    let mut ranked: Vec<(&str, u64)> = by_function.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let kind = if python { "Python functions" } else { "functions" };
    writeln!(out, "top {kind} by memory growth (total):")?;
    for (name, bytes) in ranked.into_iter().take(TOP) {
        writeln!(out, "  {:5.1}%  {:>10}  {name}", 100.0 * bytes as f64 / total as f64, mib(bytes))?;
    }
    for (key, heading) in [(ENDPOINT, "by endpoint"), ("thread_name", "by thread")] {
        let counts = label_counts(memory, key);
        if !counts.iter().any(|(value, _)| value.is_some()) {
            continue;
        }
        writeln!(out, "memory growth {heading}:")?;
        for (value, bytes) in counts.iter().take(TOP + 1) {
            let name = value.unwrap_or("(none)");
            writeln!(out, "  {:5.1}%  {:>10}  {name}", 100.0 * *bytes as f64 / total as f64, mib(*bytes))?;
        }
    }
    Ok(())
}

/// Bytes as MiB with one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// Samples per value of label `key` (`None`: stacks without it), most first.
fn label_counts<'p>(profile: &'p Profile, key: &str) -> Vec<(Option<&'p str>, u64)> {
    let mut counts: HashMap<Option<&str>, u64> = HashMap::new();
    for stack in &profile.stacks {
        *counts.entry(label_value(&stack.labels, key)).or_default() += stack.count;
    }
    let mut ranked: Vec<(Option<&str>, u64)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked
}

/// Writes the recording's counters as JSON: `samples`, `lost_samples`, `complete_stacks`, `off_cpu_samples`
/// (captured leavings), `threads`,
/// `elapsed_s`, the profiler's own `cpu_user_s`, `cpu_system_s` and `max_rss_kib` so far (getrusage), and
/// `stages.cold` / `stages.warm`: per stage the total nanoseconds and over how many samples.
pub(crate) fn write_json(path: &Path, stats: &Stats, lost: u64, elapsed: Duration) -> anyhow::Result<()> {
    let usage = own_usage();
    let value = json!({
        "samples": stats.samples,
        "lost_samples": lost,
        "complete_stacks": stats.complete_stacks,
        "filtered_samples": stats.filtered_samples,
        "off_cpu_samples": stats.off_cpu_samples,
        "page_fault_samples": stats.page_fault_samples,
        "bad_records": stats.bad_records,
        "threads": stats.thread_count(),
        "processes": stats.process_count(),
        "elapsed_s": elapsed.as_secs_f64(),
        "cpu_user_s": usage.map(|u| timeval_secs(u.ru_utime)),
        "cpu_system_s": usage.map(|u| timeval_secs(u.ru_stime)),
        "max_rss_kib": usage.map(|u| u.ru_maxrss),
        "cold_samples_per_process": COLD_SAMPLES,
        "stages": { "cold": stage_json(&stats.cold), "warm": stage_json(&stats.warm) },
    });
    let text = serde_json::to_string_pretty(&value).context("encoding the stats")?;
    fs::write(path, text + "\n").with_context(|| format!("could not write the stats to {}", path.display()))
}

fn stage_json(times: &StageTimes) -> Value {
    let ns = |d: Duration| d.as_nanos() as u64;
    json!({
        "samples": times.samples,
        "unwind_ns": ns(times.unwind),
        "python_ns": ns(times.python),
        "symbolize_ns": ns(times.symbolize),
        "merge_ns": ns(times.merge),
        "aggregate_ns": ns(times.aggregate),
        "total_ns": ns(times.total()),
    })
}

/// This process's CPU time and peak RSS so far; `None` if getrusage failed (it does not on Linux).
fn own_usage() -> Option<libc::rusage> {
    // SAFETY: getrusage only writes the rusage we own; an all-zero rusage is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    (unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0).then_some(usage)
}

fn timeval_secs(time: libc::timeval) -> f64 {
    time.tv_sec as f64 + time.tv_usec as f64 / 1e6
}

/// Per function: samples where it is the leaf (self) and samples where it is anywhere on the stack (total,
/// counted once per stack even when recursive). Synthetic context frames are not functions.
fn function_counts(profile: &Profile) -> (HashMap<&str, u64>, HashMap<&str, u64>) {
    let mut self_counts = HashMap::new();
    let mut total_counts = HashMap::new();
    for stack in &profile.stacks {
        let mut functions = stack.frames.iter().map(|&id| profile.frame(id)).filter(|f| f.kind != FrameKind::Context);
        if let Some(leaf) = functions.clone().next() {
            *self_counts.entry(&*leaf.function).or_default() += stack.count;
        }
        let mut seen = HashSet::new();
        for frame in functions.by_ref() {
            if seen.insert(&*frame.function) {
                *total_counts.entry(&*frame.function).or_default() += stack.count;
            }
        }
    }
    (self_counts, total_counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{Aggregator, Frame, Label, LabelValue};

    fn frame(kind: FrameKind, name: &str) -> Frame {
        Frame { kind, function: name.into(), file: None, line: None, module: None, address: 0, inlined: false }
    }

    #[test]
    fn ranks_self_and_total_without_context_frames() {
        let mut aggregator = Aggregator::new(1);
        let (hot, main, ctx) =
            (frame(FrameKind::Native, "hot"), frame(FrameKind::Native, "main"), frame(FrameKind::Context, "app"));
        for _ in 0..3 {
            aggregator.add([&hot, &main, &ctx], vec![]);
        }
        aggregator.add([&main, &ctx], vec![]);
        let profile = aggregator.take();
        let (self_counts, total_counts) = function_counts(&profile);
        assert_eq!(self_counts["hot"], 3);
        assert_eq!(self_counts["main"], 1);
        assert_eq!(total_counts["main"], 4);
        assert!(!total_counts.contains_key("app"));

        let stats = Stats { samples: 4, complete_stacks: 3, ..Default::default() };
        let mut text = Vec::new();
        print(&mut text, &profile, &stats, 0, Duration::from_secs(1)).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("4 samples of 0 threads in 1.0 s, 0 lost; 75.0% of stacks"), "{text}");
        assert!(text.contains(" 75.0%        3  hot"), "{text}");
        assert!(text.contains("100.0%        4  main"), "{text}");
        assert!(!text.contains("endpoint"), "no endpoints, no section: {text}");
    }

    #[test]
    fn cpu_by_endpoint() {
        let mut aggregator = Aggregator::new(1);
        let handler = frame(FrameKind::Python, "handler");
        let endpoint = |value: &str| vec![Label { key: ENDPOINT, value: LabelValue::Str(value.into()) }];
        for _ in 0..6 {
            aggregator.add([&handler], endpoint("earthquakes"));
        }
        for _ in 0..3 {
            aggregator.add([&handler], endpoint("weather_report"));
        }
        aggregator.add([&handler], vec![]);
        let mut text = Vec::new();
        print(&mut text, &aggregator.take(), &Stats::default(), 0, Duration::from_secs(1)).unwrap();
        let text = String::from_utf8(text).unwrap();
        let section = text.split_once("CPU by endpoint").expect(&text).1;
        let lines: Vec<&str> = section.lines().skip(1).collect();
        assert_eq!(
            lines,
            ["   60.0%        6  earthquakes", "   30.0%        3  weather_report", "   10.0%        1  (no endpoint)"]
        );
    }
}
