//! The running totals a measuring workload writes (split.py, waits.py): a JSON object of numbers, rewritten every
//! fraction of a second with a `writes` count, so a test reads it before and after a recording and compares the
//! profiler with the workload's own accounting over the same stretch.
use std::{
    collections::HashMap,
    fs,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use crate::Process;

/// Every number of the file by key, those of objects nested one level down (split.py's `functions`) included.
pub fn read_totals(path: &Path) -> HashMap<String, f64> {
    let text = fs::read_to_string(path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|err| panic!("{text}: {err}"));
    let mut numbers = HashMap::new();
    for (key, value) in json.as_object().unwrap_or_else(|| panic!("not a JSON object: {text}")) {
        match value {
            serde_json::Value::Object(inner) => {
                numbers.extend(inner.iter().filter_map(|(key, value)| Some((key.clone(), value.as_f64()?))));
            }
            _ => {
                numbers.insert(key.clone(), value.as_f64().unwrap_or_else(|| panic!("{key} is not a number: {text}")));
            }
        }
    }
    numbers
}

/// Waits (a minute at most) until the workload has written its totals `writes` times; panics if it exits first.
pub fn wait_for_totals(workload: &mut Process, totals: &Path, writes: f64) {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = workload.child().try_wait().expect("polling the workload") {
            panic!("the workload exited ({status}) before it was profiled");
        }
        if totals.exists() && read_totals(totals).get("writes").is_some_and(|&w| w >= writes) {
            return;
        }
        assert!(Instant::now() < give_up, "the workload wrote no {} within a minute", totals.display());
        thread::sleep(Duration::from_millis(20));
    }
}
