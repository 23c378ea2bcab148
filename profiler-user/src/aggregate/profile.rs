//! The aggregated profile: what every output format is written from.
//!
//! Frames are interned once and stacks refer to them by index, so a window of thousands of samples over a few
//! hundred distinct stacks stays small.

use std::sync::Arc;

/// Index into [`Profile::frames`].
pub(crate) type FrameId = u32;

/// What produced a frame; outputs use it to style or annotate frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum FrameKind {
    /// A native function (possibly an inlined one, see `inlined`).
    Native,
    /// A kernel function (only with `--kernel`).
    Kernel,
    /// A Python function.
    Python,
    /// Marks where unwinding stopped before the thread's root (the stack below it is unknown).
    Truncated,
    /// A synthetic root frame naming the process or thread.
    Context,
}

/// The binary a native frame belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Module {
    /// Path of the ELF file as the target process maps it.
    pub path: String,
    /// GNU build-id, lowercase hex, when the file has one.
    pub build_id: Option<String>,
    /// The process's executable (`/proc/PID/exe`), not a library: pprof names it the profile's main binary.
    pub executable: bool,
}

/// One frame as the user sees it.
///
/// Its text is shared (`Arc`): a frame is cloned into every sample's stack, the aggregated profile and the crash
/// windows, and the symbolizer's and the code cache's frames are the same few hundred; so a clone costs reference
/// counts, not allocations, and comparing two clones of one frame stops at the pointers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Frame {
    pub kind: FrameKind,
    /// Function name (demangled); `[module+0xoffset]` when it could not be symbolized.
    pub function: Arc<str>,
    pub file: Option<Arc<str>>,
    pub line: Option<u32>,
    /// The module of a native frame; `None` for Python, kernel and synthetic frames.
    pub module: Option<Arc<Module>>,
    /// For native frames the file offset of the instruction inside `module` (so a server can symbolize it with
    /// the build-id); for kernel frames the kernel address; otherwise 0.
    pub address: u64,
    /// True for a frame inlined into the frame below it (same address, same module).
    pub inlined: bool,
}

#[cfg(test)]
impl Frame {
    /// A native frame named `name` and nothing else, for tests.
    pub(crate) fn native(name: &str) -> Frame {
        Frame {
            kind: FrameKind::Native,
            function: name.into(),
            file: None,
            line: None,
            module: None,
            address: 0,
            inlined: false,
        }
    }

    /// A Python frame of `function` in `file` at line 1, for tests.
    pub(crate) fn python(function: &str, file: &str) -> Frame {
        Frame {
            kind: FrameKind::Python,
            function: function.into(),
            file: Some(file.into()),
            line: Some(1),
            module: None,
            address: 0,
            inlined: false,
        }
    }
}

/// A label attached to samples (pprof `Sample.label`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum LabelValue {
    Str(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Label {
    pub key: &'static str,
    pub value: LabelValue,
}

/// The last component of a path: how a frame's file or module is named where there is no room for directories.
pub(crate) fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The value of label `key` among `labels`, if it is there.
pub(crate) fn label_value<'l>(labels: &'l [Label], key: &str) -> Option<&'l str> {
    labels.iter().find(|label| label.key == key).map(|label| match &label.value {
        LabelValue::Str(value) => value.as_str(),
    })
}

/// Distinct stack + labels, and how many samples hit it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StackCount {
    /// Leaf first (pprof order). Starts with the sampled function, ends at the thread's root, then the synthetic
    /// context frames (thread, process) if the aggregator added them.
    pub frames: Vec<FrameId>,
    pub labels: Vec<Label>,
    pub count: u64,
}

/// What a profile measures. Each is its own pprof sample type and its own Pyroscope profile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum ProfileKind {
    /// Time on a CPU, from the timer samples.
    #[default]
    Cpu,
    /// Time off the CPU: blocked (on the GIL, a lock, I/O, a sleep) or runnable and waiting for a CPU, from the
    /// scheduler's switches.
    OffCpu,
    /// Both: every thread's wall-clock time, where it ran and where it waited.
    Wall,
    /// Memory growth: the stacks that touched memory the process had not used yet, by bytes (sampled page faults).
    Memory,
}

impl ProfileKind {
    /// As the command line and file names spell it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ProfileKind::Cpu => "cpu",
            ProfileKind::OffCpu => "off-cpu",
            ProfileKind::Wall => "wall",
            ProfileKind::Memory => "memory",
        }
    }

    /// The pprof sample type, in [`Self::unit`].
    pub(crate) fn sample_type(self) -> &'static str {
        match self {
            ProfileKind::Cpu => "cpu",
            ProfileKind::OffCpu => "off_cpu",
            ProfileKind::Wall => "wall",
            ProfileKind::Memory => "page_faults",
        }
    }

    /// The unit of the values (pprof's `ValueType.unit`; `Profile::period` is in it too).
    pub(crate) fn unit(self) -> &'static str {
        match self {
            ProfileKind::Cpu | ProfileKind::OffCpu | ProfileKind::Wall => "nanoseconds",
            ProfileKind::Memory => "bytes",
        }
    }

    /// pprof's period type: what one period measures (`cpu` for time, `space` for bytes, as Go's profiles say).
    pub(crate) fn period_type(self) -> &'static str {
        match self {
            ProfileKind::Cpu | ProfileKind::OffCpu | ProfileKind::Wall => self.sample_type(),
            ProfileKind::Memory => "space",
        }
    }

    /// The Pyroscope profile name (`__name__`): `process_cpu` as Grafana's SDKs and Alloy send CPU profiles,
    /// `off_cpu` as Pyroscope names the OpenTelemetry profiler's off-CPU profiles, `wall` as the Go, Java and .NET
    /// SDKs name wall-clock profiles, `memory` as every SDK names its memory profiles (Grafana lists this one as
    /// `memory:page_faults:bytes:space:bytes`).
    pub(crate) fn pyroscope_name(self) -> &'static str {
        match self {
            ProfileKind::Cpu => "process_cpu",
            ProfileKind::OffCpu => "off_cpu",
            ProfileKind::Wall => "wall",
            ProfileKind::Memory => "memory",
        }
    }

    /// What the values are, for titles and summaries.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            ProfileKind::Cpu => "CPU time",
            ProfileKind::OffCpu => "off-CPU time (waiting: GIL, locks, I/O, sleep, CPU)",
            ProfileKind::Wall => "wall-clock time (on and off CPU)",
            ProfileKind::Memory => "memory growth (bytes of new pages touched: sampled page faults)",
        }
    }
}

/// The profiles asked for, in the order given, each once (`Copy`, so options holding it stay `Copy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProfileKinds {
    kinds: [ProfileKind; 4],
    len: usize,
}

impl ProfileKinds {
    /// `kinds` without repeats; the CPU profile alone when empty.
    pub(crate) fn new(kinds: &[ProfileKind]) -> Self {
        let mut set = Self { kinds: [ProfileKind::Cpu; 4], len: 0 };
        for &kind in kinds {
            if !set.contains(kind) {
                set.kinds[set.len] = kind;
                set.len += 1;
            }
        }
        if set.len == 0 {
            set.len = 1;
        }
        set
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = ProfileKind> + '_ {
        self.kinds[..self.len].iter().copied()
    }

    pub(crate) fn contains(&self, kind: ProfileKind) -> bool {
        self.iter().any(|k| k == kind)
    }

    /// Whether the scheduler's switches must be sampled (an off-CPU or wall-clock profile).
    pub(crate) fn need_off_cpu(&self) -> bool {
        self.contains(ProfileKind::OffCpu) || self.contains(ProfileKind::Wall)
    }
}

impl Default for ProfileKinds {
    fn default() -> Self {
        Self::new(&[ProfileKind::Cpu])
    }
}

/// Samples of one recording or upload window.
#[derive(Clone, Debug, Default)]
pub(crate) struct Profile {
    pub kind: ProfileKind,
    pub frames: Vec<Frame>,
    pub stacks: Vec<StackCount>,
    /// What one unit of `StackCount::count` stands for, in `kind.unit()`: for CPU profiles 1e9 / sampling rate
    /// nanoseconds (a count is samples); for off-CPU and wall profiles 1 (a count is nanoseconds); for memory
    /// profiles 1 (a count is bytes).
    pub period: u64,
    /// Wall-clock start of the window, nanoseconds since the Unix epoch.
    pub start_unix_ns: u64,
    pub duration_ns: u64,
}

impl Profile {
    pub(crate) fn frame(&self, id: FrameId) -> &Frame {
        &self.frames[id as usize]
    }

    pub(crate) fn total_samples(&self) -> u64 {
        self.stacks.iter().map(|s| s.count).sum()
    }

    /// What the stacks add up to, in `kind.unit()`.
    pub(crate) fn total(&self) -> u64 {
        self.total_samples().saturating_mul(self.period)
    }
}
