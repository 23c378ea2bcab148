//! Following processes through their lives (issue 5): uvicorn's master and its spawned workers by `--name` and by
//! `--pid`; targets killed with SIGKILL and started again (a native program by `--name`, a Python script by
//! `--match-cmdline`, the whole app by `--name uvicorn`), picked up within 1 s; a PID reused by another program
//! without mixing the two; a fork storm that must not crash the agent or grow it; multiprocessing pools started
//! with fork and with spawn; `record --pid` without `--duration` ending when the target and its children are gone
//! (and with `--no-children`, when the target is); a child forked while the profiler starts.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use profiler_tests::{
    exclusive_cpu,
    lifecycle::{
        comm, count_with_frame, expected_samples, lifecycle_workloads, monotonic_ns, process_cpu, python, sample_pid,
        samples_by_pid, samples_of, stage_python, wait_for_file, Facts, QuakeMonitor, RssWatch, RESTART_NAME,
    },
    profiler,
    python::{pprof_samples, PprofFrame, PprofSample},
    read_pprof, require_root, run, send_signal, Folded, Process, Recorder, Run, TestDir,
};

/// `profiler record` with its crash reports (a target killed with SIGKILL is one) kept in the test's directory.
fn record_in(dir: &Path) -> Command {
    let mut cmd = profiler();
    cmd.arg("record").arg("--crash-dir").arg(dir.join("crashes"));
    cmd
}

// ---------------------------------------------------------------------------------------------------------------
// uvicorn with two workers

/// The uvicorn master only supervises: it pings each worker every 0.5 s and uses well under 1 ms of CPU a second,
/// which at the default 100 Hz is less than one sample in 10 s. At 1000 Hz it gets several.
const UVICORN_RATE: u64 = 1000;
const UVICORN_SECONDS: u64 = 10;

/// What one recording of the app found about one of its processes.
#[derive(Debug)]
struct ProcessReport {
    role: &'static str,
    pid: u32,
    comm: String,
    samples: u64,
    /// Of `samples`, those with a Python frame.
    python: u64,
    /// Of `samples`, those with a frame of examples/quake-monitor/app.py.
    app: u64,
    /// Samples its CPU time over the recording is worth at the recording's rate.
    expected: f64,
}

/// `--workers 2` under load, recorded for 10 s by `--name uvicorn` and then by `--pid MASTER`: both find the master
/// (named `uvicorn`) and both workers (spawned by multiprocessing: named `python`, found as the master's
/// children), with Python frames, the endpoints among them.
#[test]
fn uvicorn_master_and_workers_by_name_and_by_master_pid() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("lifecycle-uvicorn");
    let app = QuakeMonitor::start(2, dir.join("uvicorn.log"));
    let master = app.master();
    let workers = app.workers();
    assert_eq!(workers.len(), 2, "uvicorn --workers 2 runs workers {workers:?}");
    eprintln!(
        "uvicorn: master {master} named `{}`, workers {workers:?} named {:?}; all children of the master: {:?}",
        comm(master),
        workers.iter().map(|&w| comm(w)).collect::<Vec<_>>(),
        profiler_tests::lifecycle::children(master).iter().map(|&p| (p, comm(p))).collect::<Vec<_>>()
    );
    let _load = app.load(20, 300);
    // Past the first requests (imports, caches).
    thread::sleep(Duration::from_secs(2));

    let mut failures = Vec::new();
    let master_pid = master.to_string();
    let modes: [(&str, Vec<&str>); 2] =
        [("--name uvicorn", vec!["--name", "uvicorn"]), ("--pid MASTER", vec!["--pid", master_pid.as_str()])];
    for (mode, target) in modes {
        let tag = mode.replace(' ', "-").replace("--", "");
        let (folded_path, pprof_path) = (dir.join(format!("{tag}.folded")), dir.join(format!("{tag}.pb.gz")));
        let roles: Vec<(&str, u32)> =
            [("master", master)].into_iter().chain(workers.iter().map(|&w| ("worker", w))).collect();
        let before: Vec<_> = roles.iter().map(|&(_, pid)| process_cpu(pid)).collect();
        let mut record = record_in(dir.path());
        record.args(&target);
        record.args(["--duration", &format!("{UVICORN_SECONDS}s"), "--rate", &UVICORN_RATE.to_string()]);
        record.arg("-o").arg(&folded_path).arg("-o").arg(&pprof_path);
        let run = run(&mut record, Duration::from_secs(120));
        let after: Vec<_> = roles.iter().map(|&(_, pid)| process_cpu(pid)).collect();
        if !run.status.success() {
            failures.push(format!("{mode}: the profiler failed ({}):\n{}", run.status, run.stderr));
            continue;
        }
        let samples = pprof_samples(&read_pprof(&pprof_path));
        let folded = Folded::read(&folded_path);
        let by_pid = samples_by_pid(&samples);
        let reports: Vec<ProcessReport> = roles
            .iter()
            .zip(before.iter().zip(&after))
            .map(|(&(role, pid), (before, after))| {
                let own = samples_of(&samples, pid);
                let cpu = match (before, after) {
                    (Some(b), Some(a)) => a.saturating_sub(*b),
                    _ => Duration::ZERO,
                };
                ProcessReport {
                    role,
                    pid,
                    comm: comm(pid),
                    samples: own.iter().map(|s| s.count).sum(),
                    python: count_with_frame(&own, PprofFrame::is_python),
                    app: count_with_frame(&own, |f| f.is_python() && f.file.ends_with("quake-monitor/app.py")),
                    expected: expected_samples(cpu, UVICORN_RATE),
                }
            })
            .collect();
        let endpoint = |name: &str| {
            let all: Vec<&PprofSample> = samples.iter().collect();
            count_with_frame(&all, |f| f.is_python() && f.function == name && f.file.ends_with("quake-monitor/app.py"))
        };
        let (earthquakes, weather) = (endpoint("earthquakes"), endpoint("weather_report"));
        let roots: BTreeMap<String, u64> = folded.stacks.iter().fold(BTreeMap::new(), |mut roots, (frames, count)| {
            *roots.entry(frames[0].clone()).or_insert(0) += count;
            roots
        });
        eprintln!(
            "{mode}: {} samples at {UVICORN_RATE} Hz, by pid label {by_pid:?}; folded process names {roots:?}; \
             `earthquakes (app.py)` in {earthquakes}, `weather_report (app.py)` in {weather}",
            samples.iter().map(|s| s.count).sum::<u64>()
        );
        for r in &reports {
            eprintln!(
                "  {} {} (`{}`): {} samples (its CPU time is worth {:.0}), {} with Python frames, {} in app.py",
                r.role, r.pid, r.comm, r.samples, r.expected, r.python, r.app
            );
        }

        let pids: BTreeSet<u32> = by_pid.keys().copied().collect();
        for r in &reports {
            if !pids.contains(&r.pid) {
                failures.push(format!(
                    "{mode}: no samples of the {} {} (`{}`; its CPU time in the recording is worth {:.1} samples)",
                    r.role, r.pid, r.comm, r.expected
                ));
                continue;
            }
            if r.role == "master" {
                if r.python == 0 {
                    failures.push(format!("{mode}: none of the master's {} samples has a Python frame", r.samples));
                }
                continue;
            }
            if (r.samples as f64) < 0.5 * r.expected {
                failures.push(format!(
                    "{mode}: worker {} has {} samples, under half of the {:.0} its CPU time is worth",
                    r.pid, r.samples, r.expected
                ));
            }
            if (r.python as f64) < 0.5 * r.samples as f64 {
                failures.push(format!(
                    "{mode}: only {} of worker {}'s {} samples have Python frames",
                    r.python, r.pid, r.samples
                ));
            }
            if r.app == 0 {
                failures.push(format!("{mode}: no sample of worker {} has a frame of app.py", r.pid));
            }
        }
        if earthquakes == 0 {
            failures.push(format!("{mode}: no sample has the endpoint frame `earthquakes (…/app.py)`"));
        }
        if pids.len() < 3 {
            failures.push(format!("{mode}: only {} distinct pid labels: {pids:?}", pids.len()));
        }
    }
    assert!(failures.is_empty(), "{}\nuvicorn's log:\n{}", failures.join("\n"), app.log_text());
}

/// The app restarted the way systemd would after a crash: the whole uvicorn (master and workers, under load) is
/// killed with SIGKILL while `record --name uvicorn` runs and started again on a new port. The new master (found
/// by its exec) and its new workers (its children) are profiled from their start: each one has samples worth its
/// CPU time but the first second (80% of it: see below), the workers' startup (`<module> (app.py)`, which builds
/// the feed) is in the profile, and so are the endpoints; the agent keeps running and exits 0 at the end of
/// --duration.
#[test]
fn restarted_app_is_profiled_by_name_from_its_start() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    const DURATION: Duration = Duration::from_secs(30);
    let dir = TestDir::new("lifecycle-app-restart");
    let (folded_path, pprof_path) = (dir.join("x.folded"), dir.join("x.pb.gz"));
    let first = QuakeMonitor::start(2, dir.join("uvicorn-1.log"));
    let first_pids: Vec<u32> = [first.master()].into_iter().chain(first.workers()).collect();
    let first_load = first.load(20, 300);
    let mut record = record_in(dir.path());
    record.args(["--name", "uvicorn", "--duration", &format!("{}s", DURATION.as_secs())]);
    record.arg("-o").arg(&folded_path).arg("-o").arg(&pprof_path);
    let recording_started = Instant::now();
    let mut recorder = Recorder::start(&mut record);
    recorder.wait_until_recording();
    thread::sleep(Duration::from_secs(3));

    drop(first_load);
    drop(first); // SIGKILL to the whole process group
    let restarted = Instant::now();
    let second = QuakeMonitor::start(2, dir.join("uvicorn-2.log"));
    let serving_after = restarted.elapsed();
    let second_master = second.master();
    let second_workers = second.workers();
    // Load until 3 s before the recording ends, so the CPU times read then are (nearly) all the new processes used
    // while recorded.
    let end = recording_started + DURATION;
    let load_seconds = end.saturating_duration_since(Instant::now()).as_secs().saturating_sub(3);
    assert!(load_seconds >= 5, "the app took {serving_after:?} to serve again: the machine is too busy for this test");
    let second_load = second.load(20, load_seconds as u32);
    thread::sleep(end.saturating_duration_since(Instant::now()).saturating_sub(Duration::from_millis(700)));
    let roles: Vec<(&str, u32)> =
        [("master", second_master)].into_iter().chain(second_workers.iter().map(|&w| ("worker", w))).collect();
    let cpu: Vec<Duration> = roles.iter().map(|&(_, pid)| process_cpu(pid).unwrap_or_default()).collect();
    let run = recorder.finish(Duration::from_secs(90), "the profiler");
    drop(second_load);
    if !run.status.success() {
        panic!("the profiler did not keep running to exit 0 ({}):\n{}", run.status, run.stderr);
    }

    let samples = pprof_samples(&read_pprof(&pprof_path));
    let by_pid = samples_by_pid(&samples);
    eprintln!(
        "app restart: first uvicorn {first_pids:?}, restarted one serving {:.1} s after the kill: master \
         {second_master}, workers {second_workers:?}; samples by pid {by_pid:?}",
        serving_after.as_secs_f64()
    );
    let mut failures = Vec::new();
    // Its master is idle (see UVICORN_RATE): its workers must have samples.
    if !first_pids[1..].iter().all(|pid| by_pid.contains_key(pid)) {
        failures.push(format!("not every worker of the first uvicorn {first_pids:?} has samples: {by_pid:?}"));
    }
    let mut endpoints_total = 0;
    for (&(role, pid), cpu) in roles.iter().zip(&cpu) {
        let own = samples_of(&samples, pid);
        let total: u64 = own.iter().map(|s| s.count).sum();
        let unsampled = cpu.as_secs_f64() - total as f64 / 100.0;
        let startup = count_with_frame(&own, |f| {
            f.is_python() && f.function == "<module>" && f.file.ends_with("quake-monitor/app.py")
        });
        let endpoints = count_with_frame(&own, |f| {
            f.is_python() && ["earthquakes", "weather_report"].contains(&f.function.as_str())
        });
        endpoints_total += endpoints;
        eprintln!(
            "  new {role} {pid}: {total} samples for {:.2} s of CPU (unsampled: {unsampled:.2} s), {startup} in \
             `<module> (app.py)`, {endpoints} in endpoints",
            cpu.as_secs_f64()
        );
        // A server's threads are sampled a little under their CPU time (time in the kernel with interrupts
        // off delays the sampling timer), hence 80% of what the CPU time after the first second is worth.
        let floor = 0.8 * expected_samples(cpu.saturating_sub(Duration::from_secs(1)), 100);
        if total == 0 || (total as f64) < floor {
            failures.push(format!(
                "new {role} {pid}: {total} samples for {:.2} s of CPU, under the {floor:.0} it is worth if it was \
                 profiled from within 1 s of its start",
                cpu.as_secs_f64()
            ));
        }
        if role == "worker" && startup == 0 {
            failures.push(format!("new worker {pid}: its startup (`<module> (app.py)`) is not in the profile"));
        }
    }
    if endpoints_total == 0 {
        failures.push("no samples of the restarted app in its endpoints".to_owned());
    }
    assert!(failures.is_empty(), "{}\nthe profiler's stderr:\n{}", failures.join("\n"), run.stderr);
}

// ---------------------------------------------------------------------------------------------------------------
// A restarted target

/// Makes the command of a restart workload that writes its report to OUT and burns SLICES slices.
type StartWorkload = Box<dyn Fn(&Path, u32) -> Command>;

/// How the restart test starts its workload and finds it.
struct RestartCase {
    label: &'static str,
    /// The profiler's target arguments.
    target: Vec<String>,
    /// The workload writing its report to OUT and burning SLICES slices of 100 ms of CPU.
    start: StartWorkload,
    /// The process name the folded output must show for every sample (the same before and after the restart).
    name: String,
    /// Whether a slice frame must be a Python frame (the Python workload) or a native one.
    python: bool,
}

/// The slice index of the workload's `slice_NN` frame in `frames`, if any.
fn slice_of(frames: &[PprofFrame], python: bool) -> Option<usize> {
    frames
        .iter()
        .filter(|f| f.is_python() == python)
        .find_map(|f| f.function.strip_prefix("slice_").and_then(|n| n.parse().ok()))
}

/// The restart scenario: instance A is profiled for 2 s, killed with SIGKILL, and B is started at once, burning
/// 30 slices of 100 ms of CPU in numbered functions. B must be sampled within 1 s of its start: the first slice
/// with samples must have ended within 1 s of the moment B was spawned; B must have ≥ 200 samples (of its 3 s of
/// CPU); from its first sampled slice on, every slice has samples in its own function (the last one, which the
/// agent processes after B exited, too); every sample carries the same process name; the profiler ends at its
/// --duration with exit 0.
fn restart(case: RestartCase) -> Vec<String> {
    const DURATION: Duration = Duration::from_secs(20);
    const SLICES: u32 = 30;
    let mut failures = Vec::new();
    let label = case.label;
    let dir = TestDir::new(&format!("lifecycle-restart-{label}"));
    let (out_a, out_b) = (dir.join("a.out"), dir.join("b.out"));
    let (folded_path, pprof_path) = (dir.join("x.folded"), dir.join("x.pb.gz"));

    let a = Process::start(&mut (case.start)(&out_a, 10_000));
    let a_pid = a.pid();
    let mut record = record_in(dir.path());
    record.args(&case.target).args(["--duration", &format!("{}s", DURATION.as_secs())]);
    record.arg("-o").arg(&folded_path).arg("-o").arg(&pprof_path);
    let recording_started = Instant::now();
    let mut recorder = Recorder::start(&mut record);
    recorder.wait_until_recording();
    thread::sleep(Duration::from_secs(2));

    drop(a); // SIGKILL, reaped
    let spawned_ns = monotonic_ns();
    let mut b = Process::start(&mut (case.start)(&out_b, SLICES));
    let b_pid = b.pid();
    wait_for_file(&out_b, &mut b, Duration::from_secs(60));
    let b_status = profiler_tests::wait_with_limit(b.child(), Duration::from_secs(10), "the restarted workload");
    let b_done = Instant::now();
    let run = recorder.finish(DURATION + Duration::from_secs(60), "the profiler");
    if !run.status.success() {
        failures
            .push(format!("{label}: the profiler did not keep running to exit 0 ({}):\n{}", run.status, run.stderr));
        return failures;
    }
    assert!(b_status.success(), "{label}: the restarted workload failed ({b_status})");
    assert!(
        b_done < recording_started + DURATION - Duration::from_millis(500),
        "{label}: the restarted workload needed {:.1} s for 3 s of CPU and ended after the recording; the machine \
         is too busy for this test",
        (b_done - recording_started).as_secs_f64()
    );

    let facts = Facts::read(&out_b);
    assert_eq!(facts.get("pid"), u64::from(b_pid));
    let spans: Vec<(u64, u64)> = facts.all("slice").iter().map(|v| (v[1], v[2])).collect();
    let b_cpu = Duration::from_nanos(facts.get("cpu_ns"));
    let samples = pprof_samples(&read_pprof(&pprof_path));
    let by_pid = samples_by_pid(&samples);
    let a_samples = by_pid.get(&a_pid).copied().unwrap_or(0);
    let own = samples_of(&samples, b_pid);
    let b_samples: u64 = own.iter().map(|s| s.count).sum();
    let mut per_slice = vec![0u64; spans.len()];
    let mut outside_slices = 0;
    for s in &own {
        match slice_of(&s.frames, case.python) {
            Some(i) if i < per_slice.len() => per_slice[i] += s.count,
            _ => outside_slices += s.count,
        }
    }
    let first = per_slice.iter().position(|&n| n > 0);
    let ms = |ns: u64| ns.saturating_sub(spawned_ns) as f64 / 1e6;
    eprintln!(
        "{label}: A (PID {a_pid}) {a_samples} samples; B (PID {b_pid}) {b_samples} samples for {:.2} s of CPU, \
         {outside_slices} of them outside slice frames; B's main entered {:.0} ms after spawn; samples per slice \
         {per_slice:?}; slices' wall spans (ms after spawn) {:?}",
        b_cpu.as_secs_f64(),
        ms(facts.get("start_ns")),
        spans.iter().map(|&(s, e)| format!("{:.0}-{:.0}", ms(s), ms(e))).collect::<Vec<_>>()
    );
    if a_samples == 0 {
        failures.push(format!("{label}: no samples of the first instance (PID {a_pid})"));
    }
    match first {
        None => failures.push(format!("{label}: no sample of the restarted process is in a slice_NN frame")),
        Some(k) => {
            let (start, end) = spans[k];
            eprintln!(
                "{label}: B first sampled in slice {k}, which ran {:.0}-{:.0} ms after B was spawned: picked up within \
                 {:.0} ms",
                ms(start),
                ms(end),
                ms(end)
            );
            if ms(end) > 1000.0 {
                failures.push(format!(
                    "{label}: the restarted process's first samples are in slice {k}, which ended {:.0} ms after it \
                     was spawned (slices before it: {:?} samples): not picked up within 1 s",
                    ms(end),
                    &per_slice[..k]
                ));
            }
        }
    }
    // Once sampled, every slice has samples in its own function, the last one too: a process's last samples are
    // processed with its state (maps, Python code objects) from before it exited.
    if let Some(k) = first {
        let empty: Vec<usize> = (k..per_slice.len()).filter(|&i| per_slice[i] == 0).collect();
        if !empty.is_empty() {
            failures.push(format!(
                "{label}: slices {empty:?} (of {}) have no samples in their slice_NN frame after B was first sampled in \
                 slice {k}; samples per slice {per_slice:?}",
                per_slice.len()
            ));
        }
    }
    if b_samples < 200 {
        failures.push(format!(
            "{label}: only {b_samples} samples of the restarted process for {:.2} s of CPU (want ≥ 200)",
            b_cpu.as_secs_f64()
        ));
    }
    let folded = Folded::read(&folded_path);
    let names: BTreeSet<&str> = folded.stacks.iter().map(|(frames, _)| frames[0].as_str()).collect();
    if names != BTreeSet::from([case.name.as_str()]) {
        failures.push(format!("{label}: the folded process names are {names:?}, not just `{}`", case.name));
    }
    let other: Vec<u32> = by_pid.keys().copied().filter(|&p| p != a_pid && p != b_pid).collect();
    if !other.is_empty() {
        failures.push(format!("{label}: samples of other processes {other:?}: {by_pid:?}"));
    }
    eprintln!("{label}: the profiler ran {:.1} s and exited 0", run.wall.as_secs_f64());
    failures
}

/// A native process found by `--name` is killed (SIGKILL) and started again: the new PID is sampled within 1 s.
#[test]
fn restarted_native_process_is_picked_up_by_name_within_1s() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let exe = lifecycle_workloads().restart_burn.clone();
    let failures = restart(RestartCase {
        label: "native",
        target: vec!["--name".into(), RESTART_NAME.into()],
        start: Box::new(move |out, slices| {
            let mut cmd = Command::new(&exe);
            cmd.arg(out).arg(slices.to_string()).arg("100");
            cmd
        }),
        name: RESTART_NAME.into(),
        python: false,
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A Python process found by `--match-cmdline` is killed and started again: the new PID is sampled, with its Python
/// frames, within 1 s.
#[test]
fn restarted_python_process_is_picked_up_by_cmdline_within_1s() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let staged = TestDir::new("lifecycle-restart-python-script");
    let script = stage_python(staged.path(), "sliced_burn.py");
    let failures = restart(RestartCase {
        label: "python",
        target: vec!["--match-cmdline".into(), r"sliced_burn\.py".into()],
        start: Box::new(move |out, slices| {
            python(&script, &[out.to_str().expect("UTF-8"), &slices.to_string(), "100"])
        }),
        name: "python3".into(),
        python: true,
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------------------------
// Fork storm

const STORM_CHILDREN: u32 = 2000;
const STORM_BURN_US: u32 = 1000;
/// Children of the warm-up before the storm: enough for a few dozen samples, so the agent has unwound and
/// symbolized this code (the binary, libc) before its memory is measured.
const STORM_WARMUP: u32 = 200;
/// The agent's RSS after the storm may exceed its RSS before by at most this.
const STORM_RSS_BUDGET_KIB: u64 = 10 * 1024;

/// A parent forks and reaps 2,000 children that each burn 1 ms of CPU, under `record --pid PARENT`: the agent
/// does not crash (exit 0), its RSS right after the storm is within 10 MB of its RSS before (measured after a
/// warm-up of 200 such children: the first samples of a program cost the agent its unwind and symbol tables once,
/// which is not churn), and the children's samples are there (at least half of what their CPU time is worth, in
/// their own function).
#[test]
fn fork_storm_neither_crashes_nor_grows_the_agent() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("lifecycle-fork-storm");
    let out = dir.join("storm.out");
    let warm = dir.join("storm.out.warm");
    let (folded_path, pprof_path) = (dir.join("x.folded"), dir.join("x.pb.gz"));
    let mut parent = Process::start(
        Command::new(&lifecycle_workloads().fork_storm)
            .arg(&out)
            .arg(STORM_CHILDREN.to_string())
            .arg(STORM_BURN_US.to_string())
            .arg(STORM_WARMUP.to_string()),
    );
    let parent_pid = parent.pid();
    let mut record = record_in(dir.path());
    record.args(["--pid", &parent_pid.to_string(), "--duration", "300s"]);
    record.arg("-o").arg(&folded_path).arg("-o").arg(&pprof_path);
    let mut recorder = Recorder::start(&mut record);
    recorder.wait_until_recording();
    let rss = RssWatch::start(recorder.pid());
    thread::sleep(SETTLE);
    let cold = rss.latest().expect("an RSS reading of the agent");

    send_signal(parent_pid, libc::SIGUSR1);
    wait_for_file(&warm, &mut parent, Duration::from_secs(120));
    // The agent works through the warm-up's samples and exits.
    thread::sleep(Duration::from_secs(1));
    let before_from = Instant::now();
    thread::sleep(Duration::from_millis(500));
    let storm_started = Instant::now();
    let before = rss.max_between(before_from, storm_started).expect("RSS readings before the storm");

    send_signal(parent_pid, libc::SIGUSR1);
    wait_for_file(&out, &mut parent, Duration::from_secs(240));
    let storm_ended = Instant::now();
    // The agent works through the last exits and samples; then its RSS is what the storm left.
    thread::sleep(Duration::from_secs(2));
    let settled = Instant::now();
    let after = rss.max_between(storm_ended, settled).expect("RSS readings after the storm");
    let peak = rss.max_between(storm_started, settled).expect("RSS readings during the storm");
    let agent_alive = profiler_tests::lifecycle::vm_rss_kib(recorder.pid()).is_some();
    send_signal(recorder.pid(), libc::SIGINT);
    let run = recorder.finish(Duration::from_secs(60), "the profiler after the fork storm");
    send_signal(parent_pid, libc::SIGUSR1);
    let _ = profiler_tests::wait_with_limit(parent.child(), Duration::from_secs(10), "the fork-storm parent");
    drop(rss);

    let facts = Facts::read(&out);
    let children_cpu = Duration::from_nanos(facts.get("children_cpu_ns"));
    eprintln!(
        "fork storm: {} children ({} failed) in {:.2} s of wall time, {:.2} s of children's CPU; agent RSS {cold} KiB \
         once recording, {before} KiB after the warm-up of {STORM_WARMUP} children (before the storm), {after} KiB \
         after the storm (max in the 2 s after it), peak {peak} KiB: {:+} KiB over the storm",
        facts.get("children"),
        facts.get("failed"),
        facts.get("storm_ns") as f64 / 1e9,
        children_cpu.as_secs_f64(),
        after as i64 - before as i64
    );
    assert!(agent_alive, "the agent was gone before the end of the storm; its stderr:\n{}", run.stderr);
    run.assert_success();
    assert_eq!(facts.get("failed"), 0, "some children of the storm failed");

    let samples = pprof_samples(&read_pprof(&pprof_path));
    let children: Vec<&PprofSample> =
        samples.iter().filter(|s| sample_pid(s).is_some_and(|p| p != parent_pid)).collect();
    let child_samples: u64 = children.iter().map(|s| s.count).sum();
    let child_pids: BTreeSet<u32> = children.iter().filter_map(|s| sample_pid(s)).collect();
    let in_child_burn = count_with_frame(&children, |f| f.function == "child_burn");
    // The warm-up's children are in the profile too.
    let cpu_of_all_children =
        children_cpu.mul_f64(f64::from(STORM_CHILDREN + STORM_WARMUP) / f64::from(STORM_CHILDREN));
    let expected = expected_samples(cpu_of_all_children, 100);
    eprintln!(
        "fork storm: {child_samples} samples of {} distinct children ({in_child_burn} in child_burn) for about \
         {expected:.0} expected from their CPU time; summary: {:?}",
        child_pids.len(),
        run.summary()
    );
    let mut failures = Vec::new();
    if after > before + STORM_RSS_BUDGET_KIB {
        failures.push(format!(
            "the agent's RSS grew by {} KiB over the storm ({before} KiB before, {after} KiB after): more than 10 MB",
            after - before
        ));
    }
    if (child_samples as f64) < 0.5 * expected {
        failures.push(format!(
            "{child_samples} samples of the children, under half of the {expected:.0} their CPU time is worth"
        ));
    }
    // A forked child has its parent's memory map: its samples unwind even when it exited before the agent got to
    // them (with 1 ms of CPU each, nearly all did).
    if (in_child_burn as f64) < 0.5 * child_samples as f64 {
        let folded = Folded::read(&folded_path);
        let mut stacks: Vec<(u64, String)> =
            folded.stacks.iter().map(|(frames, count)| (*count, frames.join(";"))).collect();
        stacks.sort_by(|a, b| b.cmp(a));
        failures.push(format!(
            "only {in_child_burn} of the children's {child_samples} samples unwind to child_burn; the commonest \
             stacks:\n{}",
            stacks.iter().take(5).map(|(n, stack)| format!("  {n} {stack}")).collect::<Vec<_>>().join("\n")
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------------------------
// multiprocessing pools

/// `multiprocessing.Pool(3)` mapping a pure-Python `burn` over three tasks, recorded with `--pid PARENT` from
/// before the pool starts: with the fork start method (the default on Linux) and with spawn (each worker execs a
/// fresh interpreter, which must be detected after the exec), all three workers are sampled, with Python frames
/// of `burn (pool.py)` in at least half of what their CPU time in `burn` is worth.
#[test]
fn multiprocessing_pool_workers_are_profiled_with_python_frames() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let mut failures = Vec::new();
    for method in ["fork", "spawn"] {
        failures.extend(pool(method));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn pool(method: &str) -> Vec<String> {
    const BURN_SECONDS: &str = "2.5";
    let mut failures = Vec::new();
    let dir = TestDir::new(&format!("lifecycle-pool-{method}"));
    let script = stage_python(dir.path(), "pool.py");
    let out = dir.join("pool.out");
    let (folded_path, pprof_path) = (dir.join("x.folded"), dir.join("x.pb.gz"));
    let mut parent = Process::start(&mut python(&script, &[method, BURN_SECONDS, out.to_str().expect("UTF-8")]));
    let parent_pid = parent.pid();
    let mut record = record_in(dir.path());
    record.args(["--pid", &parent_pid.to_string(), "--duration", "300s"]);
    record.arg("-o").arg(&folded_path).arg("-o").arg(&pprof_path);
    let mut recorder = Recorder::start(&mut record);
    recorder.wait_until_recording();
    // As in record_family: past the moment the profiler has its targets in the kernel's map.
    thread::sleep(SETTLE);
    fs::write(dir.join("pool.out.go"), "").expect("writing the go file");
    wait_for_file(&out, &mut parent, Duration::from_secs(180));
    let status = profiler_tests::wait_with_limit(parent.child(), Duration::from_secs(30), "the pool script");
    // Its last samples and exits reach the agent within a tick.
    thread::sleep(Duration::from_millis(500));
    send_signal(recorder.pid(), libc::SIGINT);
    let run = recorder.finish(Duration::from_secs(60), "the profiler");
    assert!(status.success(), "{method}: pool.py failed ({status})");
    if !run.status.success() {
        failures.push(format!("{method}: the profiler failed ({}):\n{}", run.status, run.stderr));
        return failures;
    }

    let facts = Facts::read(&out);
    let workers: Vec<(u32, Duration)> =
        facts.all("worker").iter().map(|v| (v[0] as u32, Duration::from_nanos(v[1]))).collect();
    let samples = pprof_samples(&read_pprof(&pprof_path));
    let by_pid = samples_by_pid(&samples);
    let script_name = script.to_str().expect("UTF-8").to_owned();
    let is_burn = |f: &PprofFrame| f.is_python() && f.function == "burn" && f.file == script_name;
    let folded = Folded::read(&folded_path);
    let burn_in_folded: u64 = folded
        .stacks
        .iter()
        .filter(|(frames, _)| frames.iter().any(|f| f == &format!("burn ({script_name})")))
        .map(|(_, n)| n)
        .sum();
    eprintln!(
        "pool ({method}): parent {parent_pid}, samples by pid label {by_pid:?}; `burn ({script_name})` in {burn_in_folded} \
         folded samples; {}",
        run.summary().samples
    );
    for (pid, cpu) in &workers {
        let own = samples_of(&samples, *pid);
        let total: u64 = own.iter().map(|s| s.count).sum();
        let burn = count_with_frame(&own, is_burn);
        let python = count_with_frame(&own, PprofFrame::is_python);
        let expected = expected_samples(*cpu, 100);
        eprintln!(
            "  worker {pid}: {total} samples, {python} with Python frames, {burn} in burn; burn's CPU time is worth \
             {expected:.0}"
        );
        if total == 0 {
            failures.push(format!("{method}: no samples of worker {pid}"));
        } else if (burn as f64) < 0.5 * expected {
            failures.push(format!(
                "{method}: worker {pid} has {burn} samples in `burn (pool.py)` ({total} in all, {python} with Python \
                 frames), under half of the {expected:.0} its {:.2} s in burn is worth",
                cpu.as_secs_f64()
            ));
        }
    }
    if workers.len() != 3 {
        failures.push(format!("{method}: pool.py reported workers {workers:?}"));
    }
    failures
}

// ---------------------------------------------------------------------------------------------------------------
// The end of a --pid recording

/// How long after the profiler handles Ctrl-C a test waits before its target forks.
const SETTLE: Duration = Duration::from_millis(500);

/// family's numbers: the parent burns 1 s and exits, its child (forked once the profiler records) 3 s.
const FAMILY_PARENT_MS: u32 = 1000;
const FAMILY_CHILD_MS: u32 = 3000;

struct Family {
    run: Run,
    parent: u32,
    child: u32,
    /// CLOCK_MONOTONIC when the child exited, and when the profiler was seen to have exited.
    child_exit_ns: u64,
    profiler_exit_ns: u64,
    samples: Vec<PprofSample>,
}

/// Runs family under `record --pid PARENT` (plus `extra`) without --duration until the profiler exits by itself.
fn record_family(label: &str, extra: &[&str]) -> Family {
    let dir = TestDir::new(&format!("lifecycle-family-{label}"));
    let out = dir.join("family.out");
    let (folded_path, pprof_path) = (dir.join("x.folded"), dir.join("x.pb.gz"));
    let mut family = Process::start(
        Command::new(&lifecycle_workloads().family)
            .arg(&out)
            .arg(FAMILY_PARENT_MS.to_string())
            .arg(FAMILY_CHILD_MS.to_string()),
    );
    let parent = family.pid();
    let mut record = record_in(dir.path());
    record.args(["--pid", &parent.to_string()]).args(extra);
    record.arg("-o").arg(&folded_path).arg("-o").arg(&pprof_path);
    let mut recorder = Recorder::start(&mut record);
    recorder.wait_until_recording();
    // The profiler handles Ctrl-C a little before it has put its targets in the kernel's map: a fork in between
    // is not followed (see `child_forked_while_the_profiler_starts_is_followed`), which is not what this is about.
    thread::sleep(SETTLE);
    fs::write(dir.join("family.out.go"), "").expect("writing the go file");
    // Reaped by this test as its parent would be; the child is reparented and reaped by the system.
    let status = profiler_tests::wait_with_limit(family.child(), Duration::from_secs(30), "family's parent");
    assert!(status.success(), "family's parent failed ({status})");
    let run = recorder.finish(Duration::from_secs(60), "the profiler (record --pid without --duration)");
    let profiler_exit_ns = monotonic_ns();
    run.assert_success();
    // The child may still run (--no-children): wait for its report.
    wait_for_path(&out, Duration::from_secs(30));
    let facts = Facts::read(&out);
    for path in [&folded_path, &pprof_path] {
        assert!(path.is_file(), "{label}: the profiler wrote no {}", path.display());
        assert!(
            run.stderr.contains(&format!("wrote {}", path.display())),
            "{label}: no `wrote {}` line:\n{}",
            path.display(),
            run.stderr
        );
    }
    Family {
        parent,
        child: facts.get("child") as u32,
        child_exit_ns: facts.get("child_exit_ns"),
        profiler_exit_ns,
        samples: pprof_samples(&read_pprof(&pprof_path)),
        run,
    }
}

/// `record --pid PARENT` without --duration: the parent exits after 1 s, its child 2 s later; the recording ends by
/// itself only after the child is gone (within 2 s of it), writes every output, and has both processes' samples.
#[test]
fn record_pid_without_duration_ends_when_the_target_and_its_children_exit() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let f = record_family("children", &[]);
    let by_pid = samples_by_pid(&f.samples);
    let after_child = f.profiler_exit_ns as f64 / 1e9 - f.child_exit_ns as f64 / 1e9;
    let parent_burn = count_with_frame(&samples_of(&f.samples, f.parent), |f| f.function == "parent_burn");
    let child_burn = count_with_frame(&samples_of(&f.samples, f.child), |f| f.function == "child_burn");
    eprintln!(
        "record --pid without --duration: ran {:.2} s, ended {after_child:.2} s after the child's exit; samples by pid \
         {by_pid:?}; parent_burn {parent_burn}, child_burn {child_burn}",
        f.run.wall.as_secs_f64()
    );
    assert!(after_child >= 0.0, "the recording ended {:.2} s before the child exited", -after_child);
    assert!(after_child <= 2.0, "the recording ended {after_child:.2} s after the last process exited (want ≤ 2 s)");
    assert!(parent_burn > 0, "no samples of the parent in parent_burn: {by_pid:?}");
    assert!(child_burn > 0, "no samples of the child in child_burn: {by_pid:?}");
}

/// `--no-children`: the same family, but the recording has only the parent and ends when the parent exits, while
/// the child still runs.
#[test]
fn record_pid_with_no_children_ignores_the_child_and_ends_with_the_parent() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let f = record_family("no-children", &["--no-children"]);
    let by_pid = samples_by_pid(&f.samples);
    let before_child = f.child_exit_ns as f64 / 1e9 - f.profiler_exit_ns as f64 / 1e9;
    eprintln!(
        "record --pid --no-children: ran {:.2} s, ended {before_child:.2} s before the child's exit; samples by pid \
         {by_pid:?}",
        f.run.wall.as_secs_f64()
    );
    assert!(by_pid.get(&f.parent).is_some_and(|&n| n > 0), "no samples of the parent: {by_pid:?}");
    assert!(!by_pid.contains_key(&f.child), "samples of the child despite --no-children: {by_pid:?}");
    assert!(
        before_child > 0.5,
        "the recording did not end with the parent: it ended {before_child:.2} s before the child"
    );
}

/// A child forked by the `--pid` target while the profiler is still starting (after it listed the target's
/// descendants, before its tracepoints and map were in place) is profiled too, and the recording waits for it.
/// family's parent forks 100 ms after the profiler was started, long before the profiler records (loading the
/// sampler takes longer than that); the parent lives 4 s, the child 6 s.
#[test]
fn child_forked_while_the_profiler_starts_is_followed() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("lifecycle-family-startup");
    let out = dir.join("family.out");
    let (folded_path, pprof_path) = (dir.join("x.folded"), dir.join("x.pb.gz"));
    let mut family = Process::start(Command::new(&lifecycle_workloads().family).arg(&out).args(["4000", "6000"]));
    let parent = family.pid();
    let mut record = record_in(dir.path());
    record.args(["--pid", &parent.to_string()]);
    record.arg("-o").arg(&folded_path).arg("-o").arg(&pprof_path);
    let recorder = Recorder::start(&mut record);
    thread::sleep(Duration::from_millis(100));
    fs::write(dir.join("family.out.go"), "").expect("writing the go file");
    let give_up = Instant::now() + Duration::from_secs(10);
    let child = loop {
        if let Some(&child) = profiler_tests::lifecycle::children(parent).first() {
            break child;
        }
        assert!(Instant::now() < give_up, "family's parent forked no child");
        thread::sleep(Duration::from_millis(5));
    };
    let forked_before_recording = !handles_sigint(recorder.pid());
    let status = profiler_tests::wait_with_limit(family.child(), Duration::from_secs(30), "family's parent");
    assert!(status.success(), "family's parent failed ({status})");
    let run = recorder.finish(Duration::from_secs(60), "the profiler (record --pid without --duration)");
    let profiler_exit_ns = monotonic_ns();
    run.assert_success();
    wait_for_path(&out, Duration::from_secs(30));
    let facts = Facts::read(&out);
    assert_eq!(facts.get("child") as u32, child);
    let samples = pprof_samples(&read_pprof(&pprof_path));
    let by_pid = samples_by_pid(&samples);
    let after_child = profiler_exit_ns as f64 / 1e9 - facts.get("child_exit_ns") as f64 / 1e9;
    eprintln!(
        "child forked during startup (before the profiler recorded: {forked_before_recording}): recording of {:.2} s \
         ended {after_child:.2} s after the child's exit; samples by pid {by_pid:?} (parent {parent}, child {child})",
        run.wall.as_secs_f64()
    );
    let mut failures = Vec::new();
    if !by_pid.contains_key(&child) {
        failures.push(format!("no samples of the child {child}, forked by the target while the profiler started"));
    }
    if after_child < 0.0 {
        failures.push(format!(
            "the recording ended {:.2} s before the target's child exited: the child was not followed",
            -after_child
        ));
    }
    assert!(failures.is_empty(), "{}\nthe profiler's stderr:\n{}", failures.join("\n"), run.stderr);
}

/// Whether process `pid` has a SIGINT handler.
fn handles_sigint(pid: u32) -> bool {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caught| caught & (1 << (libc::SIGINT - 1)) != 0)
}

/// Waits until `path` exists, for at most `limit`.
fn wait_for_path(path: &Path, limit: Duration) {
    let give_up = Instant::now() + limit;
    while !path.exists() {
        assert!(Instant::now() < give_up, "no {} within {limit:?}", path.display());
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// PID reuse

/// A process found by `--match-cmdline` exits, and another, different program gets the same PID (the test sets
/// /proc/sys/kernel/ns_last_pid so it does): their data is not mixed. The first is native-burn's sibling
/// `lc-restart` (native `slice_NN` functions), the second Python's sliced_burn.py (Python `slice_NN` functions):
/// no sample of the second is unwound or named with the first's image, its Python frames are found (≥ 150 in slice
/// functions for its 2 s of CPU), and the folded output names it `python3`.
#[test]
fn reused_pid_does_not_mix_two_processes() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("lifecycle-pid-reuse");
    // Only the workloads' arguments (their report files) name this directory; the profiler's outputs are outside.
    let work = dir.join("pid-reuse-marker");
    fs::create_dir_all(&work).expect("creating the workloads' directory");
    let (folded_path, pprof_path) = (dir.join("x.folded"), dir.join("x.pb.gz"));
    let script = stage_python(&work, "sliced_burn.py");
    let native = lifecycle_workloads().restart_burn.clone();

    let a = Process::start(Command::new(&native).arg(work.join("a.out")).args(["10000", "100"]));
    let pid = a.pid();
    let mut record = record_in(dir.path());
    record.args(["--match-cmdline", "pid-reuse-marker/", "--duration", "120s"]);
    record.arg("-o").arg(&folded_path).arg("-o").arg(&pprof_path);
    let mut recorder = Recorder::start(&mut record);
    recorder.wait_until_recording();
    thread::sleep(Duration::from_millis(1500));
    drop(a); // SIGKILL, reaped: its PID is free

    let b_out = work.join("b.out");
    let mut b = spawn_with_pid(pid, || python(&script, &[b_out.to_str().expect("UTF-8"), "20", "100"]));
    wait_for_file(&b_out, &mut b, Duration::from_secs(60));
    let _ = profiler_tests::wait_with_limit(b.child(), Duration::from_secs(10), "the second process");
    thread::sleep(Duration::from_millis(500));
    send_signal(recorder.pid(), libc::SIGINT);
    let run = recorder.finish(Duration::from_secs(60), "the profiler");
    run.assert_success();

    let samples = pprof_samples(&read_pprof(&pprof_path));
    let by_pid = samples_by_pid(&samples);
    let native_name = native.to_str().expect("UTF-8");
    let in_native_image = |s: &PprofSample| s.frames.iter().any(|f| f.mapping == native_name);
    let python_slices = |s: &PprofSample| s.frames.iter().any(|f| f.is_python() && f.function.starts_with("slice_"));
    let own = samples_of(&samples, pid);
    let first: u64 = own.iter().filter(|s| in_native_image(s)).map(|s| s.count).sum();
    let second: u64 = own.iter().filter(|s| python_slices(s)).map(|s| s.count).sum();
    let mixed: u64 = own.iter().filter(|s| in_native_image(s) && python_slices(s)).map(|s| s.count).sum();
    let thread_names: BTreeMap<String, u64> = own.iter().fold(BTreeMap::new(), |mut names, s| {
        *names.entry(format!("{:?}", s.label("thread_name"))).or_insert(0) += s.count;
        names
    });
    let first_named_second: u64 = own
        .iter()
        .filter(|s| in_native_image(s) && s.label("thread_name") != Some(RESTART_NAME))
        .map(|s| s.count)
        .sum();
    let folded = Folded::read(&folded_path);
    let python_roots: BTreeMap<&str, u64> = folded
        .stacks
        .iter()
        .filter(|(frames, _)| frames.iter().any(|f| f.starts_with("slice_") && f.contains("sliced_burn.py")))
        .fold(BTreeMap::new(), |mut roots, (frames, count)| {
            *roots.entry(frames[0].as_str()).or_insert(0) += count;
            roots
        });
    eprintln!(
        "PID reuse: both processes had PID {pid}; samples by pid {by_pid:?}; of PID {pid}: {first} in the first \
         program's image, {second} in the second's Python slice functions, {mixed} in both; thread names \
         {thread_names:?}; folded process names of the Python slice stacks {python_roots:?}"
    );
    let mut failures = Vec::new();
    if first == 0 {
        failures.push("no samples of the first process in its own image".to_owned());
    }
    if second < 150 {
        failures
            .push(format!("only {second} samples of the second process in its Python slice functions (want ≥ 150)"));
    }
    if mixed > 0 || first_named_second > 0 {
        failures.push(format!(
            "{mixed} samples mix both programs' frames, {first_named_second} samples in the first program's image \
             carry another thread name"
        ));
    }
    if python_roots.keys().any(|&root| root != "python3") {
        failures
            .push(format!("the second process's stacks are named {python_roots:?} in the folded output, not python3"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Starts `command()` as process `pid` (free now): sets the kernel's last-PID counter just below it, then spawns.
/// Another process of the machine may take the PID in between: then it tries again, a few times.
fn spawn_with_pid(pid: u32, command: impl Fn() -> Command) -> Process {
    for _ in 0..20 {
        fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).expect("writing /proc/sys/kernel/ns_last_pid");
        let process = Process::start(&mut command());
        if process.pid() == pid {
            return process;
        }
        drop(process);
        thread::sleep(Duration::from_millis(20));
    }
    panic!("could not start a process with PID {pid}: other processes kept taking it");
}
