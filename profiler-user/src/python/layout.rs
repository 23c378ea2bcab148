//! Where CPython keeps threads, frames and code objects, per version.
//!
//! 3.8–3.12 come from tables (checked against the CPython headers; see docs/cpython.md);
//! 3.13–3.15 from the `_Py_DebugOffsets` block the interpreter embeds at the start of `_PyRuntime` for tools like
//! this one. One `match` on the version, generic code after it.
//!
//! 3.8–3.10 differ in kind, not only in offsets: frames are heap `PyFrameObject`s, each run by its own
//! `_PyEval_EvalFrameDefault` call; threads are known by their pthread id; the instruction is an offset
//! (`f_lasti`) and the line table an older format.
// Values here come from a target (its files, its memory, its maps) or the kernel: no implicit arithmetic.
#![deny(clippy::arithmetic_side_effects)]
use anyhow::{bail, Result};
use profiler_common::{
    PyLayout, GIL_RUNTIME_TSTATE, GIL_STRUCT, GIL_UNKNOWN, NO_OFFSET, PY_LAYOUT_FRAME_OBJECTS, PY_LAYOUT_IS_ENTRY_BYTE,
    PY_LAYOUT_TAGGED_CODE,
};

/// What userspace needs to decode a code object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CodeLayout {
    pub firstlineno: u64,
    pub filename: u64,
    pub name: u64,
    pub qualname: u64,
    pub linetable: u64,
    pub code_adaptive: u64,
    /// `sizeof(PyASCIIObject)`: where the characters of a compact ASCII string start.
    pub ascii_data: u64,
    /// `sizeof(PyCompactUnicodeObject)`: where the characters of a compact non-ASCII string start.
    pub compact_data: u64,
    /// How the sampled instruction and the line table are encoded.
    pub lines: LineFormat,
    /// What a free-threaded build (`Py_GIL_DISABLED`) adds to every object's header before `ob_type`: 16 bytes
    /// (`ob_tid`, `ob_mutex`, `ob_gc_bits`, a 32-bit local and a shared reference count instead of `ob_refcnt`), 0
    /// in the default build. Every field of an object (`ob_type`, a `str`'s `length` and `state`, a `bytes`' size
    /// and data, a dict's keys) lies that much further; `ascii_data` and `compact_data` include it already.
    pub head_extra: u64,
    /// `co_tlbc` in a free-threaded 3.14+ build: the code's array of per-thread copies of its bytecode
    /// (`_PyCodeArray`: {size, entries[size]}, entry 0 being `co_code_adaptive`). A thread that specializes code
    /// another thread made runs its own copy, and its frames' `instr_ptr` point there; `None` where every frame
    /// runs `co_code_adaptive`.
    pub tlbc: Option<u64>,
    /// The bit of a `str`'s `state` where its `kind` starts (`compact` and `ascii` follow): 2 after the 2-bit
    /// `interned`, 8 in free-threaded 3.14+, whose `interned` is a whole byte (read atomically).
    pub str_kind_bit: u32,
}

impl CodeLayout {
    /// Bytes of a code object to read to reach every field used (the bytecode itself is not read).
    pub(crate) fn header_len(&self) -> usize {
        let ob_type = self.ob_type().saturating_add(8);
        let last = [
            self.firstlineno.saturating_add(4),
            self.filename,
            self.name,
            self.qualname,
            self.linetable,
            self.tlbc.unwrap_or(0),
            self.ob_size(),
        ]
        .into_iter()
        .max();
        last.unwrap_or(0).saturating_add(8).max(self.code_adaptive).max(ob_type) as usize
    }

    /// Where a variable-size object keeps its size (`ob_size`): a code object's, in 2-byte code units.
    pub(crate) fn ob_size(&self) -> u64 {
        self.field(16)
    }

    /// A `str`'s (kind, compact, ascii) from its `state` word.
    pub(crate) fn str_state(&self, state: u32) -> (u32, bool, bool) {
        let bit = self.str_kind_bit;
        let flag = |at: u32| state.checked_shr(bit.saturating_add(at)).is_some_and(|v| v & 1 != 0);
        (state.checked_shr(bit).unwrap_or(0) & 7, flag(3), flag(4))
    }

    /// Where an object keeps its type pointer.
    pub(crate) fn ob_type(&self) -> u64 {
        self.head_extra.saturating_add(8)
    }

    /// `offset` in the default build's object layout, moved past the free-threaded build's longer header.
    pub(crate) fn field(&self, offset: u64) -> u64 {
        self.head_extra.saturating_add(offset)
    }
}

/// How a frame's instruction maps to a source line, per version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LineFormat {
    /// 3.8–3.9: `f_lasti` in bytes, `co_lnotab`.
    Lnotab,
    /// 3.10: `f_lasti` in code units, `co_linetable` of (byte delta, line delta) pairs.
    LineTable310,
    /// 3.11+: an instruction pointer into `co_code_adaptive`, the location table.
    Locations,
}

/// The layout for the sampler, for code-object decoding, and for reading Python objects (thread names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layouts {
    pub kernel: PyLayout,
    pub code: CodeLayout,
    pub objects: ObjectLayout,
}

impl Layouts {
    /// Whether the interpreter has a GIL whose holder the sampler can tell: false for free-threaded builds, whose
    /// samples get no `gil` label at all (rather than a `released` that would say a GIL exists).
    pub(crate) fn has_gil(&self) -> bool {
        self.kernel.gil_mode != GIL_UNKNOWN
    }

    /// A free-threaded build (`Py_GIL_DISABLED`, `python3.13t`).
    pub(crate) fn free_threaded(&self) -> bool {
        self.code.head_extra != 0
    }
}

/// What userspace needs to walk `sys.modules`, dicts, instance attributes and ints: the way to
/// `threading._active` and each `Thread`'s `_name` and `_native_id` (see `thread_names`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ObjectLayout {
    /// `PyInterpreterState.modules` (3.8–3.11), `.imports.modules` (3.12+): `sys.modules`. `NO_OFFSET` when
    /// unknown.
    pub interp_modules: u64,
    pub dict_keys: DictKeysFormat,
    /// Where the value pointers start in a split dict's values (`PyDictValues`): 8 from 3.13, whose values
    /// start with a 4-byte header (capacity, size, embedded, valid).
    pub values_start: u64,
    pub attributes: AttributeStorage,
    /// `PyHeapTypeObject.ht_cached_keys`: the keys an instance's split values belong to.
    pub cached_keys: u64,
    /// 3.12+: an int's size word is `lv_tag` (digit count << 3 | sign), before a signed digit count.
    pub long_tag: bool,
    /// How far before an object its managed dict pointer is (`-MANAGED_DICT_OFFSET`, 3.11+): 24 in the default
    /// build, 8 in a free-threaded one, which has no `PyGC_Head` before its objects.
    pub managed_dict: u64,
}

/// How a dict's keys object (`PyDictKeysObject`) is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DictKeysFormat {
    /// 3.8–3.10: `dk_size`@8, `dk_nentries`@32, indices@40 (1, 2, 4 or 8 bytes each by `dk_size`), then
    /// 24-byte entries (hash, key, value).
    Sized,
    /// 3.11+: `dk_log2_size`@8, `dk_log2_index_bytes`@9, `dk_kind`@10, `dk_nentries`@24, indices@32
    /// (`1 << dk_log2_index_bytes` bytes), then 24-byte entries for `dk_kind` 0 (general), else 16 (key, value).
    Log2,
}

/// Where an instance keeps its attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttributeStorage {
    /// 3.8–3.10: a dict pointer at the type's `tp_dictoffset`.
    DictOffset,
    /// 3.11 (`Py_TPFLAGS_MANAGED_DICT`): values pointer at -32, dict pointer at -24.
    Managed311,
    /// 3.12 (`Py_TPFLAGS_MANAGED_DICT`): at -24 a dict pointer, or values pointer - 1 (low bit set).
    DictOrValues312,
    /// 3.13+ (`Py_TPFLAGS_INLINE_VALUES`): values inline at `tp_basicsize`, used while their `valid` byte is
    /// set; else (or `Py_TPFLAGS_MANAGED_DICT` only) a dict pointer at -24.
    Inline313,
}

/// `PY_VERSION_HEX`'s major and minor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Version {
    pub major: u8,
    pub minor: u8,
}

impl Version {
    pub(crate) fn from_hex(hex: u64) -> Self {
        Self { major: (hex >> 24) as u8, minor: (hex >> 16) as u8 }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Versions whose layout we know.
pub(crate) const SUPPORTED: &str = "3.8 to 3.15";

/// The layout for `version`; `debug_offsets` is the start of `_PyRuntime` (3.13+ only).
pub(crate) fn for_version(version: Version, runtime: u64, debug_offsets: Option<&[u8]>) -> Result<Layouts> {
    match (version.major, version.minor) {
        (3, 8..=10) => Ok(frame_objects(version, runtime)),
        (3, 11) => Ok(python_3_11(runtime)),
        (3, 12) => Ok(python_3_12(runtime)),
        (3, 13..=15) => {
            let Some(bytes) = debug_offsets else { bail!("Python {version} without _Py_DebugOffsets") };
            from_debug_offsets(version, runtime, bytes)
        }
        _ => bail!("Python {version} is not supported (supported: {SUPPORTED})"),
    }
}

/// Object layouts of 3.8–3.12; offsets checked on Ubuntu's and Debian's builds (docs/cpython.md).
fn objects(minor: u8) -> ObjectLayout {
    let (interp_modules, cached_keys, attributes) = match minor {
        8 => (56, 872, AttributeStorage::DictOffset),
        9 => (856, 864, AttributeStorage::DictOffset),
        10 => (856, 872, AttributeStorage::DictOffset),
        11 => (888, 872, AttributeStorage::Managed311),
        _ => (944, 880, AttributeStorage::DictOrValues312),
    };
    ObjectLayout {
        interp_modules,
        dict_keys: if minor <= 10 { DictKeysFormat::Sized } else { DictKeysFormat::Log2 },
        values_start: 0,
        attributes,
        cached_keys,
        long_tag: minor >= 12,
        managed_dict: 24,
    }
}

fn base(version: Version, runtime: u64) -> PyLayout {
    PyLayout {
        version: (u32::from(version.major) << 8) | u32::from(version.minor),
        flags: 0,
        runtime,
        runtime_interpreters_head: 0,
        interp_threads_head: 0,
        tstate_next: 8,
        tstate_native_thread_id: 0,
        tstate_frame: 0,
        cframe_current_frame: NO_OFFSET,
        frame_code: 0,
        frame_previous: 0,
        frame_instr: 0,
        frame_owner: 0,
        code_filename: 112,
        gil_mode: 0,
        _pad: 0,
        gil_ptr: NO_OFFSET,
        gil_locked: 0,
        gil_holder: 0,
        code_qualname: 0,
        code_firstlineno: 0,
        code_linetable: 0,
        unicode_ascii_data: 0,
    }
}

/// Copies the code-object offsets the crash probe needs into the kernel layout.
fn with_code(mut kernel: PyLayout, code: &CodeLayout, objects: ObjectLayout) -> Layouts {
    kernel.code_qualname = code.qualname;
    kernel.code_firstlineno = code.firstlineno;
    kernel.code_linetable = code.linetable;
    kernel.unicode_ascii_data = code.ascii_data;
    Layouts { kernel, code: *code, objects }
}

/// 3.8–3.10. `thread_id` (the pthread id) stands where later versions have `native_thread_id`; the GIL holder is
/// `_PyRuntime.gilstate.tstate_current`, which is cleared when the GIL is released.
fn frame_objects(version: Version, runtime: u64) -> Layouts {
    let (lasti, tstate_current, lines) = match version.minor {
        8 => (104, 1368, LineFormat::Lnotab),
        9 => (104, 568, LineFormat::Lnotab),
        _ => (96, 568, LineFormat::LineTable310),
    };
    let kernel = PyLayout {
        flags: PY_LAYOUT_FRAME_OBJECTS,
        runtime_interpreters_head: 32,
        interp_threads_head: 8,
        tstate_native_thread_id: 176,
        tstate_frame: 24,
        frame_code: 32,
        frame_previous: 24,
        frame_instr: lasti,
        code_filename: 104,
        gil_mode: GIL_RUNTIME_TSTATE,
        gil_holder: tstate_current,
        ..base(version, runtime)
    };
    // No co_qualname before 3.11: functions are named by co_name.
    let code = CodeLayout {
        firstlineno: 40,
        filename: 104,
        name: 112,
        qualname: 112,
        linetable: 120,
        code_adaptive: 0,
        ascii_data: 48,
        compact_data: 72,
        lines,
        head_extra: 0,
        tlbc: None,
        str_kind_bit: 2,
    };
    with_code(kernel, &code, objects(version.minor))
}

fn python_3_11(runtime: u64) -> Layouts {
    let kernel = PyLayout {
        flags: PY_LAYOUT_IS_ENTRY_BYTE,
        runtime_interpreters_head: 40,
        interp_threads_head: 16,
        tstate_native_thread_id: 160,
        tstate_frame: 56,
        cframe_current_frame: 8,
        frame_code: 32,
        frame_previous: 48,
        frame_instr: 56,
        frame_owner: 68,
        gil_mode: GIL_RUNTIME_TSTATE,
        gil_holder: 576,
        ..base(Version { major: 3, minor: 11 }, runtime)
    };
    let code = CodeLayout {
        firstlineno: 72,
        filename: 112,
        name: 120,
        qualname: 128,
        linetable: 136,
        code_adaptive: 184,
        ascii_data: 48,
        compact_data: 72,
        lines: LineFormat::Locations,
        head_extra: 0,
        tlbc: None,
        str_kind_bit: 2,
    };
    with_code(kernel, &code, objects(11))
}

fn python_3_12(runtime: u64) -> Layouts {
    let kernel = PyLayout {
        runtime_interpreters_head: 40,
        interp_threads_head: 72,
        tstate_native_thread_id: 144,
        tstate_frame: 56,
        cframe_current_frame: 0,
        frame_code: 0,
        frame_previous: 8,
        frame_instr: 56,
        frame_owner: 70,
        gil_mode: GIL_STRUCT,
        gil_ptr: 384,
        gil_locked: 16,
        gil_holder: 8,
        ..base(Version { major: 3, minor: 12 }, runtime)
    };
    let code = CodeLayout {
        firstlineno: 68,
        filename: 112,
        name: 120,
        qualname: 128,
        linetable: 136,
        code_adaptive: 192,
        ascii_data: 40,
        compact_data: 56,
        lines: LineFormat::Locations,
        head_extra: 0,
        tlbc: None,
        str_kind_bit: 2,
    };
    with_code(kernel, &code, objects(12))
}

/// Parses `_Py_DebugOffsets`. Its blocks grow between minor versions (3.14 added fields to the interpreter and
/// frame blocks, 3.15 to the thread-state block), so blocks are located by content where the content tells them
/// apart: the thread-state block is the one whose `prev, next, interp` offsets are 0, 8, 16 (PyThreadState's first
/// members in every version), and the code-object block the one whose `filename, name, qualname` are consecutive
/// pointers. What lies inside the thread-state block, and so where the frame block starts, is known per version
/// ([`ThreadBlock`]); [`sanity_check`] refuses a table whose fields fall outside the structs they describe.
pub(crate) fn from_debug_offsets(version: Version, runtime: u64, bytes: &[u8]) -> Result<Layouts> {
    if bytes.get(..8) != Some(b"xdebugpy") {
        bail!("_PyRuntime does not start with the _Py_DebugOffsets cookie");
    }
    let words: Vec<u64> = bytes.chunks_exact(8).map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes"))).collect();
    let word = |i: usize| words.get(i).copied();
    // Index arithmetic below is on positions in `words` (a few hundred at most) and small constants, checked
    // all the same: the block lengths come from the target's memory.
    let at = |base: usize, delta: usize| base.checked_add(delta);
    let block_error = || anyhow::anyhow!("_Py_DebugOffsets is truncated");
    // Free-threaded builds (`Py_GIL_DISABLED`) fill the same table with their own values: a longer object
    // header, no GIL, and from 3.14 per-thread copies of the bytecode (`co_tlbc`, the code block's last word).
    let free_threaded = word(2).ok_or_else(block_error)? != 0;
    if free_threaded && version.minor >= 15 {
        // Its heap-type block already counts the longer header, and no free-threaded 3.15 was there to check.
        bail!("free-threaded Python {version} is not supported (supported free-threaded: 3.13, 3.14)");
    }
    // {size, filename, name, qualname, linetable, firstlineno, argcount, localsplusnames, localspluskinds,
    // co_code_adaptive}, and from 3.14 co_tlbc.
    let code_block_len = if version.minor >= 14 { 11 } else { 10 };
    // cookie, version, free_threaded, then runtime_state {size, finalizing, interpreters_head}, then the
    // interpreter block {size, id, next, threads_head, ...}.
    let interpreters_head = word(5).unwrap_or(NO_OFFSET);
    let threads_head = word(9).unwrap_or(NO_OFFSET);
    let shape = ThreadBlock::of(version);
    // Blocks are found from index 10 on, and end at least the thread block's length (thread) or 10 (code) words
    // before the end.
    let block_from = |start: usize, tail: usize, is_block: &dyn Fn(&[u64]) -> bool| {
        let window = words.get(start..words.len().saturating_sub(tail).saturating_add(3))?;
        window.windows(4).position(is_block).and_then(|i| start.checked_add(i))
    };
    let thread_block = block_from(10, shape.frame_block, &|w| w[1] == 0 && w[2] == 8 && w[3] == 16)
        .ok_or_else(|| anyhow::anyhow!("no thread-state block in _Py_DebugOffsets"))?;
    let interp_block_len = thread_block.checked_sub(6).ok_or_else(block_error)?;
    // The interpreter block ends with the GIL fields {.., locked, holder} (3.13, 3.14.0) or, when the
    // free-threading fields follow them (later 3.14, 3.15), {.., locked, holder, code_object_generation,
    // tlbc_generation}.
    let gil_end = if interp_block_len >= 16 { thread_block.checked_sub(2) } else { Some(thread_block) };
    let gil_field = |back: usize| gil_end.and_then(|end| end.checked_sub(back)).and_then(word);
    let (gil_locked, gil_holder) = (gil_field(2), gil_field(1));
    // {imports_modules, sysdict, builtins, ceval_gil, gil_runtime_state, enabled, locked, holder}.
    let imports_modules = gil_field(8);
    let frame_block = at(thread_block, shape.frame_block).ok_or_else(block_error)?;
    let consecutive = |w: &[u64]| Some(w[2]) == w[1].checked_add(8) && Some(w[3]) == w[2].checked_add(8);
    let code_block = at(frame_block, 6)
        .and_then(|start| block_from(start, 10, &consecutive))
        .ok_or_else(|| anyhow::anyhow!("no code-object block in _Py_DebugOffsets"))?;

    let field = |base: usize, delta: usize| at(base, delta).and_then(word).ok_or_else(block_error);
    let head_extra = if free_threaded { free_threaded_head(&field, code_block, code_block_len)? } else { 0 };
    let kernel = PyLayout {
        flags: if version.minor >= 14 { PY_LAYOUT_TAGGED_CODE } else { 0 },
        runtime_interpreters_head: interpreters_head,
        interp_threads_head: threads_head,
        tstate_next: field(thread_block, 2)?,
        tstate_frame: field(thread_block, 4)?,
        tstate_native_thread_id: field(thread_block, shape.native_thread_id)?,
        frame_previous: field(frame_block, 1)?,
        frame_code: field(frame_block, 2)?,
        frame_instr: field(frame_block, 3)?,
        frame_owner: field(frame_block, 5)?,
        code_filename: field(code_block, 1)?,
        // A free-threaded build keeps the GIL's struct (a module that is not marked free-threading-safe can turn
        // it on at run time), but its threads run without it: no holder to look for, no `gil` label.
        gil_mode: if free_threaded { GIL_UNKNOWN } else { GIL_STRUCT },
        gil_ptr: NO_OFFSET,
        gil_locked: gil_locked.filter(|_| !free_threaded).unwrap_or(NO_OFFSET),
        gil_holder: gil_holder.filter(|_| !free_threaded).unwrap_or(NO_OFFSET),
        ..base(version, runtime)
    };
    let code = CodeLayout {
        filename: field(code_block, 1)?,
        name: field(code_block, 2)?,
        qualname: field(code_block, 3)?,
        linetable: field(code_block, 4)?,
        firstlineno: field(code_block, 5)?,
        code_adaptive: field(code_block, 9)?,
        ascii_data: head_extra.checked_add(40).ok_or_else(block_error)?,
        compact_data: head_extra.checked_add(56).ok_or_else(block_error)?,
        lines: LineFormat::Locations,
        head_extra,
        tlbc: if free_threaded && code_block_len > 10 { Some(field(code_block, 10)?) } else { None },
        str_kind_bit: if free_threaded && version.minor >= 14 { 8 } else { 2 },
    };
    let sizes = StructSizes {
        thread_state: field(thread_block, 0)?,
        frame: field(frame_block, 0)?,
        code: field(code_block, 0)?,
    };
    sanity_check(&kernel, &code, &sizes)?;
    let objects = ObjectLayout {
        interp_modules: imports_modules.filter(|&o| o < 1 << 20).unwrap_or(NO_OFFSET),
        dict_keys: DictKeysFormat::Log2,
        values_start: 8,
        attributes: AttributeStorage::Inline313,
        // `PyHeapTypeObject` starts with a `PyTypeObject`, whose header is as long as any object's.
        cached_keys: cached_keys(version, &words, code_block).checked_add(head_extra).ok_or_else(block_error)?,
        long_tag: true,
        managed_dict: if free_threaded { 8 } else { 24 },
    };
    Ok(with_code(kernel, &code, objects))
}

/// How much longer a free-threaded build's object header is than the default build's, from the `pyobject` block
/// {size, ob_type} that follows the code block (`code_block_len` words: 10 in 3.13, 11 from 3.14): `ob_type` at 24
/// instead of 8, the header 32 bytes instead of 16 (`struct _object` in `Include/object.h` under
/// `Py_GIL_DISABLED`). Anything else is refused.
fn free_threaded_head(
    field: &dyn Fn(usize, usize) -> Result<u64>,
    code_block: usize,
    code_block_len: usize,
) -> Result<u64> {
    let (size, ob_type) = (field(code_block, code_block_len)?, field(code_block, code_block_len.saturating_add(1))?);
    if (size, ob_type) != (32, 24) {
        bail!("unexpected free-threaded object header in _Py_DebugOffsets: {size} bytes, ob_type at {ob_type}");
    }
    Ok(16)
}

/// What the thread-state block of `_Py_DebugOffsets` holds, in words from its start (its `size`).
struct ThreadBlock {
    /// `native_thread_id`.
    native_thread_id: usize,
    /// Where the frame block starts.
    frame_block: usize,
}

impl ThreadBlock {
    fn of(version: Version) -> ThreadBlock {
        if version.minor <= 14 {
            // {size, prev, next, interp, current_frame, thread_id, native_thread_id, datastack_chunk, status}
            ThreadBlock { native_thread_id: 6, frame_block: 9 }
        } else {
            // 3.15 inserts {base_frame, last_profiled_frame, last_profiled_frame_seq} after current_frame and
            // appends {holds_gil, gil_requested, current_exception, exc_state}; the one-word err_stackitem block
            // {exc_value} (no size) follows before the frame block.
            ThreadBlock { native_thread_id: 9, frame_block: 17 }
        }
    }
}

/// `PyHeapTypeObject.ht_cached_keys`. 3.13 and 3.14 do not publish it: 880 (checked on Debian's builds). 3.15
/// does, in the heap-type block {size, ht_cached_keys} that follows the code block (11 words), the `PyObject` block
/// {size 16, ob_type 8} and the type block {size, tp_name 24, tp_repr, tp_flags, tp_basicsize, tp_dictoffset};
/// `NO_OFFSET` (no thread names) when those are not where 3.15 puts them.
fn cached_keys(version: Version, words: &[u64], code_block: usize) -> u64 {
    if version.minor <= 14 {
        return 880;
    }
    let word = |delta: usize| code_block.checked_add(delta).and_then(|i| words.get(i)).copied();
    let shaped = word(11) == Some(16) && word(12) == Some(8) && word(14) == Some(24);
    match (shaped, word(19), word(20)) {
        (true, Some(size), Some(offset)) if offset.checked_add(8).is_some_and(|end| end <= size) => offset,
        _ => NO_OFFSET,
    }
}

/// The sizes `_Py_DebugOffsets` gives of the structs whose fields the kernel reads.
struct StructSizes {
    thread_state: u64,
    frame: u64,
    code: u64,
}

/// Offsets far outside any CPython struct, or outside the struct they are fields of, mean we misread the table:
/// better no Python frames than wrong ones.
fn sanity_check(kernel: &PyLayout, code: &CodeLayout, sizes: &StructSizes) -> Result<()> {
    let offsets = [
        kernel.runtime_interpreters_head,
        kernel.interp_threads_head,
        kernel.tstate_frame,
        kernel.tstate_native_thread_id,
        kernel.frame_previous,
        kernel.frame_code,
        kernel.frame_instr,
        kernel.frame_owner,
        // A build without a GIL has no GIL fields to check.
        if kernel.gil_mode == GIL_UNKNOWN { 0 } else { kernel.gil_locked },
        if kernel.gil_mode == GIL_UNKNOWN { 0 } else { kernel.gil_holder },
        code.firstlineno,
        code.linetable,
        code.code_adaptive,
    ];
    if let Some(bad) = offsets.iter().find(|&&o| o > 1 << 20) {
        bail!("implausible offset {bad:#x} in _Py_DebugOffsets");
    }
    if Some(code.name) != code.filename.checked_add(8) {
        bail!("co_name does not follow co_filename");
    }
    let within: [(&str, u64, &[u64]); 3] = [
        (
            "PyThreadState",
            sizes.thread_state,
            &[kernel.tstate_next, kernel.tstate_frame, kernel.tstate_native_thread_id],
        ),
        (
            "_PyInterpreterFrame",
            sizes.frame,
            &[kernel.frame_previous, kernel.frame_code, kernel.frame_instr, kernel.frame_owner],
        ),
        (
            "PyCodeObject",
            sizes.code,
            &[
                code.filename,
                code.qualname,
                code.linetable,
                code.firstlineno,
                code.code_adaptive,
                code.tlbc.unwrap_or(0),
            ],
        ),
    ];
    for (name, size, fields) in within {
        if let Some(bad) = fields.iter().find(|&&o| o >= size) {
            bail!("_Py_DebugOffsets puts a field of {name} at {bad}, outside its {size} bytes");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 3.13 `_Py_DebugOffsets` as the 3.13 headers lay it out (73 words), with the x86_64 values.
    fn debug_offsets_3_13() -> Vec<u8> {
        let mut words: Vec<u64> = vec![0; 73];
        words[0] = u64::from_le_bytes(*b"xdebugpy");
        words[1] = 0x030d05f0;
        words[2] = 0;
        words[3..6].copy_from_slice(&[1000, 776, 632]); // runtime: size, finalizing, interpreters_head
        words[6..19].copy_from_slice(&[9000, 8, 0, 7352, 9, 10, 11, 12, 13, 14, 0, 7400, 7408]); // interp
        words[19..28].copy_from_slice(&[300, 0, 8, 16, 72, 152, 160, 200, 176]); // thread state
        words[28..34].copy_from_slice(&[80, 8, 0, 56, 80, 70]); // frame
        words[34..44].copy_from_slice(&[220, 112, 120, 128, 136, 68, 72, 96, 104, 200]); // code
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn reads_the_3_13_debug_offsets() {
        let layouts = from_debug_offsets(Version { major: 3, minor: 13 }, 0x1000, &debug_offsets_3_13()).unwrap();
        let k = layouts.kernel;
        assert_eq!((k.runtime_interpreters_head, k.interp_threads_head), (632, 7352));
        assert_eq!((k.tstate_frame, k.tstate_native_thread_id, k.tstate_next), (72, 160, 8));
        assert_eq!((k.frame_previous, k.frame_code, k.frame_instr, k.frame_owner), (8, 0, 56, 70));
        assert_eq!((k.gil_mode, k.gil_locked, k.gil_holder), (GIL_STRUCT, 7400, 7408));
        assert_eq!(k.flags, 0);
        assert_eq!(layouts.code.code_adaptive, 200);
        assert_eq!(layouts.code.firstlineno, 68);
        assert_eq!(layouts.objects.interp_modules, 10);
        assert_eq!(layouts.objects.attributes, AttributeStorage::Inline313);
    }

    #[test]
    fn finds_blocks_when_a_later_version_adds_fields() {
        // 3.14 inserts threads_main after threads_head and stackpointer at the end of the frame block.
        let mut words: Vec<u64> =
            debug_offsets_3_13().chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        words.insert(10, 7360);
        words.insert(35, 64);
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let layouts = from_debug_offsets(Version { major: 3, minor: 14 }, 0x1000, &bytes).unwrap();
        assert_eq!(layouts.kernel.tstate_native_thread_id, 160);
        assert_eq!(layouts.kernel.frame_owner, 70);
        assert_eq!((layouts.kernel.gil_locked, layouts.kernel.gil_holder), (7400, 7408));
        assert_eq!(layouts.code.qualname, 128);
        assert_eq!(layouts.objects.interp_modules, 10);
        assert_ne!(layouts.kernel.flags & PY_LAYOUT_TAGGED_CODE, 0);
    }

    /// The `_Py_DebugOffsets` of Debian's CPython 3.15.2 (python3.15 3.15.2-1, x86_64), as its `.PyRuntime`
    /// section holds it: 111 words, blocks as `Include/internal/pycore_debug_offsets.h` of 3.15 declares them.
    fn debug_offsets_3_15() -> Vec<u8> {
        let mut words: Vec<u64> = vec![u64::from_le_bytes(*b"xdebugpy"), 0x030f02f0, 0];
        // runtime: size, finalizing, interpreters_head
        words.extend([346568, 912, 936]);
        // interp: size, id, next, threads_head, threads_main, gc, imports_modules, sysdict, builtins, ceval_gil,
        // gil_runtime_state, enabled, locked, holder, code_object_generation, tlbc_generation
        words.extend([226240, 7272, 7264, 7336, 7352, 7400, 7592, 7576, 7584, 16, 7736, 0, 7752, 7744, 7944, 0]);
        // thread state: size, prev, next, interp, current_frame, base_frame, last_profiled_frame,
        // last_profiled_frame_seq, thread_id, native_thread_id, datastack_chunk, status, holds_gil, gil_requested,
        // current_exception, exc_state
        words.extend([888, 0, 8, 16, 72, 80, 88, 96, 176, 184, 256, 32, 36, 40, 136, 288]);
        words.push(0); // err_stackitem: exc_value
        words.extend([88, 8, 0, 56, 80, 74, 64, 0]); // frame: .., executable, instr_ptr, localsplus, owner, ..
        words.extend([216, 112, 120, 128, 136, 68, 52, 96, 104, 208, 0]); // code: .., co_code_adaptive, co_tlbc
        words.extend([16, 8]); // PyObject
        words.extend([424, 24, 88, 168, 32, 288]); // type: .., tp_flags, tp_basicsize, tp_dictoffset
        words.extend([944, 888]); // heap type: size, ht_cached_keys
        words.extend([40, 32, 16, 40, 24, 16, 200, 24, 40, 32, 48, 32, 40]); // tuple, list, set, dict
        words.extend([24, 16, 32, 16, 24, 40, 16, 32, 64, 32, 16, 40, 56]); // float, long, bytes, unicode
        words.extend([176, 112, 120, 1120, 104, 160, 24, 72, 67, 0, 8]); // gc, gen, llist_node
        words.extend([344, 8028, 0, 4, 512, 0]); // debugger_support
        assert_eq!(words.len(), 111);
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn reads_the_3_15_debug_offsets() {
        let layouts = from_debug_offsets(Version { major: 3, minor: 15 }, 0x1000, &debug_offsets_3_15()).unwrap();
        let k = layouts.kernel;
        assert_eq!((k.runtime_interpreters_head, k.interp_threads_head), (936, 7336));
        assert_eq!((k.tstate_frame, k.tstate_native_thread_id, k.tstate_next), (72, 184, 8));
        assert_eq!((k.frame_previous, k.frame_code, k.frame_instr, k.frame_owner), (8, 0, 56, 74));
        assert_eq!((k.gil_mode, k.gil_locked, k.gil_holder), (GIL_STRUCT, 7752, 7744));
        assert_ne!(k.flags & PY_LAYOUT_TAGGED_CODE, 0);
        let c = layouts.code;
        assert_eq!((c.filename, c.name, c.qualname, c.linetable, c.firstlineno), (112, 120, 128, 136, 68));
        assert_eq!((c.code_adaptive, c.lines), (208, LineFormat::Locations));
        assert_eq!((layouts.objects.interp_modules, layouts.objects.cached_keys), (7592, 888));
        assert!(for_version(Version { major: 3, minor: 15 }, 0x1000, Some(&debug_offsets_3_15())).is_ok());
    }

    #[test]
    fn a_table_of_another_version_is_refused_rather_than_misread() {
        // 3.15's table read as 3.14's: the frame block would start inside the thread-state block.
        let err = from_debug_offsets(Version { major: 3, minor: 14 }, 0, &debug_offsets_3_15()).unwrap_err();
        assert!(err.to_string().contains("outside its"), "{err}");
        // 3.13's read as 3.15's: the frame block would start inside the code block.
        assert!(from_debug_offsets(Version { major: 3, minor: 15 }, 0, &debug_offsets_3_13()).is_err());
        // A 3.15 table without the heap-type block where 3.15 puts it still gives frames, but no cached keys.
        let mut bytes = debug_offsets_3_15();
        let pyobject = (17 + 22 + 8 + 11) * 8;
        bytes[pyobject..pyobject + 8].copy_from_slice(&0u64.to_le_bytes());
        let layouts = from_debug_offsets(Version { major: 3, minor: 15 }, 0, &bytes).unwrap();
        assert_eq!((layouts.kernel.tstate_native_thread_id, layouts.objects.cached_keys), (184, NO_OFFSET));
    }

    /// The `_Py_DebugOffsets` of a free-threaded CPython 3.13.5 (Debian trixie's python3.13 source, `./configure
    /// --disable-gil`, x86_64, GCC 12), as its `.PyRuntime` section holds it: 73 words, as in the default build, with
    /// `free_threaded` 1 and the longer object header.
    fn debug_offsets_3_13t() -> Vec<u8> {
        let mut words: Vec<u64> = vec![u64::from_le_bytes(*b"xdebugpy"), 0x030d05f0, 1];
        words.extend([328320, 608, 632]); // runtime
        words.extend([215616, 7272, 7264, 7344, 7400, 7664, 7648, 7656, 16, 7760, 0, 7784, 7776]); // interp
        words.extend([304, 0, 8, 16, 72, 152, 160, 232, 32]); // thread state
        words.extend([80, 8, 0, 56, 72, 70]); // frame
        words.extend([224, 128, 136, 144, 152, 84, 68, 112, 120, 216]); // code
        words.extend([32, 24]); // PyObject: 32 bytes, ob_type at 24
        words.extend([432, 40, 104, 184]); // type: size, tp_name, tp_repr, tp_flags
        words.extend([48, 40, 32, 56, 40, 32, 64, 48, 56, 40, 32, 48, 32, 40, 56, 32, 48, 80, 48, 32, 56, 248, 200]);
        assert_eq!(words.len(), 73);
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn reads_a_free_threaded_3_13_without_a_gil() {
        let layouts = from_debug_offsets(Version { major: 3, minor: 13 }, 0x1000, &debug_offsets_3_13t()).unwrap();
        let k = layouts.kernel;
        assert_eq!((k.runtime_interpreters_head, k.interp_threads_head), (632, 7344));
        assert_eq!((k.tstate_frame, k.tstate_native_thread_id, k.tstate_next), (72, 160, 8));
        assert_eq!((k.frame_previous, k.frame_code, k.frame_instr, k.frame_owner), (8, 0, 56, 70));
        assert_eq!(k.flags, 0, "3.13's f_executable is a plain pointer, free-threaded or not");
        // No GIL to look for: the kernel never sets PY_GIL_HELD, userspace never labels one.
        assert_eq!((k.gil_mode, k.gil_locked, k.gil_holder), (GIL_UNKNOWN, NO_OFFSET, NO_OFFSET));
        assert!(!layouts.has_gil() && layouts.free_threaded());
        let c = layouts.code;
        assert_eq!((c.filename, c.name, c.qualname, c.linetable, c.firstlineno), (128, 136, 144, 152, 84));
        assert_eq!((c.code_adaptive, c.head_extra, c.ob_type()), (216, 16, 24));
        // sizeof(PyASCIIObject) and sizeof(PyCompactUnicodeObject) with a 32-byte object header.
        assert_eq!((c.ascii_data, c.compact_data, k.unicode_ascii_data), (56, 72, 56));
        let o = layouts.objects;
        assert_eq!((o.interp_modules, o.cached_keys, o.managed_dict), (7664, 896, 8));
        // The default build of the same version keeps its GIL and its offsets.
        let default = from_debug_offsets(Version { major: 3, minor: 13 }, 0x1000, &debug_offsets_3_13()).unwrap();
        assert!(default.has_gil() && !default.free_threaded());
        assert_eq!((default.code.head_extra, default.objects.managed_dict), (0, 24));
    }

    #[test]
    fn a_free_threaded_build_that_is_not_3_13s_or_3_14s_is_refused() {
        let mut words: Vec<u64> =
            debug_offsets_3_15().chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        words[2] = 1;
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let err = from_debug_offsets(Version { major: 3, minor: 15 }, 0, &bytes).unwrap_err().to_string();
        assert!(err.contains("free-threaded Python 3.15 is not supported"), "{err}");
        // An object header other than the one free-threaded builds have.
        let mut bytes = debug_offsets_3_13t();
        bytes[45 * 8..46 * 8].copy_from_slice(&8u64.to_le_bytes());
        let err = from_debug_offsets(Version { major: 3, minor: 13 }, 0, &bytes).unwrap_err().to_string();
        assert!(err.contains("unexpected free-threaded object header"), "{err}");
    }

    /// A free-threaded 3.14 table, made from 3.13t's the way 3.14 grew its blocks: `threads_main` in the
    /// interpreter block, `stackpointer` and `tlbc_index` in the frame block, `co_tlbc` in the code block.
    #[test]
    fn reads_a_free_threaded_3_14_with_its_bytecode_copies() {
        let mut words: Vec<u64> =
            debug_offsets_3_13t().chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        words[1] = 0x030e04f0;
        words.insert(10, 7352);
        words.splice(35..35, [64, 76]);
        words.insert(47, 200);
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let layouts = from_debug_offsets(Version { major: 3, minor: 14 }, 0x1000, &bytes).unwrap();
        assert!(layouts.free_threaded() && !layouts.has_gil());
        let c = layouts.code;
        assert_eq!((c.head_extra, c.tlbc, c.code_adaptive, c.ob_size()), (16, Some(200), 216, 32));
        // `interned` is a whole byte there: a compact ASCII str's state is kind 1 at bit 8, compact, ascii.
        assert_eq!(c.str_kind_bit, 8);
        assert_eq!(c.str_state((1 << 8) | (1 << 11) | (1 << 12) | 2), (1, true, true));
        assert_eq!(c.str_state((1 << 2) | (1 << 5) | (1 << 6)), (0, false, false));
        assert_eq!((layouts.kernel.frame_owner, layouts.kernel.tstate_native_thread_id), (70, 160));
        assert_ne!(layouts.kernel.flags & PY_LAYOUT_TAGGED_CODE, 0);
        // 3.13t has no bytecode copies, nor has a default 3.14.
        let t13 = from_debug_offsets(Version { major: 3, minor: 13 }, 0x1000, &debug_offsets_3_13t()).unwrap();
        assert_eq!((t13.code.tlbc, t13.code.str_kind_bit), (None, 2));
        assert_eq!(t13.code.str_state((1 << 2) | (1 << 5) | (1 << 6) | 1), (1, true, true));
        words[2] = 0;
        words[48..50].copy_from_slice(&[16, 8]);
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let default = from_debug_offsets(Version { major: 3, minor: 14 }, 0x1000, &bytes).unwrap();
        assert_eq!((default.code.tlbc, default.code.head_extra), (None, 0));
    }

    #[test]
    fn refuses_garbage_and_unknown_versions() {
        assert!(from_debug_offsets(Version { major: 3, minor: 13 }, 0, &[0u8; 600]).is_err());
        let err = for_version(Version { major: 3, minor: 7 }, 0, None).unwrap_err().to_string();
        assert!(err.contains("3.7 is not supported"), "{err}");
        let err = for_version(Version { major: 2, minor: 7 }, 0, None).unwrap_err().to_string();
        assert!(err.contains("2.7 is not supported (supported: 3.8 to 3.15)"), "{err}");
        let err = for_version(Version { major: 3, minor: 16 }, 0, None).unwrap_err().to_string();
        assert!(err.contains("3.16 is not supported"), "{err}");
        let legacy = for_version(Version { major: 3, minor: 10 }, 0, None).unwrap();
        assert_ne!(legacy.kernel.flags & PY_LAYOUT_FRAME_OBJECTS, 0);
        assert_eq!(legacy.code.lines, LineFormat::LineTable310);
        assert!(for_version(Version { major: 3, minor: 11 }, 0, None).is_ok());
    }
}
