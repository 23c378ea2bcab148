//! Helpers for the lifecycle tests (tests/integration/lifecycle.rs): the workloads of tests/workloads/lifecycle
//! (built once per run), the demo app under uvicorn with its load generator, a watch on the profiler's memory, and
//! readers for what the workloads and the profiler wrote (per-PID sample counts, the `key value` files the
//! workloads leave).
use std::{
    collections::BTreeMap,
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, OnceLock,
    },
    thread,
    time::{Duration, Instant},
};

use crate::{compile_c, python::PprofSample, scratch_root, workspace_root, Process};

/// The Python the lifecycle workloads run under: Debian's 3.11 (multiprocessing's default start method there is
/// fork).
pub const PYTHON: &str = "/usr/bin/python3";

/// The sources of the lifecycle workloads.
pub fn lifecycle_sources() -> PathBuf {
    workspace_root().join("tests/workloads/lifecycle")
}

/// The C lifecycle workloads, built once per test run (canonical paths, as /proc/PID/maps names them).
pub struct LifecycleWorkloads {
    /// sliced-burn.c, built under the unique name [`RESTART_NAME`], which is therefore its process name.
    pub restart_burn: PathBuf,
    pub fork_storm: PathBuf,
    pub family: PathBuf,
}

/// The process name of the native restart workload: unique on the machine, so `--name` finds only it.
pub const RESTART_NAME: &str = "lc-restart";

pub fn lifecycle_workloads() -> &'static LifecycleWorkloads {
    static BUILT: OnceLock<LifecycleWorkloads> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = scratch_root().join("lifecycle-workloads");
        fs::create_dir_all(&out).unwrap_or_else(|err| panic!("creating {}: {err}", out.display()));
        let build = |source: &str, name: &str| {
            let exe = out.join(name);
            compile(&lifecycle_sources().join(source), &exe);
            fs::canonicalize(&exe).unwrap_or_else(|err| panic!("the build left no {}: {err}", exe.display()))
        };
        LifecycleWorkloads {
            restart_burn: build("sliced-burn.c", RESTART_NAME),
            fork_storm: build("fork-storm.c", "fork-storm"),
            family: build("family.c", "family"),
        }
    })
}

/// `gcc -O2 -g` without frame pointers (the profiler unwinds with DWARF CFI) and without sibling calls, so every
/// function the tests look for by name stays a frame of its own.
fn compile(source: &Path, output: &Path) {
    compile_c(&["-fomit-frame-pointer", "-fno-optimize-sibling-calls"], source, output);
}

/// Copies the Python lifecycle workload `script` into `dir` and returns its path there (as the interpreter, and so
/// the profiler, will name it).
pub fn stage_python(dir: &Path, script: &str) -> PathBuf {
    let from = lifecycle_sources().join(script);
    let to = dir.join(script);
    fs::copy(&from, &to).unwrap_or_else(|err| panic!("copying {} to {}: {err}", from.display(), to.display()));
    to
}

/// `python3 SCRIPT ARGS...` with no bytecode written (spawned pool workers import the script as a module).
pub fn python(script: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(PYTHON);
    cmd.arg(script).args(args).env("PYTHONDONTWRITEBYTECODE", "1").env("PYTHONUNBUFFERED", "1");
    cmd
}

// ---------------------------------------------------------------------------------------------------------------
// Time and the workloads' reports

/// CLOCK_MONOTONIC in nanoseconds: the clock the workloads write their times in.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes only the timespec it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime: {}", std::io::Error::last_os_error());
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A file of `key value...` lines, as the lifecycle workloads write them.
#[derive(Clone, Debug)]
pub struct Facts {
    pub path: PathBuf,
    pub lines: Vec<(String, Vec<u64>)>,
}

impl Facts {
    pub fn read(path: &Path) -> Facts {
        let text = fs::read_to_string(path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
        let lines = text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let mut words = line.split_whitespace();
                let key = words.next().expect("a non-empty line has a word").to_owned();
                let values = words
                    .map(|w| {
                        w.parse().unwrap_or_else(|_| panic!("{}: `{line}` is not `key numbers...`", path.display()))
                    })
                    .collect();
                (key, values)
            })
            .collect();
        Facts { path: path.to_path_buf(), lines }
    }

    /// The first value of the only line `key`.
    pub fn get(&self, key: &str) -> u64 {
        let found: Vec<&Vec<u64>> = self.all(key);
        assert_eq!(found.len(), 1, "{} should have exactly one `{key}` line: {:?}", self.path.display(), self.lines);
        found[0][0]
    }

    /// The values of every line `key`.
    pub fn all(&self, key: &str) -> Vec<&Vec<u64>> {
        self.lines.iter().filter(|(k, _)| k == key).map(|(_, values)| values).collect()
    }
}

/// Waits until `path` exists (a workload renames its report into place when it is complete). Fails the test when
/// `process` exits first without writing it, or after `limit`.
pub fn wait_for_file(path: &Path, process: &mut Process, limit: Duration) {
    let started = Instant::now();
    loop {
        if path.exists() {
            return;
        }
        if let Some(status) = process.child().try_wait().expect("polling the workload") {
            // It may have written the file just before it exited.
            if path.exists() {
                return;
            }
            panic!("the workload exited ({status}) without writing {}", path.display());
        }
        assert!(started.elapsed() < limit, "the workload wrote no {} within {limit:?}", path.display());
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Processes

/// The CPU time (user + system) process `pid` has used so far, all its threads, from /proc/PID/stat (10 ms
/// resolution). `None` once it is gone.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted after the comm (field 2) and the state (field 3).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// The process name (`/proc/PID/comm`).
pub fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm")).map(|c| c.trim_end().to_owned()).unwrap_or_default()
}

/// The command line of `pid`, arguments joined by spaces.
pub fn cmdline(pid: u32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The PIDs of the running children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return found };
    for task in tasks.flatten() {
        let path = task.path().join("children");
        if let Ok(text) = fs::read_to_string(&path) {
            found.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    found.sort();
    found
}

/// A process started in its own process group, which is killed as a whole (SIGKILL) when the guard goes: the
/// workers a server forks or spawns must not outlive the test.
pub struct ProcessGroup {
    child: Child,
}

impl ProcessGroup {
    pub fn start(cmd: &mut Command) -> ProcessGroup {
        cmd.process_group(0).stdin(Stdio::null());
        // SAFETY: runs between fork and exec, where only async-signal-safe calls are allowed: prctl is one.
        // With the parent-death signal the group's leader goes even when this test binary is killed outright.
        unsafe {
            cmd.pre_exec(|| match libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) {
                -1 => Err(std::io::Error::last_os_error()),
                _ => Ok(()),
            });
        }
        ProcessGroup { child: crate::process::spawn(cmd) }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; a negative PID names the process group.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The demo app

/// The quake-monitor virtualenv: `QUAKE_VENV` (set by `cargo xtask test`), else `<workspace>/target/quake-venv`.
pub fn quake_venv() -> PathBuf {
    let venv =
        std::env::var_os("QUAKE_VENV").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target/quake-venv"));
    assert!(
        venv.join("bin/uvicorn").is_file(),
        "no uvicorn in the quake-monitor virtualenv {} (QUAKE_VENV or the default): make it with `cargo xtask setup`",
        venv.display()
    );
    venv
}

/// examples/quake-monitor served by uvicorn with several workers on a free loopback port, killed with its workers
/// when dropped.
pub struct QuakeMonitor {
    group: ProcessGroup,
    pub port: u16,
    pub log: PathBuf,
}

impl QuakeMonitor {
    /// Starts `uvicorn app:app --workers WORKERS` (through the `uvicorn` script, so the master is named
    /// `uvicorn`) and waits until the app answers and all workers run.
    pub fn start(workers: usize, log: PathBuf) -> QuakeMonitor {
        let venv = quake_venv();
        let port = crate::receiver::free_port();
        let log_file = fs::File::create(&log).unwrap_or_else(|err| panic!("creating {}: {err}", log.display()));
        let mut cmd = Command::new(venv.join("bin/uvicorn"));
        cmd.args(["app:app", "--host", "127.0.0.1", "--port", &port.to_string(), "--workers", &workers.to_string()])
            .current_dir(workspace_root().join("examples/quake-monitor"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdout(log_file.try_clone().expect("duplicating a file handle"))
            .stderr(log_file);
        let mut app = QuakeMonitor { group: ProcessGroup::start(&mut cmd), port, log };
        let give_up = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = app.group.child().try_wait().expect("polling uvicorn") {
                panic!("uvicorn exited ({status}) before serving; its log:\n{}", app.log_text());
            }
            if app.workers().len() == workers && (0..workers).all(|_| app.get("/health").is_some()) {
                return app;
            }
            assert!(
                Instant::now() < give_up,
                "uvicorn did not serve with {workers} workers within 90 s (workers: {:?}); its log:\n{}",
                app.workers(),
                app.log_text()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The master (supervisor) process.
    pub fn master(&self) -> u32 {
        self.group.pid()
    }

    /// The worker processes: the master's children that multiprocessing spawned to serve (not its resource
    /// tracker).
    pub fn workers(&self) -> Vec<u32> {
        children(self.master()).into_iter().filter(|&pid| cmdline(pid).contains("spawn_main")).collect()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// GETs `path`; the body when the answer is 200.
    pub fn get(&self, path: &str) -> Option<String> {
        let answer = crate::receiver::http_get(self.port, path)?;
        let (head, body) = answer.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts the app's load generator against it: `rate` requests per second for at most `seconds`.
    pub fn load(&self, rate: u32, seconds: u32) -> ProcessGroup {
        let mut cmd = Command::new(quake_venv().join("bin/python"));
        cmd.arg("loadgen.py")
            .args(["--url", &self.url(), "--rate", &rate.to_string(), "--duration", &seconds.to_string()])
            .current_dir(workspace_root().join("examples/quake-monitor"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        ProcessGroup::start(&mut cmd)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The profiler's memory

/// Samples a process's resident set size (VmRSS) every 50 ms on a thread of its own, until dropped.
pub struct RssWatch {
    readings: Arc<Mutex<Vec<(Instant, u64)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl RssWatch {
    pub fn start(pid: u32) -> RssWatch {
        let readings = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (readings, stop) = (readings.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match vm_rss_kib(pid) {
                        Some(kib) => readings.lock().expect("readings").push((Instant::now(), kib)),
                        None => return,
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            })
        };
        RssWatch { readings, stop, thread: Some(thread) }
    }

    /// The largest reading taken in `from..to`, in KiB.
    pub fn max_between(&self, from: Instant, to: Instant) -> Option<u64> {
        let readings = self.readings.lock().expect("readings");
        readings.iter().filter(|(at, _)| *at >= from && *at <= to).map(|(_, kib)| *kib).max()
    }

    /// The last reading taken, in KiB.
    pub fn latest(&self) -> Option<u64> {
        self.readings.lock().expect("readings").last().map(|(_, kib)| *kib)
    }

    /// Every reading so far.
    pub fn readings(&self) -> Vec<(Instant, u64)> {
        self.readings.lock().expect("readings").clone()
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// VmRSS of `pid` in KiB; `None` once it is gone.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

// ---------------------------------------------------------------------------------------------------------------
// Reading samples by process

/// The `pid` label of a pprof sample.
pub fn sample_pid(sample: &PprofSample) -> Option<u32> {
    sample.label("pid").and_then(|pid| pid.parse().ok())
}

/// Sample counts by `pid` label (samples without one under 0).
pub fn samples_by_pid(samples: &[PprofSample]) -> BTreeMap<u32, u64> {
    let mut counts = BTreeMap::new();
    for sample in samples {
        *counts.entry(sample_pid(sample).unwrap_or(0)).or_insert(0) += sample.count;
    }
    counts
}

/// The samples of process `pid`.
pub fn samples_of(samples: &[PprofSample], pid: u32) -> Vec<&PprofSample> {
    samples.iter().filter(|s| sample_pid(s) == Some(pid)).collect()
}

/// How many of `samples` have a frame for which `pick` holds.
pub fn count_with_frame(samples: &[&PprofSample], pick: impl Fn(&crate::python::PprofFrame) -> bool) -> u64 {
    samples.iter().filter(|s| s.frames.iter().any(&pick)).map(|s| s.count).sum()
}

/// Samples expected of `cpu` time at `rate_hz`.
pub fn expected_samples(cpu: Duration, rate_hz: u64) -> f64 {
    cpu.as_secs_f64() * rate_hz as f64
}
