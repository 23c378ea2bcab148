//! Native unwinding: stack copy + user registers → the thread's native frame addresses, leaf first.
//!
//! The kernel sends a copy of the top of the user stack; framehop walks it with each module's DWARF CFI
//! (`.eh_frame`, `.debug_frame`), so targets need no frame pointers. The frames framehop cannot compute a CFA for
//! (stack-realigning code, whose CFA is a DWARF expression) are unwound by `cfa` and framehop resumes at their
//! caller. Capture is separate from unwinding: a failure here ends the stack with a visible truncation, never an
//! error for the whole sample.
// Values here come from a target (its files, its memory, its maps) or the kernel: no implicit arithmetic.
#![deny(clippy::arithmetic_side_effects)]
pub(crate) mod cfa;
pub(crate) mod elf;
pub(crate) mod modules;

use std::{collections::HashMap, sync::Arc};

use framehop::{
    x86_64::{CacheX86_64, UnwindRegsX86_64},
    FrameAddress, Unwinder as _,
};
use gimli::UnwindContext;

pub(crate) use self::modules::LoadedFile;
use self::modules::{FileCache, ProcessModules};
use crate::sample::{map_changes::UntakenMapChanges, CpuSample};

/// Deeper stacks than this are cut (and marked truncated): it bounds the work per sample.
const MAX_FRAMES: usize = 256;

/// A native frame: its lookup address (a return address minus one, so it points into the call) and, when it
/// falls in a known ELF file, that file and the file offset.
#[derive(Clone)]
pub(crate) struct NativeFrame {
    pub address: u64,
    pub file: Option<(Arc<LoadedFile>, u64)>,
}

/// Why a stack does not reach the thread's root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Truncation {
    /// A caller's frame lies beyond the copied part of the stack.
    StackCopyEnd,
    /// No unwind information, a caller outside every module, or a CFI rule that needs what a sample does not hold.
    UnwindError,
    /// More than `MAX_FRAMES` frames.
    TooDeep,
    /// The process's memory map could not be read (it exited).
    NoMaps,
    /// The process mapped new code between the sample and the reading of its maps (a library unloaded and
    /// another loaded in its place): the maps may not be the ones the sample's addresses belong to.
    MapsChanged,
}

#[derive(Clone)]
pub(crate) struct NativeStack {
    pub frames: Vec<NativeFrame>,
    /// `None` when unwinding reached the end of the stack (the thread's root).
    pub truncation: Option<Truncation>,
}

/// Unwinds samples of any number of processes, sharing loaded ELF files between them.
#[derive(Default)]
pub(crate) struct Unwinder {
    processes: HashMap<u32, ProcessModules>,
    files: FileCache,
    cache: CacheX86_64,
    /// gimli's row-evaluation state for `cfa`, reused across frames.
    cfi_context: UnwindContext<usize>,
    /// The kernel's note of code mappings after a mapping event, taken before each re-read of a process's maps.
    map_changes: Option<UntakenMapChanges>,
}

impl Unwinder {
    /// `later_map_changes`: times (CLOCK_MONOTONIC ns) at which the process is known to have mapped new code,
    /// from lifecycle events not yet handled. If one falls between the sample and the reading of the maps used,
    /// those maps may describe other code than the sample ran: its native frames are not named at all.
    pub(crate) fn unwind(&mut self, sample: &CpuSample, later_map_changes: &[u64]) -> NativeStack {
        let regs = sample.regs;
        let process = self.processes.entry(sample.pid).or_insert_with(|| ProcessModules::new(sample.pid));
        // A process that just exited (a crash) has no maps to read any more: unwind with the ones we had.
        if process.ensure_covers(regs.ip, &mut self.files, self.map_changes.as_ref()).is_err() && !process.has_modules()
        {
            return NativeStack {
                frames: vec![NativeFrame { address: regs.ip, file: None }],
                truncation: Some(Truncation::NoMaps),
            };
        }
        let read_at = process.read_at_ns();
        // Code was mapped after the maps in use were read and before this sample (a re-read put off by the
        // budget), or after this sample and before they were read: they may name other code than it ran.
        let changed_until = process.changed_until_ns();
        if process.unread_change_ns().is_some_and(|change| change <= sample.time_ns)
            || (sample.time_ns < changed_until && changed_until <= read_at)
            || later_map_changes.iter().any(|&change| change > sample.time_ns && change <= read_at)
        {
            return NativeStack { frames: Vec::new(), truncation: Some(Truncation::MapsChanged) };
        }

        let stack = sample.stack;
        let base = sample.stack_base;
        let mut read_stack = |address: u64| -> Result<u64, ()> {
            let offset = address.checked_sub(base).ok_or(())? as usize;
            let bytes = stack.get(offset..offset.checked_add(8).ok_or(())?).ok_or(())?;
            Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
        };
        let mut unwind_regs = UnwindRegsX86_64::new(regs.ip, regs.sp, regs.bp);
        let mut address = FrameAddress::from_instruction_pointer(regs.ip);
        let mut frames = Vec::new();
        let truncation = loop {
            let lookup = address.address_for_lookup();
            frames.push(lookup);
            if frames.len() >= MAX_FRAMES {
                break Some(Truncation::TooDeep);
            }
            // framehop cannot be asked whether it understood a frame's CFI (on failure it silently falls back to
            // frame pointers), so the frames it would get wrong are recognized up front, by their FDE.
            let expression_fde = process.module_at(lookup).and_then(|module| {
                let svma = lookup.wrapping_sub(module.bias);
                Some((module, svma, module.file.cfa_expressions().fde_at(svma)?))
            });
            let caller = match expression_fde {
                Some((module, svma, fde)) => {
                    let first = !address.is_return_address();
                    let elf = &module.file.elf;
                    let context = &mut self.cfi_context;
                    from_cfa(cfa::unwind_frame(elf, fde, svma, first, &mut unwind_regs, context, &mut read_stack))
                }
                None => from_framehop(process.unwinder.unwind_frame(
                    address,
                    &mut unwind_regs,
                    &mut self.cache,
                    &mut read_stack,
                )),
            };
            match caller {
                // A caller outside every known module means the unwinder lost track (a frame it could not
                // describe): what follows would be guesses. The stack ends there, visibly truncated, rather than
                // with made-up frames.
                Ok(Some(caller)) if process.module_at(caller.address_for_lookup()).is_none() => {
                    break Some(Truncation::UnwindError);
                }
                Ok(Some(caller)) => address = caller,
                Ok(None) => break None,
                Err(truncation) => break Some(truncation),
            }
        };
        let frames = frames
            .into_iter()
            .map(|address| {
                let file = process.module_at(address).and_then(|module| {
                    let offset = module.file.elf.svma_to_file_offset(address.wrapping_sub(module.bias))?;
                    Some((module.file.clone(), offset))
                });
                NativeFrame { address, file }
            })
            .collect();
        NativeStack { frames, truncation }
    }

    /// Reads a process's memory map and unwind tables now rather than at its first sample: a process that
    /// crashes soon after must still be unwindable once it is gone.
    pub(crate) fn preload(&mut self, pid: u32) {
        let process = self.processes.entry(pid).or_insert_with(|| ProcessModules::new(pid));
        if let Err(err) = process.ensure_covers(0, &mut self.files, self.map_changes.as_ref()) {
            tracing::debug!("PID {pid}: {err:#}");
        }
    }

    /// `child` was forked by `parent`: it starts with the parent's mappings.
    pub(crate) fn inherit(&mut self, child: u32, parent: u32) {
        if let Some(parent) = self.processes.get(&parent) {
            let modules = ProcessModules::fork_of(parent, child);
            self.processes.insert(child, modules);
        }
    }

    pub(crate) fn take_map_changes_from(&mut self, changes: UntakenMapChanges) {
        self.map_changes = Some(changes);
    }

    /// The process changed its executable mappings at `time_ns` (and, the kernel not sending an event for each,
    /// maybe again until its note is taken): re-read them now (a crash may follow at once) and again at the next
    /// refresh (the mapping may not be complete yet). A process that maps code faster than its budget of immediate
    /// re-reads (`modules::IMMEDIATE_READS_PER_SECOND`) waits for the next refresh instead: each read is the whole
    /// maps file, and a target could otherwise make the agent read it thousands of times a second.
    /// Until then, samples from `time_ns` on are not named with the maps read before it.
    pub(crate) fn mark_stale(&mut self, pid: u32, time_ns: u64) {
        if let Some(process) = self.processes.get_mut(&pid) {
            process.note_change_until(time_ns);
            if process.take_immediate_read() {
                if let Err(err) = process.refresh(&mut self.files, self.map_changes.as_ref()) {
                    tracing::debug!("PID {pid}: {err:#}");
                }
            } else {
                process.note_unread_change(time_ns);
            }
            process.mark_stale();
        }
    }

    /// The executable `pid` runs, as a module (when its maps were read and it maps one).
    pub(crate) fn executable(&self, pid: u32) -> Option<&Arc<crate::aggregate::Module>> {
        self.processes.get(&pid)?.executable()
    }

    /// Every mapping of `pid` as last read (empty if never read): what the crash report places a fault address in.
    pub(crate) fn mappings(&self, pid: u32) -> &[crate::process::maps::Mapping] {
        self.processes.get(&pid).map_or(&[], ProcessModules::mappings)
    }

    /// When the maps of `pid` in use were read (CLOCK_MONOTONIC ns; 0 if never).
    pub(crate) fn maps_read_at(&self, pid: u32) -> u64 {
        self.processes.get(&pid).map_or(0, ProcessModules::read_at_ns)
    }

    /// Re-reads the maps of processes marked stale, while they still exist.
    pub(crate) fn refresh_stale(&mut self) {
        for (pid, process) in self.processes.iter_mut().filter(|(_, p)| p.is_stale()) {
            if let Err(err) = process.refresh(&mut self.files, self.map_changes.as_ref()) {
                tracing::debug!("PID {pid}: {err:#}");
            }
        }
    }

    /// Forgets a process that exited (its files stay cached while another process maps them); returns the files
    /// no process maps any more, whose symbols can go too.
    pub(crate) fn forget_process(&mut self, pid: u32) -> Vec<Arc<LoadedFile>> {
        if self.processes.remove(&pid).is_some() {
            self.files.retain_used()
        } else {
            Vec::new()
        }
    }
}

/// framehop's answer for one frame: the caller's address, `None` at the thread's root, or why the stack ends.
fn from_framehop(result: Result<Option<u64>, framehop::Error>) -> Result<Option<FrameAddress>, Truncation> {
    match result {
        Ok(Some(return_address)) => {
            FrameAddress::from_return_address(return_address).map(Some).ok_or(Truncation::UnwindError)
        }
        Ok(None) => Ok(None),
        Err(framehop::Error::CouldNotReadStack(_)) => Err(Truncation::StackCopyEnd),
        Err(_) => Err(Truncation::UnwindError),
    }
}

/// The same for a frame unwound by its CFA rule.
fn from_cfa(result: Result<cfa::Unwound, cfa::CfaError>) -> Result<Option<FrameAddress>, Truncation> {
    match result {
        // The caller of a signal trampoline was interrupted there, not called: its address is not one past a call.
        Ok(cfa::Unwound::Caller { address, interrupted: true }) => {
            Ok(Some(FrameAddress::from_instruction_pointer(address)))
        }
        Ok(cfa::Unwound::Caller { address, interrupted: false }) => {
            FrameAddress::from_return_address(address).map(Some).ok_or(Truncation::UnwindError)
        }
        Ok(cfa::Unwound::Root) => Ok(None),
        Err(cfa::CfaError::StackRead(_)) => Err(Truncation::StackCopyEnd),
        Err(err) => {
            tracing::trace!("cannot unwind a frame by its CFA rule: {err:?}");
            Err(Truncation::UnwindError)
        }
    }
}

#[cfg(test)]
mod tests {
    use profiler_common::UserRegs;

    use super::*;

    #[test]
    fn a_sample_of_a_dead_process_is_marked_not_crashed() {
        let mut unwinder = Unwinder::default();
        let regs = UserRegs { ip: 0x1234, sp: 0x1000, bp: 0 };
        let sample = CpuSample::snapshot(u32::MAX - 1, 1, "gone".into(), regs, 0x1000, &[], Vec::new(), 0);
        let stack = unwinder.unwind(&sample, &[]);
        assert_eq!(stack.truncation, Some(Truncation::NoMaps));
        assert_eq!(stack.frames.len(), 1);
    }
}
