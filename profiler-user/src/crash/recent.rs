//! The last seconds of each process's samples, so a crash report can show what the process was doing before
//! it died (the main profile's window may have been uploaded or may span far more time).
//!
//! Stacks are interned (frames once, each distinct stack once): a sample costs a timestamp, a pid and a pointer.
use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use crate::aggregate::{Aggregator, Frame, FrameId, FrameTable, Label};

/// Interned frames beyond this are dropped and interning starts over (a long-running agent sees new frames
/// forever; the recent window only needs the current ones).
const MAX_INTERNED_FRAMES: usize = 200_000;

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
}

impl RecentStacks {
    pub(crate) fn new(window_ns: u64) -> Self {
        Self {
            window_ns,
            frames: FrameTable::default(),
            stacks: HashMap::new(),
            labels: HashMap::new(),
            samples: VecDeque::new(),
        }
    }

    pub(crate) fn add(&mut self, time_ns: u64, pid: u32, frames: &[Frame], labels: &[Label]) {
        if self.window_ns == 0 {
            return;
        }
        if self.frames.len() > MAX_INTERNED_FRAMES {
            self.clear();
        }
        let ids: Vec<FrameId> = frames.iter().map(|frame| self.frames.intern(frame)).collect();
        let stack = self.stacks.entry(ids.clone()).or_insert_with(|| ids.into()).clone();
        let labels = self.labels.entry(labels.to_vec()).or_insert_with(|| labels.into()).clone();
        self.samples.push_back(Recent { time_ns, pid, stack, labels });
        while self.samples.front().is_some_and(|s| s.time_ns + self.window_ns < time_ns) {
            self.samples.pop_front();
        }
    }

    fn clear(&mut self) {
        self.frames.take();
        self.stacks.clear();
        self.labels.clear();
        self.samples.clear();
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
}
