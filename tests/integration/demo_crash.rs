//! The demo app crashing under load (issue 6, the last check): examples/quake-monitor served by a single uvicorn
//! process with its opt-in `/crash` endpoint, fed by its load generator, profiled by `record` and by `run`, then
//! crashed. `/crash` segfaults in C (`ctypes.string_at(0, 16)`) from `read_sensor_buffer`, at the line marked
//! `# CRASH-LINE` in app.py, called by the endpoint `crash` on one of FastAPI's worker threads.
//!
//! With `record` the report must show the C fault above the two Python frames, and its last-window flame graph the
//! work of the load; with `run` the receiver must get both the window that the crash cut short and the crash stack.
use std::{
    collections::BTreeMap,
    fs,
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use profiler_tests::{
    agent::AGENT_ENV,
    crash_report::{file_names, read_reports, Field as _, Report},
    exclusive_cpu,
    lifecycle::{quake_venv, ProcessGroup},
    profiler,
    python::{marked_line, pprof_samples, PprofFrame},
    receiver::{basic_auth, decode_push, free_port, function_names, http_get, Expect, Pushed, Receiver},
    require_root, wait_with_limit, workspace_root, Folded, Recorder, TestDir, SETTLE,
};

/// The app's functions the load runs: `/earthquakes` (a worker-thread `def`) and `/weather` (an `async def`).
const LOAD_FUNCTIONS: [&str; 2] = ["earthquakes", "weather_report"];
/// Requests per second of the load, and how long it lasts: enough to outlast the wait before the crash.
const LOAD_RATE: u32 = 20;
const LOAD_SECONDS: u32 = 10;
/// How long the profiler records the app under load before `/crash` is requested.
const BEFORE_CRASH: Duration = Duration::from_secs(4);
const USERNAME: &str = "918273";
const API_KEY: &str = "glc_eyJrIjoiZmFrZS10ZXN0LWtleSJ9";

// ---------------------------------------------------------------------------------------------------------------
// The app

fn app_dir() -> PathBuf {
    workspace_root().join("examples/quake-monitor")
}

/// app.py, as the report names it (uvicorn imports it from its working directory).
fn app_py() -> PathBuf {
    app_dir().join("app.py")
}

/// examples/quake-monitor under one uvicorn process (no `--workers`: the process the test starts is the one that
/// serves and crashes) with `/crash` enabled; killed with its process group when dropped.
struct DemoApp {
    group: ProcessGroup,
    port: u16,
    log: PathBuf,
}

impl DemoApp {
    fn start(dir: &TestDir) -> DemoApp {
        let port = free_port();
        let log = dir.join("uvicorn.log");
        let log_file = fs::File::create(&log).unwrap_or_else(|err| panic!("creating {}: {err}", log.display()));
        let mut cmd = Command::new(quake_venv().join("bin/uvicorn"));
        cmd.args(["app:app", "--host", "127.0.0.1", "--port", &port.to_string()])
            .current_dir(app_dir())
            .env("QUAKE_CRASH_ENDPOINT", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdout(log_file.try_clone().expect("duplicating a file handle"))
            .stderr(log_file);
        // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
        unsafe {
            // No core file from the crash, whatever this machine's default.
            cmd.pre_exec(|| {
                let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                libc::setrlimit(libc::RLIMIT_CORE, &none);
                Ok(())
            });
        }
        let mut app = DemoApp { group: ProcessGroup::start(&mut cmd), port, log };
        let give_up = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = app.group.child().try_wait().expect("polling uvicorn") {
                panic!("uvicorn exited ({status}) before serving; its log:\n{}", app.log_text());
            }
            if app.get("/health").is_some_and(|answer| answer.starts_with("HTTP/1.1 200")) {
                return app;
            }
            assert!(Instant::now() < give_up, "uvicorn did not serve within 90 s; its log:\n{}", app.log_text());
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The uvicorn process: the one that serves, so the one that crashes.
    fn pid(&self) -> u32 {
        self.group.pid()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// GETs `path`; the whole answer (status line, headers, body), or None when there was none.
    fn get(&self, path: &str) -> Option<String> {
        http_get(self.port, path)
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts the app's load generator against it (its own process group, killed when dropped).
    fn load(&self) -> ProcessGroup {
        let mut cmd = Command::new(quake_venv().join("bin/python"));
        cmd.arg("loadgen.py")
            .args(["--url", &self.url(), "--rate", &LOAD_RATE.to_string(), "--duration", &LOAD_SECONDS.to_string()])
            .current_dir(app_dir())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        ProcessGroup::start(&mut cmd)
    }

    /// Requests `/crash` and waits for the app to die of SIGSEGV. The connection dies with the app: an answer means
    /// the endpoint returned instead of crashing.
    fn crash(&mut self) {
        if let Some(answer) = self.get("/crash") {
            let status_line = answer.lines().next().unwrap_or_default();
            panic!(
                "GET /crash answered `{status_line}` instead of crashing the app (pid {}, still running: {}). The end \
                 of its log:\n{}",
                self.pid(),
                self.group.child().try_wait().expect("polling uvicorn").is_none(),
                self.log_tail(40)
            );
        }
        let status = wait_with_limit(self.group.child(), Duration::from_secs(30), "the demo app after GET /crash");
        assert_eq!(
            status.signal(),
            Some(libc::SIGSEGV),
            "the app should have died of SIGSEGV after GET /crash; it ended with {status}. The end of its log:\n{}",
            self.log_tail(40)
        );
    }

    /// The last `lines` lines of uvicorn's output.
    fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Checks

/// The one report there must be in `crash_dir`, of a SIGSEGV fault of process `pid`; panics otherwise.
fn only_segv_report(crash_dir: &Path, pid: u32, profiler_log: &str) -> Report {
    let mut reports = read_reports(crash_dir);
    assert_eq!(
        reports.len(),
        1,
        "expected exactly one crash report in {}; it holds {:?}. The profiler's stderr:\n{profiler_log}",
        crash_dir.display(),
        file_names(crash_dir)
    );
    let report = reports.remove(0);
    let json = &report.json;
    let shown = format!("the report {}.json:\n{}", report.base.display(), report.text);
    let name = report.base.file_name().and_then(|n| n.to_str()).expect("a file name");
    let prefix = format!("crash-{pid}-SIGSEGV-");
    assert!(name.starts_with(&prefix), "the report is named {name}, not {prefix}MILLIS; {shown}");
    assert_eq!(json.field("kind").opt_str(), Some("fault"), "kind; {shown}");
    assert_eq!(json.field("pid").i64(), i64::from(pid), "pid; {shown}");
    assert_eq!(json.field("signal").i64(), i64::from(libc::SIGSEGV), "signal; {shown}");
    assert_eq!(json.field("signal_name").str(), "SIGSEGV", "signal_name; {shown}");
    assert!(report.file("txt").is_some(), "no text report next to {}.json", report.base.display());
    report
}

/// Whether a Python frame belongs to ctypes itself: `ctypes.string_at` is a Python wrapper (ctypes/__init__.py)
/// around the C call, so it sits between the C fault and the app's code.
fn in_ctypes_package(file: Option<&str>) -> bool {
    file.is_some_and(|f| Path::new(f).parent().and_then(Path::file_name) == Some("ctypes".as_ref()))
}

fn is_app_py(file: Option<&str>) -> bool {
    file.is_some_and(|f| Path::new(f).file_name() == Some("app.py".as_ref()))
}

/// The stack of the report: the C fault on top (some native frame before the first Python frame; above the app
/// only native frames and ctypes' own Python wrapper), then `read_sensor_buffer` at the `# CRASH-LINE` of app.py,
/// then `crash` in app.py, on a worker thread.
fn check_crash_stack(report: &Report) {
    let stack = report.stack();
    let shown =
        format!("the report {}.json:\n{}\nits stack:\n{}", report.base.display(), report.text, report.stack_text());
    let first_python =
        stack.iter().position(|f| f.is_python()).unwrap_or_else(|| panic!("no Python frame in the stack; {shown}"));
    assert!(
        stack[..first_python].iter().any(|f| f.kind == "native"),
        "no native frame above the first Python frame (the fault is in C); {shown}"
    );
    let first_app = stack
        .iter()
        .position(|f| f.is_python() && is_app_py(f.file.as_deref()))
        .unwrap_or_else(|| panic!("no Python frame of app.py in the stack; {shown}"));
    for frame in &stack[first_python..first_app] {
        assert!(
            frame.is_python() && in_ctypes_package(frame.file.as_deref()),
            "between the C fault and the app's code only native frames and ctypes' Python wrapper may come: \
             {frame}; {shown}"
        );
    }
    let caller = &stack[first_app];
    assert_eq!(caller.function, "read_sensor_buffer", "the innermost Python frame of app.py; {shown}");
    assert_eq!(
        caller.line,
        Some(marked_line(&app_py(), "# CRASH-LINE")),
        "read_sensor_buffer's line (# CRASH-LINE); {shown}"
    );
    let next = stack.get(first_app + 1).unwrap_or_else(|| panic!("the stack ends at read_sensor_buffer; {shown}"));
    assert!(next.is_python(), "the frame below read_sensor_buffer is not a Python frame: {next}; {shown}");
    assert_eq!(next.function, "crash", "the Python caller of read_sensor_buffer; {shown}");
    assert!(is_app_py(next.file.as_deref()), "crash is not in app.py; {shown}");
    assert!(!stack.iter().any(|f| f.kind == "truncated"), "the stack was cut short; {shown}");
    // `crash` is a plain `def` endpoint: FastAPI runs it on a worker thread, not on the event loop's.
    let (pid, tid) = (report.json.field("pid").i64(), report.json.field("tid").i64());
    assert_ne!(tid, pid, "the crash should be on a FastAPI worker thread, not the main thread; {shown}");
}

/// Whether any of the app's load functions is among `names`.
fn names_load_function(names: impl IntoIterator<Item = impl AsRef<str>>) -> bool {
    names.into_iter().any(|name| LOAD_FUNCTIONS.contains(&name.as_ref()))
}

/// The last window's flame graph is there, not empty, and shows the load.
fn check_window_flame_graph(report: &Report) {
    let samples = report.json.field("window_samples").i64();
    assert!(samples > 0, "no samples in the window before the crash; {}", report.text);
    let files = file_names(report.base.parent().expect("a directory"));
    let svg = report.file("svg").unwrap_or_else(|| panic!("no flame graph next to the report: {files:?}"));
    let text = fs::read_to_string(&svg).unwrap_or_else(|err| panic!("reading {}: {err}", svg.display()));
    assert!(!text.is_empty() && text.contains("<svg"), "{} is empty or not an SVG", svg.display());
    assert!(
        LOAD_FUNCTIONS.iter().any(|f| text.contains(f)),
        "the flame graph {} names none of the load's functions {LOAD_FUNCTIONS:?}",
        svg.display()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// The tests

/// `record --pid` of the app under load, then `/crash`: one SIGSEGV report with the C fault above
/// `read_sensor_buffer` (at the CRASH-LINE) and `crash`, a last-window flame graph showing the load, and the
/// recording ending by itself, exit 0, with its output written, once the app is dead.
#[test]
fn demo_app_crash_under_load_is_reported() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("demo-crash-record");
    let crash_dir = dir.join("crashes");
    let folded = dir.join("x.folded");
    let mut app = DemoApp::start(&dir);
    let pid = app.pid();
    let _load = app.load();

    let mut record = profiler();
    record.args(["record", "--pid", &pid.to_string(), "--crash-dir"]).arg(&crash_dir).arg("-o").arg(&folded);
    // Returns once it records (its SIGINT handler, and a margin for the targets to be added).
    let recorder = Recorder::start_recording(&mut record);
    thread::sleep(BEFORE_CRASH.saturating_sub(SETTLE));
    app.crash();
    let run = recorder.finish(Duration::from_secs(60), "the profiler");
    eprintln!("the profiler's stderr:\n{}", run.stderr);
    run.assert_success();

    let report = only_segv_report(&crash_dir, pid, &run.stderr);
    check_crash_stack(&report);
    check_window_flame_graph(&report);
    assert!(folded.is_file(), "the recording wrote no {}", folded.display());
    let profile = Folded::read(&folded);
    assert!(profile.total() > 0, "{} holds no samples", folded.display());
    assert!(
        // A Python frame is folded as `function (file)`.
        names_load_function(
            profile.stacks.iter().flat_map(|(frames, _)| frames).map(|frame| frame.split(" (").next().unwrap_or(frame))
        ),
        "{} names none of the load's functions {LOAD_FUNCTIONS:?}",
        folded.display()
    );
    // The app names its threads only through threading (no prctl): the profiler reads those names.
    let threads: Vec<String> = profile.threads().into_iter().map(|(name, _)| name).collect();
    assert!(threads.iter().any(|t| t == "AnyIO worker thread"), "no stack of an AnyIO worker thread: {threads:?}");
    let at_crash: Vec<String> = report.threads().into_iter().map(|thread| thread.name).collect();
    // Other threads are captured from Linux 6.8 on; the scheduler thread started with the app.
    if !at_crash.is_empty() {
        assert!(at_crash.iter().any(|t| t == "scheduler"), "no scheduler among the threads at the crash: {at_crash:?}");
    }
}

/// `run --pid` of the app under load with a 60 s window, then `/crash`: the receiver gets the window the crash cut
/// short (service `uvicorn`, the load's functions) and then the crash stack labelled `crash=SIGSEGV`, both before
/// the agent, its target gone, exits 0; the report is written to `--crash-dir` too.
#[test]
fn demo_app_crash_is_uploaded_by_run() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("demo-crash-run");
    let crash_dir = dir.join("crashes");
    let receiver = Receiver::start();
    let mut app = DemoApp::start(&dir);
    let pid = app.pid();
    let _load = app.load();

    let mut agent = profiler();
    for var in AGENT_ENV {
        agent.env_remove(var);
    }
    agent
        .args(["run", "--pid", &pid.to_string(), "--server-url", &receiver.url(), "--upload-interval", "60s"])
        .arg("--crash-dir")
        .arg(&crash_dir)
        .env("PYROSCOPE_USERNAME", USERNAME)
        .env("PYROSCOPE_API_KEY", API_KEY);
    let mut agent = Recorder::start(&mut agent);
    agent.wait_until_recording();
    let recording = Instant::now();
    thread::sleep(BEFORE_CRASH);
    assert!(receiver.requests().is_empty(), "the agent uploaded before the crash (the window is 60 s)");
    let crashed_at = Instant::now();
    app.crash();
    let run = agent.finish(Duration::from_secs(30), "the agent after its target crashed");
    let exited = Instant::now();
    eprintln!("the agent's stderr:\n{}", run.stderr);
    run.assert_success();
    assert!(
        exited - recording < Duration::from_secs(40),
        "the agent should stop once its only target is gone, long before its 60 s window ends"
    );
    receiver.assert_clean();

    let requests = receiver.requests();
    let expect = Expect { authorization: Some(basic_auth(USERNAME, API_KEY)), tenant: None };
    let pushed: Vec<(Instant, Pushed)> = requests.iter().map(|r| (r.at, decode_push(r, &expect))).collect();
    let listing: Vec<String> = pushed
        .iter()
        .map(|(at, p)| {
            format!(
                "+{:?} {:?}: {} samples",
                at.saturating_duration_since(crashed_at),
                p.labels,
                p.profile.sample.len()
            )
        })
        .collect();
    let shown = format!(
        "the receiver got (time after /crash, labels, samples):\n{listing:#?}\nthe agent's stderr:\n{}",
        run.stderr
    );
    eprintln!("the receiver got (time after /crash, labels, samples):\n{listing:#?}");
    for (_, p) in &pushed {
        assert_eq!(p.labels.get("service_name").map(String::as_str), Some("uvicorn"), "service_name; {shown}");
        assert_eq!(p.labels.get("__name__").map(String::as_str), Some("process_cpu"), "__name__; {shown}");
    }

    // (b) The crash stack, on its own and labelled.
    let crashes: Vec<usize> = (0..pushed.len()).filter(|&i| pushed[i].1.labels.contains_key("crash")).collect();
    let [crash_index] = crashes[..] else { panic!("expected exactly one profile labelled crash=...; {shown}") };
    let crash = &pushed[crash_index].1;
    assert_eq!(crash.labels["crash"], "SIGSEGV", "the crash profile's label; {shown}");
    let samples = pprof_samples(&crash.profile);
    let stacks: Vec<Vec<&PprofFrame>> = samples.iter().map(|s| s.frames.iter().collect()).collect();
    assert_eq!(
        samples.len(),
        1,
        "the crash profile should hold one sample, the stack at the fault: {stacks:#?}; {shown}"
    );
    assert_eq!(samples[0].count, 1, "the crash profile's sample stands for one event; {shown}");
    // Root first: the app's `crash` → `read_sensor_buffer`, then at most ctypes' wrapper before the C frames.
    let python: Vec<&PprofFrame> = samples[0].frames.iter().filter(|f| f.is_python()).collect();
    let names: Vec<&str> = python.iter().map(|f| f.function.as_str()).collect();
    let app = python.iter().rposition(|f| is_app_py(Some(&f.file)));
    assert!(
        app.is_some_and(|i| i >= 1 && names[i - 1..=i] == ["crash", "read_sensor_buffer"])
            && python[app.unwrap() + 1..].iter().all(|f| in_ctypes_package(Some(&f.file))),
        "the crash profile's Python frames (root first) do not end in crash → read_sensor_buffer (→ ctypes): \
         {names:?}; {shown}"
    );

    // (a) The window the crash cut short, sent before the crash stack: the app's work under load.
    let windows: Vec<usize> = (0..pushed.len()).filter(|&i| !pushed[i].1.labels.contains_key("crash")).collect();
    let with_load: Vec<usize> =
        windows.iter().copied().filter(|&i| names_load_function(function_names(&pushed[i].1.profile))).collect();
    let Some(&window_index) = with_load.first() else {
        panic!("no window profile names the load's functions {LOAD_FUNCTIONS:?}; {shown}")
    };
    assert!(window_index < crash_index, "the window the crash cut short should go out before the crash stack; {shown}");
    let (window_at, window) = &pushed[window_index];
    assert!(*window_at < exited, "the window arrived after the agent exited; {shown}");
    let seconds = window.profile.duration_nanos as f64 / 1e9;
    assert!(
        seconds < 30.0,
        "the window should end at the crash, a few seconds in, not run its 60 s course: {seconds} s; {shown}"
    );
    let functions: BTreeMap<&str, bool> =
        LOAD_FUNCTIONS.iter().map(|f| (*f, function_names(&window.profile).contains(*f))).collect();
    eprintln!("the load's functions in the window: {functions:?}");

    // The report, in --crash-dir.
    let report = only_segv_report(&crash_dir, pid, &run.stderr);
    check_crash_stack(&report);
    check_window_flame_graph(&report);
}
