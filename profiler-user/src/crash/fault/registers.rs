//! The crashed thread's registers as a report shows them: named, in reading order, as JSON (name → hex) and as
//! text four to a line.
use std::fmt::Write as _;

use profiler_common::CrashRegs;
use serde::{ser::SerializeMap as _, Serialize, Serializer};

/// The registers in the order people read them, with their names.
pub(crate) fn named_registers(regs: &CrashRegs) -> [(&'static str, u64); 21] {
    [
        ("rax", regs.rax),
        ("rbx", regs.rbx),
        ("rcx", regs.rcx),
        ("rdx", regs.rdx),
        ("rsi", regs.rsi),
        ("rdi", regs.rdi),
        ("rbp", regs.rbp),
        ("rsp", regs.rsp),
        ("r8", regs.r8),
        ("r9", regs.r9),
        ("r10", regs.r10),
        ("r11", regs.r11),
        ("r12", regs.r12),
        ("r13", regs.r13),
        ("r14", regs.r14),
        ("r15", regs.r15),
        ("rip", regs.rip),
        ("eflags", regs.eflags),
        ("orig_rax", regs.orig_rax),
        ("cs", regs.cs),
        ("ss", regs.ss),
    ]
}

/// The registers of a report: a JSON object of name → hex string, in `named_registers` order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Registers(pub CrashRegs);

impl Serialize for Registers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let named = named_registers(&self.0);
        let mut map = serializer.serialize_map(Some(named.len()))?;
        for (name, value) in named {
            map.serialize_entry(name, &format!("{value:#x}"))?;
        }
        map.end()
    }
}

impl Registers {
    /// Four to a line, zero-padded so the columns line up.
    pub(crate) fn to_text(&self) -> String {
        let mut text = String::new();
        for row in named_registers(&self.0).chunks(4) {
            let cells: Vec<String> = row.iter().map(|(name, value)| format!("{name:>8} {value:#018x}")).collect();
            let _ = writeln!(text, " {}", cells.join(" "));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_serialize_in_reading_order() {
        let registers = Registers(CrashRegs { rdi: 0x18, rip: 0x1000, ..CrashRegs::default() });
        let json = serde_json::to_string(&registers).unwrap();
        assert!(json.starts_with(r#"{"rax":"0x0","rbx":"0x0""#), "{json}");
        assert!(json.contains(r#""rdi":"0x18""#) && json.contains(r#""rip":"0x1000""#), "{json}");
        let text = registers.to_text();
        assert_eq!(text.lines().count(), 6, "{text}");
        assert!(text.contains("rdi 0x0000000000000018"), "{text}");
    }
}
