//! Running external commands so that a failure names the exact command line that failed.
use std::{
    ffi::OsStr,
    io,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Output},
};

use anyhow::{bail, Context as _, Result};

/// The command as a line one could paste into a shell: explicitly set variables first, then program and args.
pub fn display(cmd: &Command) -> String {
    let envs = cmd.get_envs().filter_map(|(key, value)| Some(format!("{}={}", key.to_string_lossy(), quote(value?))));
    let words = std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(quote);
    envs.chain(words).collect::<Vec<_>>().join(" ")
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Prints the command line, runs it with inherited stdio and fails, naming it, unless it exits with 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    eprintln!("$ {line}");
    let status = cmd.status().with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs a check quietly and returns its output whatever its exit status; `None` when the program is not installed.
pub fn probe(cmd: &mut Command) -> Result<Option<Output>> {
    match cmd.output() {
        Ok(output) => Ok(Some(output)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("could not start `{}`", display(cmd))),
    }
}

/// Prints the command line and replaces this process by it, so that its exit status and its handling of Ctrl-C
/// are the user's directly. Returns only if the exec failed.
pub fn exec(cmd: &mut Command) -> anyhow::Error {
    let line = display(cmd);
    eprintln!("$ {line}");
    anyhow::Error::new(cmd.exec()).context(format!("could not start `{line}`"))
}

/// Runs a command quietly and returns its stdout; fails, naming the command and showing its stderr, unless it exits
/// with 0.
pub fn stdout(cmd: &mut Command) -> Result<String> {
    let line = display(cmd);
    let output = cmd.output().with_context(|| format!("could not start `{line}`"))?;
    if !output.status.success() {
        bail!("`{line}` failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim_end());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Loading eBPF programs and reading other processes' memory need root; without it, go through sudo
/// (non-interactive under CI, where nobody could type a password).
pub fn as_root(program: &Path) -> Result<Command> {
    if is_root() {
        return Ok(Command::new(program));
    }
    let has_sudo =
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("sudo").is_file()));
    if !has_sudo {
        bail!(
            "{} needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE) and there is no sudo: run it as root",
            program.display()
        );
    }
    let mut cmd = Command::new("sudo");
    if std::env::var_os("CI").is_some_and(|ci| ci == "true") {
        cmd.arg("-n");
    }
    cmd.arg("--").arg(program);
    Ok(cmd)
}
