//! Off-CPU profiles against a workload whose threads wait in known ways and measure their own waits (waits.py):
//! three threads contending for the GIL, one blocked on a lock another holds, one reading a socket, one sleeping.
//! Per thread, the off-CPU profile's time by `wait` reason must match the workload's own accounting within ±5
//! points of the thread's wall time, on every interpreter the suite covers; and the CPU samples of the thread
//! holding the GIL while the others wait carry the `gil_waiters` label. `run --profile cpu,off-cpu,wall` pushes each as
//! its own Pyroscope profile type.
use std::{collections::HashMap, fs, thread, time::Duration};

use profiler::pprof::proto;
use profiler_tests::{
    agent::push_profiles,
    exclusive_cpu,
    matrix::{self, Check},
    profiler,
    python::{debian_python, pprof_samples, python_interpreters, Interpreter, PprofSample},
    read_pprof, read_totals,
    receiver::{function_names, label_values},
    require_root, run, steal_time, wait_for_totals, Process, TestDir,
};

/// Long enough that the CPU profile's sampling noise stays well inside the tolerance: a spinner on its CPU a third
/// of the time gets ~670 samples in 20 s, whose count varies by about √670 (1.3 points of its time).
const DURATION: &str = "20s";
/// Shares of a thread's wall time may differ from the workload's by this much, plus the share of CPU time the
/// hypervisor took (`ThreadWaits::stolen`), which the workload's own CPU clock cannot see.
const TOLERANCE: f64 = 0.05;

/// One thread's numbers over the recording: the workload's and the profiles'.
#[derive(Debug, Default)]
struct ThreadWaits {
    /// The workload's: CPU and blocked time as shares of its wall time. CPU time as the scheduler counts it, which
    /// leaves out what interrupts and the hypervisor took while it ran: `stolen` is that share of a CPU's time
    /// over the recording (a clock-driven profile counts it as the thread's).
    cpu: f64,
    stolen: f64,
    blocked: f64,
    /// The profiles': CPU time, and off-CPU time per `wait` reason, as shares of the recording's duration.
    profiled_cpu: f64,
    profiled: HashMap<String, f64>,
    /// CPU samples, and those labelled `gil_waiters`.
    cpu_samples: u64,
    contended_samples: u64,
}

impl ThreadWaits {
    fn waited(&self, reasons: &[&str]) -> f64 {
        reasons.iter().filter_map(|r| self.profiled.get(*r)).sum()
    }

    fn off_cpu(&self) -> f64 {
        self.profiled.values().sum()
    }
}

fn record_waits(interpreter: &Interpreter) -> (HashMap<String, ThreadWaits>, String) {
    let _cpu = exclusive_cpu();
    let dir = TestDir::new(&format!("waits-{}", interpreter.name));
    let stage = interpreter.stage("waits");
    let totals = stage.host("waits.json");
    let script = stage.inside("waits.py");
    let mut workload =
        Process::start(&mut interpreter.command(&script, &[stage.inside("waits.json").to_str().expect("UTF-8")]));
    wait_for_totals(&mut workload, &totals, 4.0);
    let before = read_totals(&totals);
    let steal_before = steal_time();
    let mut record = profiler();
    record.args(["record", "--pid", &workload.pid().to_string(), "--duration", DURATION, "--profile", "cpu,off-cpu"]);
    record.arg("-o").arg(dir.join("waits.pb.gz"));
    let run = run(&mut record, Duration::from_secs(180));
    let after = read_totals(&totals);
    let stolen = steal_time().saturating_sub(steal_before).as_secs_f64();
    drop(workload);
    run.assert_success();
    let cpus = thread::available_parallelism().map_or(1, usize::from) as f64;

    let cpu_profile = read_pprof(&dir.join("waits.pb.gz"));
    let off_profile = read_pprof(&dir.join("waits.off-cpu.pb.gz"));
    assert_eq!(off_profile.string_table[off_profile.sample_type[0].r#type as usize], "off_cpu");
    let duration_ns = off_profile.duration_nanos as f64;
    let period_ns = cpu_profile.period as f64;

    let mut threads: HashMap<String, ThreadWaits> = HashMap::new();
    let mut by_tid: HashMap<String, String> = HashMap::new();
    for (key, tid) in &after {
        let Some(name) = key.strip_suffix(".tid") else { continue };
        by_tid.insert(format!("{tid}"), name.to_owned());
        let delta = |what: &str| after[&format!("{name}.{what}")] - before[&format!("{name}.{what}")];
        let wall = delta("wall_ns").max(1.0);
        threads.insert(
            name.to_owned(),
            ThreadWaits {
                cpu: delta("cpu_ns") / wall,
                stolen: (stolen * 1e9 / (wall * cpus)).min(0.5),
                blocked: delta("blocked_ns") / wall,
                ..Default::default()
            },
        );
    }
    let thread_of = |sample: &PprofSample| sample.label("thread_id").and_then(|tid| by_tid.get(tid)).cloned();
    for sample in pprof_samples(&off_profile) {
        let Some(name) = thread_of(&sample) else { continue };
        let reason = sample.label("wait").unwrap_or("-").to_owned();
        *threads.get_mut(&name).expect("a known thread").profiled.entry(reason).or_default() +=
            sample.count as f64 / duration_ns;
    }
    for sample in pprof_samples(&cpu_profile) {
        let Some(name) = thread_of(&sample) else { continue };
        let thread = threads.get_mut(&name).expect("a known thread");
        thread.profiled_cpu += sample.count as f64 * period_ns / duration_ns;
        thread.cpu_samples += sample.count;
        if sample.label("gil_waiters").is_some() {
            thread.contended_samples += sample.count;
        }
    }
    (threads, run.stderr)
}

#[test]
fn off_cpu_time_matches_each_threads_own_accounting() {
    if !require_root() {
        return;
    }
    let mut failures = Vec::new();
    let log = TestDir::new("waits-numbers");
    for interpreter in python_interpreters() {
        let name = &interpreter.name;
        let (threads, stderr) = record_waits(interpreter);
        // The numbers in a file, so that a failure's message is what ends the test's output.
        let numbers = log.join(format!("{name}.txt"));
        fs::write(&numbers, format!("{threads:#?}\n{stderr}")).expect("writing the test's numbers");
        eprintln!("{name}: numbers in {}", numbers.display());
        // Over the threads that lived through the recording (the smallest share: the longest wall time).
        let stolen = threads.values().map(|t| t.stolen).fold(0.5, f64::min);
        let check = |failures: &mut Vec<String>, thread: &str, what: &str, profiled: f64, truth: f64| {
            if (profiled - truth).abs() > TOLERANCE + stolen {
                failures.push(format!(
                    "{name}: {thread}: {what} is {:.1}% of its time in the profile, {:.1}% by its own measure \
                     (±{:.1} allowed)",
                    100.0 * profiled,
                    100.0 * truth,
                    100.0 * (TOLERANCE + stolen)
                ));
            }
        };
        for spinner in ["spinner-0", "spinner-1", "spinner-2"] {
            let t = &threads[spinner];
            // Off the CPU, a spinner waits for the GIL (or, briefly, for a CPU). Its time on a CPU, counting what was
            // stolen from it there, is cpu / (1 - stolen).
            let off = 1.0 - t.cpu / (1.0 - t.stolen);
            check(&mut failures, spinner, "off-CPU time", t.off_cpu(), off);
            check(&mut failures, spinner, "CPU + off-CPU time", t.profiled_cpu + t.off_cpu(), 1.0);
            if interpreter.free_threaded {
                // No GIL: the spinners run side by side and wait only for a CPU; nothing may claim a GIL wait or a
                // GIL held while others wait for it.
                if t.waited(&["gil"]) > 0.0 || t.contended_samples > 0 {
                    failures.push(format!(
                        "{name}: {spinner}: a build without a GIL shows {:.1}% wait=gil and {} samples labelled \
                         gil_waiters",
                        100.0 * t.waited(&["gil"]),
                        t.contended_samples
                    ));
                }
                continue;
            }
            check(&mut failures, spinner, "the GIL wait", t.waited(&["gil"]), off - t.waited(&["cpu"]));
            if t.contended_samples * 2 < t.cpu_samples {
                failures.push(format!(
                    "{name}: {spinner}: only {} of its {} CPU samples (holding the GIL while two other spinners wait) \
                     are labelled gil_waiters",
                    t.contended_samples, t.cpu_samples
                ));
            }
        }
        // Each blocking call's time includes taking the GIL back after the wait, and, with three spinners holding
        // it, losing it again in between; so the workload can say how long each thread was off its CPU, and that
        // the wait is of the right kind, but not how it splits between the wait and the GIL. (That split is also
        // the profile's least precise figure: a thread that mixes GIL waits with others has its captured periods
        // weighed by inverse capture probabilities, which leaves it a few points of noise per recording.)
        for (thread, reason) in [("locked", "lock"), ("reader", "io"), ("sleeper", "sleep")] {
            let t = &threads[thread];
            check(&mut failures, thread, "off-CPU time", t.off_cpu(), 1.0 - t.cpu);
            if t.waited(&[reason]) < 0.2 {
                failures.push(format!(
                    "{name}: {thread}: wait={reason} is only {:.1}% of its time, which was {:.1}% blocked: {:?}",
                    100.0 * t.waited(&[reason]),
                    100.0 * t.blocked,
                    t.profiled
                ));
            }
        }
        let holder = &threads["holder"];
        check(&mut failures, "holder", "off-CPU time", holder.off_cpu(), 1.0 - holder.cpu);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    matrix::all_passed(Check::Waits);
}

/// `run --profile cpu,off-cpu,wall` pushes three profile types per window, named as Grafana's tools name them, each
/// pprof with its own sample type: the off-CPU one with every kind of wait of waits.py, the wall-clock one at least
/// as long as both others.
#[test]
fn run_pushes_cpu_off_cpu_and_wall_profiles_as_their_own_types() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let interpreter = debian_python();
    let stage = interpreter.stage("waits-push");
    let totals = stage.host("waits.json");
    let mut workload = Process::start(
        &mut interpreter.command(&stage.inside("waits.py"), &[stage.inside("waits.json").to_str().expect("UTF-8")]),
    );
    wait_for_totals(&mut workload, &totals, 2.0);
    let pushed = push_profiles(workload.pid(), "cpu,off-cpu,wall", 3);
    drop(workload);
    let by_name: HashMap<&str, Vec<&proto::Profile>> =
        ["off_cpu", "process_cpu", "wall"].into_iter().map(|name| (name, pushed.named(name))).collect();
    let mut names: Vec<&str> = pushed.pushed.iter().map(|p| p.labels["__name__"].as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names, ["off_cpu", "process_cpu", "wall"], "profile types pushed");
    let total = |profile: &proto::Profile| profile.sample.iter().map(|s| s.value[0]).sum::<i64>();
    for (name, sample_type) in [("process_cpu", "cpu"), ("off_cpu", "off_cpu"), ("wall", "wall")] {
        for profile in &by_name[name] {
            let value_type = &profile.sample_type[0];
            let text = |i: i64| profile.string_table[i as usize].as_str();
            assert_eq!((text(value_type.r#type), text(value_type.unit)), (sample_type, "nanoseconds"), "{name}");
        }
    }
    let off_cpu = &by_name["off_cpu"][0];
    // Over the windows pushed: a thread blocked since before the agent started is told apart from the others only
    // once its wait is read back, which the first window may end before.
    let waits: std::collections::BTreeSet<String> =
        by_name["off_cpu"].iter().flat_map(|profile| label_values(profile, "wait")).collect();
    for reason in ["gil", "lock", "io", "sleep"] {
        assert!(waits.contains(reason), "no wait={reason} in the pushed off-CPU profiles: {waits:?}");
    }
    let functions: std::collections::BTreeSet<String> =
        by_name["off_cpu"].iter().flat_map(|profile| function_names(profile)).collect();
    for function in ["spinner", "locked", "reader", "sleeper"] {
        assert!(functions.contains(function), "{function} is not in the pushed off-CPU profiles");
    }
    // The first window of each: the wall-clock time is the CPU time and the off-CPU time of the same window.
    let (cpu, off, wall) = (total(by_name["process_cpu"][0]), total(off_cpu), total(by_name["wall"][0]));
    let sum = (cpu + off) as f64;
    assert!(((wall as f64) - sum).abs() <= 0.02 * sum, "wall {wall} ns is not CPU {cpu} + off-CPU {off} ns");
}
