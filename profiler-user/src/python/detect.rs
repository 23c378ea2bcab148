//! Recognizes a CPython process: which module holds the interpreter (the executable for static builds,
//! libpython for shared ones), where `_PyRuntime` is, and which version runs.
// Values here come from a target (its files, its memory, its maps) or the kernel: no implicit arithmetic.
#![deny(clippy::arithmetic_side_effects)]
use std::{path::PathBuf, sync::Arc};

use anyhow::{bail, Context as _, Result};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _, ReadCache, ReadRef as _};

use super::{
    eval_ranges,
    layout::{self, Layouts, Version},
};
use crate::{
    aggregate::file_name,
    process::{
        files::{process_root, TargetFile},
        maps, memory,
    },
    unwind::elf::{self, ElfFile},
};

/// A recognized interpreter.
#[derive(Clone, Debug)]
pub(crate) struct Interpreter {
    pub version: Version,
    /// Path of the interpreter module as the process maps it (frames in it are interpreter internals).
    pub module_path: String,
    pub layouts: Layouts,
    /// Address of `PyCode_Type`: a code object's type pointer must equal it.
    pub code_type: Option<u64>,
    /// Address of `PyUnicode_Type`: a name read from a code object must be a `str`, not whatever else garbage or a
    /// freed object left at that address.
    pub unicode_type: Option<u64>,
    /// Addresses of `PyDict_Type` and `PyLong_Type`, checked when walking objects for thread names.
    pub dict_type: Option<u64>,
    pub long_type: Option<u64>,
    /// File offsets of evaluation-loop code that has no `_PyEval_EvalFrameDefault` name (see `eval_ranges`).
    pub eval_ranges: Vec<std::ops::Range<u64>>,
}

/// What detection read of interpreter files, shared by every process that maps the same file: a worker pool or
/// short-lived workers would otherwise each read the interpreter's whole symbol table (tens of thousands of
/// names) again. Keyed by the file's identity and version (device, inode, size, modification time, from the file
/// opened), so a file replaced in place is read again.
#[derive(Default)]
pub(crate) struct InterpreterFiles {
    files: std::collections::HashMap<FileIdentity, Arc<Symbols>>,
}

type FileIdentity = (u64, u64, u64, i64, i64);

/// More distinct interpreter files than a host runs; past it the cache starts again.
const MAX_INTERPRETER_FILES: usize = 64;

impl InterpreterFiles {
    fn symbols(&mut self, file: &std::fs::File, name: &str) -> Result<Arc<Symbols>> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = file.metadata().with_context(|| format!("reading ELF file {name}"))?;
        let identity = (meta.dev(), meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec());
        if let Some(symbols) = self.files.get(&identity) {
            return Ok(symbols.clone());
        }
        let symbols = Arc::new(Symbols::read(file, name)?);
        if self.files.len() >= MAX_INTERPRETER_FILES {
            self.files.clear();
        }
        self.files.insert(identity, symbols.clone());
        Ok(symbols)
    }
}

/// `Ok(None)`: not a Python process. `Err`: a Python process we cannot profile (the message says why).
pub(crate) fn detect(pid: u32, files: &mut InterpreterFiles) -> Result<Option<Interpreter>> {
    let process_maps = maps::read(pid)?;
    let root = process_root(pid);
    let candidates: Vec<&maps::Mapping> = process_maps
        .mappings
        .iter()
        .filter(|m| m.executable && m.is_file_backed() && looks_like_python(&m.path))
        .collect();
    // A shared build maps both `python3.X` and `libpython3.X.so`; the runtime lives in the library. An
    // interpreter under another name (a copied or embedding executable) is recognized by its `_PyRuntime`.
    let named = candidates.iter().find(|m| file_name(&m.path).starts_with("libpython")).or(candidates.first()).copied();
    // Files are opened as every consumer opens them (process::files::TargetFile: the mapped file itself, never a
    // FIFO or a file planted at its path) and read with pread, never mapped: a target truncating its interpreter
    // must not kill the agent with SIGBUS.
    let (mapping, symbols) = match named {
        Some(mapping) => {
            let target = TargetFile::open(pid, mapping, &root)?;
            let symbols = files.symbols(&target.file, &mapping.path)?;
            (mapping, symbols)
        }
        None => {
            let Some(exe) = process_maps.mappings.iter().find(|m| m.executable && m.is_file_backed()) else {
                return Ok(None);
            };
            let Ok(target) = TargetFile::open(pid, exe, &root) else { return Ok(None) };
            match files.symbols(&target.file, &exe.path) {
                Ok(symbols) if symbols.runtime.is_some() => (exe, symbols),
                _ => return Ok(None),
            }
        }
    };
    let bias = elf::load_bias(&symbols.segments, mapping.start, mapping.file_offset, true)
        .with_context(|| format!("cannot place {} in the memory of PID {pid}", mapping.path))?;
    let Some(runtime_svma) = symbols.runtime else {
        // Before 3.7 there was no _PyRuntime: say which version that is rather than what it lacks.
        if let Some(version) = version_from_name(&mapping.path) {
            layout::for_version(version, 0, None)?;
        }
        bail!("{} has no _PyRuntime symbol or .PyRuntime section", mapping.path);
    };
    let runtime = runtime_svma.wrapping_add(bias);

    // 3.13+: the runtime starts with _Py_DebugOffsets, which carries the exact version.
    let head = memory::read(pid, runtime, 1024).context("reading _PyRuntime")?;
    let (version, debug_offsets) = if head.starts_with(b"xdebugpy") {
        (Version::from_hex(memory::u64_at(&head, 8).unwrap_or(0)), Some(head.as_slice()))
    } else if let Some(hex) = symbols.py_version {
        (Version::from_hex(hex), None)
    } else if let Some(version) = version_from_name(&mapping.path) {
        (version, None)
    } else {
        bail!("cannot tell the Python version of {}", mapping.path);
    };
    let layouts = layout::for_version(version, runtime, debug_offsets)?;
    Ok(Some(Interpreter {
        version,
        module_path: mapping.path.clone(),
        layouts,
        code_type: symbols.code_type.map(|svma| svma.wrapping_add(bias)),
        unicode_type: symbols.unicode_type.map(|svma| svma.wrapping_add(bias)),
        dict_type: symbols.dict_type.map(|svma| svma.wrapping_add(bias)),
        long_type: symbols.long_type.map(|svma| svma.wrapping_add(bias)),
        eval_ranges: symbols.eval_ranges.clone(),
    }))
}

fn looks_like_python(path: &str) -> bool {
    let name = file_name(path);
    let major = |rest: &str| rest.starts_with('3') || rest.starts_with('2');
    match name.strip_prefix("libpython") {
        Some(library) => major(library),
        None => name.strip_prefix("python").is_some_and(major) && !name.contains(".so"),
    }
}

/// `python3.11`, `libpython3.12.so.1.0`, `python3.13d`, `python2.7` → the version.
fn version_from_name(path: &str) -> Option<Version> {
    let name = file_name(path);
    let rest = name.strip_prefix("lib").unwrap_or(name).strip_prefix("python")?;
    let (major, rest) = rest.split_once('.')?;
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some(Version { major: major.parse().ok()?, minor: minor.parse().ok()? })
}

/// The interpreter's symbols we need, as file addresses (SVMA), and its load segments (to place them).
pub(crate) struct Symbols {
    runtime: Option<u64>,
    code_type: Option<u64>,
    unicode_type: Option<u64>,
    dict_type: Option<u64>,
    long_type: Option<u64>,
    /// Value of the `Py_Version` constant (3.11+).
    py_version: Option<u64>,
    /// Unnamed parts of the evaluation loop, as file offsets.
    eval_ranges: Vec<std::ops::Range<u64>>,
    segments: Vec<elf::LoadSegment>,
}

impl Symbols {
    fn read(file: &std::fs::File, name: &str) -> Result<Self> {
        let cache = ReadCache::new(file);
        let map = &cache;
        elf::check_section_sizes(map).with_context(|| format!("reading ELF file {name}"))?;
        let elf = object::File::parse(map).with_context(|| format!("reading ELF file {name}"))?;
        // One pass over both tables (the dynamic one first, as a lookup would), keeping each name's first
        // non-zero address: an interpreter has tens of thousands of symbols.
        const WANTED: [&str; 6] =
            ["_PyRuntime", "Py_Version", "PyCode_Type", "PyUnicode_Type", "PyDict_Type", "PyLong_Type"];
        let mut found = [None; WANTED.len()];
        for symbol in elf.dynamic_symbols().chain(elf.symbols()) {
            if symbol.address() == 0 {
                continue;
            }
            let Ok(name) = symbol.name() else { continue };
            if let Some(slot) = WANTED.iter().position(|wanted| *wanted == name) {
                found[slot].get_or_insert(symbol.address());
            }
        }
        let [runtime, py_version, code_type, unicode_type, dict_type, long_type] = found;
        // Stripped builds without exported symbols still carry the section the runtime is placed in.
        let runtime = runtime.or_else(|| elf.section_by_name(".PyRuntime").map(|s| s.address()));
        let py_version = py_version.and_then(|svma| {
            let offset = ElfFile::svma_to_offset_in(&elf, svma)?;
            memory::u64_at(map.read_bytes_at(offset, 8).ok()?, 0).map(|v| v & 0xffff_ffff)
        });
        Ok(Self {
            runtime,
            code_type,
            unicode_type,
            dict_type,
            long_type,
            py_version,
            eval_ranges: unnamed_eval_code(&elf, map),
            segments: elf::load_segments(&elf),
        })
    }
}

/// The runtime's address, the version constant and the evaluation loop's unnamed ranges.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) type PythonSymbols = (Option<u64>, Option<u64>, Vec<std::ops::Range<u64>>);

/// What Python detection reads of an interpreter file (the fuzz target's view): the runtime's address, the
/// version constant and the evaluation loop's unnamed ranges, which must lie past the named function's start.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn symbols_of(file: &std::fs::File) -> Option<PythonSymbols> {
    let symbols = Symbols::read(file, "fuzz input").ok()?;
    Some((symbols.runtime, symbols.py_version, symbols.eval_ranges))
}

/// The most bytes of `_PyEval_EvalFrameDefault` we read (CPython 3.11's is about 60 KiB).
const MAX_EVAL_LOOP_BYTES: u64 = 4 << 20;

/// The unnamed parts of `_PyEval_EvalFrameDefault`, as file offsets (frames carry file offsets).
fn unnamed_eval_code<'d>(
    elf: &object::File<'d, &'d ReadCache<&std::fs::File>>,
    map: &'d ReadCache<&std::fs::File>,
) -> Vec<std::ops::Range<u64>> {
    let Some(eval) = elf
        .dynamic_symbols()
        .chain(elf.symbols())
        .find(|s| s.name() == Ok("_PyEval_EvalFrameDefault") && s.address() != 0 && s.size() != 0)
    else {
        return Vec::new();
    };
    let (Some(code_offset), Some(hdr)) =
        (ElfFile::svma_to_offset_in(elf, eval.address()), elf.section_by_name(".eh_frame_hdr"))
    else {
        return Vec::new();
    };
    // The function's size is the file's claim: bounded (the real one is tens of KiB).
    if eval.size() > MAX_EVAL_LOOP_BYTES || hdr.size() > elf::MAX_SECTION_BYTES {
        return Vec::new();
    }
    let (Ok(code), Ok(hdr_bytes)) = (map.read_bytes_at(code_offset, eval.size()), hdr.data()) else {
        return Vec::new();
    };
    let named: Vec<u64> = elf
        .dynamic_symbols()
        .chain(elf.symbols())
        .filter(|s| s.kind() == object::SymbolKind::Text && s.address() != 0)
        .map(|s| s.address())
        .collect();
    eval_ranges::find(eval.address(), code, hdr_bytes, hdr.address(), &named)
        .into_iter()
        .filter_map(|range| {
            let start = ElfFile::svma_to_offset_in(elf, range.start)?;
            Some(start..start.checked_add(range.end.checked_sub(range.start)?)?)
        })
        .collect()
}

/// The path of a process's interpreter executable, for messages.
pub(crate) fn describe(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_else(|_| PathBuf::from(format!("PID {pid}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Detection reads the interpreter with pread, never a mapping: a file cut short between its opening and its
    /// parsing (a target truncating its interpreter) makes reads come up short, not the agent die of SIGBUS.
    #[test]
    fn an_interpreter_truncated_while_it_is_read_is_an_error_not_a_crash() {
        let Ok(python) = std::fs::read("/usr/bin/python3") else { return };
        let path = std::env::temp_dir().join(format!("profiler-detect-truncated-{}", std::process::id()));
        std::fs::write(&path, &python).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let whole = Symbols::read(&file, "python3").unwrap();
        assert!(whole.runtime.is_some(), "the real interpreter has _PyRuntime");
        for cut in [python.len() / 2, 4096, 64] {
            std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(cut as u64).unwrap();
            // Parsed or refused, but read to the end without a fault.
            let _ = Symbols::read(&file, "python3");
        }
        let _ = std::fs::remove_file(&path);
    }

    /// A pool's workers map one interpreter file: it is read once; a file changed in place is read again.
    #[test]
    fn an_interpreter_file_is_read_once_for_every_process_that_maps_it() {
        let Ok(python) = std::fs::read("/usr/bin/python3") else { return };
        let path = std::env::temp_dir().join(format!("profiler-detect-shared-{}", std::process::id()));
        std::fs::write(&path, &python).unwrap();
        let mut files = InterpreterFiles::default();
        let first = files.symbols(&std::fs::File::open(&path).unwrap(), "python3").unwrap();
        let again = files.symbols(&std::fs::File::open(&path).unwrap(), "python3").unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the same file was read twice");
        assert!(first.runtime.is_some() && !first.segments.is_empty());
        // Rewritten where it is (same inode, new contents and modification time): read afresh.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, &python[..python.len() / 2]).unwrap();
        let changed = files.symbols(&std::fs::File::open(&path).unwrap(), "python3");
        assert!(changed.as_ref().map_or(true, |symbols| !Arc::ptr_eq(symbols, &first)));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn recognizes_interpreter_file_names() {
        assert!(looks_like_python("/usr/bin/python3.11"));
        assert!(looks_like_python("/opt/lib/libpython3.12.so.1.0"));
        assert!(!looks_like_python("/usr/lib/python3/dist-packages/lxml/etree.cpython-311-x86_64-linux-gnu.so"));
        assert!(!looks_like_python("/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so"));
        assert_eq!(version_from_name("/usr/bin/python3.13"), Some(Version { major: 3, minor: 13 }));
        assert_eq!(version_from_name("/x/libpython3.12.so.1.0"), Some(Version { major: 3, minor: 12 }));
        assert_eq!(version_from_name("/usr/bin/python3"), None);
        assert!(looks_like_python("/usr/bin/python2.7"));
        assert!(looks_like_python("/usr/lib/x86_64-linux-gnu/libpython2.7.so.1.0"));
        assert_eq!(version_from_name("/usr/bin/python2.7"), Some(Version { major: 2, minor: 7 }));
    }
}
