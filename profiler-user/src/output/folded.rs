//! Folded ("collapsed") stacks, Brendan Gregg's text format: one `root;…;leaf count` line per distinct stack.
//! It feeds flamegraph.pl, inferno and speedscope, and is easy to grep and diff; our SVG is drawn from it too.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::aggregate::{Frame, FrameKind, Profile, ProfileKind};

/// The whole file: one line per distinct stack, sorted, newline-terminated.
pub(crate) fn render(profile: &Profile) -> String {
    let mut out = String::new();
    for line in lines(profile) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `root;…;leaf count` lines. Stacks that differ only in labels or in what the text leaves out (line numbers)
/// are merged; sorted so the same profile always gives the same file. Counts are samples for a CPU profile,
/// microseconds for off-CPU and wall-clock ones and KiB for memory ones (see [`count_unit`]).
pub(crate) fn lines(profile: &Profile) -> Vec<String> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for stack in profile.stacks.iter().filter(|s| s.count > 0) {
        let mut text = String::new();
        for &id in stack.frames.iter().rev() {
            if !text.is_empty() {
                text.push(';');
            }
            text.push_str(&frame_text(profile.frame(id)));
        }
        if text.is_empty() {
            // Still counts toward the total; a flame graph needs at least one frame to draw it.
            text.push_str("[unknown]");
        }
        *counts.entry(text).or_default() += stack.count;
    }
    let divisor = match profile.kind {
        ProfileKind::Cpu => 1,
        ProfileKind::OffCpu | ProfileKind::Wall => NS_PER_US,
        ProfileKind::Memory => BYTES_PER_KIB,
    };
    counts
        .into_iter()
        .map(|(stack, count)| (stack, count / divisor))
        .filter(|&(_, count)| count > 0)
        .map(|(stack, count)| format!("{stack} {count}"))
        .collect()
}

const NS_PER_US: u64 = 1000;
const BYTES_PER_KIB: u64 = 1024;

/// What a folded line's count is: samples (CPU profiles), microseconds (off-CPU and wall-clock profiles, whose
/// stacks carry nanoseconds: a flame graph's counts must be integers, and microseconds keep them readable) or KiB
/// (memory profiles, whose counts are bytes).
pub(crate) fn count_unit(profile: &Profile) -> &'static str {
    match profile.kind {
        ProfileKind::Cpu => "samples",
        ProfileKind::OffCpu | ProfileKind::Wall => "µs",
        ProfileKind::Memory => "KiB",
    }
}

/// How a frame reads in a folded line. Line numbers are left out on purpose: they would split one function into
/// many boxes of a flame graph. Kernel frames carry the `_[k]` suffix of `stackcollapse-perf.pl --kernel`, which
/// flame graph tools colour as kernel and strip from the label.
pub(crate) fn frame_text(frame: &Frame) -> String {
    let name = sanitize(&frame.function);
    match (frame.kind, &frame.file) {
        (FrameKind::Python, Some(file)) => format!("{name} ({})", sanitize(file)),
        (FrameKind::Kernel, _) => format!("{name}_[k]"),
        _ => name.into_owned(),
    }
}

/// `;` separates frames and a line ends the stack, so neither may appear inside a name.
fn sanitize(s: &str) -> Cow<'_, str> {
    if s.is_empty() {
        return Cow::Borrowed("[unknown]");
    }
    if !s.contains(|c: char| c == ';' || c.is_control()) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| match c {
                ';' => ',',
                c if c.is_control() => ' ',
                c => c,
            })
            .collect(),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::aggregate::{Label, LabelValue, Module, StackCount};

    fn frame(kind: FrameKind, function: &str, file: Option<&str>, line: Option<u32>) -> Frame {
        Frame {
            kind,
            function: function.into(),
            file: file.map(Into::into),
            line,
            module: (kind == FrameKind::Native).then(|| {
                Arc::new(Module { path: "/usr/bin/python3".into(), build_id: Some("aa".into()), executable: true })
            }),
            address: 0,
            inlined: false,
        }
    }

    /// One profile with every frame kind, shared with the flame graph and file tests.
    pub(crate) fn sample_profile() -> Profile {
        let mut inlined = frame(FrameKind::Native, "inlined", Some("x.c"), Some(1));
        inlined.inlined = true;
        let thread = |name: &str| vec![Label { key: "thread_name", value: LabelValue::Str(name.into()) }];
        Profile {
            kind: Default::default(),
            frames: vec![
                frame(FrameKind::Native, "leaf;weird\nname", None, None),
                inlined,
                frame(FrameKind::Native, "main", Some("main.c"), Some(5)),
                frame(FrameKind::Python, "handler", Some("app.py"), Some(3)),
                frame(FrameKind::Python, "handler", Some("app.py"), Some(9)),
                frame(FrameKind::Kernel, "do_syscall_64", None, None),
                frame(FrameKind::Context, "python3 (7)", None, None),
                frame(FrameKind::Context, "MainThread (7)", None, None),
                frame(FrameKind::Truncated, "[truncated]", None, None),
                frame(FrameKind::Python, "<lambda>", None, Some(1)),
            ],
            stacks: vec![
                StackCount { frames: vec![0, 1, 2, 3, 7, 6], labels: thread("a"), count: 2 },
                StackCount { frames: vec![0, 1, 2, 4, 7, 6], labels: thread("b"), count: 3 },
                StackCount { frames: vec![5, 9, 8, 7, 6], labels: thread("a"), count: 1 },
                StackCount { frames: vec![2, 7, 6], labels: vec![], count: 4 },
                StackCount { frames: vec![2, 7, 6], labels: vec![], count: 0 },
            ],
            period: 10_000_000,
            start_unix_ns: 0,
            duration_ns: 2_500_000_000,
        }
    }

    #[test]
    fn folded_is_root_first_merged_and_sorted() {
        assert_eq!(
            render(&sample_profile()),
            "python3 (7);MainThread (7);[truncated];<lambda>;do_syscall_64_[k] 1\n\
             python3 (7);MainThread (7);handler (app.py);main;inlined;leaf,weird name 5\n\
             python3 (7);MainThread (7);main 4\n"
        );
    }

    #[test]
    fn empty_names_and_stacks_stay_visible() {
        let profile = Profile {
            frames: vec![frame(FrameKind::Native, "", None, None)],
            stacks: vec![
                StackCount { frames: vec![0], labels: vec![], count: 1 },
                StackCount { frames: vec![], labels: vec![], count: 2 },
            ],
            ..Default::default()
        };
        assert_eq!(lines(&profile), ["[unknown] 3"]);
    }
}
