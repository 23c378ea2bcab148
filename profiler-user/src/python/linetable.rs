//! Decodes CPython's line tables to find the source line of an instruction: the 3.11+ `co_linetable` (the
//! "location table"), 3.10's `co_linetable` and 3.8–3.9's `co_lnotab` (both documented in CPython's
//! Objects/lnotab_notes.txt of their version).
//!
//! 3.11+:
//! Format (Objects/locations.md in CPython): a sequence of entries, each starting with a byte whose bit 7 is set;
//! the entry covers `(b & 7) + 1` code units; its code `(b >> 3) & 15` says how the line changes: 0–9 short form
//! (same line, one more byte), 10–12 one-line form (line += code − 10, two more bytes), 13 no column info (signed
//! varint line delta), 14 long form (signed varint line delta + three varints), 15 no location.
// Values here come from a target (its files, its memory, its maps) or the kernel: no implicit arithmetic.
#![deny(clippy::arithmetic_side_effects)]

/// The line of the instruction at `code_unit` (index in 2-byte code units from the start of the bytecode), or
/// `None` when the table says it has no line or the table is malformed.
pub(crate) fn line_for(table: &[u8], first_line: u32, code_unit: u64) -> Option<u32> {
    let mut reader = Reader { bytes: table, pos: 0 };
    let mut line = i64::from(first_line);
    let mut unit = 0u64;
    while let Some(first) = reader.next() {
        if first & 0x80 == 0 {
            return None; // not at an entry start: corrupt table
        }
        let length = u64::from(first & 7).wrapping_add(1); // 1..=8
        let code = (first >> 3) & 15;
        let entry_line = match code {
            0..=9 => {
                reader.next()?;
                Some(line)
            }
            10..=12 => {
                line = line.checked_add(i64::from(code).checked_sub(10)?)?;
                reader.next()?;
                reader.next()?;
                Some(line)
            }
            13 => {
                line = line.checked_add(reader.signed_varint()?)?;
                Some(line)
            }
            14 => {
                line = line.checked_add(reader.signed_varint()?)?;
                reader.varint()?; // end line delta
                reader.varint()?; // column + 1
                reader.varint()?; // end column + 1
                Some(line)
            }
            _ => None,
        };
        // Entries cover at most 8 units each and the table is in memory: `unit` cannot overflow in practice,
        // and a table that made it would end here rather than wrap.
        let end = unit.checked_add(length)?;
        if code_unit < end {
            return entry_line.and_then(|l| u32::try_from(l).ok());
        }
        unit = end;
    }
    None
}

/// 3.8–3.9 `co_lnotab`: (bytecode offset increment, signed line increment) byte pairs; the line of the
/// instruction at byte offset `offset` is the line after the last pair whose cumulative offset is ≤ `offset`.
pub(crate) fn lnotab_line(table: &[u8], first_line: u32, offset: u64) -> Option<u32> {
    let mut line = i64::from(first_line);
    let mut address = 0u64;
    for pair in table.chunks_exact(2) {
        address = address.saturating_add(u64::from(pair[0]));
        if address > offset {
            break;
        }
        line = line.checked_add(i64::from(pair[1] as i8))?;
    }
    u32::try_from(line).ok()
}

/// 3.10 `co_linetable`: (byte length, signed line delta) pairs, each a range of bytecode starting where the
/// previous ended; a delta of -128 means the range has no line (the running line is not changed), and empty
/// ranges only carry line changes.
pub(crate) fn line_table_310_line(table: &[u8], first_line: u32, offset: u64) -> Option<u32> {
    let mut line = i64::from(first_line);
    let mut end = 0u64;
    for pair in table.chunks_exact(2) {
        let start = end;
        end = end.saturating_add(u64::from(pair[0]));
        let delta = pair[1] as i8;
        let range_line = if delta == -128 {
            None
        } else {
            line = line.checked_add(i64::from(delta))?;
            Some(line)
        };
        if (start..end).contains(&offset) {
            return range_line.and_then(|l| u32::try_from(l).ok());
        }
    }
    None
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn next(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.pos)?;
        self.pos = self.pos.checked_add(1)?;
        Some(byte)
    }

    /// 6 bits per byte, least significant first, 0x40 = more bytes follow. Entry-start bytes (bit 7) never
    /// appear inside a varint, which bounds a corrupt table.
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        let mut shift = 0u32;
        loop {
            let byte = self.next()?;
            if byte & 0x80 != 0 || shift > 60 {
                return None;
            }
            value |= u64::from(byte & 0x3f) << shift;
            shift = shift.wrapping_add(6); // at most 66: the check above stops it
            if byte & 0x40 == 0 {
                return Some(value);
            }
        }
    }

    fn signed_varint(&mut self) -> Option<i64> {
        let raw = self.varint()?;
        let magnitude = (raw >> 1) as i64;
        // `raw >> 1` fits in 63 bits: negating it cannot overflow.
        Some(if raw & 1 != 0 { magnitude.wrapping_neg() } else { magnitude })
    }
}

#[cfg(test)]
// Test data is built here, not read from a target: the module's arithmetic rule is for target data.
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    // Entries built by hand following CPython's encoder (Python/assemble.c write_location_info_entry).
    fn entry(code: u8, length: u8) -> u8 {
        0x80 | (code << 3) | (length - 1)
    }

    #[test]
    fn walks_short_one_line_no_column_and_long_forms() {
        let table = [
            entry(13, 1),
            0x00, // no-column form, line delta 0 → line 10 for unit 0
            entry(0, 2),
            0x05, // short form: same line for units 1–2
            entry(11, 3),
            0x01,
            0x02, // one-line form: line += 1 → 11 for units 3–5
            entry(14, 2),
            0x04,
            0x00,
            0x01,
            0x02, // long form: line += 2 → 13 for units 6–7
            entry(13, 1),
            0x03,         // delta −1 → 12 for unit 8
            entry(15, 1), // no location for unit 9
        ];
        let line = |unit| line_for(&table, 10, unit);
        assert_eq!(line(0), Some(10));
        assert_eq!(line(2), Some(10));
        assert_eq!(line(3), Some(11));
        assert_eq!(line(5), Some(11));
        assert_eq!(line(6), Some(13));
        assert_eq!(line(8), Some(12));
        assert_eq!(line(9), None);
        assert_eq!(line(10), None);
    }

    #[test]
    fn multi_byte_varints() {
        // delta +100 = raw 200 = 0b11_001000 → bytes 0x48 (8 | more), 0x03
        let table = [entry(13, 1), 0x48, 0x03];
        assert_eq!(line_for(&table, 1, 0), Some(101));
    }

    #[test]
    fn lnotab_pairs_accumulate_until_past_the_offset() {
        // def f():        line 1
        //     a = 1       line 2: bytes 0–3
        //     b = 2       line 3: bytes 4–7
        //     (300 lines later, as two pairs since a delta fits in a signed byte) bytes 8–
        let table = [0, 1, 4, 1, 4, 127, 0, 127, 0, 46];
        assert_eq!(lnotab_line(&table, 1, 0), Some(2));
        assert_eq!(lnotab_line(&table, 1, 3), Some(2));
        assert_eq!(lnotab_line(&table, 1, 4), Some(3));
        assert_eq!(lnotab_line(&table, 1, 8), Some(303));
        assert_eq!(lnotab_line(&table, 1, 1000), Some(303));
        // A negative increment (a loop's condition on an earlier line).
        assert_eq!(lnotab_line(&[0, 5, 10, 0xfd], 1, 10), Some(3));
        assert_eq!(lnotab_line(&[], 7, 0), Some(7));
    }

    #[test]
    fn line_table_310_ranges_and_lines_without_a_number() {
        // First line 10: bytes 0–1 line 11, 2–5 line 12, 6–7 no line, 8–9 line 13 (the -128 range did not move
        // the running line), an empty range that moves it by 2, then bytes 10–11 on line 15.
        let table = [2, 1, 4, 1, 2, 0x80, 2, 1, 0, 2, 2, 0];
        assert_eq!(line_table_310_line(&table, 10, 0), Some(11));
        assert_eq!(line_table_310_line(&table, 10, 5), Some(12));
        assert_eq!(line_table_310_line(&table, 10, 6), None);
        assert_eq!(line_table_310_line(&table, 10, 9), Some(13));
        assert_eq!(line_table_310_line(&table, 10, 10), Some(15));
        assert_eq!(line_table_310_line(&table, 10, 12), None);
    }

    /// A fuzzer finding (fuzz/regressions/line_tables/overflow-line-delta): line deltas that add up past i64.
    /// Such a table is corrupt: no line, rather than a panic (debug) or a wrapped line number (release).
    #[test]
    fn line_deltas_that_overflow_give_no_line() {
        let huge = [0x7e, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x3f]; // +(2^63 - 1)
        let mut table = vec![entry(13, 1)];
        table.extend(huge);
        table.push(entry(13, 1));
        table.extend(huge);
        table.extend([entry(13, 1), 0x00]);
        assert_eq!(line_for(&table, 12, 0), None, "the first delta alone is past every line");
        // Wrapping twice would land on 12 + 2 × (2^63 - 1) = 10 (mod 2^64): a plausible, wrong line.
        assert_eq!(line_for(&table, 12, 2), None);
    }

    #[test]
    fn corrupt_tables_give_no_line_instead_of_a_wrong_one() {
        assert_eq!(line_for(&[0x05, 0x01], 1, 0), None);
        assert_eq!(line_for(&[entry(13, 1)], 1, 0), None);
        assert_eq!(
            line_for(&[entry(13, 1), 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f], 1, 0),
            None
        );
        assert_eq!(line_for(&[], 1, 0), None);
    }
}
