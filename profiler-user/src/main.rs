//! The `profiler` binary: parse the command line, run it, print any error as one line.
use std::process::ExitCode;

use clap::Parser as _;
use profiler::cli::Cli;

fn main() -> ExitCode {
    // Before anything is read: a core dump of the agent would hold the API key and the targets' memory it copied,
    // written wherever the host keeps cores, and a non-dumpable process's /proc files are root's alone.
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        eprintln!("error: could not disable core dumps (prctl PR_SET_DUMPABLE): {}", std::io::Error::last_os_error());
        return ExitCode::FAILURE;
    }
    // And no core even where the host dumps non-dumpable processes (fs.suid_dumpable=2, as with apport): a limit
    // of 1 byte is below any core file, and the kernel's sign to skip a core_pattern pipe too (fs/coredump.c).
    let no_core = libc::rlimit { rlim_cur: 1, rlim_max: 1 };
    // SAFETY: a valid limit struct.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    raise_open_file_limit();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    // The agent's status line and what happens to the targets (started, ended and how) are at info level: an
    // operator should see them without setting RUST_LOG.
    profiler::logging::init("warn,profiler=info");
    match profiler::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Help and version go to stdout as clap writes them; a usage mistake is one line, like every other error.
fn usage_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    // clap's message spans lines (what is missing, then usage and tips): keep the message, on one line.
    let rendered = err.render().to_string();
    let message: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.is_empty() && !line.starts_with("Usage:"))
        .map(|line| line.trim().trim_start_matches("error: "))
        .collect();
    eprintln!("error: {} (see `profiler --help`)", message.join(" "));
    ExitCode::from(2)
}

/// Each file the targets map is kept open once it is read (the symbolizer reopens that very file, see
/// process::files), so the agent may hold a descriptor per distinct library on the node: the soft limit (often
/// 1024) goes up to the hard one.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid out-pointer, then a limit within the hard one.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
