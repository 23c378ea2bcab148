//! A booted systemd container for the packaging tests: `systemd-nspawn --boot` of a Debian bookworm root with
//! systemd (made once with debootstrap and cached under `/var/cache/profiler-roots`, like the Python roots), so a package is
//! installed, enabled, started and stopped by a real systemd, as on a server.
//!
//! The cached root is never changed: each machine boots an overlay of it (the root read-only below, the test's
//! writes in a scratch directory above), removed when the machine is dropped. Commands run inside through
//! `nsenter` into the container's namespaces, so the container needs no login, D-Bus access from the host or
//! machined (this machine's PID 1 is not systemd).
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{
    python::{ensure_root_named, Distribution},
    run, scratch_root, Run,
};

/// The packages of the root: systemd as PID 1 (systemd-sysv), D-Bus for systemctl's and systemd-analyze's queries,
/// Python for a process to profile, and ca-certificates, which the profiler package depends on (apt installs the
/// package from its file, with no package lists to fetch dependencies from).
const PACKAGES: [&str; 5] = ["python3", "systemd", "systemd-sysv", "dbus", "ca-certificates"];

/// What the container may hold beyond systemd-nspawn's default capability set: the ones the unit grants the agent
/// (nspawn's set has CAP_SYS_PTRACE already). A unit's bounding set can only narrow the container's.
const EXTRA_CAPABILITIES: &str = "CAP_BPF,CAP_PERFMON,CAP_CHECKPOINT_RESTORE";

pub struct Machine {
    name: String,
    nspawn: Child,
    /// The container's PID 1 (systemd), as this machine sees it.
    leader: u32,
    /// The overlay's mount point: the container's `/`.
    root: PathBuf,
    /// The overlay's upper and work directories, and the mount point.
    scratch: PathBuf,
}

impl Machine {
    /// Boots the root as machine `name` and returns once its systemd says the system is up (`running`, or
    /// `degraded`: a container lacks what some units of a full system need).
    pub fn boot(name: &str) -> Machine {
        let lower = ensure_root_named(Distribution::Debian, "bookworm", "bookworm-systemd", &PACKAGES);
        let scratch = scratch_root().join(format!("machine-{name}"));
        let root = scratch.join("root");
        for dir in ["upper", "work", "root"] {
            fs::create_dir_all(scratch.join(dir)).unwrap_or_else(|err| panic!("creating {}: {err}", dir));
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            scratch.join("upper").display(),
            scratch.join("work").display()
        );
        let mount = run(
            Command::new("mount").args(["-t", "overlay", "overlay", "-o", &options]).arg(&root),
            Duration::from_secs(30),
        );
        assert!(mount.status.success(), "mounting the overlay of {}: {}", lower.display(), mount.stderr);

        let mut nspawn = Command::new("systemd-nspawn");
        nspawn
            .arg("--quiet")
            .arg("--directory")
            .arg(&root)
            .args(["--boot", "--machine", name])
            // No machined or systemd on this host to register with or to make a scope unit.
            .args(["--register=no", "--keep-unit", "--console=passive"])
            .arg(format!("--capability={EXTRA_CAPABILITIES}"))
            // nspawn's own seccomp filter allows bpf() and perf_event_open() only with capabilities it does not
            // grant by default.
            .arg("--system-call-filter=bpf perf_event_open")
            // tracefs: the container's systemd does not mount it (nspawn keeps /sys read-only).
            .arg("--bind-ro=/sys/kernel/tracing")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let nspawn = crate::process::spawn(&mut nspawn);
        let mut machine = Machine { name: name.to_owned(), nspawn, leader: 0, root, scratch };
        machine.leader = machine.find_leader();
        // `offline`, or no answer at all, until systemd listens on its private socket early in the boot; then --wait
        // waits for the rest.
        let started = Instant::now();
        let up = loop {
            let up = machine.sh("systemctl is-system-running --wait", Duration::from_secs(120));
            let state = up.stdout.trim();
            if !(state.is_empty() || state == "offline") || started.elapsed() > Duration::from_secs(60) {
                break up;
            }
            thread::sleep(Duration::from_millis(100));
        };
        let state = up.stdout.trim();
        assert!(
            state == "running" || state == "degraded",
            "machine {name} did not come up ({state}): {}\nfailed units:\n{}",
            up.stderr,
            machine.sh("systemctl --failed --no-pager", Duration::from_secs(30)).stdout
        );
        machine
    }

    /// nspawn's child: the container's PID 1.
    fn find_leader(&mut self) -> u32 {
        let started = Instant::now();
        let children = format!("/proc/{0}/task/{0}/children", self.nspawn.id());
        loop {
            let found =
                fs::read_to_string(&children).ok().and_then(|text| text.split_whitespace().next()?.parse().ok());
            if let Some(pid) = found {
                // Once it has exec'd systemd, it is the leader.
                if fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "systemd") {
                    return pid;
                }
            }
            if let Some(status) = self.nspawn.try_wait().expect("polling systemd-nspawn") {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.nspawn.stderr.take() {
                    use std::io::Read as _;
                    let _ = pipe.read_to_string(&mut stderr);
                }
                panic!("systemd-nspawn exited ({status}) before booting: {stderr}");
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the container's systemd did not start within 60 s");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `script` with `/bin/sh -c` inside the container, as its root, with a clean environment.
    pub fn sh(&self, script: &str, limit: Duration) -> Run {
        let mut cmd = Command::new("nsenter");
        cmd.args(["--target", &self.leader.to_string(), "--all", "--", "/usr/bin/env", "-i"])
            .args(["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C.UTF-8", "SYSTEMD_COLORS=0", "/bin/sh", "-c"])
            .arg(script);
        run(&mut cmd, limit)
    }

    /// As [`Machine::sh`], panicking unless it exits with 0; returns stdout.
    pub fn sh_ok(&self, script: &str, limit: Duration) -> String {
        let result = self.sh(script, limit);
        assert!(
            result.status.success(),
            "in machine {}: `{script}` failed ({}):\n{}{}",
            self.name,
            result.status,
            result.stdout,
            result.stderr
        );
        result.stdout
    }

    /// The container's `/` as this machine sees it: a file written at `root().join("x")` is `/x` inside.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// PID 1 of the container as this machine sees it.
    pub fn leader(&self) -> u32 {
        self.leader
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        // SIGTERM makes nspawn ask the container's systemd to power off; killed if that takes over a minute.
        crate::send_signal(self.nspawn.id(), libc::SIGTERM);
        let give_up = Instant::now() + Duration::from_secs(60);
        while self.nspawn.try_wait().ok().flatten().is_none() {
            if Instant::now() > give_up {
                eprintln!("machine {} did not power off within 60 s: killing systemd-nspawn", self.name);
                let _ = self.nspawn.kill();
                let _ = self.nspawn.wait();
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("umount").arg(&self.root).status();
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.scratch);
        }
    }
}
