//! The command line: clap arguments, resolved into configuration types without doing any I/O.
pub mod record;
pub mod run;
mod status;
mod summary;

use std::{path::PathBuf, time::Duration};

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::{
    output::OutputFormat,
    pipeline::PipelineOptions,
    target::TargetSpec,
    upload::{Endpoint, KeySource, Protocol, Secret, UploadConfig, config::PendingCredentials, labels},
};

#[derive(Debug, Parser)]
#[command(name = "profiler", version, about = "eBPF CPU profiler: native and Python stacks, flame graphs, pprof")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record CPU samples of running processes and write flame graphs, pprof or folded stacks.
    Record(RecordArgs),
    /// Profile continuously and push a profile per service to Grafana Cloud Profiles, Pyroscope or Grafana Alloy.
    #[command(after_help = RUN_ENV_HELP)]
    Run(RunArgs),
}

/// Which processes to profile: the same choice for `record` and `run`.
#[derive(Debug, Args)]
#[group(id = "target", required = true, multiple = false)]
pub struct TargetArgs {
    /// Profile this process (all its threads); repeat for several processes. With `record` and no --duration, or
    /// with `run`, profiling stops when they (and their children) have all exited.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Profile every process with this name (as `ps -e -o comm` shows it), including ones that start later.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Profile every process whose command line matches this regular expression, including later ones.
    #[arg(long, value_name = "REGEX")]
    pub match_cmdline: Option<String>,
}

impl TargetArgs {
    fn resolve(self) -> Result<TargetSpec> {
        match (self.pids.is_empty(), self.name, self.match_cmdline) {
            (false, None, None) => Ok(TargetSpec::Pids(self.pids)),
            (true, Some(name), None) => Ok(TargetSpec::Name(name)),
            (true, None, Some(pattern)) => {
                regex::Regex::new(&pattern).map_err(|err| {
                    anyhow::anyhow!("--match-cmdline `{pattern}` is not a valid regular expression: {err}")
                })?;
                Ok(TargetSpec::Cmdline(pattern))
            }
            _ => bail!("give one of --pid, --name or --match-cmdline"),
        }
    }
}

/// How Python stacks are shown; the same for `record` and `run`.
#[derive(Debug, Args)]
pub struct PythonArgs {
    /// Keep the Python interpreter's own native frames (eval loop, call machinery) between Python frames.
    #[arg(long)]
    pub native_python_internals: bool,
    /// Keep only samples of threads holding the Python GIL.
    #[arg(long)]
    pub gil_only: bool,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Also profile the processes the targets fork (worker processes, multiprocessing pools); the default.
    #[arg(long, overrides_with = "no_children")]
    pub children: bool,
    /// Profile only the target processes themselves, not the processes they fork.
    #[arg(long, overrides_with = "children")]
    pub no_children: bool,
    /// Stop after this long (e.g. 30s, 2m, 500ms). Without it, record until Ctrl-C or until the --pid
    /// targets (and their children) exit.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Samples per second for each busy thread.
    #[arg(long, value_name = "HZ", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub rate: u64,
    /// Also record kernel stacks (time in system calls and faults shows where in the kernel it went).
    #[arg(long)]
    pub kernel: bool,
    #[command(flatten)]
    pub python: PythonArgs,
    /// Where crash reports go (a target thread faulting or aborting, or a target killed by another process).
    #[arg(long, value_name = "DIR", default_value = "crashes")]
    pub crash_dir: PathBuf,
    /// How much of a crashed process's profile before the crash its report includes.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub crash_window: Duration,
    /// Write the profile here; the extension picks the format: .svg (flame graph), .pb.gz (pprof),
    /// .folded (collapsed stacks). Repeat for several outputs.
    #[arg(short = 'o', long = "output", value_name = "FILE", required = true)]
    pub outputs: Vec<PathBuf>,
    /// Also write the recording's own counters to this JSON file: samples, lost samples, complete stacks, and
    /// the profiler's userspace time per stage (unwind, Python, symbolize, merge, aggregate), cold (each
    /// process's first 100 samples) and warm. `cargo xtask bench` reads it.
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
}

/// Everything `record` needs, checked for consistency.
#[derive(Clone, Debug)]
pub struct RecordConfig {
    pub target: TargetSpec,
    pub crash_dir: PathBuf,
    pub follow_children: bool,
    pub duration: Option<Duration>,
    pub rate_hz: u64,
    pub kernel_stacks: bool,
    pub pipeline: PipelineOptions,
    pub outputs: Vec<(PathBuf, OutputFormat)>,
    pub stats_json: Option<PathBuf>,
}

impl RecordArgs {
    pub fn resolve(self) -> Result<RecordConfig> {
        let target = self.target.resolve()?;
        let outputs = self
            .outputs
            .into_iter()
            .map(|path| OutputFormat::from_path(&path).map(|format| (path, format)))
            .collect::<Result<_>>()?;
        if self.duration == Some(Duration::ZERO) {
            bail!("--duration must be longer than zero");
        }
        let pipeline =
            PipelineOptions {
                native_python_internals: self.python.native_python_internals,
                gil_only: self.python.gil_only,
                crash_window_secs: self.crash_window.as_secs().max(1),
            };
        Ok(RecordConfig {
            target,
            crash_dir: self.crash_dir,
            follow_children: !self.no_children,
            duration: self.duration,
            rate_hz: self.rate,
            kernel_stacks: self.kernel,
            pipeline,
            outputs,
            stats_json: self.stats_json,
        })
    }
}

const RUN_ENV_HELP: &str = "\
Environment:
  PYROSCOPE_SERVER_URL  server or Alloy base URL (--server-url overrides it)
  PYROSCOPE_USERNAME    basic auth user (Grafana Cloud: the stack's Profiles instance id)
  PYROSCOPE_API_KEY     basic auth password (Grafana Cloud: an access policy token); or --api-key-file
  PROFILING_ENABLED     false, 0, no or off: log that profiling is disabled and exit 0 without loading anything
  ENVIRONMENT           becomes the tag `environment` (unless --tag environment=... is given)
  RUST_LOG              log filter (default: warnings, and info from the profiler: the status line)";

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Base URL of the Pyroscope server or Grafana Alloy (https:// unless a scheme is given); overrides
    /// PYROSCOPE_SERVER_URL.
    #[arg(long, value_name = "URL")]
    pub server_url: Option<String>,
    /// Read the API key from this file (instead of PYROSCOPE_API_KEY). There is no flag for the key itself:
    /// command lines are readable by every user.
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// The `service_name` of the profiles [default: each process's name].
    #[arg(long, value_name = "NAME")]
    pub app_name: Option<String>,
    /// Add a label to every profile, e.g. `--tag version=1.4.2 --tag region=eu-west-1`; repeatable.
    #[arg(long = "tag", value_name = "NAME=VALUE")]
    pub tags: Vec<String>,
    /// Tenant for a self-hosted multi-tenant Pyroscope (sent as X-Scope-OrgID).
    #[arg(long, value_name = "ID")]
    pub tenant_id: Option<String>,
    /// Which upload API to use.
    #[arg(long, value_enum, default_value_t = Protocol::Push)]
    pub protocol: Protocol,
    /// Allow sending credentials over plain http to a host that is not loopback.
    #[arg(long)]
    pub allow_insecure: bool,
    /// Length of each profile window: one upload per service per window.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub upload_interval: Duration,
    /// How often to log the status line (samples/s, targets, uploads, queue).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub status_interval: Duration,
    /// Samples per second for each busy thread.
    #[arg(long, value_name = "HZ", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub rate: u64,
    /// Also record kernel stacks.
    #[arg(long)]
    pub kernel: bool,
    #[command(flatten)]
    pub python: PythonArgs,
    /// Memory for windows waiting to be sent (e.g. 16MiB, 512KiB); when full, the oldest are dropped.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_size)]
    pub max_queue_size: usize,
    /// Windows not sent within this long are dropped.
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = parse_duration)]
    pub max_queue_age: Duration,
    /// Give up on an upload attempt (and retry later) after this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub upload_timeout: Duration,
    /// Where crash reports go; each crash is also uploaded at once (its last window, and its stack labelled
    /// `crash=SIGNAL`).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/profiler/crashes")]
    pub crash_dir: PathBuf,
    /// How much of a crashed process's profile before the crash its report includes.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub crash_window: Duration,
}

/// The environment variables `run` reads, captured once so that resolving is a pure function of its inputs.
#[derive(Clone, Debug, Default)]
pub struct RunEnv {
    pub server_url: Option<String>,
    pub username: Option<String>,
    pub api_key: Option<Secret>,
    pub profiling_enabled: Option<String>,
    pub environment: Option<String>,
}

impl RunEnv {
    pub fn from_process() -> Self {
        // Empty counts as unset: `ENVIRONMENT=` in a unit file means "none".
        let var = |name| std::env::var(name).ok().filter(|value: &String| !value.trim().is_empty());
        Self {
            server_url: var("PYROSCOPE_SERVER_URL"),
            username: var("PYROSCOPE_USERNAME"),
            api_key: var("PYROSCOPE_API_KEY").map(Secret::new),
            profiling_enabled: var("PROFILING_ENABLED"),
            environment: var("ENVIRONMENT"),
        }
    }

    /// `Some(value)` when PROFILING_ENABLED turns profiling off. A value that is not a boolean is an error rather
    /// than a guess either way.
    pub fn disabled_by(&self) -> Result<Option<&str>> {
        let Some(value) = self.profiling_enabled.as_deref() else { return Ok(None) };
        match value.trim().to_ascii_lowercase().as_str() {
            "false" | "0" | "no" | "off" => Ok(Some(value)),
            "true" | "1" | "yes" | "on" => Ok(None),
            _ => bail!("PROFILING_ENABLED=`{value}` is not a boolean: use true or false"),
        }
    }
}

/// Everything `run` needs, checked for consistency; only the API key file is still to be read.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub target: TargetSpec,
    pub crash_dir: PathBuf,
    /// `service_name` for every target; `None`: each process's name.
    pub app_name: Option<String>,
    pub rate_hz: u64,
    pub kernel_stacks: bool,
    pub pipeline: PipelineOptions,
    pub upload_interval: Duration,
    pub status_interval: Duration,
    /// Its `credentials` stay `None` until `credentials` below is loaded into them.
    pub upload: UploadConfig,
    pub credentials: Option<PendingCredentials>,
}

impl RunArgs {
    pub fn resolve(self, env: &RunEnv) -> Result<RunConfig> {
        let target = self.target.resolve()?;
        let Some(server_url) = self.server_url.or_else(|| env.server_url.clone()) else {
            bail!("no server to upload to: set PYROSCOPE_SERVER_URL or --server-url");
        };
        let key = match (self.api_key_file, &env.api_key) {
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
        let endpoint = Endpoint::parse(&server_url, credentials.is_some(), self.allow_insecure)?;

        let mut tags: Vec<(String, String)> = Vec::new();
        for text in &self.tags {
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
            labels::check_for_protocol(name, value, self.protocol).map_err(anyhow::Error::msg)?;
        }
        if let Some(app_name) = &self.app_name {
            labels::check_app_name(app_name, self.protocol).map_err(anyhow::Error::msg)?;
        }
        // It becomes an HTTP header value.
        let valid_tenant = |tenant: &String| !tenant.is_empty() && tenant.bytes().all(|b| b.is_ascii_graphic());
        if self.tenant_id.as_ref().is_some_and(|tenant| !valid_tenant(tenant)) {
            bail!("--tenant-id must be non-empty printable ASCII without spaces");
        }
        for (flag, value, min) in [
            ("--upload-interval", self.upload_interval, Duration::from_secs(1)),
            ("--status-interval", self.status_interval, Duration::from_secs(1)),
            ("--upload-timeout", self.upload_timeout, Duration::from_millis(100)),
            ("--max-queue-age", self.max_queue_age, Duration::from_secs(1)),
        ] {
            if value < min {
                bail!("{flag} must be at least {min:?}");
            }
        }
        // Below this, many windows would not fit at all (a window of one busy native process is 1–2 KiB, of a
        // large Python service tens of KiB).
        if self.max_queue_size < 4 * 1024 {
            bail!("--max-queue-size must be at least 4KiB");
        }
        Ok(RunConfig {
            target,
            app_name: self.app_name,
            rate_hz: self.rate,
            kernel_stacks: self.kernel,
            pipeline: PipelineOptions {
                native_python_internals: self.python.native_python_internals,
                gil_only: self.python.gil_only,
                crash_window_secs: self.crash_window.as_secs().max(1),
            },
            crash_dir: self.crash_dir,
            upload_interval: self.upload_interval,
            status_interval: self.status_interval,
            upload: UploadConfig {
                endpoint,
                protocol: self.protocol,
                credentials: None,
                tenant_id: self.tenant_id,
                tags,
                rate_hz: self.rate,
                max_queue_bytes: self.max_queue_size,
                max_queue_age: self.max_queue_age,
                request_timeout: self.upload_timeout,
            },
            credentials,
        })
    }
}

/// Parses a byte size: `16MiB`, `512KiB`, `1G`, `65536`. Units are binary however they are spelled.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: usize = number.parse().map_err(|_| format!("`{text}` is not a size (try 16MiB, 512KiB)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown size unit `{other}` (use KiB, MiB or GiB)")),
    };
    value.checked_mul(1 << shift).ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses `30s`, `2m`, `1h`, `500ms`, or a plain number of seconds (`1.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration (try 30s, 2m, 500ms)"))?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit `{other}` (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("`{text}` is not a valid duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").unwrap_err().contains("unknown duration unit"));
    }

    #[test]
    fn resolves_record_arguments() {
        let cli = Cli::try_parse_from(["profiler", "record", "--pid", "1", "--pid", "2", "-o", "a.svg", "-o", "b.pb.gz"])
            .unwrap();
        let Command::Record(args) = cli.command else { panic!("not record") };
        let config = args.resolve().unwrap();
        assert_eq!(config.target, TargetSpec::Pids(vec![1, 2]));
        assert_eq!(config.rate_hz, 100);
        assert_eq!(config.outputs.len(), 2);
    }

    #[test]
    fn rejects_conflicting_or_missing_targets_and_bad_outputs() {
        assert!(Cli::try_parse_from(["profiler", "record", "-o", "a.svg"]).is_err());
        assert!(Cli::try_parse_from(["profiler", "record", "--pid", "1", "--name", "x", "-o", "a.svg"]).is_err());
        assert!(Cli::try_parse_from(["profiler", "record", "--pid", "1"]).is_err());
        assert!(Cli::try_parse_from(["profiler", "record", "--pid", "1", "--rate", "0", "-o", "a.svg"]).is_err());
        let cli = Cli::try_parse_from(["profiler", "record", "--pid", "1", "-o", "a.docx"]).unwrap();
        let Command::Record(args) = cli.command else { panic!("not record") };
        assert!(args.resolve().is_err());
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
        }
    }

    #[test]
    fn resolves_run_settings_from_flags_and_environment() {
        let config = run_args(&["--name", "uvicorn", "--tag", "region=eu", "--tenant-id", "t1"]).resolve(&cloud_env()).unwrap();
        assert_eq!(config.target, TargetSpec::Name("uvicorn".into()));
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
        assert!(config.upload.credentials.is_none(), "loaded in a separate step");
        assert!(!format!("{config:?}").contains("glc_secret"), "the key never shows in Debug output");
    }

    #[test]
    fn flags_win_over_the_environment() {
        let args = run_args(&[
            "--pid", "1", "--server-url", "https://pyroscope.internal", "--tag", "environment=staging",
            "--api-key-file", "/run/secrets/key",
        ]);
        let config = args.resolve(&cloud_env()).unwrap();
        assert_eq!(config.upload.endpoint.to_string(), "https://pyroscope.internal");
        assert_eq!(config.upload.tags, [("environment".to_owned(), "staging".to_owned())]);
        assert!(matches!(config.credentials.unwrap().key, KeySource::File(path) if path.ends_with("key")));
    }

    #[test]
    fn refuses_inconsistent_run_settings() {
        let err = |args: &[&str], env: &RunEnv| run_args(args).resolve(env).unwrap_err().to_string();
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
        assert!(run_args(&["--pid", "1", "--allow-insecure"]).resolve(&plain).is_ok());
        // There is no flag for the key itself.
        assert!(Cli::try_parse_from(["profiler", "run", "--pid", "1", "--api-key", "x"]).is_err());
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

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").unwrap_err().contains("unknown size unit"));
    }
}
