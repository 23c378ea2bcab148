//! The `endpoint` label and the `--labels` rules against real web apps under a known mix of requests, with no line
//! of the apps changed: the demo app (FastAPI: `def earthquakes` in AnyIO's worker threads, `async def
//! weather_report` on the event loop) and a small Flask app (tests/workloads/endpoints). Each handler's own CPU time
//! is measured in the app by a library-style decorator (handler_timer.py); each endpoint's share of the profile's
//! samples must be within ±5 points of its handler's share of the process's CPU time, and the threads that serve no
//! request (the demo's scheduler, the Flask app's housekeeping) and the work around the handler (a Flask
//! `before_request` hook) must carry no endpoint. Then a rules file applied, its labels in the pprof and in the
//! grouped folded stacks, and `run` pushing the labels; and a rules file with a mistake refused in one line.
use std::{
    collections::{BTreeMap, HashMap},
    fs,
    net::{Ipv4Addr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use profiler_tests::{
    agent::Agent,
    exclusive_cpu,
    lifecycle::quake_venv,
    profiler,
    python::{pprof_samples, PprofSample},
    read_pprof,
    receiver::{basic_auth, decode_push, free_port, label_values, Expect, Receiver},
    require_root, run, wait_for_totals, workspace_root, Folded, Process, Run, TestDir,
};

const DURATION: &str = "15s";
/// Requests per second, all paths together: well under what one core serves, so requests do not queue for long.
const RATE: &str = "16";
/// Samples per second: enough samples in `DURATION` that an endpoint's share is steady to a point or two.
const RATE_HZ: &str = "200";
/// An endpoint's share of the samples may differ from its handler's share of the CPU time by this many points.
const TOLERANCE_PP: f64 = 5.0;

fn workloads() -> PathBuf {
    workspace_root().join("tests/workloads/endpoints")
}

/// The Flask virtualenv: `FLASK_VENV` (set by `cargo xtask test`), else `<workspace>/target/flask-venv`.
fn flask_venv() -> PathBuf {
    let venv =
        std::env::var_os("FLASK_VENV").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target/flask-venv"));
    assert!(
        venv.join("bin/python").exists(),
        "no Flask virtualenv at {} (FLASK_VENV or the default): make it with `cargo xtask setup`",
        venv.display()
    );
    venv
}

/// A web app serving on a loopback port, writing its handlers' CPU times to `totals`.
struct App {
    process: Process,
    port: u16,
    totals: PathBuf,
    log: PathBuf,
}

impl App {
    fn start(mut cmd: Command, port: u16, dir: &TestDir) -> App {
        let log = dir.join("app.log");
        let file = fs::File::create(&log).expect("creating the app's log");
        cmd.env("PYTHONPATH", workloads().join("site-packages"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .stdout(file.try_clone().expect("duplicating a file handle"))
            .stderr(file);
        let mut app = App { process: Process::start(&mut cmd), port, totals: dir.join("totals.json"), log };
        wait_for_totals(&mut app.process, &app.totals, 2.0);
        let give_up = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            assert!(Instant::now() < give_up, "the app did not listen within a minute; its log:\n{}", app.log_text());
            thread::sleep(Duration::from_millis(100));
        }
        app
    }

    /// The demo app (examples/quake-monitor) with its handlers timed (quake_measured.py).
    fn quake_monitor(dir: &TestDir) -> App {
        let port = free_port();
        let mut cmd = Command::new(quake_venv().join("bin/python"));
        cmd.arg(workloads().join("quake_measured.py"))
            .arg(workspace_root().join("examples/quake-monitor"))
            .arg(port.to_string())
            .arg(dir.join("totals.json"));
        App::start(cmd, port, dir)
    }

    fn flask(dir: &TestDir) -> App {
        let port = free_port();
        let mut cmd = Command::new(flask_venv().join("bin/python"));
        cmd.arg(workloads().join("flask_app.py")).arg(port.to_string()).arg(dir.join("totals.json"));
        App::start(cmd, port, dir)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Requests `paths` in turn, `RATE` per second, for longer than a recording (killed with the guard).
    fn load(&self, paths: &str) -> Process {
        Process::start(
            Command::new("/usr/bin/python3")
                .arg(workloads().join("load.py"))
                .args(["--url", &self.url(), "--paths", paths, "--rate", RATE, "--duration", "40"])
                .stdout(std::process::Stdio::null()),
        )
    }
}

/// One recording of an app under load, with the app's own account of the same stretch.
struct Recording {
    run: Run,
    samples: Vec<PprofSample>,
    /// CPU nanoseconds per handler over the recording, and the whole process's.
    handler_cpu_ns: BTreeMap<String, f64>,
    process_cpu_ns: f64,
    dir_path: PathBuf,
}

impl Recording {
    fn total(&self) -> u64 {
        self.samples.iter().map(|s| s.count).sum()
    }

    fn count(&self, pick: impl Fn(&PprofSample) -> bool) -> u64 {
        self.samples.iter().filter(|s| pick(s)).map(|s| s.count).sum()
    }

    /// Each handler's endpoint share against its share of the CPU time: the report, and the failures.
    fn compare_shares(&self, handlers: &[(&str, &str)], failures: &mut Vec<String>) -> String {
        let total = self.total();
        let mut report = format!("{total} samples, {:.2} s of CPU by the app's clock", self.process_cpu_ns / 1e9);
        if total < 200 {
            failures.push(format!("only {total} samples; stderr:\n{}", self.run.stderr));
        }
        for (handler, value) in handlers {
            let share = self.count(|s| s.label("endpoint") == Some(*value)) as f64 / total.max(1) as f64;
            let truth = self.handler_cpu_ns[*handler] / self.process_cpu_ns;
            report += &format!(
                "\n  endpoint={value}: {:5.1}% of samples, handler {:5.1}% of CPU",
                100.0 * share,
                100.0 * truth
            );
            if truth < 0.10 {
                failures.push(format!(
                    "{handler} had only {:.1}% of the CPU: too little to compare (the workload is out of balance)",
                    100.0 * truth
                ));
            }
            if (share - truth).abs() * 100.0 > TOLERANCE_PP {
                failures.push(format!(
                    "endpoint={value} has {:.1}% of the samples, its handler {handler} used {:.1}% of the CPU",
                    100.0 * share,
                    100.0 * truth
                ));
            }
        }
        let labelled: Vec<&str> = {
            let mut values: Vec<&str> = self.samples.iter().filter_map(|s| s.label("endpoint")).collect();
            values.sort();
            values.dedup();
            values
        };
        report += &format!("\n  endpoint values: {labelled:?}");
        report
    }
}

/// Records `app` for `DURATION` while `paths` are requested, with `extra` arguments to `record`.
fn record(app: &mut App, paths: &str, extra: &[&str], dir: &TestDir) -> Recording {
    let _load = app.load(paths);
    // Past the first requests, which import and warm up what the handlers use.
    thread::sleep(Duration::from_secs(2));
    let mut cmd = profiler();
    cmd.args(["record", "--pid", &app.process.pid().to_string(), "--duration", DURATION, "--rate", RATE_HZ]);
    cmd.args(extra).arg("-o").arg(dir.join("x.pb.gz"));
    let run = run(&mut cmd, Duration::from_secs(120));
    run.assert_success();
    eprintln!("{}", run.stderr);
    // The app's totals nearest the start and the end of the profile's own window.
    let profile = read_pprof(&dir.join("x.pb.gz"));
    let (start, end) = (profile.time_nanos as f64, (profile.time_nanos + profile.duration_nanos) as f64);
    let history = totals_history(&app.totals);
    let nearest = |at: f64| {
        history
            .iter()
            .min_by(|a, b| (a["unix_ns"] - at).abs().total_cmp(&(b["unix_ns"] - at).abs()))
            .expect("the app wrote its totals")
    };
    let (before, after) = (nearest(start), nearest(end));
    let delta = |key: &str| after[key] - before[key];
    let handler_cpu_ns = after
        .keys()
        .filter(|key| !["process_cpu_ns", "unix_ns"].contains(&key.as_str()))
        .map(|key| (key.clone(), delta(key)))
        .collect();
    Recording {
        samples: pprof_samples(&profile),
        run,
        handler_cpu_ns,
        process_cpu_ns: delta("process_cpu_ns"),
        dir_path: dir.path().to_owned(),
    }
}

/// Every line of the totals' history (handler_timer.py appends one per write to TOTALS + `l`): the handlers' CPU
/// nanoseconds by name, with `process_cpu_ns` and `unix_ns`.
fn totals_history(totals: &Path) -> Vec<HashMap<String, f64>> {
    let path = PathBuf::from(format!("{}l", totals.display()));
    let text = fs::read_to_string(&path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
    // A line being written as it was read is incomplete: only whole lines count.
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|json| {
            let number = |value: &serde_json::Value| value.as_f64().unwrap_or_else(|| panic!("not a number: {json}"));
            let mut numbers: HashMap<String, f64> =
                json["handlers"].as_object().expect("handlers").iter().map(|(k, v)| (k.clone(), number(v))).collect();
            for key in ["process_cpu_ns", "unix_ns"] {
                numbers.insert(key.to_owned(), number(&json[key]));
            }
            numbers
        })
        .collect()
}

/// Whether a sample's stack has a Python frame of `function` from a file ending in `file`.
fn runs(sample: &PprofSample, function: &str, file: &str) -> bool {
    sample.frames.iter().any(|f| f.is_python() && f.function == function && f.file.ends_with(file))
}

/// The demo app: each endpoint's share within ±5 points of its handler's CPU share, the sync handler's samples (in
/// AnyIO's worker threads) and the async one's (on the event loop) both labelled, every labelled sample running
/// the handler it names, and the scheduler thread's samples without an endpoint. The summary prints CPU by
/// endpoint.
#[test]
fn demo_app_endpoints_match_each_handlers_cpu() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("endpoints-demo");
    let mut app = App::quake_monitor(&dir);
    let rec = record(&mut app, "/earthquakes,/weather", &[], &dir);
    let mut failures = Vec::new();
    let report =
        rec.compare_shares(&[("earthquakes", "earthquakes"), ("weather_report", "weather_report")], &mut failures);
    eprintln!("demo app: {report}");

    for (value, file) in [("earthquakes", "quake-monitor/app.py"), ("weather_report", "quake-monitor/app.py")] {
        let labelled = rec.count(|s| s.label("endpoint") == Some(value));
        let wrong = rec.count(|s| s.label("endpoint") == Some(value) && !runs(s, value, file));
        if wrong > 0 {
            failures.push(format!("{wrong} of {labelled} samples labelled endpoint={value} do not run {value}"));
        }
        let running = rec.count(|s| runs(s, value, file));
        if labelled * 100 < running * 99 {
            failures.push(format!("only {labelled} of the {running} samples running {value} are labelled"));
        }
    }
    let worker = rec.count(|s| s.label("thread_name") == Some("AnyIO worker thread") && s.label("endpoint").is_some());
    if worker == 0 {
        failures.push("no labelled sample of AnyIO's worker threads (the sync handler)".into());
    }
    let scheduler = rec.count(|s| s.label("thread_name") == Some("scheduler"));
    let scheduler_labelled =
        rec.count(|s| s.label("thread_name") == Some("scheduler") && s.label("endpoint").is_some());
    if scheduler < 5 || scheduler_labelled > 0 {
        failures.push(format!("the scheduler thread has {scheduler} samples, {scheduler_labelled} with an endpoint"));
    }
    let other: Vec<&str> = rec
        .samples
        .iter()
        .filter_map(|s| s.label("endpoint"))
        .filter(|value| !["earthquakes", "weather_report"].contains(value))
        .collect();
    if !other.is_empty() {
        failures.push(format!("endpoint values that are not the app's handlers: {other:?}"));
    }
    if !rec.run.stderr.contains("CPU by endpoint") {
        failures.push("the summary has no `CPU by endpoint`".into());
    }
    assert!(failures.is_empty(), "{}\n{report}\napp log:\n{}", failures.join("\n"), app.log_text());
}

/// A Flask app under Werkzeug's threaded server: plain views and a class-based one, each endpoint's share within ±5
/// points of its handler's CPU share; the `before_request` hook and the housekeeping thread without an endpoint.
#[test]
fn flask_app_endpoints_match_each_handlers_cpu() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("endpoints-flask");
    let mut app = App::flask(&dir);
    let rec = record(&mut app, "/fib,/primes,/report", &[], &dir);
    let mut failures = Vec::new();
    let report = rec
        .compare_shares(&[("fibonacci", "fibonacci"), ("primes", "primes"), ("get", "ReportView.get")], &mut failures);
    eprintln!("flask app: {report}");
    let hook = rec.count(|s| runs(s, "authenticate", "flask_app.py"));
    let hook_labelled = rec.count(|s| runs(s, "authenticate", "flask_app.py") && s.label("endpoint").is_some());
    if hook == 0 || hook_labelled > 0 {
        failures.push(format!("the before_request hook has {hook} samples, {hook_labelled} with an endpoint"));
    }
    let housekeeping = rec.count(|s| s.label("thread_name") == Some("housekeeping"));
    let housekeeping_labelled =
        rec.count(|s| s.label("thread_name") == Some("housekeeping") && s.label("endpoint").is_some());
    if housekeeping == 0 || housekeeping_labelled > 0 {
        failures.push(format!("housekeeping has {housekeeping} samples, {housekeeping_labelled} with an endpoint"));
    }
    assert!(failures.is_empty(), "{}\n{report}\napp log:\n{}", failures.join("\n"), app.log_text());
}

/// The owners' labels from a rules file (tests/workloads/endpoints/labels.toml) in the pprof: each handler's
/// `endpoint` and `data_source` as the file says, the scheduler's `job` and no endpoint; `--group-by endpoint` puts
/// each value at the root of the folded stacks.
#[test]
fn rules_file_labels_appear_in_the_pprof_and_the_grouped_outputs() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("endpoints-rules");
    let mut app = App::quake_monitor(&dir);
    let rules = workloads().join("labels.toml");
    let folded = dir.join("x.folded");
    let extra =
        ["--labels", rules.to_str().expect("UTF-8"), "--group-by", "endpoint", "-o", folded.to_str().expect("UTF-8")];
    let rec = record(&mut app, "/earthquakes,/weather", &extra, &dir);
    let mut failures = Vec::new();
    let report = rec.compare_shares(&[("earthquakes", "phivolcs"), ("weather_report", "weather")], &mut failures);
    eprintln!("rules: {report}");
    let mut pairs: HashMap<(Option<&str>, Option<&str>), u64> = HashMap::new();
    for sample in &rec.samples {
        *pairs.entry((sample.label("endpoint"), sample.label("data_source"))).or_default() += sample.count;
    }
    for (endpoint, source) in [("phivolcs", "external_api"), ("weather", "computed")] {
        if !pairs.contains_key(&(Some(endpoint), Some(source))) {
            failures.push(format!("no sample with endpoint={endpoint} and data_source={source}: {pairs:?}"));
        }
    }
    let mismatched: Vec<_> = pairs
        .keys()
        .filter(|(endpoint, source)| {
            !matches!(
                (endpoint, source),
                (None, None) | (Some("phivolcs"), Some("external_api")) | (Some("weather"), Some("computed"))
            )
        })
        .collect();
    if !mismatched.is_empty() {
        failures.push(format!("label pairs the rules do not give: {mismatched:?}"));
    }
    let scheduler = |s: &PprofSample| s.label("thread_name") == Some("scheduler");
    let refresh = rec.count(|s| scheduler(s) && s.label("job") == Some("refresh") && s.label("endpoint").is_none());
    if refresh == 0 || refresh != rec.count(scheduler) {
        failures.push(format!(
            "{refresh} of the scheduler's {} samples have job=refresh and no endpoint",
            rec.count(scheduler)
        ));
    }
    let folded = Folded::read(&folded);
    let mut roots: BTreeMap<String, u64> = BTreeMap::new();
    for (frames, count) in &folded.stacks {
        *roots.entry(frames[0].clone()).or_default() += count;
    }
    let expected = ["[endpoint: none]", "[endpoint=phivolcs]", "[endpoint=weather]"];
    if roots.keys().map(String::as_str).collect::<Vec<_>>() != expected {
        failures.push(format!("folded roots {roots:?}, expected {expected:?}"));
    }
    for (value, root) in [("phivolcs", expected[1]), ("weather", expected[2])] {
        let in_pprof = rec.count(|s| s.label("endpoint") == Some(value));
        if roots.get(root) != Some(&in_pprof) {
            failures.push(format!(
                "{root} has {:?} samples in the folded stacks, {in_pprof} in the pprof",
                roots.get(root)
            ));
        }
    }
    assert!(failures.is_empty(), "{}\n{report}\nin {}", failures.join("\n"), rec.dir_path.display());
}

/// `run` pushes the endpoint labels: a Grafana filter on `endpoint` finds each route.
#[test]
fn run_pushes_endpoint_labels() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("endpoints-run");
    let app = App::quake_monitor(&dir);
    let _load = app.load("/earthquakes,/weather");
    let receiver = Receiver::start();
    let (pid, url) = (app.process.pid().to_string(), receiver.url());
    let env = [("PYROSCOPE_USERNAME", "918273"), ("PYROSCOPE_API_KEY", "glc_test-key")];
    let agent = Agent::start(&[], &["--pid", &pid, "--server-url", &url, "--upload-interval", "3s"], &env);
    receiver.wait_for("two windows", Duration::from_secs(30), |requests| requests.len() >= 2);
    let stopped = agent.stop(libc::SIGTERM);
    assert!(stopped.status.success(), "the agent failed: {}", stopped.stderr);
    receiver.assert_clean();
    let expect = Expect { authorization: Some(basic_auth("918273", "glc_test-key")), tenant: None };
    let mut endpoints = std::collections::BTreeSet::new();
    for request in receiver.requests() {
        endpoints.extend(label_values(&decode_push(&request, &expect).profile, "endpoint"));
    }
    let endpoints: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    assert_eq!(endpoints, ["earthquakes", "weather_report"], "endpoint values pushed");
}

/// A rules file with a mistake stops `record` before it attaches: one line naming the file, the line and what is
/// wrong.
#[test]
fn a_bad_rules_file_is_one_clear_line() {
    let dir = TestDir::new("endpoints-bad-rules");
    let cases = [
        ("[[rule]]\nfunction = \"earthquakes\"\nlabels = { endpoint = \"phivolcs\" \n", ":3:"),
        // A misspelt key in the second rule.
        (
            concat!(
                "[[rule]]\nfunction = \"earthquakes\"\nlabels = { endpoint = \"phivolcs\" }\n\n",
                "[[rule]]\nfunktion = \"x\"\n"
            ),
            ":6:",
        ),
        ("[[rule]]\nfunction = \"earthquakes\"\nlabels = { thread_name = \"x\" }\n", ":3:"),
    ];
    for (index, (text, line)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad-{index}.toml"));
        fs::write(&path, text).expect("writing the rules");
        let mut cmd = profiler();
        cmd.args(["record", "--pid", &std::process::id().to_string(), "--duration", "1s", "--labels"]);
        cmd.arg(&path).arg("-o").arg(dir.join("x.pb.gz"));
        let run = run(&mut cmd, Duration::from_secs(30));
        let at = format!("{}{line}", path.display());
        run.assert_one_line_error(&[&at]);
        assert!(!Path::new(&dir.join("x.pb.gz")).exists(), "nothing was recorded");
    }
}
