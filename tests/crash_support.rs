//! Helpers for the crash tests: the crash workloads (tests/workloads/crash: a C library the Python scripts crash
//! in through ctypes, a native program that crashes by itself), a profiler started before a workload is told to
//! crash, and readers for the crash reports it writes (JSON, text, flame graph, pprof).
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
    collect_output, compile_c, scratch_root, wait_for_sigint_handler, wait_with_limit, workspace_root, Process, Run,
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
        let exit = report.json.get("exit");
        let shown = format!("the workload ended with {}; the report:\n{}", self.status, report.text);
        match (self.status.code(), self.status.signal()) {
            (Some(code), _) => {
                assert_eq!(exit.get("exited").get("code").i64(), i64::from(code), "exit.exited.code; {shown}");
                assert!(report.text.contains(&format!("the process exited with code {code}\n")), "{shown}");
            }
            (None, Some(signal)) => {
                let killed = exit.get("killed");
                assert_eq!(killed.get("signal").i64(), i64::from(signal), "exit.killed.signal; {shown}");
                let core_dumped = killed.get("core_dumped").bool();
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

/// How long after the profiler installs its SIGINT handler the tests wait before letting a workload crash: the
/// handler comes with the session, just before the targets are added (reading their maps, finding the Python
/// interpreter), and there is no outward sign of that being done. (Measured with strace: the TARGETS map is updated
/// about 10 ms after the handler for a Python target; this leaves a wide margin on a loaded machine.)
pub const SETTLE: Duration = Duration::from_millis(1000);

/// A running `profiler record`, output captured, killed by its guard on every path out of the test.
pub struct Recorder {
    process: Process,
    stdout: Option<thread::JoinHandle<String>>,
    stderr: Option<thread::JoinHandle<String>>,
    started: Instant,
}

impl Recorder {
    /// Starts `cmd` (a `profiler record` command) and returns once it is recording (see [`SETTLE`]).
    pub fn start(cmd: &mut Command) -> Recorder {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut process = Process::start(cmd);
        let (stdout, stderr) = collect_output(process.child());
        let mut recorder = Recorder { process, stdout: Some(stdout), stderr: Some(stderr), started };
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for_sigint_handler(recorder.process.child(), Duration::from_secs(60))
        })) {
            let run = recorder.finish(Duration::from_secs(10));
            eprintln!("the profiler's stderr:\n{}", run.stderr);
            std::panic::resume_unwind(panic);
        }
        thread::sleep(SETTLE);
        recorder
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Waits for the profiler to exit (at most `limit`; killed after that) and collects what it printed.
    pub fn finish(&mut self, limit: Duration) -> Run {
        let child = self.process.child();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("polling the profiler") {
                break status;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                break child.wait().expect("reaping the profiler");
            }
            thread::sleep(Duration::from_millis(20));
        };
        let join = |handle: Option<thread::JoinHandle<String>>| handle.map(|h| h.join().expect("output reader"));
        let run = Run {
            status,
            stdout: join(self.stdout.take()).unwrap_or_default(),
            stderr: join(self.stderr.take()).unwrap_or_default(),
            wall: self.started.elapsed(),
        };
        assert!(
            started.elapsed() <= limit,
            "the profiler did not finish within {limit:?}; it was killed. Its stderr:\n{}",
            run.stderr
        );
        run
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Crash reports

/// One crash report: `crash-PID-SIGNAME-MILLIS.json` and the files next to it.
#[derive(Debug)]
pub struct Report {
    /// The path without extension: `DIR/crash-PID-SIGNAME-MILLIS`.
    pub base: PathBuf,
    pub json: Json,
    /// The `.txt` file.
    pub text: String,
}

impl Report {
    /// `base` + `.extension`, when that file exists.
    pub fn file(&self, extension: &str) -> Option<PathBuf> {
        let path = PathBuf::from(format!("{}.{extension}", self.base.display()));
        path.is_file().then_some(path)
    }

    /// The stack, innermost first.
    pub fn stack(&self) -> Vec<StackFrame> {
        self.json.get("stack").array().iter().map(StackFrame::from_json).collect()
    }

    /// The stack, one frame a line, for failure messages.
    pub fn stack_text(&self) -> String {
        self.stack().iter().enumerate().map(|(i, f)| format!("  #{i:<3} {f}\n")).collect()
    }
}

/// A frame of a report's stack.
#[derive(Clone, Debug, PartialEq)]
pub struct StackFrame {
    pub kind: String,
    pub function: String,
    pub file: Option<String>,
    pub line: Option<i64>,
    pub module: Option<String>,
    pub build_id: Option<String>,
    pub inlined: bool,
}

impl StackFrame {
    fn from_json(json: &Json) -> StackFrame {
        let opt_str = |key: &str| json.get(key).opt_str().map(str::to_owned);
        StackFrame {
            kind: json.get("kind").str().to_owned(),
            function: json.get("function").str().to_owned(),
            file: opt_str("file"),
            line: json.get("line").opt_i64(),
            module: opt_str("module"),
            build_id: opt_str("build_id"),
            inlined: json.get("inlined").bool(),
        }
    }

    pub fn is_python(&self) -> bool {
        self.kind == "python"
    }

    /// Whether this native frame is in the module at `path`.
    pub fn in_module(&self, path: &Path) -> bool {
        self.module.as_deref() == path.to_str()
    }
}

impl std::fmt::Display for StackFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.function)?;
        if let Some(file) = &self.file {
            write!(f, " at {file}:{}", self.line.map(|l| l.to_string()).unwrap_or_default())?;
        }
        if let Some(module) = &self.module {
            write!(f, " [{module}]")?;
        }
        if self.inlined {
            write!(f, " (inlined)")?;
        }
        Ok(())
    }
}

/// Every crash report in `dir`, oldest first; the directory may also hold nothing else than report files.
pub fn read_reports(dir: &Path) -> Vec<Report> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut bases: Vec<PathBuf> = entries
        .map(|entry| entry.expect("listing the crash directory").path())
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // Only regular files: a link planted there (tests of hostile directories) is no report.
            name.starts_with("crash-") && name.ends_with(".json") && fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
        })
        .map(|path| path.with_extension(""))
        .collect();
    // The fourth part of the name is the time in milliseconds (a fifth, random, follows when the name was taken).
    bases.sort_by_key(|base| {
        let name = base.file_name().and_then(|n| n.to_str()).unwrap_or("").to_owned();
        (name.split('-').nth(3).and_then(|millis| millis.parse::<u64>().ok()), name)
    });
    bases
        .into_iter()
        .map(|base| {
            let read = |extension: &str| {
                let path = base.with_extension(extension);
                fs::read_to_string(&path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
            };
            let json = Json::parse(&read("json"));
            let text = read("txt");
            Report { base, json, text }
        })
        .collect()
}

/// The names of the files in `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------------------------------
// JSON (the test crate has no JSON library; the reports need only reading)

/// A parsed JSON value. The accessors panic with the value in the message when it has another type.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

static NULL: Json = Json::Null;

impl Json {
    pub fn parse(text: &str) -> Json {
        let mut parser = JsonParser { bytes: text.as_bytes(), at: 0 };
        let value = parser.value();
        parser.skip_space();
        assert_eq!(parser.at, parser.bytes.len(), "trailing text after the JSON value in:\n{text}");
        value
    }

    /// The member `key` of an object; `Null` when absent.
    pub fn get(&self, key: &str) -> &Json {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map_or(&NULL, |(_, v)| v),
            other => panic!("expected an object with `{key}`, got {other:?}"),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        matches!(self, Json::Object(members) if members.iter().any(|(k, _)| k == key))
    }

    pub fn is_null(&self) -> bool {
        *self == Json::Null
    }

    pub fn str(&self) -> &str {
        self.opt_str().unwrap_or_else(|| panic!("expected a string, got {self:?}"))
    }

    pub fn opt_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            Json::Null => None,
            other => panic!("expected a string or null, got {other:?}"),
        }
    }

    pub fn i64(&self) -> i64 {
        self.opt_i64().unwrap_or_else(|| panic!("expected a number, got {self:?}"))
    }

    pub fn opt_i64(&self) -> Option<i64> {
        match self {
            Json::Number(n) if n.fract() == 0.0 => Some(*n as i64),
            Json::Null => None,
            other => panic!("expected an integer or null, got {other:?}"),
        }
    }

    pub fn f64(&self) -> f64 {
        match self {
            Json::Number(n) => *n,
            other => panic!("expected a number, got {other:?}"),
        }
    }

    pub fn bool(&self) -> bool {
        match self {
            Json::Bool(b) => *b,
            other => panic!("expected a boolean, got {other:?}"),
        }
    }

    pub fn array(&self) -> &[Json] {
        match self {
            Json::Array(items) => items,
            other => panic!("expected an array, got {other:?}"),
        }
    }
}

struct JsonParser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl JsonParser<'_> {
    fn fail(&self, what: &str) -> ! {
        let text = String::from_utf8_lossy(self.bytes);
        panic!("bad JSON at byte {}: {what}; the text:\n{text}", self.at)
    }

    fn skip_space(&mut self) {
        while self.bytes.get(self.at).is_some_and(|b| b.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        self.skip_space();
        if self.bytes.get(self.at) == Some(&byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, byte: u8) {
        if !self.eat(byte) {
            self.fail(&format!("expected `{}`", byte as char));
        }
    }

    fn value(&mut self) -> Json {
        self.skip_space();
        match self.bytes.get(self.at) {
            Some(b'{') => {
                self.at += 1;
                let mut members = Vec::new();
                if !self.eat(b'}') {
                    loop {
                        self.skip_space();
                        let key = self.string();
                        self.expect(b':');
                        members.push((key, self.value()));
                        if self.eat(b'}') {
                            break;
                        }
                        self.expect(b',');
                    }
                }
                Json::Object(members)
            }
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                if !self.eat(b']') {
                    loop {
                        items.push(self.value());
                        if self.eat(b']') {
                            break;
                        }
                        self.expect(b',');
                    }
                }
                Json::Array(items)
            }
            Some(b'"') => Json::String(self.string()),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.at;
                while self
                    .bytes
                    .get(self.at)
                    .is_some_and(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                {
                    self.at += 1;
                }
                let text = std::str::from_utf8(&self.bytes[start..self.at]).expect("ASCII");
                Json::Number(text.parse().unwrap_or_else(|_| self.fail("a bad number")))
            }
            _ => self.fail("expected a value"),
        }
    }

    fn literal(&mut self, word: &str, value: Json) -> Json {
        if !self.bytes[self.at..].starts_with(word.as_bytes()) {
            self.fail(&format!("expected `{word}`"));
        }
        self.at += word.len();
        value
    }

    fn string(&mut self) -> String {
        if self.bytes.get(self.at) != Some(&b'"') {
            self.fail("expected a string");
        }
        self.at += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(&byte) = self.bytes.get(self.at) else { self.fail("an unterminated string") };
            self.at += 1;
            match byte {
                b'"' => break,
                b'\\' => {
                    let Some(&escape) = self.bytes.get(self.at) else { self.fail("an unterminated escape") };
                    self.at += 1;
                    let ch = match escape {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let mut code = self.hex4();
                            if (0xD800..0xDC00).contains(&code) && self.bytes[self.at..].starts_with(b"\\u") {
                                self.at += 2;
                                let low = self.hex4();
                                code = 0x10000 + ((code - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF);
                            }
                            char::from_u32(code).unwrap_or('\u{FFFD}')
                        }
                        _ => self.fail("an unknown escape"),
                    };
                    out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                }
                _ => out.push(byte),
            }
        }
        String::from_utf8(out).unwrap_or_else(|_| self.fail("a string that is not UTF-8"))
    }

    fn hex4(&mut self) -> u32 {
        let digits = self.bytes.get(self.at..self.at + 4).unwrap_or_else(|| self.fail("a short \\u escape"));
        self.at += 4;
        u32::from_str_radix(std::str::from_utf8(digits).unwrap_or(""), 16)
            .unwrap_or_else(|_| self.fail("a bad \\u escape"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_report_shaped_document() {
        let json = Json::parse(
            r#"{"kind": {"killed": {"sender_pid": 12}}, "fault_address": null, "si_code": -6,
               "stack": [{"function": "a\"b\u00e9", "line": 3, "inlined": false}], "window_seconds": 30.0}"#,
        );
        assert_eq!(json.get("kind").get("killed").get("sender_pid").i64(), 12);
        assert!(json.get("fault_address").is_null());
        assert_eq!(json.get("si_code").i64(), -6);
        assert_eq!(json.get("stack").array()[0].get("function").str(), "a\"bé");
        assert_eq!(json.get("window_seconds").f64(), 30.0);
        assert!(!json.has("missing") && json.get("missing").is_null());
    }
}
