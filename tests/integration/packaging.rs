//! What `cargo xtask dist` ships, run for real: the static binary on the oldest and newest distribution roots the
//! tests have, the Debian package installed into a booted systemd container (systemd-nspawn) and driven with
//! systemctl (up to the agent's refusal of the container's own PID namespace), and the OCI image run by runc the
//! way the DaemonSet runs it. The artifacts come from tests/support/dist.rs; the container from
//! tests/support/machine.rs.
//!
//! The tests that need `dist`'s output are ignored in the default run: `dist` is a second build of everything for
//! the static target, which a fresh CI machine cannot afford beside the rest within its time limit. `cargo xtask
//! test --dist` builds it and runs them (`--ignored`); under `CI=true` each fails rather than skips without it.
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use profiler_tests::{
    agent::{capability_bit, Agent},
    dist::dist,
    exclusive_cpu, gnu_build_id,
    machine::Machine,
    python,
    receiver::{basic_auth, decode_push, Expect, Receiver},
    require_root, run, start_native_burn, workloads, workspace_root, TestDir,
};
use serde_json::json;

const UNIT: &str = "deploy/systemd/profiler.service";
const PACKAGED_UNIT: &str = "deploy/debian/profiler.service";
const MANIFEST: &str = "deploy/kubernetes/profiler.yaml";

fn read(path: &str) -> String {
    fs::read_to_string(workspace_root().join(path)).unwrap_or_else(|err| panic!("reading {path}: {err}"))
}

/// `readelf ARGS FILE`'s stdout.
fn readelf(args: &[&str], file: &Path) -> String {
    let result = run(Command::new("readelf").arg("--wide").args(args).arg(file), Duration::from_secs(60));
    assert!(result.status.success(), "readelf {args:?} {}: {}", file.display(), result.stderr);
    result.stdout
}

fn section_names(file: &Path) -> Vec<String> {
    readelf(&["--section-headers"], file)
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(']')?;
            rest.split_whitespace().next().map(str::to_owned)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// The static binary

/// Static (no loader, no library), stripped, and its debug info next to it: named by its .gnu_debuglink and found
/// by its build-id under .build-id/.
#[test]
#[ignore = "needs `cargo xtask dist` (minutes: a second, static build): run by `cargo xtask test --dist`"]
fn the_static_binary_is_stripped_and_its_debug_info_is_found_by_build_id() {
    let Some(dist) = dist() else { return };
    let binary = dist.binary();
    let headers = readelf(&["--program-headers", "--dynamic"], &binary);
    assert!(!headers.contains("INTERP"), "the binary asks for a dynamic loader:\n{headers}");
    assert!(!headers.contains("(NEEDED)"), "the binary needs shared libraries:\n{headers}");
    let sections = section_names(&binary);
    // .debug_gdb_scripts is no debug info: a loaded section naming Rust's pretty-printers for gdb.
    let dwarf = sections.iter().filter(|s| s.starts_with(".debug_") && *s != ".debug_gdb_scripts");
    assert_eq!(dwarf.count(), 0, "debug sections left in the binary: {sections:?}");
    assert!(!sections.iter().any(|s| s == ".symtab"), "the symbol table is left in the binary");
    assert!(sections.iter().any(|s| s == ".gnu_debuglink"), "no .gnu_debuglink: {sections:?}");
    let link = run(
        Command::new("objcopy").args(["--dump-section", ".gnu_debuglink=/dev/stdout"]).arg(&binary).arg("/dev/null"),
        Duration::from_secs(60),
    );
    assert!(link.stdout.starts_with("profiler.debug\0"), "the debuglink names {:?}", link.stdout);

    let debug = dist.debug_info();
    let id = gnu_build_id(&binary);
    assert_eq!(gnu_build_id(&debug), id, "the debug info is of another build");
    let debug_sections = section_names(&debug);
    for needed in [".debug_info", ".debug_line", ".symtab"] {
        assert!(debug_sections.iter().any(|s| s == needed), "{} has no {needed}", debug.display());
    }
    let by_id = dist.dir().join(".build-id").join(&id[..2]).join(format!("{}.debug", &id[2..]));
    assert_eq!(
        fs::canonicalize(&by_id).unwrap_or_else(|err| panic!("{}: {err}", by_id.display())),
        fs::canonicalize(&debug).unwrap(),
        "the build-id path does not lead to the debug info"
    );
    let size = fs::metadata(&binary).unwrap().len();
    assert!(size < 30 << 20, "the stripped binary is {size} bytes");
}

/// The one binary profiles a Python process on the oldest root the tests have (Ubuntu focal, glibc 2.31) and the
/// newest (Debian sid), run inside each with chroot, so that nothing of this machine's libraries can help it.
#[test]
#[ignore = "needs `cargo xtask dist` (minutes: a second, static build): run by `cargo xtask test --dist`"]
fn the_static_binary_profiles_on_the_oldest_and_newest_roots() {
    if !require_root() {
        return;
    }
    let Some(dist) = dist() else { return };
    let _cpu = exclusive_cpu();
    for suite in ["focal", "sid"] {
        let root = python::root(suite);
        let inside = PathBuf::from(format!("/tmp/profiler-packaging.{}", std::process::id()));
        let host = root.join(inside.strip_prefix("/").unwrap());
        let _ = fs::remove_dir_all(&host);
        fs::create_dir_all(&host).unwrap();
        fs::copy(dist.binary(), host.join("profiler")).unwrap();
        // A private mount namespace: /proc, /sys and tracefs for the profiler inside the root, gone with it.
        let script = format!(
            "set -e; R={root}; mount --rbind /proc $R/proc; mount --rbind /sys $R/sys; \
             chroot $R python3 -c 'while True: sum(range(1000))' & busy=$!; trap 'kill $busy' EXIT; \
             chroot $R {inside}/profiler record --pid $busy --duration 3s -o {inside}/out.folded",
            root = root.display(),
            inside = inside.display()
        );
        let result = run(
            Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &script]),
            Duration::from_secs(60),
        );
        assert!(result.status.success(), "{suite}: {}\n{}", result.status, result.stderr);
        let folded = fs::read_to_string(host.join("out.folded")).unwrap_or_else(|err| panic!("{suite}: {err}"));
        let python_samples: u64 = folded
            .lines()
            .filter(|line| line.contains("<module>"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert!(python_samples >= 100, "{suite}: {python_samples} samples in Python code in 3 s:\n{folded}");
        fs::remove_dir_all(&host).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The Debian package

/// The packaged unit is the hand-install one with the package's paths and a condition on the key: any other
/// difference would be a drift between two copies that are meant to be one.
#[test]
fn the_packaged_unit_differs_from_the_hand_install_one_only_where_marked() {
    let settings = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| {
                line.replace("/usr/local/bin/profiler", "/usr/bin/profiler")
                    .replace("/usr/local/share/doc/profiler", "/usr/share/doc/profiler")
            })
            .filter(|line| line != "ConditionPathExists=/etc/profiler/api-key")
            .collect()
    };
    let packaged = read(PACKAGED_UNIT);
    assert_eq!(settings(&read(UNIT)), settings(&packaged), "the two units differ");
    assert!(packaged.contains("\nConditionPathExists=/etc/profiler/api-key\n"));
    assert!(packaged.contains("\nExecStart=/usr/bin/profiler run "));
}

/// The package in a booted systemd (systemd-nspawn of a Debian bookworm root), driven as an administrator would:
/// installed with apt, it is neither enabled nor started; enabled before the key exists, it is skipped by its
/// condition rather than failed; `systemd-analyze security` rates the installed unit; a reinstall keeps the edited
/// conffile; removal stops the service and keeps the configuration.
///
/// What it cannot show: profiles from the container. systemd-nspawn always gives the container a PID namespace of
/// its own, the agent's eBPF programs see the host's PIDs, and the agent finds its targets by the PIDs it sees; so
/// started with its key, the agent must refuse in one line (preflight.rs) rather than sample nothing. Pushes, the
/// last window at SIGTERM and the capabilities kept are checked with the image under runc in the host's PID
/// namespace (below), and by tests/integration/deploy.rs for the unit's settings.
#[test]
#[ignore = "needs `cargo xtask dist` (minutes: a second, static build): run by `cargo xtask test --dist`"]
fn the_package_installs_into_a_booted_systemd_and_waits_for_its_key() {
    if !require_root() {
        return;
    }
    let Some(dist) = dist() else { return };
    let _cpu = exclusive_cpu();
    let machine = Machine::boot(&format!("profiler-{}", std::process::id()));
    let minute = Duration::from_secs(60);
    fs::copy(dist.deb(), machine.root().join("root/profiler.deb")).unwrap();
    machine.sh_ok("apt-get install -y --no-install-recommends /root/profiler.deb", Duration::from_secs(300));
    let state = |what: &str| machine.sh(&format!("systemctl {what} profiler"), minute).stdout.trim().to_owned();
    assert_eq!(state("is-enabled"), "disabled", "the package enabled the service");
    assert_eq!(state("is-active"), "inactive", "the package started the service");
    let conffiles = machine.sh_ok("dpkg-query --showformat='${Conffiles}' --show profiler", minute);
    assert!(conffiles.contains("/etc/profiler/profiler.env"), "not a conffile: {conffiles}");
    assert_eq!(machine.sh_ok("stat -c %a /etc/profiler/profiler.env", minute).trim(), "600");
    assert_eq!(machine.sh_ok("readlink -f $(command -v profiler)", minute).trim(), "/usr/bin/profiler");

    // Enabled and started before the key is there: skipped, not failed (and not restarted in a loop).
    machine.sh_ok("systemctl enable --now profiler", minute);
    assert_eq!(state("is-enabled"), "enabled");
    assert_eq!(state("show --property=ConditionResult --value"), "no", "the unit ran without its key");
    assert_eq!(state("is-active"), "inactive");
    assert_eq!(state("show --property=Result --value"), "success");

    // The installed unit as systemd rates it.
    let security = machine.sh("systemd-analyze security --no-pager profiler.service", minute).stdout;
    let exposure: f64 = security
        .lines()
        .find_map(|line| line.split("Overall exposure level for profiler.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{security}"));
    eprintln!("systemd-analyze security of the installed unit: {exposure}");
    assert!(exposure <= 3.0, "exposure {exposure}:\n{security}");

    // Configured (the environment file edited, the key written) with a Python process to profile: the agent
    // starts under the unit, and says in one line why it cannot profile from this PID namespace.
    let key = "glc_packaged-key";
    let env = "PYROSCOPE_SERVER_URL=http://127.0.0.1:4040\nPYROSCOPE_USERNAME=4242\nENVIRONMENT=test\n\
               PROFILER_ARGS=--name python3 --tag region=test\nPROFILING_ENABLED=true\n";
    fs::write(machine.root().join("etc/profiler/profiler.env"), env).unwrap();
    let key_file = machine.root().join("etc/profiler/api-key");
    fs::write(&key_file, key).unwrap();
    fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600)).unwrap();
    machine.sh_ok("systemd-run --unit=busy-python python3 -c 'while True: sum(range(1000))'", minute);
    machine.sh_ok("systemctl start profiler", minute);
    assert_eq!(state("show --property=ConditionResult --value"), "yes", "the key did not satisfy the condition");
    let journal = || machine.sh("journalctl --unit=profiler --no-pager --output=cat", minute).stdout;
    let started = std::time::Instant::now();
    while !journal().contains("runs in a PID namespace of its own") {
        assert!(started.elapsed() < minute, "the agent did not refuse the container's PID namespace:\n{}", journal());
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = journal();
    assert!(!log.contains(key), "the API key is in the journal");
    assert!(!log.contains("panicked"), "the agent crashed:\n{log}");
    machine.sh_ok("systemctl stop profiler", minute);
    assert_eq!(state("is-active"), "inactive");

    // A reinstall keeps the edited conffile; removal stops the service and keeps the configuration.
    machine.sh_ok("apt-get install -y --reinstall /root/profiler.deb", Duration::from_secs(300));
    assert_eq!(fs::read_to_string(machine.root().join("etc/profiler/profiler.env")).unwrap(), env);
    machine.sh_ok("apt-get remove -y profiler", Duration::from_secs(300));
    assert_eq!(state("is-active"), "inactive");
    assert!(!machine.root().join("usr/bin/profiler").exists());
    assert!(machine.root().join("etc/profiler/profiler.env").exists(), "removal (not purge) took the configuration");
}

// ---------------------------------------------------------------------------------------------------------------
// The OCI image

/// The DaemonSet names the image `dist` builds.
#[test]
#[ignore = "needs `cargo xtask dist` (minutes: a second, static build): run by `cargo xtask test --dist`"]
fn the_daemonset_runs_the_image_dist_builds() {
    let Some(dist) = dist() else { return };
    let manifest = read(MANIFEST);
    let images: Vec<&str> =
        manifest.lines().filter_map(|line| line.trim().strip_prefix("image:")).map(str::trim).collect();
    assert_eq!(images.len(), 1, "one image in the DaemonSet: {images:?}");
    let references = dist.image_references();
    assert!(references.iter().any(|r| r == images[0]), "the DaemonSet runs {}, dist built {references:?}", images[0]);
}

/// The image run by runc (Debian's) as the DaemonSet runs it: its entrypoint with the DaemonSet's arguments, root
/// in the container with exactly the DaemonSet's capabilities and no new privileges, the host's PID namespace, a
/// read-only root, the seccomp allow list of deploy/kubernetes/seccomp/, tracefs and the key mounted read-only.
/// It must find a host process by its command line, push its profiles tagged with the node, keep only what
/// sampling needs once attached, and send its last window on SIGTERM. One difference from a pod: the container
/// keeps the host's network namespace, to reach the loopback receiver. (Not crun: Debian 12's crun refuses this
/// machine's hybrid cgroup hierarchy, v1 controllers beside a v2 tree; runc runs in both.)
#[test]
#[ignore = "needs `cargo xtask dist` (minutes: a second, static build): run by `cargo xtask test --dist`"]
fn the_image_runs_under_runc_as_the_daemonset_runs_it() {
    if !require_root() {
        return;
    }
    let Some(dist) = dist() else { return };
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("packaging-runc");
    let bundle = dir.join("bundle");
    let image = format!("{}:{}", dist.layout().display(), dist.image_references()[0]);
    let unpack = run(Command::new("umoci").args(["unpack", "--image", &image]).arg(&bundle), Duration::from_secs(120));
    assert!(unpack.status.success(), "umoci unpack: {}", unpack.stderr);

    let secret = dir.join("secret");
    fs::create_dir(&secret).unwrap();
    let key = "glc_image-test-key";
    fs::write(secret.join("api-key"), key).unwrap();
    fs::set_permissions(secret.join("api-key"), fs::Permissions::from_mode(0o400)).unwrap();
    let crashes = dir.join("crashes");
    fs::create_dir(&crashes).unwrap();

    let target = start_native_burn(Duration::from_secs(90));
    let receiver = Receiver::start();
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&fs::read_to_string(&config_path).unwrap()).unwrap();
    let caps = json!(["CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE", "CAP_CHECKPOINT_RESTORE"]);
    let entrypoint = config["process"]["args"][0].as_str().expect("the image's entrypoint").to_owned();
    assert_eq!(entrypoint, "/usr/bin/profiler");
    // The DaemonSet's args, with the native workload's command line to match and the receiver to push to.
    let burn = workloads().native_burn.display().to_string();
    config["process"]["args"] = json!([
        entrypoint,
        "run",
        "--match-cmdline",
        format!("^{}", regex_escape(&burn)),
        "--api-key-file",
        "/etc/profiler/secret/api-key",
        "--tag",
        "node=worker-7",
        "--crash-dir",
        "/var/lib/profiler/crashes",
        "--upload-interval",
        "2s"
    ]);
    config["process"]["env"] = json!([
        "PATH=/usr/bin",
        format!("PYROSCOPE_SERVER_URL={}", receiver.url()),
        "PYROSCOPE_USERNAME=4242",
        "ENVIRONMENT=test",
        "PROFILING_ENABLED=true"
    ]);
    config["process"]["terminal"] = json!(false);
    config["process"]["user"] = json!({"uid": 0, "gid": 0});
    config["process"]["noNewPrivileges"] = json!(true);
    config["process"]["capabilities"] =
        json!({"bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": []});
    config["root"]["readonly"] = json!(true);
    // hostPID, and (unlike a pod) the host's network.
    let namespaces = config["linux"]["namespaces"].as_array_mut().expect("namespaces");
    namespaces.retain(|ns| ns["type"] != "pid" && ns["type"] != "network");
    let seccomp: serde_json::Value =
        serde_json::from_str(&read("deploy/kubernetes/seccomp/profiler.json")).expect("the seccomp profile is JSON");
    config["linux"]["seccomp"] = seccomp;
    config["linux"]["resources"] = json!({"memory": {"limit": 256 << 20}, "cpu": {"quota": 50000, "period": 100000}});
    let mounts = config["mounts"].as_array_mut().expect("mounts");
    for (source, destination, mode) in [
        ("/sys/kernel/tracing".to_owned(), "/sys/kernel/tracing", "ro"),
        (secret.display().to_string(), "/etc/profiler/secret", "ro"),
        (crashes.display().to_string(), "/var/lib/profiler/crashes", "rw"),
    ] {
        mounts.push(json!({"destination": destination, "type": "bind", "source": source,
                           "options": ["rbind", mode, "nosuid", "nodev"]}));
    }
    fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();

    let id = format!("profiler-test-{}", std::process::id());
    // Declared before the agent, so dropped after it: the container goes even when the test fails.
    let _container = RuncContainer(id.clone());
    let mut runc = Command::new("runc");
    runc.args(["run", "--bundle"]).arg(&bundle).arg(&id);
    let mut agent = Agent::start_command(runc);
    let pushes = receiver.wait_for("two uploads", Duration::from_secs(60), |requests| requests.len() >= 2);
    let expect = Expect { authorization: Some(basic_auth("4242", key)), tenant: None };
    let pushed = decode_push(&pushes[1], &expect);
    assert_eq!(pushed.labels.get("node").map(String::as_str), Some("worker-7"), "{:?}", pushed.labels);
    let threads: Vec<String> = python::pprof_samples(&pushed.profile)
        .iter()
        .filter_map(|s| s.label("thread_name").map(str::to_owned))
        .collect();
    assert!(threads.iter().any(|t| t == "burn-a"), "no samples of the host's native-burn: {threads:?}");
    agent.assert_alive();

    // The agent is the container's process in no PID namespace of its own: runc's state names its host PID.
    let state = run(Command::new("runc").args(["state", &id]), Duration::from_secs(10));
    let state: serde_json::Value = serde_json::from_str(&state.stdout).expect("runc state is JSON");
    let pid = state["pid"].as_u64().expect("the container's pid");
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        let hex = status.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_else(|| panic!("no {name}"));
        u64::from_str_radix(hex.trim(), 16).unwrap()
    };
    let kept = ["BPF", "SYS_PTRACE", "CHECKPOINT_RESTORE"].into_iter().map(capability_bit).fold(0, |a, b| a | b);
    assert_eq!(field("CapEff:"), kept, "the agent's effective capabilities once attached");
    assert_eq!(field("NoNewPrivs:"), 1);
    assert_eq!(field("Seccomp:"), 2, "no seccomp filter on the agent");

    let before = receiver.requests().len();
    let stopped = agent.stop_with(|| {
        let kill = run(Command::new("runc").args(["kill", &id, "TERM"]), Duration::from_secs(10));
        assert!(kill.status.success(), "runc kill: {}", kill.stderr);
    });
    stopped.assert_clean_exit();
    stopped.assert_stopped_within(Duration::from_secs(10));
    assert!(receiver.requests().len() > before, "no last window after SIGTERM");
    assert!(!stopped.stderr.contains(key), "the API key is in the log");
    receiver.assert_clean();
    drop(target);
}

/// Deletes the runc container of this id when dropped, running or not.
struct RuncContainer(String);

impl Drop for RuncContainer {
    fn drop(&mut self) {
        let _ = Command::new("runc").args(["delete", "--force", &self.0]).output();
    }
}

/// `text` with the regular expression metacharacters escaped.
fn regex_escape(text: &str) -> String {
    text.chars().fold(String::new(), |mut out, c| {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
        out
    })
}
