//! Reads tracepoint record formats from tracefs, so the lifecycle programs read fields where this kernel puts
//! them.
use std::{fs, path::Path};

use anyhow::{bail, Context as _, Result};
use profiler_common::{LifecycleConfig, NO_FIELD};

pub(crate) const TRACEFS: &str = "/sys/kernel/tracing";

/// Mounts tracefs when it is not (attaching a tracepoint needs it).
pub(crate) fn ensure_mounted() -> Result<()> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(());
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "tracefs", TRACEFS])
        .status()
        .context("running mount")?;
    if !status.success() || !Path::new(TRACEFS).join("events").is_dir() {
        bail!("tracefs is not mounted at {TRACEFS} and mounting it failed: run `mount -t tracefs tracefs {TRACEFS}`");
    }
    Ok(())
}

/// The byte offset of `field` in the records of tracepoint `category/name`.
fn field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let line = line.trim();
        let declaration = line.strip_prefix("field:")?.split(';').next()?;
        let name = declaration.rsplit([' ', '*']).next()?.split('[').next()?;
        if name != field {
            return None;
        }
        line.split(';').find_map(|part| part.trim().strip_prefix("offset:")?.parse().ok())
    })
}

fn read_format(category: &str, name: &str) -> Result<String> {
    let path = format!("{TRACEFS}/events/{category}/{name}/format");
    fs::read_to_string(&path).with_context(|| format!("reading {path}"))
}

/// The lifecycle programs' field offsets for this kernel.
pub(crate) fn lifecycle_config(report_all_execs: bool) -> Result<LifecycleConfig> {
    let newtask = read_format("task", "task_newtask")?;
    let exit = read_format("sched", "sched_process_exit")?;
    let signal = read_format("signal", "signal_generate")?;
    let required = |format: &str, field: &str, tracepoint: &str| {
        field_offset(format, field)
            .with_context(|| format!("the {tracepoint} tracepoint of this kernel has no `{field}` field"))
    };
    Ok(LifecycleConfig {
        report_all_execs: report_all_execs.into(),
        newtask_pid: required(&newtask, "pid", "task_newtask")?,
        newtask_clone_flags: required(&newtask, "clone_flags", "task_newtask")?,
        exit_pid: required(&exit, "pid", "sched_process_exit")?,
        exit_group_dead: field_offset(&exit, "group_dead").unwrap_or(NO_FIELD),
        signal_sig: required(&signal, "sig", "signal_generate")?,
        signal_pid: required(&signal, "pid", "signal_generate")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXIT: &str = "name: sched_process_exit\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
        \tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n\
        \tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n";

    #[test]
    fn finds_field_offsets() {
        assert_eq!(field_offset(EXIT, "pid"), Some(24));
        assert_eq!(field_offset(EXIT, "comm"), Some(8));
        assert_eq!(field_offset(EXIT, "group_dead"), Some(32));
        assert_eq!(field_offset(EXIT, "prio"), None);
    }
}
