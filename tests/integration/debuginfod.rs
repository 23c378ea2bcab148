//! Names from debuginfod: a stripped library whose hot code is in static functions (as in CPython's extension
//! modules and lxml's wheel), its split debug file served by a real debuginfod server (elfutils', on loopback).
//! Without the server its frames are `[libhidden.so+0x…]`; with it the agent fetches the file by build-id in the
//! background and names them; a second recording names them from the cache with the server gone.
use std::{
    fs,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use profiler_tests::{
    compile_c, exclusive_cpu, gnu_build_id, profiler,
    receiver::{free_port, http_get},
    require_root, run, run_to_success, workspace_root, Folded, Process, TestDir,
};

/// The library's static functions, which only its debug file names.
const HIDDEN: [&str; 2] = ["hidden_inner_loop", "hidden_middle"];

/// Builds the library (then splits off its debug file and strips it) and the program calling it.
fn build(dir: &TestDir) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let sources = workspace_root().join("tests/workloads/debuginfod");
    let library = dir.join("libhidden.so");
    compile_c(&["-fPIC", "-shared"], &sources.join("hidden.c"), &library);
    let debug = dir.join("served/libhidden.so.debug");
    fs::create_dir_all(debug.parent().expect("a parent")).expect("creating the served directory");
    run_to_success(Command::new("objcopy").arg("--only-keep-debug").arg(&library).arg(&debug));
    run_to_success(Command::new("strip").arg("--strip-all").arg(&library));
    let program = dir.join("calls_hidden");
    let rpath = format!("-Wl,-rpath,{}", dir.path().display());
    let link_dir = format!("-L{}", dir.path().display());
    // Not `compile_c`, which puts the source last: the library must come after it to be linked.
    run_to_success(
        Command::new("gcc")
            .args(["-O2", "-g", "-Wl,--build-id", "-o"])
            .arg(&program)
            .arg(sources.join("calls_hidden.c"))
            .arg(&link_dir)
            .arg("-lhidden")
            .arg(&rpath),
    );
    let build_id = gnu_build_id(&library);
    (program, debug, build_id)
}

/// Records `pid` for `seconds` into a folded file, with `extra` arguments and environment.
fn record(pid: u32, seconds: u32, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Folded, String) {
    let mut cmd = profiler();
    cmd.args(["record", "--pid", &pid.to_string(), "--duration", &format!("{seconds}s")]).args(extra);
    cmd.arg("-o").arg(out);
    for (name, value) in env {
        cmd.env(name, value);
    }
    let result = run(&mut cmd, Duration::from_secs(u64::from(seconds) + 60));
    result.assert_success();
    (Folded::read(out), result.stderr)
}

/// Samples of the library (its exported entry point on the stack) and those whose leaf is a named static function.
fn library_samples(folded: &Folded) -> (u64, u64) {
    let mut total = 0;
    let mut named = 0;
    for (frames, count) in &folded.stacks {
        if !frames.iter().any(|f| f == "hidden_entry") {
            continue;
        }
        total += count;
        if frames.last().is_some_and(|leaf| HIDDEN.contains(&leaf.as_str())) {
            named += count;
        }
    }
    (total, named)
}

/// The stacks of a folded file, for a failure's message.
fn text(folded: &Folded) -> String {
    folded.stacks.iter().map(|(frames, count)| format!("{} {count}\n", frames.join(";"))).collect()
}

#[test]
fn a_stripped_librarys_frames_are_named_by_its_debug_file_from_debuginfod() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("debuginfod");
    let (program, debug, build_id) = build(&dir);
    let workload = Process::start(Command::new(&program).arg("60"));
    let pid = workload.pid();

    // Nothing on the machine names the static functions.
    let (before, _) = record(pid, 2, &dir.join("before.folded"), &[], &[]);
    let (total, named) = library_samples(&before);
    assert!(total >= 100, "only {total} samples in the library:\n{}", text(&before));
    assert_eq!(named, 0, "the stripped library's static functions are named without its debug file");

    // elfutils' debuginfod serving the split debug file.
    let port = free_port();
    let server_log = fs::File::create(dir.join("debuginfod.log")).expect("creating the server's log");
    let _server = Process::start(
        Command::new("debuginfod")
            .stdout(server_log.try_clone().expect("the log's descriptor"))
            .stderr(server_log)
            .arg("-F")
            .arg(debug.parent().expect("a parent"))
            .args(["-p", &port.to_string(), "-t", "0", "-d"])
            .arg(dir.join("debuginfod.sqlite")),
    );
    let path = format!("/buildid/{build_id}/debuginfo");
    let started = Instant::now();
    // The status line's code, as debuginfod answers (`HTTP/1.1 200 OK` or `HTTP/1.0 200 OK`).
    while http_get(port, &path).as_deref().and_then(|answer| answer.split_whitespace().nth(1)) != Some("200") {
        assert!(started.elapsed() < Duration::from_secs(60), "debuginfod did not serve {path} within 60 s");
        thread::sleep(Duration::from_millis(200));
    }

    let cache = dir.join("cache");
    let cache_arg = cache.to_str().expect("UTF-8");
    let url = format!("http://127.0.0.1:{port}");
    let args = ["--debuginfod", "on", "--debuginfod-cache", cache_arg];
    let (after, stderr) = record(pid, 4, &dir.join("after.folded"), &args, &[("DEBUGINFOD_URLS", &url)]);
    let (total, named) = library_samples(&after);
    // The fetch starts at the first unnamed frame and takes milliseconds on loopback: a few samples before it.
    assert!(
        named * 100 >= total * 90,
        "only {named} of {total} library samples named with the debug file from debuginfod:\n{}\n{stderr}",
        text(&after)
    );
    assert!(stderr.contains(&format!("debug info of build-id {build_id} from {url}")), "{stderr}");
    let cached = cache.join(format!("{build_id}.debug"));
    assert_eq!(fs::read(&cached).expect("the cached debug file"), fs::read(&debug).expect("the served one"));

    // The server gone, the cache names them from the first sample.
    drop(_server);
    let (cached_run, stderr) = record(pid, 2, &dir.join("cached.folded"), &args, &[("DEBUGINFOD_URLS", &url)]);
    let (total, named) = library_samples(&cached_run);
    assert!(total >= 100 && named == total, "{named} of {total} named from the cache:\n{stderr}");
    drop(workload);
}
