//! Crash signatures and grouping (issue 16): many crashes of a few kinds become a few groups in `profiler crashes`,
//! each counted whole — reports and the ones the per-signature budget suppressed — and `run` labels the crash
//! stack it uploads with the crash's signature. Declared in crash.rs, so `crash::` selects these tests too.
use std::{collections::BTreeMap, fs, path::Path, thread, time::Duration};

use profiler_tests::{
    agent::AGENT_ENV,
    crash::{python_workload, stage_script, Workload},
    crash_report::{file_names, read_reports, Field as _},
    exclusive_cpu, profiler,
    receiver::{decode_push, Expect, Receiver},
    require_root, run, send_signal, Recorder, TestDir,
};
use serde_json::Value;

/// The workload that crashes one of two ways (tests/workloads/crash/two_kinds.py).
const SCRIPT: &str = "two_kinds.py";
/// Runs of each kind.
const RUNS_PER_KIND: usize = 10;
/// Full reports one signature gets per minute (crash/budget.rs `PER_SIGNATURE_PER_MINUTE`); the rest of a minute's
/// crashes of that signature are in the index only.
const REPORTS_PER_SIGNATURE_PER_MINUTE: u64 = 3;

/// The two kinds: the argument, the signal, and the title their signature must have.
const KINDS: [(&str, i32, &str); 2] = [
    ("segv", libc::SIGSEGV, "SIGSEGV in crash_here ← do_crash ← null_deref (two_kinds.py)"),
    ("fpe", libc::SIGFPE, "SIGFPE in divide ← zero_divide (two_kinds.py)"),
];

/// `profiler crashes --dir DIR [ARGS]`: its stdout, after it succeeded.
fn crashes_command(dir: &Path, args: &[&str]) -> String {
    let mut cmd = profiler();
    cmd.arg("crashes").arg("--dir").arg(dir).args(args);
    let done = run(&mut cmd, Duration::from_secs(60));
    done.assert_success();
    done.stdout
}

/// 20 Python processes, 10 crashing with SIGSEGV in crash_here ← do_crash ← null_deref and 10 with SIGFPE in
/// divide ← zero_divide, all started before and followed by `record --match-cmdline`, crashing a few at a time in
/// alternation: `profiler crashes --json` lists exactly two signatures, with the titles above, 10 crashes each —
/// 3 reports (the per-signature budget of a minute) and 7 suppressed — and the report files in the directory are
/// exactly those 6. The text listing and a report by signature prefix say the same.
#[test]
fn twenty_crashes_of_two_kinds_make_two_groups() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("crash-groups");
    let script = stage_script(dir.path(), SCRIPT);
    let crash_dir = dir.join("crashes");
    // In every workload's command line, and (as a pattern) in no other process's, the profiler's own included.
    let token = format!("crash-groups-{}", std::process::id());
    let mut workloads = Vec::new();
    for run_index in 0..RUNS_PER_KIND * KINDS.len() {
        let (kind, signal, _) = KINDS[run_index % KINDS.len()];
        let work = dir.join(format!("w{run_index}"));
        fs::create_dir(&work).expect("creating a workload's directory");
        let mut workload = Workload::start(python_workload(&script, &work).arg(kind).arg(&token));
        workload.wait_ready(&work);
        workloads.push((workload, work, signal));
    }
    let pattern = format!("two_kinds[.]py .*{token}");
    let mut record = profiler();
    record.args(["record", "--match-cmdline", &pattern, "--duration", "300s", "--crash-dir"]).arg(&crash_dir);
    record.arg("-o").arg(dir.join("x.folded"));
    let recorder = Recorder::start_recording(&mut record);
    // Two at a time (one of each kind), so the crash ring buffer never holds many records at once.
    for pair in workloads.chunks(KINDS.len()) {
        for (_, work, _) in pair {
            fs::write(work.join("go"), "").expect("writing a go file");
        }
        thread::sleep(Duration::from_millis(200));
    }
    for (workload, _, signal) in &mut workloads {
        workload.wait_exit(Duration::from_secs(60)).assert_killed_by(*signal);
    }
    // Every exit is read and every held crash handed out (the pipeline waits up to 2 s for an exit).
    thread::sleep(Duration::from_secs(3));
    send_signal(recorder.pid(), libc::SIGINT);
    let recorded = recorder.finish(Duration::from_secs(60), "the profiler after Ctrl-C");
    eprintln!("the profiler's stderr:\n{}", recorded.stderr);
    recorded.assert_success();
    let listing = file_names(&crash_dir);
    let shown = format!("the crash directory holds {listing:?}; the profiler's stderr:\n{}", recorded.stderr);

    let json: Value = serde_json::from_str(&crashes_command(&crash_dir, &["--json"]))
        .unwrap_or_else(|err| panic!("`profiler crashes --json` printed no JSON: {err}; {shown}"));
    let groups = json.field("groups").array();
    let summary: Vec<String> = groups
        .iter()
        .map(|g| format!("{} {}: {}", g.field("signature").str(), g.field("title").str(), g.field("count").i64()))
        .collect();
    let shown = format!("the groups: {summary:#?}; {shown}");
    assert_eq!(groups.len(), KINDS.len(), "expected exactly one group per kind; {shown}");
    assert_eq!(json.field("crashes").i64(), (RUNS_PER_KIND * KINDS.len()) as i64, "crashes counted; {shown}");
    let by_title: BTreeMap<&str, &Value> = groups.iter().map(|g| (g.field("title").str(), g)).collect();
    let mut reports_written = 0;
    for (_, _, title) in KINDS {
        let group = by_title.get(title).unwrap_or_else(|| panic!("no group titled `{title}`; {shown}"));
        let (count, reports, suppressed) =
            (group.field("count").i64(), group.field("reports").i64(), group.field("suppressed").i64());
        assert_eq!(count, RUNS_PER_KIND as i64, "the crashes of `{title}`; {shown}");
        // The crashes span a few seconds: one minute of the per-signature budget.
        assert_eq!(reports, REPORTS_PER_SIGNATURE_PER_MINUTE as i64, "the reports of `{title}`; {shown}");
        assert_eq!(reports + suppressed, count, "every crash of `{title}` is a report or suppressed; {shown}");
        assert_eq!(group.field("processes").array().len(), 1, "processes of `{title}` (python3); {shown}");
        let signature = group.field("signature").str();
        assert!(
            signature.len() == 16 && signature.bytes().all(|b| b.is_ascii_hexdigit()),
            "the signature `{signature}` is not 16 hex digits; {shown}"
        );
        reports_written += reports as usize;

        // The group's newest report, by a prefix of its signature.
        let text = crashes_command(&crash_dir, &[&signature[..8]]);
        assert!(text.starts_with("crash: SIG"), "`profiler crashes {}` printed no report:\n{text}", &signature[..8]);
        assert!(text.contains(&format!("signature: {signature} {title}\n")), "the report's signature line:\n{text}");
    }
    let reports = read_reports(&crash_dir);
    assert_eq!(reports.len(), reports_written, "report files against the groups' report counts; {shown}");
    for report in &reports {
        let title = report.json.field("signature_title").str();
        assert!(by_title.contains_key(title), "a report with signature `{title}` outside the groups; {shown}");
    }
    let suppressed_lines = recorded.stderr.matches("suppressed, same signature").count();
    let expected_suppressed = RUNS_PER_KIND * KINDS.len() - reports_written;
    assert!(
        suppressed_lines >= expected_suppressed,
        "the profiler said `suppressed, same signature` {suppressed_lines} times, for {expected_suppressed} crashes; \
         {shown}"
    );

    let text = crashes_command(&crash_dir, &[]);
    assert!(text.starts_with("20 crashes in "), "the text listing:\n{text}");
    for (_, _, title) in KINDS {
        assert!(text.contains(title), "the text listing does not name `{title}`:\n{text}");
    }
    assert!(text.contains("10 crashes (3 reports, 7 suppressed)"), "the text listing's counts:\n{text}");
}

/// `run --pid` of a workload that divides by zero in C: the crash stack it uploads carries `crash=SIGFPE` and
/// `crash_signature`, the same id as the report's `signature`, and `profiler crashes` lists that signature.
#[test]
fn run_labels_the_crash_upload_with_its_signature() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("crash-signature-upload");
    let script = stage_script(dir.path(), SCRIPT);
    let crash_dir = dir.join("crashes");
    let receiver = Receiver::start();
    let mut workload = Workload::start(python_workload(&script, dir.path()).arg("fpe"));
    let pid = workload.pid();
    workload.wait_ready(dir.path());

    let mut agent = profiler();
    for var in AGENT_ENV {
        agent.env_remove(var);
    }
    agent
        .args(["run", "--pid", &pid.to_string(), "--server-url", &receiver.url(), "--upload-interval", "60s"])
        .arg("--crash-dir")
        .arg(&crash_dir);
    let agent = Recorder::start_recording(&mut agent);
    fs::write(dir.join("go"), "").expect("writing the go file");
    workload.wait_exit(Duration::from_secs(60)).assert_killed_by(libc::SIGFPE);
    let ran = agent.finish(Duration::from_secs(60), "the agent after its target crashed");
    eprintln!("the agent's stderr:\n{}", ran.stderr);
    ran.assert_success();
    receiver.assert_clean();

    let reports = read_reports(&crash_dir);
    assert_eq!(
        reports.len(),
        1,
        "expected one report: {:?}; the agent's stderr:\n{}",
        file_names(&crash_dir),
        ran.stderr
    );
    let signature = reports[0].json.field("signature").str().to_owned();
    let expect = Expect { authorization: None, tenant: None };
    let pushed: Vec<BTreeMap<String, String>> =
        receiver.requests().iter().map(|request| decode_push(request, &expect).labels).collect();
    let shown = format!("the receiver got profiles labelled {pushed:#?}; the agent's stderr:\n{}", ran.stderr);
    let crash_labels: Vec<&BTreeMap<String, String>> = pushed.iter().filter(|l| l.contains_key("crash")).collect();
    let [labels] = crash_labels[..] else { panic!("expected exactly one profile labelled crash=...; {shown}") };
    assert_eq!(labels["crash"], "SIGFPE", "the crash label; {shown}");
    assert_eq!(labels.get("crash_signature"), Some(&signature), "the crash_signature label; {shown}");
    assert!(
        pushed.iter().filter(|l| !l.contains_key("crash")).all(|l| !l.contains_key("crash_signature")),
        "a window profile carries crash_signature; {shown}"
    );
    assert!(
        ran.stderr
            .contains(&format!("crash signature {signature} (SIGFPE in divide ← zero_divide (two_kinds.py)): 1 crash")),
        "the agent did not log the crash's signature and count; {shown}"
    );
    let listed = crashes_command(&crash_dir, &[]);
    assert!(listed.contains(&format!("{signature}  1 crash\n")), "`profiler crashes` lists:\n{listed}");
}
