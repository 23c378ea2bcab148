//! Ctrl-C ends a recording early, successfully, and every output is still written.
use std::{
    thread,
    time::{Duration, Instant},
};

use profiler_tests::{
    exclusive_cpu, profiler, require_root, send_signal, start_native_burn, Folded, Recorder, TestDir,
};

#[test]
fn ctrl_c_stops_the_recording_and_writes_outputs() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("ctrl-c");
    let workload = start_native_burn(Duration::from_secs(300));
    let folded_path = dir.join("x.folded");
    let mut recorder =
        Recorder::start(profiler().args(["record", "--pid", &workload.pid().to_string(), "-o"]).arg(&folded_path));
    // SIGINT before the profiler handles it would kill it, which is not what this test is about.
    recorder.wait_until_recording();
    thread::sleep(Duration::from_secs(2));
    let interrupted = Instant::now();
    send_signal(recorder.pid(), libc::SIGINT);
    // Generous: this only guards against a profiler that ignores Ctrl-C.
    let run = recorder.finish(Duration::from_secs(30), "the profiler after Ctrl-C");
    let stopped_in = interrupted.elapsed();
    run.assert_success();

    let folded = Folded::read(&folded_path);
    let summary = run.summary();
    eprintln!(
        "ctrl-c: exited 0 {:.2} s after SIGINT; {} samples in {:.1} s recorded",
        stopped_in.as_secs_f64(),
        folded.total(),
        summary.seconds
    );
    assert!(folded.total() > 0, "the folded file is empty");
    assert_eq!(summary.samples, folded.total(), "the summary and the folded file count different samples");
    assert!(run.stderr.contains(&format!("wrote {}", folded_path.display())), "no `wrote` line:\n{}", run.stderr);
}
