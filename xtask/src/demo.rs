//! `cargo xtask demo`: profile a bundled workload and leave a flame graph, a pprof file and folded stacks.
//!
//! The workload is the quake-monitor FastAPI app (examples/quake-monitor) served by uvicorn and fed by its load
//! generator, so the profile shows what the profiler is for: Python functions with the lxml and numpy code they
//! call. `--native` profiles examples/native-burn instead, a C program whose profile is known by construction.
//! Every process the demo starts is in its own process group, so Ctrl-C reaches only the profiler (which ends early
//! and still writes its outputs), and a guard kills it on every way out, errors included.
use std::{
    fs::{self, File},
    io::{self, Read as _, Write as _},
    net::{Ipv4Addr, TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{cmd, setup, Workspace};

/// The demo's workloads; `QuakeMonitor` unless `--native`.
pub enum Workload {
    QuakeMonitor,
    NativeBurn,
}

/// Requests per second from the load generator, both endpoints together: about half of one core for the app,
/// enough for a well-filled flame graph without starving a small machine.
const LOAD_RATE: &str = "20";

/// How long uvicorn may take to import FastAPI, lxml and numpy, generate its feed and answer.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A started workload: the process to profile and, for the app, the load generator feeding it.
struct Running {
    pid: u32,
    /// What was profiled, for the closing message.
    what: String,
    // Declared before `_target` so that it is dropped (killed) first: no requests against a dead server.
    load: Option<LoadGenerator>,
    _target: KillOnDrop,
}

pub fn demo(ws: &Workspace, duration: &str, workload: Workload) -> Result<()> {
    let length = parse_duration(duration)?;
    let profiler = ws.build_profiler(true)?;
    let out = ws.target_dir.join("demo");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    // The CPU profile under each name, and next to it (NAME.KIND.EXT) where threads waited and their wall-clock time.
    let outputs = [
        ("flame graph", "flame.svg", "open it in a browser"),
        (
            "pprof profile",
            "profile.pb.gz",
            "`go tool pprof -http=: FILE`, or Pyroscope; `-tagfocus endpoint=NAME` for one route",
        ),
        ("folded stacks", "stacks.folded", "one stack per line with its count"),
        ("off-CPU graph", "flame.off-cpu.svg", "where threads waited, and on what (`wait` label in the pprof)"),
        ("off-CPU pprof", "profile.off-cpu.pb.gz", "filter on wait=gil, io, lock, sleep, cpu"),
        ("wall-clock", "flame.wall.svg", "each thread's whole time, running and waiting"),
    ]
    .map(|(what, file, hint)| (what, out.join(file), hint));
    for (_, path, _) in &outputs {
        // A stale file from an earlier run must not pass for this run's output.
        let _ = fs::remove_file(path);
    }

    // A backstop: every process the demo starts ends by itself this long after the profile should have ended,
    // even if xtask dies before its guards can run.
    let lifetime = length + Duration::from_secs(60);
    let mut running = match workload {
        Workload::QuakeMonitor => start_quake_monitor(ws, &out, lifetime)?,
        Workload::NativeBurn => start_native_burn(ws, &out, lifetime)?,
    };

    let mut record = cmd::as_root(&profiler)?;
    record.args(["record", "--pid", &running.pid.to_string(), "--duration", duration]);
    record.args(["--profile", "cpu,off-cpu,wall"]);
    // The CPU outputs; the profiler names the others after them.
    for (_, path, _) in &outputs[..3] {
        record.arg("-o").arg(path);
    }
    let status = run_through_ctrl_c(&mut record)?;
    let load_summary = running.load.take().map(LoadGenerator::finish);
    let (pid, what) = (running.pid, std::mem::take(&mut running.what));
    drop(running);
    if !status.success() {
        bail!("`{}` failed ({status})", cmd::display(&record));
    }

    eprintln!("demo outputs (profile of process {pid}, {what}):");
    for (what, path, hint) in &outputs {
        if path.exists() {
            eprintln!("  {what:<14} {}  ({hint})", path.display());
        } else {
            eprintln!("  {what:<14} {}  MISSING: the profiler did not write it", path.display());
        }
    }
    if let Some(summary) = load_summary {
        eprintln!("load during the profile: {summary}");
    }
    Ok(())
}

/// Serves examples/quake-monitor with uvicorn on a free loopback port, waits until it answers, and starts the
/// load generator against it.
fn start_quake_monitor(ws: &Workspace, out: &Path, lifetime: Duration) -> Result<Running> {
    let app = ws.root.join(setup::QUAKE_MONITOR);
    let venv = setup::quake_venv_dir(ws);
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");

    // The uvicorn script rather than `python -m uvicorn`: the kernel names the process after the script, so
    // `profiler record --name uvicorn` finds it, as it finds the real service.
    let mut serve = Command::new(venv.join("bin/uvicorn"));
    serve.args(["app:app", "--host", "127.0.0.1", "--port", &port.to_string(), "--workers", "1"]);
    // Its access log goes to a file: realistic work for the profile, noise on the terminal.
    let log_path = out.join("uvicorn.log");
    let log = File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    serve.stdout(log.try_clone().context("duplicating the log file handle")?).stderr(log);
    // Keeps __pycache__ out of the source tree.
    serve.current_dir(&app).env("PYTHONDONTWRITEBYTECODE", "1");
    let mut server = spawn_background(&mut serve)?;
    wait_until_serving(&mut server.0, port, &log_path)?;

    let mut load = Command::new(venv.join("bin/python"));
    load.current_dir(&app).env("PYTHONDONTWRITEBYTECODE", "1").arg("loadgen.py");
    load.args(["--url", &url, "--rate", LOAD_RATE, "--duration", &lifetime.as_secs().to_string()]);
    let load = LoadGenerator(spawn_background(load.stdout(Stdio::piped()))?);
    Ok(Running {
        pid: server.0.id(),
        what: format!("uvicorn serving {} at {url}; its log: {}", setup::QUAKE_MONITOR, log_path.display()),
        load: Some(load),
        _target: server,
    })
}

fn start_native_burn(ws: &Workspace, out: &Path, lifetime: Duration) -> Result<Running> {
    const SOURCE: &str = "examples/native-burn";
    cmd::run(Command::new("bash").arg(ws.root.join(SOURCE).join("build.sh")).arg(out))?;
    let mut start = Command::new(out.join("native-burn"));
    // native-burn takes at most 1000000 seconds.
    start.arg(lifetime.as_secs().clamp(1, 1_000_000).to_string());
    let mut workload = spawn_background(&mut start)?;
    // A workload that cannot start says why on stderr; catch that here rather than as a profiler error about
    // a missing process.
    std::thread::sleep(Duration::from_millis(200));
    if let Some(status) = workload.0.try_wait().context("waiting for the workload")? {
        bail!("the workload exited at once ({status})");
    }
    Ok(Running { pid: workload.0.id(), what: format!("the workload of {SOURCE}"), load: None, _target: workload })
}

/// Starts a helper process of the demo, in its own process group (Ctrl-C is for the profiler), and with SIGTERM as
/// its parent-death signal: xtask's guards cannot run when xtask is killed outright, the kernel's signal can.
pub(crate) fn spawn_background(command: &mut Command) -> Result<KillOnDrop> {
    command.process_group(0);
    // SAFETY: runs in the child between fork and exec, where only async-signal-safe calls are allowed: prctl is
    // one, and the closure allocates nothing.
    unsafe {
        command.pre_exec(|| match libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) {
            -1 => Err(io::Error::last_os_error()),
            _ => Ok(()),
        });
    }
    let line = cmd::display(command);
    match command.get_current_dir() {
        Some(dir) => eprintln!("$ (cd {} && {line}) &", dir.display()),
        None => eprintln!("$ {line} &"),
    }
    let child = command.spawn().with_context(|| format!("could not start `{line}`"))?;
    Ok(KillOnDrop(child))
}

/// A loopback port nobody listens on now. Another process could take it before uvicorn binds it; then uvicorn
/// exits saying so and the demo fails with its log, which is rare enough for a demo.
pub(crate) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free loopback port")?;
    Ok(listener.local_addr().context("reading the port the kernel chose")?.port())
}

/// Polls the app's health endpoint until it answers 200: uvicorn listens only once the app has started, but a
/// request is the one check that covers the app too.
pub(crate) fn wait_until_serving(server: &mut Child, port: u16, log: &Path) -> Result<()> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Some(status) = server.try_wait().context("waiting for uvicorn")? {
            bail!("uvicorn exited before serving ({status}); the end of {}:\n{}", log.display(), tail(log));
        }
        if health_answers(port) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "uvicorn did not answer on port {port} within {} s; the end of {}:\n{}",
                STARTUP_TIMEOUT.as_secs(),
                log.display(),
                tail(log)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn health_answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut response = Vec::new();
    // HTTP/1.0: the server closes the connection after the response, so reading to the end is reading it all.
    stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_ok()
        && stream.read_to_end(&mut response).is_ok()
        && response.split(|&b| b == b' ').nth(1) == Some(b"200")
}

/// The last lines of a log file, for an error message.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The running loadgen.py, whose stdout is a pipe that will carry its one-line summary.
struct LoadGenerator(KillOnDrop);

impl LoadGenerator {
    /// Stops the load (SIGTERM: loadgen.py then prints the summary of what it did so far) and returns that
    /// summary, or what went wrong instead: a missing summary is worth a line in the output, not a failed demo.
    fn finish(mut self) -> String {
        let child = &mut self.0 .0;
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill has no memory preconditions; the child is not reaped yet, so its pid is still its own.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let mut stdout = String::new();
        if let Some(mut pipe) = child.stdout.take() {
            let _ = pipe.read_to_string(&mut stdout);
        }
        match (stdout.lines().last(), child.wait()) {
            (Some(summary), _) => summary.to_owned(),
            (None, Ok(status)) => format!("unknown: loadgen.py printed no summary ({status})"),
            (None, Err(err)) => format!("unknown: waiting for loadgen.py: {err}"),
        }
    }
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
pub(crate) struct KillOnDrop(pub(crate) Child);

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
