//! Processes a test starts: a guard that kills and reaps them, their threads and CPU time read from /proc,
//! their output collected without blocking, a bounded wait, signals, and a PID nobody has.
use std::{
    collections::BTreeSet,
    fs,
    io::Read,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

/// A process started by a test, killed (SIGKILL) and reaped when the guard goes, on every path out of the test.
pub struct Process {
    child: Child,
}

/// Starts `cmd`, panicking with the command line when it cannot. A start refused with ETXTBSY ("Text file busy") is
/// tried again for a few seconds: tests copy executables (renamed launchers, native-burn under other names) while
/// other tests fork, and a child forked in the instant the copy's write descriptor is open keeps it until that
/// child execs, which makes the kernel refuse to exec the copy meanwhile.
pub fn spawn(cmd: &mut Command) -> Child {
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        match cmd.spawn() {
            Err(err) if err.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < give_up => {
                thread::sleep(Duration::from_millis(50));
            }
            started => return started.unwrap_or_else(|err| panic!("could not start {cmd:?}: {err}")),
        }
    }
}

impl Process {
    pub fn start(cmd: &mut Command) -> Process {
        Process { child: spawn(cmd.stdin(Stdio::null())) }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The thread names of the process (`/proc/PID/task/*/comm`) by thread id.
    pub fn threads(&self) -> Vec<(u32, String)> {
        let tasks = format!("/proc/{}/task", self.pid());
        let mut threads: Vec<(u32, String)> = fs::read_dir(&tasks)
            .unwrap_or_else(|err| panic!("reading {tasks}: {err}"))
            .filter_map(|entry| {
                let tid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
                let comm = fs::read_to_string(format!("{tasks}/{tid}/comm")).ok()?;
                Some((tid, comm.trim_end().to_owned()))
            })
            .collect();
        threads.sort();
        threads
    }

    /// Waits until the process has threads with all these names (a workload names its threads after creating
    /// them), so a recording never starts while they still carry the process's name.
    pub fn wait_for_threads(&mut self, names: &[&str]) {
        let wanted: BTreeSet<&str> = names.iter().copied().collect();
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("polling the workload") {
                panic!("the workload exited before it was profiled ({status})");
            }
            let threads = self.threads();
            let have: BTreeSet<&str> = threads.iter().map(|(_, name)| name.as_str()).collect();
            if wanted.is_subset(&have) {
                return;
            }
            assert!(Instant::now() < give_up, "the workload's threads are {threads:?}, never all of {names:?}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The scheduler's account of thread `tid` of the process so far (`/proc/PID/task/TID/schedstat`).
    pub fn cpu_time(&self, tid: u32) -> CpuTime {
        let path = format!("/proc/{}/task/{tid}/schedstat", self.pid());
        let text = fs::read_to_string(&path).unwrap_or_else(|err| panic!("reading {path}: {err}"));
        let fields: Vec<u64> = text.split_whitespace().filter_map(|field| field.parse().ok()).collect();
        let [on_cpu_ns, _waiting_ns, timeslices] = fields[..] else { panic!("{path} reads `{text}`") };
        CpuTime { on_cpu: Duration::from_nanos(on_cpu_ns), timeslices }
    }

    /// The CPU time all the process's live threads have had so far (the sum of their `schedstat`s): what a
    /// sampler at a given frequency can have seen of it, whatever else the machine was running.
    pub fn process_cpu(&self) -> Duration {
        let tasks = format!("/proc/{}/task", self.pid());
        let Ok(entries) = fs::read_dir(&tasks) else { return Duration::ZERO };
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|tid| fs::read_to_string(format!("{tasks}/{tid}/schedstat")).ok())
            .filter_map(|text| text.split_whitespace().next()?.parse::<u64>().ok())
            .map(Duration::from_nanos)
            .sum()
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

/// How much CPU a thread had, and in how many stretches.
#[derive(Clone, Copy, Debug)]
pub struct CpuTime {
    pub on_cpu: Duration,
    /// Times the thread was put on a CPU.
    pub timeslices: u64,
}

impl std::ops::Sub for CpuTime {
    type Output = CpuTime;

    fn sub(self, earlier: CpuTime) -> CpuTime {
        CpuTime { on_cpu: self.on_cpu - earlier.on_cpu, timeslices: self.timeslices - earlier.timeslices }
    }
}

/// A target's samples against the CPU it had while the profiler ran at its default 100 Hz: at least 30% of what
/// that CPU time allows (the rest covers the profiler's start-up, when the target runs unsampled, which takes
/// longer on a loaded machine) and at least 30, so the test's shares mean something. A fixed floor would fail
/// whenever the machine is busy, and pass a profiler that lost most samples on an idle one.
pub fn assert_sampled(total: u64, cpu: Duration, stderr: &str) {
    let possible = cpu.as_secs_f64() * 100.0;
    eprintln!("{total} samples for {:.2} s of the target's CPU ({possible:.0} possible)", cpu.as_secs_f64());
    assert!(
        total as f64 >= 0.3 * possible && total >= 30,
        "only {total} samples for {:.2} s of the target's CPU:\n{stderr}",
        cpu.as_secs_f64()
    );
}

/// CPU time so far that the scheduler gives to no task, summed over the CPUs: interrupts, soft interrupts and what
/// the hypervisor took from this machine's virtual CPUs (`irq`, `softirq`, `steal` in `/proc/stat`). A busy
/// thread's scheduler time leaves it out, while a timer that fires by the clock does not.
pub fn steal_time() -> Duration {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .find(|line| line.starts_with("cpu "))
        .map(|line| line.split_whitespace().skip(6).take(3).filter_map(|field| field.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a constant of the C library.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks.saturating_mul(1000) / hz)
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
/// Reads a child's piped stdout and stderr on their own threads, so a chatty child never blocks on a full pipe.
pub fn collect_output(child: &mut Child) -> (thread::JoinHandle<String>, thread::JoinHandle<String>) {
    fn reader(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    }
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    (reader(stdout), reader(stderr))
}

/// Waits for a child for at most `limit`; kills it and fails the test after that.
pub fn wait_with_limit(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("polling a child") {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {limit:?}; it was killed");
        }
        thread::sleep(Duration::from_millis(10));
    }
}
/// Sends `signal` to `pid`.
pub fn send_signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: kill has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}): {}", std::io::Error::last_os_error());
}

/// A PID that no process has right now.
pub fn unused_pid() -> u32 {
    let max: u32 =
        fs::read_to_string("/proc/sys/kernel/pid_max").ok().and_then(|text| text.trim().parse().ok()).unwrap_or(32768);
    (2..max).rev().find(|pid| !Path::new(&format!("/proc/{pid}")).exists()).expect("some PID is unused")
}
