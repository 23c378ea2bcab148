//! The sampling rate: a thread that is always runnable is sampled `--rate` times per second of CPU it gets, and
//! the ring buffer keeps up with it.
use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use profiler_tests::{
    count_where, exclusive_cpu, profiler, require_root, send_signal, steal_time, workloads, Folded, Process, Recorder,
    TestDir,
};

/// Samples per second of the thread's CPU time must be within 3% of `--rate` (100 ± 3 at 100 Hz)...
const RATE_TOLERANCE: f64 = 0.03;
/// ...or within this many standard deviations of the count that preemption makes random, when that is wider.
const RATE_TOLERANCE_SIGMAS: f64 = 3.0;
const WINDOW: Duration = Duration::from_secs(10);

#[test]
fn busy_thread_rate_is_100hz_and_nothing_is_lost() {
    if require_root() {
        assert_rate(100);
    }
}

fn assert_rate(rate_hz: u32) {
    let _cpu = exclusive_cpu();
    let dir = TestDir::new(&format!("rate-{rate_hz}"));
    let workload = Process::start(Command::new(&workloads().one_busy_thread).arg("300"));
    let tid = workload.pid();
    let folded_path = dir.join("x.folded");

    // cpu-clock samples a thread only while it runs, and on a shared machine with few cores a busy thread does not
    // get a whole CPU, so the rate is samples per second of the thread's CPU time, read at both ends of a window
    // that the test marks in the workload itself (see one-busy-thread.c): samples count only if taken in_window.
    let mut recorder = Recorder::start(
        profiler().args(["record", "--pid", &tid.to_string(), "--rate", &rate_hz.to_string(), "-o"]).arg(&folded_path),
    );
    recorder.wait_until_recording();
    // The profiler may still be adding the target; samples in before_window and after_window show that sampling
    // covered the whole window.
    thread::sleep(Duration::from_secs(2));
    let (cpu_start, wall_start, steal_start) = (workload.cpu_time(tid), Instant::now(), steal_time());
    send_signal(tid, libc::SIGUSR1);
    thread::sleep(WINDOW);
    let (cpu, wall) = (workload.cpu_time(tid) - cpu_start, wall_start.elapsed());
    // Interrupts, and on a virtual machine the hypervisor, take time from the thread's CPU that the scheduler does not
    // count as the thread's, while the sampling timer runs by the clock through it. So the thread's time on a CPU
    // as the timer sees it lies between its scheduler time and that plus all such time meanwhile (from every CPU:
    // an upper bound).
    let stolen = steal_time().saturating_sub(steal_start);
    send_signal(tid, libc::SIGUSR1);
    thread::sleep(Duration::from_millis(500));
    send_signal(recorder.pid(), libc::SIGINT);
    let run = recorder.finish(Duration::from_secs(60), "the profiler after Ctrl-C");
    run.assert_success();

    let summary = run.summary();
    let folded = Folded::read(&folded_path);
    let stacks = folded.thread("one-busy-thread");
    let leaf_is = |name: &'static str| move |frames: &[String]| frames.last().is_some_and(|leaf| leaf == name);
    let (before, samples, after) = (
        count_where(&stacks, leaf_is("before_window")),
        count_where(&stacks, leaf_is("in_window")),
        count_where(&stacks, leaf_is("after_window")),
    );
    let seconds = cpu.on_cpu.as_secs_f64();
    let rate = samples as f64 / seconds;
    let rate_if_all_stolen = samples as f64 / (seconds + stolen.as_secs_f64());
    // Each time the thread is put on a CPU, the timer's phase is random: that stretch gets ⌊t/10 ms⌋ samples or one
    // more, a count with variance at most 1/4. Alone on a CPU the thread has few stretches and the count is exact to
    // a sample or two; sharing one, it has hundreds and the count varies by a few percent.
    let sigma_hz = (cpu.timeslices as f64).sqrt() / 2.0 / seconds;
    let expected = f64::from(rate_hz);
    let tolerance = (RATE_TOLERANCE * expected).max(RATE_TOLERANCE_SIGMAS * sigma_hz);
    eprintln!(
        "rate {rate_hz}: {samples} samples in_window over {seconds:.2} s of the thread's CPU time = {rate:.1} Hz \
         (expected {expected} ± {tolerance:.1}); the thread had {:.0}% of a CPU in {} timeslices during the {:.2} s \
         window; {:.1} samples per wall-clock second; {before} samples before the window and {after} after; {} lost; \
         {:.2} s in interrupts or stolen by the hypervisor",
        100.0 * seconds / wall.as_secs_f64(),
        cpu.timeslices,
        wall.as_secs_f64(),
        samples as f64 / wall.as_secs_f64(),
        summary.lost,
        stolen.as_secs_f64()
    );
    assert_eq!(summary.samples, folded.total(), "the summary and the folded file count different samples");
    assert!(before > 0, "no sample before the window: the profiler had not started sampling when the window opened");
    assert!(after > 0, "no sample after the window: the profiler had stopped sampling before the window closed");
    assert_eq!(summary.lost, 0, "samples were lost:\n{}", run.stderr);
    assert!(run.stderr.contains(", 0 lost;"), "the summary does not say `0 lost`:\n{}", run.stderr);
    assert_eq!(summary.threads, 1, "one thread was sampled:\n{}", run.stderr);
    assert_eq!(
        folded.threads(),
        [("one-busy-thread".to_owned(), folded.total())],
        "every sample is of the one thread, named after the process"
    );
    assert!(
        rate_if_all_stolen - tolerance <= expected && expected <= rate + tolerance,
        "{rate:.1} samples per CPU-second ({rate_if_all_stolen:.1} counting the {:.2} s of interrupts and steal), expected {expected} ± \
         {tolerance:.1} ({samples} samples, {seconds:.2} s of CPU in {} timeslices)",
        stolen.as_secs_f64(),
        cpu.timeslices
    );
}
