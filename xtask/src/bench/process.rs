//! What the bench reads from /proc and the kernel: CPU time from schedstat, the in-kernel run time of BPF
//! programs (kernel.bpf_stats_enabled), the RSS of BPF maps, signal masks and process states; and signals, and
//! CLOCK_MONOTONIC.
//!
//! Kept apart because these are measurements and process plumbing with no knowledge of the profilers or the
//! sections that use them.
use std::{
    collections::BTreeMap,
    fs, thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};

/// `prog_type` of perf-event BPF programs (our sampler), in fdinfo.
pub(super) const BPF_PROG_TYPE_PERF_EVENT: u32 = 7;
pub(super) const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
const BPF_STATS_SWITCH: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// The kernel's run-time accounting of BPF programs, on while this lives (it costs two clock reads per program
/// run, so it is off by default); the previous setting is put back.
pub(super) struct BpfStats {
    previous: String,
}

impl BpfStats {
    pub(super) fn enable() -> Option<Self> {
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
pub(super) fn bpf_run_times(pid: u32) -> BTreeMap<u32, (u64, u64)> {
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
pub(super) fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|task| fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

pub(super) fn status_field(pid: u32, field: &str) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| line.strip_prefix(field)).map(|value| value.trim().to_owned())
}

/// Whether the process has a SIGINT handler: each profiler installs one as it begins to sample.
pub(super) fn catches_sigint(pid: u32) -> bool {
    status_field(pid, "SigCgt:")
        .and_then(|mask| u64::from_str_radix(&mask, 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGINT - 1)) != 0)
}

/// Whether the process is still running (a zombie waiting to be reaped counts as ended).
pub(super) fn process_exists_unreaped(pid: u32) -> bool {
    status_field(pid, "State:").is_some_and(|state| !state.starts_with('Z'))
}

pub(super) fn wait_for_threads(pid: u32, threads: usize) -> Result<()> {
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
pub(super) fn bpf_map_rss_kib(pid: u32) -> u64 {
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

pub(super) fn signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill has no memory preconditions; the pids are our own unreaped children.
        unsafe { libc::kill(pid, signal) };
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of perf's `-k CLOCK_MONOTONIC` timestamps.
pub(super) fn monotonic() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}
