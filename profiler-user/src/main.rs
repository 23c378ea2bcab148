//! The `profiler` binary: parse the command line, run it, print any error as one line.
use std::process::ExitCode;

use clap::Parser as _;
use profiler::cli::{Cli, Command, RunEnv, record, run as run_command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The agent's status line is at info level: an operator should see it without setting RUST_LOG.
    init_logging(match cli.command {
        Command::Run(_) => "warn,profiler=info",
        _ => "warn",
    });
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Record(args) => record::run(args.resolve()?),
        Command::Run(args) => run_command::run(args, &RunEnv::from_process()),
    }
}

/// Logs go to stderr; `RUST_LOG` selects what (`default` when it is unset).
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal: not in journald, files or pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}
