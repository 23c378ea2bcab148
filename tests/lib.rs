//! Helpers shared by the integration tests: finding the `profiler` binary, building the C workloads once per test
//! run, starting real processes that a guard kills, running the profiler with a hang guard, and reading what it
//! wrote (folded stacks, pprof, the stderr summary).
//!
//! Everything here panics on failure, with a message that says what to look at: these are test helpers.

pub mod agent_support;
pub mod crash_support;
pub mod lifecycle_support;
pub mod python_support;
pub mod receiver;

use std::{
    collections::BTreeSet,
    fs,
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Mutex, MutexGuard, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use profiler::pprof::proto;
use prost::Message as _;

/// The workspace root, from this crate's location at compile time.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The `profiler` binary under test: `PROFILER_BIN` (set by `cargo xtask test`), else the workspace's release
/// build.
pub fn profiler_bin() -> PathBuf {
    let (path, from) = match std::env::var_os("PROFILER_BIN") {
        Some(path) => (PathBuf::from(path), "PROFILER_BIN"),
        None => (workspace_root().join("target/release/profiler"), "the default location (PROFILER_BIN is unset)"),
    };
    assert!(
        path.is_file(),
        "no profiler binary at {} ({from}): run the tests with `cargo xtask test`, or build it first with \
         `cargo build --release -p profiler-user`",
        path.display()
    );
    path
}

/// A `profiler` command with nothing inherited that could change its behaviour between machines.
pub fn profiler() -> Command {
    let mut cmd = Command::new(profiler_bin());
    // Run outside the source tree: the default crash directory (./crashes) is relative to the working directory,
    // and a test's killed workload there would leave reports in the checkout.
    cmd.env_remove("RUST_LOG").env_remove("RUST_BACKTRACE").current_dir(std::env::temp_dir());
    cmd
}

/// True when the test can load eBPF programs. Otherwise it says why and returns false so the test can return early,
/// except under `CI=true`, where a skipped test would hide a broken setup, so it fails instead.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let test = thread::current().name().unwrap_or("this test").to_owned();
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("{test} needs root (it loads eBPF programs), and CI=true does not allow skipping it: run as root");
    }
    eprintln!("skipping {test}: it needs root (it loads eBPF programs); run `cargo xtask test` as root");
    false
}

/// Held by every test that profiles. The machine has few cores: a second busy workload or profiler running at the
/// same time would take CPU from the measured threads and change what the tests measure. A test that failed while
/// holding it does not stop the others (the poison is ignored: the lock guards no data).
pub fn exclusive_cpu() -> MutexGuard<'static, ()> {
    static CPU: Mutex<()> = Mutex::new(());
    CPU.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------------------------
// Scratch space

/// Set when a test fails, so its files are kept for a look instead of removed at exit.
static KEEP_SCRATCH: AtomicBool = AtomicBool::new(false);

/// This run's scratch directory, `$TMPDIR/profiler-tests.PID`, removed when the test binary exits unless a test
/// failed.
pub fn scratch_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("profiler-tests.{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap_or_else(|err| panic!("creating {}: {err}", root.display()));
        // A static is never dropped; exit handlers do run when the test harness returns or exits.
        extern "C" fn remove_scratch_root() {
            if let Some(root) = ROOT.get() {
                if KEEP_SCRATCH.load(Ordering::SeqCst) {
                    eprintln!("test files kept in {}", root.display());
                } else {
                    let _ = fs::remove_dir_all(root);
                }
            }
        }
        // SAFETY: registers a plain function that touches only statics, which outlive it.
        unsafe { libc::atexit(remove_scratch_root) };
        root
    })
}

/// A fresh directory for one test's files. When the test fails its files are kept and their place printed.
pub struct TestDir(PathBuf);

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let dir = scratch_root().join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("creating {}: {err}", dir.display()));
        TestDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        keep_on_panic(&self.0);
    }
}

/// Keeps `dir` (and the rest of the scratch space) when the current test is failing.
fn keep_on_panic(dir: &Path) {
    if thread::panicking() {
        KEEP_SCRATCH.store(true, Ordering::SeqCst);
        eprintln!("keeping this test's files: {}", dir.display());
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Workloads

/// The C workloads, built once per test run.
pub struct Workloads {
    /// examples/native-burn: three busy threads with a CPU split known by construction.
    pub native_burn: PathBuf,
    /// Its shared library, next to it.
    pub libburnlib: PathBuf,
    /// tests/workloads/one-busy-thread.c: a single thread that only spins.
    pub one_busy_thread: PathBuf,
}

pub fn workloads() -> &'static Workloads {
    static BUILT: OnceLock<Workloads> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = workspace_root();
        let out = scratch_root().join("workloads");
        run_to_success(Command::new("bash").arg(root.join("examples/native-burn/build.sh")).arg(&out));
        let one_busy_thread = out.join("one-busy-thread");
        compile_c(&["-fomit-frame-pointer"], &root.join("tests/workloads/one-busy-thread.c"), &one_busy_thread);
        // Canonical, as /proc/PID/maps and so the profiler's mappings name them.
        let canonical = |path: PathBuf| {
            fs::canonicalize(&path).unwrap_or_else(|err| panic!("the build left no {}: {err}", path.display()))
        };
        Workloads {
            native_burn: canonical(out.join("native-burn")),
            libburnlib: canonical(out.join("libburnlib.so")),
            one_busy_thread: canonical(one_busy_thread),
        }
    })
}

/// Compiles a C workload with `gcc -O2 -g` (or `$CC`), a build-id, and `flags`; panics with the compiler's output.
pub fn compile_c(flags: &[&str], source: &Path, output: &Path) {
    let mut cmd = Command::new(std::env::var_os("CC").unwrap_or_else(|| "gcc".into()));
    cmd.args(["-O2", "-g", "-Wall", "-Wextra", "-Wl,--build-id"]).args(flags).arg("-o").arg(output).arg(source);
    run_to_success(&mut cmd);
}

/// Runs `cmd` to completion; panics with its output unless it succeeds.
pub fn run_to_success(cmd: &mut Command) {
    let output = cmd.output().unwrap_or_else(|err| panic!("could not start {cmd:?}: {err}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A process started by a test, killed (SIGKILL) and reaped when the guard goes, on every path out of the test.
pub struct Process {
    child: Child,
}

impl Process {
    pub fn start(cmd: &mut Command) -> Process {
        let child = cmd.stdin(Stdio::null()).spawn().unwrap_or_else(|err| panic!("could not start {cmd:?}: {err}"));
        Process { child }
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

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts native-burn, with a lifetime after which it ends by itself even if this test binary is killed before
/// its guard can kill it, and waits until its three threads are named.
pub fn start_native_burn(lifetime: Duration) -> Process {
    let mut process = Process::start(Command::new(&workloads().native_burn).arg(lifetime.as_secs().max(1).to_string()));
    process.wait_for_threads(&NATIVE_BURN_THREADS);
    process
}

/// native-burn's thread names: the main thread keeps the process's name.
pub const NATIVE_BURN_THREADS: [&str; 3] = ["native-burn", "burn-a", "burn-b"];

// ---------------------------------------------------------------------------------------------------------------
// Running the profiler

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
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("could not start {cmd:?}: {err}"));
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

/// A profiler started in the background, for tests that act while it records (Ctrl-C, a target that exits). It is
/// killed if the test ends before it does.
pub struct Recorder {
    process: Process,
    output: Option<(thread::JoinHandle<String>, thread::JoinHandle<String>)>,
    started: Instant,
}

impl Recorder {
    pub fn start(cmd: &mut Command) -> Recorder {
        let started = Instant::now();
        let mut process = Process::start(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()));
        let output = Some(collect_output(process.child()));
        Recorder { process, output, started }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Returns once the profiler has loaded its sampler and handles Ctrl-C (see [`wait_for_sigint_handler`]).
    pub fn wait_until_recording(&mut self) {
        wait_for_sigint_handler(self.process.child(), Duration::from_secs(60));
    }

    /// Waits for the profiler to exit, for at most `limit` (then it is killed and the test fails).
    pub fn finish(mut self, limit: Duration, what: &str) -> Run {
        let status = wait_with_limit(self.process.child(), limit, what);
        let (stdout, stderr) = self.output.take().expect("output is collected once");
        Run {
            status,
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
            wall: self.started.elapsed(),
        }
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

// ---------------------------------------------------------------------------------------------------------------
// Reading what the profiler wrote

/// The summary line: `N samples of T threads in S s, L lost; P% of stacks unwound to the thread's root`.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub samples: u64,
    pub threads: u64,
    pub seconds: f64,
    pub lost: u64,
    pub complete_percent: f64,
}

impl Summary {
    pub fn find(stderr: &str) -> Summary {
        stderr
            .lines()
            .find_map(Summary::parse)
            .unwrap_or_else(|| panic!("no summary line (`N samples of T threads in S s, L lost; ...`) in:\n{stderr}"))
    }

    fn parse(line: &str) -> Option<Summary> {
        let (samples, rest) = line.split_once(" samples of ")?;
        let (threads, rest) = rest.split_once(" threads in ")?;
        let (seconds, rest) = rest.split_once(" s, ")?;
        let (lost, rest) = rest.split_once(" lost; ")?;
        let (percent, _) = rest.split_once("% of stacks")?;
        Some(Summary {
            samples: samples.parse().ok()?,
            threads: threads.parse().ok()?,
            seconds: seconds.parse().ok()?,
            lost: lost.parse().ok()?,
            complete_percent: percent.parse().ok()?,
        })
    }
}

/// A folded-stacks file: one `root;…;leaf count` line per distinct stack. Frame 0 is the process, frame 1 the
/// thread, then native frames from the thread's root to the leaf.
#[derive(Clone, Debug)]
pub struct Folded {
    pub stacks: Vec<(Vec<String>, u64)>,
}

impl Folded {
    pub fn read(path: &Path) -> Folded {
        let text = fs::read_to_string(path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
        Folded::parse(&text)
    }

    pub fn parse(text: &str) -> Folded {
        let stacks = text
            .lines()
            .map(|line| {
                // Frames may contain spaces (`[truncated: ...]`); the count is after the last one.
                let (stack, count) =
                    line.rsplit_once(' ').unwrap_or_else(|| panic!("folded line without count: {line:?}"));
                let count = count.parse().unwrap_or_else(|_| panic!("folded line with a bad count: {line:?}"));
                (stack.split(';').map(str::to_owned).collect(), count)
            })
            .collect();
        Folded { stacks }
    }

    pub fn total(&self) -> u64 {
        self.stacks.iter().map(|(_, count)| count).sum()
    }

    /// The stacks of the thread named `thread` (frame 1), with the two synthetic root frames removed.
    pub fn thread(&self, thread: &str) -> Vec<(&[String], u64)> {
        self.stacks
            .iter()
            .filter(|(frames, _)| frames.get(1).is_some_and(|name| name == thread))
            .map(|(frames, count)| (&frames[2..], *count))
            .collect()
    }

    /// Thread names (frame 1) with their sample counts.
    pub fn threads(&self) -> Vec<(String, u64)> {
        let mut threads: Vec<(String, u64)> = Vec::new();
        for (frames, count) in &self.stacks {
            let name = frames.get(1).cloned().unwrap_or_default();
            match threads.iter_mut().find(|(n, _)| *n == name) {
                Some((_, total)) => *total += count,
                None => threads.push((name, *count)),
            }
        }
        threads.sort();
        threads
    }
}

/// Samples (of `stacks`, as [`Folded::thread`] gives them) for which `pick` holds.
pub fn count_where(stacks: &[(&[String], u64)], pick: impl Fn(&[String]) -> bool) -> u64 {
    stacks.iter().filter(|(frames, _)| pick(frames)).map(|(_, count)| count).sum()
}

/// Whether a frame marks a stack cut short.
pub fn is_truncation(frame: &str) -> bool {
    frame.starts_with("[truncated")
}

/// Reads a gzipped pprof file.
pub fn read_pprof(path: &Path) -> proto::Profile {
    let file = fs::File::open(path).unwrap_or_else(|err| panic!("opening {}: {err}", path.display()));
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut raw)
        .unwrap_or_else(|err| panic!("{} is not gzip: {err}", path.display()));
    proto::Profile::decode(&raw[..]).unwrap_or_else(|err| panic!("{} is not a pprof protobuf: {err}", path.display()))
}

/// The GNU build-id of an ELF file as lowercase hex, read by binutils' `readelf`, independently of the profiler.
pub fn gnu_build_id(elf: &Path) -> String {
    let output = Command::new("readelf")
        .arg("-n")
        .arg(elf)
        .output()
        .unwrap_or_else(|err| panic!("could not run readelf (binutils): {err}"));
    assert!(
        output.status.success(),
        "readelf -n {} failed: {}",
        elf.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.trim().strip_prefix("Build ID:"))
        .map(|id| id.trim().to_ascii_lowercase())
        .unwrap_or_else(|| panic!("{} has no GNU build-id note:\n{text}", elf.display()))
}

/// The 1-based line range of the C function `name` in `source`: from the line of its definition to its closing
/// brace at column 0.
pub fn c_function_lines(source: &Path, name: &str) -> std::ops::RangeInclusive<i64> {
    let text = fs::read_to_string(source).unwrap_or_else(|err| panic!("reading {}: {err}", source.display()));
    let lines: Vec<&str> = text.lines().collect();
    let head = format!(" {name}(");
    let start = lines
        .iter()
        .position(|line| line.contains(&head) && !line.trim_end().ends_with(';'))
        .unwrap_or_else(|| panic!("no definition of {name} in {}", source.display()));
    let end = if lines[start].trim_end().ends_with('}') {
        start
    } else {
        start + lines[start..].iter().position(|line| *line == "}").unwrap_or_else(|| panic!("{name} never ends"))
    };
    (start as i64 + 1)..=(end as i64 + 1)
}
