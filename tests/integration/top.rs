//! `profiler top` used as a person uses it: in a terminal (tmux), reading the screen and typing keys. The numbers
//! on the screen are checked against what the workloads measure of themselves (split.py's CPU split) or know by
//! construction (gil.py's threads with and without the GIL).
use std::{path::Path, thread, time::Duration};

use profiler_tests::{
    exclusive_cpu, profiler, profiler_bin,
    python::debian_python,
    read_totals, require_root, run,
    terminal::{Terminal, EXITED},
    wait_for_totals, Process, TestDir,
};

/// A share on the screen must be within this many percentage points of the workload's own measurement, as for
/// `record` (tests/integration/python.rs).
const SHARE_TOLERANCE_PP: f64 = 5.0;
/// How long the view may take to show its first numbers: attaching, then one refresh.
const FIRST_VIEW: Duration = Duration::from_secs(60);

/// One row of the function table: `%Own %Total OwnTime TotalTime Function (file)`.
#[derive(Debug)]
struct FunctionRow {
    own_now: f64,
    total_now: f64,
    own_seconds: f64,
    total_seconds: f64,
    function: String,
}

/// One row of the threads panel: `CPU GIL-held Time Thread (TID, PID)`.
#[derive(Debug)]
struct ThreadRow {
    cpu_now: f64,
    /// `None`: `-` (no samples now) or `no Python`.
    gil_held_now: Option<f64>,
    thread: String,
}

/// The rows of the panel whose column header line contains `header`: the lines after it, up to the panel's end.
fn panel_rows<'s>(screen: &'s str, header: &str) -> Vec<Vec<&'s str>> {
    screen
        .lines()
        .skip_while(|line| !line.contains(header))
        .skip(1)
        .take_while(|line| !line.contains('└'))
        // Panels sit side by side: a row ends at its panel's right border.
        .map(|line| line.split('│').nth(1).unwrap_or("").split_whitespace().collect())
        .filter(|words: &Vec<&str>| !words.is_empty())
        .collect()
}

fn number(word: &str) -> f64 {
    word.trim_end_matches(['%', 's']).parse().unwrap_or_else(|_| panic!("not a number: {word:?}"))
}

fn functions(screen: &str) -> Vec<FunctionRow> {
    panel_rows(screen, "Function (file)")
        .into_iter()
        .map(|words| FunctionRow {
            own_now: number(words[0]),
            total_now: number(words[1]),
            own_seconds: number(words[2]),
            total_seconds: number(words[3]),
            function: words[4..].join(" "),
        })
        .collect()
}

fn threads(screen: &str) -> Vec<ThreadRow> {
    panel_rows(screen, "Thread (TID, PID)")
        .into_iter()
        .map(|words| {
            let (gil_held_now, rest) = match words[1] {
                "no" => (None, 4),
                "-" => (None, 3),
                held => (Some(number(held)), 3),
            };
            ThreadRow { cpu_now: number(words[0]), gil_held_now, thread: words[rest..].join(" ") }
        })
        .collect()
}

fn function<'r>(rows: &'r [FunctionRow], name: &str, screen: &str) -> &'r FunctionRow {
    rows.iter().find(|row| row.function == name).unwrap_or_else(|| panic!("no row `{name}` on the screen:\n{screen}"))
}

/// split.py's own CPU accounting (thread CPU time in each function, in ns) between two reads.
fn measured_shares(before: &Path, after_totals: &std::collections::HashMap<String, f64>) -> Vec<(String, f64)> {
    let before = read_totals(before);
    let cpu = after_totals["thread_cpu_ns"] - before["thread_cpu_ns"];
    ["py_hot", "lxml_parse", "numpy_compute"]
        .iter()
        .map(|name| (name.to_string(), (after_totals[*name] - before[*name]) / cpu))
        .collect()
}

/// The CPU split of split.py's main thread, as top's times since a reset show it, against the workload's own
/// accounting over the same stretch; then sorting, pausing and quitting by key.
#[test]
fn top_shows_where_a_python_program_spends_its_cpu() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("top-split");
    let python = debian_python();
    let stage = python.stage("top-split");
    let totals = stage.host("split.json");
    let mut workload = Process::start(
        &mut python.command(&stage.inside("split.py"), &[stage.inside("split.json").to_str().expect("UTF-8")]),
    );
    wait_for_totals(&mut workload, &totals, 3.0);
    let pid = workload.pid().to_string();
    let terminal = Terminal::start(dir.path(), &profiler_bin(), &["top", "--pid", &pid, "--rate", "200"], 160, 50);
    terminal.wait_for("py_hot row", FIRST_VIEW, |screen| screen.contains("py_hot (split.py)"));

    // From a reset, as a person comparing with their own clock would; the workload's totals at the same moments.
    let before = dir.join("before.json");
    std::fs::copy(&totals, &before).expect("copying split.py's totals");
    terminal.press("r");
    thread::sleep(Duration::from_secs(10));
    terminal.press("p");
    let after = read_totals(&totals);
    let screen = terminal.wait_for("paused view", Duration::from_secs(5), |screen| screen.contains("PAUSED"));
    let rows = functions(&screen);
    let thread_seconds = function(&rows, "<module> (split.py)", &screen).total_seconds;
    assert!(thread_seconds > 3.0, "only {thread_seconds} s of CPU since the reset:\n{screen}");
    let mut failures = Vec::new();
    for (name, truth) in measured_shares(&before, &after) {
        let row = function(&rows, &format!("{name} (split.py)"), &screen);
        let shown = row.total_seconds / thread_seconds;
        eprintln!("{name}: top {:.1}% of the thread's CPU, the workload measured {:.1}%", shown * 100.0, truth * 100.0);
        if (shown - truth).abs() * 100.0 > SHARE_TOLERANCE_PP {
            failures.push(format!("{name}: {:.1}% on the screen, {:.1}% measured", shown * 100.0, truth * 100.0));
        }
    }
    assert!(failures.is_empty(), "{}\n{screen}", failures.join("\n"));
    // The latest interval's shares are there too: the pure-Python loop, its own frame, a large share of it.
    let hot = function(&rows, "py_hot (split.py)", &screen);
    assert!(hot.own_now > 15.0 && hot.own_now <= hot.total_now, "{hot:?}\n{screen}");
    assert!(hot.own_seconds > 0.0 && hot.own_seconds <= hot.total_seconds, "{hot:?}\n{screen}");

    // Key 3 sorts by own time: the pure-Python loop, which does its work in its own frame, comes first.
    terminal.press("3");
    let sorted = terminal
        .wait_for("the view sorted by OwnTime", Duration::from_secs(5), |screen| screen.contains("sorted by OwnTime"));
    let first = &functions(&sorted)[0];
    assert_eq!(first.function, "py_hot (split.py)", "{sorted}");
    // Paused: the numbers stay as they were.
    thread::sleep(Duration::from_millis(1500));
    let still = terminal.screen();
    assert_eq!(functions(&still)[0].own_seconds, first.own_seconds, "the paused view changed:\n{still}");

    terminal.press("q");
    let ended = terminal.wait_for("the exit", Duration::from_secs(10), |screen| screen.contains(EXITED));
    assert!(ended.contains(&format!("{EXITED} 0")), "{ended}");
    // The terminal is the shell's again: the view's screen is gone.
    assert!(!ended.contains("Function (file)"), "{ended}");
    assert!(workload.child().try_wait().expect("polling the workload").is_none(), "top's exit ended the workload");
}

/// gil.py's threads: two spin in Python (holding the GIL when they run), one hashes without it.
#[test]
fn top_shows_each_threads_cpu_and_gil() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("top-gil");
    let python = debian_python();
    let stage = python.stage("top-gil");
    let mut workload = Process::start(&mut python.command(&stage.inside("gil.py"), &[]));
    workload.wait_for_threads(&["spinner", "hasher"]);
    let pid = workload.pid().to_string();
    let terminal = Terminal::start(dir.path(), &profiler_bin(), &["top", "--pid", &pid], 160, 50);
    terminal.wait_for("the threads", FIRST_VIEW, |screen| screen.contains("hasher") && screen.contains("spinner"));
    // A few refreshes, then freeze one to read.
    thread::sleep(Duration::from_secs(3));
    terminal.press("p");
    let screen = terminal.wait_for("paused view", Duration::from_secs(5), |screen| screen.contains("PAUSED"));
    let rows = threads(&screen);
    let row = |name: &str| {
        rows.iter()
            .find(|row| row.thread.starts_with(&format!("{name} (")))
            .unwrap_or_else(|| panic!("no thread {name}:\n{screen}"))
    };
    let (spinner, hasher) = (row("spinner"), row("hasher"));
    assert!(spinner.cpu_now > 2.0 && hasher.cpu_now > 2.0, "{spinner:?} {hasher:?}\n{screen}");
    assert!(spinner.gil_held_now.is_some_and(|held| held >= 80.0), "{spinner:?}\n{screen}");
    assert!(hasher.gil_held_now.is_some_and(|held| held <= 20.0), "{hasher:?}\n{screen}");
    let main = rows.iter().find(|row| row.thread.ends_with(&format!("({pid}, PID {pid})")));
    assert!(main.is_some_and(|main| main.gil_held_now.is_some_and(|held| held >= 80.0)), "{rows:?}\n{screen}");
    let functions = functions(&screen);
    for name in ["hash_forever (gil.py)", "spin (gil.py)", "main_spin (gil.py)"] {
        function(&functions, name, &screen);
    }
    assert!(screen.contains("GIL held in"), "{screen}");
    terminal.press("C-c");
    let ended = terminal.wait_for("the exit", Duration::from_secs(10), |screen| screen.contains(EXITED));
    assert!(ended.contains(&format!("{EXITED} 0")), "{ended}");
}

/// Without a terminal there is nothing to draw on: one line that says what to use instead.
#[test]
fn top_without_a_terminal_says_what_to_do() {
    let run = run(profiler().args(["top", "--pid", &std::process::id().to_string()]), Duration::from_secs(30));
    run.assert_one_line_error(&["needs a terminal", "profiler record"]);
}
