//! Crash capture in `profiler record` (issue 6): processes that crash the way the monitor might — a NULL
//! dereference in C reached through ctypes from a Python worker thread, `abort()`, an integer division by zero, a
//! SIGBUS from a truncated mapping, a crash under `faulthandler`, a SIGKILL from outside, a crash in a process
//! followed by name — each leaving one report whose fields match what the workload did: the C function at the
//! top of the stack, the Python caller (function and the line marked `# CRASH-LINE`) below it.
//!
//! Every workload is set up first, then profiled, then told to crash (a `go` file), so the profiler is recording
//! when the signal is generated.
use std::{
    fs,
    path::{Path, PathBuf},
    sync::MutexGuard,
    thread,
    time::Duration,
};

use profiler_tests::{
    c_function_lines,
    crash::{build_crash_by_name, crash_sources, libcrash, python_workload, stage_script, Ended, Workload},
    crash_report::{file_names, read_reports, Field as _, Report},
    exclusive_cpu, gnu_build_id, profiler,
    python::{marked_line, pprof_samples},
    read_pprof, require_root, send_signal, Recorder, Run, TestDir,
};

/// Crash signatures and `profiler crashes` (issue 16): in their own file, under `crash::` for the test filter.
#[path = "crash_groups.rs"]
mod groups;
/// A crash on every supported Python version (issue 20), under `crash::` too.
#[path = "crash_versions.rs"]
mod versions;

/// What `--crash-window` defaults to.
const DEFAULT_WINDOW_SECONDS: f64 = 30.0;
/// si_code values (asm-generic/siginfo.h).
const SEGV_MAPERR: i64 = 1;
const BUS_ADRERR: i64 = 2;
const FPE_INTDIV: i64 = 1;
const SI_TKILL: i64 = -6;
/// The Python frames from a `threading.Thread` target up to the thread's root, innermost first.
const THREAD_ROOT: [&str; 3] = ["Thread.run", "Thread._bootstrap_inner", "Thread._bootstrap"];

// ---------------------------------------------------------------------------------------------------------------
// Running a Python workload to its crash

/// What one profiled crash of a Python workload left.
struct PythonCrash {
    /// Kept (on failure) until the checks are done.
    _dir: TestDir,
    /// The script as the interpreter (and so the report) names it.
    script: PathBuf,
    pid: u32,
    /// The thread that crashes, as the workload reported it.
    tid: u32,
    /// The mappings of libcrash.so in the workload before it crashed.
    libcrash_maps: Vec<(u64, u64, String)>,
    ended: Ended,
    run: Run,
    crash_dir: PathBuf,
    reports: Vec<Report>,
    _cpu: MutexGuard<'static, ()>,
}

/// When the profiler reads what the kernel captured at the crash.
#[derive(Clone, Copy, PartialEq)]
enum Reading {
    /// As soon as it can: it races the dying process.
    AsSoonAsItCan,
    /// After the process is gone: the profiler is stopped (SIGSTOP) from just before the workload is told to crash
    /// until its crash has killed it, as a busy machine can delay it.
    AfterTheProcessIsGone,
}

/// Starts `script` (tests/workloads/crash), profiles it with `record --pid` (no duration: the recording ends with
/// the process), lets it crash and collects the reports.
fn crash_python(label: &str, script: &str, reading: Reading) -> PythonCrash {
    let cpu = exclusive_cpu();
    let dir = TestDir::new(label);
    let script = stage_script(dir.path(), script);
    let crash_dir = dir.join("crashes");
    let mut workload = Workload::start(&mut python_workload(&script, dir.path()));
    let pid = workload.pid();
    let tid = workload.wait_ready(dir.path());
    let libcrash_maps = workload.mappings_of(libcrash());

    let mut record = profiler();
    record.args(["record", "--pid", &pid.to_string(), "--crash-dir"]).arg(&crash_dir);
    record.arg("-o").arg(dir.join("x.folded"));
    let recorder = Recorder::start_recording(&mut record);
    if reading == Reading::AfterTheProcessIsGone {
        send_signal(recorder.pid(), libc::SIGSTOP);
    }
    fs::write(dir.join("go"), "").expect("writing the go file");
    let ended = workload.wait_exit(Duration::from_secs(60));
    if reading == Reading::AfterTheProcessIsGone {
        // Past the exit of every thread: the process's memory and maps are gone.
        thread::sleep(Duration::from_millis(500));
        send_signal(recorder.pid(), libc::SIGCONT);
    }
    let run = recorder.finish(Duration::from_secs(60), "the profiler");
    eprintln!("{label}: the workload ended with {}; its stderr:\n{}", ended.status, ended.stderr);
    eprintln!("{label}: the profiler's stderr:\n{}", run.stderr);
    run.assert_success();
    let reports = read_reports(&crash_dir);
    PythonCrash { _dir: dir, script, pid, tid, libcrash_maps, ended, run, crash_dir, reports, _cpu: cpu }
}

impl PythonCrash {
    /// The one report there must be; panics, listing the crash directory, otherwise.
    fn only_report(&self) -> &Report {
        assert_eq!(
            self.reports.len(),
            1,
            "expected exactly one crash report in {}; it holds {:?}. The profiler's stderr:\n{}",
            self.crash_dir.display(),
            file_names(&self.crash_dir),
            self.run.stderr
        );
        &self.reports[0]
    }

    fn crash_line(&self) -> i64 {
        marked_line(&self.script, "# CRASH-LINE")
    }

    fn script_name(&self) -> &str {
        self.script.to_str().expect("UTF-8")
    }
}

/// What a fault report of a Python workload must say.
struct Expected<'a> {
    signal: i64,
    signal_name: &'a str,
    si_code: i64,
    thread_name: &'a str,
    /// The libcrash functions at the top of the stack, innermost first.
    c_frames: &'a [&'a str],
    /// The marker of the line of libcrash.c the innermost of them must be at (None: anywhere in the function).
    c_line_marker: Option<&'a str>,
    /// Whether libc frames may come before them (abort() raises the signal from inside libc).
    libc_on_top: bool,
    /// The Python frames, innermost first: the first is the caller, at the `# CRASH-LINE`.
    python: &'a [&'a str],
}

/// Checks one fault report of a Python workload field by field; returns it.
fn check_python_fault<'c>(crash: &'c PythonCrash, want: &Expected) -> &'c Report {
    let report = crash.only_report();
    let json = &report.json;
    let stack = report.stack();
    let shown =
        format!("the report {}.json:\n{}\nits stack:\n{}", report.base.display(), report.text, report.stack_text());

    // The file name, and the header fields.
    let name = report.base.file_name().and_then(|n| n.to_str()).expect("a file name");
    let prefix = format!("crash-{}-{}-", crash.pid, want.signal_name);
    assert!(name.starts_with(&prefix), "the report is named {name}, not {prefix}MILLIS; {shown}");
    assert_eq!(json.field("kind"), "fault", "kind; {shown}");
    assert_eq!(json.field("pid").i64(), i64::from(crash.pid), "pid; {shown}");
    assert_eq!(
        json.field("tid").i64(),
        i64::from(crash.tid),
        "tid (the crashing thread, as the workload saw it); {shown}"
    );
    assert_eq!(json.field("process_name").str(), "python3", "process_name; {shown}");
    assert_eq!(json.field("thread_name").str(), want.thread_name, "thread_name; {shown}");
    assert_eq!(json.field("signal").i64(), want.signal, "signal; {shown}");
    assert_eq!(json.field("signal_name").str(), want.signal_name, "signal_name; {shown}");
    assert_eq!(json.field("si_code").i64(), want.si_code, "si_code; {shown}");
    assert_eq!(json.field("python_version").opt_str(), Some("3.11"), "python_version; {shown}");
    check_time(json.field("time").str());
    assert_eq!(json.field("window_seconds").f64(), DEFAULT_WINDOW_SECONDS, "window_seconds; {shown}");
    crash.ended.assert_reported_in(report);

    // The C function(s) at the top.
    let lib = libcrash();
    let first_c =
        stack.iter().position(|f| f.in_module(lib)).unwrap_or_else(|| panic!("no frame of libcrash.so; {shown}"));
    if want.libc_on_top {
        for frame in &stack[..first_c] {
            assert!(
                frame.kind == "native" && frame.module.as_deref().is_some_and(|m| m.contains("/libc.so")),
                "only libc may come before {}: {frame}; {shown}",
                want.c_frames[0]
            );
        }
    } else {
        assert_eq!(first_c, 0, "the innermost frame is not in libcrash.so; {shown}");
    }
    let source = crash_sources().join("libcrash.c");
    let build_id = gnu_build_id(lib);
    for (i, function) in want.c_frames.iter().enumerate() {
        let frame = stack.get(first_c + i).unwrap_or_else(|| panic!("the stack ends before {function}; {shown}"));
        assert_eq!(
            (frame.kind.as_str(), frame.function.as_str()),
            ("native", *function),
            "frame #{}; {shown}",
            first_c + i
        );
        assert!(frame.in_module(lib), "{function} is not in {}; {shown}", lib.display());
        assert_eq!(frame.build_id.as_deref(), Some(build_id.as_str()), "{function}'s build-id; {shown}");
        assert!(
            frame.file.as_deref().is_some_and(|f| f.ends_with("/libcrash.c")),
            "{function} is not in libcrash.c; {shown}"
        );
        let line = frame.line.unwrap_or_else(|| panic!("{function} has no line; {shown}"));
        match (i, want.c_line_marker) {
            (0, Some(marker)) => {
                assert_eq!(line, marked_line(&source, marker), "the line of {function} (marked {marker}); {shown}")
            }
            _ => {
                let lines = c_function_lines(&source, function);
                assert!(lines.contains(&line), "{function} at line {line}, outside its lines {lines:?}; {shown}");
            }
        }
    }

    // Then only native frames (libffi, _ctypes, the interpreter) down to the Python caller.
    let after_c = first_c + want.c_frames.len();
    let first_python = stack.iter().position(|f| f.is_python()).unwrap_or_else(|| panic!("no Python frame; {shown}"));
    assert!(first_python >= after_c, "a Python frame above the C function; {shown}");
    for frame in &stack[after_c..first_python] {
        assert_eq!(frame.kind, "native", "between the C function and its Python caller: {frame}; {shown}");
    }
    let caller = &stack[first_python];
    assert_eq!(caller.function, want.python[0], "the Python caller; {shown}");
    assert_eq!(caller.file.as_deref(), Some(crash.script_name()), "the Python caller's file; {shown}");
    assert_eq!(caller.line, Some(crash.crash_line()), "the Python caller's line (# CRASH-LINE); {shown}");
    let python: Vec<&str> = stack.iter().filter(|f| f.is_python()).map(|f| f.function.as_str()).collect();
    assert_eq!(python, want.python, "the Python frames, innermost first; {shown}");
    assert!(!stack.iter().any(|f| f.kind == "truncated"), "the stack was cut short; {shown}");

    // The text report: the same on stderr as in the file, and saying the same as the JSON.
    assert!(crash.run.stderr.contains(&report.text), "the text report is not on the profiler's stderr; {shown}");
    let header =
        format!("crash: {} (python3 {}) in thread {} ({})", want.signal_name, crash.pid, want.thread_name, crash.tid);
    assert!(report.text.starts_with(&header), "the text report does not start with `{header}`; {shown}");
    assert!(report.text.contains("python: 3.11\n"), "the text report has no `python: 3.11`; {shown}");
    let c_line = format!("#{first_c:<3} {} at ", want.c_frames[0]);
    assert!(report.text.contains(&c_line), "the text report has no `{c_line}...`; {shown}");
    let py_line = format!("{} at {}:{} [python]", want.python[0], crash.script_name(), crash.crash_line());
    assert!(report.text.contains(&py_line), "the text report has no `{py_line}`; {shown}");
    assert!(
        crash.run.stderr.contains(&format!("crash report written to {}.txt", report.base.display())),
        "the profiler did not say where it wrote the report; {shown}"
    );
    report
}

/// The report's time is RFC 3339 UTC, like `2026-11-22T02:27:53Z`.
fn check_time(time: &str) {
    let bytes = time.as_bytes();
    let shape_ok = bytes.len() == 20
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            10 => *b == b'T',
            13 | 16 => *b == b':',
            19 => *b == b'Z',
            _ => b.is_ascii_digit(),
        });
    assert!(shape_ok, "the report's time is `{time}`, not RFC 3339 UTC");
}

/// Checks the last-window flame graph and pprof of a report: present, agreeing with `window_samples`, and showing
/// `function`.
fn check_window(report: &Report, function: &str, min_samples: i64) {
    let samples = report.json.field("window_samples").i64();
    assert!(
        samples >= min_samples,
        "only {samples} samples in the window before the crash, expected at least {min_samples}; {}",
        report.text
    );
    let files = file_names(report.base.parent().expect("a directory"));
    let svg = report.file("svg").unwrap_or_else(|| panic!("no flame graph next to the report: {files:?}"));
    let pprof = report.file("pb.gz").unwrap_or_else(|| panic!("no pprof next to the report: {files:?}"));
    let svg_text = fs::read_to_string(&svg).expect("reading the flame graph");
    assert!(svg_text.contains("<svg"), "{} is not an SVG", svg.display());
    assert!(svg_text.contains(function), "the flame graph {} does not name {function}", svg.display());
    let pprof_samples = pprof_samples(&read_pprof(&pprof));
    let total: u64 = pprof_samples.iter().map(|s| s.count).sum();
    assert_eq!(total as i64, samples, "the window's pprof and window_samples disagree");
    let in_function: u64 = pprof_samples
        .iter()
        .filter(|s| s.frames.iter().any(|f| f.is_python() && f.function == function))
        .map(|s| s.count)
        .sum();
    assert!(in_function > 0, "no sample of the window's pprof is in {function}");
}

/// Whether `address` is in an executable mapping among `maps`.
fn in_executable_mapping(maps: &[(u64, u64, String)], address: u64) -> bool {
    maps.iter().any(|(start, end, perms)| perms.contains('x') && (*start..*end).contains(&address))
}

fn parse_address(text: &str) -> u64 {
    let hex = text.strip_prefix("0x").unwrap_or_else(|| panic!("the address `{text}` does not start with 0x"));
    u64::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("the address `{text}` is not hex"))
}

// ---------------------------------------------------------------------------------------------------------------
// The scenarios

/// A NULL dereference in C (crash_here ← do_crash) reached through ctypes from `bad_handler` in a worker thread
/// named `crash-worker`, after 2 s of Python work in that thread: SIGSEGV, SEGV_MAPERR at 0x0, the worker's tid
/// and name, the C frames with their lines and build-id, the Python chain down to threading's bootstrap, and a
/// last-window flame graph and pprof showing the Python work.
#[test]
fn crash_segv_in_python_worker_thread() {
    if !require_root() {
        return;
    }
    let crash = crash_python("crash-segv-thread", "segv_thread.py", Reading::AsSoonAsItCan);
    crash.ended.assert_killed_by(libc::SIGSEGV);
    assert_ne!(crash.tid, crash.pid, "the workload should crash in a worker thread");
    let python = [&["bad_handler", "worker_main"][..], &THREAD_ROOT].concat();
    let report = check_python_fault(
        &crash,
        &Expected {
            signal: 11,
            signal_name: "SIGSEGV",
            si_code: SEGV_MAPERR,
            thread_name: "crash-worker",
            c_frames: &["crash_here", "do_crash"],
            c_line_marker: Some("SEGV-LINE"),
            libc_on_top: false,
            python: &python,
        },
    );
    // 2 s at 100 Hz is 200 samples; the machine's two cores are shared, so ask for a quarter.
    check_window(report, "busy_python_work", 50);
    assert_eq!(
        report.json.field("fault_address").opt_str(),
        Some("0x0"),
        "fault_address of a NULL store; {}",
        report.text
    );
    assert!(report.text.contains("fault address: 0x0 (si_code 1)"), "the text has no fault address:\n{}", report.text);
}

/// `abort()` in C (call_abort) called through ctypes from `give_up` in the main thread: SIGABRT raised inside
/// libc (SI_TKILL, no fault address), call_abort as the first frame below libc, the Python caller below it.
#[test]
fn crash_abort_from_c() {
    if !require_root() {
        return;
    }
    let crash = crash_python("crash-abort", "abort.py", Reading::AsSoonAsItCan);
    crash.ended.assert_killed_by(libc::SIGABRT);
    assert_eq!(crash.tid, crash.pid, "the workload should crash in its main thread");
    let report = check_python_fault(
        &crash,
        &Expected {
            signal: 6,
            signal_name: "SIGABRT",
            si_code: SI_TKILL,
            thread_name: "python3",
            c_frames: &["call_abort"],
            c_line_marker: None,
            libc_on_top: true,
            python: &["give_up", "main", "<module>"],
        },
    );
    assert!(report.json.field("fault_address").is_null(), "abort() has no fault address; {}", report.text);
    let stack = report.stack();
    assert!(
        // Named `__GI_abort` by libc's debug info.
        stack
            .iter()
            .take_while(|f| !f.in_module(libcrash()))
            .any(|f| f.function == "abort" || f.function.ends_with("_abort")),
        "libc's abort is not above call_abort:\n{}",
        report.stack_text()
    );
    check_window(report, "busy_python_work", 10);
}

/// An integer division by zero in C (`divide`, volatile operands: a real idiv) called through ctypes from
/// `compute_ratio`: SIGFPE, FPE_INTDIV, the fault address (the idiv's address) inside libcrash's code, `divide`
/// at the division's line.
#[test]
fn crash_sigfpe_integer_division() {
    if !require_root() {
        return;
    }
    let crash = crash_python("crash-fpe", "fpe.py", Reading::AsSoonAsItCan);
    crash.ended.assert_killed_by(libc::SIGFPE);
    let report = check_python_fault(
        &crash,
        &Expected {
            signal: 8,
            signal_name: "SIGFPE",
            si_code: FPE_INTDIV,
            thread_name: "python3",
            c_frames: &["divide"],
            c_line_marker: Some("FPE-LINE"),
            libc_on_top: false,
            python: &["compute_ratio", "main", "<module>"],
        },
    );
    let address =
        report.json.field("fault_address").opt_str().unwrap_or_else(|| panic!("no fault address; {}", report.text));
    let address = parse_address(address);
    assert!(!crash.libcrash_maps.is_empty(), "the workload had not mapped {}", libcrash().display());
    assert!(
        in_executable_mapping(&crash.libcrash_maps, address),
        "the fault address {address:#x} is not in libcrash's code {:x?}",
        crash.libcrash_maps
    );
}

/// A store into a shared mapping of a file truncated to nothing (`touch_truncated`, through ctypes from
/// `read_truncated`): SIGBUS, BUS_ADRERR, the fault address the mapping's address the workload printed.
#[test]
fn crash_sigbus_truncated_mmap() {
    if !require_root() {
        return;
    }
    let crash = crash_python("crash-sigbus", "sigbus.py", Reading::AsSoonAsItCan);
    crash.ended.assert_killed_by(libc::SIGBUS);
    let report = check_python_fault(
        &crash,
        &Expected {
            signal: 7,
            signal_name: "SIGBUS",
            si_code: BUS_ADRERR,
            thread_name: "python3",
            c_frames: &["touch_truncated"],
            c_line_marker: Some("BUS-LINE"),
            libc_on_top: false,
            python: &["read_truncated", "main", "<module>"],
        },
    );
    let printed = crash
        .ended
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix("touch_truncated: mapping at "))
        .unwrap_or_else(|| panic!("the workload did not print its mapping's address:\n{}", crash.ended.stderr));
    let address =
        report.json.field("fault_address").opt_str().unwrap_or_else(|| panic!("no fault address; {}", report.text));
    assert_eq!(parse_address(address), parse_address(printed.trim()), "the fault address; {}", report.text);
    // What the fault hit: a store into the truncated file's mapping, past the file's end.
    let fault = report.json.field("fault");
    let shown = format!("the report:\n{}", report.text);
    assert_eq!(fault.field("class").str(), "past_end_of_file", "fault.class; {shown}");
    assert_eq!(fault.field("access").str(), "write", "fault.access; {shown}");
    // The file was mapped just before the crash: the maps show it only if read while the process lived.
    let mapping = fault.field("mapping");
    if !mapping.is_null() {
        assert!(mapping.field("path").str().ends_with("/truncated.bin"), "fault.mapping; {shown}");
    }
    let line =
        report.text.lines().find(|l| l.starts_with("fault: ")).unwrap_or_else(|| panic!("no fault line; {shown}"));
    assert!(
        line.starts_with("fault: write of ") && line.contains(", past the end of ") && line.contains(" by `mov "),
        "the fault line says `{line}`; {shown}"
    );
}

/// Checks the `fault` and `registers` sections every fault report of libcrash has: the instruction decoded at an
/// instruction pointer inside libcrash's code, the registers with that rip, the text's `fault:` line and register
/// dump. Returns the `fault:` line.
fn check_fault_section<'r>(crash: &PythonCrash, report: &'r Report) -> &'r str {
    let shown = format!("the report:\n{}", report.text);
    let registers = report.json.field("registers");
    let rip = parse_address(registers.field("rip").str());
    assert!(
        in_executable_mapping(&crash.libcrash_maps, rip),
        "registers.rip {rip:#x} is not in libcrash's code {:x?}; {shown}",
        crash.libcrash_maps
    );
    for name in ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r15", "eflags", "orig_rax"] {
        assert!(registers.field(name).str().starts_with("0x"), "registers.{name}; {shown}");
    }
    let fault = report.json.field("fault");
    // Read at the crash while the process lived, else the copy read before it: either has libcrash.
    let maps = fault.field("maps").str();
    assert!(maps == "at_the_crash" || maps == "before_the_crash", "fault.maps is {maps}; {shown}");
    let at = fault.field("instruction_at").str();
    assert!(at.starts_with("libcrash.so+0x"), "fault.instruction_at is `{at}`; {shown}");
    assert!(report.text.contains("\nregisters:\n"), "the text has no register dump; {shown}");
    assert!(report.text.contains(&format!("rip {rip:#018x}")), "the register dump has no rip {rip:#x}; {shown}");
    report.text.lines().find(|l| l.starts_with("fault: ")).unwrap_or_else(|| panic!("no `fault:` line; {shown}"))
}

/// A read of the field at offset 0x18 of a struct through a NULL pointer (read_count ← sum_counts, through ctypes
/// from `read_config_count`): SIGSEGV at 0x18, and the report says what a reader needs — a read of NULL + 0x18
/// through rdi (which held 0), by `mov eax,[rdi+0x18]` in libcrash.so.
#[test]
fn crash_null_pointer_field_read() {
    if !require_root() {
        return;
    }
    let crash = crash_python("crash-null-field", "null_field.py", Reading::AsSoonAsItCan);
    crash.ended.assert_killed_by(libc::SIGSEGV);
    let report = check_python_fault(
        &crash,
        &Expected {
            signal: 11,
            signal_name: "SIGSEGV",
            si_code: SEGV_MAPERR,
            thread_name: "python3",
            c_frames: &["read_count", "sum_counts"],
            c_line_marker: Some("FIELD-LINE"),
            libc_on_top: false,
            python: &["read_config_count", "main", "<module>"],
        },
    );
    let shown = format!("the report:\n{}", report.text);
    assert_eq!(report.json.field("fault_address").opt_str(), Some("0x18"), "fault_address; {shown}");
    let line = check_fault_section(&crash, report);
    assert!(
        line.starts_with(
            "fault: read of NULL + 0x18 through rdi (no mapping) by `mov eax,[rdi+0x18]` in libcrash.so+0x"
        ),
        "the fault line says `{line}`; {shown}"
    );
    let fault = report.json.field("fault");
    assert_eq!(fault.field("class").str(), "null_page", "fault.class; {shown}");
    assert_eq!(fault.field("access").str(), "read", "fault.access; {shown}");
    assert_eq!(fault.field("instruction").str(), "mov eax,[rdi+0x18]", "fault.instruction; {shown}");
    assert_eq!(fault.field("address_from").str(), "rdi + 0x18", "fault.address_from; {shown}");
    assert!(fault.field("code_bytes").str().starts_with("8b 47 18"), "fault.code_bytes; {shown}");
    assert!(fault.field("mapping").is_null(), "nothing is mapped at 0x18; {shown}");
    assert_eq!(report.json.field("registers").field("rdi").str(), "0x0", "rdi held the NULL pointer; {shown}");
}

/// Unbounded C recursion (`recurse`) through ctypes from `descend` in a worker thread with a 256 KiB stack: SIGSEGV
/// in the guard page below that thread's stack, which the report calls a stack overflow of this thread's stack,
/// with `recurse` at the top.
#[test]
fn crash_stack_overflow_in_a_thread() {
    if !require_root() {
        return;
    }
    let crash = crash_python("crash-stack-overflow", "stack_overflow.py", Reading::AsSoonAsItCan);
    crash.ended.assert_killed_by(libc::SIGSEGV);
    let report = crash.only_report();
    let shown = format!("the report:\n{}\nits stack:\n{}", report.text, report.stack_text());
    let json = &report.json;
    assert_eq!(json.field("kind"), "fault", "kind; {shown}");
    assert_eq!(json.field("tid").i64(), i64::from(crash.tid), "tid; {shown}");
    assert_eq!(json.field("thread_name").str(), "deep-worker", "thread_name; {shown}");
    assert_eq!(json.field("signal_name").str(), "SIGSEGV", "signal_name; {shown}");
    let stack = report.stack();
    assert_eq!(stack.first().map(|f| f.function.as_str()), Some("recurse"), "the innermost frame; {shown}");
    assert!(stack[0].in_module(libcrash()), "recurse is not in libcrash.so; {shown}");

    let line = check_fault_section(&crash, report);
    let fault = json.field("fault");
    assert_eq!(fault.field("class").str(), "stack_overflow", "fault.class; {shown}");
    assert_eq!(fault.field("access").str(), "write", "a push or a store into the new frame; {shown}");
    assert!(
        line.contains("bytes below this thread's stack (a thread stack 0x") && line.contains(": a stack overflow"),
        "the fault line says `{line}`; {shown}"
    );
    // The address is within a page below the stack's start, and sp is on that stack or in its guard.
    let above = fault.field("mapping");
    let address = parse_address(fault.field("address").str());
    let sp = parse_address(json.field("registers").field("rsp").str());
    let guard_end = parse_address(above.field("end").str());
    assert_eq!(above.field("perms").str(), "---p", "the guard page; {shown}");
    assert!(address < guard_end && guard_end - address <= 4096, "the address {address:#x}; {shown}");
    assert!(sp.abs_diff(address) <= 4096, "sp {sp:#x} is not next to the fault; {shown}");
}

/// segv_thread.py with `faulthandler.enable()`: faulthandler prints its traceback and re-raises SIGSEGV, which is
/// generated a second time; the profiler reports the crash once, with the first signal's details (SEGV_MAPERR at
/// 0x0, not the re-raise's SI_TKILL) and the same stack as without faulthandler.
#[test]
fn crash_with_faulthandler_reports_once() {
    if !require_root() {
        return;
    }
    let crash = crash_python("crash-faulthandler", "faulthandler_segv.py", Reading::AsSoonAsItCan);
    crash.ended.assert_killed_by(libc::SIGSEGV);
    let traceback = format!("line {} in bad_handler", crash.crash_line());
    assert!(
        crash.ended.stderr.contains("Fatal Python error: Segmentation fault")
            && crash.ended.stderr.contains(&traceback),
        "faulthandler did not print its traceback (with `{traceback}`), so it did not run:\n{}",
        crash.ended.stderr
    );
    let python = [&["bad_handler", "worker_main"][..], &THREAD_ROOT].concat();
    let report = check_python_fault(
        &crash,
        &Expected {
            signal: 11,
            signal_name: "SIGSEGV",
            si_code: SEGV_MAPERR,
            thread_name: "fh-worker",
            c_frames: &["crash_here", "do_crash"],
            c_line_marker: Some("SEGV-LINE"),
            libc_on_top: false,
            python: &python,
        },
    );
    let printed = crash.run.stderr.matches("crash: SIGSEGV").count();
    assert_eq!(printed, 1, "the profiler printed {printed} crash reports:\n{}", crash.run.stderr);
    assert_eq!(
        report.json.field("fault_address").opt_str(),
        Some("0x0"),
        "fault_address of a NULL store; {}",
        report.text
    );
}

/// fpe.py again, with the profiler reading the crash only once the process is gone (stopped meanwhile, as a busy
/// machine can delay it): the report must still name the Python caller — `compute_ratio`, which no sample saw
/// before the crash — with its line, not `[unknown Python frame]`.
#[test]
fn crash_python_caller_is_named_when_the_profiler_reads_late() {
    if !require_root() {
        return;
    }
    let crash = crash_python("crash-read-late", "fpe.py", Reading::AfterTheProcessIsGone);
    crash.ended.assert_killed_by(libc::SIGFPE);
    check_python_fault(
        &crash,
        &Expected {
            signal: 8,
            signal_name: "SIGFPE",
            si_code: FPE_INTDIV,
            thread_name: "python3",
            c_frames: &["divide"],
            c_line_marker: Some("FPE-LINE"),
            libc_on_top: false,
            python: &["compute_ratio", "main", "<module>"],
        },
    );
}

/// A NULL dereference in libcrash loaded by ctypes after the recording started, half a second before the crash,
/// with no sample in it before: the report must still show crash_here ← do_crash from libcrash.so, then the
/// Python caller. The profiler learns of the new mapping from the mmap itself (not from a sample in it) and re-reads
/// the maps while the process lives; a profiler frozen the whole half second could not, since a dead process's
/// maps are gone, so this one runs normally.
#[test]
fn crash_in_a_library_loaded_just_before_the_crash() {
    if !require_root() {
        return;
    }
    let crash = crash_python("crash-late-load", "late_load.py", Reading::AsSoonAsItCan);
    crash.ended.assert_killed_by(libc::SIGSEGV);
    assert!(crash.libcrash_maps.is_empty(), "the workload mapped libcrash before it was profiled");
    check_python_fault(
        &crash,
        &Expected {
            signal: 11,
            signal_name: "SIGSEGV",
            si_code: SEGV_MAPERR,
            thread_name: "python3",
            c_frames: &["crash_here", "do_crash"],
            c_line_marker: Some("SEGV-LINE"),
            libc_on_top: false,
            python: &["crash_now", "main", "<module>"],
        },
    );
}

/// A Python process spinning in `spin_forever`, killed with SIGKILL by this test: a `killed` report naming this
/// process as the sender, with no stack, and the last window's flame graph showing the Python work.
#[test]
fn crash_sigkill_by_another_process() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("crash-sigkill");
    let script = stage_script(dir.path(), "spin_until_killed.py");
    let crash_dir = dir.join("crashes");
    let mut workload = Workload::start(&mut python_workload(&script, dir.path()));
    let pid = workload.pid();
    workload.wait_ready(dir.path());
    let mut record = profiler();
    record
        .args(["record", "--pid", &pid.to_string(), "--crash-dir"])
        .arg(&crash_dir)
        .arg("-o")
        .arg(dir.join("x.folded"));
    let recorder = Recorder::start_recording(&mut record);
    fs::write(dir.join("go"), "").expect("writing the go file");
    thread::sleep(Duration::from_secs(2));
    send_signal(pid, libc::SIGKILL);
    let ended = workload.wait_exit(Duration::from_secs(30));
    let run = recorder.finish(Duration::from_secs(60), "the profiler");
    eprintln!("crash-sigkill: the profiler's stderr:\n{}", run.stderr);
    run.assert_success();
    ended.assert_killed_by(libc::SIGKILL);
    ended.assert_reported_in(&read_reports(&crash_dir)[0]);

    let reports = read_reports(&crash_dir);
    assert_eq!(reports.len(), 1, "expected one report in {}: {:?}", crash_dir.display(), file_names(&crash_dir));
    let report = &reports[0];
    let json = &report.json;
    let shown = format!("the report:\n{}", report.text);
    let me = i64::from(std::process::id());
    let name = report.base.file_name().and_then(|n| n.to_str()).expect("a file name");
    assert!(name.starts_with(&format!("crash-{pid}-SIGKILL-")), "the report is named {name}");
    assert_eq!(json.field("kind").field("killed").field("sender_pid").i64(), me, "kind.killed.sender_pid; {shown}");
    assert_eq!(json.field("pid").i64(), i64::from(pid), "pid; {shown}");
    assert_eq!(json.field("signal").i64(), 9, "signal; {shown}");
    assert_eq!(json.field("signal_name").str(), "SIGKILL", "signal_name; {shown}");
    assert_eq!(json.field("process_name").str(), "python3", "process_name; {shown}");
    assert!(json.field("fault_address").is_null(), "fault_address; {shown}");
    assert_eq!(json.field("python_version").opt_str(), Some("3.11"), "python_version; {shown}");
    assert!(json.field("stack").array().is_empty(), "a killed process has no stack of its own; {shown}");
    check_time(json.field("time").str());
    assert!(report.text.contains(&format!("killed by PID {me}")), "the text does not name the sender; {shown}");
    assert!(run.stderr.contains(&report.text), "the text report is not on the profiler's stderr; {shown}");
    // 2 s of spinning at 100 Hz before the kill.
    check_window(report, "spin_forever", 50);
}

/// A native program followed by name (`record --name`): one instance running when the recording starts, crashing
/// when told to, then a second one started after the profiler — a restart — crashing by itself: a report for each,
/// with its own pid, the program's name and crash_here ← main on top.
#[test]
fn crash_in_process_followed_by_name() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("crash-by-name");
    let name = format!("crnm-{}", std::process::id() % 10_000_000);
    let exe = build_crash_by_name(&name);
    let go = dir.join("go");
    let crash_dir = dir.join("crashes");
    // `record --name` needs a process of that name to start with; it must keep following the name afterwards.
    let mut first = Workload::start(std::process::Command::new(&exe).arg(&go).arg("0"));
    wait_for_comm(first.pid(), &name);
    let mut record = profiler();
    record.args(["record", "--name", &name, "--duration", "15s", "--crash-dir"]).arg(&crash_dir);
    record.arg("-o").arg(dir.join("x.folded"));
    let recorder = Recorder::start_recording(&mut record);
    fs::write(&go, "").expect("writing the go file");
    let first_ended = first.wait_exit(Duration::from_secs(30));
    first_ended.assert_killed_by(libc::SIGSEGV);
    // Started after the profiler: it spins 1.5 s before crashing, time enough to be picked up by its name.
    let mut second = Workload::start(std::process::Command::new(&exe).arg(&go).arg("1500"));
    let second_ended = second.wait_exit(Duration::from_secs(30));
    second_ended.assert_killed_by(libc::SIGSEGV);
    let run = recorder.finish(Duration::from_secs(60), "the profiler");
    eprintln!("crash-by-name: the profiler's stderr:\n{}", run.stderr);
    run.assert_success();

    let reports = read_reports(&crash_dir);
    let pids = [first.pid(), second.pid()];
    assert_eq!(
        reports.len(),
        2,
        "expected a report for each of {pids:?} in {}: {:?}",
        crash_dir.display(),
        file_names(&crash_dir)
    );
    let source = crash_sources().join("crash-by-name.c");
    for ((report, pid), ended) in reports.iter().zip(pids).zip([&first_ended, &second_ended]) {
        ended.assert_reported_in(report);
        let json = &report.json;
        let shown = format!("the report:\n{}", report.text);
        assert_eq!(json.field("kind"), "fault", "kind; {shown}");
        assert_eq!(json.field("pid").i64(), i64::from(pid), "pid (the reports in time order); {shown}");
        assert_eq!(json.field("tid").i64(), i64::from(pid), "tid; {shown}");
        assert_eq!(json.field("process_name").str(), name, "process_name; {shown}");
        assert_eq!(json.field("thread_name").str(), name, "thread_name; {shown}");
        assert_eq!(json.field("signal_name").str(), "SIGSEGV", "signal_name; {shown}");
        assert_eq!(json.field("si_code").i64(), SEGV_MAPERR, "si_code; {shown}");
        assert!(json.field("python_version").is_null(), "python_version; {shown}");
        let stack = report.stack();
        let top: Vec<&str> = stack.iter().take(2).map(|f| f.function.as_str()).collect();
        assert_eq!(top, ["crash_here", "main"], "the top of the stack; {shown}{}", report.stack_text());
        assert!(stack[0].in_module(&exe), "crash_here is not in {}; {}", exe.display(), report.stack_text());
        assert_eq!(
            stack[0].line,
            Some(marked_line(&source, "SEGV-LINE")),
            "crash_here's line; {}",
            report.stack_text()
        );
        assert!(report.json.field("window_samples").i64() > 0, "no samples before the crash of {pid}; {shown}");
        assert_eq!(json.field("fault_address").opt_str(), Some("0x0"), "fault_address; {shown}");
    }
}

/// A target that ends normally with an exit code gets no report, but the log says how it ended (with `record --pid`,
/// the recording ends with it).
#[test]
fn exit_code_of_a_target_is_logged() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("exit-code");
    let crash_dir = dir.join("crashes");
    // Busy until the profiler is recording (the test creates `go`), then a little longer, then exit code 3: the
    // exit cannot come before the profiler attached, however slowly it starts.
    let go = dir.join("go");
    let busy_then_exit = "import os, sys, time\nwhile not os.path.exists(sys.argv[1]): pass\n\
                          end = time.time() + 0.5\nwhile time.time() < end: pass\nraise SystemExit(3)\n";
    let mut python = std::process::Command::new("/usr/bin/python3");
    python.args(["-c", busy_then_exit]).arg(&go);
    let mut workload = Workload::start(&mut python);
    let pid = workload.pid();
    let mut record = profiler();
    record.args(["record", "--pid", &pid.to_string(), "--crash-dir"]).arg(&crash_dir);
    record.arg("-o").arg(dir.join("x.folded"));
    let recorder = Recorder::start_recording(&mut record);
    std::fs::write(&go, "").unwrap();
    let ended = workload.wait_exit(Duration::from_secs(30));
    assert_eq!(ended.status.code(), Some(3), "the workload: {}", ended.stderr);
    let run = recorder.finish(Duration::from_secs(60), "the profiler");
    run.assert_success();
    let line = format!("PID {pid} (python3) exited with code 3");
    assert!(run.stderr.contains(&line), "the profiler's stderr does not say `{line}`:\n{}", run.stderr);
    assert!(read_reports(&crash_dir).is_empty(), "a normal exit is not a crash: {:?}", file_names(&crash_dir));
}

/// Waits until process `pid` carries the name `name` (it has exec'd).
fn wait_for_comm(pid: u32, name: &str) {
    let comm = Path::new("/proc").join(pid.to_string()).join("comm");
    for _ in 0..1000 {
        if fs::read_to_string(&comm).is_ok_and(|text| text.trim_end() == name) {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("process {pid} never got the name {name}");
}

/// A race in C between two Python threads (`reader` reads a buffer that `releaser` unmaps) with three more threads
/// busy elsewhere: the report shows the reader's fault and what every other thread was doing at that moment, each
/// with its own native + Python stack. The releaser was caught running in C right after the unmap; `locker` waits
/// in a futex in `wait_for_lock`, `sleeper` in `nap`'s sleep, `spinner` runs Python holding the GIL, and the main
/// thread waits in join().
#[test]
fn crash_report_shows_every_thread_at_a_race() {
    if !require_root() {
        return;
    }
    let crash = crash_python("crash-threads", "threads_at_crash.py", Reading::AsSoonAsItCan);
    crash.ended.assert_killed_by(libc::SIGSEGV);
    let report = crash.only_report();
    let stack: Vec<String> = report.stack().iter().map(|f| f.function.clone()).collect();
    let fault_at = |name: &str| stack.iter().position(|f| f == name);
    assert!(
        matches!((fault_at("race_read"), fault_at("read_shared_buffer")), (Some(c), Some(py)) if c < py),
        "the faulting stack is not race_read ← read_shared_buffer:\n{}",
        report.stack_text()
    );
    assert_eq!(report.json.field("thread_name").str(), "reader");
    let threads = report.threads();
    let summary: String = threads
        .iter()
        .map(|t| format!("{} {} {:?} {:?}: {:?}\n", t.name, t.state, t.syscall, t.gil, t.functions()))
        .collect();
    eprintln!("threads at the crash:\n{summary}\n{}", report.text);
    let thread = |name: &str| {
        let named: Vec<_> = threads.iter().filter(|t| t.name == name).collect();
        assert_eq!(named.len(), 1, "not exactly one thread named {name} in the report:\n{summary}");
        named[0].clone()
    };
    let calls = |thread: &profiler_tests::crash_report::ThreadAtCrash, chain: &[&str]| {
        let functions = thread.functions();
        let mut at = 0;
        chain.iter().all(|name| match functions[at..].iter().position(|f| f == name) {
            Some(found) => {
                at += found + 1;
                true
            }
            None => false,
        })
    };
    let releaser = thread("releaser");
    assert_eq!(releaser.state, "running", "the releaser spins in C:\n{summary}");
    assert!(
        calls(&releaser, &["race_after_release", "race_release", "release_shared_buffer", "releaser_main"]),
        "the releaser's stack does not go race_after_release ← race_release ← release_shared_buffer ← \
         releaser_main:\n{summary}"
    );
    let locker = thread("locker");
    assert_eq!((locker.state.as_str(), locker.syscall.as_deref()), ("waiting", Some("futex")), "{summary}");
    assert!(calls(&locker, &["wait_for_lock", "Thread.run"]), "the locker is not in wait_for_lock:\n{summary}");
    let sleeper = thread("sleeper");
    assert_eq!(sleeper.state, "waiting", "{summary}");
    // time.sleep is clock_nanosleep from 3.11, select before.
    assert!(
        matches!(sleeper.syscall.as_deref(), Some("clock_nanosleep" | "select" | "pselect6" | "nanosleep")),
        "the sleeper is not in a sleep: {:?}\n{summary}",
        sleeper.syscall
    );
    assert!(calls(&sleeper, &["nap", "Thread.run"]), "the sleeper is not in nap:\n{summary}");
    let spinner = thread("spinner");
    assert!(calls(&spinner, &["spin_python", "Thread.run"]), "the spinner is not in spin_python:\n{summary}");
    assert_eq!(spinner.gil.as_deref(), Some("held"), "the spinner runs Python: it holds the GIL\n{summary}");
    assert_eq!(report.json.field("gil_holder").opt_i64(), Some(i64::from(spinner.tid)), "{summary}");
    let main = thread("python3");
    assert_eq!((main.state.as_str(), main.syscall.as_deref()), ("waiting", Some("futex")), "{summary}");
    assert!(calls(&main, &["<module>"]), "the main thread is not in the script's join():\n{summary}");
    for other in [&releaser, &locker, &sleeper, &main] {
        assert_eq!(other.gil.as_deref(), Some("released"), "{} waits without the GIL\n{summary}", other.name);
    }
    assert!(report.text.contains("thread locker ("), "the text report lists the threads:\n{}", report.text);
    assert!(report.text.contains("waiting in futex"), "{}", report.text);
}

/// A process whose memory and thread count climb for 5 s before it crashes (grow_then_crash.py: +80 MiB, +5
/// threads): the report carries the timeline of the seconds before (JSON `memory`, a line of the text report) and
/// a chart of it next to the report (`.memory.svg`).
#[test]
fn crash_report_shows_memory_and_threads_climbing_before_the_crash() {
    if !require_root() {
        return;
    }
    let crash = crash_python("crash-grow", "grow_then_crash.py", Reading::AsSoonAsItCan);
    crash.ended.assert_killed_by(libc::SIGSEGV);
    let report = crash.only_report();
    let shown = format!("the report:\n{}", report.text);
    let points = report.json.field("memory").array();
    assert!(points.len() >= 4, "{} memory points in 5 s; {shown}", points.len());
    let rss_mib = |p: &serde_json::Value| {
        (p.field("rss_anon_kib").i64() + p.field("rss_file_kib").i64() + p.field("rss_shmem_kib").i64()) as f64 / 1024.0
    };
    let (first, last) = (&points[0], &points[points.len() - 1]);
    assert!(
        first.field("seconds_before").f64() > last.field("seconds_before").f64()
            && last.field("seconds_before").f64() <= 1.5,
        "points are oldest first and end within a second or so of the crash; {shown}"
    );
    assert!(
        rss_mib(last) - rss_mib(first) >= 40.0,
        "RSS went from {:.1} to {:.1} MiB; {shown}",
        rss_mib(first),
        rss_mib(last)
    );
    assert!(last.field("threads").i64() >= first.field("threads").i64() + 3, "threads did not climb; {shown}");
    assert!(report.text.contains("memory in the") && report.text.contains("threads"), "no memory line; {shown}");
    let chart = fs::read_to_string(report.file("memory.svg").expect("a .memory.svg next to the report")).unwrap();
    assert_eq!(chart.matches("<polyline").count(), 4, "RSS, anonymous, file and threads are drawn: {chart}");
}
