//! Python processes, on every CPython the project supports here (Debian's 3.11, the other 3.11 on PATH, 3.8–3.10 and
//! 3.12–3.15 in Ubuntu and Debian roots; see `profiler_tests::python`): Python stacks joined with the C-extension frames
//! they call, shares against the workload's own measurement, line numbers, GIL labels and `--gil-only`, and a Python
//! the profiler does not support.
use std::{
    collections::{BTreeMap, HashMap},
    fs,
    path::Path,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use profiler_tests::{
    exclusive_cpu,
    matrix::{self, Check},
    profiler,
    python::{marked_line, pprof_samples, python_2_7, python_interpreters, Interpreter, PprofFrame, PprofSample},
    read_pprof, read_totals, require_root, run, wait_for_totals, workloads, workspace_root, Folded, Process, Run,
    TestDir,
};

/// A profiler's share of a function must be within this many percentage points of the workload's measurement.
const SHARE_TOLERANCE_PP: f64 = 5.0;
/// Of the main thread's samples, at least this share must reach the script's `<module>` frame.
const REACHES_MODULE: f64 = 0.99;
/// split.py's three functions, each called as `<module>` → `main` → `dispatch` → it.
const SPLIT_FUNCTIONS: [&str; 3] = ["py_hot", "lxml_parse", "numpy_compute"];
/// Long and fast enough for shares within a few points even when the workload gets only part of a CPU.
const SPLIT_DURATION: &str = "8s";
const SPLIT_RATE: &str = "200";

// ---------------------------------------------------------------------------------------------------------------
// The known split: split.py

/// What one recording of split.py left, with the workload's own account of the same stretch of time.
struct SplitRecording {
    interpreter: String,
    pid: u32,
    /// The script as the interpreter (and so the profiler) names it.
    script: String,
    run: Run,
    folded: Folded,
    samples: Vec<PprofSample>,
    /// Share of the main thread's CPU time spent in each function, measured by the workload.
    truth: BTreeMap<String, f64>,
    /// The main thread's CPU time over the recording, measured by the workload.
    truth_cpu_seconds: f64,
}

impl SplitRecording {
    /// The main thread's samples.
    fn main_thread(&self) -> Vec<&PprofSample> {
        let tid = self.pid.to_string();
        self.samples.iter().filter(|s| s.label("thread_id") == Some(tid.as_str())).collect()
    }

    /// Where the script's `<module>` frame is in `frames`, if it is there.
    fn module_frame(&self, frames: &[PprofFrame]) -> Option<usize> {
        frames.iter().position(|f| f.is_python() && f.function == "<module>" && f.file == self.script)
    }

    /// Whether `frames` run `<module>` → `main` → `dispatch` → `function` with nothing between them, and where
    /// `function` is.
    fn chain_to(&self, frames: &[PprofFrame], function: &str) -> Option<usize> {
        let module = self.module_frame(frames)?;
        let chain = ["main", "dispatch", function];
        let ok = chain.iter().enumerate().all(|(i, name)| {
            frames.get(module + 1 + i).is_some_and(|f| f.is_python() && f.function == *name && f.file == self.script)
        });
        ok.then_some(module + chain.len())
    }
}

/// split.py recorded under each interpreter, once per test run: the split and line-number tests read the same
/// recording.
fn split_recording(interpreter: &Interpreter) -> Arc<SplitRecording> {
    static CACHE: Mutex<Vec<Arc<SplitRecording>>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(recording) = cache.iter().find(|r| r.interpreter == interpreter.name) {
        return recording.clone();
    }
    let recording = Arc::new(record_split(interpreter));
    cache.push(recording.clone());
    recording
}

fn record_split(interpreter: &Interpreter) -> SplitRecording {
    let _cpu = exclusive_cpu();
    let dir = TestDir::new(&format!("python-split-{}", interpreter.name));
    let stage = interpreter.stage("split");
    let totals = stage.host("split.json");
    let script = stage.inside("split.py");
    let mut workload =
        Process::start(&mut interpreter.command(&script, &[stage.inside("split.json").to_str().expect("UTF-8")]));
    // Past the imports and the first calls, which do one-time work (caches, lazy initialisation).
    wait_for_totals(&mut workload, &totals, 3.0);
    let before = read_split_totals(&totals);
    let mut record = profiler();
    record.args(["record", "--pid", &workload.pid().to_string(), "--duration", SPLIT_DURATION, "--rate", SPLIT_RATE]);
    record.arg("-o").arg(dir.join("x.folded")).arg("-o").arg(dir.join("x.pb.gz"));
    let run = run(&mut record, Duration::from_secs(120));
    let after = read_split_totals(&totals);
    let pid = workload.pid();
    drop(workload);
    run.assert_success();
    eprintln!("split.py under {}:\n{}", interpreter.name, run.stderr);

    let cpu_ns = after["thread_cpu_ns"] - before["thread_cpu_ns"];
    let truth =
        SPLIT_FUNCTIONS.iter().map(|f| (f.to_string(), (after[*f] - before[*f]) as f64 / cpu_ns as f64)).collect();
    SplitRecording {
        interpreter: interpreter.name.clone(),
        pid,
        script: script.to_str().expect("UTF-8").to_owned(),
        folded: Folded::read(&dir.join("x.folded")),
        samples: pprof_samples(&read_pprof(&dir.join("x.pb.gz"))),
        run,
        truth,
        truth_cpu_seconds: cpu_ns as f64 / 1e9,
    }
}

/// The numbers of split.py's JSON file, by key: `thread_cpu_ns`, `writes` and one per function.
fn read_split_totals(path: &Path) -> HashMap<String, u64> {
    let numbers = read_totals(path);
    for key in ["thread_cpu_ns", "writes"].iter().chain(&SPLIT_FUNCTIONS) {
        assert!(numbers.contains_key(*key), "{} has no {key}: {numbers:?}", path.display());
    }
    numbers.into_iter().map(|(key, value)| (key, value as u64)).collect()
}

/// Root to leaf, `<module>` → `main` → `dispatch` → each function → (lxml, numpy) the C-extension frames it called;
/// each function's share of the main thread within ±5 points of what the workload measured; ≥ 99% of the main
/// thread's samples reaching `<module>`; folded stacks agreeing with pprof.
#[test]
fn python_split_matches_the_workloads_measurement() {
    if !require_root() {
        return;
    }
    let _keep_on_failure = TestDir::new("python-split-check");
    let mut failures = Vec::new();
    for interpreter in python_interpreters() {
        let rec = split_recording(interpreter);
        let name = &rec.interpreter;
        let main = rec.main_thread();
        let total: u64 = main.iter().map(|s| s.count).sum();
        assert!(total >= 200, "{name}: only {total} samples of the main thread; stderr:\n{}", rec.run.stderr);

        let reaching: u64 = main.iter().filter(|s| rec.module_frame(&s.frames).is_some()).map(|s| s.count).sum();
        let reach = reaching as f64 / total as f64;
        let before_module: u64 = main
            .iter()
            .filter(|s| rec.module_frame(&s.frames).is_some_and(|m| s.frames[..m].iter().any(PprofFrame::is_python)))
            .map(|s| s.count)
            .sum();
        let mut report = format!(
            "{name}: {total} main-thread samples ({:.1} s of CPU by the workload's clock); {:.1}% reach <module>",
            rec.truth_cpu_seconds,
            100.0 * reach
        );
        if reach < REACHES_MODULE {
            failures.push(format!("{name}: only {:.1}% of the main thread's samples reach <module>", 100.0 * reach));
        }
        if before_module > 0 {
            failures.push(format!("{name}: {before_module} samples have Python frames above <module>"));
        }
        // The process's native entry (the C runtime's start, Python's own main) runs the Python code: it must never
        // show up below a Python frame.
        let entry_below: Vec<&PprofSample> = main
            .iter()
            .copied()
            .filter(|s| {
                s.frames.iter().position(PprofFrame::is_python).is_some_and(|first| {
                    s.frames[first..].iter().any(|f| {
                        !f.is_python()
                            && (f.function.starts_with("__libc_start")
                                || ["_start", "Py_BytesMain", "Py_RunMain", "main"].contains(&f.function.as_str()))
                    })
                })
            })
            .collect();
        let entry_below_count: u64 = entry_below.iter().map(|s| s.count).sum();
        if entry_below_count > 0 {
            let example: Vec<String> = entry_below[0].frames.iter().map(describe_frame).collect();
            failures.push(format!(
                "{name}: {entry_below_count} of {total} samples show the process's native entry below Python frames, \
                 e.g. {}",
                example.join(" → ")
            ));
        }

        for function in SPLIT_FUNCTIONS {
            let in_chain: Vec<(&PprofSample, usize)> =
                main.iter().filter_map(|s| Some((*s, rec.chain_to(&s.frames, function)?))).collect();
            let count: u64 = in_chain.iter().map(|(s, _)| s.count).sum();
            let anywhere: u64 = main
                .iter()
                .filter(|s| s.frames.iter().any(|f| f.is_python() && f.function == function))
                .map(|s| s.count)
                .sum();
            let share = count as f64 / total as f64;
            let truth = rec.truth[function];
            report += &format!("\n  {function:>13}: {:5.1}% (truth {:5.1}%)", 100.0 * share, 100.0 * truth);
            if (share - truth).abs() * 100.0 > SHARE_TOLERANCE_PP {
                failures.push(format!(
                    "{name}: {function} has {:.1}% of the main thread's samples, the workload measured {:.1}%",
                    100.0 * share,
                    100.0 * truth
                ));
            }
            if anywhere > count + count / 100 {
                failures.push(format!(
                    "{name}: {} of {anywhere} samples in {function} do not show <module> → main → dispatch → it",
                    anywhere - count
                ));
            }

            // The C-extension frames the function called, right below it.
            type Pick = fn(&[PprofFrame]) -> bool;
            let checks: &[(&str, Pick, f64)] = match function {
                "lxml_parse" => &[
                    ("called straight into lxml", |below| first_in(below, "/lxml/"), 0.90),
                    (
                        "reached libxml2",
                        |below| below.iter().any(|f| f.mapping.contains("libxml2") || f.function.starts_with("xml")),
                        0.50,
                    ),
                ],
                "numpy_compute" => &[
                    ("called straight into numpy", |below| first_in(below, "/numpy/"), 0.90),
                    (
                        "reached _multiarray_umath",
                        |below| below.iter().any(|f| f.mapping.contains("_multiarray_umath")),
                        0.90,
                    ),
                ],
                _ => &[],
            };
            for (what, pick, at_least) in checks {
                let (hits, misses): (Vec<(&PprofSample, usize)>, Vec<_>) =
                    in_chain.iter().partition(|(s, at)| pick(&s.frames[at + 1..]));
                let fraction = hits.iter().map(|(s, _)| s.count).sum::<u64>() as f64 / count.max(1) as f64;
                report += &format!("; {:.0}% {what}", 100.0 * fraction);
                if fraction < *at_least {
                    failures.push(format!(
                        "{name}: only {:.1}% of {function}'s samples {what} (at least {:.0}% expected); the others \
                         most often, from {function} down:{}",
                        100.0 * fraction,
                        100.0 * at_least,
                        describe_below(&misses)
                    ));
                }
            }

            // The folded file says the same, in its own notation.
            let file = &rec.script;
            let chain = format!("<module> ({file});main ({file});dispatch ({file});{function} ({file})");
            let folded: u64 =
                rec.folded.stacks.iter().filter(|(frames, _)| frames.join(";").contains(&chain)).map(|(_, c)| c).sum();
            if folded != count {
                failures.push(format!("{name}: {folded} folded samples show `{chain}`, pprof has {count}"));
            }
        }
        eprintln!("{report}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    matrix::all_passed(Check::Shares);
}

/// Whether the first frame of `below` is native code from a module whose path contains `part`. A truncation
/// marker right below the Python function is the profiler saying native frames are missing there (it could not
/// unwind through a frame deeper down): not a wrong frame, so the check looks at what follows it.
fn first_in(below: &[PprofFrame], part: &str) -> bool {
    below
        .iter()
        .find(|f| !f.function.starts_with("[truncated"))
        .is_some_and(|f| !f.is_python() && f.mapping.contains(part))
}

/// A frame for failure messages: its name, or its module's file name when it has none.
fn describe_frame(frame: &PprofFrame) -> String {
    let module = frame.mapping.rsplit('/').next().unwrap_or(&frame.mapping);
    match (frame.function.is_empty(), frame.is_python()) {
        (true, _) => format!("[{module}]"),
        (false, true) => frame.function.clone(),
        (false, false) => format!("{} [{module}]", frame.function),
    }
}

/// The commonest stacks below a function (its frame included), for failure messages.
fn describe_below(in_chain: &[(&PprofSample, usize)]) -> String {
    let mut stacks: BTreeMap<String, u64> = BTreeMap::new();
    for (s, at) in in_chain {
        let names: Vec<String> = s.frames[*at..].iter().map(describe_frame).collect();
        *stacks.entry(names.join(" → ")).or_default() += s.count;
    }
    commonest(&stacks, 3)
}

/// The `n` commonest of `stacks`, one per line.
fn commonest(stacks: &BTreeMap<String, u64>, n: usize) -> String {
    let mut stacks: Vec<(&String, &u64)> = stacks.iter().collect();
    stacks.sort_by(|a, b| b.1.cmp(a.1));
    stacks.iter().take(n).map(|(stack, count)| format!("\n    {count}× {stack}")).collect()
}

/// Line numbers in pprof are the source lines: most of `py_hot`'s own samples (it is the innermost Python frame)
/// are on its loop's hot line (marked `# HOT-LINE` in split.py), and its callers are on the lines that call it.
#[test]
fn python_line_numbers_match_the_source() {
    if !require_root() {
        return;
    }
    let _keep_on_failure = TestDir::new("python-lines-check");
    let source = workspace_root().join("tests/workloads/python/split.py");
    let hot = marked_line(&source, "# HOT-LINE");
    let callers = [
        ("<module>", marked_line(&source, "# MODULE-CALL")),
        ("main", marked_line(&source, "# MAIN-CALL")),
        ("dispatch", marked_line(&source, "# DISPATCH-CALL")),
    ];
    let mut failures = Vec::new();
    for interpreter in python_interpreters() {
        let rec = split_recording(interpreter);
        let name = &rec.interpreter;
        let mut lines: BTreeMap<i64, u64> = BTreeMap::new();
        let mut caller_lines: BTreeMap<(&str, i64), u64> = BTreeMap::new();
        for sample in rec.main_thread() {
            let Some(at) = rec.chain_to(&sample.frames, "py_hot") else { continue };
            for (caller, _) in &callers {
                let frame = sample.frames[..at].iter().rev().find(|f| f.function == *caller).expect("in the chain");
                *caller_lines.entry((caller, frame.line)).or_default() += sample.count;
            }
            // py_hot's own samples: it is the innermost Python frame (native frames below it, if any, are what it
            // called; whether they belong there is the split test's business).
            if !sample.frames[at + 1..].iter().any(PprofFrame::is_python) {
                *lines.entry(sample.frames[at].line).or_default() += sample.count;
            }
        }
        let leaf: u64 = lines.values().sum();
        let on_hot = lines.get(&hot).copied().unwrap_or(0);
        eprintln!("{name}: py_hot's own samples by line {lines:?} (hot line {hot}); callers' lines {caller_lines:?}");
        if leaf < 50 {
            failures.push(format!("{name}: only {leaf} samples with py_hot as the innermost Python frame"));
        } else if on_hot * 2 <= leaf {
            failures.push(format!("{name}: {on_hot} of py_hot's {leaf} own samples are on line {hot}: {lines:?}"));
        }
        for (caller, line) in callers {
            let total: u64 = caller_lines.iter().filter(|((c, _), _)| *c == caller).map(|(_, n)| n).sum();
            let right = caller_lines.get(&(caller, line)).copied().unwrap_or(0);
            if (right as f64) < 0.95 * total as f64 {
                failures.push(format!(
                    "{name}: {caller} is on line {line} (where it calls down) in only {right} of {total} samples"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    matrix::all_passed(Check::Lines);
}

// ---------------------------------------------------------------------------------------------------------------
// Threads and the GIL: gil.py

/// The GIL state of a Python thread's samples must be the expected one in at least this share of them.
const GIL_STATE_SHARE: f64 = 0.80;

/// One thread's samples by GIL state.
#[derive(Default, Clone)]
struct ThreadGil {
    name: String,
    held: u64,
    released: u64,
    unlabelled: u64,
    total: u64,
    /// Samples that reach the thread's Python entry: the script's `<module>`, or threading's `Thread._bootstrap`.
    reaches_entry: u64,
    /// The innermost frames of the samples, by `gil` label value (`-` when there is none), for failure messages.
    stacks: BTreeMap<String, BTreeMap<String, u64>>,
}

impl std::fmt::Debug for ThreadGil {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} samples, {} gil=held, {} gil=released, {} unlabelled, {} reach the Python entry",
            self.name, self.total, self.held, self.released, self.unlabelled, self.reaches_entry
        )
    }
}

impl ThreadGil {
    /// The commonest stacks (innermost frames) of the samples with this `gil` label value.
    fn stacks_with(&self, gil: &str) -> String {
        self.stacks.get(gil).map_or_else(String::new, |stacks| commonest(stacks, 3))
    }
}

fn gil_by_thread(samples: &[PprofSample], script: &str) -> BTreeMap<String, ThreadGil> {
    let mut threads: BTreeMap<String, ThreadGil> = BTreeMap::new();
    for sample in samples {
        let tid = sample.label("thread_id").unwrap_or("?").to_owned();
        let entry = threads.entry(tid).or_default();
        entry.name = sample.label("thread_name").unwrap_or("?").to_owned();
        let innermost: Vec<String> = sample.frames.iter().rev().take(6).rev().map(describe_frame).collect();
        let state = sample.label("gil").unwrap_or("-").to_owned();
        *entry.stacks.entry(state).or_default().entry(innermost.join(" → ")).or_default() += sample.count;
        match sample.label("gil") {
            Some("held") => entry.held += sample.count,
            Some("released") => entry.released += sample.count,
            _ => entry.unlabelled += sample.count,
        }
        entry.total += sample.count;
        // The main thread starts in the script's <module>; the others in threading's Thread._bootstrap.
        let first_python = sample.frames.iter().find(|f| f.is_python());
        if first_python.is_some_and(|f| {
            (f.function == "<module>" && f.file == script)
                || (f.function.ends_with("_bootstrap") && f.file.ends_with("threading.py"))
        }) {
            entry.reaches_entry += sample.count;
        }
    }
    threads
}

/// Every thread shows up under its name and id; the two threads spinning in Python hold the GIL in their samples,
/// the thread hashing in C (which releases the GIL) does not; `--gil-only` keeps the first and drops the second. On a
/// free-threaded build there is no GIL: no sample has a `gil` label (not even `released`), and `--gil-only` keeps
/// nothing.
#[test]
fn python_threads_and_gil_labels() {
    if !require_root() {
        return;
    }
    let _keep_on_failure = TestDir::new("python-gil-check");
    let mut failures = Vec::new();
    for interpreter in python_interpreters() {
        let name = &interpreter.name;
        let _cpu = exclusive_cpu();
        let dir = TestDir::new(&format!("python-gil-{name}"));
        let stage = interpreter.stage("gil");
        let script = stage.inside("gil.py");
        let script = script.to_str().expect("UTF-8");
        let mut workload = Process::start(&mut interpreter.command(Path::new(script), &[]));
        workload.wait_for_threads(&["spinner", "hasher"]);
        thread::sleep(Duration::from_millis(300));
        let threads = workload.threads();
        let record = |gil_only: bool, duration: &str, output: &str| {
            let mut record = profiler();
            record.args(["record", "--pid", &workload.pid().to_string(), "--duration", duration]);
            if gil_only {
                record.arg("--gil-only");
            }
            record.arg("-o").arg(dir.join(output));
            let run = run(&mut record, Duration::from_secs(120));
            run.assert_success();
            pprof_samples(&read_pprof(&dir.join(output)))
        };
        let all = gil_by_thread(&record(false, "6s", "all.pb.gz"), script);
        let held_only = gil_by_thread(&record(true, "5s", "gil-only.pb.gz"), script);
        drop(workload);
        eprintln!("{name}: threads {threads:?}\n  all samples: {all:?}\n  --gil-only: {held_only:?}");

        // Expected: (name, GIL held?) per thread; the main thread keeps the process's name.
        for (tid, thread_name) in &threads {
            let holds_gil = thread_name != "hasher";
            let Some(seen) = all.get(&tid.to_string()) else {
                failures.push(format!("{name}: thread {tid} ({thread_name}) has no samples"));
                continue;
            };
            if seen.name != *thread_name {
                failures.push(format!("{name}: thread {tid} is labelled {:?}, not {thread_name:?}", seen.name));
            }
            if seen.total < 20 {
                failures.push(format!("{name}: thread {tid} ({thread_name}) has only {} samples", seen.total));
                continue;
            }
            if (seen.reaches_entry as f64) < REACHES_MODULE * seen.total as f64 {
                failures.push(format!(
                    "{name}: only {} of {thread_name}'s {} samples reach its Python entry",
                    seen.reaches_entry, seen.total
                ));
            }
            if interpreter.free_threaded {
                if seen.unlabelled != seen.total {
                    failures.push(format!(
                        "{name}: a free-threaded build has no GIL, yet {} of {thread_name}'s samples have a gil label \
                         ({seen:?})",
                        seen.total - seen.unlabelled
                    ));
                }
                continue;
            }
            let (expected, share) = if holds_gil {
                ("held", seen.held as f64 / seen.total as f64)
            } else {
                ("released", seen.released as f64 / seen.total as f64)
            };
            let other = if holds_gil { "released" } else { "held" };
            eprintln!(
                "{name}: {thread_name}: {} samples, {:.1}% gil={expected}, {:.1}% reach its Python entry; gil={other} \
                 in:{}",
                seen.total,
                100.0 * share,
                100.0 * seen.reaches_entry as f64 / seen.total as f64,
                seen.stacks_with(other)
            );
            if share < GIL_STATE_SHARE {
                failures.push(format!(
                    "{name}: only {:.1}% of {thread_name}'s samples have gil={expected} ({seen:?}); those with \
                     gil={other} most often end in:{}",
                    100.0 * share,
                    seen.stacks_with(other)
                ));
            }
            if seen.unlabelled > 0 {
                failures.push(format!("{name}: {} of {thread_name}'s samples have no gil label", seen.unlabelled));
            }
        }

        if interpreter.free_threaded {
            let kept: u64 = held_only.values().map(|t| t.total).sum();
            if kept > 0 {
                failures
                    .push(format!("{name}: --gil-only kept {kept} samples of a build without a GIL: {held_only:?}"));
            }
            continue;
        }

        let released: u64 = held_only.values().map(|t| t.released + t.unlabelled).sum();
        if released > 0 {
            failures.push(format!("{name}: --gil-only kept {released} samples without the GIL: {held_only:?}"));
        }
        let count = |threads: &BTreeMap<String, ThreadGil>, wanted: &str| -> u64 {
            threads.values().filter(|t| t.name == wanted).map(|t| t.total).sum()
        };
        let spinner = count(&held_only, "spinner");
        let hasher = count(&held_only, "hasher");
        if spinner < 20 {
            failures.push(format!("{name}: --gil-only left only {spinner} samples of the spinning thread"));
        }
        if hasher as f64 > (1.0 - GIL_STATE_SHARE) * (spinner + hasher) as f64 {
            failures.push(format!(
                "{name}: --gil-only kept {hasher} samples of the hashing thread (and {spinner} of the spinning one)"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for interpreter in python_interpreters() {
        let cell = if interpreter.free_threaded { "✓ (no GIL, no label)" } else { "✓" };
        matrix::passed(Check::ThreadsGil, interpreter, cell);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Threads by their Python names

/// Threads named only through `threading` (named_threads.py: no prctl) carry those names, on every interpreter:
/// the `thread_name` label of each thread's samples, its context frame in the folded stacks, and its entry in
/// `profiler dump` is the name threading gives it (read from the interpreter's memory), even where the kernel's
/// name is the process's.
#[test]
fn python_threads_go_by_their_threading_names() {
    if !require_root() {
        return;
    }
    let _keep_on_failure = TestDir::new("python-thread-names-check");
    let mut failures = Vec::new();
    for interpreter in python_interpreters() {
        let name = &interpreter.name;
        let _cpu = exclusive_cpu();
        let dir = TestDir::new(&format!("python-thread-names-{name}"));
        let stage = interpreter.stage("thread-names");
        let script = stage.inside("named_threads.py");
        let ready = stage.inside("names.json");
        let mut workload = Process::start(&mut interpreter.command(&script, &[ready.to_str().expect("UTF-8")]));
        let truth = wait_for_names(&mut workload, &stage.host("names.json"));
        let mut record = profiler();
        record.args(["record", "--pid", &workload.pid().to_string(), "--duration", "3s"]);
        record.arg("-o").arg(dir.join("x.pb.gz")).arg("-o").arg(dir.join("x.folded"));
        let recorded = run(&mut record, Duration::from_secs(120));
        let kernel_names = workload.threads();
        // `profiler dump` names the threads the same way.
        let dumped = run(profiler().args(["dump", "--pid", &workload.pid().to_string()]), Duration::from_secs(120));
        drop(workload);
        recorded.assert_success();
        dumped.assert_success();
        for (tid, wanted) in &truth {
            if !dumped.stdout.contains(&format!("thread {wanted} ({tid}): ")) {
                failures.push(format!("{name}: `profiler dump` does not list thread {tid} as {wanted:?}"));
            }
        }
        let samples = pprof_samples(&read_pprof(&dir.join("x.pb.gz")));
        let folded = Folded::read(&dir.join("x.folded"));
        let mut labelled: BTreeMap<u32, BTreeMap<String, u64>> = BTreeMap::new();
        for sample in &samples {
            let tid = sample.label("thread_id").and_then(|tid| tid.parse().ok()).unwrap_or(0);
            let thread_name = sample.label("thread_name").unwrap_or("-").to_owned();
            *labelled.entry(tid).or_default().entry(thread_name).or_default() += sample.count;
        }
        eprintln!("{name}: threading's names {truth:?}\n  kernel's {kernel_names:?}\n  labels {labelled:?}");
        let context_frames: Vec<String> = folded.threads().into_iter().map(|(thread, _)| thread).collect();
        for (tid, wanted) in &truth {
            match labelled.get(tid) {
                None => failures.push(format!("{name}: thread {tid} ({wanted}) has no samples")),
                Some(names) if names.len() != 1 || !names.contains_key(wanted) => {
                    failures.push(format!("{name}: thread {tid} is labelled {names:?}, not {wanted:?}"))
                }
                Some(_) => {}
            }
            if !context_frames.contains(wanted) {
                failures.push(format!("{name}: no folded stack starts in thread {wanted:?}: {context_frames:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    matrix::all_passed(Check::ThreadNames);
}

/// The `{native_id: name}` named_threads.py writes once all its threads run.
fn wait_for_names(workload: &mut Process, path: &Path) -> BTreeMap<u32, String> {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = fs::read_to_string(path) {
            let names: BTreeMap<String, String> = serde_json::from_str(&text).expect("names.json is JSON");
            assert_eq!(names.len(), 7, "named_threads.py runs 7 threads: {names:?}");
            return names.into_iter().map(|(tid, name)| (tid.parse().expect("a TID"), name)).collect();
        }
        if let Some(status) = workload.child().try_wait().expect("polling the workload") {
            panic!("named_threads.py exited before its threads ran ({status})");
        }
        assert!(Instant::now() < give_up, "named_threads.py did not write {} within 30 s", path.display());
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// What the profiler cannot read

/// Lines of the profiler's stderr that are log warnings (tracing's `WARN` level).
fn warnings(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|line| line.contains("WARN")).collect()
}

/// Python 2.7 (Ubuntu focal) is not supported: the recording still succeeds, with native stacks only (the
/// interpreter's own frames, no Python frames, no GIL labels) and exactly one warning that names the process and
/// the reason.
#[test]
fn unsupported_python_degrades_to_native_stacks_with_one_warning() {
    if !require_root() {
        return;
    }
    let interpreter = python_2_7();
    assert_eq!(interpreter.version, (2, 7));
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("python-unsupported");
    let stage = interpreter.stage("unsupported");
    let mut workload = Process::start(&mut interpreter.command(&stage.inside("spin.py"), &[]));
    thread::sleep(Duration::from_millis(500));
    if let Some(status) = workload.child().try_wait().expect("polling the workload") {
        panic!("spin.py under {} exited ({status})", interpreter.name);
    }
    let pid = workload.pid();
    let mut record = profiler();
    record.args(["record", "--pid", &pid.to_string(), "--duration", "3s"]);
    record.arg("-o").arg(dir.join("x.pb.gz")).arg("-o").arg(dir.join("x.folded"));
    let run = run(&mut record, Duration::from_secs(60));
    drop(workload);
    run.assert_success();
    eprintln!("{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "the profiler panicked:\n{}", run.stderr);

    let warnings = warnings(&run.stderr);
    assert_eq!(warnings.len(), 1, "expected exactly one warning, got:\n{}", run.stderr);
    for mention in [pid.to_string().as_str(), "2.7", "not supported"] {
        assert!(warnings[0].contains(mention), "the warning does not mention `{mention}`: {}", warnings[0]);
    }

    let samples = pprof_samples(&read_pprof(&dir.join("x.pb.gz")));
    let total: u64 = samples.iter().map(|s| s.count).sum();
    assert!(total >= 50, "only {total} samples:\n{}", run.stderr);
    let python: u64 = samples.iter().filter(|s| s.frames.iter().any(PprofFrame::is_python)).map(|s| s.count).sum();
    assert_eq!(python, 0, "{python} samples have Python frames for an unsupported Python");
    let labelled: u64 = samples.iter().filter(|s| s.label("gil").is_some()).map(|s| s.count).sum();
    assert_eq!(labelled, 0, "{labelled} samples have a gil label for an unsupported Python");
    let in_eval: u64 =
        samples.iter().filter(|s| s.frames.iter().any(|f| f.function == "PyEval_EvalFrameEx")).map(|s| s.count).sum();
    assert!(
        in_eval as f64 >= 0.9 * total as f64,
        "only {in_eval} of {total} samples show Python 2's native evaluation loop PyEval_EvalFrameEx"
    );
}

/// A process that is not Python at all gets no Python frames, no GIL labels and no warnings.
#[test]
fn non_python_process_has_no_python_frames_or_warnings() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("python-none");
    let workload = Process::start(std::process::Command::new(&workloads().one_busy_thread).arg("60"));
    let mut record = profiler();
    record.args(["record", "--pid", &workload.pid().to_string(), "--duration", "2s"]);
    record.arg("-o").arg(dir.join("x.pb.gz"));
    let run = run(&mut record, Duration::from_secs(60));
    drop(workload);
    run.assert_success();
    assert!(warnings(&run.stderr).is_empty(), "warnings for a process that is not Python:\n{}", run.stderr);
    let samples = pprof_samples(&read_pprof(&dir.join("x.pb.gz")));
    assert!(samples.iter().map(|s| s.count).sum::<u64>() >= 50, "too few samples:\n{}", run.stderr);
    assert!(
        samples.iter().all(|s| !s.frames.iter().any(PprofFrame::is_python) && s.label("gil").is_none()),
        "Python frames or gil labels in a process that is not Python"
    );
}

/// A Python profile read with `go tool pprof` as a user reads it: the interpreter named as the profile's main
/// binary (`File:`), the workload's hottest Python function among the top functions, the labels in `-traces`, and
/// `-tagfocus` on a label keeping the thread's samples or none.
#[test]
fn go_tool_pprof_reads_a_python_profile_with_the_interpreter_as_main_binary() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let interpreter = profiler_tests::python::debian_python();
    let dir = TestDir::new("python-go-pprof");
    let stage = interpreter.stage("go-pprof");
    let totals = stage.host("split.json");
    let mut workload = Process::start(
        &mut interpreter.command(&stage.inside("split.py"), &[stage.inside("split.json").to_str().expect("UTF-8")]),
    );
    wait_for_totals(&mut workload, &totals, 1.0);
    let pid = workload.pid();
    let executable = fs::read_link(format!("/proc/{pid}/exe")).expect("the workload's executable");
    let executable = executable.file_name().and_then(|n| n.to_str()).expect("a file name").to_owned();
    let mut record = profiler();
    record.args(["record", "--pid", &pid.to_string(), "--duration", "3s"]);
    let profile = dir.join("x.pb.gz");
    record.arg("-o").arg(&profile);
    let run = run(&mut record, Duration::from_secs(60));
    drop(workload);
    run.assert_success();

    use profiler_tests::go_pprof::go_pprof;
    let top = go_pprof(&["-top", "-nodecount=15"], &profile);
    assert!(top.contains(&format!("File: {executable}\n")), "the main binary is not {executable}:\n{top}");
    assert!(top.contains("Type: cpu\n"), "not a CPU profile:\n{top}");
    let named = |text: &str, function: &str| text.lines().any(|line| line.split_whitespace().last() == Some(function));
    assert!(named(&top, "py_hot"), "py_hot (about half the thread's time) is not among the top functions:\n{top}");
    let traces = go_pprof(&["-traces"], &profile);
    for label in [format!("pid:  {pid}"), format!("thread_id:  {pid}"), "gil:  held".to_owned()] {
        assert!(traces.contains(&label), "no `{label}` label in the traces:\n{traces}");
    }
    // Anchored: a bare number would be taken for a range of numeric label values, and ours are strings.
    let main_thread = go_pprof(&["-top", &format!("-tagfocus=thread_id=^{pid}$")], &profile);
    assert!(named(&main_thread, "py_hot"), "-tagfocus on the main thread lost its samples:\n{main_thread}");
    let nothing = go_pprof(&["-top", "-tagfocus=thread_id=nonesuch"], &profile);
    assert!(nothing.contains("matched no samples"), "-tagfocus on no thread kept samples:\n{nothing}");
}
