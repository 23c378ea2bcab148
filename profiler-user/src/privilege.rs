//! Least privilege: narrows the process's capabilities to what loading the kernel programs needs before any
//! thread or program exists, and to what sampling needs once they are attached.
//!
//! `preflight` has already said by name which of CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE are missing. Run as root
//! (or with a generous bounding set), the agent would otherwise keep every capability for as long as it runs, and
//! its upload thread talks to the network. So:
//!
//! 1. [`before_loading`], while the process has one thread: mounts tracefs if it must (the last use of
//!    CAP_SYS_ADMIN on a kernel with CAP_BPF), then reduces the bounding, inheritable, ambient, permitted and
//!    effective sets to the loading set. Threads started later (the runtime's) inherit that.
//! 2. [`after_attach`], on each thread that exists by then: drops what only loading and attaching needed. The
//!    kernel checks `bpf_capable()` on every bpf() command when unprivileged BPF is off, and the TARGETS map is
//!    updated at every fork and exec, so CAP_BPF stays; CAP_SYS_PTRACE stays for process_vm_readv and
//!    /proc/PID/{maps,mem,root}; CAP_PERFMON, needed only to open the perf events and load tracing programs, goes.
//! 3. [`verify_threads`] reads every thread's sets back from /proc/self/task, because capabilities belong to
//!    threads, not processes: a thread that kept more is an error, not a silent gap.
//!
//! `kernel.perf_event_paranoid` above 2 is a distribution's patch, not mainline: Debian's kernels default to 3 and
//! Ubuntu's to 4, and at those levels their `perf_event_open` checks `capable(CAP_SYS_ADMIN)` before anything else
//! (CAP_PERFMON is not enough, root or not). There CAP_SYS_ADMIN joins the loading set, is logged with the reason,
//! and goes with CAP_PERFMON once every program is attached; without it, the attach error names the sysctl.
//!
//! Optional capabilities, kept only when the process has them: CAP_CHECKPOINT_RESTORE opens
//! /proc/PID/map_files/, the only way to a binary deleted or replaced since the target mapped it (an upgrade in
//! place); CAP_SYSLOG, only with `--kernel`, makes /proc/kallsyms show addresses; CAP_DAC_OVERRIDE, only for
//! `record`, which writes its outputs where the invoking user asked (under sudo, usually a directory root does not
//! own). Kernels without CAP_BPF (before 5.8), or a grant of CAP_SYS_ADMIN instead of CAP_BPF, keep CAP_SYS_ADMIN,
//! which is then what bpf() checks.
use std::{fs, path::Path};

use anyhow::{bail, Context as _, Result};
use caps::{CapSet, Capability, CapsHashSet};

use crate::sample::tracefs;

/// What the caller will do after attaching, which decides the optional capabilities.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Needs {
    /// Kernel stacks are symbolized through /proc/kallsyms (`--kernel`).
    pub kernel_symbols: bool,
    /// Outputs are written into directories the invoking user chose (`record`).
    pub write_as_caller: bool,
}

/// The two sets: what loading and attaching need, and what is kept afterwards.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    load: CapsHashSet,
    keep: CapsHashSet,
}

impl Plan {
    /// The capabilities every thread holds once the programs are attached.
    #[cfg(test)]
    fn kept(&self) -> Vec<Capability> {
        sorted(&self.keep)
    }

    fn new(permitted: &CapsHashSet, needs: Needs, tracefs_mounted: bool, paranoid: Option<i32>) -> Plan {
        use Capability::*;
        let mut load: CapsHashSet = [CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_CHECKPOINT_RESTORE].into();
        if needs.kernel_symbols {
            load.insert(CAP_SYSLOG);
        }
        if needs.write_as_caller {
            load.insert(CAP_DAC_OVERRIDE);
        }
        // CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON where they are missing (older kernels, or a grant
        // of CAP_SYS_ADMIN only); mounting tracefs needs it too.
        let bpf_through_admin = !permitted.contains(&CAP_BPF);
        if bpf_through_admin || !permitted.contains(&CAP_PERFMON) || !tracefs_mounted || perf_needs_admin(paranoid) {
            load.insert(CAP_SYS_ADMIN);
        }
        load.retain(|cap| permitted.contains(cap));
        let mut keep = load.clone();
        keep.remove(&CAP_PERFMON);
        if !bpf_through_admin {
            keep.remove(&CAP_SYS_ADMIN);
        }
        Plan { load, keep }
    }
}

/// This kernel's `kernel.perf_event_paranoid`, if it has perf events.
pub(crate) fn perf_event_paranoid() -> Option<i32> {
    fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").ok()?.trim().parse().ok()
}

/// Whether `perf_event_open` needs CAP_SYS_ADMIN at this level: above 2 on Debian's (3) and Ubuntu's (4) kernels.
/// A mainline kernel treats any level above 2 as 2, where CAP_PERFMON is enough; keeping CAP_SYS_ADMIN until
/// attached costs nothing there.
pub(crate) fn perf_needs_admin(paranoid: Option<i32>) -> bool {
    paranoid.is_some_and(|level| level > 2)
}

/// Step 1: call while the process has a single thread, after `preflight::check`.
pub(crate) fn before_loading(needs: Needs) -> Result<Plan> {
    let permitted = caps::read(None, CapSet::Permitted).context("reading the permitted capabilities")?;
    if !tracefs_mounted() && permitted.contains(&Capability::CAP_SYS_ADMIN) {
        // Mounting here lets the loading set go without CAP_SYS_ADMIN on kernels with CAP_BPF.
        tracefs::ensure_mounted()?;
    }
    let paranoid = perf_event_paranoid();
    if let Some(level) = paranoid.filter(|_| perf_needs_admin(paranoid)) {
        if permitted.contains(&Capability::CAP_SYS_ADMIN) {
            tracing::info!(
                "kernel.perf_event_paranoid is {level}: above 2, Debian's and Ubuntu's kernels let only \
                 CAP_SYS_ADMIN open perf events, so it is kept until the programs are attached"
            );
        } else {
            tracing::warn!(
                "kernel.perf_event_paranoid is {level} and CAP_SYS_ADMIN is not granted: on Debian's and Ubuntu's \
                 kernels the perf events will be refused (grant CAP_SYS_ADMIN, or `sysctl \
                 kernel.perf_event_paranoid=2`)"
            );
        }
    }
    let plan = Plan::new(&permitted, needs, tracefs_mounted(), paranoid);
    // The bounding set limits what an exec could regain (uid 0 gets the whole bounding set back at exec). Only a
    // holder of CAP_SETPCAP may narrow it; under a service manager it is narrowed already.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        let bounding = caps::read(None, CapSet::Bounding).context("reading the bounding set")?;
        for cap in bounding.difference(&plan.load) {
            caps::drop(None, CapSet::Bounding, *cap)
                .with_context(|| format!("dropping {cap} from the bounding set"))?;
        }
    }
    caps::clear(None, CapSet::Ambient).context("clearing the ambient capabilities")?;
    caps::clear(None, CapSet::Inheritable).context("clearing the inheritable capabilities")?;
    narrow(&plan.load)?;
    tracing::debug!("capabilities while loading: {}", names(&plan.load));
    Ok(plan)
}

/// Step 2: call on every thread that exists once the programs are loaded and attached.
pub(crate) fn after_attach(plan: &Plan) -> Result<()> {
    narrow(&plan.keep)
}

/// Step 3: fails naming any thread of this process that holds a capability the plan does not keep.
pub(crate) fn verify_threads(plan: &Plan) -> Result<()> {
    let allowed = bits(&plan.keep);
    let tasks = fs::read_dir("/proc/self/task").context("listing /proc/self/task")?;
    for task in tasks.flatten() {
        // A thread that exited since the listing has nothing left to hold.
        let Ok(status) = fs::read_to_string(task.path().join("status")) else { continue };
        let extra = ["CapPrm:", "CapEff:"].iter().fold(0, |extra, set| extra | (status_set(&status, set) & !allowed));
        if extra != 0 {
            let name = status.lines().find_map(|l| l.strip_prefix("Name:")).unwrap_or("").trim();
            bail!(
                "thread {} ({name}) still holds {} after dropping capabilities",
                task.file_name().to_string_lossy(),
                names(&from_bits(extra))
            );
        }
    }
    tracing::info!("capabilities after attaching: {}", names(&plan.keep));
    Ok(())
}

fn narrow(set: &CapsHashSet) -> Result<()> {
    // Effective must stay within permitted: narrow it first.
    caps::set(None, CapSet::Effective, set).context("setting the effective capabilities")?;
    caps::set(None, CapSet::Permitted, set).context("setting the permitted capabilities")
}

fn tracefs_mounted() -> bool {
    Path::new(tracefs::TRACEFS).join("events").is_dir()
}

fn status_set(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0)
}

fn bits(set: &CapsHashSet) -> u64 {
    set.iter().fold(0, |bits, cap| bits | cap.bitmask())
}

fn from_bits(bits: u64) -> CapsHashSet {
    caps::all().into_iter().filter(|cap| bits & cap.bitmask() != 0).collect()
}

fn sorted(set: &CapsHashSet) -> Vec<Capability> {
    let mut caps: Vec<Capability> = set.iter().copied().collect();
    caps.sort_by_key(|cap| cap.index());
    caps
}

fn names(set: &CapsHashSet) -> String {
    if set.is_empty() {
        return "none".into();
    }
    sorted(set).iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use Capability::*;

    fn set(caps: &[Capability]) -> CapsHashSet {
        caps.iter().copied().collect()
    }

    #[test]
    fn root_keeps_bpf_ptrace_and_map_files_access() {
        let plan = Plan::new(&caps::all(), Needs::default(), true, Some(2));
        assert_eq!(sorted(&plan.load), [CAP_SYS_PTRACE, CAP_PERFMON, CAP_BPF, CAP_CHECKPOINT_RESTORE]);
        assert_eq!(plan.kept(), [CAP_SYS_PTRACE, CAP_BPF, CAP_CHECKPOINT_RESTORE]);
    }

    #[test]
    fn optional_capabilities_follow_the_needs_and_what_is_granted() {
        let needs = Needs { kernel_symbols: true, write_as_caller: true };
        let plan = Plan::new(&caps::all(), needs, true, Some(2));
        assert_eq!(plan.kept(), [CAP_DAC_OVERRIDE, CAP_SYS_PTRACE, CAP_SYSLOG, CAP_BPF, CAP_CHECKPOINT_RESTORE]);
        // A unit that grants the three required capabilities only.
        let plan = Plan::new(&set(&[CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE]), needs, true, Some(2));
        assert_eq!(plan.kept(), [CAP_SYS_PTRACE, CAP_BPF]);
    }

    #[test]
    fn sys_admin_is_kept_only_where_it_stands_in_for_cap_bpf() {
        // A kernel before 5.8: no CAP_BPF or CAP_PERFMON at all.
        let old = set(&[CAP_SYS_ADMIN, CAP_SYS_PTRACE]);
        let plan = Plan::new(&old, Needs::default(), true, Some(2));
        assert_eq!(plan.kept(), [CAP_SYS_PTRACE, CAP_SYS_ADMIN]);
        // Only tracefs needed it: it goes after attaching.
        let plan = Plan::new(&caps::all(), Needs::default(), false, Some(2));
        assert!(plan.load.contains(&CAP_SYS_ADMIN));
        assert!(!plan.keep.contains(&CAP_SYS_ADMIN));
        // CAP_PERFMON missing, CAP_BPF there: CAP_SYS_ADMIN loads, then goes.
        let plan = Plan::new(&set(&[CAP_BPF, CAP_SYS_ADMIN, CAP_SYS_PTRACE]), Needs::default(), true, Some(2));
        assert_eq!(sorted(&plan.load), [CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_BPF]);
        assert_eq!(plan.kept(), [CAP_SYS_PTRACE, CAP_BPF]);
    }

    #[test]
    fn debian_and_ubuntu_paranoid_levels_keep_sys_admin_until_attached() {
        for level in [3, 4] {
            let plan = Plan::new(&caps::all(), Needs::default(), true, Some(level));
            assert_eq!(
                sorted(&plan.load),
                [CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF, CAP_CHECKPOINT_RESTORE]
            );
            assert_eq!(plan.kept(), [CAP_SYS_PTRACE, CAP_BPF, CAP_CHECKPOINT_RESTORE]);
        }
        // Not granted (a unit with the three capabilities only): not added.
        let plan = Plan::new(&set(&[CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE]), Needs::default(), true, Some(3));
        assert!(!plan.load.contains(&CAP_SYS_ADMIN));
        assert!(!perf_needs_admin(Some(2)) && !perf_needs_admin(None) && perf_needs_admin(Some(3)));
    }

    #[test]
    fn reads_sets_from_proc_status() {
        let status = "Name:\tprofiler\nCapPrm:\t0000008000080000\nCapEff:\t0000008000080000\n";
        assert_eq!(from_bits(status_set(status, "CapEff:")), set(&[CAP_BPF, CAP_SYS_PTRACE]));
        assert_eq!(status_set(status, "CapBnd:"), 0);
    }
}
