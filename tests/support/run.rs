//! Running the profiler to its end with a hang guard, what a finished run left (status, output, the summary, the
//! one-line error contract), and the sign that a started profiler is recording (its SIGINT handler).
use std::{
    fs,
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{collect_output, Summary};

/// What a finished profiler run left.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// From start to exit.
    pub wall: Duration,
}

impl Run {
    /// Panics, showing stderr, unless the run exited 0.
    pub fn assert_success(&self) -> &Run {
        assert!(self.status.success(), "the profiler failed ({}); its stderr:\n{}", self.status, self.stderr);
        self
    }

    /// The first line of the summary printed on stderr at the end of a recording.
    pub fn summary(&self) -> Summary {
        Summary::find(&self.stderr)
    }

    /// Checks the contract for a failure: a non-zero exit and exactly one `error: ...` line on stderr mentioning
    /// each of `mentions`, with nothing that looks like a panic or a backtrace.
    pub fn assert_one_line_error(&self, mentions: &[&str]) {
        let shown = format!("status {}, stdout {:?}, stderr {:?}", self.status, self.stdout, self.stderr);
        assert!(!self.status.success(), "expected a failure, got {shown}");
        assert!(self.status.code().is_some(), "expected an exit code, not death by a signal: {shown}");
        let stderr = self.stderr.strip_suffix('\n').unwrap_or(&self.stderr);
        assert!(!stderr.is_empty() && !stderr.contains('\n'), "expected exactly one line on stderr: {shown}");
        assert!(stderr.starts_with("error: "), "expected the line to start with `error: `: {shown}");
        for sign_of_a_crash in ["panicked", "backtrace", "RUST_BACKTRACE", "thread 'main'"] {
            assert!(!stderr.contains(sign_of_a_crash), "the error looks like a crash ({sign_of_a_crash}): {shown}");
        }
        for mention in mentions {
            assert!(stderr.contains(mention), "expected the error to mention `{mention}`: {shown}");
        }
    }
}

/// Runs `cmd` to its end and collects its output. A run that takes longer than `limit` is killed and fails the
/// test: a hung profiler must not hang the suite.
pub fn run(cmd: &mut Command, limit: Duration) -> Run {
    let started = Instant::now();
    let mut child = crate::process::spawn(cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()));
    let (stdout, stderr) = collect_output(&mut child);
    let status = loop {
        if let Some(status) = child.try_wait().expect("polling the profiler") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {limit:?}; it was killed. Its stderr:\n{}",
                stderr.join().expect("stderr reader")
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    let wall = started.elapsed();
    Run { status, stdout: stdout.join().expect("stdout reader"), stderr: stderr.join().expect("stderr reader"), wall }
}
/// Waits until the child has a handler for SIGINT: the profiler installs it once its sampler is loaded, before it
/// adds its targets, so from then on Ctrl-C means "stop and write" rather than "die". Sampling of a target may
/// begin a little later, once the target is prepared and added.
pub fn wait_for_sigint_handler(child: &mut Child, limit: Duration) {
    let started = Instant::now();
    let status = format!("/proc/{}/status", child.id());
    loop {
        if let Some(exit) = child.try_wait().expect("polling the profiler") {
            panic!("the profiler exited ({exit}) before it started recording");
        }
        let caught = fs::read_to_string(&status)
            .ok()
            .and_then(|text| {
                let hex = text.lines().find_map(|line| line.strip_prefix("SigCgt:"))?.trim().to_owned();
                u64::from_str_radix(&hex, 16).ok()
            })
            .unwrap_or(0);
        if caught & (1 << (libc::SIGINT - 1)) != 0 {
            return;
        }
        assert!(started.elapsed() < limit, "the profiler installed no SIGINT handler within {limit:?}");
        thread::sleep(Duration::from_millis(5));
    }
}
