//! The profiler's library: each module is one stage of the pipeline, data flowing one way (see
//! docs/ARCHITECTURE.md): process and selection → sample → unwind → symbolize → merge → aggregate → output /
//! pprof → upload, driven by `commands` from the configuration `cli` resolves.
//!
//! Everything is crate-private but what the binary, the integration tests and the fuzz targets use: the command
//! line and its one entry point, the pprof message types (tests decode our profiles with them), and, with the
//! `fuzzing` feature, the fuzz targets' entry points.
mod aggregate;
pub mod cli;
mod commands;
mod crash;
mod dump;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod heap;
mod labels;
pub mod logging;
mod merge;
mod offcpu;
mod output;
mod pipeline;
pub mod pprof;
mod privilege;
mod process;
mod python;
mod sample;
mod sanitize;
mod selection;
mod session;
mod symbolize;
#[cfg(test)]
mod test_support;
mod timeline;
mod top;
mod unwind;
mod upload;
mod watchdog;

/// Runs a parsed command line: resolves it (with the environment variables `run` reads) and executes it.
pub fn run(cli: cli::Cli) -> anyhow::Result<()> {
    commands::execute(cli::resolve(cli, &cli::RunEnv::from_process())?)
}
