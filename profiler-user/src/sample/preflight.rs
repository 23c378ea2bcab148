//! Checks, before anything is loaded, that this machine and this user can run the sampler, so that a missing
//! privilege or kernel feature is one clear line instead of a verifier or syscall error.
use std::fs;

use anyhow::{Result, bail};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

const REQUIRED: [(u32, &str); 3] =
    [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON"), (CAP_SYS_PTRACE, "CAP_SYS_PTRACE")];

/// Fails with one line naming what is missing: capabilities, BTF, perf events.
pub(crate) fn check() -> Result<()> {
    check_capabilities(&fs::read_to_string("/proc/self/status").unwrap_or_default())?;
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
    use super::*;

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
