//! The command line: clap arguments, resolved into configuration types without doing any I/O.
pub mod record;
mod status;
mod summary;

use std::{path::PathBuf, time::Duration};

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::{output::OutputFormat, target::TargetSpec};

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
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").required(true))]
pub struct RecordArgs {
    /// Profile this process (all its threads); repeat for several processes.
    #[arg(long = "pid", value_name = "PID", group = "target")]
    pub pids: Vec<u32>,
    /// Profile every running process with this name (as `ps -e -o comm` shows it).
    #[arg(long, value_name = "NAME", group = "target")]
    pub name: Option<String>,
    /// Stop after this long (e.g. 30s, 2m, 500ms). Without it, record until Ctrl-C or until the --pid
    /// targets exit.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Samples per second for each busy thread.
    #[arg(long, value_name = "HZ", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub rate: u64,
    /// Also record kernel stacks (time in system calls and faults shows where in the kernel it went).
    #[arg(long)]
    pub kernel: bool,
    /// Write the profile here; the extension picks the format: .svg (flame graph), .pb.gz (pprof),
    /// .folded (collapsed stacks). Repeat for several outputs.
    #[arg(short = 'o', long = "output", value_name = "FILE", required = true)]
    pub outputs: Vec<PathBuf>,
}

/// Everything `record` needs, checked for consistency.
#[derive(Clone, Debug)]
pub struct RecordConfig {
    pub target: TargetSpec,
    pub duration: Option<Duration>,
    pub rate_hz: u64,
    pub kernel_stacks: bool,
    pub outputs: Vec<(PathBuf, OutputFormat)>,
}

impl RecordArgs {
    pub fn resolve(self) -> Result<RecordConfig> {
        let target = match (self.pids.is_empty(), self.name) {
            (false, None) => TargetSpec::Pids(self.pids),
            (true, Some(name)) => TargetSpec::Name(name),
            _ => bail!("give either --pid or --name"),
        };
        let outputs = self
            .outputs
            .into_iter()
            .map(|path| OutputFormat::from_path(&path).map(|format| (path, format)))
            .collect::<Result<_>>()?;
        if self.duration == Some(Duration::ZERO) {
            bail!("--duration must be longer than zero");
        }
        Ok(RecordConfig { target, duration: self.duration, rate_hz: self.rate, kernel_stacks: self.kernel, outputs })
    }
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
        let Command::Record(args) = cli.command;
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
        let Command::Record(args) = cli.command;
        assert!(args.resolve().is_err());
    }
}
