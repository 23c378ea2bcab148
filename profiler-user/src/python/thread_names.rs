//! Python's own thread names (`threading.Thread.name`), read from the target's memory the way py-spy reads them:
//! `sys.modules['threading']._active` maps each running thread's ident to its `Thread`, whose `_name` is the name
//! and whose `_native_id` (set on Linux as the thread starts, 3.8+) is its kernel TID.
//!
//! The walk: the interpreter's `sys.modules` dict → the `threading` module → its dict (`md_dict`, at 16 in every
//! version) → `_active` → each `Thread`'s attributes, wherever the version keeps them (`ObjectLayout`: a dict at
//! `tp_dictoffset`, 3.11's and 3.12's managed values, 3.13's inline values) → `_name` (a `str`) and `_native_id`
//! (an `int`). The `_active` dict's address is kept per process (a module global, never replaced), so a refresh is
//! a handful of reads per thread; `sys.modules` is searched again only when that address stops reading as a dict.
//!
//! Everything here is read from a process that may be hostile: every read goes through a `Reader` that gives up
//! after `MAX_READS`, every count and length is bounded before anything is allocated, and a failure is no name
//! (the kernel's `comm` stays), never an error or a panic.
// Values here come from a target (its files, its memory, its maps) or the kernel: no implicit arithmetic.
#![deny(clippy::arithmetic_side_effects)]
use std::{
    cell::Cell,
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use profiler_common::NO_OFFSET;

use super::{
    code::CompactStr,
    detect::Interpreter,
    layout::{AttributeStorage, CodeLayout, DictKeysFormat, ObjectLayout},
};
use crate::process::memory::{self, u32_at, u64_at};

/// Reads of target memory one walk may make: `sys.modules` of a large app holds a few thousand modules, each key
/// one read; a refresh from a cached `_active` makes about four per thread.
const MAX_READS: u32 = 20_000;
/// Entries read from one dict.
const MAX_ENTRIES: u64 = 1 << 14;
/// Threads taken from `_active`.
const MAX_THREADS: usize = 4096;
/// Characters of a thread name read (the sanitizer then bounds it to 1 KiB).
const MAX_NAME_CHARS: u64 = 1024;
/// `Py_TPFLAGS_INLINE_VALUES` (3.13+) and `Py_TPFLAGS_MANAGED_DICT` (3.11+).
const TPFLAGS_INLINE_VALUES: u64 = 1 << 2;
const TPFLAGS_MANAGED_DICT: u64 = 1 << 4;
/// `PyTypeObject` fields, the same from 3.8 to 3.15 in 64-bit default builds (and `CodeLayout::head_extra` further
/// in free-threaded ones), as is `PyModuleObject.md_dict`.
const TP_NAME: u64 = 24;
const TP_BASICSIZE: u64 = 32;
const TP_FLAGS: u64 = 168;
const TP_DICTOFFSET: u64 = 288;
const MD_DICT: u64 = 16;

/// Where to read: a process (process_vm_readv), or for tests and fuzzing, bytes laid out at chosen addresses.
pub(crate) trait Memory {
    fn read(&self, address: u64, len: usize) -> Option<Vec<u8>>;
}

/// A live process's memory.
pub(crate) struct ProcessMemory(pub u32);

impl Memory for ProcessMemory {
    fn read(&self, address: u64, len: usize) -> Option<Vec<u8>> {
        memory::read(self.0, address, len).ok()
    }
}

/// What the walk needs of an interpreter: its layouts and the addresses of the types it checks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target<'a> {
    pub objects: &'a ObjectLayout,
    pub code: &'a CodeLayout,
    /// The main interpreter (`_PyRuntime.interpreters.head`).
    pub interp: u64,
    pub unicode_type: Option<u64>,
    pub dict_type: Option<u64>,
    pub long_type: Option<u64>,
}

/// The names found, by kernel TID, the kernel TIDs by `threading` ident (the pthread id, which is all a
/// 3.8–3.10 thread state knows its thread by), and the `_active` dict they came from (for the next refresh).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Found {
    pub active: u64,
    pub names: HashMap<u32, String>,
    pub tids: HashMap<u64, u32>,
}

/// Reads the names of every thread in `threading._active`, starting from `active` when it still reads as a dict
/// (a previous walk's), else from `sys.modules`. `None`: `threading` not imported, or something unreadable.
pub(crate) fn read(memory: &impl Memory, target: &Target, active: Option<u64>) -> Option<Found> {
    let reader = Reader::new(memory, target, MAX_READS);
    if let Some(active) = active {
        if let Some((names, tids)) = reader.threads_in(active) {
            return Some(Found { active, names, tids });
        }
    }
    let active = reader.find_active()?;
    let (names, tids) = reader.threads_in(active)?;
    Some(Found { active, names, tids })
}

/// The kernel TID of each thread `threading` knows in `pid`, by its ident (pthread id), read now: how `profiler
/// dump` matches a 3.8–3.10 thread state (which holds the pthread id only) to its kernel thread. Empty when
/// `threading` is not imported or cannot be read.
pub(crate) fn tids_by_ident(pid: u32, interpreter: &Interpreter) -> HashMap<u64, u32> {
    target_of(pid, interpreter)
        .and_then(|target| read(&ProcessMemory(pid), &target, None))
        .map_or_else(HashMap::new, |found| found.tids)
}

pub(super) fn target_of(pid: u32, interpreter: &Interpreter) -> Option<Target<'_>> {
    let kernel = &interpreter.layouts.kernel;
    let head = memory::read(pid, kernel.runtime.checked_add(kernel.runtime_interpreters_head)?, 8).ok()?;
    Some(Target {
        objects: &interpreter.layouts.objects,
        code: &interpreter.layouts.code,
        interp: u64_at(&head, 0).filter(|&interp| interp != 0)?,
        unicode_type: interpreter.unicode_type,
        dict_type: interpreter.dict_type,
        long_type: interpreter.long_type,
    })
}

/// Whether `name` is one `threading` makes up for a thread given none (`MainThread`, `Thread-N`,
/// `Thread-N (target)`, `Dummy-N`): such a name says less than an OS name the program set itself.
pub(crate) fn is_default_name(name: &str) -> bool {
    let numbered = |rest: &str| {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0 && (digits == rest.len() || rest[digits..].starts_with(" ("))
    };
    name == "MainThread"
        || name.strip_prefix("Thread-").is_some_and(numbered)
        || name.strip_prefix("Dummy-").is_some_and(numbered)
}

/// Reads of one walk, each counted against its budget; shared with `asyncio_tasks`, which walks the same kinds of
/// objects (module dicts, instance attributes, strings, ints).
pub(super) struct Reader<'a, M> {
    memory: &'a M,
    pub(super) target: &'a Target<'a>,
    reads_left: Cell<u32>,
}

impl<'a, M: Memory> Reader<'a, M> {
    pub(super) fn new(memory: &'a M, target: &'a Target<'a>, budget: u32) -> Self {
        Reader { memory, target, reads_left: Cell::new(budget) }
    }

    /// Whether the budget is spent (a walk stopped by it says so rather than showing a partial result as whole).
    pub(super) fn exhausted(&self) -> bool {
        self.reads_left.get() == 0
    }

    pub(super) fn read(&self, address: u64, len: u64) -> Option<Vec<u8>> {
        let left = self.reads_left.get().checked_sub(1)?;
        self.reads_left.set(left);
        self.memory.read(address, usize::try_from(len).ok()?)
    }

    pub(super) fn u64(&self, address: Option<u64>) -> Option<u64> {
        u64_at(&self.read(address?, 8)?, 0)
    }

    /// `threading._active`, found through `sys.modules`.
    fn find_active(&self) -> Option<u64> {
        self.module_global("threading", "_active")
    }

    /// The global `name` of the module `module` (by its `sys.modules` key). `None` also when the module is not
    /// imported.
    pub(super) fn module_global(&self, module: &str, name: &str) -> Option<u64> {
        self.lookup(self.module_dict(module)?, name)
    }

    /// The globals (`md_dict`) of the module `module` (by its `sys.modules` key).
    pub(super) fn module_dict(&self, module: &str) -> Option<u64> {
        let objects = self.target.objects;
        if objects.interp_modules == NO_OFFSET {
            return None;
        }
        let modules = self.u64(self.target.interp.checked_add(objects.interp_modules))?;
        let module = self.lookup(modules, module)?;
        self.u64(module.checked_add(self.target.code.field(MD_DICT)))
    }

    /// The names of the threads in the `_active` dict at `active`, by TID, and their TIDs by ident (the dict's
    /// keys).
    fn threads_in(&self, active: u64) -> Option<(HashMap<u32, String>, HashMap<u64, u32>)> {
        let (mut names, mut tids) = (HashMap::new(), HashMap::new());
        for (ident, thread) in self.dict_items(active)?.into_iter().take(MAX_THREADS) {
            let Some(attributes) = self.attributes(thread) else { continue };
            let (mut name, mut tid) = (None, None);
            for (key, value) in attributes {
                if name.is_none() && self.is_ascii_str(key, "_name") {
                    name = self.string(value);
                } else if tid.is_none() && self.is_ascii_str(key, "_native_id") {
                    tid = self.int(value).and_then(|tid| u32::try_from(tid).ok()).filter(|&tid| tid != 0);
                }
                if name.is_some() && tid.is_some() {
                    break;
                }
            }
            let Some(tid) = tid else { continue };
            if let Some(ident) = self.int(ident).filter(|&ident| ident != 0) {
                tids.insert(ident, tid);
            }
            if let Some(name) = name {
                names.insert(tid, crate::sanitize::owned(name));
            }
        }
        Some((names, tids))
    }

    /// The value of the ASCII `str` key `name` in the dict at `dict`.
    pub(super) fn lookup(&self, dict: u64, name: &str) -> Option<u64> {
        self.dict_items(dict)?.into_iter().find(|&(key, _)| self.is_ascii_str(key, name)).map(|(_, value)| value)
    }

    /// The (key, value) pairs of the dict at `dict`, deleted entries left out.
    pub(super) fn dict_items(&self, dict: u64) -> Option<Vec<(u64, u64)>> {
        let code = self.target.code;
        let head = self.read(dict, code.field(48))?;
        if !self.has_type(&head, self.target.dict_type, b"dict") {
            return None;
        }
        self.keys_items(u64_at(&head, code.field(32))?, u64_at(&head, code.field(40))?)
    }

    /// The pairs of a keys object, with the values from `values` when not 0 (a split dict's, or an instance's).
    fn keys_items(&self, keys: u64, values: u64) -> Option<Vec<(u64, u64)>> {
        let (entries, count, entry_len, key_at) = match self.target.objects.dict_keys {
            DictKeysFormat::Sized => {
                let head = self.read(keys, 40)?;
                let size = u64_at(&head, 8)?;
                let count = u64_at(&head, 32)?;
                if size > 1 << 32 || count > size {
                    return None;
                }
                let index_bytes = match size {
                    0..=0xff => 1,
                    0x100..=0xffff => 2,
                    0x1_0000..=0xffff_ffff => 4,
                    _ => 8,
                };
                (keys.checked_add(40)?.checked_add(size.checked_mul(index_bytes)?)?, count, 24, 8)
            }
            DictKeysFormat::Log2 => {
                let head = self.read(keys, 32)?;
                let log2_index_bytes = u32::from(*head.get(9)?);
                let general = *head.get(10)? == 0;
                let count = u64_at(&head, 24)?;
                let indices = 1u64.checked_shl(log2_index_bytes).filter(|&bytes| bytes <= 1 << 36)?;
                let (entry_len, key_at) = if general { (24, 8) } else { (16, 0) };
                (keys.checked_add(32)?.checked_add(indices)?, count, entry_len, key_at)
            }
        };
        if count > MAX_ENTRIES {
            return None;
        }
        let mut count = count;
        if values != 0 && self.target.objects.values_start != 0 {
            // 3.13+: the values' own capacity bounds them too.
            count = count.min(u64::from(*self.read(values, 1)?.first()?));
        }
        let table = if count == 0 { Vec::new() } else { self.read(entries, count.checked_mul(entry_len)?)? };
        let split = if values == 0 || count == 0 {
            None
        } else {
            Some(self.read(values.checked_add(self.target.objects.values_start)?, count.checked_mul(8)?)?)
        };
        let mut items = Vec::new();
        for index in 0..count {
            let entry = index.checked_mul(entry_len)?;
            let key = u64_at(&table, entry.checked_add(key_at)?)?;
            let value = match &split {
                Some(split) => u64_at(split, index.checked_mul(8)?)?,
                None => u64_at(&table, entry.checked_add(key_at)?.checked_add(8)?)?,
            };
            if key != 0 && value != 0 {
                items.push((key, value));
            }
        }
        Some(items)
    }

    /// The attributes of the instance at `object`, as (key, value) pairs.
    pub(super) fn attributes(&self, object: u64) -> Option<Vec<(u64, u64)>> {
        let code = self.target.code;
        let type_address = self.u64(object.checked_add(code.ob_type()))?;
        let objects = self.target.objects;
        let type_len = code.field(TP_DICTOFFSET).max(objects.cached_keys).checked_add(8)?;
        let ty = self.read(type_address, type_len)?;
        let flags = u64_at(&ty, code.field(TP_FLAGS))?;
        let cached_keys = || u64_at(&ty, objects.cached_keys).filter(|&keys| keys != 0);
        let managed_dict = || self.dict_items(self.u64(object.checked_sub(objects.managed_dict))?);
        match objects.attributes {
            AttributeStorage::Managed311 if flags & TPFLAGS_MANAGED_DICT != 0 => {
                let values = self.u64(object.checked_sub(32))?;
                if values != 0 {
                    self.keys_items(cached_keys()?, values)
                } else {
                    managed_dict()
                }
            }
            AttributeStorage::DictOrValues312 if flags & TPFLAGS_MANAGED_DICT != 0 => {
                let tagged = self.u64(object.checked_sub(24))?;
                if tagged & 1 != 0 {
                    self.keys_items(cached_keys()?, tagged.checked_add(1)?)
                } else {
                    self.dict_items(tagged)
                }
            }
            AttributeStorage::Inline313 if flags & (TPFLAGS_INLINE_VALUES | TPFLAGS_MANAGED_DICT) != 0 => {
                if flags & TPFLAGS_INLINE_VALUES != 0 {
                    let values = object.checked_add(u64_at(&ty, code.field(TP_BASICSIZE))?)?;
                    let valid = *self.read(values, 4)?.get(3)?;
                    if valid != 0 {
                        return self.keys_items(cached_keys()?, values);
                    }
                }
                managed_dict()
            }
            _ => {
                // A dict at tp_dictoffset: positive for the fixed-size objects threads are.
                let offset = u64_at(&ty, code.field(TP_DICTOFFSET))?;
                if offset == 0 || offset > 1 << 20 {
                    return None;
                }
                self.dict_items(self.u64(object.checked_add(offset))?)
            }
        }
    }

    /// Whether the object whose first bytes are `head` has the type at `known`, or when that address is not
    /// known, a type named `name`.
    pub(super) fn has_type(&self, head: &[u8], known: Option<u64>, name: &[u8]) -> bool {
        let code = self.target.code;
        let Some(ty) = u64_at(head, code.ob_type()) else { return false };
        match known {
            Some(known) => ty == known,
            None => {
                let Some(name_ptr) = self.u64(ty.checked_add(code.field(TP_NAME))) else { return false };
                let Ok(len) = u64::try_from(name.len().saturating_add(1)) else { return false };
                self.read(name_ptr, len).is_some_and(|bytes| bytes.strip_suffix(&[0]) == Some(name))
            }
        }
    }

    /// Whether `address` holds a compact ASCII `str` equal to `expected`.
    pub(super) fn is_ascii_str(&self, address: u64, expected: &str) -> bool {
        let layout = self.target.code;
        let Ok(len) = u64::try_from(expected.len()) else { return false };
        let Some(total) = layout.ascii_data.checked_add(len) else { return false };
        let Some(bytes) = self.read(address, total) else { return false };
        let state = u32_at(&bytes, layout.field(32)).unwrap_or(0);
        let (_, compact, ascii) = layout.str_state(state);
        let compact_ascii = compact && ascii;
        compact_ascii
            && u64_at(&bytes, layout.field(16)) == Some(len)
            && self.has_type(&bytes, self.target.unicode_type, b"str")
            && usize::try_from(layout.ascii_data).ok().and_then(|at| bytes.get(at..)) == Some(expected.as_bytes())
    }

    /// A compact `str` of any kind (a thread name may be any text).
    pub(super) fn string(&self, address: u64) -> Option<String> {
        let layout = self.target.code;
        // The shorter header first: a short ASCII string may end near the end of its mapping.
        let head = self.read(address, layout.ascii_data)?;
        if !self.has_type(&head, self.target.unicode_type, b"str") {
            return None;
        }
        let string = CompactStr::parse(&head, MAX_NAME_CHARS, layout)?;
        let (start, size) = string.data(address, layout)?;
        string.decode(self.read(start, size)?)
    }

    /// A non-negative `int` of at most two 30-bit digits (a TID needs one).
    pub(super) fn int(&self, address: u64) -> Option<u64> {
        let code = self.target.code;
        let bytes = self.read(address, code.field(32))?;
        if !self.has_type(&bytes, self.target.long_type, b"int") {
            return None;
        }
        let size = u64_at(&bytes, code.field(16))?;
        let digits = if self.target.objects.long_tag {
            // lv_tag: sign in the low two bits (0 positive, 1 zero, 2 negative), digit count from bit 3.
            match size & 3 {
                0 => size >> 3,
                1 => return Some(0),
                _ => return None,
            }
        } else {
            // ob_size: the digit count, negative for negative numbers.
            size
        };
        let digit = |at: u64| u32_at(&bytes, code.field(at)).map(|d| u64::from(d & 0x3fff_ffff));
        match digits {
            0 => Some(0),
            1 => digit(24),
            2 => Some(digit(24)? | digit(28)? << 30),
            _ => None,
        }
    }
}

/// How often a process's names may be read again because a sample came from a thread with no name yet. While
/// `threading._active` cannot be found (not imported yet, or never: each search reads every key of `sys.modules`),
/// the wait doubles after each miss, up to `REFRESH_KNOWN`.
const REFRESH_UNKNOWN: Duration = Duration::from_secs(1);
/// How old names may get before a sample reads them again anyway (a renamed thread, a reused TID).
const REFRESH_KNOWN: Duration = Duration::from_secs(30);

/// Python thread names of every profiled process, read at most once a second per process.
#[derive(Default)]
pub(crate) struct ThreadNames {
    processes: HashMap<u32, ProcessNames>,
}

#[derive(Default)]
struct ProcessNames {
    names: HashMap<u32, Arc<str>>,
    active: Option<u64>,
    read_at: Option<Instant>,
    /// Reads in a row that found no `_active`.
    misses: u32,
}

impl ProcessNames {
    /// How long after the last read a thread without a name may have the names read again.
    fn unknown_wait(&self) -> Duration {
        REFRESH_UNKNOWN.saturating_mul(1u32.checked_shl(self.misses).unwrap_or(u32::MAX)).min(REFRESH_KNOWN)
    }
}

impl ThreadNames {
    /// The Python name of thread `tid` of `pid`, reading the process's names first when `tid` has none yet (at
    /// most every `REFRESH_UNKNOWN`, or at once when `urgent`: a crash, after which the process cannot be read) or
    /// they are older than `REFRESH_KNOWN`.
    pub(crate) fn name(&mut self, pid: u32, tid: u32, interpreter: &Interpreter, urgent: bool) -> Option<Arc<str>> {
        let process = self.processes.entry(pid).or_default();
        let age = process.read_at.map(|at| at.elapsed());
        let unknown = !process.names.contains_key(&tid);
        let due = match age {
            None => true,
            Some(age) => age >= REFRESH_KNOWN || (unknown && (urgent || age >= process.unknown_wait())),
        };
        if due {
            process.read_at = Some(Instant::now());
            let found =
                target_of(pid, interpreter).and_then(|target| read(&ProcessMemory(pid), &target, process.active));
            match found {
                Some(found) => {
                    process.active = Some(found.active);
                    process.misses = 0;
                    process.names = found.names.into_iter().map(|(tid, name)| (tid, Arc::from(name))).collect();
                }
                None => {
                    process.active = None;
                    process.misses = process.misses.saturating_add(1).min(8);
                }
            }
        }
        process.names.get(&tid).cloned()
    }

    pub(crate) fn forget_process(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }
}

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fake {
    //! Memory made of byte blocks at chosen addresses, and the layouts of each version without a live
    //! interpreter, for tests and the fuzz target.
    use std::collections::BTreeMap;

    use super::Memory;
    use crate::python::layout::{for_version, AttributeStorage, DictKeysFormat, Layouts, ObjectLayout, Version};

    /// The layouts of 3.`minor` (8–15); 3.13+ take 3.12's code layout (only its string offsets are used here)
    /// and the object offsets of Debian's builds.
    pub(crate) fn layouts(minor: u8) -> Layouts {
        if minor < 13 {
            return for_version(Version { major: 3, minor }, 0, None).expect("3.8 to 3.12 have tables");
        }
        let mut layouts = for_version(Version { major: 3, minor: 12 }, 0, None).expect("3.12 has a table");
        let (interp_modules, cached_keys) = match minor {
            13 => (7656, 880),
            14 => (7688, 880),
            _ => (7592, 888),
        };
        layouts.objects = ObjectLayout {
            interp_modules,
            dict_keys: DictKeysFormat::Log2,
            values_start: 8,
            attributes: AttributeStorage::Inline313,
            cached_keys,
            long_tag: true,
            managed_dict: 24,
        };
        layouts
    }

    /// Where a fuzz input's memory starts.
    pub(crate) const FUZZ_BASE: u64 = 0x10_0000;

    #[derive(Default)]
    pub(crate) struct FakeMemory {
        pub blocks: BTreeMap<u64, Vec<u8>>,
    }

    impl Memory for FakeMemory {
        fn read(&self, address: u64, len: usize) -> Option<Vec<u8>> {
            let (&start, bytes) = self.blocks.range(..=address).next_back()?;
            let from = usize::try_from(address.checked_sub(start)?).ok()?;
            bytes.get(from..from.checked_add(len)?).map(<[u8]>::to_vec)
        }
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // the fake heap's own addresses, chosen by the test
mod tests {
    use super::{
        fake::{FakeMemory, FUZZ_BASE},
        *,
    };
    use crate::python::layout::Layouts;

    /// A fake heap: objects laid out at increasing addresses, as a version of CPython lays them out.
    struct Heap {
        memory: FakeMemory,
        next: u64,
        layouts: Layouts,
        types: [u64; 3],
    }

    const STR: usize = 0;
    const DICT: usize = 1;
    const INT: usize = 2;

    fn words(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    impl Heap {
        fn new(minor: u8) -> Self {
            let layouts = super::fake::layouts(minor);
            let mut heap = Self { memory: FakeMemory::default(), next: FUZZ_BASE, layouts, types: [0; 3] };
            for (at, name) in [(STR, "str"), (DICT, "dict"), (INT, "int")] {
                let name = heap.alloc(format!("{name}\0").into_bytes());
                let mut ty = vec![0u8; 896];
                ty[24..32].copy_from_slice(&name.to_le_bytes());
                heap.types[at] = heap.alloc(ty);
            }
            heap
        }

        fn alloc(&mut self, bytes: Vec<u8>) -> u64 {
            let at = self.next;
            self.next += (bytes.len() as u64).next_multiple_of(16) + 64;
            self.memory.blocks.insert(at, bytes);
            at
        }

        /// Room before the object (3.11+ keep managed values and dicts there).
        fn alloc_with_prefix(&mut self, prefix: [u64; 4], object: Vec<u8>) -> u64 {
            let mut bytes = words(&prefix);
            bytes.extend(object);
            self.alloc(bytes) + 32
        }

        fn str(&mut self, text: &str) -> u64 {
            let ascii = text.is_ascii();
            let mut state: u32 = 1 << 5;
            let data = if ascii {
                state |= 1 << 6 | 1 << 2;
                text.as_bytes().to_vec()
            } else {
                state |= 2 << 2;
                text.encode_utf16().flat_map(u16::to_le_bytes).collect()
            };
            let header = if ascii { self.layouts.code.ascii_data } else { self.layouts.code.compact_data } as usize;
            let mut bytes = words(&[1, self.types[STR], text.chars().count() as u64, u64::MAX]);
            bytes.extend(u64::from(state).to_le_bytes());
            bytes.resize(header, 0);
            bytes.extend(data);
            bytes.extend([0, 0, 0, 0]);
            self.alloc(bytes)
        }

        fn int(&mut self, value: u32) -> u64 {
            let size = if self.layouts.objects.long_tag { 1 << 3 } else { 1 };
            let mut bytes = words(&[1, self.types[INT], size]);
            bytes.extend(value.to_le_bytes());
            bytes.extend([0; 4]);
            self.alloc(bytes)
        }

        /// A keys object holding `keys` (and `values`, when combined); 8 slots, one-byte indices.
        fn keys(&mut self, keys: &[u64], values: Option<&[u64]>) -> u64 {
            let count = keys.len() as u64;
            let mut bytes = match self.layouts.objects.dict_keys {
                DictKeysFormat::Sized => words(&[1, 8, 0, 0, count]),
                // log2 size 3, log2 index bytes 3, kind 1 (unicode) or 2 (split)
                DictKeysFormat::Log2 => {
                    let kind: u64 = if values.is_some() { 1 } else { 2 };
                    words(&[1, 3 | 3 << 8 | kind << 16, 0, count])
                }
            };
            bytes.extend([0u8; 8]); // indices
            for (i, &key) in keys.iter().enumerate() {
                let value = values.map_or(0, |v| v[i]);
                match self.layouts.objects.dict_keys {
                    DictKeysFormat::Sized => bytes.extend(words(&[0x1234, key, value])),
                    DictKeysFormat::Log2 => bytes.extend(words(&[key, value])),
                }
            }
            self.alloc(bytes)
        }

        fn values(&mut self, values: &[u64]) -> u64 {
            let mut bytes = Vec::new();
            if self.layouts.objects.values_start == 8 {
                bytes.extend(words(&[values.len() as u64 | (values.len() as u64) << 8 | 1 << 24]));
            }
            bytes.extend(words(values));
            self.alloc(bytes)
        }

        fn dict(&mut self, items: &[(u64, u64)]) -> u64 {
            let (keys, values): (Vec<u64>, Vec<u64>) = items.iter().copied().unzip();
            let keys = self.keys(&keys, Some(&values));
            self.alloc(words(&[1, self.types[DICT], items.len() as u64, 0, keys, 0]))
        }

        fn split_dict(&mut self, keys: u64, values: &[u64]) -> u64 {
            let values = self.values(values);
            self.alloc(words(&[1, self.types[DICT], 2, 0, keys, values]))
        }

        fn str_dict(&mut self, items: &[(&str, u64)]) -> u64 {
            let items: Vec<(u64, u64)> = items.iter().map(|&(k, v)| (self.str(k), v)).collect();
            self.dict(&items)
        }

        /// A `Thread` type: instance dict at 16, managed values, or inline values (basicsize 16), by version.
        fn thread_type(&mut self, cached_keys: u64) -> u64 {
            let mut ty = vec![0u8; 896];
            let flags: u64 = match self.layouts.objects.attributes {
                AttributeStorage::DictOffset => 0,
                AttributeStorage::Managed311 | AttributeStorage::DictOrValues312 => TPFLAGS_MANAGED_DICT,
                AttributeStorage::Inline313 => TPFLAGS_MANAGED_DICT | TPFLAGS_INLINE_VALUES,
            };
            ty[32..40].copy_from_slice(&16u64.to_le_bytes());
            ty[168..176].copy_from_slice(&flags.to_le_bytes());
            ty[288..296].copy_from_slice(&16u64.to_le_bytes());
            let at = self.layouts.objects.cached_keys as usize;
            ty[at..at + 8].copy_from_slice(&cached_keys.to_le_bytes());
            self.alloc(ty)
        }

        /// The interpreter, `sys.modules` with `threading` in it, and `threading._active` = `threads` (keyed by
        /// idents `IDENT`, `IDENT + 1`, ...).
        fn interpreter(&mut self, threads: &[u64]) -> (u64, u64) {
            let items: Vec<(u64, u64)> =
                threads.iter().enumerate().map(|(i, &t)| (self.int(IDENT + i as u32), t)).collect();
            let active = self.dict(&items);
            let limbo = self.dict(&[]);
            let module_dict = self.str_dict(&[("__name__", 1), ("_limbo", limbo), ("_active", active)]);
            let module = self.alloc(words(&[1, 0x999, module_dict]));
            let other = self.alloc(words(&[1, 0x999, 0]));
            let modules = self.str_dict(&[("sys", other), ("threading_", other), ("threading", module)]);
            let mut interp = vec![0u8; self.layouts.objects.interp_modules as usize + 8];
            let at = self.layouts.objects.interp_modules as usize;
            interp[at..at + 8].copy_from_slice(&modules.to_le_bytes());
            (self.alloc(interp), active)
        }

        fn read(&self, interp: u64, known_types: bool, active: Option<u64>) -> Option<Found> {
            let known = |at: usize| known_types.then_some(self.types[at]);
            let target = Target {
                objects: &self.layouts.objects,
                code: &self.layouts.code,
                interp,
                unicode_type: known(STR),
                dict_type: known(DICT),
                long_type: known(INT),
            };
            read(&self.memory, &target, active)
        }
    }

    /// The first thread's ident in the fake `_active` (a pthread id is an address in practice; any int will do).
    const IDENT: u32 = 0x7f00;

    fn expected(pairs: &[(u32, &str)]) -> HashMap<u32, String> {
        pairs.iter().map(|&(tid, name)| (tid, name.to_owned())).collect()
    }

    /// Two threads: one with its own dict (combined), one with split values under the type's shared keys.
    fn two_threads(minor: u8) -> (Heap, u64, u64) {
        let mut heap = Heap::new(minor);
        let (target_key, name_key, id_key) = (heap.str("_target"), heap.str("_name"), heap.str("_native_id"));
        let shared = heap.keys(&[target_key, name_key, id_key], None);
        let ty = heap.thread_type(shared);
        let (first_name, first_id) = (heap.str("scheduler"), heap.int(4242));
        let (second_name, second_id) = (heap.str("AnyIO worker thread"), heap.int(4243));
        let own = heap.dict(&[(target_key, 7), (name_key, first_name), (id_key, first_id)]);
        let first = match heap.layouts.objects.attributes {
            AttributeStorage::DictOffset => heap.alloc(words(&[1, ty, own, 0])),
            AttributeStorage::Managed311 => heap.alloc_with_prefix([0, own, 0, 0], words(&[1, ty])),
            AttributeStorage::DictOrValues312 => heap.alloc_with_prefix([0, own, 0, 0], words(&[1, ty])),
            // Inline values no longer valid (a dict was made): the managed dict.
            AttributeStorage::Inline313 => heap.alloc_with_prefix([0, own, 0, 0], words(&[1, ty, 3 | 3 << 8])),
        };
        let values = [7, second_name, second_id];
        let second = match heap.layouts.objects.attributes {
            AttributeStorage::DictOffset => {
                let split = heap.split_dict(shared, &values);
                heap.alloc(words(&[1, ty, split, 0]))
            }
            AttributeStorage::Managed311 => {
                let values = heap.values(&values);
                heap.alloc_with_prefix([values, 0, 0, 0], words(&[1, ty]))
            }
            AttributeStorage::DictOrValues312 => {
                let values = heap.values(&values);
                heap.alloc_with_prefix([0, values - 1, 0, 0], words(&[1, ty]))
            }
            AttributeStorage::Inline313 => {
                let mut object = words(&[1, ty, 3 | 3 << 8 | 1 << 16 | 1 << 24]);
                object.extend(words(&values));
                heap.alloc_with_prefix([0; 4], object)
            }
        };
        let (interp, active) = heap.interpreter(&[first, second]);
        (heap, interp, active)
    }

    #[test]
    fn reads_thread_names_as_each_version_keeps_them() {
        for minor in 8..=15 {
            let (heap, interp, active) = two_threads(minor);
            let want = expected(&[(4242, "scheduler"), (4243, "AnyIO worker thread")]);
            for known_types in [true, false] {
                let found = heap.read(interp, known_types, None);
                let tids = HashMap::from([(u64::from(IDENT), 4242), (u64::from(IDENT) + 1, 4243)]);
                let want = Some(Found { active, names: want.clone(), tids });
                assert_eq!(found, want, "3.{minor}, types known: {known_types}");
            }
            // From the remembered _active; a stale address falls back to sys.modules.
            assert_eq!(heap.read(interp, true, Some(active)).unwrap().names, want, "3.{minor}");
            assert_eq!(heap.read(interp, true, Some(interp)).unwrap().active, active, "3.{minor}");
        }
    }

    #[test]
    fn reads_names_beyond_ascii_and_escapes_control_characters() {
        let mut heap = Heap::new(12);
        let (name_key, id_key) = (heap.str("_name"), heap.str("_native_id"));
        let ty = heap.thread_type(0);
        let mut threads = Vec::new();
        for (tid, name) in [(11, "Überwachung→"), (12, "bad\nname")] {
            let (name, id) = (heap.str(name), heap.int(tid));
            let dict = heap.dict(&[(name_key, name), (id_key, id)]);
            threads.push(heap.alloc_with_prefix([0, dict, 0, 0], words(&[1, ty])));
        }
        let (interp, _) = heap.interpreter(&threads);
        let found = heap.read(interp, true, None).unwrap();
        assert_eq!(found.names, expected(&[(11, "Überwachung→"), (12, "bad\\nname")]));
    }

    #[test]
    fn garbage_gives_no_names_rather_than_a_panic() {
        let (mut heap, interp, active) = two_threads(11);
        // Nothing at the interpreter, or no threading module.
        assert_eq!(heap.read(0x10, true, None), None);
        let empty = heap.str_dict(&[("os", 1)]);
        let mut interp_bytes = vec![0u8; 896];
        interp_bytes[888..].copy_from_slice(&empty.to_le_bytes());
        let no_threading = heap.alloc(interp_bytes);
        assert_eq!(heap.read(no_threading, true, None), None);
        // A dict of a wrong type, or claiming far too many entries.
        let not_a_dict = heap.alloc(words(&[1, 0x4444, 1, 0, 0, 0]));
        assert_eq!(heap.read(interp, true, Some(not_a_dict)).unwrap().active, active);
        let huge_keys = heap.alloc(words(&[1, 3 | 3 << 8 | 1 << 16, 0, u64::MAX, 0]));
        let huge = heap.alloc(words(&[1, heap.types[DICT], 1, 0, huge_keys, 0]));
        assert_eq!(heap.read(interp, true, Some(huge)).unwrap().active, active);
        let wide_keys = heap.alloc(words(&[1, 3 | 63 << 8 | 1 << 16, 0, 1, 0]));
        let wide = heap.alloc(words(&[1, heap.types[DICT], 1, 0, wide_keys, 0]));
        assert_eq!(heap.read(interp, true, Some(wide)).unwrap().active, active);
        // Every byte of the fake heap flipped in turn: never a panic.
        let addresses: Vec<u64> = heap.memory.blocks.keys().copied().collect();
        for address in addresses {
            let len = heap.memory.blocks[&address].len();
            for at in (0..len).step_by(7) {
                let block = heap.memory.blocks.get_mut(&address).unwrap();
                let old = block[at];
                block[at] = old ^ 0xff;
                let _ = heap.read(interp, at % 2 == 0, None);
                heap.memory.blocks.get_mut(&address).unwrap()[at] = old;
            }
        }
    }

    #[test]
    fn a_walk_stops_after_its_read_budget() {
        let mut heap = Heap::new(12);
        // sys.modules with MAX_ENTRIES keys none of which is "threading", each costing a read.
        let key = heap.str("os");
        let items = vec![(key, 1); MAX_ENTRIES as usize];
        let modules = heap.dict(&items);
        let mut interp = vec![0u8; 952];
        interp[944..].copy_from_slice(&modules.to_le_bytes());
        let interp = heap.alloc(interp);
        assert_eq!(heap.read(interp, true, None), None);
    }

    /// The fake heap as one fuzz input (see `fuzzing::thread_names`): version (types checked by name),
    /// interpreter address, then the memory from `FUZZ_BASE`, gaps zeroed.
    fn fuzz_input(heap: &Heap, minor: u8, interp: u64) -> Vec<u8> {
        let mut input = vec![(minor - 8) | 0x80];
        input.extend(interp.to_le_bytes());
        let mut memory = Vec::new();
        for (&address, bytes) in &heap.memory.blocks {
            let at = (address - FUZZ_BASE) as usize;
            memory.resize(at, 0);
            memory.extend(bytes);
        }
        input.extend(memory);
        input
    }

    /// Writes the fuzz target's seeds: `cargo test -p profiler-user --lib write_thread_names_seeds -- --ignored`.
    #[test]
    #[ignore]
    fn write_thread_names_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/thread_names");
        std::fs::create_dir_all(&dir).unwrap();
        for minor in 8..=14 {
            let (heap, interp, _) = two_threads(minor);
            std::fs::write(dir.join(format!("two-threads-3.{minor}")), fuzz_input(&heap, minor, interp)).unwrap();
        }
    }

    #[test]
    fn fuzz_inputs_read_as_the_heaps_they_were_made_of() {
        for minor in [8, 11, 12, 14] {
            let (heap, interp, _) = two_threads(minor);
            let found = crate::fuzzing::thread_names_of(&fuzz_input(&heap, minor, interp));
            assert_eq!(found.map(|f| f.names), Some(expected(&[(4242, "scheduler"), (4243, "AnyIO worker thread")])));
        }
    }

    #[test]
    fn a_process_without_threading_is_searched_less_and_less_often() {
        let wait = |misses| ProcessNames { misses, ..ProcessNames::default() }.unknown_wait();
        assert_eq!(wait(0), REFRESH_UNKNOWN);
        assert_eq!(wait(1), 2 * REFRESH_UNKNOWN);
        assert_eq!(wait(3), 8 * REFRESH_UNKNOWN);
        assert_eq!(wait(8), REFRESH_KNOWN);
        assert_eq!(wait(40), REFRESH_KNOWN);
    }

    #[test]
    fn tells_threadings_made_up_names() {
        for name in ["MainThread", "Thread-1", "Thread-12 (worker)", "Dummy-3"] {
            assert!(is_default_name(name), "{name}");
        }
        for name in ["scheduler", "Thread-", "Thread-x", "Thread-1x", "AnyIO worker thread", "ThreadPoolExecutor-0_1"] {
            assert!(!is_default_name(name), "{name}");
        }
    }
}
