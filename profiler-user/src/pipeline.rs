//! Runs every stage on each sample record: parse → unwind → symbolize → merge → aggregate, and keeps the
//! counters the status line and summary report.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use crate::{
    aggregate::{Aggregator, Label, LabelValue, Profile},
    merge::{SampleContext, merge},
    sample::{CpuSample, Sampler},
    symbolize::Symbolizer,
    unwind::Unwinder,
};

/// Counters over the whole recording.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub samples: u64,
    /// Samples whose native stack reached the thread's root.
    pub complete_stacks: u64,
    /// Records that did not parse (a kernel/userspace version mismatch).
    pub bad_records: u64,
    pub threads: HashSet<u32>,
}

pub struct Pipeline {
    unwinder: Unwinder,
    symbolizer: Symbolizer,
    aggregator: Aggregator,
    process_names: HashMap<u32, String>,
    pub stats: Stats,
}

impl Pipeline {
    pub fn new(period_ns: u64) -> Self {
        Self {
            unwinder: Unwinder::default(),
            symbolizer: Symbolizer::new(),
            aggregator: Aggregator::new(period_ns),
            process_names: HashMap::new(),
            stats: Stats::default(),
        }
    }

    /// Names the process in outputs (otherwise the sampled thread's name of its first sample is used).
    pub fn set_process_name(&mut self, pid: u32, name: &str) {
        self.process_names.insert(pid, name.to_owned());
    }

    pub fn process_record(&mut self, record: &[u8], sampler: &Sampler) {
        let sample = match CpuSample::parse(record) {
            Ok(sample) => sample,
            Err(err) => {
                if self.stats.bad_records == 0 {
                    tracing::warn!("dropping malformed sample records: {err:#}");
                }
                self.stats.bad_records += 1;
                return;
            }
        };
        self.process_sample(&sample, sampler);
    }

    fn process_sample(&mut self, sample: &CpuSample, sampler: &Sampler) {
        let native = self.unwinder.unwind(sample);
        let kernel: Vec<Arc<_>> = sample
            .kernel_stack_id
            .and_then(|id| sampler.kernel_stack(id))
            .unwrap_or_default()
            .into_iter()
            .map(|address| self.symbolizer.kernel(address))
            .collect();
        let native_frames: Vec<Arc<_>> = native.frames.iter().map(|frame| self.symbolizer.native(frame)).collect();
        let process_name = self.process_names.entry(sample.pid).or_insert_with(|| sample.comm.clone());
        let context = SampleContext { process_name, thread_name: &sample.comm };
        let frames = merge(&kernel, &native_frames, native.truncation, &context);
        let labels = vec![
            Label { key: "pid", value: LabelValue::Str(sample.pid.to_string()) },
            Label { key: "thread_id", value: LabelValue::Str(sample.tid.to_string()) },
            Label { key: "thread_name", value: LabelValue::Str(sample.comm.clone()) },
        ];
        self.aggregator.add(&frames, labels);

        self.stats.samples += 1;
        self.stats.complete_stacks += u64::from(native.truncation.is_none());
        self.stats.threads.insert(sample.tid);
    }

    /// Frees what was kept for a process that exited.
    pub fn forget_process(&mut self, pid: u32) {
        self.unwinder.forget_process(pid);
    }

    /// The aggregated samples since the last call.
    pub fn take_profile(&mut self) -> Profile {
        self.aggregator.take()
    }
}
