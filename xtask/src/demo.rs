//! `cargo xtask demo`: profile a bundled workload and leave a flame graph, a pprof file and folded stacks.
use std::{
    fs,
    path::Path,
    process::{Child, Command, ExitStatus},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use crate::{cmd, Workspace};

/// The program the demo profiles, and the one place that chooses it: for now the native workload whose profile is
/// known by construction (examples/native-burn); later the FastAPI app of examples/quake-monitor.
struct Workload;

impl Workload {
    const SOURCE: &'static str = "examples/native-burn";

    /// Builds the workload into `out` and returns the command that starts it. `lifetime` is a backstop: the
    /// workload ends by itself then even if xtask dies before its guard can kill it.
    fn prepare(ws: &Workspace, out: &Path, lifetime: Duration) -> Result<Command> {
        cmd::run(Command::new("bash").arg(ws.root.join(Self::SOURCE).join("build.sh")).arg(out))?;
        let mut start = Command::new(out.join("native-burn"));
        // native-burn takes at most 1000000 seconds.
        start.arg(lifetime.as_secs().clamp(1, 1_000_000).to_string());
        Ok(start)
    }
}

pub fn demo(ws: &Workspace, duration: &str) -> Result<()> {
    let length = parse_duration(duration)?;
    let profiler = ws.build_profiler(true)?;
    let out = ws.target_dir.join("demo");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    let outputs = [
        ("flame graph", "flame.svg", "open it in a browser"),
        ("pprof profile", "profile.pb.gz", "`go tool pprof -http=: FILE`, or Pyroscope"),
        ("folded stacks", "stacks.folded", "one stack per line with its count"),
    ]
    .map(|(what, file, hint)| (what, out.join(file), hint));
    for (_, path, _) in &outputs {
        // A stale file from an earlier run must not pass for this run's output.
        let _ = fs::remove_file(path);
    }

    let mut start = Workload::prepare(ws, &out, length + Duration::from_secs(60))?;
    // Its own process group keeps Ctrl-C away from it: Ctrl-C is for the profiler, the guard ends the workload.
    std::os::unix::process::CommandExt::process_group(&mut start, 0);
    let line = cmd::display(&start);
    eprintln!("$ {line} &");
    let mut workload = KillOnDrop(start.spawn().with_context(|| format!("could not start `{line}`"))?);
    let pid = workload.0.id();
    // A workload that cannot start says why on stderr; catch that here rather than as a profiler error about
    // a missing process.
    std::thread::sleep(Duration::from_millis(200));
    if let Some(status) = workload.0.try_wait().context("waiting for the workload")? {
        bail!("the workload exited at once ({status})");
    }

    let mut record = cmd::as_root(&profiler)?;
    record.args(["record", "--pid", &pid.to_string(), "--duration", duration]);
    for (_, path, _) in &outputs {
        record.arg("-o").arg(path);
    }
    let status = run_through_ctrl_c(&mut record)?;
    drop(workload);
    if !status.success() {
        bail!("`{}` failed ({status})", cmd::display(&record));
    }

    eprintln!("demo outputs (profile of process {pid}, the workload of {}):", Workload::SOURCE);
    for (what, path, hint) in &outputs {
        if path.exists() {
            eprintln!("  {what:<14} {}  ({hint})", path.display());
        } else {
            eprintln!("  {what:<14} {}  MISSING: the profiler did not write it", path.display());
        }
    }
    Ok(())
}

/// Runs the profiler while this process ignores Ctrl-C: the profiler ends early on it and still writes its
/// outputs, and xtask stays alive to kill the workload and say where the outputs are.
fn run_through_ctrl_c(cmd: &mut Command) -> Result<ExitStatus> {
    let line = cmd::display(cmd);
    eprintln!("$ {line}");
    // Spawned before SIGINT is ignored here, so the child does not inherit the ignored disposition.
    let mut child = cmd.spawn().with_context(|| format!("could not start `{line}`"))?;
    // SAFETY: installs a disposition, no handler code runs; the previous one is put back right after the wait.
    let previous = unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let status = child.wait();
    // SAFETY: as above.
    unsafe { libc::signal(libc::SIGINT, previous) };
    status.with_context(|| format!("waiting for `{line}`"))
}

/// Kills the child on every path out of the demo, errors included.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The same syntax as `profiler record --duration` (30s, 2m, 1h, 500ms, 1.5): checked here before anything is
/// built, and used to size the workload's backstop. The text itself goes to the profiler unchanged.
fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().with_context(|| format!("--duration `{text}`: try 30s, 2m, 500ms"))?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => bail!("--duration `{text}`: unknown unit `{other}` (use ms, s, m or h)"),
    };
    match Duration::try_from_secs_f64(seconds) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => bail!("--duration `{text}` must be a positive duration"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1500ms").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10d").is_err());
    }
}
