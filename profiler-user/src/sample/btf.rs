//! Where fields of the kernel's `task_struct` sit, read from the kernel's own type information
//! (`/sys/kernel/btf/vmlinux`).
//!
//! Two things the kernel programs need are in no tracepoint record: an exiting process's exit code and a thread's
//! TLS base (CPython 3.8–3.10 know threads by `pthread_self()`, which is that base). `task_struct` differs per
//! kernel build (config options, structure randomization), and BTF describes this very kernel, so its offsets are
//! exact. aya reads BTF for its own relocations but does not expose struct members, and the BTF crates on
//! crates.io are LGPL; the format is small (a header, a run of type records, a string table), so this reads only
//! what it needs: struct members by name, through anonymous structs and unions, and typedef/const chains.
// Values here come from a target (its files, its memory, its maps) or the kernel: no implicit arithmetic.
#![deny(clippy::arithmetic_side_effects)]
use anyhow::{bail, Context as _, Result};
use profiler_common::{TaskOffsets, NO_FIELD};

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Member lookups through anonymous members and type modifiers stop this deep (no real struct nests further).
const MAX_DEPTH: usize = 16;

/// The task_struct offsets of the running kernel; fields it cannot find are `NO_FIELD` (the features that need
/// them are then off, with a warning from their users).
pub(crate) fn task_offsets() -> TaskOffsets {
    let read = |bytes: &[u8]| {
        let btf = Btf::parse(bytes)?;
        Ok::<_, anyhow::Error>(TaskOffsets {
            mm: btf.member_offset("task_struct", &["mm"]).unwrap_or(NO_FIELD),
            rss_pages: resident_page_counters(&btf).unwrap_or([NO_FIELD; 3]),
            exit_code: btf.member_offset("task_struct", &["exit_code"]).unwrap_or(NO_FIELD),
            fsbase: btf.member_offset("task_struct", &["thread", "fsbase"]).unwrap_or(NO_FIELD),
            pid: btf.member_offset("task_struct", &["pid"]).unwrap_or(NO_FIELD),
            // Renamed in 5.14 (so that nothing reads it without READ_ONCE).
            state: btf
                .member_offset("task_struct", &["__state"])
                .or_else(|| btf.member_offset("task_struct", &["state"]))
                .unwrap_or(NO_FIELD),
        })
    };
    match std::fs::read("/sys/kernel/btf/vmlinux").context("reading /sys/kernel/btf/vmlinux").and_then(|b| read(&b)) {
        Ok(offsets) => {
            if offsets.exit_code == NO_FIELD {
                tracing::warn!("this kernel's BTF has no task_struct.exit_code: exit codes will not be known");
            }
            if offsets.fsbase == NO_FIELD {
                tracing::warn!(
                    "this kernel's BTF has no task_struct.thread.fsbase: Python 3.8–3.10 threads will show native \
                     stacks only"
                );
            }
            if offsets.mm == NO_FIELD || offsets.rss_pages.contains(&NO_FIELD) {
                tracing::warn!("this kernel's BTF has no task_struct.mm or mm_struct.rss_stat: no memory profiles");
            }
            if offsets.pid == NO_FIELD || offsets.state == NO_FIELD {
                tracing::warn!("this kernel's BTF has no task_struct.pid or .__state: no off-CPU profiles");
            }
            offsets
        }
        Err(err) => {
            tracing::warn!("{err:#}: exit codes, off-CPU profiles and Python 3.8–3.10 threads will not be known");
            TaskOffsets::UNKNOWN
        }
    }
}

/// `mm_struct.rss_stat`'s indexes of resident file, anonymous and shared-memory pages (`MM_FILEPAGES`,
/// `MM_ANONPAGES`, `MM_SHMEMPAGES`; `MM_SWAPENTS`, 2, counts swapped-out pages and is left out). Unchanged since
/// Linux 4.5.
const RSS_COUNTERS: [u32; 3] = [0, 1, 3];

/// Offsets in `mm_struct` of the 64-bit values of the resident-page counters: before 6.2 `rss_stat` is a struct
/// holding an array of `atomic_long_t` (`count`); since, an array of `percpu_counter` whose `count` is the shared
/// part (each CPU's part is added to it in batches far smaller than a huge page).
fn resident_page_counters(btf: &Btf) -> Option<[u32; 3]> {
    let (base, stride) = match btf.member_offset("mm_struct", &["rss_stat", "count"]) {
        Some(array) => (array, 8),
        None => {
            let array = btf.member_offset("mm_struct", &["rss_stat"])?;
            (array.checked_add(btf.member_offset("percpu_counter", &["count"])?)?, btf.struct_size("percpu_counter")?)
        }
    };
    let mut offsets = [0; 3];
    for (offset, index) in offsets.iter_mut().zip(RSS_COUNTERS) {
        *offset = base.checked_add(stride.checked_mul(index)?)?;
    }
    Some(offsets)
}

/// One type record: its kind, name, size-or-type word and where its trailing entries start.
#[derive(Clone, Copy)]
struct Type {
    kind: u32,
    name_off: u32,
    vlen: u32,
    kind_flag: bool,
    size_or_type: u32,
    data: usize,
}

/// A parsed BTF blob: type records indexed by id (id 0 is `void`).
pub(crate) struct Btf<'a> {
    types: Vec<Type>,
    type_data: &'a [u8],
    strings: &'a [u8],
}

impl<'a> Btf<'a> {
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self> {
        let u16_at = |at: usize| bytes.get(at..at.checked_add(2)?).map(|b| u16::from_le_bytes([b[0], b[1]]));
        if u16_at(0) != Some(BTF_MAGIC) {
            bail!("the kernel's BTF has an unknown format (not little-endian BTF)");
        }
        // Fields 0..5 of the header after magic, version and flags: small constant offsets.
        let header = |index: usize| {
            read_u32(bytes, index.wrapping_mul(4).wrapping_add(4)).context("the kernel's BTF header is truncated")
        };
        let (hdr_len, type_off, type_len) = (header(0)?, header(1)?, header(2)?);
        let (str_off, str_len) = (header(3)?, header(4)?);
        let section = |off: u32, len: u32| {
            let start = (hdr_len as usize).checked_add(off as usize);
            let end = start.and_then(|start| start.checked_add(len as usize));
            start
                .zip(end)
                .and_then(|(start, end)| bytes.get(start..end))
                .context("the kernel's BTF sections lie outside the file")
        };
        let type_data = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?;
        let mut types = vec![Type { kind: 0, name_off: 0, vlen: 0, kind_flag: false, size_or_type: 0, data: 0 }];
        let mut at = 0;
        while at < type_data.len() {
            // `at` < type_data.len() and i < 3: no overflow.
            let word = |i: usize| {
                read_u32(type_data, at.wrapping_add(i.wrapping_mul(4))).context("a BTF type record is truncated")
            };
            let (name_off, info, size_or_type) = (word(0)?, word(1)?, word(2)?);
            let kind = (info >> 24) & 0x1f;
            let vlen = info & 0xffff;
            let trailing = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                // vlen < 2^16: the products fit.
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => (vlen as usize).wrapping_mul(12),
                KIND_ENUM | KIND_FUNC_PROTO => (vlen as usize).wrapping_mul(8),
                0..=19 => 0,
                other => bail!("the kernel's BTF has a type kind this profiler does not know ({other})"),
            };
            let data = at.wrapping_add(12); // the three words above were read
            types.push(Type { kind, name_off, vlen, kind_flag: info >> 31 != 0, size_or_type, data });
            at = data.wrapping_add(trailing);
        }
        Ok(Self { types, type_data, strings })
    }

    /// Byte offset of `path` (a member, then members of that member's struct, …) inside struct `name`.
    pub(crate) fn member_offset(&self, name: &str, path: &[&str]) -> Option<u32> {
        let mut id = self.struct_id(name)?;
        let mut total = 0;
        for member in path {
            let (offset, member_type) = self.find_member(id, member, 0)?;
            total = u32::checked_add(total, offset)?;
            id = member_type;
        }
        Some(total)
    }

    /// Bytes of struct `name` (the stride of an array of them).
    pub(crate) fn struct_size(&self, name: &str) -> Option<u32> {
        Some(self.types[self.struct_id(name)?].size_or_type)
    }

    /// The id of the (complete, not forward-declared) struct named `name`.
    fn struct_id(&self, name: &str) -> Option<usize> {
        (1..self.types.len()).find(|&id| {
            let t = self.types[id];
            t.kind == KIND_STRUCT && t.vlen > 0 && self.name(t.name_off) == Some(name)
        })
    }

    /// (byte offset, type id) of member `name` of struct/union `id`, looking into anonymous members.
    fn find_member(&self, id: usize, name: &str, depth: usize) -> Option<(u32, usize)> {
        let t = self.types[self.resolve(id, depth)?];
        if !matches!(t.kind, KIND_STRUCT | KIND_UNION) || depth > MAX_DEPTH {
            return None;
        }
        for index in 0..t.vlen as usize {
            let at = t.data.checked_add(index.checked_mul(12)?)?;
            let word = |i: usize| read_u32(self.type_data, at.checked_add(i)?);
            let (member_name, member_type, raw_offset) = (word(0)?, word(4)?, word(8)?);
            // With kind_flag, the top 8 bits are a bitfield size: such members have no byte offset of their own.
            let (bit_offset, bitfield) =
                if t.kind_flag { (raw_offset & 0x00ff_ffff, raw_offset >> 24 != 0) } else { (raw_offset, false) };
            let member_type = member_type as usize;
            if member_name == 0 {
                // depth ≤ MAX_DEPTH (checked above).
                if let Some((inner, found)) = self.find_member(member_type, name, depth.wrapping_add(1)) {
                    return Some(((bit_offset / 8).checked_add(inner)?, found));
                }
            } else if self.name(member_name) == Some(name) {
                return (!bitfield && bit_offset % 8 == 0).then_some((bit_offset / 8, member_type));
            }
        }
        None
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: usize, depth: usize) -> Option<usize> {
        for _ in depth..MAX_DEPTH {
            let t = self.types.get(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type as usize
                }
                _ => return Some(id),
            }
        }
        None
    }

    fn name(&self, offset: u32) -> Option<&str> {
        let rest = self.strings.get(offset as usize..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&rest[..end]).ok()
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes.get(at..at.checked_add(4)?).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
// Test data is built here, not read from a target: the module's arithmetic rule is for target data.
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    /// Builds a BTF blob: `int`, `typedef int myint`, and
    /// `struct inner { long pad; myint fsbase; }`, `struct task_struct { int a; union { int b; int exit_code; };
    /// struct inner thread; }` with the union anonymous.
    fn sample_btf() -> Vec<u8> {
        let strings = b"\0int\0myint\0inner\0pad\0fsbase\0task_struct\0a\0b\0exit_code\0thread\0";
        let off = |s: &str| {
            let needle = format!("\0{s}\0");
            (strings.windows(needle.len()).position(|w| w == needle.as_bytes()).unwrap() + 1) as u32
        };
        let mut types: Vec<u32> = Vec::new();
        let info = |kind: u32, vlen: u32| (kind << 24) | vlen;
        // 1: int (4 bytes)
        types.extend([off("int"), info(KIND_INT, 0), 4, 32]);
        // 2: typedef myint -> 1
        types.extend([off("myint"), info(KIND_TYPEDEF, 0), 1]);
        // 3: struct inner { long pad (as int at 0); myint fsbase at bit 64 }
        types.extend([off("inner"), info(KIND_STRUCT, 2), 16]);
        types.extend([off("pad"), 1, 0, off("fsbase"), 2, 64]);
        // 4: anonymous union { int b; int exit_code; }
        types.extend([0, info(KIND_UNION, 2), 4]);
        types.extend([off("b"), 1, 0, off("exit_code"), 1, 0]);
        // 5: struct task_struct { int a @0; union @ bit 32; struct inner thread @ bit 128 }
        types.extend([off("task_struct"), info(KIND_STRUCT, 3), 32]);
        types.extend([off("a"), 1, 0, 0, 4, 32, off("thread"), 3, 128]);
        let type_bytes: Vec<u8> = types.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut blob = Vec::new();
        blob.extend(BTF_MAGIC.to_le_bytes());
        blob.extend([1u8, 0]);
        for word in [24u32, 0, type_bytes.len() as u32, type_bytes.len() as u32, strings.len() as u32] {
            blob.extend(word.to_le_bytes());
        }
        blob.extend(type_bytes);
        blob.extend(strings);
        blob
    }

    #[test]
    fn finds_members_through_anonymous_unions_and_nested_structs() {
        let blob = sample_btf();
        let btf = Btf::parse(&blob).unwrap();
        assert_eq!(btf.member_offset("task_struct", &["a"]), Some(0));
        assert_eq!(btf.member_offset("task_struct", &["exit_code"]), Some(4));
        assert_eq!(btf.member_offset("task_struct", &["thread", "fsbase"]), Some(16 + 8));
        assert_eq!(btf.member_offset("task_struct", &["missing"]), None);
        assert_eq!(btf.member_offset("no_such_struct", &["a"]), None);
    }

    #[test]
    fn refuses_truncated_and_foreign_blobs() {
        let blob = sample_btf();
        assert!(Btf::parse(&blob[..blob.len() - 30]).is_err());
        assert!(Btf::parse(b"\x7fELF").is_err());
        assert!(Btf::parse(&[]).is_err());
    }

    #[test]
    fn reads_this_kernel() {
        // The profiler refuses to start without kernel BTF, so the machines it is tested on have it.
        let bytes = std::fs::read("/sys/kernel/btf/vmlinux").expect("reading /sys/kernel/btf/vmlinux");
        let btf = Btf::parse(&bytes).unwrap();
        let exit_code = btf.member_offset("task_struct", &["exit_code"]).expect("task_struct.exit_code");
        let fsbase = btf.member_offset("task_struct", &["thread", "fsbase"]).expect("task_struct.thread.fsbase");
        assert!(exit_code > 0 && fsbase > exit_code, "{exit_code} {fsbase}");
        let [file, anon, shmem] = resident_page_counters(&btf).expect("mm_struct.rss_stat");
        assert!(file < anon && anon < shmem && shmem - anon == 2 * (anon - file), "{file} {anon} {shmem}");
    }
}
