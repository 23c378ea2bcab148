//! The last seconds of each process's samples, so a crash report can show what the process was doing before
//! it died (the main profile's window may have been uploaded or may span far more time).
//!
//! Stacks are interned (frames once, each distinct stack once): a sample costs a timestamp, a pid and a pointer.
//!
//! What is interned is rebuilt from the samples still in the window whenever it has grown to twice what the last
//! rebuild kept. A long-running agent sees new frames, stacks and label sets forever (every restart of a service
//! brings new pids and thread ids, every new code path new stacks), and the window needs only the current ones:
//! without the rebuild the tables grew for the agent's whole life (the hour-long soak found the agent's memory
//! rising with every restart of the app).
use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use crate::aggregate::{Aggregator, Frame, FrameId, FrameTable, Label};

/// Interned entries (frames, stacks and label sets together) below which no rebuild happens: rebuilding costs a
/// pass over the window's samples, so it waits until it frees something worth it.
const MIN_INTERNED_BEFORE_REBUILD: usize = 4096;

struct Recent {
    time_ns: u64,
    pid: u32,
    stack: Arc<[FrameId]>,
    labels: Arc<[Label]>,
}

pub(crate) struct RecentStacks {
    window_ns: u64,
    frames: FrameTable,
    stacks: HashMap<Vec<FrameId>, Arc<[FrameId]>>,
    labels: HashMap<Vec<Label>, Arc<[Label]>>,
    samples: VecDeque<Recent>,
    /// Interned entries the last rebuild kept (see `rebuild_interned`).
    interned_after_rebuild: usize,
}

impl RecentStacks {
    pub(crate) fn new(window_ns: u64) -> Self {
        Self {
            window_ns,
            frames: FrameTable::default(),
            stacks: HashMap::new(),
            labels: HashMap::new(),
            samples: VecDeque::new(),
            interned_after_rebuild: 0,
        }
    }

    pub(crate) fn add(&mut self, time_ns: u64, pid: u32, frames: &[Frame], labels: &[Label]) {
        if self.window_ns == 0 {
            return;
        }
        let ids: Vec<FrameId> = frames.iter().map(|frame| self.frames.intern(frame)).collect();
        let stack = self.stacks.entry(ids.clone()).or_insert_with(|| ids.into()).clone();
        let labels = self.labels.entry(labels.to_vec()).or_insert_with(|| labels.into()).clone();
        self.samples.push_back(Recent { time_ns, pid, stack, labels });
        while self.samples.front().is_some_and(|s| s.time_ns + self.window_ns < time_ns) {
            self.samples.pop_front();
        }
        if self.interned() > self.interned_after_rebuild.saturating_mul(2).max(MIN_INTERNED_BEFORE_REBUILD) {
            self.rebuild_interned();
        }
    }

    /// Frames, stacks and label sets interned.
    fn interned(&self) -> usize {
        self.frames.len() + self.stacks.len() + self.labels.len()
    }

    /// Interns again only what the samples in the window refer to, and drops the rest. Amortized over the
    /// samples added since the last rebuild (at least as many entries as it keeps), it costs each sample a few
    /// interning steps.
    fn rebuild_interned(&mut self) {
        let old_frames = std::mem::take(&mut self.frames);
        self.stacks.clear();
        self.labels.clear();
        for sample in &mut self.samples {
            let ids: Vec<FrameId> = sample.stack.iter().map(|&id| self.frames.intern(old_frames.get(id))).collect();
            sample.stack = self.stacks.entry(ids.clone()).or_insert_with(|| ids.into()).clone();
            let labels = sample.labels.clone();
            sample.labels = self.labels.entry(labels.to_vec()).or_insert(labels).clone();
        }
        self.interned_after_rebuild = self.interned();
    }

    /// The samples of `pid` in the window ending at `until_ns`, aggregated.
    pub(crate) fn window(&self, pid: u32, until_ns: u64, into: &mut Aggregator) -> u64 {
        let mut count = 0;
        for sample in self.samples.iter().filter(|s| s.pid == pid && s.time_ns + self.window_ns >= until_ns) {
            into.add(sample.stack.iter().map(|&id| self.frames.get(id)), sample.labels.to_vec());
            count += 1;
        }
        count
    }

    /// Drops the samples of a process that exited (after its crash report was written).
    pub(crate) fn forget_process(&mut self, pid: u32) {
        self.samples.retain(|s| s.pid != pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::LabelValue;

    fn frame(name: &str) -> Frame {
        Frame::native(name)
    }

    #[test]
    fn keeps_only_the_window_of_the_asked_process() {
        let second = 1_000_000_000;
        let mut recent = RecentStacks::new(30 * second);
        recent.add(0, 1, &[frame("old")], &[]);
        recent.add(40 * second, 1, &[frame("hot"), frame("main")], &[]);
        recent.add(41 * second, 1, &[frame("hot"), frame("main")], &[]);
        recent.add(41 * second, 2, &[frame("other")], &[]);
        let mut aggregator = Aggregator::new(10);
        assert_eq!(recent.window(1, 41 * second, &mut aggregator), 2);
        let profile = aggregator.take();
        assert_eq!(profile.stacks.len(), 1);
        assert_eq!(profile.stacks[0].count, 2);
        assert!(profile.frames.iter().all(|f| &*f.function != "old" && &*f.function != "other"));
        recent.forget_process(1);
        assert_eq!(recent.window(1, 41 * second, &mut Aggregator::new(10)), 0);
    }

    /// Hours of new stacks and new threads (a service restarted again and again) keep the interned tables to what
    /// the window holds, and the window's samples keep their stacks and labels through every rebuild.
    #[test]
    fn interned_stacks_and_labels_follow_the_window() {
        let second = 1_000_000_000;
        let mut recent = RecentStacks::new(10 * second);
        let label = |tid: u32| vec![Label { key: "thread_id", value: LabelValue::Str(tid.to_string()) }];
        // 100 samples a second for an hour, each second a new thread and three new functions.
        for at in 0..360_000u64 {
            let t = at / 100;
            let (leaf, caller) = (frame(&format!("leaf_{t}")), frame(&format!("caller_{}", t % 7)));
            recent.add(at * second / 100, 1, &[leaf, caller, frame(&format!("main_{t}"))], &label(t as u32));
        }
        assert!(recent.interned() <= 2 * MIN_INTERNED_BEFORE_REBUILD, "{} interned entries", recent.interned());
        let mut aggregator = Aggregator::new(10);
        let last = 359_999 * second / 100;
        assert_eq!(recent.window(1, last, &mut aggregator), 1001);
        let profile = aggregator.take();
        let newest = profile.stacks.iter().find(|s| profile.frame(s.frames[0]).function.as_ref() == "leaf_3599");
        let newest = newest.expect("the newest stack");
        assert_eq!(newest.count, 100);
        let names: Vec<&str> = newest.frames.iter().map(|&id| profile.frame(id).function.as_ref()).collect();
        assert_eq!(names, ["leaf_3599", "caller_1", "main_3599"]);
        assert_eq!(newest.labels, label(3599));
    }
}
