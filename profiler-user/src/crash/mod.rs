//! Crash reports: the stack at the fault (or how the process was killed) and the last seconds of profile before
//! it, written to the crash directory as JSON + text + flame graph + pprof, and echoed to stderr.
pub(crate) mod recent;
pub(crate) mod report;

use std::{
    fs,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};

pub(crate) use self::report::{CrashKind, CrashReport};
use self::report::{ReportFrame, signal_name};
use crate::{
    aggregate::{Frame, FrameKind, Profile},
    output,
    sample::CrashSignal,
};

/// Who crashed, as the pipeline knows it.
pub(crate) struct Crashed<'a> {
    pub pid: u32,
    pub tid: u32,
    pub process_name: &'a str,
    pub thread_name: &'a str,
    pub python_version: Option<String>,
    pub window_secs: u64,
}

impl Crashed<'_> {
    /// The report of a thread that faulted or aborted, with its merged stack (leaf first).
    pub(crate) fn fault(self, signal: CrashSignal, frames: &[Frame]) -> CrashReport {
        let stack = frames.iter().filter(|f| f.kind != FrameKind::Context).map(ReportFrame::from_frame).collect();
        self.report(CrashKind::Fault, signal.signal, signal.si_code, signal.fault_addr, stack)
    }

    /// The report of a process another process killed: no stack of its own exists.
    pub(crate) fn killed(self, sender_pid: u32, signal: u32) -> CrashReport {
        self.report(CrashKind::Killed { sender_pid }, signal, 0, None, Vec::new())
    }

    fn report(self, kind: CrashKind, signal: u32, si_code: i32, fault: Option<u64>, stack: Vec<ReportFrame>) -> CrashReport {
        CrashReport {
            kind,
            time: rfc3339_now(),
            pid: self.pid,
            tid: self.tid,
            process_name: self.process_name.to_owned(),
            thread_name: self.thread_name.to_owned(),
            signal,
            signal_name: signal_name(signal),
            si_code,
            fault_address: fault.map(|a| format!("{a:#x}")),
            python_version: self.python_version,
            stack,
            window_samples: 0,
            window_seconds: self.window_secs as f64,
            exit: None,
        }
    }
}

/// Tells a new crash from the same one raised again: a handler that logs and re-raises (faulthandler does)
/// generates the signal a second time in the same thread.
#[derive(Default)]
pub(crate) struct Reraises {
    last: Option<(u32, u32, u32, u64)>,
}

impl Reraises {
    const WINDOW_NS: u64 = 5_000_000_000;

    /// True when this (pid, tid, signal) was reported less than five seconds before `time_ns`.
    pub(crate) fn is_reraise(&mut self, pid: u32, tid: u32, signal: u32, time_ns: u64) -> bool {
        if let Some((p, t, s, at)) = self.last {
            if (p, t, s) == (pid, tid, signal) && time_ns.saturating_sub(at) < Self::WINDOW_NS {
                return true;
            }
        }
        self.last = Some((pid, tid, signal, time_ns));
        false
    }
}

/// A crash as the pipeline hands it over: the report, the profile of the window before it, and the stack at
/// the crash as a one-sample profile (empty for a killed process), which `run` uploads on its own.
pub(crate) struct Crash {
    pub report: CrashReport,
    pub window: Profile,
    pub stack: Profile,
}

/// Writes crash reports into one directory.
pub(crate) struct CrashWriter {
    dir: PathBuf,
}

impl CrashWriter {
    /// Creates the directory if needed and checks it is writable, so a crash is never lost for want of a place.
    pub(crate) fn new(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create the crash directory {}", dir.display()))?;
        output::check_writable(&dir.join("probe.json"))?;
        Ok(Self { dir: dir.to_owned() })
    }

    /// Writes the report files; returns the path of the text report.
    pub(crate) fn write(&self, crash: &Crash) -> Result<PathBuf> {
        let report = &crash.report;
        let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        let base = self.dir.join(format!("crash-{}-{}-{stamp}", report.pid, report.signal_name));
        let json = serde_json::to_string_pretty(report).context("encoding the crash report")?;
        write_file(&base.with_extension("json"), json.as_bytes())?;
        let text_path = base.with_extension("txt");
        write_file(&text_path, report.to_text().as_bytes())?;
        if crash.window.total_samples() > 0 {
            let title = format!("{} {} ({}): the {:.0} s before the crash", report.signal_name, report.process_name, report.pid, report.window_seconds);
            for (extension, format) in [("svg", output::OutputFormat::FlameGraphSvg), ("pb.gz", output::OutputFormat::Pprof)] {
                let path = PathBuf::from(format!("{}.{extension}", base.display()));
                output::write_profile(&crash.window, &path, format, &title)?;
            }
        }
        Ok(text_path)
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).with_context(|| format!("writing the crash report {}", path.display()))
}

/// Now as RFC 3339 UTC, to the second.
pub(crate) fn rfc3339_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reraise_within_seconds_is_the_same_crash() {
        let mut reraises = Reraises::default();
        assert!(!reraises.is_reraise(1, 2, 11, 0));
        assert!(reraises.is_reraise(1, 2, 11, 1_000_000_000));
        assert!(!reraises.is_reraise(1, 3, 11, 1_000_000_000));
        assert!(!reraises.is_reraise(1, 3, 11, 10_000_000_000));
    }

    #[test]
    fn formats_time_as_rfc3339() {
        let now = rfc3339_now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'));
    }
}
