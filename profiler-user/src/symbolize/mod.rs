//! Native and kernel addresses → function, file:line and inlined frames, with blazesym.
//!
//! Results are cached per (ELF file, file offset): a busy thread revisits the same few hundred addresses, so
//! after warm-up a sample costs hash lookups only. Native frames keep the module and file offset so a server
//! can symbolize what we could not (stripped binaries) from the build-id.
//!
//! A library whose debug information ships separately (Debian's libc6-dbg: /usr/lib/debug/.build-id/…) is named
//! from that file's symbol table, not its DWARF: the DWARF is zlib-compressed, and decompressing and indexing
//! libc's alone took ~15 MB of heap for the agent's whole life, a third of its memory budget, for file:line of
//! libc internals that a flame graph does not show. The symbol table names the static functions the stripped
//! library cannot (`__libc_start_call_main`, `start_thread`). A file's own DWARF (a program built with `-g`) is
//! still read whole, with lines and inlined calls.
//!
//! A module whose frames stay unnamed and has a build-id can get its debug file from debuginfod servers
//! (`debuginfod.rs`, when configured): named the same way, from the symbol table, once the file has arrived.
// Values here come from a target (its files, its memory, its maps) or the kernel: no implicit arithmetic.
#![deny(clippy::arithmetic_side_effects)]
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use blazesym::symbolize::{
    evict::{self, Evict},
    source::{Elf, Kernel, Source},
    Input, Symbolized, Symbolizer as Blazesym,
};

mod debuginfod;

pub(crate) use self::debuginfod::{parse_servers, Debuginfod, DebuginfodConfig, DEFAULT_CACHE_DIR};
use crate::{
    aggregate::{Frame, FrameKind, Module},
    sanitize,
    unwind::{elf::ElfFile, modules::LoadedFile, NativeFrame},
};

/// Where build-id named debug files live (`.build-id/ab/cdef….debug`), as GDB and blazesym look for them.
const DEBUG_DIRS: [&str; 2] = ["/usr/lib/debug", "/lib/debug"];

/// Bound the caches: a long run over many processes must not grow without limit, whether by many addresses or by
/// long names (a target chooses its symbols' lengths: a C++ template or a forged symbol table can make each name
/// kilobytes). On overflow the caches are dropped whole; refilling them costs a few milliseconds of symbolization.
const MAX_CACHED_ADDRESSES: usize = 200_000;
const MAX_CACHED_BYTES: usize = 32 << 20;

pub(crate) struct Symbolizer {
    blazesym: Blazesym,
    native: HashMap<(u64, u64), Arc<[Frame]>>,
    kernel: HashMap<u64, Arc<[Frame]>>,
    /// What the cached frames hold on the heap, roughly (see `heap_bytes`).
    cached_bytes: usize,
    /// Per file id: its separate debug file, if it has one (looked up once per file, and again when debuginfod
    /// brought a file).
    debug_files: HashMap<u64, Option<PathBuf>>,
    /// Debug files by build-id from debuginfod servers, for modules nothing here names (off unless configured).
    debuginfod: Option<Debuginfod>,
    /// `Debuginfod::arrivals` when the caches were last cleared for them.
    arrivals_seen: u64,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    pub(crate) fn new() -> Self {
        let blazesym =
            Blazesym::builder().enable_code_info(true).enable_inlined_fns(true).enable_demangling(true).build();
        Self {
            blazesym,
            native: HashMap::new(),
            kernel: HashMap::new(),
            cached_bytes: 0,
            debug_files: HashMap::new(),
            debuginfod: None,
            arrivals_seen: 0,
        }
    }

    /// Asks debuginfod servers for the debug files of modules whose frames stay unnamed.
    pub(crate) fn fetch_debug_info_from(&mut self, debuginfod: Debuginfod) {
        self.debuginfod = Some(debuginfod);
    }

    /// The frames for one native address, leaf (innermost inlined function) first.
    pub(crate) fn native(&mut self, frame: &NativeFrame) -> Arc<[Frame]> {
        let Some((file, offset)) = &frame.file else {
            return Arc::from([unknown_frame(None, frame.address)]);
        };
        self.bound_caches();
        if let Some(arrivals) = self.debuginfod.as_ref().map(Debuginfod::arrivals).filter(|&n| n != self.arrivals_seen)
        {
            // A debug file arrived: what was named without it is named again.
            self.arrivals_seen = arrivals;
            self.native.clear();
            self.debug_files.clear();
            self.cached_bytes = 0;
        }
        if let Some(frames) = self.native.get(&(file.id, *offset)) {
            return frames.clone();
        }
        let debuginfod = &mut self.debuginfod;
        let debug_file = self.debug_files.entry(file.id).or_insert_with(|| {
            separate_debug_file(&file.module).or_else(|| {
                let build_id = file.module.build_id.as_deref()?;
                debuginfod.as_ref()?.cached(build_id)
            })
        });
        let frames = match (&*debug_file, file_offset_to_svma(&file.elf, *offset)) {
            (Some(debug_file), Some(svma)) => {
                symbolize_from_symbol_table(&self.blazesym, debug_file, file, *offset, svma)
            }
            _ => match file.open_path() {
                Some(path) => symbolize_file_offset(&self.blazesym, &path, &file.module, *offset, true),
                None => Arc::from([unknown_frame(Some(&file.module), *offset)]),
            },
        };
        if debug_file.is_none() && frames.first().is_some_and(is_unnamed) {
            if let (Some(debuginfod), Some(build_id)) = (&mut self.debuginfod, &file.module.build_id) {
                debuginfod.ask(build_id);
            }
        }
        self.cached_bytes = self.cached_bytes.saturating_add(heap_bytes(&frames));
        self.native.insert((file.id, *offset), frames.clone());
        frames
    }

    /// Forgets the symbols of files no process maps any more: ours by id (ids are never reused, so nothing would
    /// ask for them again) and blazesym's by path. blazesym keys its parsed files by path and keeps every file a
    /// path ever named; ours are `/proc/self/fd/N`, and descriptor numbers are reused, so without this a service
    /// restarted every few minutes would leave a parsed library, and its open file, behind each time.
    pub(crate) fn forget_files(&mut self, files: &[Arc<LoadedFile>]) {
        if files.is_empty() {
            return;
        }
        let mut freed = 0usize;
        self.native.retain(|(id, _), frames| {
            let keep = !files.iter().any(|file| file.id == *id);
            if !keep {
                freed = freed.saturating_add(heap_bytes(frames));
            }
            keep
        });
        self.cached_bytes = self.cached_bytes.saturating_sub(freed);
        for file in files {
            if let Some(path) = file.target.symbolizer_path_given() {
                let _ = self.blazesym.evict(&Evict::Elf(evict::Elf::new(path)));
            }
            self.debug_files.remove(&file.id);
        }
    }

    /// Drops both caches when either holds too many addresses or their frames too many bytes.
    fn bound_caches(&mut self) {
        if self.native.len() >= MAX_CACHED_ADDRESSES
            || self.kernel.len() >= MAX_CACHED_ADDRESSES
            || self.cached_bytes >= MAX_CACHED_BYTES
        {
            self.native.clear();
            self.kernel.clear();
            self.cached_bytes = 0;
        }
    }

    /// The frames for one kernel address, leaf first.
    pub(crate) fn kernel(&mut self, address: u64) -> Arc<[Frame]> {
        self.bound_caches();
        let (blazesym, cached_bytes) = (&self.blazesym, &mut self.cached_bytes);
        self.kernel
            .entry(address)
            .or_insert_with(|| {
                let source = Source::Kernel(Kernel::default());
                let name = match blazesym.symbolize_single(&source, Input::AbsAddr(address)) {
                    Ok(Symbolized::Sym(sym)) => sym.name.into_owned(),
                    _ => format!("[kernel {address:#x}]"),
                };
                let frames: Arc<[Frame]> = Arc::from([Frame {
                    kind: FrameKind::Kernel,
                    function: name.into(),
                    file: None,
                    line: None,
                    module: None,
                    address,
                    inlined: false,
                }]);
                *cached_bytes = cached_bytes.saturating_add(heap_bytes(&frames));
                frames
            })
            .clone()
    }
}

fn symbolize_file_offset(
    blazesym: &Blazesym,
    open_path: &Path,
    module: &Arc<Module>,
    offset: u64,
    debug_syms: bool,
) -> Arc<[Frame]> {
    let mut elf = Elf::new(open_path);
    elf.debug_syms = debug_syms;
    let source = Source::Elf(elf);
    let sym = match blazesym.symbolize_single(&source, Input::FileOffset(offset)) {
        Ok(Symbolized::Sym(sym)) => sym,
        _ => return Arc::from([unknown_frame(Some(module), offset)]),
    };
    let native = |function: &str, code: Option<&blazesym::symbolize::CodeInfo>, inlined: bool| Frame {
        kind: FrameKind::Native,
        function: sanitize::name(function).into(),
        file: code.map(|code| sanitize::owned(code.to_path().display().to_string()).into()),
        line: code.and_then(|code| code.line),
        module: Some(module.clone()),
        address: offset,
        inlined,
    };
    // blazesym lists inlined calls outermost first, each with the location inside that function.
    let mut frames: Vec<Frame> =
        sym.inlined.iter().rev().map(|inlined| native(&inlined.name, inlined.code_info.as_ref(), true)).collect();
    frames.push(native(&sym.name, sym.code_info.as_deref(), false));
    frames.into()
}

/// What `frames` hold on the heap, roughly: the frames themselves and their strings.
fn heap_bytes(frames: &[Frame]) -> usize {
    frames
        .iter()
        .map(|frame| {
            let module = frame
                .module
                .as_ref()
                .map_or(0, |m| m.path.len().saturating_add(m.build_id.as_ref().map_or(0, String::len)));
            [size_of::<Frame>(), frame.function.len(), frame.file.as_ref().map_or(0, |file| file.len()), module]
                .into_iter()
                .fold(0usize, usize::saturating_add)
        })
        .fold(0usize, usize::saturating_add)
}

/// The debug file of a module by its build-id, when one is installed.
fn separate_debug_file(module: &Module) -> Option<PathBuf> {
    let build_id = module.build_id.as_deref().filter(|id| id.len() > 2)?;
    let (dir, rest) = build_id.split_at(2);
    DEBUG_DIRS
        .iter()
        .map(|root| Path::new(root).join(".build-id").join(dir).join(format!("{rest}.debug")))
        .find(|p| p.is_file())
}

/// The address in the file's own address space of a file offset (debug files keep the addresses, not the
/// offsets, of the file they describe).
fn file_offset_to_svma(elf: &ElfFile, offset: u64) -> Option<u64> {
    elf.segments
        .iter()
        .find(|s| offset >= s.file_offset && offset < s.file_offset.saturating_add(s.file_size))
        .and_then(|s| s.vaddr.checked_add(offset.checked_sub(s.file_offset)?))
}

/// Names the address from the ELF symbol table of `debug_file` (no DWARF: see the module docs); falls back to
/// the module itself when the debug file does not name it.
fn symbolize_from_symbol_table(
    blazesym: &Blazesym,
    debug_file: &Path,
    file: &LoadedFile,
    offset: u64,
    svma: u64,
) -> Arc<[Frame]> {
    let mut source = Elf::new(debug_file);
    source.debug_syms = false;
    match blazesym.symbolize_single(&Source::Elf(source), Input::VirtOffset(svma)) {
        Ok(Symbolized::Sym(sym)) => Arc::from([Frame {
            kind: FrameKind::Native,
            function: sanitize::name(&sym.name).into(),
            file: None,
            line: None,
            module: Some(file.module.clone()),
            address: offset,
            inlined: false,
        }]),
        // The module's own symbols only: with debug symbols blazesym would follow its debug link to the DWARF.
        _ => match file.open_path() {
            Some(path) => symbolize_file_offset(blazesym, &path, &file.module, offset, false),
            None => Arc::from([unknown_frame(Some(&file.module), offset)]),
        },
    }
}

/// Whether `frame` is one `unknown_frame` made.
pub(crate) fn is_unnamed(frame: &Frame) -> bool {
    frame.file.is_none() && frame.function.starts_with('[') && frame.function.ends_with(']')
}

/// A frame we cannot name: `[module+0xoffset]`, or `[unknown]` outside any file (JIT code, a bad address).
fn unknown_frame(module: Option<&Arc<Module>>, address: u64) -> Frame {
    let function = match module {
        Some(module) => {
            let name = Path::new(&module.path).file_name().map_or(module.path.clone(), |n| n.to_string_lossy().into());
            format!("[{name}+{address:#x}]")
        }
        None => "[unknown]".to_owned(),
    };
    Frame {
        kind: FrameKind::Native,
        function: function.into(),
        file: None,
        line: None,
        module: module.cloned(),
        address,
        inlined: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unwind::modules::ProcessModules;

    #[inline(never)]
    fn a_function_with_a_distinct_name() -> u64 {
        std::hint::black_box(a_function_with_a_distinct_name as fn() -> u64 as usize as u64)
    }

    #[test]
    fn names_a_function_of_this_binary_with_file_and_line() {
        let address = a_function_with_a_distinct_name();
        let mut files = Default::default();
        let mut process = ProcessModules::new(std::process::id());
        process.ensure_covers(address, &mut files, None).unwrap();
        let module = process.module_at(address).unwrap();
        let offset = module.file.elf.svma_to_file_offset(address - module.bias).unwrap();
        let frame = NativeFrame { address, file: Some((module.file.clone(), offset)) };

        let mut symbolizer = Symbolizer::new();
        let frames = symbolizer.native(&frame);
        let outer = frames.last().unwrap();
        assert!(outer.function.ends_with("a_function_with_a_distinct_name"), "{outer:?}");
        assert!(outer.file.as_deref().is_some_and(|f| f.ends_with("symbolize/mod.rs")), "{outer:?}");
        assert!(outer.line.is_some());
        assert_eq!(outer.module.as_ref().unwrap().build_id, module.file.module.build_id);
        // Cached: the same Arc comes back.
        assert!(Arc::ptr_eq(&frames, &symbolizer.native(&frame)));
        assert!(symbolizer.cached_bytes >= heap_bytes(&frames) && symbolizer.cached_bytes > outer.function.len());
        // When no process maps the file any more, its symbols go.
        symbolizer.forget_files(&[module.file.clone()]);
        assert!(symbolizer.native.is_empty());
        assert_eq!(symbolizer.cached_bytes, 0);
        assert!(frames.last().unwrap().function.ends_with("a_function_with_a_distinct_name"));
    }

    /// Few addresses with long names (a target's choice) fill the caches by bytes, not by count: they are dropped
    /// at the byte bound.
    #[test]
    fn the_caches_are_bounded_in_bytes() {
        let mut symbolizer = Symbolizer::new();
        let long = Frame { function: "x".repeat(1 << 20).into(), ..Frame::native("") };
        for address in 0..40u64 {
            symbolizer.bound_caches();
            let frames: Arc<[Frame]> = Arc::from([long.clone()]);
            symbolizer.cached_bytes = symbolizer.cached_bytes.saturating_add(heap_bytes(&frames));
            symbolizer.kernel.insert(address, frames);
            assert!(
                symbolizer.cached_bytes <= MAX_CACHED_BYTES.saturating_add(2 << 20),
                "{} held",
                symbolizer.cached_bytes
            );
        }
        assert!(symbolizer.kernel.len() < 40, "the caches were never dropped");
    }

    /// libc from Debian is stripped; with libc6-dbg installed its static functions are named from the debug
    /// file's symbol table, without file and line (its DWARF is not read).
    #[test]
    fn names_libc_functions_from_the_separate_debug_files_symbol_table() {
        let address = libc::getpid as unsafe extern "C" fn() -> libc::pid_t as usize as u64;
        let mut files = Default::default();
        let mut process = ProcessModules::new(std::process::id());
        process.ensure_covers(address, &mut files, None).unwrap();
        let module = process.module_at(address).unwrap();
        if separate_debug_file(&module.file.module).is_none() {
            eprintln!("no debug file for {}: nothing to check", module.file.module.path);
            return;
        }
        let offset = module.file.elf.svma_to_file_offset(address - module.bias).unwrap();
        let frame = NativeFrame { address, file: Some((module.file.clone(), offset)) };
        let frames = Symbolizer::new().native(&frame);
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert!(frames[0].function.contains("getpid"), "{frames:?}");
        assert_eq!(frames[0].file, None);
        assert_eq!(frames[0].address, offset);
    }

    #[test]
    fn unknown_addresses_name_their_module() {
        let module = Arc::new(Module { path: "/usr/lib/libfoo.so.1".into(), build_id: None, executable: false });
        assert_eq!(&*unknown_frame(Some(&module), 0x1a2b).function, "[libfoo.so.1+0x1a2b]");
        assert_eq!(&*unknown_frame(None, 5).function, "[unknown]");
    }
}
