//! Loads the embedded kernel programs and attaches the CPU sampler to every online CPU.
//!
//! One `cpu-clock` perf event per CPU, system-wide, filtered in BPF by the TARGETS map: threads, forks and
//! restarts then only change a map entry, never the attachments.
use std::io;

use anyhow::{anyhow, Context as _, Result};
use aya::{
    include_bytes_aligned,
    maps::{HashMap, MapData, PerCpuArray, ProgramArray, RingBuf, StackTraceMap},
    programs::{
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        PerfEvent, ProgramError, RawTracePoint, TracePoint,
    },
    util::online_cpus,
    Ebpf, EbpfLoader, VerifierLogLevel,
};
use profiler_common::{
    CrashingProcess, OffCpuThread, PyGil, PyLayout, SampleRecord, SamplerConfig, TargetFlags, CRASH_CODE_COPIES,
    NO_FIELD, OFF_CPU_CAPTURED, OFF_CPU_GIL_WAIT, PY_MAX_FRAMES, TARGET_FOLLOW_CHILDREN,
};

use super::{btf, event::InProgress, map_changes::UntakenMapChanges, tracefs};

static KERNEL_OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/profiler"));

/// What the sampler is asked to do.
#[derive(Clone, Debug)]
pub(crate) struct SamplerOptions {
    /// Samples per second per CPU (frequency mode: the kernel adjusts the period to hit it).
    pub rate_hz: u64,
    /// Also record the kernel stack of each sample.
    pub kernel_stacks: bool,
    /// Also sample the targets' threads leaving their CPUs (off-CPU and wall-clock profiles), at most about this
    /// many captures per second per thread.
    pub off_cpu_rate_hz: Option<u64>,
    /// Also capture the targets' page faults (the memory profile), one per this many bytes of a process's growth
    /// on average.
    pub memory_period_bytes: Option<u64>,
    /// Report every exec on the system (to find processes by name that start later), not only targets'.
    pub report_all_execs: bool,
}

/// The loaded and attached kernel programs and the maps userspace talks to.
pub(crate) struct Sampler {
    // Dropping `Ebpf` detaches the programs; keep it for the sampler's lifetime.
    _ebpf: Ebpf,
    /// The page-fault program's way to the CPU sampler (with the memory profile), kept open: see `load_page_faults`.
    _page_fault_handover: Option<ProgramArray<MapData>>,
    targets: HashMap<MapData, u32, TargetFlags>,
    lost: PerCpuArray<MapData, u64>,
    kernel_stacks: StackTraceMap<MapData>,
    python_processes: HashMap<MapData, u32, PyLayout>,
    python_gils: HashMap<MapData, u32, PyGil>,
    off_cpu_threads: HashMap<MapData, u32, OffCpuThread>,
    resident_pages: HashMap<MapData, u32, i64>,
    crashing: HashMap<MapData, u32, CrashingProcess>,
    untaken_map_changes: UntakenMapChanges,
    lost_events: PerCpuArray<MapData, u64>,
    samples: Option<RingBuf<MapData>>,
    events: Option<RingBuf<MapData>>,
    crashes: Option<RingBuf<MapData>>,
}

impl Sampler {
    pub(crate) fn load(options: &SamplerOptions) -> Result<Self> {
        tracefs::ensure_mounted()?;
        let lifecycle = tracefs::lifecycle_config(options.report_all_execs)?;
        let task_offsets = btf::task_offsets();
        let off_cpu_rate_hz =
            options.off_cpu_rate_hz.filter(|_| task_offsets.pid != NO_FIELD && task_offsets.state != NO_FIELD);
        let off_cpu = off_cpu_rate_hz.is_some();
        let memory_period_bytes = options
            .memory_period_bytes
            .filter(|_| task_offsets.mm != NO_FIELD && !task_offsets.rss_pages.contains(&NO_FIELD));
        let config = SamplerConfig {
            kernel_stacks: options.kernel_stacks.into(),
            _reserved: 0,
            // At most one captured period per thread per gap on average (see profiler-ebpf's off_cpu.rs); the
            // pipeline weighs captures knowing the same gap.
            off_cpu_gap_ns: off_cpu_rate_hz.map_or(0, crate::offcpu::capture_gap_ns),
            memory_period_bytes: memory_period_bytes.unwrap_or(0),
        };
        let cpus = online_cpus().map_err(|(path, err)| anyhow!("reading {path}: {err}"))?;
        let ring_bytes = samples_ring_bytes(cpus.len(), options.rate_hz);
        let (mut ebpf, crash_threads) = load_verified(&config, &lifecycle, &task_offsets, ring_bytes)?;
        // Loading parsed the kernel's BTF (megabytes of type records, ours and aya's) into memory that is free
        // now but that glibc keeps; handing it back keeps the agent's resident size to what it uses (~13 MB less).
        crate::heap::release_free_memory();

        let program: &mut PerfEvent = ebpf
            .program_mut("sample_cpu")
            .context("the embedded eBPF object has no `sample_cpu` program")?
            .try_into()?;
        for &cpu in &cpus {
            program
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(options.rate_hz),
                    false,
                )
                .map_err(|err| describe_program_error(&format!("attaching the CPU sampler to CPU {cpu}"), err))?;
        }
        let page_fault_handover =
            if memory_period_bytes.is_some() { Some(load_page_faults(&mut ebpf, &cpus)?) } else { None };

        for (program, category, name) in [
            ("task_newtask", "task", "task_newtask"),
            ("process_exec", "sched", "sched_process_exec"),
            ("process_exit", "sched", "sched_process_exit"),
            ("signal_to_target", "signal", "signal_generate"),
        ] {
            let tracepoint: &mut TracePoint = ebpf
                .program_mut(program)
                .with_context(|| format!("the embedded eBPF object has no `{program}` program"))?
                .try_into()?;
            tracepoint.load().map_err(|err| describe_program_error(&format!("loading {program}"), err))?;
            tracepoint.attach(category, name).map_err(|err| {
                describe_program_error(&format!("attaching to the {category}/{name} tracepoint"), err)
            })?;
        }

        // Optional: kernels without syscall tracepoints only lose the early maps refresh after a dlopen.
        let mmap: &mut TracePoint =
            ebpf.program_mut("mmap_exec").context("the embedded eBPF object has no `mmap_exec` program")?.try_into()?;
        if let Err(err) = mmap.load().and_then(|()| mmap.attach("syscalls", "sys_enter_mmap").map(drop)) {
            tracing::debug!("not watching mmap: {err}");
        }
        let mmap_done: &mut TracePoint =
            ebpf.program_mut("mmap_done").context("the embedded eBPF object has no `mmap_done` program")?.try_into()?;
        if let Err(err) = mmap_done.load().and_then(|()| mmap_done.attach("syscalls", "sys_exit_mmap").map(drop)) {
            tracing::debug!("not watching mmap: {err}");
        }

        let crash: &mut RawTracePoint = ebpf
            .program_mut("signal_generate")
            .context("the embedded eBPF object has no `signal_generate` program")?
            .try_into()?;
        crash
            .attach("signal_generate")
            .map_err(|err| describe_program_error("attaching the crash probe to signal_generate", err))?;
        if crash_threads {
            load_crash_threads(&mut ebpf);
        }
        if off_cpu && crash_threads {
            load_off_cpu(&mut ebpf);
        } else if off_cpu {
            // Measured under emulation: 5.15's and 6.1's verifiers give up on the capture after minutes (a million
            // instructions), with a 16-frame walk as with a 32-frame one; trying costs the start-up that much.
            tracing::warn!(
                "no off-CPU or wall-clock profiles: this kernel's verifier refuses the off-CPU sampler as too complex \
                 (it needs Linux 6.8 or newer)"
            );
        } else if options.off_cpu_rate_hz.is_some() {
            tracing::warn!("no off-CPU or wall-clock profiles: this kernel's BTF lacks task_struct.pid or .__state");
        }

        let targets = HashMap::try_from(take_map(&mut ebpf, "TARGETS")?)?;
        let lost = PerCpuArray::try_from(take_map(&mut ebpf, "LOST_SAMPLES")?)?;
        let kernel_stacks = StackTraceMap::try_from(take_map(&mut ebpf, "KERNEL_STACKS")?)?;
        let python_processes = HashMap::try_from(take_map(&mut ebpf, "PY_PROCESSES")?)?;
        let python_gils = HashMap::try_from(take_map(&mut ebpf, "PY_GIL")?)?;
        let off_cpu_threads = HashMap::try_from(take_map(&mut ebpf, "OFF_CPU_THREADS")?)?;
        let resident_pages = HashMap::try_from(take_map(&mut ebpf, "RESIDENT_PAGES")?)?;
        let crashing = HashMap::try_from(take_map(&mut ebpf, "CRASHING")?)?;
        let untaken_map_changes = UntakenMapChanges::new(
            take_lru_map(&mut ebpf, "UNTAKEN_MAP_CHANGES")?.fd(),
            take_lru_map(&mut ebpf, "CODE_MMAPS_IN_FLIGHT")?.fd(),
        )
        .context("duplicating a map's file descriptor")?;
        let lost_events = PerCpuArray::try_from(take_map(&mut ebpf, "LOST_EVENTS")?)?;
        let samples = RingBuf::try_from(take_map(&mut ebpf, "SAMPLES")?)?;
        let events = RingBuf::try_from(take_map(&mut ebpf, "EVENTS")?)?;
        let crashes = RingBuf::try_from(take_map(&mut ebpf, "CRASHES")?)?;
        Ok(Self {
            _ebpf: ebpf,
            _page_fault_handover: page_fault_handover,
            targets,
            lost,
            kernel_stacks,
            python_processes,
            python_gils,
            off_cpu_threads,
            resident_pages,
            crashing,
            untaken_map_changes,
            lost_events,
            samples: Some(samples),
            events: Some(events),
            crashes: Some(crashes),
        })
    }

    /// Starts sampling the threads of process `pid` (and, with `follow_children`, of the processes it forks).
    pub(crate) fn add_target(&mut self, pid: u32, follow_children: bool) -> Result<()> {
        let flags = if follow_children { TARGET_FOLLOW_CHILDREN } else { 0 };
        self.targets.insert(pid, flags, 0).with_context(|| format!("adding PID {pid} to the TARGETS map"))
    }

    /// Stops sampling process `pid` (no error if it was not a target).
    pub(crate) fn remove_target(&mut self, pid: u32) {
        let _ = self.targets.remove(&pid);
        let _ = self.python_processes.remove(&pid);
        let _ = self.python_gils.remove(&pid);
        let _ = self.crashing.remove(&pid);
        let _ = self.resident_pages.remove(&pid);
        let _ = self.untaken_map_changes.take(pid);
    }

    /// A handle on the kernel's note of the targets' code mappings, for whoever re-reads their maps.
    pub(crate) fn untaken_map_changes(&self) -> Result<UntakenMapChanges> {
        self.untaken_map_changes.try_clone().context("duplicating a map's file descriptor")
    }
    /// Tells the off-CPU sampler where process `pid` keeps its GIL: futex waits in `gil` are GIL waits.
    pub(crate) fn set_python_gil(&mut self, pid: u32, gil: std::ops::Range<u64>) -> Result<()> {
        let value = PyGil { start: gil.start, end: gil.end, waiters: 0, _pad: 0 };
        self.python_gils.insert(pid, value, 0).with_context(|| format!("adding PID {pid} to the PY_GIL map"))
    }

    /// Makes the sampler walk the Python frames of process `pid` with this layout.
    pub(crate) fn set_python_layout(&mut self, pid: u32, layout: &PyLayout) -> Result<()> {
        self.python_processes
            .insert(pid, layout, 0)
            .with_context(|| format!("adding PID {pid} to the PY_PROCESSES map"))
    }

    /// The target threads off their CPU now, as the off-CPU sampler's bookkeeping has them (none when it does not
    /// run).
    pub(crate) fn off_cpu_now(&self) -> Vec<InProgress> {
        self.off_cpu_threads
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, thread)| thread.since_ns != 0)
            .map(|(tid, thread)| InProgress {
                pid: thread.tgid,
                tid,
                since_ns: thread.since_ns,
                captured: thread.flags & OFF_CPU_CAPTURED != 0,
                gil_wait: thread.flags & OFF_CPU_GIL_WAIT != 0,
            })
            .collect()
    }

    /// Forgets a crashed process (gone now) and returns how many of its other threads were not captured at the
    /// crash (over the limit, or no room in the crash ring), if it had crashed.
    pub(crate) fn take_crash_threads_missed(&mut self, pid: u32) -> Option<u32> {
        let crashing = self.crashing.get(&pid, 0).ok()?;
        let _ = self.crashing.remove(&pid);
        Some(crashing.missed)
    }

    /// Samples the kernel could not send because the ring buffer was full, summed over CPUs.
    pub(crate) fn lost_samples(&self) -> Result<u64> {
        let per_cpu = self.lost.get(&0, 0).context("reading the lost-samples counter")?;
        Ok(per_cpu.iter().sum())
    }

    /// Kernel return addresses of a stack recorded with `--kernel`, innermost first.
    pub(crate) fn kernel_stack(&self, id: u32) -> Option<Vec<u64>> {
        let trace = self.kernel_stacks.get(&id, 0).ok()?;
        Some(trace.frames().iter().map(|frame| frame.ip).filter(|&ip| ip != 0).collect())
    }

    /// Lifecycle events the kernel could not send; non-zero means a rescan of /proc is due.
    pub(crate) fn lost_events(&self) -> u64 {
        self.lost_events.get(&0, 0).map(|per_cpu| per_cpu.iter().sum()).unwrap_or(0)
    }

    /// The ring buffer of sample records; the reader owns it (taken once).
    pub(crate) fn take_samples(&mut self) -> Option<RingBuf<MapData>> {
        self.samples.take()
    }

    /// The ring buffer of crash samples; the reader owns it (taken once).
    pub(crate) fn take_crashes(&mut self) -> Option<RingBuf<MapData>> {
        self.crashes.take()
    }

    /// The ring buffer of lifecycle events; the reader owns it (taken once).
    pub(crate) fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }
}

/// (Python frames walked per sample, code objects a crash report copies, whether to load the probe of the other
/// threads of a crashing process and the off-CPU sampler), most first: the verifier checks every iteration of both loops, and kernels
/// before 6.8 prune fewer of their paths, so Debian 12's 6.1 and Ubuntu 22.04's 5.15 refuse the full walk and copies
/// as too complex (over a million instructions to verify), and a third full capture (the other threads' probe)
/// would take them minutes more to verify under emulation. A refusal loads again with the next.
/// The fourth: Python frames the off-CPU capture walks, whose program is a little larger than the CPU sampler's
/// (Ubuntu 22.04's 5.15 refuses it at 32 frames).
const PY_LIMITS: [(u32, u32, bool, u32); 3] = [
    (PY_MAX_FRAMES as u32, CRASH_CODE_COPIES as u32, true, PY_MAX_FRAMES as u32),
    (32, 4, false, 16),
    (16, 0, false, 8),
];

/// Loads the probe that captures the other threads of a crashing process (`crash_thread`, on signal_deliver): a
/// third full capture for the verifier, so it is loaded only where the ladder kept the thread capture (6.8 on),
/// and a refusal costs the feature, with a warning, not the agent.
fn load_crash_threads(ebpf: &mut Ebpf) -> bool {
    let loaded = ebpf
        .program_mut("crash_thread")
        .ok_or(ProgramError::NotLoaded)
        .and_then(<&mut RawTracePoint>::try_from)
        .and_then(|probe| probe.load().and_then(|()| probe.attach("signal_deliver").map(drop)));
    match loaded {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!("crash reports will not show the other threads: loading their probe failed: {err}");
            false
        }
    }
}

/// Loads the page-fault program of the memory profile, hands it the CPU sampler (its captures are the sampler's, by a
/// tail call) and attaches it at the end of every handled fault, minor and major, on every CPU. The returned array
/// must be kept: the kernel empties a program array when its last handle in userspace closes.
fn load_page_faults(ebpf: &mut Ebpf, cpus: &[u32]) -> Result<ProgramArray<MapData>> {
    let sampler = ebpf
        .program("sample_cpu")
        .context("the embedded eBPF object has no `sample_cpu` program")?
        .fd()
        .map_err(|err| describe_program_error("handing the CPU sampler to the page-fault program", err))?
        .try_clone()
        .context("handing the CPU sampler to the page-fault program")?;
    let mut handover = ProgramArray::try_from(take_map(ebpf, "CPU_SAMPLER")?)?;
    handover.set(0, &sampler, 0).context("handing the CPU sampler to the page-fault program")?;
    let program: &mut PerfEvent = ebpf
        .program_mut("sample_page_fault")
        .context("the embedded eBPF object has no `sample_page_fault` program")?
        .try_into()?;
    program.load().map_err(|err| describe_program_error("loading the page-fault program", err))?;
    for &cpu in cpus {
        for event in [SoftwareEvent::PageFaultsMin, SoftwareEvent::PageFaultsMaj] {
            program
                .attach(
                    PerfEventConfig::Software(event),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Period(1),
                    false,
                )
                .map_err(|err| {
                    describe_program_error(&format!("attaching the page-fault program to CPU {cpu}"), err)
                })?;
        }
    }
    Ok(handover)
}

/// Loads the off-CPU sampler: its two programs on sched_switch, the end of a period (`off_cpu_in`, attached first
/// so that no end is missed for a start it sees) and the capture (`off_cpu_out`). Optional: a kernel that refuses
/// them costs the off-CPU and wall-clock profiles, with a warning, not the CPU profile.
fn load_off_cpu(ebpf: &mut Ebpf) {
    let mut load = |name: &str| {
        ebpf.program_mut(name)
            .ok_or(ProgramError::NotLoaded)
            .and_then(<&mut RawTracePoint>::try_from)
            .and_then(|probe| probe.load().and_then(|()| probe.attach("sched_switch").map(drop)))
    };
    if let Err(err) = load("off_cpu_in").and_then(|()| load("off_cpu_out")) {
        tracing::warn!("no off-CPU or wall-clock profiles: loading the off-CPU sampler (sched_switch) failed: {err}");
    }
}

/// The first limit worth trying on this kernel: a refused attempt costs seconds (minutes on a slow machine) of
/// verification, and kernels before 6.8 are known to refuse the full walk.
fn first_frame_limit(release: Option<(u32, u32)>) -> usize {
    match release {
        Some(version) if version < (6, 8) => 1,
        _ => 0,
    }
}

/// The running kernel's (major, minor).
fn kernel_release() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut numbers = release.trim().split(|c: char| !c.is_ascii_digit()).map(str::parse::<u32>);
    Some((numbers.next()?.ok()?, numbers.next()?.ok()?))
}

/// Loads the object and its two large programs (the CPU sampler and the crash probe, which share the sample
/// capture), with the longest Python frame walk this kernel's verifier accepts; one warning when that is less than
/// the whole. Also says whether the crash probe captures the other threads of a crashing process.
fn load_verified(
    config: &SamplerConfig,
    lifecycle: &profiler_common::LifecycleConfig,
    task_offsets: &profiler_common::TaskOffsets,
    ring_bytes: u32,
) -> Result<(Ebpf, bool)> {
    let release = kernel_release();
    let mut limits = PY_LIMITS[first_frame_limit(release)..].iter().peekable();
    while let Some(&(limit, copies, threads, off_cpu_limit)) = limits.next() {
        let mut ebpf = EbpfLoader::new()
            // Errors and statistics only. aya's default adds the per-instruction trace, which for a program the
            // verifier gives up on (a million instructions) does not fit any log buffer: aya then loads it again
            // with ever larger buffers, ten times in all, and each verification that prints its every step takes
            // minutes on a slow machine, before the one line that explains the failure.
            .verifier_log_level(VerifierLogLevel::STATS)
            .override_global("SAMPLER_CONFIG", config, true)
            .override_global("LIFECYCLE_CONFIG", lifecycle, true)
            .override_global("TASK_OFFSETS", task_offsets, true)
            .override_global("PY_FRAME_LIMIT", &limit, true)
            .override_global("OFF_CPU_PY_FRAME_LIMIT", &off_cpu_limit, true)
            .override_global("CRASH_COPY_LIMIT", &copies, true)
            .map_max_entries("SAMPLES", ring_bytes)
            .load(KERNEL_OBJECT)
            .map_err(|err| anyhow!("loading the eBPF programs failed: {err:#}"))?;
        let sampler: &mut PerfEvent = ebpf
            .program_mut("sample_cpu")
            .context("the embedded eBPF object has no `sample_cpu` program")?
            .try_into()?;
        let loaded = sampler.load().map_err(|err| ("loading the CPU sampler", err)).and_then(|()| {
            let crash: &mut RawTracePoint = ebpf
                .program_mut("signal_generate")
                .ok_or(("loading the crash probe", ProgramError::NotLoaded))?
                .try_into()
                .map_err(|err| ("loading the crash probe", err))?;
            crash.load().map_err(|err| ("loading the crash probe", err))
        });
        match loaded {
            Ok(()) => {
                if limit < PY_MAX_FRAMES as u32 {
                    let version =
                        release.map_or("this kernel".to_owned(), |(major, minor)| format!("Linux {major}.{minor}"));
                    tracing::warn!(
                        "{version}'s verifier does not take the full Python walk: Python stacks are cut at {limit} \
                         frames ({off_cpu_limit} in off-CPU profiles), a crash report copies the names of the \
                         innermost {copies} Python frames and does not show the process's other threads (from 6.8 on: \
                         {PY_MAX_FRAMES} and {CRASH_CODE_COPIES}, and every thread)"
                    );
                }
                return Ok((ebpf, threads));
            }
            Err((_, err)) if too_complex(&err) && limits.peek().is_some() => {
                tracing::debug!(
                    "the verifier refused a walk of {limit} Python frames and {copies} code copies: {err:#}"
                );
            }
            Err((action, err)) => return Err(describe_program_error(action, err)),
        }
    }
    unreachable!("the last limit returns or fails")
}

/// The verifier's "too complex" (E2BIG: a million instructions processed, or too long a sequence of jumps).
fn too_complex(err: &ProgramError) -> bool {
    matches!(err, ProgramError::LoadError { io_error, .. } if io_error.raw_os_error() == Some(libc::E2BIG))
}

/// The sample ring's size: about half a second of full records from every CPU at `rate_hz` (a CPU samples at most
/// one thread per tick), a power of two (the kernel requires it) between 4 MiB and 256 MiB. Userspace drains it every
/// 50–100 ms and is woken when it is a quarter full, so only a stall of the reader loses samples (they are counted).
/// The kernel maps the ring twice into this process (to make records contiguous across the wrap), so the agent's
/// RSS includes twice this size; a fixed size would be either too small for a large host or, on a small one, most
/// of the agent's memory.
pub(crate) fn samples_ring_bytes(cpus: usize, rate_hz: u64) -> u32 {
    const MIN: u64 = 4 << 20;
    const MAX: u64 = 256 << 20;
    let half_second = cpus as u64 * rate_hz.div_ceil(2) * std::mem::size_of::<SampleRecord>() as u64;
    half_second.clamp(MIN, MAX).next_power_of_two().min(MAX) as u32
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name).with_context(|| format!("the embedded eBPF object has no `{name}` map"))
}

/// An LRU hash map's own data, for the maps read with bpf(2) commands aya does not offer (`sample::map_changes`).
fn take_lru_map(ebpf: &mut Ebpf, name: &str) -> Result<MapData> {
    match take_map(ebpf, name)? {
        aya::maps::Map::LruHashMap(data) => Ok(data),
        _ => Err(anyhow!("the embedded eBPF object's `{name}` is not an LRU hash map")),
    }
}

/// Turns the kernel's errno into what the user has to do about it.
fn describe_program_error(action: &str, err: ProgramError) -> anyhow::Error {
    let io_error = match &err {
        ProgramError::SyscallError(syscall) => Some(&syscall.io_error),
        ProgramError::LoadError { io_error, .. } => Some(io_error),
        _ => None,
    };
    match io_error.and_then(io::Error::raw_os_error) {
        Some(libc::EPERM | libc::EACCES) => refused(action, crate::privilege::perf_event_paranoid(), has_sys_admin()),
        Some(libc::ENOENT | libc::EOPNOTSUPP | libc::ENODEV) => anyhow!(
            "{action} failed: this kernel has no usable perf events (needs CONFIG_PERF_EVENTS and the software \
             cpu-clock event)"
        ),
        _ => anyhow!("{action} failed: {err:#}"),
    }
}

/// Whether this thread holds CAP_SYS_ADMIN (effective).
fn has_sys_admin() -> bool {
    caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SYS_ADMIN).unwrap_or(false)
}

/// What to do when the kernel said no: above 2, `perf_event_paranoid` is the reason on Debian's and Ubuntu's
/// kernels (root or not), so that is what the line names; otherwise it is a missing capability.
fn refused(action: &str, paranoid: Option<i32>, sys_admin: bool) -> anyhow::Error {
    match paranoid {
        Some(level) if crate::privilege::perf_needs_admin(paranoid) && !sys_admin => anyhow!(
            "{action} was refused by the kernel: kernel.perf_event_paranoid is {level}, at which Debian's and \
             Ubuntu's kernels let only CAP_SYS_ADMIN open perf events: grant CAP_SYS_ADMIN as well, or run \
             `sysctl kernel.perf_event_paranoid=2`"
        ),
        Some(level) if crate::privilege::perf_needs_admin(paranoid) => anyhow!(
            "{action} was refused by the kernel although the profiler holds CAP_SYS_ADMIN: \
             kernel.perf_event_paranoid is {level}; run `sysctl kernel.perf_event_paranoid=2`, and check for a \
             security module (SELinux, AppArmor) or seccomp filter denying perf_event_open or bpf"
        ),
        _ => {
            anyhow!("{action} was refused by the kernel: run as root or grant CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every function the programs call is inlined (see profiler-ebpf's python.rs): a subprogram in .text would
    /// make the verifiers of 5.15 and 6.1 refuse the sampler as too complex. Only compiler-builtins' memory
    /// functions, which nothing calls, may be there.
    #[test]
    fn the_kernel_programs_call_no_subprograms() {
        use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SymbolKind};
        let file = object::File::parse(KERNEL_OBJECT).expect("the embedded eBPF object parses");
        let text = file.section_by_name(".text").map(|section| section.index());
        let subprograms: Vec<String> = file
            .symbols()
            .filter(|symbol| {
                symbol.kind() == SymbolKind::Text && symbol.section_index().is_some() && symbol.section_index() == text
            })
            .map(|symbol| symbol.name().unwrap_or("?").to_owned())
            .filter(|name| !["memset", "memcpy", "memmove", "memcmp", "bcmp"].contains(&name.as_str()))
            .collect();
        assert!(subprograms.is_empty(), "functions left out of line in the eBPF object: {subprograms:?}");
    }

    #[test]
    fn kernels_before_6_8_start_with_a_shorter_python_walk() {
        let full = (PY_MAX_FRAMES as u32, CRASH_CODE_COPIES as u32, true, PY_MAX_FRAMES as u32);
        assert_eq!(PY_LIMITS[first_frame_limit(Some((6, 8)))], full);
        assert_eq!(PY_LIMITS[first_frame_limit(Some((6, 18)))], full);
        assert_eq!(PY_LIMITS[first_frame_limit(None)], full);
        assert_eq!(PY_LIMITS[first_frame_limit(Some((6, 1)))], (32, 4, false, 16));
        assert_eq!(PY_LIMITS[first_frame_limit(Some((5, 15)))], (32, 4, false, 16));
    }

    #[test]
    fn a_refusal_above_paranoid_2_names_the_sysctl() {
        let err = refused("attaching the CPU sampler to CPU 0", Some(3), false).to_string();
        assert!(
            err.contains("kernel.perf_event_paranoid is 3") && err.contains("sysctl kernel.perf_event_paranoid=2"),
            "{err}"
        );
        assert!(!err.contains("run as root"), "{err}");
        let err = refused("attaching", Some(4), true).to_string();
        assert!(err.contains("is 4") && err.contains("sysctl kernel.perf_event_paranoid=2"), "{err}");
        let err = refused("attaching", Some(2), false).to_string();
        assert!(err.contains("grant CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE"), "{err}");
    }

    #[test]
    fn the_sample_ring_holds_half_a_second_of_every_cpu() {
        let record = std::mem::size_of::<SampleRecord>() as u64;
        // A small machine gets the floor.
        assert_eq!(samples_ring_bytes(2, 100), 4 << 20);
        for (cpus, rate) in [(2, 1000), (16, 100), (64, 100), (64, 1000), (1024, 1000)] {
            let bytes = u64::from(samples_ring_bytes(cpus, rate));
            assert!(bytes.is_power_of_two(), "{cpus} CPUs at {rate} Hz: {bytes}");
            let wanted = (cpus as u64 * rate / 2 * record).min(256 << 20);
            assert!(bytes >= wanted && bytes <= 256 << 20, "{cpus} CPUs at {rate} Hz: {bytes} < {wanted}");
        }
    }
}
