//! Deployment: least privilege tried for real (the agent run with a reduced capability set under `setpriv`, the
//! way its systemd unit and DaemonSet run it, then its threads' capability sets read back from /proc), the
//! systemd unit checked by `systemd-analyze`, the Kubernetes manifest by `kubernetes-validate` (a schema
//! validator from PyPI that `cargo xtask setup` installs), and the Alloy configuration by a strict parser of the
//! Alloy syntax with the schemas of the two components it uses, in tests/support/alloy.rs (no Alloy binary or
//! parser is to be had from the registries this project can reach). Each validator is also shown a broken copy,
//! which it must reject.
use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use profiler_tests::{
    agent::{capability_bit, Agent},
    alloy, exclusive_cpu, profiler, profiler_bin,
    receiver::{basic_auth, decode_push, Expect, Receiver},
    require_root, run, start_native_burn, workspace_root, TestDir,
};

const UNIT: &str = "deploy/systemd/profiler.service";
const UNIT_ENV: &str = "deploy/systemd/profiler.env";
const MANIFEST: &str = "deploy/kubernetes/profiler.yaml";
const ALLOY: &str = "deploy/alloy/config.alloy";
/// What every thread of a running agent may hold once attached: CAP_PERFMON only loads and attaches.
const KEPT: [&str; 3] = ["CAP_BPF", "CAP_SYS_PTRACE", "CAP_CHECKPOINT_RESTORE"];

fn read(path: &str) -> String {
    fs::read_to_string(workspace_root().join(path)).unwrap_or_else(|err| panic!("reading {path}: {err}"))
}

fn bits<'a>(names: impl IntoIterator<Item = &'a str>) -> u64 {
    names.into_iter().map(capability_bit).fold(0, |a, b| a | b)
}

/// The value of `Key=` in the unit (the only one: a repeated key would be ambiguous here).
fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    let mut values = unit.lines().filter_map(|line| line.strip_prefix(&format!("{key}=")));
    let value = values.next().unwrap_or_else(|| panic!("the unit has no {key}="));
    assert!(values.next().is_none(), "the unit sets {key}= twice");
    value.trim()
}

fn unit_capabilities(unit: &str) -> Vec<&str> {
    let bounding: Vec<&str> = unit_value(unit, "CapabilityBoundingSet").split_whitespace().collect();
    let ambient: Vec<&str> = unit_value(unit, "AmbientCapabilities").split_whitespace().collect();
    assert_eq!(bounding, ambient, "the bounding and ambient sets differ");
    bounding
}

/// `setpriv` arguments that give the agent exactly `caps` (names as in unit files), as systemd would.
fn setpriv_with(caps: &[&str], no_new_privs: bool) -> Vec<String> {
    let list: String =
        caps.iter().map(|c| format!(",+{}", c.trim_start_matches("CAP_").to_ascii_lowercase())).collect();
    let mut args = vec![
        "setpriv".to_owned(),
        format!("--bounding-set=-all{list}"),
        format!("--inh-caps=-all{list}"),
        format!("--ambient-caps=-all{list}"),
    ];
    if no_new_privs {
        args.push("--no-new-privs".into());
    }
    args
}

#[test]
fn a_missing_capability_is_named_in_one_line() {
    if !require_root() {
        return;
    }
    let target = start_native_burn(Duration::from_secs(30));
    let dir = TestDir::new("deploy-missing-caps");
    let pid = target.pid().to_string();
    let out = dir.join("out.folded");
    for (granted, missing) in [
        ("-all,+bpf,+perfmon", "CAP_SYS_PTRACE"),
        ("-all,+sys_ptrace", "CAP_BPF, CAP_PERFMON"),
        ("-all,+bpf,+sys_ptrace", "CAP_PERFMON"),
        ("-all", "CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE"),
    ] {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--bounding-set={granted}")).arg("--inh-caps=-all").arg(profiler_bin());
        cmd.args(["record", "--pid", &pid, "--duration", "1s", "-o"]).arg(&out).current_dir(dir.path());
        let result = run(&mut cmd, Duration::from_secs(30));
        result.assert_one_line_error(&["missing capabilities"]);
        let named = result.stderr.split("missing capabilities ").nth(1).and_then(|rest| rest.split(':').next());
        assert_eq!(named, Some(missing), "{granted}: {}", result.stderr);
        assert!(!out.exists(), "{granted}: wrote an output without sampling");
    }
}

/// The agent as the unit runs it: the unit's capability sets and NoNewPrivileges (through setpriv), the API key
/// from a credentials directory, the unit's own ExecStart line. It must profile and upload, and once attached
/// every thread must hold CAP_BPF, CAP_SYS_PTRACE and CAP_CHECKPOINT_RESTORE and nothing else.
#[test]
fn the_agent_run_as_the_unit_runs_it_keeps_only_what_sampling_needs() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let unit = read(UNIT);
    let caps = unit_capabilities(&unit);
    assert_eq!(unit_value(&unit, "NoNewPrivileges"), "yes");

    let target = start_native_burn(Duration::from_secs(60));
    let receiver = Receiver::start();
    let dir = TestDir::new("deploy-unit-caps");
    let credentials = dir.join("credentials");
    fs::create_dir(&credentials).unwrap();
    let key = "glc_unit-credential-key";
    fs::write(credentials.join("api-key"), key).unwrap();
    fs::set_permissions(credentials.join("api-key"), fs::Permissions::from_mode(0o400)).unwrap();

    // ExecStart as systemd expands it: ${CREDENTIALS_DIRECTORY} whole, $PROFILER_ARGS split at whitespace.
    let exec = unit_value(&unit, "ExecStart");
    let (binary, args) = exec.split_once(' ').unwrap();
    assert_eq!(binary, "/usr/local/bin/profiler");
    let pid = target.pid().to_string();
    let crash_dir = dir.join("crashes");
    let profiler_args =
        format!("--pid {pid} --upload-interval 1s --status-interval 1s --crash-dir {}", crash_dir.display());
    let mut argv: Vec<String> = Vec::new();
    for word in args.split_whitespace() {
        match word {
            "run" => {}
            "$PROFILER_ARGS" => argv.extend(profiler_args.split_whitespace().map(str::to_owned)),
            word => argv.push(word.replace("${CREDENTIALS_DIRECTORY}", credentials.to_str().unwrap())),
        }
    }
    assert!(argv.iter().any(|a| a == &format!("{}/api-key", credentials.display())), "ExecStart reads the credential");
    let wrapper = setpriv_with(&caps, true);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let url = receiver.url();
    let mut agent = Agent::start(&wrapper, &argv, &[("PYROSCOPE_SERVER_URL", &url), ("PYROSCOPE_USERNAME", "4242")]);

    let pushes = receiver.wait_for("two uploads", Duration::from_secs(30), |requests| requests.len() >= 2);
    let expect = Expect { authorization: Some(basic_auth("4242", key)), tenant: None };
    let pushed = decode_push(&pushes[0], &expect);
    assert!(!pushed.profile.sample.is_empty(), "the upload has no samples");
    agent.assert_alive();

    let kept = bits(KEPT);
    let threads = agent.thread_capabilities();
    assert!(threads.len() >= 2, "expected the sampling and the upload threads: {threads:?}");
    for (name, [permitted, effective, bounding, ambient]) in &threads {
        assert_eq!(*effective, kept, "thread {name}: effective set {effective:#x}, want {kept:#x}");
        assert_eq!(*permitted, kept, "thread {name}: permitted set {permitted:#x}, want {kept:#x}");
        assert_eq!(*ambient, 0, "thread {name}: ambient set {ambient:#x} would pass to children");
        assert_eq!(*bounding, bits(caps.iter().copied()), "thread {name}: bounding set {bounding:#x}");
    }
    let stopped = agent.stop(libc::SIGTERM);
    stopped.assert_clean_exit();
    assert!(!stopped.stderr.contains(key), "the API key is in the log");
    receiver.assert_clean();
}

/// Run as root (sudo, or a unit without capability settings) the agent narrows everything itself, the bounding
/// set included, so that not even an exec could regain what it dropped.
#[test]
fn the_agent_run_as_root_drops_every_other_capability() {
    if !require_root() {
        return;
    }
    let _cpu = exclusive_cpu();
    let target = start_native_burn(Duration::from_secs(60));
    let receiver = Receiver::start();
    let dir = TestDir::new("deploy-root-caps");
    let pid = target.pid().to_string();
    let crash_dir = dir.join("crashes");
    let url = receiver.url();
    let args = ["--pid", &pid, "--upload-interval", "1s", "--crash-dir", crash_dir.to_str().unwrap()];
    let mut agent = Agent::start(&[], &args, &[("PYROSCOPE_SERVER_URL", &url)]);
    receiver.wait_for("an upload", Duration::from_secs(30), |requests| !requests.is_empty());
    agent.assert_alive();
    let kept = bits(KEPT);
    let loading = kept | capability_bit("PERFMON");
    for (name, [permitted, effective, bounding, ambient]) in agent.thread_capabilities() {
        assert_eq!((permitted, effective, ambient), (kept, kept, 0), "thread {name}");
        assert_eq!(bounding, loading, "thread {name}: bounding set {bounding:#x}");
    }
    agent.stop(libc::SIGTERM).assert_clean_exit();
}

#[test]
fn the_systemd_unit_passes_systemd_analyze() {
    let unit = read(UNIT);
    let Some(analyze) = which("systemd-analyze") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "systemd-analyze is missing (cargo xtask setup installs systemd)"
        );
        eprintln!("skipping: no systemd-analyze");
        return;
    };
    let dir = TestDir::new("deploy-systemd");
    // verify checks that ExecStart's program exists: point it at the binary under test.
    let installed = unit.replace("/usr/local/bin/profiler", profiler_bin().to_str().unwrap());
    let path = dir.join("profiler.service");
    fs::write(&path, &installed).unwrap();
    let verify = run(Command::new(&analyze).arg("verify").arg(&path), Duration::from_secs(60));
    assert!(
        verify.status.success() && verify.stderr.trim().is_empty() && verify.stdout.trim().is_empty(),
        "systemd-analyze verify: {}\n{}{}",
        verify.status,
        verify.stdout,
        verify.stderr
    );
    // Exposure 0.0 (locked down) … 10.0 (unprotected); the unit scores 2.7 with this systemd.
    let security = run(
        Command::new(&analyze).args(["security", "--offline=true", "--threshold=30"]).arg(&path),
        Duration::from_secs(60),
    );
    assert!(security.status.success(), "exposure above 3.0:\n{}{}", security.stdout, security.stderr);

    // The same check on a broken copy must complain, or it proves nothing.
    let broken = dir.join("broken.service");
    fs::write(&broken, installed.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes")).unwrap();
    let verify = run(Command::new(&analyze).arg("verify").arg(&broken), Duration::from_secs(60));
    assert!(verify.stderr.contains("NoNewPrivilege"), "verify did not notice a misspelt key: {}", verify.stderr);
}

#[test]
fn the_systemd_unit_keeps_the_key_out_of_its_environment_and_command_line() {
    let unit = read(UNIT);
    let env = read(UNIT_ENV);
    for (what, text) in [("unit", &unit), ("environment file", &env)] {
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            assert!(!line.contains("PYROSCOPE_API_KEY"), "the {what} sets the API key in the environment: {line}");
        }
    }
    assert_eq!(unit_value(&unit, "LoadCredential"), "api-key:/etc/profiler/api-key");
    let exec = unit_value(&unit, "ExecStart");
    assert!(exec.contains("--api-key-file ${CREDENTIALS_DIRECTORY}/api-key"), "{exec}");
    assert_eq!(unit_value(&unit, "ProtectSystem"), "strict");
    assert_eq!(unit_value(&unit, "NoNewPrivileges"), "yes");
    // The state directory must hold `run`'s default crash directory, the only place it may write.
    let state = unit_value(&unit, "StateDirectory");
    let help = run(profiler().args(["run", "--help"]), Duration::from_secs(10));
    assert!(help.stdout.contains(&format!("/var/lib/{state}/crashes")), "--crash-dir default outside /var/lib/{state}");
    // And the cache directory the debuginfod cache's default, when DEBUGINFOD_URLS is set.
    let cache = unit_value(&unit, "CacheDirectory");
    assert!(
        help.stdout.contains(&format!("/var/cache/{cache}/debuginfod")),
        "--debuginfod-cache default outside /var/cache/{cache}"
    );
    let caps: BTreeSet<&str> = unit_capabilities(&unit).into_iter().collect();
    for needed in ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE"] {
        assert!(caps.contains(needed), "the unit does not grant {needed}");
    }

    // The environment file's arguments and the unit's own must be ones the binary accepts.
    let args = env.lines().find_map(|l| l.strip_prefix("PROFILER_ARGS=")).expect("PROFILER_ARGS in the env file");
    let mut cmd = profiler();
    cmd.args(["run", "--api-key-file", "/nonexistent/api-key"]).args(args.split_whitespace());
    let result = run(cmd.env("PROFILING_ENABLED", "false"), Duration::from_secs(10));
    assert!(result.status.success(), "the env file's PROFILER_ARGS are refused: {}", result.stderr);
    assert!(result.stderr.contains("profiling is disabled"), "{}", result.stderr);
}

/// The validators `cargo xtask setup` installs into a virtualenv (VALIDATE_VENV, else target/validate-venv).
fn validate_venv() -> Option<PathBuf> {
    let venv = std::env::var_os("VALIDATE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/validate-venv"));
    if venv.join("bin/kubernetes-validate").exists() {
        return Some(venv);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "no kubernetes-validate in {}: `cargo xtask setup` installs it",
        venv.display()
    );
    eprintln!("skipping: no kubernetes-validate in {} (run `cargo xtask setup`)", venv.display());
    None
}

#[test]
fn the_kubernetes_manifest_passes_schema_validation() {
    let Some(venv) = validate_venv() else { return };
    let manifest = workspace_root().join(MANIFEST);
    let validator = venv.join("bin/kubernetes-validate");
    // 1.30: the oldest release with securityContext.appArmorProfile; 1.37: the newest the validator knows.
    for version in ["1.30.0", "1.37.0"] {
        let result = run(
            Command::new(&validator).args(["--strict", "--no-warn", "-k", version]).arg(&manifest),
            Duration::from_secs(120),
        );
        assert!(result.status.success(), "kubernetes {version}: {}{}", result.stdout, result.stderr);
        assert_eq!(result.stdout.matches(" passed for resource ").count(), 2, "{}", result.stdout);
    }
    let dir = TestDir::new("deploy-kubernetes");
    let broken = dir.join("broken.yaml");
    fs::write(&broken, read(MANIFEST).replace("hostPID: true", "hostPid: true")).unwrap();
    let result = run(Command::new(&validator).args(["--strict", "--no-warn"]).arg(&broken), Duration::from_secs(120));
    assert!(!result.status.success() && result.stdout.contains("hostPid"), "the validator missed a misspelt field");
}

/// What the schema cannot say: the DaemonSet's settings agree with what the agent needs and accepts.
#[test]
fn the_daemonset_runs_the_agent_with_its_capabilities_key_file_and_node_tag() {
    let Some(venv) = validate_venv() else { return };
    let script = "import json, sys, yaml\nprint(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
    let output = run(
        Command::new(venv.join("bin/python")).args(["-c", script]).arg(workspace_root().join(MANIFEST)),
        Duration::from_secs(30),
    );
    assert!(output.status.success(), "{}", output.stderr);
    let documents: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    let documents = documents.as_array().unwrap();
    let of_kind = |kind: &str| documents.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"));
    let config = &of_kind("ConfigMap")["data"];
    assert!(config.get("PYROSCOPE_API_KEY").is_none(), "the API key must come from the Secret, as a file");
    let pod = &of_kind("DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    let security = &container["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let added: BTreeSet<String> = security["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("CAP_{}", c.as_str().unwrap()))
        .collect();
    let unit = read(UNIT);
    let in_unit: BTreeSet<String> = unit_capabilities(&unit).into_iter().map(str::to_owned).collect();
    assert_eq!(added, in_unit, "the DaemonSet and the systemd unit grant different capabilities");

    // The node name: from the downward API, into a tag.
    let env = container["env"].as_array().unwrap();
    let node = env.iter().find(|e| e["name"] == "NODE_NAME").expect("NODE_NAME");
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().replace("$(NODE_NAME)", "worker-7"))
        .collect();
    assert!(args.windows(2).any(|w| w == ["--tag", "node=worker-7"]), "no node tag in {args:?}");
    assert!(args.iter().any(|a| a == "--match-cmdline"), "targets by command line: {args:?}");

    // The key file lies in the mount of the Secret volume.
    let key_file = args.windows(2).find(|w| w[0] == "--api-key-file").map(|w| w[1].clone()).expect("--api-key-file");
    let mounts = container["volumeMounts"].as_array().unwrap();
    let volumes = pod["volumes"].as_array().unwrap();
    let mount = mounts
        .iter()
        .find(|m| Path::new(&key_file).parent() == Some(Path::new(m["mountPath"].as_str().unwrap())))
        .unwrap_or_else(|| panic!("{key_file} is in no volume mount"));
    let volume = volumes.iter().find(|v| v["name"] == mount["name"]).expect("the mount's volume");
    let secret = &volume["secret"];
    assert!(secret["secretName"].is_string(), "{key_file} is not from a Secret");
    let file_name = Path::new(&key_file).file_name().unwrap().to_str().unwrap();
    assert!(
        secret["items"].as_array().unwrap().iter().any(|i| i["path"] == file_name),
        "the Secret has no {file_name}"
    );
    assert!(mounts.iter().any(|m| m["mountPath"] == "/sys/kernel/tracing"), "tracefs is not mounted in the container");

    // The binary accepts the arguments (PROFILING_ENABLED=false stops it right after parsing them).
    let result = run(profiler().args(&args).env("PROFILING_ENABLED", "false"), Duration::from_secs(10));
    assert!(result.status.success() && result.stderr.contains("profiling is disabled"), "{args:?}: {}", result.stderr);
}

#[test]
fn the_alloy_config_receives_both_protocols_and_forwards_to_grafana_cloud() {
    let text = read(ALLOY);
    let config = alloy::check(&text).unwrap_or_else(|err| panic!("{ALLOY}: {err}"));
    let receive = config.iter().find(|c| c.kind == "pyroscope.receive_http").expect("a pyroscope.receive_http");
    assert_eq!(receive.number("http.listen_port"), Some(4040.0), "README and the agents' examples say port 4040");
    let write = config.iter().find(|c| c.kind == "pyroscope.write").expect("a pyroscope.write");
    assert_eq!(receive.references, [format!("pyroscope.write.{}.receiver", write.label)]);
    for env in ["GRAFANA_CLOUD_PROFILES_URL", "GRAFANA_CLOUD_PROFILES_USER", "GRAFANA_CLOUD_PROFILES_TOKEN"] {
        assert!(write.env_vars.contains(env), "{env} is not read by the write component");
    }
    let readme = read("README.md");
    assert!(readme.contains("http://alloy:4040"), "the README no longer points agents at port 4040");
}

#[test]
fn the_alloy_checker_rejects_what_alloy_would() {
    let good = read(ALLOY);
    assert!(alloy::check(&good).is_ok());
    for (broken, complaint) in [
        (good.replace("listen_port    = 4040", "listen_prot    = 4040"), "listen_prot"),
        (good.replace("forward_to = [pyroscope.write.grafana_cloud.receiver]", ""), "forward_to"),
        (good.replace("pyroscope.write.grafana_cloud.receiver", "pyroscope.write.grafana.receiver"), "grafana"),
        (good.replace("grafana_cloud.receiver", "grafana_cloud.exports"), "exports"),
        (good.replace("sys.env(\"GRAFANA_CLOUD_PROFILES_URL\")", "sys.environ(\"X\")"), "sys.environ"),
        (good.replace("listen_port    = 4040", "listen_port    = true"), "listen_port"),
        (good.replace("url = sys.env", "uri = sys.env"), "uri"),
        (good.replace("url = sys.env(\"GRAFANA_CLOUD_PROFILES_URL\")", ""), "required attribute `url`"),
        (good.replace("basic_auth {", "basic_authentication {"), "basic_authentication"),
        (good.replacen('}', "", 1), "end of file"),
        (good.replace("pyroscope.write \"grafana_cloud\"", "pyroscope.writer \"grafana_cloud\""), "pyroscope.writer"),
        (
            format!("{good}\npyroscope.write \"grafana_cloud\" {{\n  endpoint {{\n    url = \"http://x\"\n  }}\n}}\n"),
            "twice",
        ),
    ] {
        let err = alloy::check(&broken).expect_err(&format!("accepted a config with {complaint}"));
        assert!(err.contains(complaint), "the error for {complaint} does not name it: {err}");
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(program)).find(|p| p.is_file())
}

// ---------------------------------------------------------------------------------------------------------------
// System calls and limits (issue 15, item 8)

/// systemd's syscall groups (`systemd-analyze syscall-filter`), each with its names and nested groups.
fn syscall_groups(analyze: &Path) -> std::collections::BTreeMap<String, Vec<String>> {
    let listing = run(Command::new(analyze).arg("syscall-filter"), Duration::from_secs(30));
    assert!(listing.status.success(), "systemd-analyze syscall-filter: {}", listing.stderr);
    let mut groups = std::collections::BTreeMap::new();
    let mut current: Option<String> = None;
    for line in listing.stdout.lines() {
        if line.starts_with('@') {
            current = Some(line.trim().to_owned());
            groups.insert(line.trim().to_owned(), Vec::new());
        } else if let Some(group) = &current {
            let entry = line.trim();
            if !entry.is_empty() && !entry.starts_with('#') {
                groups.get_mut(group).unwrap().push(entry.to_owned());
            }
        }
    }
    groups
}

fn expand(name: &str, groups: &std::collections::BTreeMap<String, Vec<String>>) -> BTreeSet<String> {
    match groups.get(name) {
        Some(members) => members.iter().flat_map(|m| expand(m, groups)).collect(),
        None if name.starts_with('@') => panic!("unknown syscall group {name}"),
        None => BTreeSet::from([name.to_owned()]),
    }
}

/// The system calls the unit's `SystemCallFilter=` lines allow: the first must be an allow list, later `~` lines
/// take calls out of it.
fn unit_allowed_syscalls(unit: &str, analyze: &Path) -> BTreeSet<String> {
    let groups = syscall_groups(analyze);
    let lines: Vec<&str> = unit.lines().filter_map(|l| l.strip_prefix("SystemCallFilter=")).collect();
    assert!(!lines.is_empty(), "the unit has no SystemCallFilter=");
    assert!(!lines[0].starts_with('~'), "SystemCallFilter= is a deny list: everything not named is allowed");
    let mut allowed = BTreeSet::new();
    for line in lines {
        let (deny, names) = match line.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        for name in names.split_whitespace() {
            let set = expand(name, &groups);
            if deny {
                allowed.retain(|s| !set.contains(s));
            } else {
                allowed.extend(set);
            }
        }
    }
    allowed
}

/// The calls `strace -f -c` counted in `summary`.
fn straced_syscalls(summary: &Path) -> BTreeSet<String> {
    let text = fs::read_to_string(summary).unwrap_or_else(|err| panic!("reading {}: {err}", summary.display()));
    text.lines()
        .filter(|l| !l.starts_with('%') && !l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .filter(|name| *name != "total" && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(str::to_owned)
        .collect()
}

/// Every system call the agent makes, in `record` (with a crash report written) and in `run` (uploading), is in
/// the unit's allow list and in the DaemonSet's seccomp profile; neither lets it write into another process. The
/// unit and the DaemonSet bound memory, CPU, tasks and core dumps, above what the agent used here.
#[test]
fn the_unit_and_the_seccomp_profile_allow_what_the_agent_calls_and_no_more() {
    if !require_root() {
        return;
    }
    let (Some(analyze), Some(strace)) = (which("systemd-analyze"), which("strace")) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "strace or systemd-analyze is missing (cargo xtask setup)"
        );
        eprintln!("skipping: no strace or systemd-analyze");
        return;
    };
    let _cpu = exclusive_cpu();
    let unit = read(UNIT);
    let allowed = unit_allowed_syscalls(&unit, &analyze);
    let profile: serde_json::Value = serde_json::from_str(&read("deploy/kubernetes/seccomp/profiler.json")).unwrap();
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO", "the seccomp profile is not an allow list");
    let in_profile: BTreeSet<String> = profile["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|rule| rule["action"] == "SCMP_ACT_ALLOW")
        .flat_map(|rule| rule["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_owned()))
        .collect();
    for forbidden in ["process_vm_writev", "ptrace", "init_module", "kexec_load", "mount"] {
        assert!(!allowed.contains(forbidden), "the unit allows {forbidden}");
        assert!(!in_profile.contains(forbidden), "the seccomp profile allows {forbidden}");
    }

    let dir = TestDir::new("deploy-syscalls");
    let mut used = BTreeSet::new();
    // record, with a target that crashes (the crash directory made, the report written).
    let exe = profiler_tests::crash::build_crash_by_name("deploy-crash");
    let go = dir.join("go");
    fs::write(&go, "").unwrap();
    // Crashes 5 s after it starts: time for the profiler (slower under strace) to attach.
    let mut workload = profiler_tests::crash::Workload::start(Command::new(&exe).arg(&go).arg("5000"));
    let summary = dir.join("record.strace");
    let mut record = Command::new(&strace);
    record.args(["-f", "-c", "-o"]).arg(&summary).arg(profiler_bin());
    record.args(["record", "--pid", &workload.pid().to_string(), "--crash-dir"]).arg(dir.join("crashes"));
    record.arg("-o").arg(dir.join("out.pb.gz")).arg("-o").arg(dir.join("out.svg")).current_dir(dir.path());
    let result = run(&mut record, Duration::from_secs(60));
    assert!(result.status.success(), "record under strace: {}", result.stderr);
    workload.wait_exit(Duration::from_secs(30)).assert_killed_by(libc::SIGSEGV);
    assert!(fs::read_dir(dir.join("crashes")).is_ok_and(|d| d.count() > 0), "no crash report: {}", result.stderr);
    used.extend(straced_syscalls(&summary));
    // run, uploading until its target exits.
    // Long enough for an agent that starts slowly under strace on a busy machine to see it run.
    let target = start_native_burn(Duration::from_secs(10));
    let receiver = Receiver::start();
    let summary = dir.join("run.strace");
    let mut agent = Command::new(&strace);
    agent.args(["-f", "-c", "-o"]).arg(&summary).arg(profiler_bin());
    agent.args(["run", "--pid", &target.pid().to_string(), "--server-url", &receiver.url(), "--upload-interval", "1s"]);
    agent
        .arg("--crash-dir")
        .arg(dir.join("run-crashes"))
        .env_remove("PYROSCOPE_API_KEY")
        .env_remove("PYROSCOPE_USERNAME");
    let result = run(&mut agent, Duration::from_secs(60));
    assert!(result.status.success(), "run under strace: {}", result.stderr);
    assert!(!receiver.requests().is_empty(), "nothing was uploaded: {}", result.stderr);
    used.extend(straced_syscalls(&summary));

    assert!(used.contains("bpf") && used.contains("perf_event_open"), "strace saw too little: {used:?}");
    let missing: Vec<&String> = used.iter().filter(|s| !allowed.contains(*s)).collect();
    assert!(missing.is_empty(), "the agent calls {missing:?}, which the unit's SystemCallFilter= does not allow");
    let missing: Vec<&String> = used.iter().filter(|s| !in_profile.contains(*s)).collect();
    assert!(missing.is_empty(), "the agent calls {missing:?}, which the seccomp profile does not allow");

    // Limits: set, and above what the agent needs.
    assert_eq!(unit_value(&unit, "LimitCORE"), "0");
    let memory_max = unit_value(&unit, "MemoryMax");
    let mib: u64 = memory_max.strip_suffix('M').and_then(|m| m.parse().ok()).expect("MemoryMax=NNNM");
    assert!((128..=512).contains(&mib), "MemoryMax={memory_max}");
    let tasks: u64 = unit_value(&unit, "TasksMax").parse().expect("TasksMax=N");
    assert!((8..=64).contains(&tasks), "TasksMax={tasks}");
    assert!(unit_value(&unit, "CPUQuota").ends_with('%'), "no CPUQuota=");
}

/// The DaemonSet: a CPU and memory limit, no priority that would let it preempt workloads, no blanket
/// toleration, and the seccomp allow list.
#[test]
fn the_daemonset_is_limited_and_confined() {
    let manifest = read(MANIFEST);
    let settings: Vec<&str> = manifest.lines().map(str::trim_start).filter(|l| !l.starts_with('#')).collect();
    assert!(
        !settings.iter().any(|l| l.starts_with("priorityClassName:") && l.contains("critical")),
        "the DaemonSet may preempt the workloads it profiles"
    );
    assert!(!settings.iter().any(|l| l.contains("operator: Exists")), "the DaemonSet tolerates every taint");
    assert!(manifest.contains("type: Localhost") && manifest.contains("localhostProfile: profiles/profiler.json"));
    let limits = manifest.split("limits:").nth(1).expect("resource limits");
    assert!(limits.contains("cpu:") && limits.contains("memory:"), "limits without cpu or memory: {limits}");
}
