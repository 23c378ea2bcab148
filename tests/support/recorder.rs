//! A `profiler record` started in the background, for tests that act while it records (Ctrl-C, a target that exits
//! or crashes): its output captured, a wait for the moment it records, a bounded wait for its end; killed if the
//! test ends first.
use std::{
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{collect_output, wait_for_sigint_handler, Process, Run};

/// How long after the profiler installs its SIGINT handler [`Recorder::start_recording`] waits before it returns
/// (the crash tests then let a workload crash): the handler comes with the session, just before the targets are
/// added (reading their maps, finding the Python interpreter), and there is no outward sign of that being done.
/// (Measured with strace: the TARGETS map is updated about 10 ms after the handler for a Python target; this leaves
/// a wide margin on a loaded machine.)
pub const SETTLE: Duration = Duration::from_millis(1000);

/// A running `profiler record`, output captured, killed by its guard on every path out of the test.
pub struct Recorder {
    process: Process,
    output: Option<(thread::JoinHandle<String>, thread::JoinHandle<String>)>,
    started: Instant,
}

impl Recorder {
    /// Starts `cmd` (a `profiler record` command) and returns at once; see [`Recorder::wait_until_recording`].
    pub fn start(cmd: &mut Command) -> Recorder {
        let started = Instant::now();
        let mut process = Process::start(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()));
        let output = Some(collect_output(process.child()));
        Recorder { process, output, started }
    }

    /// Starts `cmd` and returns once it is recording and its targets are added: [`Recorder::wait_until_recording`],
    /// then [`SETTLE`].
    pub fn start_recording(cmd: &mut Command) -> Recorder {
        let mut recorder = Recorder::start(cmd);
        recorder.wait_until_recording();
        thread::sleep(SETTLE);
        recorder
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Returns once the profiler has loaded its sampler and handles Ctrl-C (see [`wait_for_sigint_handler`]). When
    /// it does not within a minute, the test fails with the profiler's stderr shown.
    pub fn wait_until_recording(&mut self) {
        let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for_sigint_handler(self.process.child(), Duration::from_secs(60))
        }));
        if let Err(panic) = waited {
            let _ = self.process.child().kill();
            let _ = self.process.child().wait();
            eprintln!("the profiler's stderr:\n{}", self.collect().1);
            std::panic::resume_unwind(panic);
        }
    }

    /// Waits for the profiler to exit, for at most `limit` (then it is killed and the test fails, showing its
    /// stderr), and collects what it printed. `what` names it in the failure.
    pub fn finish(mut self, limit: Duration, what: &str) -> Run {
        let waiting = Instant::now();
        let status = loop {
            if let Some(status) = self.process.child().try_wait().expect("polling the profiler") {
                break status;
            }
            if waiting.elapsed() > limit {
                let _ = self.process.child().kill();
                let _ = self.process.child().wait();
                panic!("{what} did not exit within {limit:?}; it was killed. Its stderr:\n{}", self.collect().1);
            }
            thread::sleep(Duration::from_millis(20));
        };
        let (stdout, stderr) = self.collect();
        Run { status, stdout, stderr, wall: self.started.elapsed() }
    }

    /// Its stdout and stderr, once it has exited.
    fn collect(&mut self) -> (String, String) {
        let (stdout, stderr) = self.output.take().expect("output is collected once");
        (stdout.join().expect("stdout reader"), stderr.join().expect("stderr reader"))
    }
}
