//! `cargo xtask soak --minutes N`: the integration suite's soak (tests/integration/soak.rs: `profiler run` against
//! the demo app restarted every two minutes, uploading to a receiver that flaps) for as long as asked, its figures
//! written into bench/RESULTS.md.
//!
//! The test suite keeps a six-minute soak, which shows a leak of a few MiB; an hour shows the slow ones (a cache
//! keyed by something that never repeats, a queue that is never trimmed) that a short run cannot tell from
//! warm-up. The test itself asserts the budget (RSS within 2 MiB after the first cycle, CPU not rising); this task
//! runs it with `PROFILER_SOAK_MINUTES` and records what it measured, pass or fail.
use std::{fmt::Write as _, fs, path::Path};

use anyhow::{Context as _, Result};
use serde_json::Value;

use crate::{cmd, setup, Workspace};

pub fn soak(ws: &Workspace, profiler: &Path, minutes: u32) -> Result<()> {
    let result_file = ws.target_dir.join("soak-result.json");
    let _ = fs::remove_file(&result_file);
    let mut test = ws.cargo();
    test.args(["test", "--release", "--package", "profiler-tests", "--test", "integration", "--"]);
    test.args(["--exact", "soak::restarts_and_a_flapping_server_leave_the_agent_flat", "--nocapture"]);
    test.env("PROFILER_BIN", profiler).env("QUAKE_VENV", setup::quake_venv_dir(ws));
    test.env("PROFILER_SOAK_MINUTES", minutes.to_string()).env("PROFILER_SOAK_RESULT", &result_file);
    test.env("RUST_BACKTRACE", "0");
    eprintln!("soak: {minutes} minutes of `profiler run` against the demo app (restarts, a flapping receiver)");
    let outcome = cmd::run(&mut test);
    // The test writes its figures before its last asserts, so a failed budget is recorded too.
    match fs::read_to_string(&result_file) {
        Ok(text) => {
            let result: Value =
                serde_json::from_str(&text).with_context(|| format!("reading {}", result_file.display()))?;
            let passed = outcome.is_ok();
            let body = render(&result, minutes, passed);
            eprintln!("{body}");
            crate::readme::replace_block_in(
                &ws.root.join("bench/RESULTS.md"),
                "soak",
                "cargo xtask soak",
                &body,
                true,
            )?;
        }
        Err(_) => eprintln!("soak: the test wrote no figures (it failed before measuring them)"),
    }
    outcome.context("the soak failed: see the test output above")
}

/// The section of bench/RESULTS.md.
fn render(result: &Value, minutes: u32, passed: bool) -> String {
    let numbers = |key: &str| -> Vec<f64> {
        result[key].as_array().map(|values| values.iter().filter_map(Value::as_f64).collect()).unwrap_or_default()
    };
    let rss = numbers("rss_kib_per_cycle");
    let cpu = numbers("cpu_per_cycle");
    let (low, high) = rss.iter().fold((f64::MAX, 0f64), |(low, high), &v| (low.min(v), high.max(v)));
    let mut text = String::new();
    let _ = writeln!(text, "## Soak: {minutes} minutes\n");
    let _ = writeln!(
        text,
        "`cargo xtask soak --minutes {minutes}` (run on {}): `profiler run` against the demo app (two uvicorn workers \
         under load), the app restarted every two minutes, the receiver flapping each cycle (answering, failing with \
         500s, down) and once down for 60 s, twice the agent's queue age. {} cycles, {} app incarnations, {} windows \
         sent, {} retries, {} dropped (older than the agent's 30 s queue limit when the receiver came back). \
         Result: **{}**.\n",
        today(),
        result["cycles"],
        result["incarnations"],
        result["windows_sent"],
        result["retries"],
        result["dropped"],
        if passed { "passed" } else { "FAILED" },
    );
    let _ = writeln!(
        text,
        "Agent RSS (largest reading of each 2-minute cycle): first cycle (warm-up) {:.1} MiB; after it {:.1} to \
         {:.1} MiB, a spread of {:.2} MiB (budget 2 MiB). Agent CPU per cycle after warm-up: {} % of a core.\n",
        result["first_cycle_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0,
        low / 1024.0,
        high / 1024.0,
        (high - low) / 1024.0,
        spread(&cpu.iter().map(|c| c * 100.0).collect::<Vec<_>>()),
    );
    let _ = writeln!(text, "| cycle | RSS max (MiB) | agent CPU (% of a core) |\n| --- | --- | --- |");
    for (i, (rss, cpu)) in rss.iter().zip(&cpu).enumerate() {
        let _ = writeln!(text, "| {} | {:.1} | {:.2} |", i + 2, rss / 1024.0, cpu * 100.0);
    }
    text
}

/// min–max of a series, or "-".
fn spread(values: &[f64]) -> String {
    let low = values.iter().copied().fold(f64::MAX, f64::min);
    let high = values.iter().copied().fold(0f64, f64::max);
    if values.is_empty() {
        "-".into()
    } else {
        format!("{low:.2}–{high:.2}")
    }
}

/// Today's date, from `date` (the xtask has no date crate).
fn today() -> String {
    std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default()
}
