//! What `profiler top` shows, computed from the CPU profile of each refresh: functions by self and total time,
//! threads with their CPU and GIL share, endpoints when samples carry the label.
//!
//! Each refresh's profile is folded in as the latest interval (the percentages: what runs now) and added to the
//! totals since the start or the last reset (the times: where the CPU went overall), as `py-spy top` does. Kept
//! apart from drawing so the arithmetic is tested without a terminal.
use std::collections::{HashMap, HashSet};

use crate::{
    aggregate::{file_name, label_value, Frame, FrameKind, Profile},
    labels::ENDPOINT,
    symbolize,
};

/// The name of the row holding a module's frames that have no name (no symbol, no debug info).
pub(crate) const UNNAMED: &str = "[unnamed]";

/// One function as the table lists it: a name and where it lives (a Python file, a native module or the kernel).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct FunctionKey {
    pub name: String,
    pub location: String,
}

/// Samples of the latest interval and nanoseconds since the start, for self (leaf) and total (on the stack).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct FunctionTimes {
    pub own_now: u64,
    pub total_now: u64,
    pub own_ns: u64,
    pub total_ns: u64,
}

/// One thread's CPU: samples of the latest interval, how many of them held the GIL, and its time since the start.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ThreadTimes {
    pub name: String,
    pub pid: u32,
    pub samples_now: u64,
    /// `None` for a thread of a process without a Python interpreter (no `gil` label).
    pub gil_held_now: Option<u64>,
    pub cpu_ns: u64,
}

/// The columns the function table can be sorted by (keys 1 to 4, as in `py-spy top`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum SortBy {
    #[default]
    OwnNow,
    TotalNow,
    OwnTime,
    TotalTime,
}

impl SortBy {
    pub(crate) fn from_key(key: char) -> Option<SortBy> {
        match key {
            '1' => Some(SortBy::OwnNow),
            '2' => Some(SortBy::TotalNow),
            '3' => Some(SortBy::OwnTime),
            '4' => Some(SortBy::TotalTime),
            _ => None,
        }
    }

    fn value(self, times: &FunctionTimes) -> u64 {
        match self {
            SortBy::OwnNow => times.own_now,
            SortBy::TotalNow => times.total_now,
            SortBy::OwnTime => times.own_ns,
            SortBy::TotalTime => times.total_ns,
        }
    }
}

/// Everything the view draws from.
#[derive(Debug, Default)]
pub(crate) struct LiveStats {
    /// Functions are told apart by line too (`l` toggles): which line of a function is hot.
    pub by_line: bool,
    functions: HashMap<FunctionKey, FunctionTimes>,
    threads: HashMap<u32, ThreadTimes>,
    /// Endpoint → (samples of the latest interval, nanoseconds since the start).
    endpoints: HashMap<String, (u64, u64)>,
    /// Samples of the latest interval, and how many of them were of Python threads holding the GIL.
    pub samples_now: u64,
    pub gil_held_now: u64,
    /// Samples of Python threads (those with a `gil` label) in the latest interval.
    pub python_samples_now: u64,
    /// The latest interval's length, and the CPU time its samples stand for.
    pub interval_ns: u64,
    pub cpu_now_ns: u64,
    /// The CPU time one sample stands for.
    pub period_ns: u64,
    /// Samples since the start or the last reset.
    pub samples: u64,
}

impl LiveStats {
    /// Makes `profile` (one refresh interval's CPU samples) the latest interval and adds it to the totals.
    pub(crate) fn add_interval(&mut self, profile: &Profile) {
        for times in self.functions.values_mut() {
            (times.own_now, times.total_now) = (0, 0);
        }
        for thread in self.threads.values_mut() {
            (thread.samples_now, thread.gil_held_now) = (0, None);
        }
        for endpoint in self.endpoints.values_mut() {
            endpoint.0 = 0;
        }
        (self.samples_now, self.gil_held_now, self.python_samples_now) = (0, 0, 0);
        self.interval_ns = profile.duration_ns;
        self.period_ns = profile.period;
        let mut seen: HashSet<&FunctionKey> = HashSet::new();
        let keys: Vec<Option<FunctionKey>> = profile.frames.iter().map(|frame| self.key(frame)).collect();
        for stack in &profile.stacks {
            let ns = stack.count.saturating_mul(profile.period);
            self.samples_now += stack.count;
            seen.clear();
            let mut leaf = true;
            for key in stack.frames.iter().filter_map(|&id| keys[id as usize].as_ref()) {
                let first = seen.insert(key);
                let times = self.functions.entry(key.clone()).or_default();
                if leaf {
                    times.own_now += stack.count;
                    times.own_ns += ns;
                    leaf = false;
                }
                if first {
                    times.total_now += stack.count;
                    times.total_ns += ns;
                }
            }
            self.add_thread(stack.count, ns, &stack.labels);
            if let Some(endpoint) = label_value(&stack.labels, ENDPOINT) {
                let times = self.endpoints.entry(endpoint.to_owned()).or_default();
                times.0 += stack.count;
                times.1 += ns;
            }
        }
        self.samples += self.samples_now;
        self.cpu_now_ns = self.samples_now.saturating_mul(profile.period);
    }

    fn add_thread(&mut self, count: u64, ns: u64, labels: &[crate::aggregate::Label]) {
        let number = |key| label_value(labels, key).and_then(|value| value.parse::<u32>().ok());
        let Some(tid) = number("thread_id") else { return };
        let thread = self.threads.entry(tid).or_default();
        thread.pid = number("pid").unwrap_or_default();
        if let Some(name) = label_value(labels, "thread_name") {
            if thread.name != name {
                name.clone_into(&mut thread.name);
            }
        }
        thread.samples_now += count;
        thread.cpu_ns += ns;
        if let Some(gil) = label_value(labels, "gil") {
            let held = u64::from(gil == "held") * count;
            *thread.gil_held_now.get_or_insert(0) += held;
            self.gil_held_now += held;
            self.python_samples_now += count;
        }
    }

    /// Forgets everything: the totals start again from now.
    pub(crate) fn reset(&mut self) {
        *self = LiveStats { by_line: self.by_line, ..LiveStats::default() };
    }

    /// The table's key for `frame`; `None` for the synthetic frames (thread, process, truncation markers).
    fn key(&self, frame: &Frame) -> Option<FunctionKey> {
        let location = match frame.kind {
            FrameKind::Context | FrameKind::Truncated => return None,
            FrameKind::Kernel => "kernel".to_owned(),
            FrameKind::Python | FrameKind::Native => match (&frame.file, &frame.module) {
                (Some(file), _) => match (self.by_line, frame.line) {
                    (true, Some(line)) => format!("{}:{line}", file_name(file)),
                    _ => file_name(file).to_owned(),
                },
                (None, Some(module)) => file_name(&module.path).to_owned(),
                (None, None) => String::new(),
            },
        };
        // Each unnamed instruction would be its own row: one row per module says where they are.
        let name = if frame.kind == FrameKind::Native && symbolize::is_unnamed(frame) {
            UNNAMED.to_owned()
        } else {
            frame.function.to_string()
        };
        Some(FunctionKey { name, location })
    }

    /// Functions with samples since the start, the largest first by `sort` (then by total time, then by name).
    pub(crate) fn functions(&self, sort: SortBy) -> Vec<(&FunctionKey, &FunctionTimes)> {
        let mut rows: Vec<_> = self.functions.iter().collect();
        rows.sort_by(|a, b| (sort.value(b.1), b.1.total_ns, a.0).cmp(&(sort.value(a.1), a.1.total_ns, b.0)));
        rows
    }

    /// Threads seen since the start, the busiest now first (then by CPU time since the start).
    pub(crate) fn threads(&self) -> Vec<(u32, &ThreadTimes)> {
        let mut rows: Vec<_> = self.threads.iter().map(|(&tid, times)| (tid, times)).collect();
        rows.sort_by(|a, b| (b.1.samples_now, b.1.cpu_ns, a.0).cmp(&(a.1.samples_now, a.1.cpu_ns, b.0)));
        rows
    }

    /// Endpoints seen since the start, the busiest now first: (name, samples now, nanoseconds since the start).
    pub(crate) fn endpoints(&self) -> Vec<(&str, u64, u64)> {
        let mut rows: Vec<_> = self.endpoints.iter().map(|(name, &(now, ns))| (name.as_str(), now, ns)).collect();
        rows.sort_by(|a, b| (b.1, b.2, a.0).cmp(&(a.1, a.2, b.0)));
        rows
    }

    /// The share of the latest interval's samples `count` is, in percent.
    pub(crate) fn percent_now(&self, count: u64) -> f64 {
        if self.samples_now == 0 {
            0.0
        } else {
            count as f64 * 100.0 / self.samples_now as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::aggregate::{Aggregator, Label, LabelValue, Module};

    const MS: u64 = 1_000_000;

    fn labels(tid: u32, name: &str, gil: Option<&str>, endpoint: Option<&str>) -> Vec<Label> {
        let mut labels = vec![
            Label { key: "pid", value: LabelValue::Str("100".into()) },
            Label { key: "thread_id", value: LabelValue::Str(tid.to_string()) },
            Label { key: "thread_name", value: LabelValue::Str(name.into()) },
        ];
        labels.extend(gil.map(|gil| Label { key: "gil", value: LabelValue::Str(gil.into()) }));
        labels.extend(endpoint.map(|e| Label { key: ENDPOINT, value: LabelValue::Str(e.into()) }));
        labels
    }

    fn line(mut frame: Frame, line: u32) -> Frame {
        frame.line = Some(line);
        frame
    }

    /// 100 ms of samples at 10 ms each: `handler` calls `parse` (3 samples in parse, 1 in handler itself) on the
    /// main thread holding the GIL, and a worker thread spins in native `crunch` without it (2 samples), and a
    /// recursive `walk` (leaf walk ← walk ← main).
    fn interval() -> Profile {
        let mut aggregator = Aggregator::new(10 * MS);
        let main = Frame::python("main", "/srv/app/main.py");
        let handler = Frame::python("handler", "/srv/app/api.py");
        let parse = line(Frame::python("parse", "/srv/app/api.py"), 7);
        let mut crunch = Frame::native("crunch");
        crunch.module =
            Some(Arc::new(Module { path: "/usr/lib/libcrunch.so".into(), build_id: None, executable: false }));
        let walk = Frame::python("walk", "/srv/app/tree.py");
        let unnamed =
            |address: u64| Frame { function: format!("[libcrunch.so+{address:#x}]").into(), address, ..crunch.clone() };
        let thread = |name: &str| Frame { kind: FrameKind::Context, ..Frame::native(name) };
        let held = || labels(1, "MainThread", Some("held"), Some("/quakes"));
        for _ in 0..3 {
            aggregator.add([&parse, &handler, &main, &thread("MainThread")], held());
        }
        aggregator.add([&line(parse.clone(), 9), &handler, &main, &thread("MainThread")], held());
        aggregator.add([&handler, &main, &thread("MainThread")], held());
        for _ in 0..2 {
            aggregator.add([&crunch, &thread("worker")], labels(2, "worker", Some("released"), None));
        }
        for address in [0x10, 0x20] {
            aggregator.add([&unnamed(address), &crunch, &thread("worker")], labels(2, "worker", None, None));
        }
        aggregator.add([&walk, &walk, &main, &thread("MainThread")], labels(1, "MainThread", Some("held"), None));
        let mut profile = aggregator.take();
        profile.duration_ns = 100 * MS;
        profile
    }

    fn find<'s>(stats: &'s LiveStats, name: &str) -> &'s FunctionTimes {
        stats.functions(SortBy::OwnNow).into_iter().find(|(key, _)| key.name == name).expect(name).1
    }

    #[test]
    fn counts_self_at_the_leaf_and_total_once_per_sample() {
        let mut stats = LiveStats::default();
        stats.add_interval(&interval());
        assert_eq!(stats.samples_now, 10);
        assert_eq!(
            *find(&stats, "parse"),
            FunctionTimes { own_now: 4, total_now: 4, own_ns: 40 * MS, total_ns: 40 * MS }
        );
        assert_eq!(find(&stats, "handler").own_now, 1);
        assert_eq!(find(&stats, "handler").total_now, 5);
        assert_eq!(find(&stats, "main").total_now, 6);
        // Recursion counts once towards the total.
        assert_eq!((find(&stats, "walk").own_now, find(&stats, "walk").total_now), (1, 1));
        // Thread frames are not functions.
        assert!(stats.functions(SortBy::OwnNow).iter().all(|(key, _)| key.name != "MainThread"));
        let first = stats.functions(SortBy::OwnNow)[0].0.clone();
        assert_eq!(first, FunctionKey { name: "parse".into(), location: "api.py".into() });
        assert_eq!(stats.functions(SortBy::TotalNow)[0].0.name, "main");
        assert_eq!((find(&stats, "crunch").own_now, find(&stats, "crunch").total_now), (2, 4));
        // Unnamed instructions of a module are one row.
        assert_eq!(find(&stats, UNNAMED).own_now, 2);
        let crunch = stats.functions(SortBy::OwnNow).into_iter().find(|(k, _)| k.name == "crunch").unwrap().0;
        assert_eq!(crunch.location, "libcrunch.so");
    }

    #[test]
    fn lines_split_a_function_when_asked() {
        let mut stats = LiveStats { by_line: true, ..LiveStats::default() };
        stats.add_interval(&interval());
        let parse: Vec<_> = stats.functions(SortBy::OwnNow).into_iter().filter(|(k, _)| k.name == "parse").collect();
        assert_eq!(parse.len(), 2);
        assert_eq!(parse[0].0.location, "api.py:7");
        assert_eq!(parse[0].1.own_now, 3);
    }

    #[test]
    fn the_latest_interval_replaces_the_last_and_times_add_up() {
        let mut stats = LiveStats::default();
        stats.add_interval(&interval());
        let mut only_main = Aggregator::new(10 * MS);
        only_main.add([&Frame::python("main", "/srv/app/main.py")], labels(1, "MainThread", Some("released"), None));
        let mut second = only_main.take();
        second.duration_ns = 100 * MS;
        stats.add_interval(&second);
        assert_eq!(stats.samples_now, 1);
        assert_eq!(stats.samples, 11);
        assert_eq!(find(&stats, "parse").own_now, 0);
        assert_eq!(find(&stats, "parse").own_ns, 40 * MS);
        assert_eq!(find(&stats, "main").total_ns, 70 * MS);
        assert_eq!(stats.percent_now(find(&stats, "main").total_now), 100.0);
        // The GIL share is of this interval only.
        assert_eq!((stats.gil_held_now, stats.python_samples_now), (0, 1));
        // Endpoints and threads keep their times with nothing now.
        assert_eq!(stats.endpoints(), vec![("/quakes", 0, 50 * MS)]);
        stats.reset();
        assert!(stats.functions(SortBy::OwnNow).is_empty());
        assert_eq!(stats.samples, 0);
    }

    #[test]
    fn threads_carry_their_cpu_and_gil_share() {
        let mut stats = LiveStats::default();
        stats.add_interval(&interval());
        let threads = stats.threads();
        assert_eq!(threads.len(), 2);
        let (tid, main) = threads[0];
        assert_eq!((tid, main.name.as_str(), main.samples_now, main.gil_held_now), (1, "MainThread", 6, Some(6)));
        assert_eq!(main.cpu_ns, 60 * MS);
        assert_eq!(threads[1].1.gil_held_now, Some(0));
        assert_eq!(threads[1].1.samples_now, 4);
        assert_eq!((stats.gil_held_now, stats.python_samples_now), (6, 8));
        assert_eq!(stats.cpu_now_ns, 100 * MS);
        assert_eq!(stats.endpoints(), vec![("/quakes", 5, 50 * MS)]);
    }
}
