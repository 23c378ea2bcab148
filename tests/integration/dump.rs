//! `profiler dump`: a hung Python process (two threads deadlocked on two locks, one asleep) shown thread by
//! thread, where each waits and in which Python function, while it keeps running; and its one-line errors.
use std::{
    fs,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use profiler_tests::{
    crash_report::parse_json, lifecycle::python, profiler, python_support::python_interpreters, require_root, run,
    unused_pid, workspace_root, Process, TestDir,
};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

/// Reads the counter the workload's fourth thread keeps writing.
fn counter(path: &Path) -> u64 {
    fs::read_to_string(path).ok().and_then(|text| text.trim().parse().ok()).unwrap_or(0)
}

fn wait_for_file(path: &Path, limit: Duration) {
    let started = Instant::now();
    while !path.exists() {
        assert!(started.elapsed() < limit, "{} did not appear within {limit:?}", path.display());
        thread::sleep(Duration::from_millis(50));
    }
}

/// The thread of `dump` whose stack holds the Python function `function`.
fn thread_running<'d>(dump: &'d Value, function: &str) -> &'d Value {
    let threads = dump["threads"].as_array().expect("a threads array");
    threads
        .iter()
        .find(|t| t["stack"].as_array().is_some_and(|s| s.iter().any(|f| f["function"] == function)))
        .unwrap_or_else(|| panic!("no thread runs {function}: {dump:#}"))
}

fn functions(thread: &Value) -> Vec<String> {
    thread["stack"].as_array().unwrap().iter().map(|f| f["function"].as_str().unwrap_or("").to_owned()).collect()
}

#[test]
fn a_deadlocked_process_shows_where_each_thread_waits_without_being_stopped() {
    if !require_root() {
        return;
    }
    let dir = TestDir::new("dump-deadlock");
    let script = workspace_root().join("tests/workloads/python/deadlock.py");
    let (ready, count) = (dir.join("ready"), dir.join("counter"));
    let workload = Process::start(&mut python(&script, &[ready.to_str().unwrap(), count.to_str().unwrap()]));
    wait_for_file(&ready, LIMIT);
    let pid = workload.pid().to_string();

    let before = counter(&count);
    let dumped = run(profiler().args(["dump", "--pid", &pid, "--json"]), LIMIT);
    dumped.assert_success();
    // The counting thread went on while the dump was taken (and the dump stopped nothing after it).
    thread::sleep(Duration::from_millis(300));
    let after = counter(&count);
    assert!(after > before, "the counter did not advance across the dump ({before} → {after}): it was stopped");

    let dumps = parse_json(&dumped.stdout);
    let dump = &dumps.as_array().expect("a JSON array of dumps")[0];
    eprintln!("{dump:#}");
    assert_eq!(dump["pid"].as_u64(), Some(workload.pid() as u64));
    for function in ["deadlock_take_b_while_holding_a", "deadlock_take_a_while_holding_b"] {
        let thread = thread_running(dump, function);
        assert_eq!(thread["state"], "blocked", "{thread:#}");
        assert_eq!(thread["syscall_name"], "futex", "{thread:#}");
        assert_eq!(thread["description"], "waiting in futex (syscall 202)", "{thread:#}");
        let stack = functions(thread);
        // The lock call: exported by every CPython build (the static `lock_PyThread_acquire_lock` above it is
        // named only where the interpreter keeps its symbol table, not in Debian's python3).
        let lock = stack.iter().position(|f| f == "PyThread_acquire_lock_timed").unwrap_or_else(|| {
            panic!("no lock acquire frame in the stack of {function}: {stack:?}");
        });
        let caller = stack.iter().position(|f| f == function).unwrap();
        assert!(lock < caller, "the lock call is not below {function}: {stack:?}");
        assert_eq!(thread["holds_gil"], false, "{thread:#}");
        assert_eq!(stack.last().map(String::as_str), Some("__clone3"), "unwinding stopped early: {stack:?}");
    }
    let sleeper = thread_running(dump, "sleep_for_a_long_time");
    assert_eq!(sleeper["syscall_name"], "clock_nanosleep", "{sleeper:#}");
    let stack = functions(sleeper);
    let sleep = stack.iter().position(|f| f.contains("clock_nanosleep")).expect("a clock_nanosleep frame");
    assert!(sleep < stack.iter().position(|f| f == "sleep_for_a_long_time").unwrap(), "{stack:?}");

    // The text form says the same for people.
    let text = run(profiler().args(["dump", "--pid", &pid]), LIMIT);
    text.assert_success();
    assert!(text.stdout.starts_with(&format!("dump: python3 (PID {pid}) at ")), "{}", text.stdout);
    assert!(text.stdout.matches("waiting in futex (syscall 202)").count() >= 2, "{}", text.stdout);
    assert!(text.stdout.contains("deadlock_take_a_while_holding_b at "), "{}", text.stdout);
    assert!(text.stdout.contains("sleeping in clock_nanosleep (syscall 230)"), "{}", text.stdout);
}

#[test]
fn a_pid_that_does_not_exist_is_one_error_line() {
    if !require_root() {
        return;
    }
    let pid = unused_pid().to_string();
    run(profiler().args(["dump", "--pid", &pid]), LIMIT).assert_one_line_error(&[&pid, "no process"]);
}

/// A hung native program is dumped too, with its native frames: `sleep` waits in clock_nanosleep under main.
#[test]
fn a_process_that_is_not_python_shows_its_native_stacks() {
    if !require_root() {
        return;
    }
    let sleeper = Process::start(std::process::Command::new("sleep").arg("60"));
    thread::sleep(Duration::from_millis(300));
    let pid = sleeper.pid().to_string();
    let dumped = run(profiler().args(["dump", "--pid", &pid, "--json"]), LIMIT);
    dumped.assert_success();
    assert!(dumped.stderr.contains("runs no Python: native stacks only"), "{}", dumped.stderr);
    let dumps = parse_json(&dumped.stdout);
    let dump = &dumps.as_array().expect("a JSON array of dumps")[0];
    let threads = dump["threads"].as_array().expect("a threads array");
    assert_eq!(threads.len(), 1, "{dump:#}");
    assert_eq!(threads[0]["syscall_name"], "clock_nanosleep", "{dump:#}");
    let stack = functions(&threads[0]);
    assert!(stack.iter().any(|f| f.contains("nanosleep")), "no sleep call in {stack:?}");
    assert!(stack.iter().any(|f| f == "__libc_start_main_impl" || f == "__libc_start_call_main"), "{stack:?}");
}

/// Every supported interpreter's threads matched to their kernel threads: 3.11+ thread states hold the TID; 3.8–3.10's
/// hold only the pthread id, which `threading._active` maps to the TID (`_native_id`). A thread state left
/// unmatched would show as "Python thread 0x…" without its native stack or the kernel's wait.
#[test]
fn every_versions_python_threads_are_matched_to_their_kernel_threads() {
    if !require_root() {
        return;
    }
    let mut failures = Vec::new();
    for interpreter in python_interpreters() {
        let name = &interpreter.name;
        let stage = interpreter.stage("dump-versions");
        let (ready, count) = (stage.inside("ready"), stage.inside("counter"));
        let script = stage.inside("deadlock.py");
        let args = [ready.to_str().expect("UTF-8"), count.to_str().expect("UTF-8")];
        let workload = Process::start(&mut interpreter.command(&script, &args));
        wait_for_file(&stage.host("ready"), LIMIT);
        let dumped = run(profiler().args(["dump", "--pid", &workload.pid().to_string(), "--json"]), LIMIT);
        dumped.assert_success();
        let dumps = parse_json(&dumped.stdout);
        let dump = &dumps.as_array().expect("a JSON array of dumps")[0];
        let threads = dump["threads"].as_array().expect("a threads array");
        let unmatched: Vec<&Value> = threads.iter().filter(|t| t["tid"].is_null()).collect();
        if !unmatched.is_empty() {
            failures.push(format!("{name}: Python thread states matched to no kernel thread: {unmatched:?}"));
        }
        for function in ["deadlock_take_b_while_holding_a", "deadlock_take_a_while_holding_b", "sleep_for_a_long_time"]
        {
            let Some(thread) = threads
                .iter()
                .find(|t| t["stack"].as_array().is_some_and(|s| s.iter().any(|f| f["function"] == function)))
            else {
                failures.push(format!("{name}: no thread shows {function}: {dump:#}"));
                continue;
            };
            // A free-threaded build has no GIL: no GIL state at all rather than "not held".
            let gil = if interpreter.free_threaded { Value::Null } else { Value::Bool(false) };
            if thread["state"] != "blocked" || thread["holds_gil"] != gil {
                failures.push(format!("{name}: {function}'s thread is not blocked with holds_gil {gil}: {thread:#}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
