//! The command line: clap's flags, with the groups both commands share declared once (`TargetArgs`,
//! `SamplingArgs`), and `resolve` (config.rs), which turns them into one complete configuration per command
//! without doing any I/O.
mod config;

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

pub(crate) use self::config::{resolve, RunEnv};
pub(crate) use self::config::{
    AttachConfig, Config, CrashQuery, CrashesConfig, DumpConfig, RecordConfig, RunConfig, TopConfig,
};
use self::parse::parse_on_off;
pub(crate) use self::parse::{parse_duration, parse_size};
use crate::{aggregate::ProfileKind, upload::Protocol};

mod parse;

#[derive(Debug, Parser)]
#[command(name = "profiler", version, about = "eBPF CPU profiler: native and Python stacks, flame graphs, pprof")]
pub struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Record CPU samples of running processes and write flame graphs, pprof or folded stacks.
    Record(RecordArgs),
    /// Profile continuously and push a profile per service to Grafana Cloud Profiles, Pyroscope or Grafana Alloy.
    #[command(after_help = RUN_ENV_HELP)]
    Run(RunArgs),
    /// Print every thread's current native and Python stack without stopping the process: where each waits
    /// (which lock, sleep or I/O call), which holds the GIL; threads on a CPU are sampled for a moment.
    Dump(DumpArgs),
    /// List the crashes of a crash directory grouped by signature, or print one report.
    Crashes(CrashesArgs),
    /// A live view in the terminal, like `top`: the functions using the CPU now (by self and total share), the
    /// threads with their CPU and GIL share, and the endpoints when samples carry them. Keys: 1-4 sort, l lines,
    /// p pause, r reset, arrows scroll, q quit.
    Top(TopArgs),
}

/// Where `record` writes crash reports unless told otherwise (relative to where it runs); `crashes` reads there.
const RECORD_CRASH_DIR: &str = "crashes";

/// Which processes to profile: the same choice for `record` and `run`.
#[derive(Debug, Args)]
#[group(id = "target", required = true, multiple = false)]
pub(crate) struct TargetArgs {
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

/// How Python stacks are shown; the same for `record` and `run`.
#[derive(Debug, Args)]
pub(crate) struct PythonArgs {
    /// Keep the Python interpreter's own native frames (eval loop, call machinery) between Python frames.
    #[arg(long)]
    pub native_python_internals: bool,
    /// Keep only samples of threads holding the Python GIL.
    #[arg(long)]
    pub gil_only: bool,
}

/// How to sample and what stacks show; the same for `record` and `run`.
#[derive(Debug, Args)]
pub(crate) struct SamplingArgs {
    /// Samples per second for each busy thread.
    #[arg(long, value_name = "HZ", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub rate: u64,
    /// Also record kernel stacks (time in system calls and faults shows where in the kernel it went).
    #[arg(long)]
    pub kernel: bool,
    /// Which profiles to make, comma-separated: `cpu` (time on a CPU), `off-cpu` (time blocked or waiting for a
    /// CPU, labelled with what was waited on: `wait=gil|lock|io|sleep|cpu|other`), `wall` (both: every thread's
    /// wall-clock time), `memory` (where memory grows: the stacks touching new pages, by bytes, from sampled page
    /// faults). Each is its own file (`record`) or Pyroscope profile type (`run`).
    #[arg(long = "profile", value_name = "KINDS", value_enum, value_delimiter = ',', default_value = "cpu")]
    pub profiles: Vec<ProfileKind>,
    /// Off-CPU stack captures per second for each thread, at most on average (with `--profile off-cpu` or
    /// `wall`). A thread that leaves its CPU less often has each period captured; a busier one is sampled, and
    /// every period's time is counted whether captured or not, so a lower rate costs less and only makes the
    /// split between a thread's waiting stacks coarser.
    #[arg(long, value_name = "HZ", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub off_cpu_rate: u64,
    /// KiB of a process's memory growth per memory-profile stack capture, on average (with `--profile memory`).
    /// Each capture stands for the bytes since the last; lower is finer and costs more.
    #[arg(long, value_name = "KIB", default_value_t = crate::pipeline::DEFAULT_MEMORY_PERIOD_KIB,
          value_parser = clap::value_parser!(u64).range(4..=crate::pipeline::MAX_MEMORY_PERIOD_KIB))]
    pub memory_period: u64,
    #[command(flatten)]
    pub python: PythonArgs,
    /// Label samples by the frames on their stack, as the rules of this TOML file say (e.g. a handler's function →
    /// `endpoint=phivolcs, data_source=external_api`); see the README. Web handlers get an `endpoint` label
    /// without it.
    #[arg(long = "labels", value_name = "FILE")]
    pub labels_file: Option<PathBuf>,
    /// Distinct values kept per label from the stack (`endpoint`, the --labels rules'); more become `other`.
    #[arg(long, value_name = "N", default_value_t = crate::labels::DEFAULT_MAX_VALUES as u64,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_label_values: u64,
    /// How much of a crashed process's profile before the crash its report includes.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub crash_window: Duration,
    /// Fetch debug info for native frames nothing on this machine names (stripped C extensions) from the
    /// servers in DEBUGINFOD_URLS, in the background; only their build-ids are sent. `record`: off unless `on`;
    /// `run`: on when DEBUGINFOD_URLS is set, unless `off`.
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    pub debuginfod: Option<bool>,
    /// Where debug files from debuginfod are kept.
    #[arg(long, value_name = "DIR", default_value = crate::symbolize::DEFAULT_CACHE_DIR)]
    pub debuginfod_cache: PathBuf,
    /// The most the debuginfod cache may hold (e.g. 1GiB, 500MiB); the oldest files go first.
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse_size)]
    pub debuginfod_cache_size: usize,
}

#[derive(Debug, Args)]
pub(crate) struct RecordArgs {
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
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Where crash reports go (a target thread faulting or aborting, or a target killed by another process).
    #[arg(long, value_name = "DIR", default_value = RECORD_CRASH_DIR)]
    pub crash_dir: PathBuf,
    /// Write the profile here; the extension picks the format: .svg (flame graph), .pb.gz (pprof),
    /// .folded (collapsed stacks). Repeat for several outputs. With several --profile kinds, the first goes to
    /// this name and each other to NAME.KIND.EXT (e.g. out.off-cpu.pb.gz).
    #[arg(short = 'o', long = "output", value_name = "FILE", required = true)]
    pub outputs: Vec<PathBuf>,
    /// In flame graphs and folded stacks, put each stack under a root frame naming its value of this label, e.g.
    /// `--group-by endpoint` gives `[endpoint=earthquakes]`, `[endpoint=weather_report]` and `[endpoint: none]`
    /// side by side. pprof files carry every label and are not changed.
    #[arg(long, value_name = "LABEL")]
    pub group_by: Option<String>,
    /// Also write the recording's own counters to this JSON file: samples, lost samples, complete stacks, and
    /// the profiler's userspace time per stage (unwind, Python, symbolize, merge, aggregate), cold (each
    /// process's first 100 samples) and warm. `cargo xtask bench` reads it.
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
}

const RUN_ENV_HELP: &str = "\
Environment:
  PYROSCOPE_SERVER_URL  server or Alloy base URL (--server-url overrides it)
  PYROSCOPE_USERNAME    basic auth user (Grafana Cloud: the stack's Profiles instance id)
  PYROSCOPE_API_KEY     basic auth password (Grafana Cloud: an access policy token); or --api-key-file
  PROFILING_ENABLED     false, 0, no or off: log that profiling is disabled and exit 0 without loading anything
  ENVIRONMENT           becomes the tag `environment` (unless --tag environment=... is given)
  DEBUGINFOD_URLS       debuginfod servers (space-separated) for frames nothing here names (see --debuginfod)
  RUST_LOG              log filter (default: warnings, and info from the profiler: the status line)";

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
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
    #[command(flatten)]
    pub sampling: SamplingArgs,
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
}

/// Which process `dump` shows.
#[derive(Debug, Args)]
#[group(id = "dump_target", required = true, multiple = false)]
pub(crate) struct DumpTargetArgs {
    /// Dump this process.
    #[arg(long = "pid", value_name = "PID")]
    pub pid: Option<u32>,
    /// Dump every process with this name (as `ps -e -o comm` shows it), one after the other.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct DumpArgs {
    #[command(flatten)]
    pub target: DumpTargetArgs,
    /// Print JSON (an array with one object per process) instead of text.
    #[arg(long)]
    pub json: bool,
    /// How long threads that are on a CPU are sampled to show what they run.
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = parse_duration)]
    pub sample_for: Duration,
}

#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Profile only the target processes themselves, not the processes they fork.
    #[arg(long)]
    pub no_children: bool,
    /// How often the view is refreshed; the percentages are of the last such interval.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub refresh: Duration,
    /// Samples per second for each busy thread.
    #[arg(long, value_name = "HZ", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub rate: u64,
    /// Also sample kernel stacks (functions in system calls and faults are listed too).
    #[arg(long)]
    pub kernel: bool,
    #[command(flatten)]
    pub python: PythonArgs,
    /// Label samples by the frames on their stack, as the rules of this TOML file say (see the README); the
    /// endpoints panel lists the `endpoint` values, which web handlers get without it.
    #[arg(long = "labels", value_name = "FILE")]
    pub labels_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct CrashesArgs {
    /// The crash directory: `record --crash-dir` (by default ./crashes), or `run`'s (/var/lib/profiler/crashes).
    #[arg(long, value_name = "DIR", default_value = RECORD_CRASH_DIR)]
    pub dir: PathBuf,
    /// Print JSON: the groups, or the report's JSON.
    #[arg(long)]
    pub json: bool,
    /// Print a report instead of the list: the newest of a signature (or of the one signature starting with
    /// these digits), or a report by name (crash-PID-SIGNAL-MILLIS) or path.
    #[arg(value_name = "SIGNATURE|REPORT")]
    pub show: Option<String>,
}
