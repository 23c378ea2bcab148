//! The aggregated profile: what every output format is written from.
//!
//! Frames are interned once and stacks refer to them by index, so a window of thousands of samples over a few
//! hundred distinct stacks stays small.

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
}

/// One frame as the user sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Frame {
    pub kind: FrameKind,
    /// Function name (demangled); `[module+0xoffset]` when it could not be symbolized.
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// The module of a native frame; `None` for Python, kernel and synthetic frames.
    pub module: Option<Module>,
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

/// Distinct stack + labels, and how many samples hit it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StackCount {
    /// Leaf first (pprof order). Starts with the sampled function, ends at the thread's root, then the synthetic
    /// context frames (thread, process) if the aggregator added them.
    pub frames: Vec<FrameId>,
    pub labels: Vec<Label>,
    pub count: u64,
}

/// Samples of one recording or upload window.
#[derive(Clone, Debug, Default)]
pub(crate) struct Profile {
    pub frames: Vec<Frame>,
    pub stacks: Vec<StackCount>,
    /// Nanoseconds of CPU time one sample stands for: 1e9 / sampling rate.
    pub period_ns: u64,
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
}
