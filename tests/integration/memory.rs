//! Memory growth profiles against a workload whose growth is known by construction (grow.py): each round a new
//! 12 MiB numpy array (huge pages) and a new 4 MiB bytearray (small pages), both memory the process had not
//! touched, counted by the workload itself. The profile's bytes must split 3:1 between the two functions as the
//! workload's own counts do (±5 points), add up to what the workload grew by over the recording, and reach
//! Pyroscope as a `memory` profile type with `page_faults` in bytes.
use std::{collections::HashMap, time::Duration};

use profiler::pprof::proto;
use profiler_tests::{
    agent::push_profiles,
    exclusive_cpu, profiler,
    python::{debian_python, pprof_samples, PprofSample},
    read_pprof, read_totals,
    receiver::function_names,
    require_root, run, wait_for_totals, Process, TestDir,
};

/// The profile's share of a function's bytes may differ from the workload's by this much.
const TOLERANCE: f64 = 0.05;
const FUNCTIONS: [&str; 2] = ["numpy_grow", "bytes_grow"];

/// Bytes per function of `FUNCTIONS` in `samples` (a sample counts for the first of them on its stack).
fn bytes_by_function(samples: &[PprofSample]) -> HashMap<&'static str, u64> {
    let mut bytes = HashMap::new();
    for sample in samples {
        if let Some(function) = FUNCTIONS.iter().find(|f| sample.frames.iter().any(|frame| frame.function == **f)) {
            *bytes.entry(*function).or_default() += sample.count;
        }
    }
    bytes
}

fn value_type(profile: &proto::Profile, value: Option<&proto::ValueType>) -> (String, String) {
    let value = value.expect("a value type");
    let text = |i: i64| profile.string_table[i as usize].clone();
    (text(value.r#type), text(value.unit))
}

#[test]
fn memory_growth_is_split_by_bytes_touched_huge_pages_included() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let interpreter = debian_python();
    let stage = interpreter.stage("grow");
    let totals = stage.host("grow.json");
    let mut workload = Process::start(
        &mut interpreter.command(&stage.inside("grow.py"), &[stage.inside("grow.json").to_str().unwrap()]),
    );
    wait_for_totals(&mut workload, &totals, 2.0);
    let dir = TestDir::new("memory-grow");
    let pprof = dir.join("memory.pb.gz");
    let before = read_totals(&totals);
    let pid = workload.pid().to_string();
    let out = run(
        profiler().args(["record", "--pid", &pid, "--profile", "memory", "--duration", "6s", "-o"]).arg(&pprof),
        Duration::from_secs(120),
    );
    let after = read_totals(&totals);
    drop(workload);
    assert!(out.status.success(), "record failed:\n{}", out.stderr);

    let profile = read_pprof(&pprof);
    assert_eq!(value_type(&profile, profile.sample_type.first()), ("page_faults".into(), "bytes".into()));
    assert_eq!(value_type(&profile, profile.period_type.as_ref()), ("space".into(), "bytes".into()));
    let profiled = bytes_by_function(&pprof_samples(&profile));
    let grown = |function: &str| after[&format!("{function}.bytes")] - before[&format!("{function}.bytes")];
    let (numpy, bytes) = (profiled["numpy_grow"] as f64, profiled["bytes_grow"] as f64);
    let expected = grown("numpy_grow") / (grown("numpy_grow") + grown("bytes_grow"));
    let share = numpy / (numpy + bytes);
    eprintln!(
        "memory: numpy_grow {:.0} MiB, bytes_grow {:.0} MiB profiled; share {:.3}, the workload's {expected:.3}",
        numpy / 1048576.0,
        bytes / 1048576.0,
        share
    );
    assert!(
        (share - expected).abs() <= TOLERANCE,
        "numpy_grow has {:.1}% of the growth, the workload says {:.1}%:\n{}",
        100.0 * share,
        100.0 * expected,
        out.stderr
    );
    // The recording lies inside the two readings of the workload's counts (start-up before it, the last write
    // after it), so the profile may fall short of them but not exceed them; counting a huge page as one page
    // would leave it at a fraction of a percent.
    let workload_total = grown("numpy_grow") + grown("bytes_grow");
    let ratio = (numpy + bytes) / workload_total;
    assert!(
        (0.5..=1.1).contains(&ratio),
        "the profile has {:.0}% of the workload's growth:\n{}",
        100.0 * ratio,
        out.stderr
    );
    assert!(
        out.stderr.contains("memory growth:") && out.stderr.contains("numpy_grow"),
        "no memory summary naming numpy_grow:\n{}",
        out.stderr
    );
}

#[test]
fn run_pushes_a_memory_profile_type_in_bytes() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let interpreter = debian_python();
    let stage = interpreter.stage("grow-push");
    let totals = stage.host("grow.json");
    let mut workload = Process::start(
        &mut interpreter.command(&stage.inside("grow.py"), &[stage.inside("grow.json").to_str().unwrap()]),
    );
    wait_for_totals(&mut workload, &totals, 2.0);
    let pushed = push_profiles(workload.pid(), "cpu,memory", 2);
    drop(workload);
    let memory = pushed.named("memory");
    assert!(!memory.is_empty(), "no memory profile was pushed:\n{}", pushed.stderr);
    for profile in &memory {
        assert_eq!(value_type(profile, profile.sample_type.first()), ("page_faults".into(), "bytes".into()));
    }
    let functions = function_names(memory[0]);
    for function in FUNCTIONS {
        assert!(functions.contains(function), "{function} is not in the pushed memory profile: {functions:?}");
    }
}
