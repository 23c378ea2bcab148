//! Joins the parts of one sample into the single stack the user sees, leaf first: kernel frames (with
//! `--kernel`), native frames, a truncation marker when unwinding stopped early, then the thread and process.
use std::sync::Arc;

use crate::{
    aggregate::{Frame, FrameKind},
    unwind::Truncation,
};

/// Who was sampled: becomes the synthetic root frames.
pub struct SampleContext<'a> {
    pub process_name: &'a str,
    pub thread_name: &'a str,
}

pub fn merge(
    kernel: &[Arc<[Frame]>],
    native: &[Arc<[Frame]>],
    truncation: Option<Truncation>,
    context: &SampleContext,
) -> Vec<Frame> {
    let mut frames: Vec<Frame> = kernel.iter().chain(native).flat_map(|f| f.iter().cloned()).collect();
    if let Some(truncation) = truncation {
        frames.push(synthetic(FrameKind::Truncated, truncation_name(truncation)));
    }
    frames.push(synthetic(FrameKind::Context, context.thread_name));
    frames.push(synthetic(FrameKind::Context, context.process_name));
    frames
}

/// The frame name that marks a stack cut short; the summary counts stacks that carry one.
pub fn truncation_name(truncation: Truncation) -> &'static str {
    match truncation {
        Truncation::StackCopyEnd => "[truncated: stack deeper than the copy]",
        Truncation::UnwindError => "[truncated: no unwind info]",
        Truncation::TooDeep => "[truncated: too many frames]",
        Truncation::NoMaps => "[truncated: process gone]",
    }
}

fn synthetic(kind: FrameKind, name: &str) -> Frame {
    Frame { kind, function: name.to_owned(), file: None, line: None, module: None, address: 0, inlined: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_kernel_native_truncation_then_context() {
        let native = |name: &str| -> Arc<[Frame]> {
            Arc::from([Frame { kind: FrameKind::Native, ..synthetic(FrameKind::Native, name) }])
        };
        let kernel: Arc<[Frame]> = Arc::from([synthetic(FrameKind::Kernel, "do_syscall_64")]);
        let context = SampleContext { process_name: "app", thread_name: "worker" };
        let frames = merge(&[kernel], &[native("read"), native("main")], Some(Truncation::StackCopyEnd), &context);
        let names: Vec<&str> = frames.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(
            names,
            ["do_syscall_64", "read", "main", "[truncated: stack deeper than the copy]", "worker", "app"]
        );
        assert_eq!(frames[3].kind, FrameKind::Truncated);
        assert_eq!(frames[5].kind, FrameKind::Context);
    }
}
