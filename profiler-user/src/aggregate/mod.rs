//! Stacks + labels → counts: identical samples are stored once with a count, frames are interned.
mod hash;
pub(crate) mod profile;

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use self::hash::FxBuildHasher;
pub(crate) use self::profile::*;

/// Frames stored once each, known by their index: a stack is a list of indices.
#[derive(Default)]
pub(crate) struct FrameTable {
    frames: Vec<Frame>,
    ids: HashMap<Frame, FrameId, FxBuildHasher>,
}

impl FrameTable {
    pub(crate) fn intern(&mut self, frame: &Frame) -> FrameId {
        if let Some(&id) = self.ids.get(frame) {
            return id;
        }
        let id = self.frames.len() as FrameId;
        self.frames.push(frame.clone());
        self.ids.insert(frame.clone(), id);
        id
    }

    pub(crate) fn get(&self, id: FrameId) -> &Frame {
        &self.frames[id as usize]
    }

    pub(crate) fn len(&self) -> usize {
        self.frames.len()
    }

    /// The frames in id order; the table starts empty again.
    pub(crate) fn take(&mut self) -> Vec<Frame> {
        self.ids.clear();
        std::mem::take(&mut self.frames)
    }
}

/// Accumulates samples of one window; `take` hands the window over as a [`Profile`] and starts the next.
pub(crate) struct Aggregator {
    kind: ProfileKind,
    period: u64,
    frames: FrameTable,
    stacks: HashMap<(Vec<FrameId>, Vec<Label>), u64, FxBuildHasher>,
    window_start: SystemTime,
}

impl Aggregator {
    /// A CPU profile whose samples each stand for `period` nanoseconds.
    pub(crate) fn new(period: u64) -> Self {
        Self::of_kind(ProfileKind::Cpu, period)
    }

    /// A profile of `kind` whose counts are in units of `period` (in the kind's unit: nanoseconds, bytes).
    pub(crate) fn of_kind(kind: ProfileKind, period: u64) -> Self {
        Self {
            kind,
            period,
            frames: FrameTable::default(),
            stacks: HashMap::default(),
            window_start: SystemTime::now(),
        }
    }

    /// Counts one sample of `frames` (leaf first) with `labels`.
    pub(crate) fn add<'f>(&mut self, frames: impl IntoIterator<Item = &'f Frame>, labels: Vec<Label>) {
        self.add_weighted(frames, labels, 1);
    }

    /// Adds `weight` units to the stack `frames` (leaf first) with `labels`.
    pub(crate) fn add_weighted<'f>(
        &mut self,
        frames: impl IntoIterator<Item = &'f Frame>,
        mut labels: Vec<Label>,
        weight: u64,
    ) {
        if weight == 0 {
            return;
        }
        let ids = frames.into_iter().map(|frame| self.frames.intern(frame)).collect();
        labels.sort();
        let count = self.stacks.entry((ids, labels)).or_default();
        *count = count.saturating_add(weight);
    }

    /// Adds every stack of `profile`, its count times `scale` (rounded), with `extra` labels.
    pub(crate) fn add_profile(&mut self, profile: &Profile, scale: f64, extra: &[Label]) {
        for stack in &profile.stacks {
            let frames = stack.frames.iter().map(|&id| profile.frame(id));
            let mut labels = stack.labels.clone();
            labels.extend_from_slice(extra);
            self.add_weighted(frames, labels, (stack.count as f64 * scale).round() as u64);
        }
    }

    /// Starts the window now (the samples so far stay in it): for the first window, whose start is when the
    /// targets were added, not when the aggregator was made.
    pub(crate) fn restart_window(&mut self) {
        self.window_start = SystemTime::now();
    }

    pub(crate) fn period(&self) -> u64 {
        self.period
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }

    /// The samples since the last `take` (or creation), ending the window now.
    pub(crate) fn take(&mut self) -> Profile {
        let end = SystemTime::now();
        let start = std::mem::replace(&mut self.window_start, end);
        let mut stacks: Vec<StackCount> =
            self.stacks.drain().map(|((frames, labels), count)| StackCount { frames, labels, count }).collect();
        stacks.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.frames.cmp(&b.frames)));
        Profile {
            kind: self.kind,
            frames: self.frames.take(),
            stacks,
            period: self.period,
            start_unix_ns: unix_ns(start),
            duration_ns: end.duration_since(start).unwrap_or(Duration::ZERO).as_nanos() as u64,
        }
    }
}

fn unix_ns(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(name: &str) -> Frame {
        Frame::native(name)
    }

    #[test]
    fn merges_identical_stacks_and_interns_frames() {
        let mut aggregator = Aggregator::new(10_000_000);
        let label = |tid| vec![Label { key: "thread_id", value: LabelValue::Str(tid) }];
        let (main, hot, cold) = (frame("main"), frame("hot"), frame("cold"));
        for _ in 0..3 {
            aggregator.add([&hot, &main], label("1".into()));
        }
        aggregator.add([&cold, &main], label("1".into()));
        aggregator.add([&hot, &main], label("2".into()));
        let profile = aggregator.take();
        assert_eq!(profile.frames.len(), 3);
        assert_eq!(profile.total_samples(), 5);
        assert_eq!(profile.stacks.len(), 3);
        assert_eq!(profile.stacks[0].count, 3);
        assert_eq!(&*profile.frame(profile.stacks[0].frames[0]).function, "hot");
        assert_eq!(profile.period, 10_000_000);
        assert!(aggregator.is_empty());
        assert!(aggregator.take().frames.is_empty());
    }
}
