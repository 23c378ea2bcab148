//! `profiler run` against a loopback Pyroscope stand-in (tests/support/receiver.rs): what it pushes (path, headers, auth,
//! labels, the pprof and its time range), how it rides out a failing server (500s, 429 with Retry-After, 401, a
//! server that never answers, one that is down), and how it starts and stops (PROFILING_ENABLED=false, SIGTERM).
//!
//! Windows are 1–2 s here so that every test takes seconds; the agent behaves the same at the default 15 s.
use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fs,
    os::unix::fs::PermissionsExt as _,
    process::Command,
    thread,
    time::Duration,
};

use profiler::pprof::proto;
use profiler_tests::{
    agent::{numbers_before, Agent, Stopped, AGENT_ENV},
    assert_sampled, exclusive_cpu, profiler, profiler_bin,
    receiver::{
        basic_auth, cpu_sample_count, decode_ingest, decode_push, free_port, function_names, label_values, unix_now_ns,
        Expect, Pushed, Receiver, Reply, Request,
    },
    require_root, run, start_native_burn, unused_pid, workloads, Process, TestDir,
};

/// 100 Hz.
const PERIOD_NS: i64 = 10_000_000;
/// native-burn's hot functions, one per thread (hot_main_b shares the main thread).
const HOT_FUNCTIONS: [&str; 4] = ["hot_main_a", "hot_main_b", "lib_hot_x", "hot_b"];
const USERNAME: &str = "918273";
const API_KEY: &str = "glc_eyJrIjoiZmFrZS10ZXN0LWtleSJ9";

/// A clean exit within `within` of the signal, and the API key nowhere in the log.
fn assert_clean_stop(stopped: &Stopped, within: Duration) {
    stopped.assert_clean_exit();
    stopped.assert_stopped_within(within);
    assert!(!stopped.stderr.contains(API_KEY), "the API key is in the agent's log:\n{}", stopped.stderr);
}

/// The status lines logged so far: (samples/s, targets, sent, retries, dropped, queued windows, queued bytes).
fn status_lines(stderr: &str) -> Vec<[f64; 7]> {
    stderr
        .lines()
        .filter(|line| line.contains("status: "))
        .map(|line| {
            let rate: f64 = line
                .split("status: ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no samples/s in {line:?}"));
            let n = numbers_before(line, &["targets", "windows sent", "retries", "dropped", "windows /", "bytes"]);
            [rate, n[0] as f64, n[1] as f64, n[2] as f64, n[3] as f64, n[4] as f64, n[5] as f64]
        })
        .collect()
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname").trim().to_owned()
}

fn expect_auth() -> Expect {
    Expect { authorization: Some(basic_auth(USERNAME, API_KEY)), tenant: None }
}

fn auth_env() -> Vec<(&'static str, &'static str)> {
    vec![("PYROSCOPE_USERNAME", USERNAME), ("PYROSCOPE_API_KEY", API_KEY)]
}

/// Starts a copy of native-burn under another name (so another process name, so another service).
fn start_renamed_burn(dir: &TestDir, name: &str) -> Process {
    let built = workloads();
    let binary = dir.join(name);
    fs::copy(&built.native_burn, &binary).expect("copying native-burn");
    // It finds its library through $ORIGIN.
    fs::copy(&built.libburnlib, dir.join("libburnlib.so")).expect("copying libburnlib.so");
    let mut process = Process::start(Command::new(&binary).arg("120"));
    process.wait_for_threads(&[name, "burn-a", "burn-b"]);
    process
}

/// Pushed windows of one service must tile time: each starts where the previous ended, none twice.
fn assert_contiguous(windows: &[&proto::Profile], what: &str) {
    for pair in windows.windows(2) {
        assert_eq!(
            pair[1].time_nanos,
            pair[0].time_nanos + pair[0].duration_nanos,
            "{what}: a window starts where the previous one ended (no gap, no overlap, none twice)"
        );
    }
}

fn decode_all_push(requests: &[Request], expect: &Expect) -> Vec<Pushed> {
    requests.iter().map(|request| decode_push(request, expect)).collect()
}

#[test]
fn push_sends_one_profile_per_service_and_window_with_labels_and_workload_stacks() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("upload-push");
    let burn = start_native_burn(Duration::from_secs(120));
    let copy = start_renamed_burn(&dir, "burn-copy");
    let receiver = Receiver::start();
    let before = unix_now_ns();
    let (burn_pid, copy_pid) = (burn.pid().to_string(), copy.pid().to_string());
    let url = receiver.url();
    let mut env = auth_env();
    env.push(("ENVIRONMENT", "ci"));
    let agent = Agent::start(
        &[],
        &["--pid", &burn_pid, "--pid", &copy_pid, "--server-url", &url, "--upload-interval", "2s"]
            .into_iter()
            .chain(["--tag", "region=eu-west-1", "--tag", "version=1.4.2", "--tenant-id", "team-a"])
            .collect::<Vec<_>>(),
        &env,
    );
    assert!(!agent.cmdline().contains(API_KEY), "the key is on the command line: {}", agent.cmdline());
    // Two full windows of each service, then half of a third, which the shutdown sends.
    receiver.wait_for("4 uploads", Duration::from_secs(20), |requests| requests.len() >= 4);
    thread::sleep(Duration::from_secs(1));
    let stopped = agent.stop(libc::SIGTERM);
    let after = unix_now_ns();
    assert_clean_stop(&stopped, Duration::from_secs(6));
    receiver.assert_clean();

    let requests = receiver.requests();
    assert!(requests.iter().all(|r| r.answered == Some(200)));
    let expect = Expect { tenant: Some("team-a".into()), ..expect_auth() };
    let pushed = decode_all_push(&requests, &expect);
    let ids: HashSet<&str> = pushed.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids.len(), pushed.len(), "every upload has its own id");

    let host = hostname();
    let mut by_service: BTreeMap<String, Vec<&Pushed>> = BTreeMap::new();
    for p in &pushed {
        let labels: Vec<(&str, &str)> = p.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let service = p.labels["service_name"].clone();
        let expected = [
            ("__name__", "process_cpu"),
            ("environment", "ci"),
            ("hostname", host.as_str()),
            ("otel.scope.name", "profiler"),
            ("otel.scope.version", env!("CARGO_PKG_VERSION")),
            ("region", "eu-west-1"),
            ("service_name", service.as_str()),
            ("version", "1.4.2"),
        ];
        assert_eq!(labels, expected, "series labels");
        by_service.entry(service).or_default().push(p);
    }
    let services: Vec<&str> = by_service.keys().map(String::as_str).collect();
    assert_eq!(services, ["burn-copy", "native-burn"], "one service per process name");

    for (service, other) in [("native-burn", "burn-copy"), ("burn-copy", "native-burn")] {
        let mut windows: Vec<&proto::Profile> = by_service[service].iter().map(|p| &p.profile).collect();
        windows.sort_by_key(|w| w.time_nanos);
        assert!(windows.len() >= 3, "{service}: 2 full windows and the last one, got {}", windows.len());
        assert_contiguous(&windows, service);
        assert!(windows[0].time_nanos >= before, "{service}: the first window starts after the agent did");
        let last = windows[windows.len() - 1];
        assert!(last.time_nanos + last.duration_nanos <= after, "{service}: the last window ends before the exit");
        for window in &windows[..windows.len() - 1] {
            let seconds = window.duration_nanos as f64 / 1e9;
            assert!((1.5..=2.8).contains(&seconds), "{service}: a full window lasts the 2 s interval, not {seconds} s");
        }
        let mut functions = BTreeSet::new();
        for window in &windows {
            let count = cpu_sample_count(window, PERIOD_NS);
            // Three threads can use at most three CPUs' worth of 100 Hz samples.
            let most = (3.0 * 100.0 * window.duration_nanos as f64 / 1e9 * 1.2) as i64 + 10;
            assert!(
                count > 0 && count <= most,
                "{service}: {count} samples in a window of {} ns",
                window.duration_nanos
            );
            // Pyroscope would make a series of each pid and thread id: uploads carry neither.
            for key in ["pid", "thread_id"] {
                assert!(label_values(window, key).is_empty(), "{service}: a `{key}` label was uploaded");
            }
            // Each process's main thread carries its name; the other threads' names are the same in both.
            let threads = label_values(window, "thread_name");
            assert!(threads.contains(service), "{service}: its main thread is missing: {threads:?}");
            assert!(!threads.contains(other), "{service}: samples of {other} were uploaded with it: {threads:?}");
            functions.extend(function_names(window));
        }
        for hot in HOT_FUNCTIONS {
            assert!(functions.contains(hot), "{service}: {hot} is missing from the pushed profiles: {functions:?}");
        }
    }
}

#[test]
fn ingest_protocol_posts_a_multipart_pprof_with_the_labels_in_the_name() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let burn = start_native_burn(Duration::from_secs(60));
    let receiver = Receiver::start();
    let (pid, url) = (burn.pid().to_string(), receiver.url());
    let agent = Agent::start(
        &[],
        &[
            "--pid",
            &pid,
            "--server-url",
            &url,
            "--protocol",
            "ingest",
            "--app-name",
            "quake-monitor",
            "--upload-interval",
            "2s",
            "--tag",
            "region=eu",
        ],
        &[("ENVIRONMENT", "production")],
    );
    receiver.wait_for("2 uploads", Duration::from_secs(20), |requests| requests.len() >= 2);
    // Ctrl-C stops the agent like SIGTERM.
    let stopped = agent.stop(libc::SIGINT);
    assert_clean_stop(&stopped, Duration::from_secs(6));
    receiver.assert_clean();

    let requests = receiver.requests();
    let ingested: Vec<_> = requests.iter().map(|r| decode_ingest(r, &Expect::default())).collect();
    let mut functions = BTreeSet::new();
    for upload in &ingested {
        assert_eq!(upload.app, "quake-monitor");
        let tags: Vec<(&str, &str)> = upload.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(tags, [("environment", "production"), ("hostname", hostname().as_str()), ("region", "eu")]);
        assert_eq!((upload.sample_rate, upload.spy_name.as_str()), (100, "ebpfspy"));
        let start = upload.profile.time_nanos as u64;
        let end = start + upload.profile.duration_nanos as u64;
        assert_eq!(upload.from, start / 1_000_000_000, "from is the window's start, in seconds");
        assert_eq!(upload.until, end.div_ceil(1_000_000_000).max(upload.from + 1), "until is its end, rounded up");
        assert!(cpu_sample_count(&upload.profile, PERIOD_NS) > 0);
        functions.extend(function_names(&upload.profile));
    }
    let mut windows: Vec<&proto::Profile> = ingested.iter().map(|u| &u.profile).collect();
    windows.sort_by_key(|w| w.time_nanos);
    assert_contiguous(&windows, "ingest");
    for hot in HOT_FUNCTIONS {
        assert!(functions.contains(hot), "{hot} is missing from the ingested profiles: {functions:?}");
    }
}

#[test]
fn server_errors_are_retried_with_backoff_and_each_window_arrives_once() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let burn = start_native_burn(Duration::from_secs(60));
    let receiver = Receiver::start();
    receiver.script([Reply::Status(500), Reply::Status(500)]);
    let (pid, url) = (burn.pid().to_string(), receiver.url());
    let agent = Agent::start(&[], &["--pid", &pid, "--server-url", &url, "--upload-interval", "2s"], &auth_env());
    let delivered = |requests: &[Request]| requests.iter().filter(|r| r.answered == Some(200)).count();
    receiver.wait_for("3 delivered windows", Duration::from_secs(25), |requests| delivered(requests) >= 3);
    let stopped = agent.stop(libc::SIGTERM);
    assert_clean_stop(&stopped, Duration::from_secs(6));
    receiver.assert_clean();

    let requests = receiver.requests();
    let answers: Vec<Option<u16>> = requests.iter().take(3).map(|r| r.answered).collect();
    assert_eq!(answers, [Some(500), Some(500), Some(200)]);
    let pushed = decode_all_push(&requests, &expect_auth());
    assert!(
        pushed[0].id == pushed[1].id && pushed[1].id == pushed[2].id && requests[0].body == requests[2].body,
        "the failed window is resent unchanged"
    );
    // Backoff with jitter: the n-th delay is within [d/2, d] for d = 1 s, 2 s.
    let gaps = [requests[1].at - requests[0].at, requests[2].at - requests[1].at];
    eprintln!("retries after 500, 500: {gaps:?}; {} requests for {} windows", requests.len(), pushed.len() - 2);
    assert!(
        gaps[0] >= Duration::from_millis(450) && gaps[0] <= Duration::from_millis(1500),
        "first retry after {:?}",
        gaps[0]
    );
    assert!(
        gaps[1] >= Duration::from_millis(950) && gaps[1] <= Duration::from_millis(2500),
        "second retry after {:?}",
        gaps[1]
    );

    // Every window that was tried arrived exactly once, and together they leave no gap.
    let tried: BTreeSet<&str> = pushed.iter().map(|p| p.id.as_str()).collect();
    let delivered: Vec<&Pushed> =
        pushed.iter().zip(&requests).filter(|(_, r)| r.answered == Some(200)).map(|(p, _)| p).collect();
    let delivered_ids: BTreeSet<&str> = delivered.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(delivered_ids.len(), delivered.len(), "no window is delivered twice");
    assert_eq!(delivered_ids, tried, "every window is delivered");
    let mut windows: Vec<&proto::Profile> = delivered.iter().map(|p| &p.profile).collect();
    windows.sort_by_key(|w| w.time_nanos);
    assert_contiguous(&windows, "native-burn");
    let [sent, retries, dropped, rejected] = stopped.final_counts();
    assert_eq!((sent as usize, retries, dropped, rejected), (delivered.len(), 2, 0, 0), "the agent's own counts");
    let warnings = stopped.stderr.lines().filter(|l| l.contains("retrying with backoff")).count();
    assert_eq!(warnings, 1, "one warning per outage, not per attempt:\n{}", stopped.stderr);
}

#[test]
fn retry_after_from_a_429_is_honoured() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let burn = start_native_burn(Duration::from_secs(60));
    let receiver = Receiver::start();
    // Longer than any first backoff delay (at most 1 s), so only honouring the header explains the wait.
    receiver.script([Reply::StatusWith(429, vec![("Retry-After".into(), "2".into())])]);
    let (pid, url) = (burn.pid().to_string(), receiver.url());
    let agent = Agent::start(&[], &["--pid", &pid, "--server-url", &url, "--upload-interval", "2s"], &auth_env());
    receiver.wait_for("the retried window", Duration::from_secs(20), |requests| requests.len() >= 2);
    let stopped = agent.stop(libc::SIGTERM);
    assert_clean_stop(&stopped, Duration::from_secs(6));

    let requests = receiver.requests();
    let pushed = decode_all_push(&requests, &expect_auth());
    assert_eq!((requests[0].answered, requests[1].answered), (Some(429), Some(200)));
    assert_eq!(pushed[0].id, pushed[1].id, "the second request retries the first window");
    let waited = requests[1].at - requests[0].at;
    eprintln!("retried {waited:?} after a 429 with Retry-After: 2");
    assert!(
        waited >= Duration::from_millis(1950) && waited <= Duration::from_millis(3500),
        "Retry-After: 2 was answered by a retry after {waited:?}"
    );
}

#[test]
fn unauthorized_is_reported_once_while_sampling_goes_on() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("upload-401");
    let key_file = dir.join("api-key");
    fs::write(&key_file, format!("{API_KEY}\n")).expect("writing the key file");
    fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600)).expect("chmod 600");
    let burn = start_native_burn(Duration::from_secs(60));
    let receiver = Receiver::start();
    receiver.set_default(Reply::Status(401));
    let (pid, url) = (burn.pid().to_string(), receiver.url());
    let key_path = key_file.to_str().expect("UTF-8 path");
    let agent = Agent::start(
        &[],
        &[
            "--pid",
            &pid,
            "--server-url",
            &url,
            "--api-key-file",
            key_path,
            "--upload-interval",
            "1s",
            "--status-interval",
            "1s",
        ],
        &[("PYROSCOPE_USERNAME", USERNAME)],
    );
    assert!(!agent.cmdline().contains(API_KEY));
    receiver.wait_for("the first upload", Duration::from_secs(10), |requests| !requests.is_empty());
    thread::sleep(Duration::from_secs(5));
    let seen_while_running = receiver.requests().len();
    let status = status_lines(&agent.stderr());
    let stopped = agent.stop(libc::SIGTERM);
    // Wrong credentials will not become right during the shutdown flush: no reason to wait for its deadline.
    assert_clean_stop(&stopped, Duration::from_secs(3));
    receiver.assert_clean();

    assert_eq!(seen_while_running, 1, "after a 401 the agent retries slowly (every 60 s), not in a loop");
    assert!(receiver.requests().len() <= 2, "one more try at shutdown at most");
    for request in &receiver.requests() {
        decode_push(request, &expect_auth());
    }
    let reported: Vec<&str> = stopped.stderr.lines().filter(|l| l.contains("upload rejected (401)")).collect();
    assert_eq!(reported.len(), 1, "exactly one error line for the 401s:\n{}", stopped.stderr);
    assert!(reported[0].contains("check PYROSCOPE_USERNAME / API key"), "{}", reported[0]);
    assert!(reported[0].contains("ERROR"), "{}", reported[0]);
    // Sampling went on: the latest status lines show samples and windows piling up in the queue.
    assert!(status.len() >= 3, "status lines every second:\n{}", stopped.stderr);
    let last = status[status.len() - 1];
    let (rate, sent, queued) = (last[0], last[2], last[5]);
    // Low on a loaded machine, but not zero.
    assert!(rate > 5.0, "{rate} samples/s while uploads are refused");
    assert_eq!(sent, 0.0);
    assert!(queued >= 3.0, "windows go on being made and queued: {queued}");
}

#[test]
fn a_server_that_never_answers_times_out_and_the_queue_stays_bounded() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let burn = start_native_burn(Duration::from_secs(60));
    let receiver = Receiver::start();
    receiver.set_default(Reply::Hang);
    let (pid, url) = (burn.pid().to_string(), receiver.url());
    // Room for about three windows of native-burn (1–2 KiB each).
    let max_queue = 4 * 1024;
    let agent = Agent::start(
        &[],
        &[
            "--pid",
            &pid,
            "--server-url",
            &url,
            "--upload-interval",
            "1s",
            "--upload-timeout",
            "1s",
            "--status-interval",
            "1s",
            "--max-queue-size",
            "4KiB",
        ],
        &auth_env(),
    );
    thread::sleep(Duration::from_secs(9));
    let stopped = agent.stop(libc::SIGTERM);
    // The flush gets 5 s, then the agent gives up on what is left.
    assert_clean_stop(&stopped, Duration::from_secs(7));
    receiver.assert_clean();

    let attempts = receiver.requests();
    assert!(attempts.len() >= 3, "attempts go on after timeouts: {}", attempts.len());
    assert!(attempts.iter().all(|r| r.answered.is_none()));
    let first = decode_push(&attempts[0], &expect_auth());
    // The window being retried is the oldest: it is the same one until it grows too old or is sent.
    assert_eq!(decode_push(&attempts[1], &expect_auth()).id, first.id);
    assert!(stopped.stderr.contains("no answer within 1s"), "the timeout is reported:\n{}", stopped.stderr);
    let status = status_lines(&stopped.stderr);
    assert!(!status.is_empty());
    // Window sizes vary; the bound may be exceeded only by the window in flight, which is never evicted.
    let biggest = attempts.iter().map(|r| r.body.len()).max().unwrap_or(0) as f64;
    for line in &status {
        let queued_bytes = line[6];
        assert!(queued_bytes <= max_queue as f64 + biggest, "queue of {queued_bytes} bytes over the bound");
    }
    let last = status[status.len() - 1];
    eprintln!("never answering: {} attempts; last status {last:?}", attempts.len());
    assert!(last[4] > 0.0, "with ~9 windows and room for ~3, the oldest windows are dropped: {last:?}");
    assert!(stopped.stderr.contains("upload queue full"), "dropping is logged:\n{}", stopped.stderr);
    assert_eq!(last[2], 0.0, "nothing was delivered");
    assert!(stopped.stderr.contains("could not be sent before the shutdown deadline"), "{}", stopped.stderr);
}

#[test]
fn windows_wait_for_a_server_that_is_down_and_arrive_once_it_is_back() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let burn = start_native_burn(Duration::from_secs(60));
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let pid = burn.pid().to_string();
    let before = unix_now_ns();
    let agent = Agent::start(&[], &["--pid", &pid, "--server-url", &url, "--upload-interval", "2s"], &auth_env());
    let sampling = unix_now_ns();
    // Down for the first two windows.
    thread::sleep(Duration::from_secs(5));
    let receiver = Receiver::start_on(port);
    receiver.wait_for("3 windows", Duration::from_secs(25), |requests| requests.len() >= 3);
    let stopped = agent.stop(libc::SIGTERM);
    assert_clean_stop(&stopped, Duration::from_secs(6));
    receiver.assert_clean();

    let pushed = decode_all_push(&receiver.requests(), &expect_auth());
    let ids: HashSet<&str> = pushed.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids.len(), pushed.len(), "no window twice");
    let mut windows: Vec<&proto::Profile> = pushed.iter().map(|p| &p.profile).collect();
    windows.sort_by_key(|w| w.time_nanos);
    assert_contiguous(&windows, "native-burn");
    // The first window, made while the server was down, was kept and sent: it began as the agent started sampling
    // its targets (moments after it logged its capabilities, well within one 2 s window).
    assert!(
        (before..=sampling + 1_000_000_000).contains(&windows[0].time_nanos),
        "the first window delivered starts after the agent was ready: the windows before it were lost"
    );
    let [sent, retries, dropped, _] = stopped.final_counts();
    eprintln!("server down ~5 s: {sent} windows sent, {retries} retries, {dropped} dropped");
    assert!(retries >= 2 && dropped == 0, "{retries} retries, {dropped} dropped");
    assert!(stopped.stderr.contains("Connection refused"), "the cause is named:\n{}", stopped.stderr);
    assert!(stopped.stderr.contains("go through again"), "the recovery is logged:\n{}", stopped.stderr);
}

#[test]
fn sigterm_sends_the_last_window_and_exits_0() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let burn = start_native_burn(Duration::from_secs(60));
    let receiver = Receiver::start();
    let (pid, url) = (burn.pid().to_string(), receiver.url());
    let started = unix_now_ns();
    // No window would end for a minute: only the shutdown sends one.
    let agent = Agent::start(&[], &["--pid", &pid, "--server-url", &url, "--upload-interval", "60s"], &auth_env());
    let cpu_before = burn.process_cpu();
    thread::sleep(Duration::from_secs(3));
    let signalled = unix_now_ns();
    let stopped = agent.stop(libc::SIGTERM);
    let burned = burn.process_cpu().saturating_sub(cpu_before);
    assert_clean_stop(&stopped, Duration::from_secs(2));
    receiver.assert_clean();

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "exactly the last window");
    let window = decode_push(&requests[0], &expect_auth()).profile;
    assert!(window.time_nanos >= started);
    let end = window.time_nanos + window.duration_nanos;
    assert!(end >= signalled && end - signalled < 1_000_000_000, "the window ends at the signal");
    assert!(window.duration_nanos >= 2_500_000_000, "it covers the whole run: {} ns", window.duration_nanos);
    assert_sampled(cpu_sample_count(&window, PERIOD_NS) as u64, burned, &stopped.stderr);
}

#[test]
fn profiling_disabled_exits_0_before_loading_anything() {
    let nobody = |args: &[&str], env: &[(&str, &str)]| {
        // As an unprivileged user: anything privileged the agent tried (loading eBPF) would fail.
        let mut cmd = if unsafe { libc::geteuid() } == 0 {
            let mut cmd = Command::new("setpriv");
            cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(profiler_bin());
            cmd
        } else {
            Command::new(profiler_bin())
        };
        for var in AGENT_ENV.iter().chain(&["RUST_LOG"]) {
            cmd.env_remove(var);
        }
        cmd.arg("run").args(args).envs(env.iter().copied());
        run(&mut cmd, Duration::from_secs(10))
    };
    let missing = unused_pid().to_string();
    for value in ["false", "0", "no", "FALSE"] {
        let result = nobody(&["--pid", &missing], &[("PROFILING_ENABLED", value)]);
        assert!(result.status.success(), "PROFILING_ENABLED={value}: {:?}", result);
        let expected = format!("profiling is disabled (PROFILING_ENABLED={value})");
        assert!(result.stderr.contains(&expected), "PROFILING_ENABLED={value}: {}", result.stderr);
        assert_eq!(result.stderr.lines().count(), 1, "nothing else happens: {}", result.stderr);
    }
    // The same user without the switch gets as far as the privilege check, which the switch skips.
    let me = std::process::id().to_string();
    let enabled =
        nobody(&["--pid", &me, "--server-url", "https://profiles.example.com"], &[("PROFILING_ENABLED", "true")]);
    if unsafe { libc::geteuid() } == 0 {
        enabled.assert_one_line_error(&["missing capabilities"]);
    }
    let typo = nobody(&["--pid", &me], &[("PROFILING_ENABLED", "flase")]);
    typo.assert_one_line_error(&["PROFILING_ENABLED", "not a boolean"]);
}

#[test]
fn configuration_errors_are_one_line_and_never_show_the_key() {
    let me = std::process::id().to_string();
    // (arguments, environment, what the one-line error must say)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case; 5] = [
        (
            &["--server-url", "http://192.0.2.10:4040"],
            &[("PYROSCOPE_USERNAME", USERNAME), ("PYROSCOPE_API_KEY", API_KEY)],
            &["refusing to send the API key in clear text", "--allow-insecure"],
        ),
        (
            &["--server-url", "https://profiles.example.com"],
            &[("PYROSCOPE_API_KEY", API_KEY)],
            &["PYROSCOPE_USERNAME is not set"],
        ),
        (&[], &[], &["PYROSCOPE_SERVER_URL"]),
        (&["--server-url", "https://x.example", "--tag", "service_name=x"], &[], &["reserved", "--app-name"]),
        (&["--server-url", &format!("https://{USERNAME}:{API_KEY}@x.example")], &[], &["must not contain credentials"]),
    ];
    for (args, env, mentions) in cases {
        let mut cmd = profiler();
        for var in AGENT_ENV {
            cmd.env_remove(var);
        }
        cmd.args(["run", "--pid", &me]).args(args).envs(env.iter().copied());
        let result = run(&mut cmd, Duration::from_secs(10));
        result.assert_one_line_error(mentions);
        assert!(!result.stderr.contains(API_KEY), "the key is in the error: {}", result.stderr);
    }
}
