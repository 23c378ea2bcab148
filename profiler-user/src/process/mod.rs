//! Everything about a target process as the host sees it: its memory map, the files it maps (under its root),
//! its memory, and the processes on the host with their names, command lines and descendants.
//!
//! This is the one module that touches `/proc/PID/…` of other processes, so that what a hostile process can do
//! to a reader of those files (lie, race, block) is handled in one place. It knows nothing of samples, Python
//! or unwinding.
pub(crate) mod files;
mod list;
pub(crate) mod maps;
pub(crate) mod memory;
pub(crate) mod status;
pub(crate) mod task;

use anyhow::{Context as _, Result};

pub(crate) use self::list::{all_pids, cmdline, descendants, Process};

/// Reads a process's maps once to fail early with a clear message when they are not readable.
pub(crate) fn check_readable(pid: u32) -> Result<()> {
    maps::read(pid).map(drop).with_context(|| format!("cannot read the memory map of PID {pid}"))
}
