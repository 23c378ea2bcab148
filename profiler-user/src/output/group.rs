//! `record --group-by KEY`: folded stacks and flame graphs have no labels, so the label becomes a root frame,
//! `[endpoint=earthquakes]`, above the process and thread: each value is its own tower of one flame graph (one file,
//! so the values compare at a glance; pprof keeps the label itself and needs none of this). Stacks without the
//! label go under `[endpoint: none]`.
use std::collections::HashMap;

use crate::aggregate::{label_value, Frame, FrameId, FrameKind, Profile, StackCount};

/// `profile` with a root frame per value of label `key` on every stack.
pub(crate) fn by_label(profile: &Profile, key: &str) -> Profile {
    let mut frames = profile.frames.clone();
    let mut roots: HashMap<String, FrameId> = HashMap::new();
    let stacks = profile
        .stacks
        .iter()
        .map(|stack| {
            let name = match label_value(&stack.labels, key) {
                Some(value) => format!("[{key}={value}]"),
                None => format!("[{key}: none]"),
            };
            let root = *roots.entry(name).or_insert_with_key(|name| {
                frames.push(Frame {
                    kind: FrameKind::Context,
                    function: name.as_str().into(),
                    file: None,
                    line: None,
                    module: None,
                    address: 0,
                    inlined: false,
                });
                (frames.len() - 1) as FrameId
            });
            let mut ids = stack.frames.clone();
            ids.push(root);
            StackCount { frames: ids, labels: stack.labels.clone(), count: stack.count }
        })
        .collect();
    Profile { frames, stacks, ..profile.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::{Aggregator, Label, LabelValue},
        output::folded,
    };

    #[test]
    fn each_value_is_a_root_and_stacks_without_it_have_their_own() {
        let mut aggregator = Aggregator::new(1);
        let (handler, main, process) = (
            Frame::native("handler"),
            Frame::native("main"),
            Frame { kind: FrameKind::Context, ..Frame::native("app (7)") },
        );
        let endpoint = |value: &str| vec![Label { key: "endpoint", value: LabelValue::Str(value.into()) }];
        aggregator.add([&handler, &main, &process], endpoint("quakes"));
        aggregator.add([&handler, &main, &process], endpoint("quakes"));
        aggregator.add([&handler, &main, &process], endpoint("weather"));
        aggregator.add([&main, &process], vec![]);
        let grouped = by_label(&aggregator.take(), "endpoint");
        assert_eq!(
            folded::lines(&grouped),
            [
                "[endpoint: none];app (7);main 1",
                "[endpoint=quakes];app (7);main;handler 2",
                "[endpoint=weather];app (7);main;handler 1"
            ]
        );
    }
}
