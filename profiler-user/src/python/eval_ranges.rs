//! Finds the code of CPython's evaluation loop that carries no name of its own.
//!
//! A build may split `_PyEval_EvalFrameDefault` (GCC's hot/cold splitting, or a thin exported entry that jumps
//! into the real loop): in a stripped binary the out-of-line part has no symbol, only its own unwind entry (FDE).
//! Native frames there are evaluation-loop frames all the same, and the merge stage must replace them by Python
//! frames. They are found by following the jumps out of the named function to the FDEs that contain their
//! targets, skipping FDEs that start at another named function.
// Values here come from a target (its files, its memory, its maps) or the kernel: no implicit arithmetic.
#![deny(clippy::arithmetic_side_effects)]
use std::ops::Range;

/// The address ranges (SVMA) of evaluation-loop code outside the named function.
///
/// `code` is the named function's bytes at `start`; `eh_frame_hdr` the `.eh_frame_hdr` section at `hdr_svma`;
/// `named` the start addresses of the file's function symbols.
pub(crate) fn find(start: u64, code: &[u8], eh_frame_hdr: &[u8], hdr_svma: u64, named: &[u64]) -> Vec<Range<u64>> {
    let Some(table) = fde_starts(eh_frame_hdr, hdr_svma) else { return Vec::new() };
    let end = start.saturating_add(code.len() as u64);
    let mut ranges: Vec<Range<u64>> = jump_targets(start, code)
        .filter(|target| !(start..end).contains(target))
        .filter_map(|target| {
            let index = table.partition_point(|&fde| fde <= target).checked_sub(1)?;
            let range = table[index]..*table.get(index.checked_add(1)?)?;
            (!named.contains(&range.start)).then_some(range)
        })
        .collect();
    ranges.sort_by_key(|r| r.start);
    ranges.dedup();
    ranges
}

/// Targets of `jmp rel32` (E9) and `jcc rel32` (0F 80–8F) found by scanning: a byte scan also decodes
/// instruction fragments, which is why targets are only trusted when they land in an unnamed FDE.
fn jump_targets(start: u64, code: &[u8]) -> impl Iterator<Item = u64> + '_ {
    (0..code.len()).filter_map(move |i| {
        // `i` indexes `code`, so `i + 6` cannot overflow a usize; wrapping marks that as decided.
        let (opcode_len, rel_at) = match code.get(i..i.wrapping_add(2))? {
            [0xe9, _] => (1usize, i.wrapping_add(1)),
            [0x0f, op] if (0x80..=0x8f).contains(op) => (2, i.wrapping_add(2)),
            _ => return None,
        };
        let rel = i32::from_le_bytes(code.get(rel_at..rel_at.wrapping_add(4))?.try_into().ok()?);
        let next = start.checked_add(i.wrapping_add(opcode_len).wrapping_add(4) as u64)?;
        Some(next.wrapping_add_signed(i64::from(rel)))
    })
}

/// The sorted FDE start addresses from `.eh_frame_hdr`'s binary-search table (the usual encodings: pc-relative
/// eh_frame pointer, udata4 count, datarel sdata4 table); `None` for any other layout.
fn fde_starts(hdr: &[u8], hdr_svma: u64) -> Option<Vec<u64>> {
    let [1, 0x1b, 0x03, 0x3b] = hdr.get(..4)? else { return None };
    let count = u32::from_le_bytes(hdr.get(8..12)?.try_into().ok()?) as usize;
    let table = hdr.get(12..count.checked_mul(8)?.checked_add(12)?)?;
    let mut starts: Vec<u64> = table
        .chunks_exact(8)
        .map(|entry| hdr_svma.wrapping_add_signed(i64::from(i32::from_le_bytes(entry[..4].try_into().unwrap()))))
        .collect();
    starts.sort_unstable();
    Some(starts)
}

#[cfg(test)]
// Test data is built here, not read from a target: the module's arithmetic rule is for target data.
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    fn hdr(hdr_svma: u64, fde_starts: &[u64]) -> Vec<u8> {
        let mut bytes = vec![1, 0x1b, 0x03, 0x3b, 0, 0, 0, 0];
        bytes.extend((fde_starts.len() as u32).to_le_bytes());
        for &start in fde_starts {
            bytes.extend(((start as i64 - hdr_svma as i64) as i32).to_le_bytes());
            bytes.extend(0i32.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn follows_jumps_into_unnamed_code_only() {
        // The named function at 0x5000 (16 bytes) jumps to 0x1010 (unnamed FDE 0x1000..0x2000) and 0x3000
        // (the FDE of another named function), and within itself.
        let start = 0x5000u64;
        let mut code = vec![0x90u8; 16];
        let rel = |from_next: u64, to: u64| ((to as i64 - from_next as i64) as i32).to_le_bytes();
        code[0] = 0x0f;
        code[1] = 0x84;
        code[2..6].copy_from_slice(&rel(start + 6, 0x1010));
        code[6] = 0xe9;
        code[7..11].copy_from_slice(&rel(start + 11, 0x3000));
        code[11] = 0xe9;
        code[12..16].copy_from_slice(&rel(start + 16, start + 2));
        let table = hdr(0x400, &[0x1000, 0x2000, 0x3000, 0x4000, 0x5000, 0x5010]);
        let ranges = find(start, &code, &table, 0x400, &[0x3000, 0x5000]);
        assert_eq!(ranges, vec![0x1000..0x2000]);
    }

    #[test]
    fn unknown_header_layouts_give_nothing() {
        assert!(find(0, &[0xe9, 0, 0, 0, 0], &[1, 0x03, 0x03, 0x03], 0, &[]).is_empty());
        assert!(find(0, &[0xe9, 0, 0, 0, 0], &[], 0, &[]).is_empty());
    }
}
