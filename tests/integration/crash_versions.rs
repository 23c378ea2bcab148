//! A crash on every supported interpreter (issue 20): the crash probe copies the names, first line and line table of
//! the innermost code objects at offsets that differ per CPython version, and a report read after the process is
//! gone has nothing else to name its Python frames with. Declared in crash.rs, so `crash::` selects it too.
use std::{thread, time::Duration};

use profiler_tests::{
    crash::Workload,
    crash_report::{read_reports, Field as _},
    exclusive_cpu,
    matrix::{self, Check},
    profiler,
    python::{marked_line, python_interpreters, Interpreter},
    require_root, send_signal, Recorder,
};

/// The Python frames of tests/workloads/python/crash.py's crash, innermost first, as 3.11+ name them
/// (`co_qualname`); before 3.11 a frame has only its function's own name (`co_name`).
const FRAMES: [&str; 7] =
    ["string_at", "read_name", "parse_record", "worker", "Thread.run", "Thread._bootstrap_inner", "Thread._bootstrap"];

/// The frames `interpreter` names.
fn expected_frames(interpreter: &Interpreter) -> Vec<&'static str> {
    let qualified = interpreter.version >= (3, 11);
    FRAMES.iter().map(|&f| if qualified { f } else { f.rsplit('.').next().expect("a name") }).collect()
}

/// Crashes crash.py under `interpreter` while `record --pid` is recording, with the profiler stopped (SIGSTOP) from
/// just before the crash until the process is gone, as a busy machine can delay it; returns what is wrong with the
/// report, if anything.
fn check_crash(interpreter: &Interpreter) -> Vec<String> {
    let name = &interpreter.name;
    let stage = interpreter.stage("crash-versions");
    let script = stage.inside("crash.py");
    let dir = stage.host("ready").parent().expect("the stage directory").to_owned();
    let crash_dir = dir.join("crashes");
    let mut workload = Workload::start(&mut interpreter.command(&script, &[stage.inside("").to_str().expect("UTF-8")]));
    let pid = workload.pid();
    let tid = workload.wait_ready(&dir);

    let mut record = profiler();
    record.args(["record", "--pid", &pid.to_string(), "--crash-dir"]).arg(&crash_dir);
    record.arg("-o").arg(dir.join("x.folded"));
    let recorder = Recorder::start_recording(&mut record);
    send_signal(recorder.pid(), libc::SIGSTOP);
    std::fs::write(stage.host("go"), "").expect("writing the go file");
    let ended = workload.wait_exit(Duration::from_secs(60));
    // Past the exit of every thread: the process's memory and maps are gone.
    thread::sleep(Duration::from_millis(500));
    send_signal(recorder.pid(), libc::SIGCONT);
    let run = recorder.finish(Duration::from_secs(60), "the profiler");
    run.assert_success();
    ended.assert_killed_by(libc::SIGSEGV);

    let reports = read_reports(&crash_dir);
    let [report] = &reports[..] else {
        return vec![format!("{name}: {} crash reports, not 1; the profiler's stderr:\n{}", reports.len(), run.stderr)];
    };
    let stack = report.stack();
    let shown = format!("{name}: the report {}.txt:\n{}", report.base.display(), report.text);
    let mut wrong = Vec::new();
    let version = format!("{}.{}", interpreter.version.0, interpreter.version.1);
    if report.json.field("python_version").opt_str() != Some(version.as_str()) {
        wrong.push(format!("python_version is not {version}"));
    }
    if report.json.field("tid").i64() != i64::from(tid) {
        wrong.push(format!("tid is not the crashing thread's, {tid}"));
    }
    let python: Vec<_> = stack.iter().filter(|f| f.is_python()).collect();
    let functions: Vec<&str> = python.iter().map(|f| f.function.as_str()).collect();
    let want = expected_frames(interpreter);
    if functions != want {
        wrong.push(format!("the Python frames are {functions:?}, not {want:?}"));
    }
    let source = stage.host("crash.py");
    let script_name = script.to_str().expect("UTF-8");
    // A thread running its own copy of the bytecode (free-threaded 3.14+) has no line once the process is gone (the
    // copies are not in the crash copy): no line, never a wrong one.
    let may_lack_lines = interpreter.free_threaded && interpreter.version >= (3, 14);
    for (function, marker) in
        [("read_name", "# CRASH-LINE"), ("parse_record", "# PARSE-LINE"), ("worker", "# WORKER-LINE")]
    {
        let line = marked_line(&source, marker);
        match python.iter().find(|f| f.function == function) {
            Some(f)
                if f.file.as_deref() == Some(script_name)
                    && (f.line == Some(line) || (may_lack_lines && f.line.is_none())) => {}
            Some(f) => wrong.push(format!("{function} is at {:?}:{:?}, not {script_name}:{line}", f.file, f.line)),
            None => {}
        }
    }
    let gil = report.json.field("gil").opt_str();
    if interpreter.free_threaded && gil.is_some() {
        wrong.push(format!("a build without a GIL has the GIL state {gil:?}"));
    } else if !interpreter.free_threaded && gil.is_none() {
        wrong.push("the crashing thread has no GIL state".to_owned());
    }
    if stack.iter().any(|f| f.kind == "truncated") {
        wrong.push("the stack was cut short".to_owned());
    }
    if stack.first().is_none_or(|f| f.kind != "native") {
        wrong.push("the innermost frame (libc's strlen reading address 0) is not native".to_owned());
    }
    wrong.into_iter().map(|w| format!("{w}; {shown}")).collect()
}

/// Every supported interpreter's crash in a Python thread, reported after the process is gone: the Python frames
/// named and placed (file, line) from the kernel's copies alone, for each version's code object layout.
#[test]
fn crash_report_names_every_versions_python_frames() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let failures: Vec<String> = python_interpreters().into_iter().flat_map(check_crash).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    matrix::all_passed(Check::Crash);
}
