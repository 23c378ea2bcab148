//! Splits one window's profile into one profile per service: Pyroscope files a profile under one
//! `service_name`, so two different programs profiled together must be two uploads.
//!
//! The caller says which service a stack belongs to; [`pid_of`] and [`process_name_of`] read what the pipeline
//! records about the sampled process (its `pid` label, its synthetic process frame).
use std::collections::{BTreeMap, HashMap};

use crate::aggregate::{label_value, FrameId, FrameKind, Profile, StackCount};

/// The pid label the pipeline puts on every sample.
const PID_LABEL: &str = "pid";

/// Sample labels that name one process or thread. Pyroscope makes a series of every distinct set of sample labels
/// (its distributor splits each profile by them), so uploaded they would make a series per thread of every process,
/// renewed with each restart and each new worker thread: a cardinality the user pays for and cannot query usefully.
/// Uploads leave them out (the service already stands for the process); local profiles keep them.
const PER_PROCESS_LABELS: [&str; 2] = [PID_LABEL, "thread_id"];

/// `profile` without [`PER_PROCESS_LABELS`], stacks that become equal merged (thread name and GIL stay).
pub(crate) fn for_upload(profile: &Profile) -> Profile {
    let mut merged: HashMap<(&[FrameId], Vec<&crate::aggregate::Label>), usize> = HashMap::new();
    let mut stacks: Vec<StackCount> = Vec::with_capacity(profile.stacks.len());
    for stack in &profile.stacks {
        let kept: Vec<&crate::aggregate::Label> =
            stack.labels.iter().filter(|label| !PER_PROCESS_LABELS.contains(&label.key)).collect();
        let labels = kept.iter().map(|&label| label.clone()).collect();
        match merged.entry((stack.frames.as_slice(), kept)) {
            std::collections::hash_map::Entry::Occupied(at) => stacks[*at.get()].count += stack.count,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(stacks.len());
                stacks.push(StackCount { frames: stack.frames.clone(), labels, count: stack.count });
            }
        }
    }
    Profile {
        kind: profile.kind,
        frames: profile.frames.clone(),
        stacks,
        period: profile.period,
        start_unix_ns: profile.start_unix_ns,
        duration_ns: profile.duration_ns,
    }
}

/// `(service, profile)` pairs, by service name, each with only the frames its stacks use.
pub(crate) fn by_service(
    profile: Profile,
    service_of: impl Fn(&Profile, &StackCount) -> String,
) -> Vec<(String, Profile)> {
    let services: Vec<String> = profile.stacks.iter().map(|stack| service_of(&profile, stack)).collect();
    if services.windows(2).all(|pair| pair[0] == pair[1]) {
        // The common case (one program, or --app-name): nothing to split.
        return services.into_iter().next().map(|service| (service, profile)).into_iter().collect();
    }

    let mut split: BTreeMap<&str, (Profile, HashMap<FrameId, FrameId>)> = BTreeMap::new();
    for (stack, service) in profile.stacks.iter().zip(&services) {
        let (out, ids) = split.entry(service).or_insert_with(|| {
            let empty = Profile {
                kind: profile.kind,
                frames: Vec::new(),
                stacks: Vec::new(),
                period: profile.period,
                start_unix_ns: profile.start_unix_ns,
                duration_ns: profile.duration_ns,
            };
            (empty, HashMap::new())
        });
        let frames = stack
            .frames
            .iter()
            .map(|&id| {
                *ids.entry(id).or_insert_with(|| {
                    out.frames.push(profile.frame(id).clone());
                    (out.frames.len() - 1) as FrameId
                })
            })
            .collect();
        out.stacks.push(StackCount { frames, labels: stack.labels.clone(), count: stack.count });
    }
    split.into_iter().map(|(service, (profile, _))| (service.to_owned(), profile)).collect()
}

/// The sampled process's pid, from the stack's `pid` label.
pub(crate) fn pid_of(stack: &StackCount) -> Option<u32> {
    label_value(&stack.labels, PID_LABEL)?.parse().ok()
}

/// The sampled process's name: the outermost synthetic frame, which the pipeline names after the process.
pub(crate) fn process_name_of<'p>(profile: &'p Profile, stack: &StackCount) -> Option<&'p str> {
    let root = profile.frame(*stack.frames.last()?);
    (root.kind == FrameKind::Context).then_some(&*root.function)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{Aggregator, Frame, Label, LabelValue};

    fn frame(kind: FrameKind, name: &str) -> Frame {
        Frame { kind, function: name.into(), file: None, line: None, module: None, address: 0, inlined: false }
    }

    fn pid(pid: u32) -> Vec<Label> {
        vec![Label { key: "pid", value: LabelValue::Str(pid.to_string()) }]
    }

    fn names(profile: &Profile) -> Vec<Vec<&str>> {
        profile.stacks.iter().map(|s| s.frames.iter().map(|&id| &*profile.frame(id).function).collect()).collect()
    }

    fn by_pid(services: &HashMap<u32, String>) -> impl Fn(&Profile, &StackCount) -> String + '_ {
        move |profile, stack| {
            pid_of(stack)
                .and_then(|pid| services.get(&pid).cloned())
                .or_else(|| process_name_of(profile, stack).map(str::to_owned))
                .unwrap_or_else(|| "unknown".into())
        }
    }

    #[test]
    fn uploads_leave_out_pid_and_thread_id_and_merge_what_becomes_equal() {
        let mut aggregator = Aggregator::new(10_000_000);
        let (hot, proc) = (frame(FrameKind::Native, "hot"), frame(FrameKind::Context, "web"));
        let labels = |pid: u32, tid: u32, gil: &str| {
            vec![
                Label { key: "pid", value: LabelValue::Str(pid.to_string()) },
                Label { key: "thread_id", value: LabelValue::Str(tid.to_string()) },
                Label { key: "thread_name", value: LabelValue::Str("worker".into()) },
                Label { key: "gil", value: LabelValue::Str(gil.into()) },
            ]
        };
        aggregator.add([&hot, &proc], labels(10, 11, "held"));
        aggregator.add([&hot, &proc], labels(10, 12, "held"));
        aggregator.add([&hot, &proc], labels(20, 21, "held"));
        aggregator.add([&hot, &proc], labels(20, 21, "released"));
        let profile = aggregator.take();
        assert_eq!(profile.stacks.len(), 4);
        let upload = for_upload(&profile);
        assert_eq!(upload.total_samples(), 4);
        let mut kept: Vec<(Vec<&str>, u64)> =
            upload.stacks.iter().map(|s| (s.labels.iter().map(|l| l.key).collect(), s.count)).collect();
        kept.sort();
        assert_eq!(kept, [(vec!["gil", "thread_name"], 1), (vec!["gil", "thread_name"], 3)]);
    }

    #[test]
    fn splits_by_service_and_reindexes_frames() {
        let mut aggregator = Aggregator::new(10_000_000);
        let native = |name| frame(FrameKind::Native, name);
        let (main, web, job, shared) = (native("main"), native("web"), native("job"), native("libc_hot"));
        let (web_proc, job_proc, forked) = (
            frame(FrameKind::Context, "web"),
            frame(FrameKind::Context, "worker"),
            frame(FrameKind::Context, "worker"),
        );
        aggregator.add([&web, &main, &web_proc], pid(10));
        aggregator.add([&shared, &web, &main, &web_proc], pid(11));
        aggregator.add([&job, &main, &job_proc], pid(20));
        aggregator.add([&job, &main, &job_proc], pid(20));
        // A child forked and gone between two looks at the targets: named by its process frame.
        aggregator.add([&shared, &job, &forked], pid(99));
        let profile = aggregator.take();
        let services: HashMap<u32, String> =
            [(10, "web".to_owned()), (11, "web".to_owned()), (20, "worker".to_owned())].into();
        let split = by_service(profile.clone(), by_pid(&services));
        assert_eq!(split.len(), 2);
        let (web_name, web_profile) = &split[0];
        let (worker_name, worker_profile) = &split[1];
        assert_eq!((web_name.as_str(), worker_name.as_str()), ("web", "worker"));
        assert_eq!(web_profile.total_samples(), 2);
        assert_eq!(worker_profile.total_samples(), 3);
        assert_eq!(worker_profile.frames.len(), 4, "only the frames it uses (the two process frames are one)");
        let mut worker_stacks = names(worker_profile);
        worker_stacks.sort();
        assert_eq!(worker_stacks, [vec!["job", "main", "worker"], vec!["libc_hot", "job", "worker"]]);
        let mut web_stacks = names(web_profile);
        web_stacks.sort();
        assert_eq!(web_stacks, [vec!["libc_hot", "web", "main", "web"], vec!["web", "main", "web"]]);
        assert_eq!(web_profile.start_unix_ns, profile.start_unix_ns);
        assert_eq!(web_profile.duration_ns, profile.duration_ns);
        assert_eq!(web_profile.period, 10_000_000);
    }

    #[test]
    fn one_service_is_passed_through_whole() {
        let mut aggregator = Aggregator::new(1);
        aggregator.add([&frame(FrameKind::Native, "a")], pid(1));
        aggregator.add([&frame(FrameKind::Native, "b")], pid(2));
        let profile = aggregator.take();
        let split = by_service(profile, |_, _| "app".to_owned());
        assert_eq!(split.len(), 1);
        assert_eq!(split[0].0, "app");
        assert_eq!(split[0].1.total_samples(), 2);
        assert_eq!(split[0].1.frames.len(), 2);
        assert!(by_service(Profile::default(), |_, _| "app".to_owned()).is_empty());
    }

    #[test]
    fn reads_pid_and_process_name() {
        let mut aggregator = Aggregator::new(1);
        aggregator.add([&frame(FrameKind::Native, "f"), &frame(FrameKind::Context, "uvicorn")], pid(42));
        aggregator.add([&frame(FrameKind::Native, "f")], vec![]);
        let profile = aggregator.take();
        let with_pid = profile.stacks.iter().find(|s| !s.labels.is_empty()).unwrap();
        let without = profile.stacks.iter().find(|s| s.labels.is_empty()).unwrap();
        assert_eq!(pid_of(with_pid), Some(42));
        assert_eq!(process_name_of(&profile, with_pid), Some("uvicorn"));
        assert_eq!((pid_of(without), process_name_of(&profile, without)), (None, None));
    }
}
