//! Native unwinding: stack copy + user registers → the thread's native frame addresses, leaf first.
//!
//! The kernel sends a copy of the top of the user stack; framehop walks it with each module's DWARF CFI
//! (`.eh_frame`, `.debug_frame`), so targets need no frame pointers. Capture is separate from unwinding: a
//! failure here ends the stack with a visible truncation, never an error for the whole sample.
pub mod elf;
pub mod maps;
pub mod process;

use std::{collections::HashMap, sync::Arc};

use framehop::{FrameAddress, Unwinder as _, x86_64::{CacheX86_64, UnwindRegsX86_64}};

pub use self::process::LoadedFile;
use self::process::{FileCache, ProcessModules};
use crate::sample::CpuSample;

/// Deeper stacks than this are cut (and marked truncated): it bounds the work per sample.
const MAX_FRAMES: usize = 256;

/// A native frame: its lookup address (a return address minus one, so it points into the call) and, when it
/// falls in a known ELF file, that file and the file offset.
#[derive(Clone)]
pub struct NativeFrame {
    pub address: u64,
    pub file: Option<(Arc<LoadedFile>, u64)>,
}

/// Why a stack does not reach the thread's root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Truncation {
    /// A caller's frame lies beyond the copied part of the stack.
    StackCopyEnd,
    /// No unwind information or a bad read (framehop's error).
    UnwindError,
    /// More than `MAX_FRAMES` frames.
    TooDeep,
    /// The process's memory map could not be read (it exited).
    NoMaps,
}

#[derive(Clone)]
pub struct NativeStack {
    pub frames: Vec<NativeFrame>,
    /// `None` when unwinding reached the end of the stack (the thread's root).
    pub truncation: Option<Truncation>,
}

/// Unwinds samples of any number of processes, sharing loaded ELF files between them.
#[derive(Default)]
pub struct Unwinder {
    processes: HashMap<u32, ProcessModules>,
    files: FileCache,
    cache: CacheX86_64,
}

impl Unwinder {
    pub fn unwind(&mut self, sample: &CpuSample) -> NativeStack {
        let regs = sample.regs;
        let process = self.processes.entry(sample.pid).or_insert_with(|| ProcessModules::new(sample.pid));
        // A process that just exited (a crash) has no maps to read any more: unwind with the ones we had.
        if process.ensure_covers(regs.ip, &mut self.files).is_err() && !process.has_modules() {
            return NativeStack { frames: vec![NativeFrame { address: regs.ip, file: None }], truncation: Some(Truncation::NoMaps) };
        }

        let stack = sample.stack;
        let base = sample.stack_base;
        let mut read_stack = |address: u64| -> Result<u64, ()> {
            let offset = address.checked_sub(base).ok_or(())? as usize;
            let bytes = stack.get(offset..offset.checked_add(8).ok_or(())?).ok_or(())?;
            Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
        };
        let mut frames = Vec::new();
        let mut iter = process.unwinder.iter_frames(
            regs.ip,
            UnwindRegsX86_64::new(regs.ip, regs.sp, regs.bp),
            &mut self.cache,
            &mut read_stack,
        );
        let truncation = loop {
            if frames.len() >= MAX_FRAMES {
                break Some(Truncation::TooDeep);
            }
            match iter.next() {
                Ok(Some(address)) => frames.push(lookup_address(address)),
                Ok(None) => break None,
                Err(framehop::Error::CouldNotReadStack(_)) => break Some(Truncation::StackCopyEnd),
                Err(_) => break Some(Truncation::UnwindError),
            }
        };
        // A caller outside every known module means the unwinder lost track (a frame it could not describe, such
        // as a stack-realigning function whose CFA is a DWARF expression): what follows would be guesses. The
        // stack ends there, visibly truncated, rather than with made-up frames.
        let mut truncation = truncation;
        if let Some(lost) = frames.iter().skip(1).position(|&address| process.module_at(address).is_none()) {
            frames.truncate(lost + 1);
            truncation = Some(Truncation::UnwindError);
        }
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
    pub fn preload(&mut self, pid: u32) {
        let process = self.processes.entry(pid).or_insert_with(|| ProcessModules::new(pid));
        if let Err(err) = process.ensure_covers(0, &mut self.files) {
            tracing::debug!("PID {pid}: {err:#}");
        }
    }

    /// `child` was forked by `parent`: it starts with the parent's mappings.
    pub fn inherit(&mut self, child: u32, parent: u32) {
        if let Some(parent) = self.processes.get(&parent) {
            let modules = ProcessModules::fork_of(parent, child);
            self.processes.insert(child, modules);
        }
    }

    /// The process is changing its executable mappings: re-read them now (a crash may follow at once) and
    /// again at the next refresh (the mapping may not be complete yet).
    pub fn mark_stale(&mut self, pid: u32) {
        if let Some(process) = self.processes.get_mut(&pid) {
            if let Err(err) = process.refresh(&mut self.files) {
                tracing::debug!("PID {pid}: {err:#}");
            }
            process.mark_stale();
        }
    }

    /// Re-reads the maps of processes marked stale, while they still exist.
    pub fn refresh_stale(&mut self) {
        for (pid, process) in self.processes.iter_mut().filter(|(_, p)| p.is_stale()) {
            if let Err(err) = process.refresh(&mut self.files) {
                tracing::debug!("PID {pid}: {err:#}");
            }
        }
    }

    /// Forgets a process that exited (its files stay cached while another process maps them).
    pub fn forget_process(&mut self, pid: u32) {
        if self.processes.remove(&pid).is_some() {
            self.files.retain_used();
        }
    }
}

fn lookup_address(address: FrameAddress) -> u64 {
    address.address_for_lookup()
}

#[cfg(test)]
mod tests {
    use profiler_common::UserRegs;

    use super::*;

    #[test]
    fn a_sample_of_a_dead_process_is_marked_not_crashed() {
        let mut unwinder = Unwinder::default();
        let sample = CpuSample {
            pid: u32::MAX - 1,
            tid: 1,
            cpu: 0,
            time_ns: 0,
            comm: "gone".into(),
            regs: UserRegs { ip: 0x1234, sp: 0x1000, bp: 0 },
            user_mode: true,
            stack_base: 0x1000,
            stack: &[],
            kernel_stack_id: None,
            py_frames: Vec::new(),
            py_flags: 0,
            crash: None,
            code_copies: Vec::new(),
        };
        let stack = unwinder.unwind(&sample);
        assert_eq!(stack.truncation, Some(Truncation::NoMaps));
        assert_eq!(stack.frames.len(), 1);
    }
}
