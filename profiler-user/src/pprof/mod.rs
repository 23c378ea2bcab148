//! Encodes a [`Profile`] as a pprof protobuf, the format Pyroscope ingests and `go tool pprof` reads.
//!
//! Conventions:
//! - As the Pyroscope SDK sends CPU profiles: one sample type and the period type `cpu/nanoseconds`; `period` =
//!   `Profile::period`; each sample's value is its count × period, so values add up to CPU time. Off-CPU and
//!   wall-clock profiles are the same with the sample type `off_cpu/nanoseconds` or `wall/nanoseconds` (their
//!   counts are nanoseconds already, with a period of 1). The memory profile is `page_faults/bytes` with the
//!   period type `space/bytes` (as Go's memory profiles say); its counts are bytes already, with a period of 1.
//! - Every location has a mapping, because Pyroscope's symbolizer rejects a whole profile that has a location with
//!   `mapping_id` 0. Native frames get one mapping per module (path, build-id, range `0..u64::MAX`, offset 0, so an
//!   address is the file offset the frame carries); kernel, Python and truncation frames get synthetic mappings
//!   (`[kernel.kallsyms]`, `[python]`, `[truncated]`) marked as already symbolized.
//! - A native frame we could not symbolize (`[module+0xoffset]`) in a module with a build-id becomes a location
//!   with no lines, and its mapping gets `has_functions = false`: that is what tells pprof and Pyroscope to
//!   symbolize it themselves from the build-id. Without a build-id nobody could, so the placeholder name is kept.
//! - Inlined native frames share one location with the frame they were inlined into: `line[0]` is the innermost.
//! - Context frames (synthetic process/thread roots) are left out: pprof carries those in sample labels.

pub mod proto;

use std::collections::HashMap;
use std::io::Write;

use anyhow::Context as _;
use flate2::write::GzEncoder;
use flate2::Compression;
use prost::Message as _;

use crate::aggregate::{Frame, FrameId, FrameKind, Label, LabelValue, Module, Profile};

/// The uncompressed protobuf.
pub(crate) fn encode(profile: &Profile) -> Vec<u8> {
    to_proto(profile).encode_to_vec()
}

/// The gzipped protobuf, as pprof files are stored and Pyroscope expects them.
pub(crate) fn encode_gzip(profile: &Profile) -> anyhow::Result<Vec<u8>> {
    let raw = encode(profile);
    let mut gz = GzEncoder::new(Vec::with_capacity(raw.len() / 4), Compression::default());
    gz.write_all(&raw).context("gzip-compressing the pprof profile")?;
    gz.finish().context("gzip-compressing the pprof profile")
}

/// The pprof message for `profile`, with ids assigned in first-use order so the output is deterministic.
pub(crate) fn to_proto(profile: &Profile) -> proto::Profile {
    let mut b = Builder::default();
    b.string("");
    let unit = b.string(profile.kind.unit());
    let sample_type = proto::ValueType { r#type: b.string(profile.kind.sample_type()), unit };
    let period_type = proto::ValueType { r#type: b.string(profile.kind.period_type()), unit };
    // pprof takes the first mapping for the profile's main binary (`go tool pprof` prints it as `File:`).
    if let Some(main) = main_binary(profile) {
        b.mapping_of(MappingKey::Module(main));
    }
    for stack in &profile.stacks {
        let location_id = b.stack(profile, &stack.frames);
        let label = stack.labels.iter().map(|l| b.label(l)).collect();
        let value = stack.count.saturating_mul(profile.period);
        b.out.sample.push(proto::Sample { location_id, value: vec![i64::try_from(value).unwrap_or(i64::MAX)], label });
    }
    let mut out = b.out;
    out.default_sample_type = sample_type.r#type;
    out.sample_type = vec![sample_type];
    out.period_type = Some(period_type);
    out.period = i64::try_from(profile.period).unwrap_or(i64::MAX);
    out.time_nanos = i64::try_from(profile.start_unix_ns).unwrap_or(i64::MAX);
    out.duration_nanos = i64::try_from(profile.duration_ns).unwrap_or(i64::MAX);
    out.string_table = b.strings.into_iter().map(str::to_owned).collect();
    out
}

/// The executable in the most samples' stacks (ties: the first path in order), if any stack has one.
fn main_binary(profile: &Profile) -> Option<&Module> {
    let mut samples: HashMap<&Module, u64> = HashMap::new();
    for stack in &profile.stacks {
        let mut executables: Vec<&Module> = stack
            .frames
            .iter()
            .filter_map(|&id| profile.frame(id).module.as_deref())
            .filter(|module| module.executable)
            .collect();
        executables.sort();
        executables.dedup();
        for module in executables {
            let count = samples.entry(module).or_default();
            *count = count.saturating_add(stack.count);
        }
    }
    samples.into_iter().max_by(|(a, a_count), (b, b_count)| a_count.cmp(b_count).then(b.cmp(a))).map(|(m, _)| m)
}

#[derive(Clone, Copy, Hash, PartialEq, Eq)]
enum MappingKey<'p> {
    Module(&'p Module),
    Synthetic(&'static str),
}

/// (mapping id, address, [(function id, line)] innermost first).
type LocationKey = (u64, u64, Vec<(u64, i64)>);

#[derive(Default)]
struct Builder<'p> {
    out: proto::Profile,
    strings: Vec<&'p str>,
    string_ids: HashMap<&'p str, i64>,
    mappings: HashMap<MappingKey<'p>, u64>,
    /// Keyed by (name, filename) string ids: the line number lives in `Line`, so one function has many lines.
    functions: HashMap<(i64, i64), u64>,
    locations: HashMap<LocationKey, u64>,
}

impl<'p> Builder<'p> {
    fn string(&mut self, s: &'p str) -> i64 {
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = self.strings.len() as i64;
        self.strings.push(s);
        self.string_ids.insert(s, id);
        id
    }

    /// Location ids of a leaf-first stack, leaf first.
    fn stack(&mut self, profile: &'p Profile, frames: &[FrameId]) -> Vec<u64> {
        let mut ids = Vec::with_capacity(frames.len());
        // Frames that end up on one location: inlined callees, then the frame they were inlined into.
        let mut group: Vec<&'p Frame> = Vec::new();
        for frame in frames.iter().map(|&id| profile.frame(id)) {
            if frame.kind == FrameKind::Context {
                continue;
            }
            let inlined_into_this = group.last().is_some_and(|inner| inlined_into(inner, frame));
            if !inlined_into_this && !group.is_empty() {
                ids.push(self.location(&group));
                group.clear();
            }
            group.push(frame);
        }
        if !group.is_empty() {
            ids.push(self.location(&group));
        }
        ids
    }

    /// `group` is innermost first; the last frame is the one actually at the address.
    fn location(&mut self, group: &[&'p Frame]) -> u64 {
        let outer = group[group.len() - 1];
        let mapping_id = self.mapping(outer);
        let lines: Vec<(u64, i64)> = if group.len() == 1 && server_can_symbolize(outer) {
            Vec::new()
        } else {
            group.iter().map(|f| (self.function(f), f.line.map_or(0, i64::from))).collect()
        };
        let key = (mapping_id, outer.address, lines);
        if let Some(&id) = self.locations.get(&key) {
            return id;
        }

        let (_, address, lines) = key.clone();
        let resolved = !lines.is_empty();
        let mapping = &mut self.out.mapping[mapping_id as usize - 1];
        mapping.has_functions &= resolved;
        mapping.has_filenames &= resolved && group.iter().all(|f| f.file.is_some());
        mapping.has_line_numbers &= resolved && group.iter().all(|f| f.line.is_some());
        mapping.has_inline_frames |= lines.len() > 1;

        let id = self.out.location.len() as u64 + 1;
        self.out.location.push(proto::Location {
            id,
            mapping_id,
            address,
            line: lines.into_iter().map(|(function_id, line)| proto::Line { function_id, line, column: 0 }).collect(),
            is_folded: false,
        });
        self.locations.insert(key, id);
        id
    }

    fn mapping(&mut self, frame: &'p Frame) -> u64 {
        let key = match (&frame.module, frame.kind) {
            (Some(module), _) => MappingKey::Module(module),
            // The name perf uses; pprof recognises it as the kernel.
            (None, FrameKind::Kernel) => MappingKey::Synthetic("[kernel.kallsyms]"),
            (None, FrameKind::Python) => MappingKey::Synthetic("[python]"),
            (None, FrameKind::Truncated) => MappingKey::Synthetic("[truncated]"),
            (None, _) => MappingKey::Synthetic("[unknown]"),
        };
        self.mapping_of(key)
    }

    fn mapping_of(&mut self, key: MappingKey<'p>) -> u64 {
        if let Some(&id) = self.mappings.get(&key) {
            return id;
        }
        let (filename, build_id) = match key {
            MappingKey::Module(m) => (self.string(&m.path), m.build_id.as_deref().map_or(0, |b| self.string(b))),
            MappingKey::Synthetic(name) => (self.string(name), 0),
        };
        let id = self.out.mapping.len() as u64 + 1;
        self.out.mapping.push(proto::Mapping {
            id,
            memory_start: 0,
            memory_limit: u64::MAX,
            file_offset: 0,
            filename,
            build_id,
            // Narrowed by each new location of this mapping (see `location`).
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: false,
        });
        self.mappings.insert(key, id);
        id
    }

    fn function(&mut self, frame: &'p Frame) -> u64 {
        let name = self.string(&frame.function);
        let filename = frame.file.as_deref().map_or(0, |f| self.string(f));
        if let Some(&id) = self.functions.get(&(name, filename)) {
            return id;
        }
        let id = self.out.function.len() as u64 + 1;
        self.out.function.push(proto::Function {
            id,
            name,
            // We only have the demangled name.
            system_name: name,
            filename,
            start_line: 0,
        });
        self.functions.insert((name, filename), id);
        id
    }

    fn label(&mut self, label: &'p Label) -> proto::Label {
        let key = self.string(label.key);
        let LabelValue::Str(s) = &label.value;
        proto::Label { key, str: self.string(s), ..Default::default() }
    }
}

/// Whether `inner`, the frame just above `outer` in a stack, was inlined into it.
fn inlined_into(inner: &Frame, outer: &Frame) -> bool {
    inner.kind == FrameKind::Native && inner.inlined && outer.kind == FrameKind::Native && inner.module == outer.module
}

/// A native frame symbolization left as `[module+0xoffset]`, in a module a server can look up by build-id.
fn server_can_symbolize(frame: &Frame) -> bool {
    let f = &frame.function;
    frame.kind == FrameKind::Native
        && frame.file.is_none()
        && f.starts_with('[')
        && f.ends_with(']')
        && f.contains("+0x")
        && frame.module.as_ref().is_some_and(|m| m.build_id.is_some())
}

#[cfg(test)]
mod tests {
    use std::{io::Read, sync::Arc};

    use flate2::read::GzDecoder;

    use super::*;
    use crate::aggregate::{ProfileKind, StackCount};

    fn native(function: &str, module: &Module, address: u64, line: Option<u32>, inlined: bool) -> Frame {
        Frame {
            kind: FrameKind::Native,
            function: function.into(),
            file: line.map(|_| "foo.c".into()),
            line,
            module: Some(Arc::new(module.clone())),
            address,
            inlined,
        }
    }

    fn other(kind: FrameKind, function: &str, file: Option<&str>, line: Option<u32>, address: u64) -> Frame {
        Frame {
            kind,
            function: function.into(),
            file: file.map(Into::into),
            line,
            module: None,
            address,
            inlined: false,
        }
    }

    fn libfoo() -> Module {
        Module { path: "/usr/lib/libfoo.so".into(), build_id: Some("abcd01".into()), executable: false }
    }

    /// Frame ids: 0 inlined into 1 (libfoo), 2 Python, 3 unsymbolized with build-id, 4 unsymbolized without,
    /// 5 kernel, 6 truncated, 7 process, 8 thread.
    fn sample_profile() -> Profile {
        let libfoo = libfoo();
        let libbar = Module { path: "/usr/lib/libbar.so".into(), build_id: Some("ef01".into()), executable: false };
        let nobid = Module { path: "/opt/nobid.so".into(), build_id: None, executable: false };
        let labels = vec![
            Label { key: "thread_name", value: LabelValue::Str("MainThread".into()) },
            Label { key: "thread_id", value: LabelValue::Str("42".into()) },
        ];
        Profile {
            kind: Default::default(),
            frames: vec![
                native("inlined_callee", &libfoo, 0x1234, Some(10), true),
                native("caller", &libfoo, 0x1234, Some(20), false),
                other(FrameKind::Python, "handler", Some("app.py"), Some(42), 0),
                native("[libbar.so+0x99]", &libbar, 0x99, None, false),
                native("[nobid.so+0x10]", &nobid, 0x10, None, false),
                other(FrameKind::Kernel, "do_syscall_64", None, None, 0xffff_ffff_8100_0000),
                other(FrameKind::Truncated, "[truncated]", None, None, 0),
                other(FrameKind::Context, "process uvicorn (7)", None, None, 0),
                other(FrameKind::Context, "thread MainThread (42)", None, None, 0),
            ],
            stacks: vec![
                StackCount { frames: vec![5, 0, 1, 2, 6, 8, 7], labels: labels.clone(), count: 3 },
                StackCount { frames: vec![3, 4, 2, 8, 7], labels: labels.clone(), count: 2 },
                StackCount { frames: vec![0, 1, 8, 7], labels, count: 1 },
            ],
            period: 10_000_000,
            start_unix_ns: 1_700_000_000_000_000_000,
            duration_ns: 30_000_000_000,
        }
    }

    struct Decoded(proto::Profile);

    impl Decoded {
        fn s(&self, i: i64) -> &str {
            &self.0.string_table[i as usize]
        }
        fn location(&self, id: u64) -> &proto::Location {
            &self.0.location[id as usize - 1]
        }
        fn function(&self, id: u64) -> &proto::Function {
            &self.0.function[id as usize - 1]
        }
        fn mapping(&self, id: u64) -> &proto::Mapping {
            &self.0.mapping[id as usize - 1]
        }
        /// Function names of one location, innermost first.
        fn names(&self, location_id: u64) -> Vec<&str> {
            self.location(location_id).line.iter().map(|l| self.s(self.function(l.function_id).name)).collect()
        }
        fn mapping_file(&self, location_id: u64) -> &str {
            self.s(self.mapping(self.location(location_id).mapping_id).filename)
        }
    }

    fn decode(bytes: &[u8]) -> Decoded {
        let p = proto::Profile::decode(bytes).expect("valid protobuf");
        assert_eq!(p.string_table[0], "");
        for (i, l) in p.location.iter().enumerate() {
            assert_eq!(l.id, i as u64 + 1, "ids are dense so consumers can index by id - 1");
        }
        for (i, m) in p.mapping.iter().enumerate() {
            assert_eq!(m.id, i as u64 + 1);
        }
        for (i, f) in p.function.iter().enumerate() {
            assert_eq!(f.id, i as u64 + 1);
        }
        Decoded(p)
    }

    #[test]
    fn the_executable_in_most_samples_is_the_first_mapping() {
        let mut profile = sample_profile();
        let python = Module { path: "/usr/bin/python3.11".into(), build_id: None, executable: true };
        let other = Module { path: "/usr/bin/helper".into(), build_id: None, executable: true };
        let main = profile.frames.len() as u32;
        profile.frames.push(native("_start", &python, 0x40, None, false));
        profile.frames.push(native("_start", &other, 0x40, None, false));
        profile.stacks[0].frames.insert(5, main); // 3 samples
        profile.stacks[2].frames.insert(2, main + 1); // 1 sample
        let out = Decoded(to_proto(&profile));
        assert_eq!(out.s(out.0.mapping[0].filename), "/usr/bin/python3.11");
        // Without an executable in any stack, mappings stay in first-use order.
        let out = Decoded(to_proto(&sample_profile()));
        assert_eq!(out.s(out.0.mapping[0].filename), "[kernel.kallsyms]");
    }

    #[test]
    fn header_follows_the_cpu_convention() {
        let d = decode(&encode(&sample_profile()));
        let p = &d.0;
        assert_eq!(p.sample_type.len(), 1);
        assert_eq!((d.s(p.sample_type[0].r#type), d.s(p.sample_type[0].unit)), ("cpu", "nanoseconds"));
        let pt = p.period_type.as_ref().expect("period type");
        assert_eq!((d.s(pt.r#type), d.s(pt.unit)), ("cpu", "nanoseconds"));
        assert_eq!(p.period, 10_000_000);
        assert_eq!(d.s(p.default_sample_type), "cpu");
        assert_eq!(p.time_nanos, 1_700_000_000_000_000_000);
        assert_eq!(p.duration_nanos, 30_000_000_000);
        let values: Vec<_> = p.sample.iter().map(|s| s.value.clone()).collect();
        assert_eq!(values, [vec![30_000_000], vec![20_000_000], vec![10_000_000]]);
    }

    #[test]
    fn stacks_become_locations_leaf_first() {
        let d = decode(&encode(&sample_profile()));
        let s = &d.0.sample;
        // Kernel, libfoo (with its inlined callee), Python, truncated; the two context frames are gone.
        assert_eq!(s[0].location_id.len(), 4);
        let names: Vec<_> = s[0].location_id.iter().map(|&id| d.names(id)).collect();
        assert_eq!(
            names,
            [vec!["do_syscall_64"], vec!["inlined_callee", "caller"], vec!["handler"], vec!["[truncated]"]]
        );
        assert!(d
            .0
            .function
            .iter()
            .all(|f| !d.s(f.name).starts_with("process ") && !d.s(f.name).starts_with("thread ")));
        // Same frames, same location.
        assert_eq!(s[2].location_id, s[0].location_id[1..2]);
        assert_eq!(s[1].location_id[2..], s[0].location_id[2..3]);
    }

    #[test]
    fn inlined_frames_share_the_callers_location() {
        let d = decode(&encode(&sample_profile()));
        let loc = d.location(d.0.sample[0].location_id[1]);
        assert_eq!(loc.address, 0x1234);
        let lines: Vec<_> = loc.line.iter().map(|l| (d.s(d.function(l.function_id).name), l.line)).collect();
        assert_eq!(lines, [("inlined_callee", 10), ("caller", 20)]);
        assert_eq!(d.s(d.function(loc.line[0].function_id).filename), "foo.c");
        let m = d.mapping(loc.mapping_id);
        assert_eq!(d.s(m.filename), "/usr/lib/libfoo.so");
        assert_eq!(d.s(m.build_id), "abcd01");
        assert_eq!((m.memory_start, m.memory_limit, m.file_offset), (0, u64::MAX, 0));
        assert!(m.has_functions && m.has_filenames && m.has_line_numbers && m.has_inline_frames);
    }

    #[test]
    fn unsymbolized_frames_are_left_to_the_server_when_it_can() {
        let d = decode(&encode(&sample_profile()));
        let ids = &d.0.sample[1].location_id;
        let bar = d.location(ids[0]);
        assert!(bar.line.is_empty());
        assert_eq!(bar.address, 0x99);
        let m = d.mapping(bar.mapping_id);
        assert_eq!((d.s(m.filename), d.s(m.build_id)), ("/usr/lib/libbar.so", "ef01"));
        assert!(!m.has_functions && !m.has_filenames && !m.has_line_numbers);
        // No build-id: keep our placeholder, nobody else could do better.
        assert_eq!(d.names(ids[1]), ["[nobid.so+0x10]"]);
        let m = d.mapping(d.location(ids[1]).mapping_id);
        assert_eq!((d.s(m.filename), m.build_id), ("/opt/nobid.so", 0));
        assert!(m.has_functions && !m.has_filenames && !m.has_line_numbers);
    }

    #[test]
    fn non_native_frames_get_synthetic_mappings() {
        let d = decode(&encode(&sample_profile()));
        let ids = &d.0.sample[0].location_id;
        assert_eq!(d.mapping_file(ids[0]), "[kernel.kallsyms]");
        assert_eq!(d.location(ids[0]).address, 0xffff_ffff_8100_0000);
        assert_eq!(d.mapping_file(ids[2]), "[python]");
        assert_eq!(d.mapping_file(ids[3]), "[truncated]");
        let python = d.location(ids[2]);
        assert_eq!(python.line[0].line, 42);
        assert_eq!(d.s(d.function(python.line[0].function_id).filename), "app.py");
        assert!(d.0.location.iter().all(|l| l.mapping_id != 0));
        assert!(d.mapping(python.mapping_id).has_functions);
    }

    #[test]
    fn functions_locations_and_mappings_are_deduplicated() {
        let d = decode(&encode(&sample_profile()));
        // do_syscall_64, inlined_callee, caller, handler, [truncated], [nobid.so+0x10].
        assert_eq!(d.0.function.len(), 6);
        // kernel, libfoo, python, truncated, libbar, nobid.
        assert_eq!(d.0.location.len(), 6);
        assert_eq!(d.0.mapping.len(), 6);
        let mut strings = d.0.string_table.clone();
        strings.sort();
        strings.dedup();
        assert_eq!(strings.len(), d.0.string_table.len());
    }

    #[test]
    fn labels_are_strings() {
        let d = decode(&encode(&sample_profile()));
        let labels: Vec<_> = d.0.sample[0].label.iter().map(|l| (d.s(l.key), d.s(l.str), l.num)).collect();
        assert_eq!(labels, [("thread_name", "MainThread", 0), ("thread_id", "42", 0)]);
    }

    #[test]
    fn gzip_holds_the_same_protobuf() {
        let profile = sample_profile();
        let gz = encode_gzip(&profile).expect("gzip");
        assert_eq!(&gz[..2], [0x1f, 0x8b]);
        let mut raw = Vec::new();
        GzDecoder::new(&gz[..]).read_to_end(&mut raw).expect("gunzip");
        assert_eq!(raw, encode(&profile));
    }

    #[test]
    fn empty_profile_is_still_valid() {
        let d = decode(&encode(&Profile { period: 10_000_000, ..Default::default() }));
        assert!(d.0.sample.is_empty() && d.0.location.is_empty());
        assert_eq!(d.0.period, 10_000_000);
    }

    #[test]
    fn off_cpu_and_wall_profiles_have_their_own_sample_type_in_nanoseconds() {
        for (kind, name) in [(ProfileKind::OffCpu, "off_cpu"), (ProfileKind::Wall, "wall")] {
            let profile = Profile { kind, period: 1, ..sample_profile() };
            let d = decode(&encode(&profile));
            let sample_type = &d.0.sample_type[0];
            assert_eq!((d.s(sample_type.r#type), d.s(sample_type.unit)), (name, "nanoseconds"));
            assert_eq!(d.s(d.0.default_sample_type), name);
            let total: i64 = d.0.sample.iter().map(|sample| sample.value[0]).sum();
            assert_eq!(total as u64, profile.total_samples(), "values are the counts: nanoseconds already");
        }
    }

    #[test]
    fn memory_profiles_are_bytes_of_page_faults_with_a_space_period() {
        let profile = Profile { kind: ProfileKind::Memory, period: 1, ..sample_profile() };
        let d = decode(&encode(&profile));
        let sample_type = &d.0.sample_type[0];
        assert_eq!((d.s(sample_type.r#type), d.s(sample_type.unit)), ("page_faults", "bytes"));
        let period_type = d.0.period_type.as_ref().expect("period type");
        assert_eq!((d.s(period_type.r#type), d.s(period_type.unit)), ("space", "bytes"));
        let total: i64 = d.0.sample.iter().map(|sample| sample.value[0]).sum();
        assert_eq!(total as u64, profile.total(), "values are the counts: bytes already");
    }
}
