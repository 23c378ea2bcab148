//! Resolving the flags into one complete configuration per command: a pure function of the flags and the
//! environment variables captured once (`RunEnv`), so every rule about what may be combined is unit-tested here
//! and nothing downstream re-checks or completes a configuration. The one file read here is the `--labels` rules
//! file, so that a mistake in it stops the command before anything is loaded or attached.
use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Result};

use super::{Cli, Command, CrashesArgs, DumpArgs, RecordArgs, RunArgs, SamplingArgs, TargetArgs, TopArgs};
use crate::{
    aggregate::ProfileKinds,
    crash::{index::is_report_base, signature::looks_like_id},
    labels::{LabelConfig, Rules},
    output::OutputFormat,
    pipeline::PipelineOptions,
    selection::{CmdlinePattern, TargetSpec},
    symbolize::{self, DebuginfodConfig},
    upload::{config::PendingCredentials, labels, Endpoint, KeySource, Secret, UploadConfig},
};

/// What `main` runs.
#[derive(Debug)]
pub(crate) enum Config {
    /// Boxed, as `Run`: several times the size of the other variants.
    Record(Box<RecordConfig>),
    /// Boxed: several times the size of the other variants (its upload settings).
    Run(Box<RunConfig>),
    Dump(DumpConfig),
    Crashes(CrashesConfig),
    Top(TopConfig),
    /// `run` with PROFILING_ENABLED off (the value it has): nothing is loaded, checked or contacted.
    Disabled(String),
}

/// What both commands need to start sampling (commands/attach.rs).
#[derive(Clone, Debug)]
pub(crate) struct AttachConfig {
    pub target: TargetSpec,
    pub follow_children: bool,
    pub rate_hz: u64,
    pub kernel_stacks: bool,
    pub pipeline: PipelineOptions,
    /// How stacks are labelled (`endpoint`, the --labels rules).
    pub labels: LabelConfig,
    pub crash_dir: PathBuf,
    /// Where debug files for unnamed frames come from (`None`: nowhere).
    pub debuginfod: Option<DebuginfodConfig>,
}

/// Everything `record` needs.
#[derive(Clone, Debug)]
pub(crate) struct RecordConfig {
    pub attach: AttachConfig,
    pub duration: Option<Duration>,
    pub outputs: Vec<(PathBuf, OutputFormat)>,
    /// The label whose values become root frames of the flame graphs and folded stacks.
    pub group_by: Option<String>,
    pub stats_json: Option<PathBuf>,
}

/// Everything `run` needs. The API key file, if any, is named here and read by the command before it gives up
/// the right to read it.
#[derive(Clone, Debug)]
pub(crate) struct RunConfig {
    pub attach: AttachConfig,
    /// `service_name` for every target; `None`: each process's name.
    pub app_name: Option<String>,
    pub upload_interval: Duration,
    pub status_interval: Duration,
    pub upload: UploadConfig,
    pub credentials: Option<PendingCredentials>,
}

/// What `crashes` shows.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CrashesConfig {
    pub dir: PathBuf,
    pub json: bool,
    /// `None`: the list of groups.
    pub show: Option<CrashQuery>,
}

/// One report to print.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum CrashQuery {
    /// The newest report of the signature starting with these hex digits (lower case).
    Signature(String),
    /// A report by its path without extension (in the crash directory when given as a bare name).
    Report(PathBuf),
}

/// The one place the command line becomes a configuration.
pub(crate) fn resolve(cli: Cli, env: &RunEnv) -> Result<Config> {
    match cli.command {
        Command::Record(args) => resolve_record(args, env).map(|config| Config::Record(Box::new(config))),
        // The documented rollback switch wins over every other setting, so it works however the rest is set.
        Command::Run(_) if env.disabled_by()?.is_some() => {
            Ok(Config::Disabled(env.profiling_enabled.clone().unwrap_or_default()))
        }
        Command::Run(args) => resolve_run(args, env).map(|config| Config::Run(Box::new(config))),
        Command::Dump(args) => resolve_dump(args).map(Config::Dump),
        Command::Crashes(args) => resolve_crashes(args).map(Config::Crashes),
        Command::Top(args) => resolve_top(args).map(Config::Top),
    }
}

/// Everything `top` needs: a CPU-only attach (no crash reports written, no debuginfod: names that arrive a
/// minute later would not help a view of the last second) and how often to redraw.
#[derive(Clone, Debug)]
pub(crate) struct TopConfig {
    pub attach: AttachConfig,
    pub refresh: Duration,
}

fn resolve_top(args: TopArgs) -> Result<TopConfig> {
    if args.refresh < Duration::from_millis(100) || args.refresh > Duration::from_secs(60) {
        bail!("--refresh must be between 100ms and 60s");
    }
    let rules = match &args.labels_file {
        Some(path) => Rules::read(path)?,
        None => Rules::default(),
    };
    let attach = AttachConfig {
        target: args.target.resolve()?,
        follow_children: !args.no_children,
        rate_hz: args.rate,
        kernel_stacks: args.kernel,
        pipeline: PipelineOptions {
            native_python_internals: args.python.native_python_internals,
            gil_only: args.python.gil_only,
            ..PipelineOptions::default()
        },
        labels: LabelConfig { rules: rules.into(), ..LabelConfig::default() },
        crash_dir: PathBuf::new(),
        debuginfod: None,
    };
    Ok(TopConfig { attach, refresh: args.refresh })
}

/// Everything `dump` needs.
#[derive(Clone, Debug)]
pub(crate) struct DumpConfig {
    pub target: TargetSpec,
    pub json: bool,
    /// How long threads on a CPU are sampled.
    pub sample_for: Duration,
}

fn resolve_dump(args: DumpArgs) -> Result<DumpConfig> {
    let target = match (args.target.pid, args.target.name) {
        (Some(pid), None) => TargetSpec::Pids(vec![pid]),
        (None, Some(name)) => TargetSpec::Name(name),
        _ => bail!("give one of --pid or --name"),
    };
    if args.sample_for.is_zero() || args.sample_for > Duration::from_secs(10) {
        bail!("--sample-for must be longer than zero and at most 10s");
    }
    Ok(DumpConfig { target, json: args.json, sample_for: args.sample_for })
}

fn resolve_crashes(args: CrashesArgs) -> Result<CrashesConfig> {
    let show = match args.show.as_deref().map(str::trim) {
        None => None,
        Some(text) if looks_like_id(text) => Some(CrashQuery::Signature(text.to_ascii_lowercase())),
        Some(text) => {
            let path = std::path::Path::new(text);
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let base =
                [".txt", ".json", ".svg", ".pb.gz"].iter().find_map(|ext| name.strip_suffix(ext)).unwrap_or(name);
            if !is_report_base(base) {
                bail!(
                    "`{text}` is neither a crash signature (hex digits, as `profiler crashes` lists them) nor a report \
                     (crash-PID-SIGNAL-MILLIS)"
                );
            }
            let dir = match path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
                _ => args.dir.clone(),
            };
            Some(CrashQuery::Report(dir.join(base)))
        }
    };
    Ok(CrashesConfig { dir: args.dir, json: args.json, show })
}

impl TargetArgs {
    fn resolve(self) -> Result<TargetSpec> {
        match (self.pids.is_empty(), self.name, self.match_cmdline) {
            (false, None, None) => Ok(TargetSpec::Pids(self.pids)),
            (true, Some(name), None) => Ok(TargetSpec::Name(name)),
            (true, None, Some(pattern)) => Ok(TargetSpec::Cmdline(CmdlinePattern::new(&pattern)?)),
            _ => bail!("give one of --pid, --name or --match-cmdline"),
        }
    }
}

/// Which command resolves its sampling flags: the two differ in defaults only.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Attaching {
    Record,
    Run,
}

impl SamplingArgs {
    fn resolve(
        self,
        command: Attaching,
        target: TargetSpec,
        follow_children: bool,
        crash_dir: PathBuf,
        env: &RunEnv,
    ) -> Result<AttachConfig> {
        let rules = match &self.labels_file {
            Some(path) => Rules::read(path)?,
            None => Rules::default(),
        };
        let servers = env.debuginfod_urls.as_deref().map(symbolize::parse_servers).transpose()?.unwrap_or_default();
        let debuginfod = match (self.debuginfod, command) {
            (Some(false), _) | (None, Attaching::Record) => None,
            (Some(true), _) if servers.is_empty() => {
                bail!("--debuginfod on needs servers: set DEBUGINFOD_URLS (e.g. https://debuginfod.debian.net)")
            }
            (Some(true), _) | (None, Attaching::Run) => (!servers.is_empty()).then_some(DebuginfodConfig {
                servers,
                cache_dir: self.debuginfod_cache,
                cache_bytes: self.debuginfod_cache_size as u64,
            }),
        };
        Ok(AttachConfig {
            target,
            follow_children,
            rate_hz: self.rate,
            kernel_stacks: self.kernel,
            pipeline: PipelineOptions {
                profiles: ProfileKinds::new(&self.profiles),
                off_cpu_rate_hz: self.off_cpu_rate,
                memory_period_bytes: self.memory_period * 1024,
                native_python_internals: self.python.native_python_internals,
                gil_only: self.python.gil_only,
                crash_window_secs: self.crash_window.as_secs().max(1),
            },
            labels: LabelConfig { rules: rules.into(), max_values: self.max_label_values as usize },
            crash_dir,
            debuginfod,
        })
    }
}

fn resolve_record(args: RecordArgs, env: &RunEnv) -> Result<RecordConfig> {
    let target = args.target.resolve()?;
    let outputs = args
        .outputs
        .into_iter()
        .map(|path| OutputFormat::from_path(&path).map(|format| (path, format)))
        .collect::<Result<_>>()?;
    if args.duration == Some(Duration::ZERO) {
        bail!("--duration must be longer than zero");
    }
    if args.group_by.as_deref().is_some_and(|key| key.trim().is_empty()) {
        bail!("--group-by needs a label name, e.g. --group-by endpoint");
    }
    Ok(RecordConfig {
        attach: args.sampling.resolve(Attaching::Record, target, !args.no_children, args.crash_dir, env)?,
        duration: args.duration,
        outputs,
        group_by: args.group_by,
        stats_json: args.stats_json,
    })
}

/// The environment variables `run` (and for DEBUGINFOD_URLS, `record`) reads, captured once so that resolving is
/// a pure function of its inputs.
#[derive(Clone, Debug, Default)]
pub(crate) struct RunEnv {
    pub debuginfod_urls: Option<String>,
    pub server_url: Option<String>,
    pub username: Option<String>,
    pub api_key: Option<Secret>,
    pub profiling_enabled: Option<String>,
    pub environment: Option<String>,
}

impl RunEnv {
    pub(crate) fn from_process() -> Self {
        // Empty counts as unset: `ENVIRONMENT=` in a unit file means "none".
        let var = |name| std::env::var(name).ok().filter(|value: &String| !value.trim().is_empty());
        Self {
            debuginfod_urls: var("DEBUGINFOD_URLS"),
            server_url: var("PYROSCOPE_SERVER_URL"),
            username: var("PYROSCOPE_USERNAME"),
            api_key: var("PYROSCOPE_API_KEY").map(Secret::new),
            profiling_enabled: var("PROFILING_ENABLED"),
            environment: var("ENVIRONMENT"),
        }
    }

    /// `Some(value)` when PROFILING_ENABLED turns profiling off. A value that is not a boolean is an error rather
    /// than a guess either way.
    pub(crate) fn disabled_by(&self) -> Result<Option<&str>> {
        let Some(value) = self.profiling_enabled.as_deref() else { return Ok(None) };
        match super::parse::parse_switch(value) {
            Some(false) => Ok(Some(value)),
            Some(true) => Ok(None),
            None => bail!("PROFILING_ENABLED=`{value}` is not a boolean: use true or false"),
        }
    }
}

fn resolve_run(args: RunArgs, env: &RunEnv) -> Result<RunConfig> {
    let attach = args.sampling.resolve(Attaching::Run, args.target.resolve()?, true, args.crash_dir, env)?;
    let Some(server_url) = args.server_url.or_else(|| env.server_url.clone()) else {
        bail!("no server to upload to: set PYROSCOPE_SERVER_URL or --server-url");
    };
    let key = match (args.api_key_file, &env.api_key) {
        (Some(path), _) => KeySource::File(path),
        (None, Some(secret)) => KeySource::Env(secret.clone()),
        (None, None) => KeySource::None,
    };
    let credentials = match (env.username.clone(), key) {
        (None, KeySource::None) => None,
        (Some(username), KeySource::None) => {
            bail!("PYROSCOPE_USERNAME is `{username}` but there is no API key: set PYROSCOPE_API_KEY or --api-key-file")
        }
        (None, _) => bail!(
            "an API key is given but PYROSCOPE_USERNAME is not set (for Grafana Cloud: the stack's Profiles \
             instance id, a number)"
        ),
        (Some(username), key) => Some(PendingCredentials { username, key }),
    };
    let endpoint = Endpoint::parse(&server_url, credentials.is_some(), args.allow_insecure)?;

    let mut tags: Vec<(String, String)> = Vec::new();
    for text in &args.tags {
        let (name, value) = labels::parse_tag(text).map_err(|err| anyhow::anyhow!("--tag: {err}"))?;
        if tags.iter().any(|(seen, _)| *seen == name) {
            bail!("--tag {name}=... is given twice");
        }
        tags.push((name, value));
    }
    // An explicit --tag environment=... wins over the ambient variable.
    let environment = env.environment.as_deref().map(str::trim);
    if let Some(environment) = environment.filter(|_| !tags.iter().any(|(name, _)| name == "environment")) {
        labels::check_value("environment", environment).map_err(|err| anyhow::anyhow!("ENVIRONMENT: {err}"))?;
        tags.push(("environment".to_owned(), environment.to_owned()));
    }
    for (name, value) in &tags {
        labels::check_for_protocol(name, value, args.protocol).map_err(anyhow::Error::msg)?;
    }
    if let Some(app_name) = &args.app_name {
        labels::check_app_name(app_name, args.protocol).map_err(anyhow::Error::msg)?;
    }
    // It becomes an HTTP header value.
    let valid_tenant = |tenant: &String| !tenant.is_empty() && tenant.bytes().all(|b| b.is_ascii_graphic());
    if args.tenant_id.as_ref().is_some_and(|tenant| !valid_tenant(tenant)) {
        bail!("--tenant-id must be non-empty printable ASCII without spaces");
    }
    for (flag, value, min) in [
        ("--upload-interval", args.upload_interval, Duration::from_secs(1)),
        ("--status-interval", args.status_interval, Duration::from_secs(1)),
        ("--upload-timeout", args.upload_timeout, Duration::from_millis(100)),
        ("--max-queue-age", args.max_queue_age, Duration::from_secs(1)),
    ] {
        if value < min {
            bail!("{flag} must be at least {min:?}");
        }
    }
    // Below this, many windows would not fit at all (a window of one busy native process is 1–2 KiB, of a
    // large Python service tens of KiB).
    if args.max_queue_size < 4 * 1024 {
        bail!("--max-queue-size must be at least 4KiB");
    }
    Ok(RunConfig {
        app_name: args.app_name,
        upload_interval: args.upload_interval,
        status_interval: args.status_interval,
        upload: UploadConfig {
            endpoint,
            protocol: args.protocol,
            tenant_id: args.tenant_id,
            tags,
            rate_hz: attach.rate_hz,
            max_queue_bytes: args.max_queue_size,
            max_queue_age: args.max_queue_age,
            request_timeout: args.upload_timeout,
        },
        credentials,
        attach,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::upload::Protocol;

    use super::*;

    #[test]
    fn profiling_disabled_wins_over_every_other_run_setting() {
        let off = RunEnv { profiling_enabled: Some("false".into()), ..RunEnv::default() };
        // No server configured: resolving run would fail, but the switch is checked first.
        let cli = Cli::try_parse_from(["profiler", "run", "--pid", "1"]).unwrap();
        assert!(matches!(resolve(cli, &off).unwrap(), Config::Disabled(value) if value == "false"));
        let cli = Cli::try_parse_from(["profiler", "run", "--pid", "1"]).unwrap();
        assert!(resolve(cli, &RunEnv::default()).unwrap_err().to_string().contains("PYROSCOPE_SERVER_URL"));
        let cli = Cli::try_parse_from(["profiler", "record", "--pid", "1", "-o", "a.svg"]).unwrap();
        assert!(matches!(resolve(cli, &off).unwrap(), Config::Record(_)), "the switch is run's only");
    }

    #[test]
    fn debuginfod_is_off_in_record_and_on_in_run_when_servers_are_set() {
        let servers = RunEnv {
            debuginfod_urls: Some("https://debuginfod.debian.net/ http://127.0.0.1:8002".into()),
            server_url: Some("http://127.0.0.1:4040".into()),
            ..RunEnv::default()
        };
        let none = RunEnv { server_url: Some("http://127.0.0.1:4040".into()), ..RunEnv::default() };
        let attach = |env: &RunEnv, args: &[&str]| -> Result<AttachConfig> {
            match resolve(Cli::try_parse_from(args).unwrap(), env)? {
                Config::Record(config) => Ok(config.attach),
                Config::Run(config) => Ok(config.attach),
                _ => panic!("not record or run"),
            }
        };
        let record = ["profiler", "record", "--pid", "1", "-o", "a.svg"];
        let run = ["profiler", "run", "--pid", "1"];
        assert_eq!(attach(&servers, &record).unwrap().debuginfod, None);
        let on = attach(&servers, &[&record[..], &["--debuginfod", "on"]].concat()).unwrap().debuginfod.unwrap();
        assert_eq!(on.servers, ["https://debuginfod.debian.net", "http://127.0.0.1:8002"]);
        assert_eq!(on.cache_dir, PathBuf::from(symbolize::DEFAULT_CACHE_DIR));
        assert_eq!(on.cache_bytes, 1 << 30, "--debuginfod-cache-size defaults to 1GiB");
        assert!(attach(&servers, &run).unwrap().debuginfod.is_some());
        assert_eq!(attach(&servers, &[&run[..], &["--debuginfod", "off"]].concat()).unwrap().debuginfod, None);
        assert_eq!(attach(&none, &run).unwrap().debuginfod, None);
        let err = attach(&none, &[&record[..], &["--debuginfod", "on"]].concat()).unwrap_err().to_string();
        assert!(err.contains("set DEBUGINFOD_URLS"), "{err}");
        let bad = RunEnv { debuginfod_urls: Some("ftp://x".into()), ..none.clone() };
        let err = attach(&bad, &run).unwrap_err().to_string();
        assert!(err.contains("DEBUGINFOD_URLS: `ftp://x`"), "{err}");
    }

    #[test]
    fn resolves_record_arguments() {
        let cli =
            Cli::try_parse_from(["profiler", "record", "--pid", "1", "--pid", "2", "-o", "a.svg", "-o", "b.pb.gz"])
                .unwrap();
        let Command::Record(args) = cli.command else { panic!("not record") };
        let config = resolve_record(args, &RunEnv::default()).unwrap();
        assert_eq!(config.attach.target, TargetSpec::Pids(vec![1, 2]));
        assert_eq!(config.attach.rate_hz, 100);
        assert!(config.attach.follow_children);
        assert_eq!(config.outputs.len(), 2);
    }

    #[test]
    fn labels_rules_are_read_when_resolving_and_a_bad_file_stops_there() {
        let dir = crate::test_support::TempDir::new("config", "labels");
        let good = dir.0.join("good.toml");
        std::fs::write(&good, "[[rule]]\nfunction = \"handler\"\nlabels = { team = \"a\" }\n").unwrap();
        let bad = dir.0.join("bad.toml");
        std::fs::write(&bad, "[[rule]]\nfunction = \"handler\"\nlabels = { team = }\n").unwrap();
        let record = |extra: &[&str]| {
            let args = ["profiler", "record", "--pid", "1", "-o", "a.svg"].iter().chain(extra);
            let Command::Record(args) = Cli::try_parse_from(args).unwrap().command else { panic!("not record") };
            resolve_record(args, &RunEnv::default())
        };
        let config = record(&["--labels", good.to_str().unwrap(), "--max-label-values", "7"]).unwrap();
        assert_eq!(config.attach.labels.max_values, 7);
        assert_eq!(config.group_by, None);
        assert_eq!(record(&[]).unwrap().attach.labels.max_values, crate::labels::DEFAULT_MAX_VALUES);
        let err = format!("{:#}", record(&["--labels", bad.to_str().unwrap()]).unwrap_err());
        assert!(err.starts_with(&format!("{}:3: ", bad.display())) && !err.contains('\n'), "{err}");
        assert_eq!(record(&["--group-by", "endpoint"]).unwrap().group_by.as_deref(), Some("endpoint"));
        assert!(record(&["--group-by", " "]).is_err());
        assert!(Cli::try_parse_from(["profiler", "record", "--pid", "1", "-o", "a.svg", "--max-label-values", "0"])
            .is_err());
    }

    #[test]
    fn rejects_conflicting_or_missing_targets_and_bad_outputs() {
        assert!(Cli::try_parse_from(["profiler", "record", "-o", "a.svg"]).is_err());
        assert!(Cli::try_parse_from(["profiler", "record", "--pid", "1", "--name", "x", "-o", "a.svg"]).is_err());
        assert!(Cli::try_parse_from(["profiler", "record", "--pid", "1"]).is_err());
        assert!(Cli::try_parse_from(["profiler", "record", "--pid", "1", "--rate", "0", "-o", "a.svg"]).is_err());
        let cli = Cli::try_parse_from(["profiler", "record", "--pid", "1", "-o", "a.docx"]).unwrap();
        let Command::Record(args) = cli.command else { panic!("not record") };
        assert!(resolve_record(args, &RunEnv::default()).is_err());
    }

    fn run_args(args: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(["profiler", "run"].iter().chain(args)).unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        args
    }

    fn cloud_env() -> RunEnv {
        RunEnv {
            server_url: Some("profiles-prod-001.grafana.net".into()),
            username: Some("123456".into()),
            api_key: Some(Secret::new("glc_secret".into())),
            profiling_enabled: None,
            environment: Some("production".into()),
            debuginfod_urls: None,
        }
    }

    #[test]
    fn resolves_run_settings_from_flags_and_environment() {
        let config =
            resolve_run(run_args(&["--name", "uvicorn", "--tag", "region=eu", "--tenant-id", "t1"]), &cloud_env())
                .unwrap();
        assert_eq!(config.attach.target, TargetSpec::Name("uvicorn".into()));
        assert_eq!(config.upload.endpoint.to_string(), "https://profiles-prod-001.grafana.net");
        assert_eq!(config.upload.protocol, Protocol::Push);
        assert_eq!(config.upload_interval, Duration::from_secs(15));
        assert_eq!(config.status_interval, Duration::from_secs(60));
        assert_eq!(config.upload.max_queue_bytes, 16 << 20);
        assert_eq!(config.upload.request_timeout, Duration::from_secs(10));
        assert_eq!(config.upload.tenant_id.as_deref(), Some("t1"));
        let tags: Vec<(&str, &str)> = config.upload.tags.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(tags, [("region", "eu"), ("environment", "production")]);
        let credentials = config.credentials.clone().unwrap();
        assert_eq!(credentials.username, "123456");
        assert!(matches!(credentials.key, KeySource::Env(_)));
        assert!(!format!("{config:?}").contains("glc_secret"), "the key never shows in Debug output");
    }

    #[test]
    fn flags_win_over_the_environment() {
        let args = run_args(&[
            "--pid",
            "1",
            "--server-url",
            "https://pyroscope.internal",
            "--tag",
            "environment=staging",
            "--api-key-file",
            "/run/secrets/key",
        ]);
        let config = resolve_run(args, &cloud_env()).unwrap();
        assert_eq!(config.upload.endpoint.to_string(), "https://pyroscope.internal");
        assert_eq!(config.upload.tags, [("environment".to_owned(), "staging".to_owned())]);
        assert!(matches!(config.credentials.unwrap().key, KeySource::File(path) if path.ends_with("key")));
    }

    #[test]
    fn refuses_inconsistent_run_settings() {
        let err = |args: &[&str], env: &RunEnv| resolve_run(run_args(args), env).unwrap_err().to_string();
        let no_key = RunEnv { api_key: None, ..cloud_env() };
        assert!(err(&["--pid", "1"], &no_key).contains("there is no API key"));
        let no_user = RunEnv { username: None, ..cloud_env() };
        assert!(err(&["--pid", "1"], &no_user).contains("PYROSCOPE_USERNAME is not set"));
        assert!(err(&["--pid", "1"], &RunEnv::default()).contains("PYROSCOPE_SERVER_URL"));
        assert!(err(&["--pid", "1", "--tag", "a=1", "--tag", "a=2"], &cloud_env()).contains("given twice"));
        assert!(err(&["--pid", "1", "--tag", "service_name=x"], &cloud_env()).contains("--app-name"));
        assert!(err(&["--pid", "1", "--tag", "otel.x=1", "--protocol", "ingest"], &cloud_env()).contains("ingest"));
        assert!(err(&["--pid", "1", "--upload-interval", "100ms"], &cloud_env()).contains("--upload-interval"));
        assert!(err(&["--pid", "1", "--max-queue-size", "1KiB"], &cloud_env()).contains("--max-queue-size"));
        assert!(err(&["--pid", "1", "--tenant-id", "a b"], &cloud_env()).contains("--tenant-id"));
        let plain = RunEnv { server_url: Some("http://10.1.2.3:4040".into()), ..cloud_env() };
        assert!(err(&["--pid", "1"], &plain).contains("clear text"));
        assert!(resolve_run(run_args(&["--pid", "1", "--allow-insecure"]), &plain).is_ok());
        // There is no flag for the key itself.
        assert!(Cli::try_parse_from(["profiler", "run", "--pid", "1", "--api-key", "x"]).is_err());
    }

    #[test]
    fn resolves_what_crashes_shows() {
        let resolve = |args: &[&str]| {
            let cli = Cli::try_parse_from(["profiler", "crashes"].iter().chain(args)).unwrap();
            let Command::Crashes(args) = cli.command else { panic!("not crashes") };
            resolve_crashes(args)
        };
        let list = resolve(&[]).unwrap();
        assert_eq!((list.dir, list.json, list.show), (PathBuf::from("crashes"), false, None));
        let by_signature = resolve(&["--dir", "/d", "--json", "3F2A"]).unwrap();
        assert_eq!(by_signature.show, Some(CrashQuery::Signature("3f2a".into())));
        assert!(by_signature.json);
        let by_name = resolve(&["--dir", "/d", "crash-42-SIGSEGV-1700000000000.txt"]).unwrap();
        assert_eq!(by_name.show, Some(CrashQuery::Report("/d/crash-42-SIGSEGV-1700000000000".into())));
        let by_path = resolve(&["/elsewhere/crash-42-SIGSEGV-1700000000000.json"]).unwrap();
        assert_eq!(by_path.show, Some(CrashQuery::Report("/elsewhere/crash-42-SIGSEGV-1700000000000".into())));
        let err = resolve(&["../../etc/shadow"]).unwrap_err().to_string();
        assert!(err.contains("neither a crash signature") && !err.contains('\n'), "{err}");
    }

    #[test]
    fn profiling_enabled_is_a_strict_boolean() {
        let with = |value: &str| RunEnv { profiling_enabled: Some(value.into()), ..RunEnv::default() };
        for off in ["false", "0", "no", "off", "FALSE", " False "] {
            assert_eq!(with(off).disabled_by().unwrap(), Some(off), "{off}");
        }
        for on in ["true", "1", "yes", "on", "TRUE"] {
            assert_eq!(with(on).disabled_by().unwrap(), None, "{on}");
        }
        assert_eq!(RunEnv::default().disabled_by().unwrap(), None);
        assert!(with("flase").disabled_by().unwrap_err().to_string().contains("not a boolean"));
    }
}
