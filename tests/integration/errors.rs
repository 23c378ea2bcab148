//! What the user sees when a recording cannot be made, or its target goes away: failures are one `error: ...`
//! line and a non-zero exit, never a panic; a target that exits ends the recording normally.
use std::{
    fs,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use profiler_tests::{
    exclusive_cpu, profiler, profiler_bin, require_root, run, start_native_burn, unused_pid, Folded, Recorder, TestDir,
};

/// Generous: none of these should record for long.
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn a_pid_that_does_not_exist_is_one_error_line() {
    if !require_root() {
        return;
    }
    let dir = TestDir::new("missing-pid");
    let pid = unused_pid().to_string();
    let output = dir.join("x.svg");
    run(profiler().args(["record", "--pid", &pid, "--duration", "1s", "-o"]).arg(&output), LIMIT)
        .assert_one_line_error(&[&pid]);
    assert!(!output.exists(), "a failed recording wrote {}", output.display());
}

#[test]
fn a_name_that_matches_nothing_is_one_error_line() {
    if !require_root() {
        return;
    }
    let dir = TestDir::new("missing-name");
    // At most 15 bytes: process names are compared as the kernel stores them.
    let name = "no-such-proc-7q";
    run(profiler().args(["record", "--name", name, "--duration", "1s", "-o"]).arg(dir.join("x.svg")), LIMIT)
        .assert_one_line_error(&[name]);
}

#[test]
fn an_unwritable_output_is_one_error_line() {
    if !require_root() {
        return;
    }
    let me = std::process::id().to_string();
    // A directory that does not exist: the error names it.
    run(profiler().args(["record", "--pid", &me, "--duration", "1s", "-o", "/nonexistent-dir/x.svg"]), LIMIT)
        .assert_one_line_error(&["/nonexistent-dir"]);

    // An output name that is an existing directory.
    let dir = TestDir::new("unwritable");
    let taken = dir.join("x.svg");
    fs::create_dir(&taken).expect("creating a directory named x.svg");
    run(profiler().args(["record", "--pid", &me, "--duration", "1s", "-o"]).arg(&taken), LIMIT)
        .assert_one_line_error(&[&taken.display().to_string()]);
}

#[test]
fn an_unknown_output_extension_is_one_error_line() {
    // Checked while reading the command line, before anything needs root.
    let dir = TestDir::new("extension");
    let output = dir.join("x.json");
    let me = std::process::id().to_string();
    run(profiler().args(["record", "--pid", &me, "--duration", "1s", "-o"]).arg(&output), LIMIT)
        .assert_one_line_error(&[&output.display().to_string(), ".svg", ".pb.gz", ".folded"]);
    assert!(!output.exists(), "{} was written", output.display());
}

#[test]
fn without_privileges_the_error_names_the_missing_capabilities() {
    let dir = TestDir::new("not-root");
    let me = std::process::id().to_string();
    let args = ["record", "--pid", &me, "--duration", "1s", "-o"];
    // SAFETY: geteuid has no preconditions and cannot fail.
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        // As `nobody`, with no capabilities: changing from uid 0 to another clears them.
        let mut setpriv = Command::new("setpriv");
        setpriv.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(profiler_bin());
        setpriv
    } else {
        profiler()
    };
    cmd.env_remove("RUST_LOG").env_remove("RUST_BACKTRACE").args(args).arg(dir.join("x.svg"));
    run(&mut cmd, LIMIT).assert_one_line_error(&["CAP_BPF", "CAP_PERFMON"]);
}

#[test]
fn recording_ends_by_itself_when_the_pid_exits() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("target-exits");
    let mut workload = start_native_burn(Duration::from_secs(300));
    let outputs = ["x.folded", "x.pb.gz", "x.svg"].map(|name| dir.join(name));
    let mut record = profiler();
    record.args(["record", "--pid", &workload.pid().to_string()]);
    for output in &outputs {
        record.arg("-o").arg(output);
    }
    let mut recorder = Recorder::start(&mut record);
    // The workload goes away 2 s into the recording, whatever the machine's load made of the profiler's start.
    recorder.wait_until_recording();
    thread::sleep(Duration::from_secs(2));
    workload.child().kill().expect("killing the workload");
    workload.child().wait().expect("reaping the workload");
    let exited = Instant::now();
    let result = recorder.finish(LIMIT, "the profiler after its target exited");
    let ended_after = exited.elapsed();
    result.assert_success();
    for output in &outputs {
        let size = fs::metadata(output).map(|m| m.len()).unwrap_or(0);
        assert!(size > 0, "{} is missing or empty", output.display());
    }
    let folded = Folded::read(&outputs[0]);
    assert!(folded.total() > 0, "no samples");
    assert_eq!(result.summary().samples, folded.total());
    eprintln!(
        "target exits: the profiler ended {:.2} s after its target, with {} samples",
        ended_after.as_secs_f64(),
        folded.total()
    );
}
