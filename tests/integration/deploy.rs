//! Deployment: least privilege tried for real (the agent run with a reduced capability set under `setpriv`, the
//! way its systemd unit and DaemonSet run it, then its threads' capability sets read back from /proc), the
//! systemd unit checked by `systemd-analyze`, the Kubernetes manifest by `kubernetes-validate` (a schema
//! validator from PyPI that `cargo xtask setup` installs), and the Alloy configuration by a strict parser of the
//! Alloy syntax with the schemas of the two components it uses (no Alloy binary or parser is to be had from the
//! registries this project can reach). Each validator is also shown a broken copy, which it must reject.
use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use profiler_tests::{
    agent_support::{capability_bit, Agent},
    exclusive_cpu, profiler, profiler_bin,
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
    let list: String = caps.iter().map(|c| format!(",+{}", c.trim_start_matches("CAP_").to_ascii_lowercase())).collect();
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
        assert!(std::env::var("CI").as_deref() != Ok("true"), "systemd-analyze is missing (cargo xtask setup installs systemd)");
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
    let added: BTreeSet<String> =
        security["capabilities"]["add"].as_array().unwrap().iter().map(|c| format!("CAP_{}", c.as_str().unwrap())).collect();
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
    assert!(secret["items"].as_array().unwrap().iter().any(|i| i["path"] == file_name), "the Secret has no {file_name}");
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
        (format!("{good}\npyroscope.write \"grafana_cloud\" {{\n  endpoint {{\n    url = \"http://x\"\n  }}\n}}\n"), "twice"),
    ] {
        let err = alloy::check(&broken).expect_err(&format!("accepted a config with {complaint}"));
        assert!(err.contains(complaint), "the error for {complaint} does not name it: {err}");
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(program)).find(|p| p.is_file())
}

/// A parser for the Alloy configuration syntax (blocks, attributes, literals, lists, objects, references and
/// function calls; its operators are refused rather than guessed at) and the schemas of the components this
/// project's config uses, taken from Alloy's sources (internal/component/pyroscope/{receive_http,write},
/// common/net and common/config, commit 66ebea85 of 2026-08-21): every attribute and block name, which are
/// required, their types, and which exports a reference may name.
mod alloy {
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Clone, Debug, PartialEq)]
    enum Value {
        Str(String),
        Num(f64),
        Bool(bool),
        Null,
        List(Vec<Value>),
        Object(Vec<(String, Value)>),
        Ref(Vec<String>),
        Call(String, Vec<Value>),
    }

    #[derive(Debug)]
    enum Stmt {
        Attr(String, Value, usize),
        Block(Block),
    }

    #[derive(Debug)]
    struct Block {
        name: String,
        label: Option<String>,
        body: Vec<Stmt>,
        line: usize,
    }

    /// A component of the config as checked.
    #[derive(Debug)]
    pub struct Component {
        pub kind: String,
        pub label: String,
        /// Numbers by dotted path (`http.listen_port`).
        numbers: BTreeMap<String, f64>,
        /// Every reference in its arguments.
        pub references: Vec<String>,
        /// The variables its `sys.env` calls read.
        pub env_vars: BTreeSet<String>,
    }

    impl Component {
        pub fn number(&self, path: &str) -> Option<f64> {
            self.numbers.get(path).copied()
        }
    }

    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Type {
        Str,
        Num,
        Bool,
        Duration,
        MapStr,
        MapListStr,
        ListStr,
        Receivers,
    }

    /// name, type, required.
    type Attrs = &'static [(&'static str, Type, bool)];

    struct Schema {
        attrs: Attrs,
        /// name, schema, repeatable.
        blocks: &'static [(&'static str, &'static Schema, bool)],
    }

    const TLS_SERVER: Schema = Schema {
        attrs: &[
            ("cert_pem", Type::Str, false),
            ("key_pem", Type::Str, false),
            ("cert_file", Type::Str, false),
            ("key_file", Type::Str, false),
            ("client_auth_type", Type::Str, false),
            ("client_ca_file", Type::Str, false),
            ("client_ca", Type::Str, false),
            ("cipher_suites", Type::Str, false),
            ("min_version", Type::Str, false),
        ],
        blocks: &[],
    };
    const HTTP2: Schema = Schema {
        attrs: &[
            ("enabled", Type::Bool, false),
            ("max_handlers", Type::Num, false),
            ("max_concurrent_streams", Type::Num, false),
            ("max_decoder_header_table_size", Type::Num, false),
            ("max_encoder_header_table_size", Type::Num, false),
            ("max_read_frame_size", Type::Num, false),
            ("permit_prohibited_ciphers", Type::Bool, false),
            ("idle_timeout", Type::Duration, false),
            ("read_idle_timeout", Type::Duration, false),
            ("ping_timeout", Type::Duration, false),
            ("write_byte_timeout", Type::Duration, false),
            ("max_upload_buffer_per_connection", Type::Num, false),
            ("max_upload_buffer_per_stream", Type::Num, false),
        ],
        blocks: &[],
    };
    const HTTP_SERVER: Schema = Schema {
        attrs: &[
            ("listen_address", Type::Str, false),
            ("listen_port", Type::Num, false),
            ("conn_limit", Type::Num, false),
            ("server_read_timeout", Type::Duration, false),
            ("server_write_timeout", Type::Duration, false),
            ("server_idle_timeout", Type::Duration, false),
        ],
        blocks: &[("tls", &TLS_SERVER, false), ("http2", &HTTP2, false)],
    };
    const GRPC_SERVER: Schema = Schema {
        attrs: &[
            ("listen_address", Type::Str, false),
            ("listen_port", Type::Num, false),
            ("conn_limit", Type::Num, false),
            ("max_connection_age", Type::Duration, false),
            ("max_connection_age_grace", Type::Duration, false),
            ("max_connection_idle", Type::Duration, false),
            ("server_max_recv_msg_size", Type::Num, false),
            ("server_max_send_msg_size", Type::Num, false),
            ("server_max_concurrent_streams", Type::Num, false),
        ],
        blocks: &[("tls", &TLS_SERVER, false)],
    };
    const RECEIVE_HTTP: Schema = Schema {
        attrs: &[
            ("forward_to", Type::Receivers, true),
            ("debug_info_upload_timeout", Type::Duration, false),
            ("graceful_shutdown_timeout", Type::Duration, false),
        ],
        blocks: &[("http", &HTTP_SERVER, false), ("grpc", &GRPC_SERVER, false)],
    };
    const BASIC_AUTH: Schema = Schema {
        attrs: &[("username", Type::Str, false), ("password", Type::Str, false), ("password_file", Type::Str, false)],
        blocks: &[],
    };
    const AUTHORIZATION: Schema = Schema {
        attrs: &[("type", Type::Str, false), ("credentials", Type::Str, false), ("credentials_file", Type::Str, false)],
        blocks: &[],
    };
    const TLS_CLIENT: Schema = Schema {
        attrs: &[
            ("ca_pem", Type::Str, false),
            ("ca_file", Type::Str, false),
            ("cert_pem", Type::Str, false),
            ("cert_file", Type::Str, false),
            ("key_pem", Type::Str, false),
            ("key_file", Type::Str, false),
            ("server_name", Type::Str, false),
            ("insecure_skip_verify", Type::Bool, false),
            ("min_version", Type::Str, false),
        ],
        blocks: &[],
    };
    const PROXY: [(&str, Type, bool); 4] = [
        ("proxy_url", Type::Str, false),
        ("no_proxy", Type::Str, false),
        ("proxy_from_environment", Type::Bool, false),
        ("proxy_connect_header", Type::MapListStr, false),
    ];
    const OAUTH2: Schema = Schema {
        attrs: &[
            ("client_id", Type::Str, false),
            ("client_secret", Type::Str, false),
            ("client_secret_file", Type::Str, false),
            ("scopes", Type::ListStr, false),
            ("token_url", Type::Str, false),
            ("endpoint_params", Type::MapStr, false),
            PROXY[0],
            PROXY[1],
            PROXY[2],
            PROXY[3],
        ],
        blocks: &[("tls_config", &TLS_CLIENT, false)],
    };
    const ENDPOINT: Schema = Schema {
        attrs: &[
            ("name", Type::Str, false),
            ("url", Type::Str, true),
            ("remote_timeout", Type::Duration, false),
            ("debug_info_upload_timeout", Type::Duration, false),
            ("headers", Type::MapStr, false),
            ("min_backoff_period", Type::Duration, false),
            ("max_backoff_period", Type::Duration, false),
            ("max_backoff_retries", Type::Num, false),
            ("retry_on_http_429", Type::Bool, false),
            ("bearer_token", Type::Str, false),
            ("bearer_token_file", Type::Str, false),
            ("follow_redirects", Type::Bool, false),
            ("enable_http2", Type::Bool, false),
            ("http_headers", Type::MapListStr, false),
            PROXY[0],
            PROXY[1],
            PROXY[2],
            PROXY[3],
        ],
        blocks: &[
            ("basic_auth", &BASIC_AUTH, false),
            ("authorization", &AUTHORIZATION, false),
            ("oauth2", &OAUTH2, false),
            ("tls_config", &TLS_CLIENT, false),
        ],
    };
    const TRACING: Schema = Schema {
        attrs: &[("jaeger_propagator", Type::Bool, false), ("trace_context_propagator", Type::Bool, false)],
        blocks: &[],
    };
    const WRITE: Schema = Schema {
        attrs: &[("external_labels", Type::MapStr, false)],
        blocks: &[("endpoint", &ENDPOINT, true), ("tracing", &TRACING, false)],
    };

    /// Component name → its schema and its exports of type ProfilesReceiver.
    fn component(name: &str) -> Option<(&'static Schema, &'static [&'static str])> {
        match name {
            "pyroscope.receive_http" => Some((&RECEIVE_HTTP, &[])),
            "pyroscope.write" => Some((&WRITE, &["receiver"])),
            _ => None,
        }
    }

    /// Parses and checks a whole config; the components on success, the first problem (with its line) otherwise.
    pub fn check(text: &str) -> Result<Vec<Component>, String> {
        let body = Parser::new(text)?.body(true)?;
        let mut components = Vec::new();
        let mut seen = BTreeSet::new();
        for stmt in &body {
            let block = match stmt {
                Stmt::Block(block) => block,
                Stmt::Attr(name, _, line) => return Err(format!("line {line}: attribute `{name}` outside any block")),
            };
            let (schema, _) =
                component(&block.name).ok_or_else(|| format!("line {}: unknown component `{}`", block.line, block.name))?;
            let label = block.label.clone().ok_or_else(|| format!("line {}: `{}` needs a label", block.line, block.name))?;
            if !seen.insert((block.name.clone(), label.clone())) {
                return Err(format!("line {}: {} \"{label}\" is declared twice", block.line, block.name));
            }
            let mut c = Component {
                kind: block.name.clone(),
                label,
                numbers: BTreeMap::new(),
                references: Vec::new(),
                env_vars: BTreeSet::new(),
            };
            check_body(&block.body, schema, "", &mut c)?;
            components.push(c);
        }
        // References name a declared component and one of its exports.
        for c in &components {
            for reference in &c.references {
                let parts: Vec<&str> = reference.split('.').collect();
                let found = parts.len() >= 2 && components.iter().any(|other| {
                    let kind_len = other.kind.split('.').count();
                    parts.len() == kind_len + 2
                        && parts[..kind_len].join(".") == other.kind
                        && parts[kind_len] == other.label
                        && component(&other.kind).is_some_and(|(_, exports)| exports.contains(&parts[kind_len + 1]))
                });
                if !found {
                    return Err(format!("{} \"{}\": `{reference}` names no component export", c.kind, c.label));
                }
            }
        }
        Ok(components)
    }

    fn check_body(body: &[Stmt], schema: &Schema, path: &str, c: &mut Component) -> Result<(), String> {
        let mut present = BTreeSet::new();
        for stmt in body {
            match stmt {
                Stmt::Attr(name, value, line) => {
                    let &(_, ty, _) = schema
                        .attrs
                        .iter()
                        .find(|(n, _, _)| n == name)
                        .ok_or_else(|| format!("line {line}: unknown attribute `{name}` in `{}`", where_(c, path)))?;
                    if !present.insert(name.clone()) {
                        return Err(format!("line {line}: `{name}` is set twice"));
                    }
                    check_value(value, ty, c).map_err(|e| format!("line {line}: `{name}`: {e}"))?;
                    if let Value::Num(n) = value {
                        c.numbers.insert(format!("{path}{name}"), *n);
                    }
                }
                Stmt::Block(block) => {
                    let (_, inner, repeatable) = schema
                        .blocks
                        .iter()
                        .find(|(n, _, _)| *n == block.name)
                        .ok_or_else(|| format!("line {}: unknown block `{}` in `{}`", block.line, block.name, where_(c, path)))?;
                    if block.label.is_some() {
                        return Err(format!("line {}: block `{}` takes no label", block.line, block.name));
                    }
                    if !present.insert(block.name.clone()) && !repeatable {
                        return Err(format!("line {}: block `{}` appears twice", block.line, block.name));
                    }
                    check_body(&block.body, inner, &format!("{path}{}.", block.name), c)?;
                }
            }
        }
        for (name, _, required) in schema.attrs {
            if *required && !present.contains(*name) {
                return Err(format!("`{}` is missing the required attribute `{name}`", where_(c, path)));
            }
        }
        // basic_auth (common/config BasicAuth.Validate): at most one of password and password_file.
        if present.contains("password") && present.contains("password_file") {
            return Err(format!("`{}` sets both password and password_file", where_(c, path)));
        }
        Ok(())
    }

    fn where_(c: &Component, path: &str) -> String {
        format!("{} \"{}\" {}", c.kind, c.label, path.trim_end_matches('.'))
    }

    fn check_value(value: &Value, ty: Type, c: &mut Component) -> Result<(), String> {
        // The standard library functions that return a string.
        if let Value::Call(name, args) = value {
            if !matches!(name.as_str(), "sys.env" | "env") {
                return Err(format!("unknown function `{name}`"));
            }
            let [Value::Str(var)] = args.as_slice() else { return Err(format!("`{name}` takes one string")) };
            c.env_vars.insert(var.clone());
            return match ty {
                Type::Str | Type::Duration => Ok(()),
                _ => Err(format!("`{name}` returns a string, not {ty:?}")),
            };
        }
        let ok = match (ty, value) {
            (Type::Str, Value::Str(_)) | (Type::Num, Value::Num(_)) | (Type::Bool, Value::Bool(_)) => true,
            (Type::Duration, Value::Str(s)) => parse_duration(s),
            (Type::MapStr, Value::Object(fields)) => fields.iter().all(|(_, v)| matches!(v, Value::Str(_))),
            (Type::MapListStr, Value::Object(fields)) => fields
                .iter()
                .all(|(_, v)| matches!(v, Value::List(items) if items.iter().all(|i| matches!(i, Value::Str(_))))),
            (Type::ListStr, Value::List(items)) => items.iter().all(|i| matches!(i, Value::Str(_))),
            (Type::Receivers, Value::List(items)) => {
                for item in items {
                    let Value::Ref(parts) = item else { return Err("a list of component exports".into()) };
                    c.references.push(parts.join("."));
                }
                true
            }
            (_, Value::Null) => true,
            _ => false,
        };
        if ok { Ok(()) } else { Err(format!("expected {ty:?}, got {value:?}")) }
    }

    /// Go's time.ParseDuration: one or more decimal numbers each with a unit.
    fn parse_duration(text: &str) -> bool {
        let mut rest = text;
        if rest.is_empty() {
            return false;
        }
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
            if digits == 0 {
                return false;
            }
            rest = &rest[digits..];
            let unit = ["ns", "us", "µs", "ms", "s", "m", "h"].iter().find(|u| rest.starts_with(**u));
            let Some(unit) = unit else { return false };
            rest = &rest[unit.len()..];
        }
        true
    }

    #[derive(Clone, Debug, PartialEq)]
    enum Token {
        Ident(String),
        Str(String),
        Num(f64),
        Punct(char),
        Eof,
    }

    struct Parser {
        tokens: Vec<(Token, usize)>,
        pos: usize,
    }

    impl Parser {
        fn new(text: &str) -> Result<Parser, String> {
            let mut tokens = Vec::new();
            let chars: Vec<char> = text.chars().collect();
            let (mut i, mut line) = (0, 1);
            while i < chars.len() {
                let c = chars[i];
                match c {
                    '\n' => {
                        line += 1;
                        i += 1;
                    }
                    c if c.is_whitespace() => i += 1,
                    '/' if chars.get(i + 1) == Some(&'/') => {
                        while i < chars.len() && chars[i] != '\n' {
                            i += 1;
                        }
                    }
                    '/' if chars.get(i + 1) == Some(&'*') => {
                        i += 2;
                        while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                            line += usize::from(chars[i] == '\n');
                            i += 1;
                        }
                        if i + 1 >= chars.len() {
                            return Err(format!("line {line}: unterminated comment"));
                        }
                        i += 2;
                    }
                    '"' => {
                        let mut s = String::new();
                        i += 1;
                        loop {
                            match chars.get(i) {
                                None | Some('\n') => return Err(format!("line {line}: unterminated string")),
                                Some('"') => break,
                                Some('\\') => {
                                    s.push(match chars.get(i + 1) {
                                        Some('n') => '\n',
                                        Some('t') => '\t',
                                        Some('\\') => '\\',
                                        Some('"') => '"',
                                        other => return Err(format!("line {line}: bad escape {other:?}")),
                                    });
                                    i += 2;
                                }
                                Some(&c) => {
                                    s.push(c);
                                    i += 1;
                                }
                            }
                        }
                        i += 1;
                        tokens.push((Token::Str(s), line));
                    }
                    c if c.is_ascii_digit() => {
                        let start = i;
                        while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                            i += 1;
                        }
                        let text: String = chars[start..i].iter().collect();
                        let n = text.parse().map_err(|_| format!("line {line}: bad number {text}"))?;
                        tokens.push((Token::Num(n), line));
                    }
                    c if c.is_ascii_alphabetic() || c == '_' => {
                        let start = i;
                        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                            i += 1;
                        }
                        tokens.push((Token::Ident(chars[start..i].iter().collect()), line));
                    }
                    '{' | '}' | '[' | ']' | '(' | ')' | '=' | ',' | '.' => {
                        tokens.push((Token::Punct(c), line));
                        i += 1;
                    }
                    other => return Err(format!("line {line}: `{other}` (operators are not supported by this checker)")),
                }
            }
            tokens.push((Token::Eof, line));
            Ok(Parser { tokens, pos: 0 })
        }

        fn peek(&self) -> &Token {
            &self.tokens[self.pos].0
        }

        fn line(&self) -> usize {
            self.tokens[self.pos].1
        }

        fn next(&mut self) -> Token {
            let token = self.tokens[self.pos].0.clone();
            if token != Token::Eof {
                self.pos += 1;
            }
            token
        }

        fn expect(&mut self, c: char) -> Result<(), String> {
            match self.next() {
                Token::Punct(p) if p == c => Ok(()),
                Token::Eof => Err(format!("line {}: unexpected end of file, expected `{c}`", self.line())),
                other => Err(format!("line {}: expected `{c}`, found {other:?}", self.line())),
            }
        }

        fn ident(&mut self) -> Result<String, String> {
            match self.next() {
                Token::Ident(name) => Ok(name),
                Token::Eof => Err(format!("line {}: unexpected end of file", self.line())),
                other => Err(format!("line {}: expected a name, found {other:?}", self.line())),
            }
        }

        /// Statements up to `}` (or the end of file at the top level).
        fn body(&mut self, top: bool) -> Result<Vec<Stmt>, String> {
            let mut stmts = Vec::new();
            loop {
                match self.peek() {
                    Token::Eof if top => return Ok(stmts),
                    Token::Eof => return Err(format!("line {}: unexpected end of file, expected `}}`", self.line())),
                    Token::Punct('}') if !top => {
                        self.next();
                        return Ok(stmts);
                    }
                    _ => {}
                }
                let line = self.line();
                let mut name = self.ident()?;
                while self.peek() == &Token::Punct('.') {
                    self.next();
                    name = format!("{name}.{}", self.ident()?);
                }
                match self.next() {
                    Token::Punct('=') if !name.contains('.') => {
                        let value = self.value()?;
                        stmts.push(Stmt::Attr(name, value, line));
                    }
                    Token::Punct('{') => stmts.push(Stmt::Block(Block { name, label: None, body: self.body(false)?, line })),
                    Token::Str(label) => {
                        self.expect('{')?;
                        stmts.push(Stmt::Block(Block { name, label: Some(label), body: self.body(false)?, line }));
                    }
                    other => return Err(format!("line {line}: after `{name}`: unexpected {other:?}")),
                }
            }
        }

        fn value(&mut self) -> Result<Value, String> {
            let line = self.line();
            let value = match self.next() {
                Token::Str(s) => Value::Str(s),
                Token::Num(n) => Value::Num(n),
                Token::Ident(word) => match word.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    "null" => Value::Null,
                    _ => {
                        let mut parts = vec![word];
                        while self.peek() == &Token::Punct('.') {
                            self.next();
                            parts.push(self.ident()?);
                        }
                        if self.peek() == &Token::Punct('(') {
                            self.next();
                            let args = self.list(')')?;
                            Value::Call(parts.join("."), args)
                        } else {
                            Value::Ref(parts)
                        }
                    }
                },
                Token::Punct('[') => Value::List(self.list(']')?),
                Token::Punct('{') => {
                    let mut fields = Vec::new();
                    loop {
                        if self.peek() == &Token::Punct('}') {
                            self.next();
                            break;
                        }
                        let key = match self.next() {
                            Token::Ident(k) | Token::Str(k) => k,
                            other => return Err(format!("line {line}: object key expected, found {other:?}")),
                        };
                        self.expect('=')?;
                        fields.push((key, self.value()?));
                        match self.next() {
                            Token::Punct(',') => {}
                            Token::Punct('}') => break,
                            other => return Err(format!("line {line}: expected `,` or `}}`, found {other:?}")),
                        }
                    }
                    Value::Object(fields)
                }
                Token::Eof => return Err(format!("line {line}: unexpected end of file")),
                other => return Err(format!("line {line}: a value expected, found {other:?}")),
            };
            Ok(value)
        }

        /// Comma-separated values up to `close` (a trailing comma allowed).
        fn list(&mut self, close: char) -> Result<Vec<Value>, String> {
            let mut items = Vec::new();
            loop {
                if self.peek() == &Token::Punct(close) {
                    self.next();
                    return Ok(items);
                }
                items.push(self.value()?);
                match self.next() {
                    Token::Punct(',') => {}
                    Token::Punct(c) if c == close => return Ok(items),
                    other => return Err(format!("line {}: expected `,` or `{close}`, found {other:?}", self.line())),
                }
            }
        }
    }
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
        assert!(std::env::var("CI").as_deref() != Ok("true"), "strace or systemd-analyze is missing (cargo xtask setup)");
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
    let exe = profiler_tests::crash_support::build_crash_by_name("deploy-crash");
    let go = dir.join("go");
    fs::write(&go, "").unwrap();
    // Crashes 5 s after it starts: time for the profiler (slower under strace) to attach.
    let mut workload = profiler_tests::crash_support::Workload::start(Command::new(&exe).arg(&go).arg("5000"));
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
    let target = start_native_burn(Duration::from_secs(4));
    let receiver = Receiver::start();
    let summary = dir.join("run.strace");
    let mut agent = Command::new(&strace);
    agent.args(["-f", "-c", "-o"]).arg(&summary).arg(profiler_bin());
    agent.args(["run", "--pid", &target.pid().to_string(), "--server-url", &receiver.url(), "--upload-interval", "1s"]);
    agent.arg("--crash-dir").arg(dir.join("run-crashes")).env_remove("PYROSCOPE_API_KEY").env_remove("PYROSCOPE_USERNAME");
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
