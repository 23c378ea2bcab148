//! `profiler dump`: a hung Python process (two threads deadlocked on two locks, one asleep) shown thread by
//! thread, where each waits and in which Python function, while it keeps running; and its one-line errors.
use std::{
    fs,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use profiler_tests::{
    crash_report::{parse_json, read_reports},
    exclusive_cpu,
    lifecycle::python,
    matrix::{self, Check},
    profiler,
    python_support::python_interpreters,
    require_root, run, unused_pid, workspace_root, Process, Recorder, TestDir,
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
    matrix::all_passed(Check::Dump);
}

/// The task of `dump`'s asyncio section named `name`.
fn task_named<'d>(asyncio: &'d Value, name: &str) -> Option<&'d Value> {
    asyncio["tasks"].as_array()?.iter().find(|t| t["name"] == name)
}

/// The names of the tasks a task awaits (its `awaits` are task ids).
fn awaited_names(asyncio: &Value, task: &Value) -> Vec<String> {
    let tasks = asyncio["tasks"].as_array().cloned().unwrap_or_default();
    let mut names: Vec<String> = task["awaits"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|id| tasks.iter().find(|t| &t["id"] == id))
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

fn coroutine_functions(task: &Value) -> Vec<String> {
    task["coroutines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["function"].as_str().map(str::to_owned))
        .collect()
}

/// What `tests/workloads/python/tasks.py`'s tasks must show in a dump: who awaits whom, and the coroutine each
/// waits in, innermost first. Returns what differs.
fn check_task_tree(asyncio: &Value, version: (u32, u32)) -> Vec<String> {
    // Before 3.11 a code object has no qualified name.
    let get = if version < (3, 11) { "get" } else { "Queue.get" };
    let mut wrong = Vec::new();
    // (task, the tasks it awaits, its coroutines innermost first, the innermost one's file)
    let consumer = [get, "consume"];
    let expected: [(&str, &[&str], &[&str], &str); 7] = [
        ("Task-1", &["server"], &["main"], "tasks.py"),
        ("server", &["request-1"], &["serve"], "tasks.py"),
        ("request-1", &[], &["sleep", "handle_request"], "asyncio/tasks.py"),
        ("batch", &["fetch-a", "fetch-b"], &["run_batch"], "tasks.py"),
        ("fetch-a", &[], &["sleep", "fetch"], "asyncio/tasks.py"),
        ("fetch-b", &[], &["sleep", "fetch"], "asyncio/tasks.py"),
        ("consumer", &[], &consumer, "asyncio/queues.py"),
    ];
    if asyncio["pending"] != 7 || asyncio["truncated"] != false {
        wrong.push(format!("7 pending tasks, none left out, expected: {asyncio:#}"));
    }
    for (name, awaits, coroutines, file) in expected {
        let Some(task) = task_named(asyncio, name) else {
            wrong.push(format!("no task {name}"));
            continue;
        };
        if awaited_names(asyncio, task) != awaits {
            wrong.push(format!("{name} awaits {:?}, not {awaits:?}: {task:#}", awaited_names(asyncio, task)));
        }
        if coroutine_functions(task) != coroutines {
            wrong.push(format!("{name}'s coroutines are {:?}, not {coroutines:?}", coroutine_functions(task)));
        }
        let innermost = &task["coroutines"][0];
        if !innermost["file"].as_str().is_some_and(|f| f.ends_with(file)) || innermost["line"].as_u64().is_none() {
            wrong.push(format!("{name}'s innermost coroutine is not in {file} with a line: {innermost:#}"));
        }
        if task["state"] != "waiting" || task["chain_cut"] != Value::Null {
            wrong.push(format!("{name} is not waiting with its whole chain: {task:#}"));
        }
    }
    // Each awaited task knows who awaits it (a gather's children: the task that gathered them).
    for (name, by) in [("server", "Task-1"), ("request-1", "server"), ("fetch-a", "batch"), ("fetch-b", "batch")] {
        let (Some(task), Some(parent)) = (task_named(asyncio, name), task_named(asyncio, by)) else { continue };
        if task["awaited_by"] != serde_json::json!([parent["id"]]) {
            wrong.push(format!("{name} is not awaited by {by} alone: {task:#}"));
        }
    }
    if let Some(consumer) = task_named(asyncio, "consumer") {
        if !consumer["waits_on"].as_str().is_some_and(|w| w.contains("Future")) {
            wrong.push(format!("the consumer does not wait on the queue's future: {consumer:#}"));
        }
    }
    if let Some(batch) = task_named(asyncio, "batch") {
        if batch["waits_on"] != "gather of fetch-a, fetch-b" {
            wrong.push(format!("batch does not wait on the gather: {batch:#}"));
        }
    }
    wrong
}

/// asyncio's task tree on every interpreter of the suite (3.8 to 3.15): the tasks of `tasks.py` by name, which awaits which (directly and through `gather`), and
/// the coroutines each is suspended in, in the JSON and in the text.
#[test]
fn asyncio_tasks_show_as_a_tree_of_who_awaits_whom() {
    if !require_root() {
        return;
    }
    let mut failures = Vec::new();
    for interpreter in python_interpreters() {
        let name = &interpreter.name;
        let stage = interpreter.stage("dump-tasks");
        let script = stage.inside("tasks.py");
        let workload = Process::start(&mut interpreter.command(&script, &[stage.inside("ready").to_str().unwrap()]));
        wait_for_file(&stage.host("ready"), LIMIT);
        let pid = workload.pid().to_string();
        let dumped = run(profiler().args(["dump", "--pid", &pid, "--json"]), LIMIT);
        dumped.assert_success();
        let dumps = parse_json(&dumped.stdout);
        let dump = &dumps.as_array().expect("a JSON array of dumps")[0];
        if interpreter.free_threaded {
            // Not read there (every object header is longer): said so, never a tree read at the wrong offsets.
            let note = dump["asyncio_note"].as_str().unwrap_or_default();
            if !note.contains("free-threaded") || dump["asyncio"] != Value::Null {
                failures.push(format!("{name}: expected a free-threaded note and no tasks: {dump:#}"));
            }
            continue;
        }
        if dump["asyncio_note"] != Value::Null {
            failures.push(format!("{name}: tasks not read: {}", dump["asyncio_note"]));
            continue;
        }
        failures.extend(
            check_task_tree(&dump["asyncio"], interpreter.version).into_iter().map(|what| format!("{name}: {what}")),
        );

        let text = run(profiler().args(["dump", "--pid", &pid]), LIMIT);
        text.assert_success();
        let out = &text.stdout;
        for line in [
            "\nasyncio tasks (7 pending):\n",
            "└─ task request-1 (",
            "): awaits gather of fetch-a, fetch-b\n",
            "): awaits task request-1\n",
        ] {
            if !out.contains(line) {
                failures.push(format!("{name}: the text lacks {line:?}:\n{out}"));
            }
        }
        // The tree: request-1 below server below Task-1.
        let at = |what: &str| out.find(what);
        if !(at("task Task-1 (") < at("└─ task server (") && at("└─ task server (") < at("└─ task request-1 ("))
        {
            failures.push(format!("{name}: request-1 is not below server below Task-1:\n{out}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for interpreter in python_interpreters() {
        let cell = if interpreter.free_threaded { "not read (said so)" } else { "✓" };
        matrix::passed(Check::Asyncio, interpreter, cell);
    }
}

/// A crash report of an asyncio process: its task tree as read when the crash record arrived, or, when the dying
/// process could no longer be read (the usual case: it is gone within milliseconds), one line saying so; never a
/// part of the tree shown as whole.
#[test]
fn a_crash_report_has_the_asyncio_tasks_or_says_they_were_not_readable() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("tasks-crash");
    let script = workspace_root().join("tests/workloads/python/tasks.py");
    let ready = dir.join("ready");
    let crash_dir = dir.join("crashes");
    let mut workload = Process::start(&mut python(&script, &[ready.to_str().unwrap(), "crash"]));
    wait_for_file(&ready, LIMIT);
    let mut record = profiler();
    record.args(["record", "--pid", &workload.pid().to_string(), "--crash-dir"]).arg(&crash_dir);
    record.arg("-o").arg(dir.join("x.folded"));
    let recorder = Recorder::start_recording(&mut record);
    fs::write(dir.join("ready.go"), "").expect("writing the go file");
    let started = Instant::now();
    while workload.child().try_wait().expect("polling the workload").is_none() {
        assert!(started.elapsed() < LIMIT, "the workload did not crash");
        thread::sleep(Duration::from_millis(50));
    }
    let run = recorder.finish(LIMIT, "the profiler");
    run.assert_success();
    let reports = read_reports(&crash_dir);
    assert_eq!(reports.len(), 1, "one crash report expected; the profiler said:\n{}", run.stderr);
    let report = &reports[0];
    let note = report.json["asyncio_note"].as_str();
    match (&report.json["asyncio"], note) {
        (Value::Null, Some(note)) => {
            assert_eq!(note, "not readable: the process exited while its tasks were read", "{}", report.text);
            assert!(report.text.contains("\nasyncio tasks not read: not readable: "), "{}", report.text);
        }
        (asyncio, None) => {
            // Read in time: the whole tree, and the crashing task running.
            let crasher = task_named(asyncio, "crasher").unwrap_or_else(|| panic!("no crasher: {asyncio:#}"));
            assert_eq!(crasher["state"], "running", "{crasher:#}");
            let others = Value::Array(
                asyncio["tasks"].as_array().unwrap().iter().filter(|t| t["name"] != "crasher").cloned().collect(),
            );
            let rest = serde_json::json!({"pending": 7, "truncated": asyncio["truncated"], "tasks": others});
            let wrong = check_task_tree(&rest, (3, 11));
            assert!(wrong.is_empty(), "{}", wrong.join("\n"));
            assert!(report.text.contains("\nasyncio tasks (8 pending):\n"), "{}", report.text);
        }
        (asyncio, Some(note)) => panic!("both tasks and a note: {asyncio:#} {note}"),
    }
}
