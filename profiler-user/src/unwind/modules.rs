//! The executable modules of one process, as framehop sees them, kept in step with its `/proc/PID/maps`.
// Values here come from a target (its files, its memory, its maps) or the kernel: no implicit arithmetic.
#![deny(clippy::arithmetic_side_effects)]
use std::{
    collections::HashMap,
    ops::Range,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use anyhow::Result;
use framehop::{x86_64::UnwinderX86_64, ExplicitModuleSectionInfo, Module as FramehopModule, Unwinder as _};

use super::{
    cfa::CfaExpressionIndex,
    elf::{ElfFile, SectionBytes},
};
use crate::{
    aggregate::Module,
    process::{
        files,
        maps::{self, Mapping},
    },
    sample::map_changes::UntakenMapChanges,
};

/// An ELF file loaded once and shared by every process that maps it.
pub(crate) struct LoadedFile {
    /// Unique for the agent's lifetime: the symbol cache's key (paths and inodes can be reused).
    pub id: u64,
    /// How outputs name it: path as the process sees it, build-id.
    pub module: Arc<Module>,
    /// The file, open: every consumer reads this one (see `process::files::TargetFile`).
    pub target: files::TargetFile,
    pub elf: ElfFile,
    cfa_expressions: OnceLock<CfaExpressionIndex>,
}

impl LoadedFile {
    /// A path that opens this very file, for the symbolizer (blazesym opens by path and maps what it opens);
    /// `None` when it cannot be read safely that way.
    pub(crate) fn open_path(&self) -> Option<PathBuf> {
        self.target.symbolizer_path()
    }

    /// The FDEs that unwind/cfa.rs evaluates instead of framehop. Found when a frame first falls in the file, so
    /// the many files mapped but never on a sampled stack are not scanned (a scan takes a few milliseconds).
    pub(crate) fn cfa_expressions(&self) -> &CfaExpressionIndex {
        self.cfa_expressions.get_or_init(|| {
            let started = Instant::now();
            let index = CfaExpressionIndex::build(&self.elf);
            let (path, took) = (&self.module.path, started.elapsed());
            tracing::debug!("{path}: {} FDEs to unwind by their CFA rule (scan took {took:?})", index.fde_count());
            index
        })
    }
}

/// One mapping of a file into a process.
#[derive(Clone)]
pub(crate) struct LoadedModule {
    pub avma: Range<u64>,
    /// AVMA − SVMA.
    pub bias: u64,
    pub file: Arc<LoadedFile>,
}

/// ELF files by (dev, inode); failures are remembered so a broken file is read once, not per sample.
#[derive(Default)]
pub(crate) struct FileCache {
    files: HashMap<(u64, u64), Option<Arc<LoadedFile>>>,
}

impl FileCache {
    fn get(&mut self, pid: u32, mapping: &Mapping, root: &Path) -> Option<Arc<LoadedFile>> {
        self.files
            .entry((mapping.dev, mapping.inode))
            .or_insert_with(|| match load_file(pid, mapping, root) {
                Ok(file) => Some(Arc::new(file)),
                // Executable memory that is not an ELF file (libffi's trampolines in a memfd, JIT code) has no
                // unwind tables to read: nothing to warn about.
                Err(err) if mapping.path.starts_with("/memfd:") || !files::looks_like_elf(pid, mapping, root) => {
                    tracing::debug!("not unwinding through {}: {err:#}", mapping.path);
                    None
                }
                Err(err) => {
                    tracing::warn!("cannot unwind through {}: {err:#}", mapping.path);
                    None
                }
            })
            .clone()
    }

    /// Drops files no process maps any more and hands them over, so that the caches keyed by them (the
    /// symbolizer's, by id and by path) forget them while their descriptors are still open.
    pub(crate) fn retain_used(&mut self) -> Vec<Arc<LoadedFile>> {
        let mut dropped = Vec::new();
        self.files.retain(|_, file| match file {
            Some(loaded) if Arc::strong_count(loaded) == 1 => {
                dropped.extend(file.take());
                false
            }
            _ => true,
        });
        dropped
    }
}

fn load_file(pid: u32, mapping: &Mapping, root: &Path) -> Result<LoadedFile> {
    // Opened once, safely (the very file mapped, never a FIFO or a planted file); the symbolizer reads the same.
    let target = files::TargetFile::open(pid, mapping, root)?;
    let elf = ElfFile::from_file(&target.file, &mapping.path)?;
    let executable = files::is_executable_of(pid, mapping);
    let module = Arc::new(Module { path: mapping.path.clone(), build_id: elf.build_id.clone(), executable });
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(LoadedFile { id, module, target, elf, cfa_expressions: OnceLock::new() })
}

/// framehop's view of one process plus the module table used to name frames.
pub(crate) struct ProcessModules {
    pid: u32,
    pub unwinder: UnwinderX86_64<SectionBytes>,
    modules: Vec<LoadedModule>,
    /// Every mapping at the last read (anonymous memory and stacks too): where a crash's fault address is placed.
    mappings: Vec<Mapping>,
    loaded_at: Option<Instant>,
    /// CLOCK_MONOTONIC ns of the last read of the maps (the clock of sample and event times).
    read_at_ns: u64,
    /// Set when the process maps new code: the next lookup re-reads the maps whatever the interval.
    stale: bool,
    pub malformed_map_lines: usize,
    /// Immediate re-reads in the current second: (when the second began, how many).
    immediate_reads: (Option<Instant>, u32),
    budget_logged: bool,
    /// The first code mapping since the last read whose re-read the budget put off (CLOCK_MONOTONIC ns).
    unread_change_ns: Option<u64>,
    /// The latest code mapping reported (CLOCK_MONOTONIC ns; 0 if none): samples before it are not named with
    /// maps read after it.
    changed_until_ns: u64,
}

/// How many times a second a process's code mappings may make us re-read its maps at once; past that they are
/// re-read at the next refresh (every session tick).
pub(crate) const IMMEDIATE_READS_PER_SECOND: u32 = 100;

/// A process's maps are re-read at most this often when a sample hits an address outside every known module
/// (a library loaded since, or the dynamic loader still at work after an exec), so a JIT or a bogus address
/// cannot make us re-read maps on every sample.
const MAPS_REFRESH_INTERVAL: Duration = Duration::from_millis(200);

impl ProcessModules {
    pub(crate) fn new(pid: u32) -> Self {
        Self {
            pid,
            unwinder: UnwinderX86_64::new(),
            modules: Vec::new(),
            mappings: Vec::new(),
            loaded_at: None,
            read_at_ns: 0,
            stale: false,
            malformed_map_lines: 0,
            immediate_reads: (None, 0),
            budget_logged: false,
            unread_change_ns: None,
            changed_until_ns: 0,
        }
    }

    /// Re-reads the maps if they were never read, or if `address` is outside every known module and the last
    /// read is older than the refresh interval.
    pub(crate) fn ensure_covers(
        &mut self,
        address: u64,
        files: &mut FileCache,
        changes: Option<&UntakenMapChanges>,
    ) -> Result<()> {
        let stale = match self.loaded_at {
            None => true,
            Some(at) => self.module_at(address).is_none() && (self.stale || at.elapsed() >= MAPS_REFRESH_INTERVAL),
        };
        if stale {
            self.reload(files, changes)?;
        }
        Ok(())
    }

    /// A forked child: the same mappings as its parent (fork copies them), ready before its first sample is
    /// processed, which may be after the child is gone.
    pub(crate) fn fork_of(parent: &ProcessModules, pid: u32) -> Self {
        let mut child = Self::new(pid);
        for module in &parent.modules {
            child.unwinder.add_module(framehop_module(module));
        }
        child.modules = parent.modules.clone();
        child.mappings = parent.mappings.clone();
        child.loaded_at = parent.loaded_at;
        child.read_at_ns = parent.read_at_ns;
        child.changed_until_ns = parent.changed_until_ns;
        child
    }

    pub(crate) fn mark_stale(&mut self) {
        self.stale = true;
    }

    /// A code mapping at `time_ns` whose re-read was put off.
    pub(crate) fn note_unread_change(&mut self, time_ns: u64) {
        self.unread_change_ns.get_or_insert(time_ns);
    }

    pub(crate) fn unread_change_ns(&self) -> Option<u64> {
        self.unread_change_ns
    }

    /// A code mapping happened at `time_ns`, at the latest: maps read after it do not fit samples before it.
    pub(crate) fn note_change_until(&mut self, time_ns: u64) {
        self.changed_until_ns = self.changed_until_ns.max(time_ns);
    }

    /// The module of the process's executable, among those loaded.
    pub(crate) fn executable(&self) -> Option<&Arc<Module>> {
        self.modules.iter().map(|m| &m.file.module).find(|module| module.executable)
    }

    /// The latest code mapping known (CLOCK_MONOTONIC ns; 0 if none).
    pub(crate) fn changed_until_ns(&self) -> u64 {
        self.changed_until_ns
    }

    /// Whether the budget of immediate re-reads allows one more now; logs once when it trips.
    pub(crate) fn take_immediate_read(&mut self) -> bool {
        let now = Instant::now();
        let (since, count) = &mut self.immediate_reads;
        if since.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1)) {
            *since = Some(now);
            *count = 0;
        }
        *count = count.saturating_add(1);
        if *count <= IMMEDIATE_READS_PER_SECOND {
            return true;
        }
        if !std::mem::replace(&mut self.budget_logged, true) {
            tracing::warn!(
                "PID {} maps code more than {IMMEDIATE_READS_PER_SECOND} times a second (map re-read budget): its maps \
                 are re-read at most once a tick from now on",
                self.pid
            );
        }
        false
    }

    pub(crate) fn is_stale(&self) -> bool {
        self.stale
    }

    /// Re-reads the maps now.
    pub(crate) fn refresh(&mut self, files: &mut FileCache, changes: Option<&UntakenMapChanges>) -> Result<()> {
        self.reload(files, changes)
    }

    /// When the maps in use were read (CLOCK_MONOTONIC ns; 0 before the first read).
    pub(crate) fn read_at_ns(&self) -> u64 {
        self.read_at_ns
    }

    /// Takes the kernel's note of code mappings first: the maps read then cover every mapping it counted (the
    /// latest of which samples before it are not named with), and the next mapping sends an event again.
    fn reload(&mut self, files: &mut FileCache, changes: Option<&UntakenMapChanges>) -> Result<()> {
        if let Some(last_ns) = changes.and_then(|changes| changes.take(self.pid)) {
            self.note_change_until(last_ns);
        }
        let maps = maps::read(self.pid);
        self.read_at_ns = crate::sample::monotonic_ns();
        if changes.is_some_and(|changes| changes.in_flight(self.pid)) {
            // A mapping under way may or may not be in what was read.
            self.note_change_until(self.read_at_ns);
        }
        self.unread_change_ns = None;
        self.loaded_at = Some(Instant::now());
        self.stale = false;
        let maps = maps?;
        self.malformed_map_lines = maps.malformed_lines;
        let root = files::process_root(self.pid);
        let mut modules = Vec::new();
        for group in file_groups(&maps.mappings) {
            let Some(exec) = group.iter().find(|m| m.executable) else { continue };
            let Some(file) = files.get(self.pid, exec, &root) else { continue };
            let Some(bias) = file.elf.load_bias(exec.start, exec.file_offset, true) else { continue };
            let avma = group.first().map_or(exec.start, |m| m.start)..group.last().map_or(exec.end, |m| m.end);
            modules.push(LoadedModule { avma, bias, file });
        }
        if modules.is_empty() && !self.modules.is_empty() {
            // An exiting process's maps read as empty: keep unwinding its last samples with what we had.
            anyhow::bail!("PID {} has no mappings any more", self.pid);
        }
        for old in &self.modules {
            self.unwinder.remove_module(old.avma.start);
        }
        for module in &modules {
            self.unwinder.add_module(framehop_module(module));
        }
        modules.sort_by_key(|m| m.avma.start);
        self.modules = modules;
        self.mappings = maps.mappings;
        Ok(())
    }

    /// Every mapping of the process at the last read, in address order.
    pub(crate) fn mappings(&self) -> &[Mapping] {
        &self.mappings
    }

    pub(crate) fn has_modules(&self) -> bool {
        !self.modules.is_empty()
    }

    pub(crate) fn module_at(&self, address: u64) -> Option<&LoadedModule> {
        let index = self.modules.partition_point(|m| m.avma.start <= address).checked_sub(1)?;
        let module = &self.modules[index];
        module.avma.contains(&address).then_some(module)
    }
}

/// Consecutive mappings of the same file: one loaded ELF image each.
fn file_groups(mappings: &[Mapping]) -> Vec<&[Mapping]> {
    let mut groups = Vec::new();
    let mut start = 0;
    for i in 1..=mappings.len() {
        let boundary = i == mappings.len()
            || (mappings[i].dev, mappings[i].inode) != (mappings[start].dev, mappings[start].inode)
            || mappings[i].path != mappings[start].path;
        if boundary {
            if mappings[start].is_file_backed() {
                groups.push(&mappings[start..i]);
            }
            start = i;
        }
    }
    groups
}

fn framehop_module(module: &LoadedModule) -> FramehopModule<SectionBytes> {
    let elf = &module.file.elf;
    let info = ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma: elf.text.as_ref().map(|s| s.svma.clone()),
        text: None,
        got_svma: elf.got.clone(),
        eh_frame_svma: elf.eh_frame.as_ref().map(|s| s.svma.clone()),
        eh_frame: elf.eh_frame.as_ref().map(|s| s.bytes.clone()),
        eh_frame_hdr_svma: elf.eh_frame_hdr.as_ref().map(|s| s.svma.clone()),
        eh_frame_hdr: elf.eh_frame_hdr.as_ref().map(|s| s.bytes.clone()),
        debug_frame: elf.debug_frame.as_ref().map(|s| s.bytes.clone()),
        stubs_svma: None,
        stub_helper_svma: None,
        unwind_info: None,
        text_segment_svma: None,
        text_segment: None,
    };
    FramehopModule::new(module.file.module.path.clone(), module.avma.clone(), module.bias, info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_consecutive_mappings_of_one_file() {
        let parsed = maps::parse(
            "1000-2000 r--p 0 fe:01 10 /bin/a\n2000-3000 r-xp 1000 fe:01 10 /bin/a\n3000-4000 rw-p 0 00:00 0 \n\
             4000-5000 r-xp 0 fe:01 11 /lib/b.so\n5000-6000 r-xp 0 00:00 0 [vdso]\n",
        );
        let groups = file_groups(&parsed.mappings);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].len(), 2);
        assert_eq!(groups[1][0].path, "/lib/b.so");
    }

    #[test]
    fn finds_this_process_modules() {
        let mut files = FileCache::default();
        let mut process = ProcessModules::new(std::process::id());
        let here = finds_this_process_modules as fn() as usize as u64;
        process.ensure_covers(here, &mut files, None).unwrap();
        let module = process.module_at(here).expect("our own code is in a module");
        assert_eq!(Path::new(&module.file.module.path), std::env::current_exe().unwrap());
        assert!(process.module_at(0x10).is_none());
    }

    #[test]
    fn files_no_process_maps_are_dropped_and_named() {
        let mut files = FileCache::default();
        let mut process = ProcessModules::new(std::process::id());
        let here = files_no_process_maps_are_dropped_and_named as fn() as usize as u64;
        process.ensure_covers(here, &mut files, None).unwrap();
        let id = process.module_at(here).unwrap().file.id;
        assert!(files.retain_used().is_empty(), "a mapped file was dropped");
        drop(process);
        assert!(files.retain_used().iter().any(|file| file.id == id));
        assert!(files.files.is_empty() || files.files.values().all(Option::is_none));
    }
}
