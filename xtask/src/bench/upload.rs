//! Section 8 of the report: how many bytes a second `profiler run` pushes to Pyroscope for the demo app, next to
//! the 1–2 KB/s the app's owners estimated for the Python SDK.
//!
//! The receiver is a loopback HTTP server that answers every request with an empty 200 (a valid Connect reply to
//! a push, and what the ingest API answers) and counts what arrived: requests, body bytes (the gzip'd pprof in
//! its protobuf envelope) and bytes on the wire (headers included). The agent runs with its defaults (15 s
//! windows) for `RUN_SECONDS` and is stopped with SIGINT, which sends the last, partial window; bytes/s is what
//! arrived over the agent's whole run.
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::{agent::wait_until_sampling, process::signal, Bench};
use crate::demo;

/// How long each configuration runs: a few 15 s windows.
const RUN_SECONDS: u64 = 45;

/// One configuration's upload.
#[derive(Clone, Debug)]
pub(super) struct UploadRun {
    pub(super) scenario: &'static str,
    pub(super) profiles: &'static str,
    pub(super) seconds: f64,
    pub(super) requests: u64,
    pub(super) body_bytes: u64,
    pub(super) wire_bytes: u64,
}

/// What the receiver counted.
#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    body_bytes: AtomicU64,
    wire_bytes: AtomicU64,
}

/// A loopback HTTP server that answers 200 to everything and counts it.
struct CountingReceiver {
    port: u16,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
}

impl CountingReceiver {
    fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the counting receiver")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (counts_here, stop_here) = (counts.clone(), stop.clone());
        thread::spawn(move || {
            while !stop_here.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let counts = counts_here.clone();
                        thread::spawn(move || serve(stream, &counts));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Self { port, counts, stop })
    }

    /// (requests, body bytes, wire bytes) so far.
    fn read(&self) -> (u64, u64, u64) {
        let c = &self.counts;
        (c.requests.load(Ordering::SeqCst), c.body_bytes.load(Ordering::SeqCst), c.wire_bytes.load(Ordering::SeqCst))
    }
}

impl Drop for CountingReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Serves one keep-alive connection: requests with a Content-Length body, each answered 200.
fn serve(stream: TcpStream, counts: &Counts) {
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    loop {
        let mut head_bytes = 0u64;
        let mut length = 0u64;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(n) => head_bytes += n as u64,
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length as usize];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        counts.requests.fetch_add(1, Ordering::SeqCst);
        counts.body_bytes.fetch_add(length, Ordering::SeqCst);
        counts.wire_bytes.fetch_add(head_bytes + length, Ordering::SeqCst);
        let reply = "HTTP/1.1 200 OK\r\nContent-Type: application/proto\r\nContent-Length: 0\r\n\r\n";
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

impl Bench {
    /// 8. The demo app idle and saturated, with CPU profiles alone and with every time profile.
    pub(super) fn upload_volume(&mut self) -> Result<Vec<UploadRun>> {
        let (server, pid, url) = self.start_app()?;
        let mut runs = Vec::new();
        for scenario in ["idle", "saturated"] {
            for profiles in ["cpu", "cpu,off-cpu,wall"] {
                let receiver = CountingReceiver::start()?;
                let dir = self.runs.join(format!("upload-{scenario}-{}", profiles.replace(',', "-")));
                std::fs::create_dir_all(&dir)?;
                let log = std::fs::File::create(dir.join("output.txt"))?;
                let mut run = Command::new(&self.profiler);
                run.args(["run", "--pid", &pid.to_string(), "--app-name", "quake-bench", "--profile", profiles]);
                run.env("PYROSCOPE_SERVER_URL", format!("http://127.0.0.1:{}", receiver.port));
                run.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
                let line = crate::cmd::display(&run);
                let mut agent = demo::spawn_background(&mut run)?;
                let agent_pid = agent.0.id();
                wait_until_sampling(&mut agent.0, &line, &dir.join("output.txt"))?;
                let started = Instant::now();
                if scenario == "saturated" {
                    self.load(&url, RUN_SECONDS)?;
                } else {
                    thread::sleep(Duration::from_secs(RUN_SECONDS));
                }
                signal(agent_pid, libc::SIGINT);
                let status = agent.0.wait().context("waiting for `profiler run`")?;
                let seconds = started.elapsed().as_secs_f64();
                anyhow::ensure!(status.success(), "`profiler run` failed ({status}); see {}", dir.display());
                let (requests, body_bytes, wire_bytes) = receiver.read();
                let upload = UploadRun { scenario, profiles, seconds, requests, body_bytes, wire_bytes };
                eprintln!(
                    "  {scenario:<10} --profile {profiles:<18} {requests} requests, {:.0} B/s of bodies, {:.0} B/s on \
                     the wire",
                    body_bytes as f64 / seconds,
                    wire_bytes as f64 / seconds
                );
                runs.push(upload);
            }
        }
        drop(server);
        Ok(runs)
    }
}
