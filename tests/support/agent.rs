//! A `profiler run` agent in the background for the upload, deployment, hostile-input and soak tests: started
//! through an optional wrapper (setpriv, to run it the way a service manager would), its stderr collected live (the
//! status lines are read while it runs), its command line, capabilities and resource use read from /proc while it
//! runs, stopped by a signal and its exit checked, killed if the test ends first.
use std::{
    fs,
    io::{BufRead as _, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use crate::{profiler, profiler_bin, send_signal, wait_for_sigint_handler, wait_with_limit};

/// The settings an operator's environment may hold: none may leak into a test from the outside.
pub const AGENT_ENV: [&str; 5] =
    ["PYROSCOPE_SERVER_URL", "PYROSCOPE_USERNAME", "PYROSCOPE_API_KEY", "PROFILING_ENABLED", "ENVIRONMENT"];

/// A running `profiler run`; killed on drop, its stderr shown when the test fails.
pub struct Agent {
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<thread::JoinHandle<()>>,
}

/// How an agent stopped by [`Agent::stop`] ended; its stderr is shown when the test fails after it.
pub struct Stopped {
    pub status: ExitStatus,
    pub stderr: String,
    /// From the signal to the exit.
    pub took: Duration,
}

impl Agent {
    /// Starts `wrapper… profiler run args…` (no wrapper when `wrapper` is empty) and returns once the agent samples:
    /// it has logged its capabilities after attaching its programs, and its SIGINT handler is installed (right
    /// after its sampler is loaded).
    pub fn start(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(profiler_bin());
                cmd.env_remove("RUST_LOG").env_remove("RUST_BACKTRACE").current_dir(std::env::temp_dir());
                cmd
            }
            None => profiler(),
        };
        for var in AGENT_ENV {
            cmd.env_remove(var);
        }
        cmd.arg("run")
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut agent = Agent::spawn(cmd);
        wait_for_sigint_handler(&mut agent.child, Duration::from_secs(60));
        agent
    }

    /// Starts an agent through a command that is not the agent's own process (a container runtime running it,
    /// `crun run …`) and returns once it has logged its capabilities after attaching its programs. Its stderr must
    /// reach the command's.
    pub fn start_command(mut cmd: Command) -> Agent {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        Agent::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> Agent {
        let mut child = crate::process::spawn(&mut cmd);
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr is piped");
        let reader = {
            let stderr = stderr.clone();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut text = stderr.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            })
        };
        let mut agent = Agent { child, stderr, reader: Some(reader) };
        agent.wait_for_log("capabilities after attaching", Duration::from_secs(60));
        agent
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The agent's command line as any user can read it.
    pub fn cmdline(&self) -> String {
        let raw = fs::read(format!("/proc/{}/cmdline", self.pid())).expect("reading the agent's cmdline");
        String::from_utf8_lossy(&raw).replace('\0', " ")
    }

    /// Waits until the log has a line containing `text`; fails if the agent exits first.
    pub fn wait_for_log(&mut self, text: &str, limit: Duration) {
        let started = Instant::now();
        while !self.stderr().contains(text) {
            if let Some(status) = self.child.try_wait().expect("polling the agent") {
                thread::sleep(Duration::from_millis(100));
                panic!("the agent exited ({status}) before logging `{text}`; stderr:\n{}", self.stderr());
            }
            assert!(started.elapsed() < limit, "no `{text}` in the agent's log within {limit:?}:\n{}", self.stderr());
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fails if the agent has exited.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().expect("polling the agent") {
            panic!("the agent died ({status}); stderr:\n{}", self.stderr());
        }
    }

    /// Each thread's `(name, CapPrm, CapEff, CapBnd, CapAmb)`.
    pub fn thread_capabilities(&self) -> Vec<(String, [u64; 4])> {
        let tasks = fs::read_dir(format!("/proc/{}/task", self.pid())).expect("listing the agent's threads");
        tasks
            .flatten()
            .filter_map(|task| fs::read_to_string(task.path().join("status")).ok())
            .map(|status| {
                let field = |name: &str| {
                    let hex = status.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_else(|| panic!("no {name}"));
                    u64::from_str_radix(hex.trim(), 16).expect("a hex capability set")
                };
                let name = status.lines().find_map(|l| l.strip_prefix("Name:")).unwrap_or("").trim().to_owned();
                (name, [field("CapPrm:"), field("CapEff:"), field("CapBnd:"), field("CapAmb:")])
            })
            .collect()
    }

    /// (resident set in KiB, user + system CPU time in clock ticks) from /proc/PID/status and stat.
    pub fn usage(&self) -> (u64, u64) {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("the agent's status");
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("the agent's stat");
        // Fields after the parenthesised command name, which may hold spaces: utime and stime are the 14th and
        // 15th fields of the line, the 12th and 13th after it.
        let after = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        (rss, ticks)
    }

    /// Sends `signal` and waits (at most 20 s) for the exit.
    pub fn stop(self, signal: libc::c_int) -> Stopped {
        let pid = self.pid();
        self.stop_with(|| send_signal(pid, signal))
    }

    /// Stops the agent with `signal` (a function that sends it some way, e.g. through a container runtime) and
    /// waits (at most 20 s) for the exit of the command it was started with.
    pub fn stop_with(mut self, signal: impl FnOnce()) -> Stopped {
        let signalled = Instant::now();
        signal();
        let status = wait_with_limit(&mut self.child, Duration::from_secs(20), "the agent after the signal");
        let took = signalled.elapsed();
        if let Some(reader) = self.reader.take() {
            reader.join().expect("stderr reader");
        }
        Stopped { status, stderr: self.stderr(), took }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("the agent's stderr:\n{}", self.stderr());
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("the agent's stderr:\n{}", self.stderr);
        }
    }
}

impl Stopped {
    /// Exit 0 and nothing in the log that looks like a crash.
    pub fn assert_clean_exit(&self) {
        assert!(self.status.success(), "the agent failed ({}); its stderr:\n{}", self.status, self.stderr);
        for sign_of_a_crash in ["panicked", "RUST_BACKTRACE", "SIGSEGV in profiler"] {
            assert!(!self.stderr.contains(sign_of_a_crash), "the agent crashed:\n{}", self.stderr);
        }
    }

    /// Panics unless the agent exited within `limit` of the signal.
    pub fn assert_stopped_within(&self, limit: Duration) {
        assert!(
            self.took <= limit,
            "the agent took {:?} to stop (limit {limit:?}); stderr:\n{}",
            self.took,
            self.stderr
        );
    }

    /// The final "stopped: N windows sent, R retries, D dropped, J rejected" numbers.
    pub fn final_counts(&self) -> [u64; 4] {
        let line = self.stderr.lines().rev().find(|line| line.contains("stopped: ")).unwrap_or_else(|| {
            panic!("no final `stopped:` line in:\n{}", self.stderr);
        });
        let n = numbers_before(line, &["windows sent", "retries", "dropped", "rejected"]);
        [n[0], n[1], n[2], n[3]]
    }
}

/// For each `label`, the integer just before its first occurrence in `line`.
pub fn numbers_before(line: &str, labels: &[&str]) -> Vec<u64> {
    labels
        .iter()
        .map(|label| {
            let at = line.find(&format!(" {label}")).unwrap_or_else(|| panic!("no `{label}` in {line:?}"));
            line[..at]
                .rsplit(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no number before `{label}` in {line:?}"))
        })
        .collect()
}

/// Capability numbers (linux/capability.h) of the names systemd units and Kubernetes use.
pub fn capability_bit(name: &str) -> u64 {
    let name = name.trim().trim_start_matches("CAP_").to_ascii_uppercase();
    let number = match name.as_str() {
        "DAC_OVERRIDE" => 1,
        "SETPCAP" => 8,
        "SYS_PTRACE" => 19,
        "SYS_ADMIN" => 21,
        "SYSLOG" => 34,
        "PERFMON" => 38,
        "BPF" => 39,
        "CHECKPOINT_RESTORE" => 40,
        other => panic!("capability {other} is not one the profiler uses"),
    };
    1 << number
}

/// What [`push_profiles`] received: each pushed profile (decoded strictly, with the test credentials checked) and
/// the agent's stderr.
pub struct PushedProfiles {
    pub pushed: Vec<crate::receiver::Pushed>,
    pub stderr: String,
}

impl PushedProfiles {
    /// The pushed profiles whose `__name__` is `name`, in the order they came.
    pub fn named(&self, name: &str) -> Vec<&profiler::pprof::proto::Profile> {
        self.pushed.iter().filter(|p| p.labels["__name__"] == name).map(|p| &p.profile).collect()
    }
}

/// `profiler run --pid PID --profile KINDS` against a loopback receiver, with test credentials and a 3 s upload
/// interval, until `requests` pushes came; stopped with SIGTERM, which must end it cleanly.
pub fn push_profiles(pid: u32, kinds: &str, requests: usize) -> PushedProfiles {
    use crate::receiver::{basic_auth, decode_push, Expect, Receiver};
    let receiver = Receiver::start();
    let (pid, url) = (pid.to_string(), receiver.url());
    let env = [("PYROSCOPE_USERNAME", "918273"), ("PYROSCOPE_API_KEY", "glc_test-key")];
    let agent =
        Agent::start(&[], &["--pid", &pid, "--server-url", &url, "--upload-interval", "3s", "--profile", kinds], &env);
    receiver.wait_for("the pushes", Duration::from_secs(30), |pushed| pushed.len() >= requests);
    let stopped = agent.stop(libc::SIGTERM);
    assert!(stopped.status.success(), "the agent failed: {}", stopped.stderr);
    receiver.assert_clean();
    let expect = Expect { authorization: Some(basic_auth("918273", "glc_test-key")), tenant: None };
    let pushed = receiver.requests().iter().map(|request| decode_push(request, &expect)).collect();
    PushedProfiles { pushed, stderr: stopped.stderr.clone() }
}
