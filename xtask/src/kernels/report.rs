//! Step 4 of `cargo xtask kernels`: what the guest reported on its console (`@@` markers written by `init.sh`), and
//! the checks a user would make of it.
use std::collections::BTreeMap;

use super::Mode;

/// A scenario's progress: guest uptimes in seconds, and the profiler's exit code.
#[derive(Clone, Debug, Default)]
struct Step {
    start: Option<f64>,
    attached: Option<f64>,
    end: Option<f64>,
    rc: Option<i32>,
}

/// The guest's console, read.
#[derive(Debug, Default)]
pub(super) struct Report {
    pub(super) release: String,
    pub(super) paranoid: String,
    steps: BTreeMap<String, Step>,
    /// Files by name; a name sent twice (crash reports) keeps every copy.
    files: BTreeMap<String, Vec<String>>,
    pushes: Vec<String>,
    done: Option<f64>,
}

impl Report {
    pub(super) fn parse(console: &str) -> Report {
        let mut report = Report::default();
        let mut file: Option<(String, String)> = None;
        for line in console.lines() {
            // Kernel messages or a terminal reset may precede a marker on its line.
            let marker = line.find("@@").map(|at| &line[at + 2..]);
            if let Some((name, text)) = file.as_mut() {
                if marker == Some("eof") {
                    report.files.entry(name.clone()).or_default().push(std::mem::take(text));
                    file = None;
                } else {
                    text.push_str(line);
                    text.push('\n');
                }
                continue;
            }
            let Some(marker) = marker else { continue };
            let mut words = marker.split_whitespace();
            match words.next() {
                Some("kernel") => report.release = words.collect::<Vec<_>>().join(" "),
                Some("paranoid") => report.paranoid = words.collect::<Vec<_>>().join(" "),
                Some("file") => file = Some((words.next().unwrap_or("").to_owned(), String::new())),
                Some("push") => report.pushes.push(words.collect::<Vec<_>>().join(" ")),
                Some("done") => report.done = words.next().and_then(|w| w.parse().ok()),
                Some("step") => {
                    let (Some(name), Some(what)) = (words.next(), words.next()) else { continue };
                    let step = report.steps.entry(name.to_owned()).or_default();
                    let mut time = None;
                    for word in words {
                        if let Some(rc) = word.strip_prefix("rc=") {
                            step.rc = rc.parse().ok();
                        } else {
                            time = word.parse().ok();
                        }
                    }
                    match what {
                        "start" => step.start = time,
                        "attached" => step.attached = time,
                        "end" => step.end = time,
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        // The receiver's lines reach the console inside its log file.
        let pushes: Vec<String> = report
            .files
            .get("receiver.log")
            .into_iter()
            .flatten()
            .flat_map(|text| text.lines())
            .filter_map(|line| line.split_once("@@push ").map(|(_, push)| push.trim().to_owned()))
            .collect();
        report.pushes.extend(pushes);
        report
    }

    fn file(&self, name: &str) -> &str {
        self.files.get(name).and_then(|copies| copies.first()).map_or("", String::as_str)
    }

    /// Whether the guest's `/init` printed its first line (nothing of the profiler runs before it).
    pub(super) fn ran_its_script(&self) -> bool {
        !self.release.is_empty()
    }

    /// The guest kernel's (major, minor), from its release string.
    fn release_number(&self) -> Option<(u32, u32)> {
        let mut numbers = self.release.split(|c: char| !c.is_ascii_digit()).map(str::parse::<u32>);
        Some((numbers.next()?.ok()?, numbers.next()?.ok()?))
    }

    /// Seconds from starting the profiler to its programs being attached.
    pub(super) fn startup(&self, step: &str) -> Option<f64> {
        let step = self.steps.get(step)?;
        Some(step.attached? - step.start?)
    }

    /// The profiler's warnings in `log` (tracing's WARN lines), without their timestamps: what degrades.
    pub(super) fn warnings(&self, log: &str) -> Vec<String> {
        let mut warnings: Vec<String> = self
            .file(log)
            .lines()
            .filter_map(|line| line.split_once(" WARN ").map(|(_, message)| message.trim().to_owned()))
            .collect();
        warnings.dedup();
        warnings
    }
}

/// Samples per function name in folded stacks (a function counts once per stack).
fn function_samples(folded: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in folded.lines() {
        let Some((stack, count)) = line.rsplit_once(' ') else { continue };
        let Ok(count) = count.parse::<u64>() else { continue };
        let mut seen: Vec<&str> = Vec::new();
        for frame in stack.split(';') {
            // Python frames carry their file: `spin_step (/w/spin.py)`.
            let name = frame.split(" (").next().unwrap_or(frame);
            if !seen.contains(&name) {
                seen.push(name);
                *counts.entry(name.to_owned()).or_insert(0) += count;
            }
        }
    }
    counts
}

/// What a user would check, as a list of failures (empty when all is well).
pub(super) fn check(report: &Report, mode: Mode) -> Vec<String> {
    let mut failures = Vec::new();
    let mut fail = |message: String| failures.push(message);
    if !report.ran_its_script() {
        fail("the guest never ran its script (no @@kernel line on the console)".into());
        return failures;
    }
    let record_log = report.file("record.log");
    let error = |log: &str| log.lines().rfind(|l| l.starts_with("error:")).unwrap_or("(no error line)").to_owned();
    let record = report.steps.get("record").cloned().unwrap_or_default();
    if record.attached.is_none() {
        fail(format!("record: the programs were not loaded and attached: {}", error(record_log)));
    }
    if record.rc != Some(0) {
        fail(format!("record exited with {:?}: {}", record.rc, error(record_log)));
    }
    let samples = function_samples(report.file("record.folded"));
    let count = |name: &str| samples.get(name).copied().unwrap_or(0);
    if record.attached.is_some() {
        for name in ["hot_main_a", "hot_main_b", "lib_hot_x", "hot_b"] {
            if count(name) == 0 {
                fail(format!("record: no sample names native-burn's {name}"));
            }
        }
        let (a, b) = (count("hot_main_a"), count("hot_main_b"));
        if a + b >= 20 {
            let share = a as f64 / (a + b) as f64;
            // 60 % by construction; emulation and two busy vCPUs blur it, not this much.
            if !(0.45..=0.75).contains(&share) {
                fail(format!("record: hot_main_a has {:.0} % of hot_main_a + hot_main_b (60 % by construction; {a} and {b} samples)", share * 100.0));
            }
        } else {
            fail(format!("record: too few samples in hot_main_a and hot_main_b to judge their split ({a} and {b})"));
        }
        for name in ["spin_step", "spin_forever"] {
            if count(name) == 0 {
                fail(format!("record: no sample names the Python function {name} (tests/workloads/python/spin.py)"));
            }
        }
        if count("child_burn") == 0 {
            fail(
                "record: no sample names child_burn, from the child family forked after attaching (fork not followed)"
                    .into(),
            );
        }
        // Kernels before 6.8 refuse the off-CPU sampler (too complex for their verifiers): the agent says so and
        // goes on; from 6.8 on it must load and see the targets' threads leave their CPUs.
        let refused = record_log.lines().find(|l| l.contains("no off-CPU"));
        let before_6_8 = report.release_number().is_some_and(|version| version < (6, 8));
        if before_6_8 {
            if refused.is_none() {
                fail("record: no warning that this kernel has no off-CPU profiles".into());
            }
        } else if let Some(line) = refused {
            fail(format!("record: no off-CPU profile: {line}"));
        } else if function_samples(report.file("record.off-cpu.folded")).is_empty() {
            fail("record: the off-CPU profile is empty (no target thread was seen leaving its CPU)".into());
        }
        // The memory profile: grow.py's bytearrays, on every kernel (the resident-page counters are found in BTF).
        if let Some(line) = record_log.lines().find(|l| l.contains("no memory profiles")) {
            fail(format!("record: no memory profile: {line}"));
        } else if !function_samples(report.file("record.memory.folded")).contains_key("bytes_grow") {
            fail("record: the memory profile does not name grow.py's bytes_grow".into());
        }
        let crash = report.files.get("crash.txt").and_then(|c| c.first());
        match crash {
            None => fail("record: no crash report for crash-by-name's SIGSEGV".into()),
            Some(text) if !(text.contains("SIGSEGV") && text.contains("crash_here")) => {
                fail(format!("record: the crash report does not show SIGSEGV in crash_here:\n{text}"))
            }
            Some(_) => {}
        }
    }

    let run_log = report.file("run.log");
    let push = report.steps.get("push").cloned().unwrap_or_default();
    if push.attached.is_none() {
        fail(format!("run: the programs were not loaded and attached: {}", error(run_log)));
    } else {
        if push.rc != Some(0) {
            fail(format!("run exited with {:?} after SIGTERM: {}", push.rc, error(run_log)));
        }
        let good = |p: &&String| {
            p.starts_with("/push.v1.PusherService/Push ") && p.contains("service=yes") && p.contains("hot_main_a")
        };
        let wanted = if mode == Mode::Full { 2 } else { 1 };
        let received = report.pushes.iter().filter(good).count();
        if received < wanted {
            fail(format!(
                "run: {received} push(es) naming service kernels-smoke and hot_main_a reached the receiver, {wanted} \
                 wanted; it saw: {:?}",
                report.pushes
            ));
        }
    }
    if report.done.is_none() {
        fail("the guest's script did not finish".into());
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "\x1bc@@kernel 6.1.0-50-cloud-amd64\n@@paranoid 3\n@@step record start 4.10\n\
        @@step record attached 40.5\n@@step record end rc=0 60.25\n@@file record.folded\n\
        native-burn;main;run_main_loop;level_1;level_2;level_3;hot_main_a 30\n\
        native-burn;main;run_main_loop;level_1;level_2;level_3;hot_main_b 20\n\
        python3;python3;<module> (/w/spin.py);spin_forever (/w/spin.py);spin_step (/w/spin.py) 7\n\
        \n@@eof\n@@file crash.txt\nSIGSEGV in crash_here\n@@eof\n@@file crash.txt\nsecond\n@@eof\n\
        [   61.0] random kernel line\n@@push /push.v1.PusherService/Push application/proto 812 service=yes functions=hot_main_a\n\
        @@file receiver.log\n@@receiver listening\n@@push /push.v1.PusherService/Push application/proto 9 service=no functions=none\n\
        @@eof\n@@done 90.5\n";

    #[test]
    fn reads_the_console() {
        let report = Report::parse(CONSOLE);
        assert_eq!(report.release, "6.1.0-50-cloud-amd64");
        assert_eq!(report.paranoid, "3");
        let record = &report.steps["record"];
        assert_eq!(
            (record.start, record.attached, record.end, record.rc),
            (Some(4.1), Some(40.5), Some(60.25), Some(0))
        );
        assert_eq!(report.startup("record"), Some(36.4));
        assert_eq!(report.files["crash.txt"].len(), 2);
        assert!(report.file("record.folded").contains("hot_main_b 20"));
        assert_eq!(report.pushes.len(), 2);
        assert!(report.pushes[1].ends_with("service=no functions=none"), "{:?}", report.pushes);
        assert_eq!(report.done, Some(90.5));
    }

    #[test]
    fn counts_each_function_once_per_stack() {
        let counts = function_samples("p;main;f;f;g 3\np;main;f 2\n\np;x (/a.py);y (/a.py) 4\n");
        assert_eq!(counts["f"], 5);
        assert_eq!(counts["g"], 3);
        assert_eq!(counts["main"], 5);
        assert_eq!(counts["x"], 4);
    }

    #[test]
    fn names_what_failed() {
        let failures = check(&Report::parse(CONSOLE), Mode::Smoke);
        let all = failures.join("\n");
        assert!(all.contains("lib_hot_x"), "{all}");
        assert!(all.contains("child_burn"), "{all}");
        assert!(all.contains("run: the programs were not loaded"), "{all}");
        assert!(!all.contains("spin_step"), "{all}");
        assert!(!all.contains("crash report"), "{all}");
        assert!(!all.contains("split"), "{all}");
    }

    #[test]
    fn reads_warnings_without_timestamps() {
        let mut report = Report::default();
        report.files.insert(
            "record.log".into(),
            vec!["2026-12-06T23:00:00.1Z  WARN this kernel's BTF has no x\n2026-12-06T23:00:01Z  INFO fine\n".into()],
        );
        assert_eq!(report.warnings("record.log"), ["this kernel's BTF has no x"]);
    }
}
