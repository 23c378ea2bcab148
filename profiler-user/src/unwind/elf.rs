//! Reads what unwinding and symbolization need from an ELF file: unwind sections, load segments, build-id.
//!
//! The file is read, not memory-mapped: a target may truncate or rewrite a library it has loaded (an in-place
//! deploy, `cp new.so old.so`), and touching a mapping past the file's new end kills the reader with SIGBUS,
//! where `read` only comes up short. So the unwind sections are copied (tens to hundreds of KiB per library) and
//! `.text` is not kept at all: framehop's instruction analysis, the only user of its bytes, is not needed with CFI.
// Values here come from a target (its files, its memory, its maps) or the kernel: no implicit arithmetic.
#![deny(clippy::arithmetic_side_effects)]
use std::{fs::File, ops::Range, sync::Arc};

use anyhow::{bail, Context as _, Result};
use object::{
    elf::PF_X,
    read::{
        elf::{FileHeader as _, SectionHeader as _},
        ReadCacheOps,
    },
    Object as _, ObjectSection as _, ObjectSegment as _, ReadCache, ReadRef, SegmentFlags,
};

/// The most bytes we read of any one section a file's headers describe (unwind tables, symbol tables): a forged
/// or sparse file may claim gigabytes, and reading them would zero-fill as much memory. The largest real ones
/// (a big C++ library's .eh_frame, libxul's .symtab) are a few tens of MiB.
pub(crate) const MAX_SECTION_BYTES: u64 = 64 << 20;

/// Bytes of one ELF section, copied out of the file.
#[derive(Clone)]
pub(crate) enum SectionBytes {
    Owned(Arc<[u8]>),
}

impl std::ops::Deref for SectionBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            SectionBytes::Owned(bytes) => bytes,
        }
    }
}

/// A section's address range in the file's own address space (SVMA) and its bytes.
#[derive(Clone)]
pub(crate) struct Section {
    pub svma: Range<u64>,
    pub bytes: SectionBytes,
}

/// A PT_LOAD segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LoadSegment {
    pub vaddr: u64,
    pub mem_size: u64,
    pub file_offset: u64,
    pub file_size: u64,
    pub executable: bool,
}

/// The GNU build-id of an ELF file (lowercase hex), `None` if it has none; an error if it is not ELF.
pub(crate) fn read_build_id(file: &File) -> Result<Option<String>> {
    let data = ReadCache::new(file);
    let elf = object::File::parse(&data)?;
    if !matches!(elf.format(), object::BinaryFormat::Elf) {
        bail!("not an ELF file");
    }
    Ok(elf.build_id()?.map(|id| id.iter().map(|b| format!("{b:02x}")).collect()))
}

/// The load segments of a parsed file.
pub(crate) fn load_segments<'d, R: ReadRef<'d>>(elf: &object::File<'d, R>) -> Vec<LoadSegment> {
    elf.segments()
        .map(|segment| {
            let (file_offset, file_size) = segment.file_range();
            let executable = matches!(segment.flags(), SegmentFlags::Elf { p_flags, .. } if p_flags.0 & PF_X.0 != 0);
            LoadSegment { vaddr: segment.address(), mem_size: segment.size(), file_offset, file_size, executable }
        })
        .collect()
}

/// The load bias (AVMA − SVMA) of a process mapping of a file with `segments`, from where the mapping starts and
/// which file offset it maps.
pub(crate) fn load_bias(
    segments: &[LoadSegment],
    map_start: u64,
    map_file_offset: u64,
    executable: bool,
) -> Option<u64> {
    // Page rounding makes neighbouring segments overlap in file offsets (a read-only segment ending at 0x1234 and
    // the text segment mapped from 0x1000), so the segment must also match the mapping's rights.
    let segment = segments.iter().find(|s| {
        let page_start = s.file_offset & !0xfff;
        s.executable == executable
            && map_file_offset >= page_start
            && map_file_offset < s.file_offset.saturating_add(s.file_size.max(1))
    })?;
    // The mapping maps file offset `map_file_offset` at `map_start`; in the file's address space that offset sits
    // at vaddr - file_offset + map_file_offset.
    let svma = segment.vaddr.wrapping_sub(segment.file_offset).wrapping_add(map_file_offset);
    Some(map_start.wrapping_sub(svma))
}

/// Everything we keep of one ELF file.
pub(crate) struct ElfFile {
    pub build_id: Option<String>,
    pub segments: Vec<LoadSegment>,
    pub text: Option<Section>,
    pub eh_frame: Option<Section>,
    pub eh_frame_hdr: Option<Section>,
    pub debug_frame: Option<Section>,
    pub got: Option<Range<u64>>,
}

impl ElfFile {
    /// By path: for tests and the fuzz targets (the agent opens a target's files through `TargetFile`).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn open(path: &std::path::Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Self::parse(&ReadCache::new(file)).with_context(|| format!("reading ELF file {}", path.display()))
    }

    /// From a file already opened (see `process::files::TargetFile`); `name` is for messages.
    pub(crate) fn from_file(file: &File, name: &str) -> Result<Self> {
        Self::parse(&ReadCache::new(file)).with_context(|| format!("reading ELF file {name}"))
    }

    fn parse<R: ReadCacheOps>(file: &ReadCache<R>) -> Result<Self> {
        check_section_sizes(file)?;
        let elf = object::File::parse(file)?;
        if !matches!(elf.format(), object::BinaryFormat::Elf) {
            bail!("not an ELF file");
        }
        let section = |name: &str| -> Option<Section> {
            let section = elf.section_by_name(name)?;
            if section.kind() == object::SectionKind::UninitializedData {
                return None;
            }
            let svma = address_range(section.address(), section.size())?;
            let claimed = section.compressed_data().ok()?.uncompressed_size.max(section.size());
            if claimed > MAX_SECTION_BYTES {
                tracing::warn!(
                    "{name} claims {} MiB, over the {} MiB cap (MAX_SECTION_BYTES): not read",
                    claimed >> 20,
                    MAX_SECTION_BYTES >> 20
                );
                return None;
            }
            let bytes = SectionBytes::Owned(section.uncompressed_data().ok()?.into_owned().into());
            Some(Section { svma, bytes })
        };
        // Where .text is, without its bytes.
        let text = elf.section_by_name(".text").and_then(|section| {
            Some(Section {
                svma: address_range(section.address(), section.size())?,
                bytes: SectionBytes::Owned(Arc::from(&[][..])),
            })
        });
        let segments = load_segments(&elf);
        let build_id = elf.build_id().ok().flatten().map(|id| id.iter().map(|b| format!("{b:02x}")).collect());
        let got = elf.section_by_name(".got").and_then(|s| address_range(s.address(), s.size()));
        Ok(Self {
            build_id,
            segments,
            text,
            eh_frame: section(".eh_frame"),
            eh_frame_hdr: section(".eh_frame_hdr"),
            debug_frame: section(".debug_frame"),
            got,
        })
    }

    /// The load bias (AVMA − SVMA) of a process mapping of this file, from where the mapping starts and which
    /// file offset it maps.
    pub(crate) fn load_bias(&self, map_start: u64, map_file_offset: u64, executable: bool) -> Option<u64> {
        load_bias(&self.segments, map_start, map_file_offset, executable)
    }

    /// The file offset of an address of this file's address space (what a build-id based symbolizer needs).
    pub(crate) fn svma_to_file_offset(&self, svma: u64) -> Option<u64> {
        let segment = self.segments.iter().find(|s| svma >= s.vaddr && svma < s.vaddr.saturating_add(s.mem_size))?;
        svma.checked_sub(segment.vaddr)?.checked_add(segment.file_offset)
    }

    /// Like `svma_to_file_offset` for a file parsed elsewhere; only addresses backed by file bytes qualify.
    pub(crate) fn svma_to_offset_in<'d, R: ReadRef<'d>>(elf: &object::File<'d, R>, svma: u64) -> Option<u64> {
        elf.segments().find_map(|segment| {
            let (offset, size) = segment.file_range();
            let start = segment.address();
            (svma >= start && svma < start.saturating_add(size))
                .then(|| svma.checked_sub(start)?.checked_add(offset))?
        })
    }
}

/// Fails when a symbol table (which the ELF parser reads whole, at once) claims more than `MAX_SECTION_BYTES`,
/// before anything is read of it. Only 64-bit ELF is profiled.
pub(crate) fn check_section_sizes<'d, R: ReadRef<'d>>(data: R) -> Result<()> {
    use object::elf::{FileHeader64, SHT_DYNSYM, SHT_SYMTAB, SHT_SYMTAB_SHNDX};
    let header = FileHeader64::<object::Endianness>::parse(data).context("not a 64-bit ELF file")?;
    let endian = header.endian()?;
    for section in header.section_headers(endian, data)? {
        let (kind, size) = (section.sh_type(endian), section.sh_size(endian));
        if matches!(kind, SHT_SYMTAB | SHT_DYNSYM | SHT_SYMTAB_SHNDX) && size > MAX_SECTION_BYTES {
            bail!(
                "a symbol table claims {} MiB, over the {} MiB cap (MAX_SECTION_BYTES): not read",
                size >> 20,
                MAX_SECTION_BYTES >> 20
            );
        }
    }
    Ok(())
}

/// The addresses a section claims, `None` when they run past the end of the address space (a forged header):
/// such a section is not used at all rather than with a range that wrapped around.
fn address_range(address: u64, size: u64) -> Option<Range<u64>> {
    Some(address..address.checked_add(size)?)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn this_test_binary() -> ElfFile {
        ElfFile::open(&std::env::current_exe().unwrap()).unwrap()
    }

    #[test]
    fn reads_unwind_sections_and_segments_of_a_real_binary() {
        let elf = this_test_binary();
        assert!(elf.eh_frame.as_ref().is_some_and(|s| !s.bytes.is_empty()));
        assert!(elf.eh_frame_hdr.is_some());
        let text = elf.text.as_ref().unwrap();
        assert!(text.svma.end > text.svma.start && text.bytes.is_empty());
        assert!(elf.segments.iter().any(|s| s.executable));
        assert!(elf.build_id.as_ref().is_some_and(|id| id.len() >= 16 && id.chars().all(|c| c.is_ascii_hexdigit())));
    }

    #[test]
    fn load_bias_matches_the_running_process() {
        // Our own text mapping: the bias computed from /proc/self/maps must put our own function inside .text.
        let elf = this_test_binary();
        let exe = std::env::current_exe().unwrap();
        let maps = crate::process::maps::read(std::process::id()).unwrap();
        let text_map =
            maps.mappings.iter().find(|m| m.executable && Path::new(&m.path) == exe).expect("our executable mapping");
        let bias = elf.load_bias(text_map.start, text_map.file_offset, true).unwrap();
        let here = this_test_binary as fn() -> ElfFile as usize as u64;
        let svma = here - bias;
        let text = elf.text.as_ref().unwrap();
        assert!(text.svma.contains(&svma), "{svma:#x} not in {:#x?}", text.svma);
        let offset = elf.svma_to_file_offset(svma).unwrap();
        assert!(offset < std::fs::metadata(&exe).unwrap().len());
    }

    /// A fuzzer finding (fuzz/regressions/elf/overflow-got-range): a `.got` whose address plus size runs past
    /// the end of the address space is left out, not turned into a range that wrapped around.
    #[test]
    fn sections_past_the_end_of_the_address_space_are_ignored() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/elf/overflow-got-range");
        let elf = ElfFile::open(&path).unwrap();
        assert_eq!(elf.got, None);
        assert!(elf.eh_frame.is_some(), "the rest of the file is still read");
        assert_eq!(address_range(u64::MAX - 1, 2), None);
        assert_eq!(address_range(0x1000, 0x20), Some(0x1000..0x1020));
    }

    #[test]
    fn rejects_garbage_and_truncated_files() {
        let dir = std::env::temp_dir().join(format!("elf-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("garbage");
        std::fs::write(&garbage, b"\x7fELF this is not really an ELF file").unwrap();
        assert!(ElfFile::open(&garbage).is_err());
        let truncated = dir.join("truncated");
        let real = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        std::fs::write(&truncated, &real[..200]).unwrap();
        assert!(ElfFile::open(&truncated).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
