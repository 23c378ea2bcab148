//! Code objects → function (qualname), file and line, read lazily from the target with process_vm_readv.
//!
//! Cached by (pid, address, key), where the key is the code object's `co_filename ^ co_name` pointers as the
//! kernel saw them at sample time: a code object freed and its address reused by another function gets a
//! different key, so a reused address never yields a stale name.
// Values here come from a target (its files, its memory, its maps) or the kernel: no implicit arithmetic.
#![deny(clippy::arithmetic_side_effects)]
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use profiler_common::{PyCodeCopy, PyFrame};

use super::{
    detect::Interpreter,
    layout::{CodeLayout, LineFormat},
    linetable,
};
use crate::process::memory::{self, u32_at, u64_at};

/// Longest name or path read from the target: protects against garbage lengths.
const MAX_STRING: u64 = 4096;
const MAX_LINETABLE: u64 = 1 << 16;
/// Bounds the cache across many processes and code objects, by count and by bytes: a target's code objects may
/// each carry a 64 KiB line table and long names, so a count alone would allow gigabytes.
const MAX_CACHED_CODES: usize = 100_000;
const MAX_CACHED_BYTES: usize = 32 << 20;
/// Most thread-local bytecode copies read per code object (one per thread that specialized it).
const MAX_BYTECODE_COPIES: u64 = 4096;
/// How often a code object is read again when a frame's instruction lies in none of its known bytecode copies (a
/// thread made a new one since): at most this often, so a garbage instruction pointer costs little.
const COPIES_REREAD: Duration = Duration::from_secs(1);

/// A code object's names and line table.
#[derive(Debug)]
pub(crate) struct CodeInfo {
    /// Shared with every frame made of it.
    pub qualname: Arc<str>,
    pub filename: Arc<str>,
    pub first_line: u32,
    linetable: Vec<u8>,
    code_address: u64,
    code_adaptive: u64,
    lines: LineFormat,
    /// Bytes of bytecode (`ob_size` 2-byte code units, 3.11+); 0 when not known (a crash copy).
    bytecode_len: u64,
    /// Where the thread-local copies of the bytecode start (free-threaded 3.14+: `co_tlbc`'s entries after the
    /// first, which is `co_code_adaptive`), as they were when this was read.
    copies: Vec<u64>,
    /// When it was read from the process.
    read_at: Instant,
    /// A crash copy of a build with per-thread bytecode (free-threaded 3.14+): a frame may have run a copy this
    /// does not know, so an instruction outside the line table has no line rather than the first one.
    copies_unknown: bool,
    /// A crash copy of a line table longer than the copy (`CRASH_LINETABLE_LEN`): an instruction past what it
    /// holds has no line rather than the first one.
    table_cut: bool,
    /// Lines already looked up, by instruction: a hot function's few instructions are sampled over and over, and
    /// decoding its line table each time would cost more than the rest of its frame.
    lines_seen: Mutex<HashMap<u64, Option<u32>>>,
}

/// At most this many instructions' lines are kept per code object; then the memo starts again.
const MAX_LINES_SEEN: usize = 256;

impl CodeInfo {
    /// What its names and line table take on the heap.
    fn heap_bytes(&self) -> usize {
        self.qualname.len().saturating_add(self.filename.len()).saturating_add(self.linetable.len())
    }

    /// From the names the crash probe copied (ASCII, NUL-terminated), when the process can no longer be read.
    pub(crate) fn from_copy(copy: &PyCodeCopy, layout: &CodeLayout) -> Option<Self> {
        let text = |bytes: &[u8]| {
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            (end > 0).then(|| String::from_utf8_lossy(&bytes[..end]).into_owned())
        };
        let linetable = if layout.head_extra == 0 {
            let table_len = (copy.linetable_len as usize).min(copy.linetable.len());
            copy.linetable[..table_len].to_vec()
        } else {
            // The kernel reads a `bytes` object's size at 16 and copies from 32, the default build's offsets; in a
            // free-threaded build 16 is a reference count and 32 the size, which the copy starts with, then the
            // hash, then the data.
            free_threaded_table(&copy.linetable, layout.head_extra)
        };
        Some(Self {
            qualname: crate::sanitize::owned(text(&copy.qualname)?).into(),
            filename: crate::sanitize::owned(text(&copy.filename).unwrap_or_else(|| "?".into())).into(),
            first_line: copy.first_line,
            linetable,
            code_address: copy.code,
            code_adaptive: layout.code_adaptive,
            lines: layout.lines,
            bytecode_len: 0,
            copies: Vec::new(),
            read_at: Instant::now(),
            copies_unknown: layout.tlbc.is_some(),
            table_cut: copy.linetable_len as usize >= profiler_common::CRASH_LINETABLE_LEN,
            lines_seen: Mutex::default(),
        })
    }

    /// How many bytes into the bytecode `instr` is: from `co_code_adaptive`, or from the thread-local copy it lies
    /// in. `None` when it lies in no bytecode known (a copy made after this was read, or garbage).
    fn bytecode_offset(&self, instr: u64) -> Option<u64> {
        let within = |start: u64| {
            instr.checked_sub(start).filter(|&offset| self.bytecode_len == 0 || offset < self.bytecode_len)
        };
        let main = self.code_address.checked_add(self.code_adaptive)?;
        within(main).or_else(|| self.copies.iter().find_map(|&copy| within(copy)))
    }

    /// The line executing at `instr` (`PyFrame::instr`: an address inside the code object's bytecode, or for
    /// 3.8–3.10 the frame's `f_lasti` in the low 32 bits): the function's first line when the table has none for
    /// it, `None` when it may lie in a bytecode copy not known here.
    pub(crate) fn line(&self, instr: u64) -> Option<u32> {
        let mut seen = self.lines_seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(&line) = seen.get(&instr) {
            return line;
        }
        let line = self.decode_line(instr);
        if seen.len() >= MAX_LINES_SEEN {
            seen.clear();
        }
        seen.insert(instr, line);
        line
    }

    fn decode_line(&self, instr: u64) -> Option<u32> {
        let lasti = instr as u32 as i32;
        let line = match self.lines {
            LineFormat::Locations => self
                .bytecode_offset(instr)
                .and_then(|bytes| linetable::line_for(&self.linetable, self.first_line, bytes / 2)),
            // Before the first instruction (-1) the frame is at its first line.
            _ if lasti < 0 => None,
            LineFormat::Lnotab => linetable::lnotab_line(&self.linetable, self.first_line, lasti as u64),
            LineFormat::LineTable310 => {
                // lasti counts 2-byte code units; an absurd one gives no line rather than a wrapped offset.
                (lasti as u64)
                    .checked_mul(2)
                    .and_then(|offset| linetable::line_table_310_line(&self.linetable, self.first_line, offset))
            }
        };
        match line {
            None if self.copies_unknown || self.table_cut => None,
            line => Some(line.unwrap_or(self.first_line)),
        }
    }
}

#[derive(Default)]
pub(crate) struct CodeCache {
    codes: HashMap<(u32, u64, u64), Option<Arc<CodeInfo>>>,
    /// Bytes held by the cached code objects' names and line tables (roughly: what they allocated).
    bytes: usize,
}

impl CodeCache {
    /// The code object of `frame`, or `None` when it cannot be read or is not what the kernel saw.
    pub(crate) fn resolve(&mut self, pid: u32, interpreter: &Interpreter, frame: &PyFrame) -> Option<Arc<CodeInfo>> {
        if self.codes.len() >= MAX_CACHED_CODES || self.bytes >= MAX_CACHED_BYTES {
            self.codes.clear();
            self.bytes = 0;
        }
        let key = (pid, frame.code, frame.code_key);
        // A free-threaded 3.14+ thread may run a copy of the bytecode made after the code object was read.
        let stale = interpreter.layouts.code.tlbc.is_some()
            && self.codes.get(&key).is_some_and(|code| {
                code.as_deref().is_some_and(|code| {
                    code.bytecode_offset(frame.instr).is_none() && code.read_at.elapsed() >= COPIES_REREAD
                })
            });
        if stale {
            if let Some(old) = self.codes.remove(&key) {
                self.bytes = self.bytes.saturating_sub(old.as_deref().map_or(0, CodeInfo::heap_bytes));
            }
        }
        let bytes = &mut self.bytes;
        self.codes
            .entry(key)
            .or_insert_with(|| {
                let code = read_code(pid, interpreter, frame).map(Arc::new);
                *bytes = bytes.saturating_add(code.as_deref().map_or(0, CodeInfo::heap_bytes));
                code
            })
            .clone()
    }

    pub(crate) fn forget_process(&mut self, pid: u32) {
        let mut freed = 0usize;
        self.codes.retain(|&(p, _, _), code| {
            let keep = p != pid;
            if !keep {
                freed = freed.saturating_add(code.as_deref().map_or(0, CodeInfo::heap_bytes));
            }
            keep
        });
        self.bytes = self.bytes.saturating_sub(freed);
    }
}

fn read_code(pid: u32, interpreter: &Interpreter, frame: &PyFrame) -> Option<CodeInfo> {
    let layout = &interpreter.layouts.code;
    let header = memory::read(pid, frame.code, layout.header_len()).ok()?;
    if let Some(code_type) = interpreter.code_type {
        if u64_at(&header, layout.ob_type())? != code_type {
            return None;
        }
    }
    let filename_ptr = u64_at(&header, layout.filename)?;
    let name_ptr = u64_at(&header, layout.name)?;
    if frame.code_key != 0 && filename_ptr ^ name_ptr != frame.code_key {
        return None;
    }
    // 3.11+ code objects are variable-size: their bytecode is `ob_size` code units of 2 bytes.
    let bytecode_len = match layout.lines {
        LineFormat::Locations => u64_at(&header, layout.ob_size())?.checked_mul(2)?,
        _ => 0,
    };
    let copies = match layout.tlbc {
        Some(tlbc) => bytecode_copies(pid, u64_at(&header, tlbc)?),
        None => Vec::new(),
    };
    Some(CodeInfo {
        qualname: crate::sanitize::owned(read_string(pid, u64_at(&header, layout.qualname)?, interpreter)?).into(),
        filename: crate::sanitize::owned(read_string(pid, filename_ptr, interpreter)?).into(),
        first_line: u32_at(&header, layout.firstlineno)?,
        linetable: read_bytes_object(pid, u64_at(&header, layout.linetable)?, layout).unwrap_or_default(),
        code_address: frame.code,
        code_adaptive: layout.code_adaptive,
        lines: layout.lines,
        bytecode_len,
        copies,
        read_at: Instant::now(),
        copies_unknown: false,
        table_cut: false,
        lines_seen: Mutex::default(),
    })
}

/// The thread-local copies of a code object's bytecode listed by its `co_tlbc` array at `array` (`_PyCodeArray`:
/// {size, entries[size]}): the entries after the first (`co_code_adaptive` itself) that exist. None when the array
/// cannot be read.
fn bytecode_copies(pid: u32, array: u64) -> Vec<u64> {
    if array == 0 {
        return Vec::new();
    }
    let entries = || -> Option<Vec<u64>> {
        let size = u64_at(&memory::read(pid, array, 8).ok()?, 0)?.min(MAX_BYTECODE_COPIES);
        let bytes = memory::read(pid, array.checked_add(8)?, usize::try_from(size.checked_mul(8)?).ok()?).ok()?;
        Some(bytes.chunks_exact(8).skip(1).filter_map(|entry| u64_at(entry, 0)).filter(|&at| at != 0).collect())
    };
    entries().unwrap_or_default()
}

/// Reads a `str` (compact PyUnicodeObject, as code object names always are).
fn read_string(pid: u32, address: u64, interpreter: &Interpreter) -> Option<String> {
    let layout = &interpreter.layouts.code;
    let header = memory::read(pid, address, layout.compact_data as usize).ok()?;
    if interpreter.unicode_type.is_some_and(|unicode| u64_at(&header, layout.ob_type()) != Some(unicode)) {
        return None;
    }
    let string = CompactStr::parse(&header, MAX_STRING, layout)?;
    let (start, size) = string.data(address, layout)?;
    string.decode(memory::read(pid, start, usize::try_from(size).ok()?).ok()?)
}

/// What a compact `str`'s header (`PyASCIIObject`) says: its length in characters, the bytes per character (1, 2
/// or 4) and whether it is ASCII, whose characters start at `ascii_data` (otherwise at `compact_data`). Shared by
/// every reader of a target's strings (code objects here, thread names).
pub(crate) struct CompactStr {
    length: u64,
    kind: u32,
    ascii: bool,
}

impl CompactStr {
    /// The header of a compact string of at most `max_chars` characters; `None` for anything else.
    pub(crate) fn parse(header: &[u8], max_chars: u64, layout: &CodeLayout) -> Option<Self> {
        let length = u64_at(header, layout.field(16))?;
        let state = u32_at(header, layout.field(32))?;
        let (kind, compact, ascii) = layout.str_state(state);
        (compact && length <= max_chars && matches!(kind, 1 | 2 | 4)).then_some(Self { length, kind, ascii })
    }

    /// Where the string at `address` keeps its characters, and how many bytes they take.
    pub(crate) fn data(&self, address: u64, layout: &CodeLayout) -> Option<(u64, u64)> {
        if self.ascii {
            Some((address.checked_add(layout.ascii_data)?, self.length))
        } else {
            Some((address.checked_add(layout.compact_data)?, self.length.checked_mul(u64::from(self.kind))?))
        }
    }

    /// The characters, from the bytes `data` points at.
    pub(crate) fn decode(&self, bytes: Vec<u8>) -> Option<String> {
        if self.ascii {
            return String::from_utf8(bytes).ok();
        }
        match self.kind {
            1 => Some(bytes.iter().map(|&b| char::from(b)).collect()),
            2 => bytes.chunks_exact(2).map(|c| char::from_u32(u32::from(u16::from_le_bytes([c[0], c[1]])))).collect(),
            _ => bytes.chunks_exact(4).map(|c| char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
        }
    }
}

/// Reads a `bytes` object: size at 16, data at 32 in every supported version's default build (each
/// `head_extra` further in a free-threaded one).
fn read_bytes_object(pid: u32, address: u64, layout: &CodeLayout) -> Option<Vec<u8>> {
    let data = layout.field(32);
    let header = memory::read(pid, address, data as usize).ok()?;
    let size = u64_at(&header, layout.field(16))?;
    if size > MAX_LINETABLE {
        return None;
    }
    memory::read(pid, address.checked_add(data)?, size as usize).ok()
}

/// The line table in a crash copy of a free-threaded build's `bytes` object, which the kernel copied from `head_extra`
/// bytes before its data: the size (`ob_size`), the hash, then as much of the data as the copy holds. An unread
/// copy is zeros, so an empty table.
fn free_threaded_table(copied: &[u8], head_extra: u64) -> Vec<u8> {
    let size = u64_at(copied, 0).unwrap_or(0);
    let start = usize::try_from(head_extra).unwrap_or(usize::MAX).min(copied.len());
    let end = usize::try_from(size).unwrap_or(usize::MAX).min(copied.len().saturating_sub(start)).saturating_add(start);
    copied[start..end].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::layout::LineFormat;

    fn layout(head_extra: u64) -> CodeLayout {
        CodeLayout {
            firstlineno: 84,
            filename: 128,
            name: 136,
            qualname: 144,
            linetable: 152,
            code_adaptive: 216,
            ascii_data: 40 + head_extra,
            compact_data: 56 + head_extra,
            lines: LineFormat::Locations,
            head_extra,
            tlbc: None,
            str_kind_bit: 2,
        }
    }

    #[test]
    fn an_instruction_in_a_threads_own_copy_of_the_bytecode_has_its_line() {
        // Two instructions on line 11 then two on line 12 (one-line entries: code 13 "no column", line delta +1).
        let linetable = vec![0x80 | (13 << 3) | 1, 2, 0x80 | (13 << 3) | 1, 2];
        let info = CodeInfo {
            qualname: "f".into(),
            filename: "f.py".into(),
            first_line: 10,
            linetable,
            code_address: 0x1000,
            code_adaptive: 216,
            lines: LineFormat::Locations,
            bytecode_len: 8,
            copies: vec![0x9000],
            read_at: Instant::now(),
            copies_unknown: false,
            table_cut: false,
            lines_seen: Mutex::default(),
        };
        let main = 0x1000 + 216;
        assert_eq!((info.line(main), info.line(main + 6)), (Some(11), Some(12)));
        // The same offsets in the thread's copy.
        assert_eq!((info.line(0x9000), info.line(0x9000 + 6)), (Some(11), Some(12)));
        // Past the end of every copy, or before them: no offset, so the first line.
        assert_eq!(info.bytecode_offset(main + 8), None);
        assert_eq!(info.bytecode_offset(0x9000 + 8), None);
        assert_eq!(info.bytecode_offset(0x800), None);
        assert_eq!(info.line(0x800), Some(10));
        // A crash copy of such a build knows no copies: no line rather than a wrong one.
        // (Each a new code object: its own memo of lines.)
        let crash_copy = CodeInfo {
            copies: Vec::new(),
            bytecode_len: 0,
            copies_unknown: true,
            lines_seen: Mutex::default(),
            ..info
        };
        assert_eq!((crash_copy.line(main + 6), crash_copy.line(0x800)), (Some(12), None));
        // A crash copy of a line table cut at the copy's length: past what it holds, no line either.
        let cut = CodeInfo { copies_unknown: false, table_cut: true, lines_seen: Mutex::default(), ..crash_copy };
        assert_eq!((cut.line(main + 6), cut.line(main + 64)), (Some(12), None));
    }

    #[test]
    fn a_free_threaded_crash_copy_of_a_line_table_skips_the_size_and_hash() {
        // Copied from 32 bytes into a free-threaded `bytes` object: ob_size 5, ob_shash, then the 5 bytes.
        let mut copied = vec![0u8; 256];
        copied[..8].copy_from_slice(&5u64.to_le_bytes());
        copied[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        copied[16..21].copy_from_slice(&[0x80, 1, 2, 3, 4]);
        assert_eq!(free_threaded_table(&copied, 16), [0x80, 1, 2, 3, 4]);
        // A table longer than the copy keeps what it holds; an unread copy (zeros) is empty.
        copied[..8].copy_from_slice(&1000u64.to_le_bytes());
        assert_eq!(free_threaded_table(&copied, 16).len(), 240);
        assert!(free_threaded_table(&[0u8; 256], 16).is_empty());
        let mut named = PyCodeCopy {
            code: 0x1000,
            first_line: 7,
            // What the kernel makes of a free-threaded object's reference count: ignored.
            linetable_len: 0,
            qualname: [0; profiler_common::CRASH_QUALNAME_LEN],
            filename: [0; profiler_common::CRASH_FILENAME_LEN],
            linetable: copied.try_into().unwrap(),
        };
        named.qualname[..4].copy_from_slice(b"work");
        let info = CodeInfo::from_copy(&named, &layout(16)).expect("a copy with a name");
        assert_eq!(info.linetable.len(), 240);
    }

    #[test]
    fn a_free_threaded_strings_header_is_16_bytes_further() {
        // length 3, state: kind 1, compact, ascii; at 16 and 32 in the default build, 32 and 48 in a free-threaded one.
        let state: u32 = (1 << 2) | (1 << 5) | (1 << 6);
        for head_extra in [0u64, 16] {
            let mut header = vec![0u8; 72];
            let at = |offset: u64| (offset + head_extra) as usize;
            header[at(16)..at(24)].copy_from_slice(&3u64.to_le_bytes());
            header[at(32)..at(36)].copy_from_slice(&state.to_le_bytes());
            let layout = layout(head_extra);
            let string = CompactStr::parse(&header, 10, &layout).expect("a compact ASCII string");
            assert_eq!(string.data(0x1000, &layout), Some((0x1000 + 40 + head_extra, 3)));
        }
    }
}
