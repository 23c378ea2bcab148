//! The crash workloads (tests/workloads/crash: a C library the Python scripts crash in through ctypes, a native
//! program that crashes by itself), built once per run, and a workload process expected to crash: its readiness
//! handshake, its end, and its mappings. The profiler that watches it is a [`crate::Recorder`]; the reports it
//! writes are read by [`crate::crash_report`].
use std::{
    fs,
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

use crate::{
    collect_output, compile_c,
    crash_report::{Field as _, Report},
    scratch_root, wait_with_limit, workspace_root, Process,
};

/// The Python every crash workload runs under: Debian's 3.11.
pub const PYTHON: &str = "/usr/bin/python3";

/// The sources of the crash workloads.
pub fn crash_sources() -> PathBuf {
    workspace_root().join("tests/workloads/crash")
}

/// libcrash.so, built once per test run with `gcc -O2 -g` (canonical, as /proc/PID/maps names it).
pub fn libcrash() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = scratch_root().join("crash-workloads");
        fs::create_dir_all(&out).unwrap_or_else(|err| panic!("creating {}: {err}", out.display()));
        let lib = out.join("libcrash.so");
        compile_c(&["-shared", "-fPIC"], &crash_sources().join("libcrash.c"), &lib);
        fs::canonicalize(&lib).unwrap_or_else(|err| panic!("the build left no {}: {err}", lib.display()))
    })
}

/// crash-by-name.c built as an executable called `name`, whose process name is therefore `name` (at most 15
/// bytes, as the kernel keeps it).
pub fn build_crash_by_name(name: &str) -> PathBuf {
    assert!(name.len() <= 15, "process names are at most 15 bytes: {name}");
    let out = scratch_root().join("crash-workloads");
    fs::create_dir_all(&out).unwrap_or_else(|err| panic!("creating {}: {err}", out.display()));
    let exe = out.join(name);
    compile_c(&[], &crash_sources().join("crash-by-name.c"), &exe);
    fs::canonicalize(&exe).unwrap_or_else(|err| panic!("the build left no {}: {err}", exe.display()))
}

/// Copies the Python crash workloads into `dir`; returns where `script` is now (as the interpreter will name it).
pub fn stage_script(dir: &Path, script: &str) -> PathBuf {
    for entry in fs::read_dir(crash_sources()).expect("listing tests/workloads/crash") {
        let path = entry.expect("listing tests/workloads/crash").path();
        if path.extension().is_some_and(|ext| ext == "py") {
            let to = dir.join(path.file_name().expect("a file name"));
            fs::copy(&path, &to).unwrap_or_else(|err| panic!("copying {} to {}: {err}", path.display(), to.display()));
        }
    }
    let staged = dir.join(script);
    assert!(staged.is_file(), "no crash workload {script} in {}", crash_sources().display());
    staged
}

/// `python3 SCRIPT LIBCRASH DIR`, the way every Python crash workload is started.
pub fn python_workload(script: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(PYTHON);
    cmd.arg(script).arg(libcrash()).arg(dir).env("PYTHONDONTWRITEBYTECODE", "1").env("PYTHONUNBUFFERED", "1");
    cmd
}

// ---------------------------------------------------------------------------------------------------------------
// Processes

/// A workload expected to crash: started with its output captured, killed by its guard on every path out.
pub struct Workload {
    process: Process,
    stdout: Option<thread::JoinHandle<String>>,
    stderr: Option<thread::JoinHandle<String>>,
}

/// How a workload ended.
#[derive(Debug)]
pub struct Ended {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ended {
    /// Panics unless the report's `exit` says what `waitpid` told the test, the workload's parent: the exit code,
    /// or the signal and whether a core was dumped.
    pub fn assert_reported_in(&self, report: &Report) {
        use std::os::unix::process::ExitStatusExt as _;
        let exit = report.json.field("exit");
        let shown = format!("the workload ended with {}; the report:\n{}", self.status, report.text);
        match (self.status.code(), self.status.signal()) {
            (Some(code), _) => {
                assert_eq!(exit.field("exited").field("code").i64(), i64::from(code), "exit.exited.code; {shown}");
                assert!(report.text.contains(&format!("the process exited with code {code}\n")), "{shown}");
            }
            (None, Some(signal)) => {
                let killed = exit.field("killed");
                assert_eq!(killed.field("signal").i64(), i64::from(signal), "exit.killed.signal; {shown}");
                let core_dumped = killed.field("core_dumped").bool();
                assert_eq!(core_dumped, self.status.core_dumped(), "exit.killed.core_dumped; {shown}");
                assert!(report.text.contains("the process was ended by SIG"), "{shown}");
            }
            (None, None) => panic!("the workload neither exited nor was killed: {}", self.status),
        }
    }

    /// Panics unless the workload was killed by `signal`.
    pub fn assert_killed_by(&self, signal: i32) {
        assert_eq!(
            self.status.signal(),
            Some(signal),
            "the workload should have died of signal {signal}; it ended with {}. Its stdout:\n{}\nIts stderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
    }
}

impl Workload {
    pub fn start(cmd: &mut Command) -> Workload {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
        unsafe {
            // No core files from the crashes, whatever this machine's default.
            cmd.pre_exec(|| {
                let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                libc::setrlimit(libc::RLIMIT_CORE, &none);
                Ok(())
            });
        }
        let mut process = Process::start(cmd);
        let (stdout, stderr) = collect_output(process.child());
        Workload { process, stdout: Some(stdout), stderr: Some(stderr) }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Waits for the workload's `ready` file (`PID TID`, written by crashcommon.handshake) in `dir`; returns the
    /// TID of the thread that will crash.
    pub fn wait_ready(&mut self, dir: &Path) -> u32 {
        let ready = dir.join("ready");
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.process.child().try_wait().expect("polling the workload") {
                let ended = self.collect(status);
                panic!("the workload exited ({status}) before it was ready; its stderr:\n{}", ended.stderr);
            }
            if let Ok(text) = fs::read_to_string(&ready) {
                let numbers: Vec<u32> = text.split_whitespace().filter_map(|n| n.parse().ok()).collect();
                let [pid, tid] = numbers[..] else { panic!("{} reads {text:?}", ready.display()) };
                assert_eq!(pid, self.pid(), "the ready file names another process");
                return tid;
            }
            assert!(Instant::now() < give_up, "the workload wrote no {} within a minute", ready.display());
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the workload to end (at most `limit`), with its output.
    pub fn wait_exit(&mut self, limit: Duration) -> Ended {
        let status = wait_with_limit(self.process.child(), limit, "the crashing workload");
        self.collect(status)
    }

    fn collect(&mut self, status: ExitStatus) -> Ended {
        let join = |handle: Option<thread::JoinHandle<String>>| handle.map(|h| h.join().expect("output reader"));
        Ended {
            status,
            stdout: join(self.stdout.take()).unwrap_or_default(),
            stderr: join(self.stderr.take()).unwrap_or_default(),
        }
    }

    /// The address range of each mapping of `file` in the workload right now (`/proc/PID/maps`), with its
    /// permissions.
    pub fn mappings_of(&self, file: &Path) -> Vec<(u64, u64, String)> {
        let maps = format!("/proc/{}/maps", self.pid());
        let text = fs::read_to_string(&maps).unwrap_or_else(|err| panic!("reading {maps}: {err}"));
        let wanted = file.to_str().expect("UTF-8");
        text.lines()
            .filter(|line| line.split_whitespace().nth(5) == Some(wanted))
            .map(|line| {
                let mut fields = line.split_whitespace();
                let range = fields.next().expect("an address range");
                let perms = fields.next().expect("permissions").to_owned();
                let (start, end) = range.split_once('-').expect("start-end");
                let hex = |n: &str| u64::from_str_radix(n, 16).expect("a hex address");
                (hex(start), hex(end), perms)
            })
            .collect()
    }
}
