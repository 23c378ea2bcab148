//! Checks, before anything is loaded, that this machine and this user can run the sampler, so that a missing
//! privilege or kernel feature is one clear line instead of a verifier or syscall error.
use std::fs;

use anyhow::{bail, Result};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

const REQUIRED: [(u32, &str); 3] =
    [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON"), (CAP_SYS_PTRACE, "CAP_SYS_PTRACE")];

/// The oldest kernel the programs load on: `bpf_task_pt_regs`, which the sampler reads user registers with, came
/// in 5.15. (Ubuntu 22.04's 5.15 is the oldest kernel `cargo xtask kernels` boots.)
const OLDEST_KERNEL: (u32, u32) = (5, 15);

/// The inode of the initial PID namespace (`PROC_PID_INIT_INO` in the kernel's proc_ns.h, fixed since 3.8).
const INIT_PID_NAMESPACE: &str = "pid:[4026531836]";

/// Fails with one line naming what is missing: capabilities, a recent enough kernel, BTF, perf events, the host's
/// PID namespace.
pub(crate) fn check() -> Result<()> {
    check_capabilities(&fs::read_to_string("/proc/self/status").unwrap_or_default())?;
    if let Ok(namespace) = fs::read_link("/proc/self/ns/pid") {
        check_pid_namespace(&namespace.to_string_lossy())?;
    }
    check_kernel_release(&fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default())?;
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!(
            "this kernel does not expose BTF (/sys/kernel/btf/vmlinux is missing): use a kernel built with \
             CONFIG_DEBUG_INFO_BTF=y (5.8 or newer)"
        );
    }
    if !std::path::Path::new("/proc/sys/kernel/perf_event_paranoid").exists() {
        bail!("this kernel has no perf events (/proc/sys/kernel/perf_event_paranoid is missing): build it with CONFIG_PERF_EVENTS=y");
    }
    Ok(())
}

/// Refuses a kernel older than [`OLDEST_KERNEL`] by its release string (`5.10.0-28-amd64`); an unreadable one is
/// let through, to fail later with the kernel's own words.
fn check_kernel_release(release: &str) -> Result<()> {
    let mut numbers = release.trim().split(|c: char| !c.is_ascii_digit()).map(str::parse::<u32>);
    let (Some(Ok(major)), Some(Ok(minor))) = (numbers.next(), numbers.next()) else { return Ok(()) };
    if (major, minor) < OLDEST_KERNEL {
        bail!(
            "Linux {major}.{minor} is too old: the profiler needs {}.{} or newer (its sampler reads user registers \
             with bpf_task_pt_regs, which came in 5.15); upgrade the kernel (Debian 12, Ubuntu 22.04 and later ship \
             one)",
            OLDEST_KERNEL.0,
            OLDEST_KERNEL.1
        );
    }
    Ok(())
}

/// Refuses a PID namespace other than the host's (a container without `hostPID`, a booted systemd-nspawn
/// container): the kernel side sees the host's PIDs, the agent would look for its targets by PIDs of its own
/// namespace, and would sample nothing without a word.
fn check_pid_namespace(namespace: &str) -> Result<()> {
    if namespace != INIT_PID_NAMESPACE {
        bail!(
            "the profiler runs in a PID namespace of its own ({namespace}), not the host's: its eBPF programs see the \
             host's process IDs, which it cannot see from here; run it in the host's PID namespace (on Kubernetes \
             `hostPID: true`; not inside a container with its own PIDs, such as systemd-nspawn)"
        );
    }
    Ok(())
}

fn check_capabilities(proc_status: &str) -> Result<()> {
    let effective = proc_status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1u64 << cap) != 0;
    // CAP_SYS_ADMIN implies BPF and perfmon rights on every kernel; it is what root has on older kernels.
    let missing: Vec<&str> = REQUIRED
        .iter()
        .filter(|&&(cap, _)| !(has(cap) || (cap != CAP_SYS_PTRACE && has(CAP_SYS_ADMIN))))
        .map(|&(_, name)| name)
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing capabilities {}: run as root (sudo) or grant CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE",
            missing.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_host_pid_namespace_passes_and_another_is_named() {
        assert!(super::check_pid_namespace("pid:[4026531836]").is_ok());
        let err = super::check_pid_namespace("pid:[4026532301]").unwrap_err().to_string();
        assert!(err.starts_with("the profiler runs in a PID namespace of its own (pid:[4026532301])"), "{err}");
    }

    use super::*;

    #[test]
    fn refuses_kernels_before_5_15_in_one_line() {
        let err = check_kernel_release("5.10.0-28-amd64\n").unwrap_err().to_string();
        assert!(err.starts_with("Linux 5.10 is too old: the profiler needs 5.15 or newer"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        assert!(check_kernel_release("4.18.0-553.el8_10.x86_64").is_err());
        for fine in
            ["5.15.0-208-generic", "6.1.0-50-cloud-amd64", "6.12.117+deb13-cloud-amd64", "6.18.44-fc", "garbage"]
        {
            assert!(check_kernel_release(fine).is_ok(), "{fine}");
        }
    }

    #[test]
    fn root_has_everything() {
        assert!(check_capabilities("Name:\tx\nCapEff:\t000001ffffffffff\n").is_ok());
    }

    #[test]
    fn names_each_missing_capability() {
        let err = check_capabilities("CapEff:\t0000000000000000\n").unwrap_err().to_string();
        assert!(err.contains("CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE"), "{err}");
        let only_ptrace = format!("CapEff:\t{:016x}\n", 1u64 << CAP_SYS_PTRACE);
        let err = check_capabilities(&only_ptrace).unwrap_err().to_string();
        assert!(err.contains("missing capabilities CAP_BPF, CAP_PERFMON:"), "{err}");
    }

    #[test]
    fn sys_admin_covers_bpf_and_perfmon_but_not_ptrace() {
        let admin = format!("CapEff:\t{:016x}\n", 1u64 << CAP_SYS_ADMIN);
        let err = check_capabilities(&admin).unwrap_err().to_string();
        assert!(err.contains("missing capabilities CAP_SYS_PTRACE:"), "{err}");
    }
}
