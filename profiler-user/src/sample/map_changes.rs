//! The kernel's note of the code mappings userspace has not taken yet (the eBPF `UNTAKEN_MAP_CHANGES` map).
//!
//! The kernel sends one event for a process's first code mapping and, until userspace takes the note, only moves
//! its time for the next ones: a target mapping code in a loop costs one event per re-read of its maps, not one per
//! mmap. Whoever re-reads a process's maps takes the note first, so the maps read cover every mapping it counted
//! and the next mapping sends a new event. It also asks whether a code mapping is under way (the eBPF
//! `CODE_MMAPS_IN_FLIGHT`): maps read then may show a mapping whose event is yet to come.
use std::{
    io,
    os::fd::{AsFd, AsRawFd as _, OwnedFd},
};

/// A handle on the kernel's maps of untaken and in-flight code mappings (duplicates of their descriptors).
#[derive(Debug)]
pub(crate) struct UntakenMapChanges {
    untaken: OwnedFd,
    in_flight: OwnedFd,
}

impl UntakenMapChanges {
    pub(crate) fn new(untaken: impl AsFd, in_flight: impl AsFd) -> io::Result<Self> {
        Ok(Self { untaken: untaken.as_fd().try_clone_to_owned()?, in_flight: in_flight.as_fd().try_clone_to_owned()? })
    }

    pub(crate) fn try_clone(&self) -> io::Result<Self> {
        Self::new(&self.untaken, &self.in_flight)
    }

    /// Whether a thread of process `pid` is inside a code mmap now (on error: yes, the safe answer).
    pub(crate) fn in_flight(&self, pid: u32) -> bool {
        let mut count = 0u32;
        match map_elem_op(BPF_MAP_LOOKUP_ELEM, &self.in_flight, &pid, &mut count) {
            Ok(found) => found && count != 0,
            Err(err) => {
                tracing::debug!("reading the code mmaps in flight of PID {pid}: {err}");
                true
            }
        }
    }

    /// Takes the note of process `pid`: when its latest untaken code mapping returned (CLOCK_MONOTONIC ns), or
    /// `None` if there is none.
    pub(crate) fn take(&self, pid: u32) -> Option<u64> {
        let mut last_ns = 0u64;
        match map_elem_op(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &self.untaken, &pid, &mut last_ns) {
            Ok(found) => found.then_some(last_ns),
            Err(err) => {
                tracing::debug!("taking the code mappings of PID {pid}: {err}");
                None
            }
        }
    }
}

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
/// The value and its removal in one step, under the bucket's lock, so no update from the kernel between a lookup
/// and a delete is lost (hash maps: Linux 5.14 and newer; aya offers it for queues only).
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;

/// A `bpf(2)` map-element command on `key`, the value read into `value`: whether the key was there.
fn map_elem_op<K, V>(command: libc::c_long, map: &OwnedFd, key: &K, value: &mut V) -> io::Result<bool> {
    /// The map-element member of the kernel's `union bpf_attr`.
    #[repr(C)]
    struct MapElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: std::ptr::from_ref(key) as u64,
        value: std::ptr::from_mut(value) as u64,
        flags: 0,
    };
    // SAFETY: `attr` is a valid prefix of bpf_attr of the size passed (the kernel checks that what it does not
    // know is zero); `key` and `value` outlive the call, and the callers pass the map's key and value types.
    let result =
        unsafe { libc::syscall(libc::SYS_bpf, command, std::ptr::from_ref(&attr), std::mem::size_of::<MapElemAttr>()) };
    if result == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENOENT) {
        return Ok(false);
    }
    Err(err)
}
