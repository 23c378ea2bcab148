//! The command drivers: each runs one resolved configuration (cli) to its end, wiring the stages together.
//! `attach` is the start-up both share; `record` writes outputs at the end, `run` uploads a window at a time;
//! `crashes` reads a crash directory back; `top` draws a live view.
mod attach;
mod crashes;
mod dump;
mod record;
mod run;
mod status;
mod summary;
mod top;
mod waits;

use anyhow::Result;

use crate::cli::Config;

/// Runs a resolved command line.
pub(crate) fn execute(config: Config) -> Result<()> {
    match config {
        Config::Record(config) => record::run(*config),
        Config::Run(config) => run::run(*config),
        Config::Crashes(config) => crashes::run(config),
        Config::Dump(config) => dump::run(config),
        Config::Top(config) => top::run(config),
        Config::Disabled(value) => {
            tracing::info!("profiling is disabled (PROFILING_ENABLED={value})");
            Ok(())
        }
    }
}
