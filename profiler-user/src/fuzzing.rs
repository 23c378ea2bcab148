//! Entry points for the fuzz targets in `fuzz/`: each takes the fuzzer's bytes, feeds them to one parser the
//! project owns, and checks what the parser promises about its output, so that a wrong answer fails as loudly
//! as a panic.
//!
//! The parsers read what other processes control: /proc/PID/maps of a process mid-mmap, ELF files a target maps
//! (truncated, hand-made, being rewritten), line tables and names copied from a Python process's memory, which
//! may hold anything. Kept here, thin and in one place, rather than widening visibility across the crate.
use std::{
    fs::File,
    io::{Seek as _, Write as _},
    os::fd::AsRawFd as _,
    path::PathBuf,
    sync::Arc,
};

use profiler_common::PyCodeCopy;
use prost::Message as _;

use crate::{
    aggregate::{Frame, FrameKind, Label, LabelValue, Module, Profile, StackCount},
    pprof::{self, proto},
    process::maps,
    python::{
        code::CodeInfo,
        layout::{CodeLayout, LineFormat},
        linetable,
    },
    python::{detect, eval_ranges, thread_names},
    unwind::{cfa::CfaExpressionIndex, elf::ElfFile},
};

/// Python's thread names read from a fake interpreter's memory (python/thread_names.rs): byte 0 picks the version
/// (3.8 + (byte & 0x7f) % 7; bit 7: the types' addresses unknown, so they are checked by name), bytes 1–8 are the
/// interpreter's address, the rest is memory at 0x10_0000. Never a panic, at most 4096 names, each sanitized and
/// at most 1 KiB.
pub fn thread_names(data: &[u8]) {
    let Some(found) = thread_names_of(data) else { return };
    assert!(found.names.len() <= 4096, "{} names", found.names.len());
    for name in found.names.values() {
        assert!(name.len() <= crate::sanitize::MAX_NAME_BYTES, "a name of {} bytes", name.len());
        assert!(!name.chars().any(char::is_control), "an unescaped control character in {name:?}");
    }
}

pub(crate) fn thread_names_of(data: &[u8]) -> Option<thread_names::Found> {
    let (&selector, rest) = data.split_first()?;
    let (interp, memory) = rest.split_first_chunk::<8>()?;
    let layouts = thread_names::fake::layouts(8 + (selector & 0x7f) % 7);
    let mut fake = thread_names::fake::FakeMemory::default();
    fake.blocks.insert(thread_names::fake::FUZZ_BASE, memory.to_vec());
    // Known types at addresses no input can hold an object at, or unknown.
    let known = |address: u64| (selector & 0x80 == 0).then_some(address);
    let target = thread_names::Target {
        objects: &layouts.objects,
        code: &layouts.code,
        interp: u64::from_le_bytes(*interp),
        unicode_type: known(8),
        dict_type: known(16),
        long_type: known(24),
    };
    thread_names::read(&fake, &target, None)
}

/// `/proc/PID/maps` text: every line is either a mapping or counted as malformed, and every mapping is a
/// non-empty address range.
pub fn maps(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed = maps::parse(&text);
    let lines = text.lines().filter(|line| !line.trim().is_empty()).count();
    assert_eq!(parsed.mappings.len() + parsed.malformed_lines, lines, "a line was lost or counted twice");
    for mapping in &parsed.mappings {
        assert!(mapping.start < mapping.end, "empty or inverted range: {mapping:?}");
        assert!(!mapping.path.starts_with(' '), "path keeps the column padding: {mapping:?}");
    }
}

/// `data` in this thread's in-memory file, for the parsers that read a file: its path and the file.
fn with_memfd<T>(data: &[u8], read: impl FnOnce(&File, &std::path::Path) -> T) -> T {
    thread_local! {
        // One in-memory file per fuzzing thread, rewritten for every input: ElfFile::open maps a path.
        static MEMFD: (File, PathBuf) = {
            let name = c"profiler-fuzz-elf";
            // SAFETY: a valid NUL-terminated name and flags; the descriptor is owned by the File from here on.
            let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
            assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
            // SAFETY: `fd` was just created and nothing else owns it.
            let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
            (file, path)
        };
    }
    MEMFD.with(|(file, path)| {
        let mut file = file;
        file.set_len(0).unwrap();
        file.rewind().unwrap();
        file.write_all(data).unwrap();
        read(file, path)
    })
}

/// An ELF file as the unwinder reads it: section views stay inside the file, and the address helpers never
/// overflow.
pub fn elf(data: &[u8]) {
    with_memfd(data, |_, path| {
        let Ok(elf) = ElfFile::open(path) else { return };
        for section in [&elf.text, &elf.eh_frame, &elf.eh_frame_hdr, &elf.debug_frame].into_iter().flatten() {
            // Dereferencing checks the view lies inside the mapping (a slice index out of range panics).
            let bytes: &[u8] = &section.bytes;
            std::hint::black_box(bytes.iter().fold(0u8, |x, b| x ^ b));
        }
        let probe = data.get(..8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
        for segment in &elf.segments {
            std::hint::black_box(elf.load_bias(probe, segment.file_offset, segment.executable));
            std::hint::black_box(elf.svma_to_file_offset(segment.vaddr.wrapping_add(probe % 4096)));
        }
    });
}

/// The CFA-expression index of an ELF file (unwind/cfa.rs scans its .eh_frame or .debug_frame): building it
/// ends and never panics, and every FDE it keeps is found at its own start.
pub fn cfa(data: &[u8]) {
    with_memfd(data, |_, path| {
        let Ok(elf) = ElfFile::open(path) else { return };
        let index = CfaExpressionIndex::build(&elf);
        let probe = data.get(..8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
        std::hint::black_box((index.fde_count(), index.fde_at(probe)));
    });
}

/// Python detection's reading of an interpreter file (python/detect.rs: symbols, `Py_Version`, the evaluation
/// loop's unnamed ranges): never panics, never reads without bound; ranges are non-empty.
pub fn python_symbols(data: &[u8]) {
    with_memfd(data, |file, _| {
        let Some((_, _, ranges)) = detect::symbols_of(file) else { return };
        for range in ranges {
            assert!(range.start < range.end, "an empty or inverted range: {range:?}");
        }
    });
}

/// The evaluation-loop range finder on any code bytes and `.eh_frame_hdr` (python/eval_ranges.rs): every range
/// is non-empty and lies outside the named function.
pub fn eval_ranges(data: &[u8]) {
    let word = |at: usize| data.get(at..at + 8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
    let (start, hdr_svma) = (word(0), word(8));
    let rest = data.get(16..).unwrap_or(&[]);
    let split = rest.first().map_or(0, |&b| usize::from(b) * rest.len() / 256);
    let (code, hdr) = rest.split_at(split);
    let named = [start, hdr_svma];
    for range in eval_ranges::find(start, code, hdr, hdr_svma, &named) {
        assert!(range.start < range.end, "an empty or inverted range: {range:?}");
        assert!(!named.contains(&range.start), "a named function's range: {range:?}");
    }
}

/// Python line tables of every supported format, with any first line and any instruction offset: decoding
/// ends (no loop on a corrupt table) and never panics.
pub fn line_tables(data: &[u8]) {
    let mut input = Input(data);
    let first_line = input.u32();
    let offset = input.u64() % (1 << 20);
    let table = input.rest();
    std::hint::black_box(linetable::line_for(table, first_line, offset / 2));
    std::hint::black_box(linetable::lnotab_line(table, first_line, offset));
    std::hint::black_box(linetable::line_table_310_line(table, first_line, offset));
}

/// A code object's names and line table as the crash probe copies them from a crashing process: any bytes give
/// a name that is the copied text (or nothing), and a line for any instruction.
pub fn code_copy(data: &[u8]) {
    let mut input = Input(data);
    let lines = match input.u8() % 3 {
        0 => LineFormat::Lnotab,
        1 => LineFormat::LineTable310,
        _ => LineFormat::Locations,
    };
    let layout = CodeLayout {
        firstlineno: 0,
        filename: 0,
        name: 0,
        qualname: 0,
        linetable: 0,
        code_adaptive: u64::from(input.u16()),
        ascii_data: 0,
        compact_data: 0,
        lines,
        head_extra: 0,
        tlbc: None,
        str_kind_bit: 2,
    };
    let instr = input.u64();
    let mut raw = [0u8; size_of::<PyCodeCopy>()];
    let rest = input.rest();
    let n = rest.len().min(raw.len());
    raw[..n].copy_from_slice(&rest[..n]);
    // SAFETY: PyCodeCopy is a repr(C) struct of integers and byte arrays: every bit pattern is a valid value.
    let copy: PyCodeCopy = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
    let Some(info) = CodeInfo::from_copy(&copy, &layout) else {
        assert_eq!(copy.qualname[0], 0, "a copied qualname was refused");
        return;
    };
    assert!(!info.qualname.is_empty() && !info.qualname.contains('\0'), "bad name {:?}", info.qualname);
    std::hint::black_box(info.line(instr));
    std::hint::black_box(info.line(copy.code.wrapping_add(layout.code_adaptive).wrapping_add(instr % 4096)));
}

/// A profile of any shape → pprof: the message decodes back to itself, every id it refers to exists, and the
/// sample values add up to the profile's CPU time.
pub fn pprof(data: &[u8]) {
    let profile = profile_from(&mut Input(data));
    let message = pprof::to_proto(&profile);
    let bytes = pprof::encode(&profile);
    let decoded = proto::Profile::decode(bytes.as_slice()).expect("our own encoding decodes");
    assert!(decoded == message, "the encoding does not decode to the message");
    check_references(&decoded);
    assert_eq!(decoded.sample.len(), profile.stacks.len());
    for (sample, stack) in decoded.sample.iter().zip(&profile.stacks) {
        let ns = stack.count.saturating_mul(profile.period);
        assert_eq!(sample.value, [i64::try_from(ns).unwrap_or(i64::MAX)]);
        let shown = stack.frames.iter().filter(|&&id| profile.frame(id).kind != FrameKind::Context).count();
        let lines: usize =
            sample.location_id.iter().map(|&id| decoded.location[id as usize - 1].line.len().max(1)).sum();
        assert_eq!(lines, shown, "a frame was lost or invented");
    }
    pprof::encode_gzip(&profile).expect("gzip into memory");
}

fn check_references(p: &proto::Profile) {
    assert_eq!(p.string_table.first().map(String::as_str), Some(""), "string 0 must be empty");
    let string = |index: i64| {
        assert!(usize::try_from(index).is_ok_and(|i| i < p.string_table.len()), "string index {index} out of range")
    };
    for (i, mapping) in p.mapping.iter().enumerate() {
        assert_eq!(mapping.id, i as u64 + 1);
        string(mapping.filename);
        string(mapping.build_id);
    }
    for (i, function) in p.function.iter().enumerate() {
        assert_eq!(function.id, i as u64 + 1);
        string(function.name);
        string(function.filename);
    }
    for (i, location) in p.location.iter().enumerate() {
        assert_eq!(location.id, i as u64 + 1);
        assert!((1..=p.mapping.len() as u64).contains(&location.mapping_id), "location without a mapping");
        for line in &location.line {
            assert!((1..=p.function.len() as u64).contains(&line.function_id), "line without a function");
        }
    }
    for sample in &p.sample {
        for &id in &sample.location_id {
            assert!((1..=p.location.len() as u64).contains(&id), "sample refers to no location");
        }
        for label in &sample.label {
            string(label.key);
            string(label.str);
        }
    }
}

fn profile_from(input: &mut Input) -> Profile {
    const KINDS: [FrameKind; 5] =
        [FrameKind::Native, FrameKind::Kernel, FrameKind::Python, FrameKind::Truncated, FrameKind::Context];
    const LABEL_KEYS: [&str; 4] = ["pid", "thread_id", "thread_name", "gil"];
    let mut profile = Profile {
        period: input.u64() >> (input.u8() % 64),
        start_unix_ns: input.u64(),
        duration_ns: input.u64(),
        ..Profile::default()
    };
    for _ in 0..input.u8() % 16 {
        let flags = input.u8();
        let function = match flags % 4 {
            // The placeholder a server symbolizes from the build-id.
            0 => format!("[{}+0x{:x}]", input.text(8), input.u16()),
            _ => input.text(12),
        };
        let module = (flags & 4 != 0).then(|| Module {
            path: input.text(8),
            build_id: (flags & 8 != 0).then(|| input.text(8)),
            executable: flags & 16 != 0,
        });
        profile.frames.push(Frame {
            kind: KINDS[usize::from(input.u8()) % KINDS.len()],
            function: function.into(),
            file: (flags & 16 != 0).then(|| input.text(8).into()),
            line: (flags & 32 != 0).then(|| input.u32()),
            module: module.map(Arc::new),
            address: input.u64(),
            inlined: flags & 64 != 0,
        });
    }
    if profile.frames.is_empty() {
        return profile;
    }
    for _ in 0..input.u8() % 16 {
        let depth = input.u8() % 24;
        let frames = (0..depth).map(|_| u32::from(input.u8()) % profile.frames.len() as u32).collect();
        let labels = (0..input.u8() % 4)
            .map(|_| {
                let key = LABEL_KEYS[usize::from(input.u8()) % LABEL_KEYS.len()];
                let value = LabelValue::Str(input.text(6));
                Label { key, value }
            })
            .collect();
        profile.stacks.push(StackCount { frames, labels, count: input.u64() >> (input.u8() % 64) });
    }
    profile
}

/// Reads fixed-size values off the fuzzer's bytes, zeros once they run out.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = self.0.len().min(N);
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }

    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }

    fn text(&mut self, max: u8) -> String {
        let len = usize::from(self.u8() % (max + 1)).min(self.0.len());
        let (text, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8_lossy(text).into_owned()
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The fuzz targets run under `cargo xtask test`; these keep the entry points honest in the unit tests too.
    #[test]
    fn entry_points_accept_empty_and_typical_input() {
        for data in [&b""[..], b"\x01\x02\x03", &[0xff; 64]] {
            maps(data);
            elf(data);
            line_tables(data);
            code_copy(data);
            pprof(data);
            cfa(data);
            python_symbols(data);
            eval_ranges(data);
            thread_names(data);
        }
        cfa(&std::fs::read("/proc/self/exe").unwrap());
        python_symbols(&std::fs::read("/proc/self/exe").unwrap());
        maps(b"7f0000000000-7f0000001000 r-xp 00000000 08:01 1234   /usr/lib/libc.so.6\n");
        elf(&std::fs::read("/proc/self/exe").unwrap());
    }

    /// Every input in `fuzz/DIR/TARGET/` through its target's entry point; how many there were.
    fn replay(dir: &str) -> usize {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz").join(dir);
        type Target = (&'static str, fn(&[u8]));
        let targets: [Target; 9] = [
            ("maps", maps),
            ("elf", elf),
            ("line_tables", line_tables),
            ("code_copy", code_copy),
            ("pprof", pprof),
            ("cfa", cfa),
            ("python_symbols", python_symbols),
            ("eval_ranges", eval_ranges),
            ("thread_names", thread_names),
        ];
        let mut replayed = 0;
        for (name, entry) in targets {
            let Ok(files) = std::fs::read_dir(root.join(name)) else { continue };
            let mut files: Vec<_> = files.map(|file| file.unwrap().path()).collect();
            files.sort();
            for file in files {
                let data = std::fs::read(&file).unwrap();
                // The input's name in the panic message: a failure says which one to look at.
                if std::panic::catch_unwind(|| entry(&data)).is_err() {
                    panic!("{} fails", file.display());
                }
                replayed += 1;
            }
        }
        replayed
    }

    /// The inputs the fuzzers once crashed on (fuzz/regressions/TARGET/*). `cargo xtask test` runs this with
    /// overflow checks on (the fuzz-replay profile).
    #[test]
    fn past_fuzzer_findings_stay_fixed() {
        let replayed = replay("regressions");
        assert!(replayed >= 5, "only {replayed} regression inputs under fuzz/regressions");
    }

    /// The committed corpus (fuzz/corpus/TARGET/*): inputs that reach the parsers' branches, found by earlier
    /// exploratory runs, replayed deterministically.
    #[test]
    fn committed_corpus_passes() {
        let replayed = replay("corpus");
        assert!(replayed >= 100, "only {replayed} corpus inputs under fuzz/corpus");
    }

    #[test]
    fn pprof_check_counts_every_frame() {
        let mut bytes = vec![0u8; 512];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i * 37 % 251) as u8;
        }
        pprof(&bytes);
    }
}
