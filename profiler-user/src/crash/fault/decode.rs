//! The faulting instruction decoded with iced-x86 (Intel syntax), and each of its memory operands' address
//! computed from the registers at the fault: what lets the classification (mod.rs) say whether the access was a
//! read, a write or an execution, and through which register the bad address came.
// The registers and code come from a target: no implicit arithmetic (as in mod.rs).
#![deny(clippy::arithmetic_side_effects)]
use std::fmt::Write as _;

use iced_x86::{
    Decoder, DecoderOptions, Formatter as _, InstructionInfoFactory, IntelFormatter, MemorySizeOptions, OpAccess,
    Register,
};
use profiler_common::CrashRegs;

use super::Access;

/// The faulting instruction, decoded.
pub(super) struct Decoded {
    pub(super) text: String,
    pub(super) len: usize,
    pub(super) memory: Vec<MemoryOperand>,
}

/// One memory access of the instruction, its address computed from the registers at the fault.
pub(super) struct MemoryOperand {
    pub(super) address: u64,
    pub(super) size: u64,
    pub(super) access: Access,
    /// How the address is formed, e.g. `rdi + 0x18`; `None` for a fixed (rip-relative or absolute) address.
    pub(super) formula: Option<String>,
    /// The registers alone, e.g. `rdi`, `rbx + rcx*4`.
    pub(super) registers: Option<String>,
}

/// Decodes the instruction at the start of `code` (at `regs.rip`) and computes its memory operands' addresses.
pub(super) fn decode(code: &[u8], regs: &CrashRegs) -> Option<Decoded> {
    if code.is_empty() {
        return None;
    }
    let mut decoder = Decoder::with_ip(64, code, regs.rip, DecoderOptions::NONE);
    let instruction = decoder.decode();
    if instruction.is_invalid() {
        return None;
    }
    let mut formatter = IntelFormatter::new();
    let options = formatter.options_mut();
    options.set_hex_prefix("0x");
    options.set_hex_suffix("");
    options.set_uppercase_hex(false);
    options.set_memory_size_options(MemorySizeOptions::Minimal);
    options.set_space_after_operand_separator(false);
    let mut text = String::new();
    formatter.format(&instruction, &mut text);
    let mut info = InstructionInfoFactory::new();
    let memory = info
        .info(&instruction)
        .used_memory()
        .iter()
        .filter_map(|used| {
            let access = match used.access() {
                OpAccess::Read | OpAccess::CondRead => Access::Read,
                OpAccess::Write | OpAccess::CondWrite => Access::Write,
                OpAccess::ReadWrite | OpAccess::ReadCondWrite => Access::ReadWrite,
                OpAccess::None | OpAccess::NoMemAccess => return None,
            };
            let address = used.virtual_address(0, |register, _, _| register_value(regs, register))?;
            let size = used.memory_size().size() as u64;
            let registers = address_registers(used);
            let formula = registers.as_ref().map(|registers| with_displacement(registers, used.displacement()));
            Some(MemoryOperand { address, size, access, formula, registers })
        })
        .collect();
    Some(Decoded { text, len: instruction.len(), memory })
}

/// `rdi`, `rbx + rcx*4`: the registers a memory operand forms its address from; `None` without any.
fn address_registers(used: &iced_x86::UsedMemory) -> Option<String> {
    let mut text = String::new();
    if used.base() != Register::None {
        text.push_str(&register_name(used.base()));
    }
    if used.index() != Register::None {
        if !text.is_empty() {
            text.push_str(" + ");
        }
        text.push_str(&register_name(used.index()));
        if used.scale() > 1 {
            let _ = write!(text, "*{}", used.scale());
        }
    }
    (!text.is_empty()).then_some(text)
}

/// `rdi + 0x18`, `rbp - 0x8`: the registers plus the displacement (stored as a u64 that wraps for negative ones).
fn with_displacement(registers: &str, displacement: u64) -> String {
    let displacement = displacement as i64;
    match displacement {
        0 => registers.to_owned(),
        1.. => format!("{registers} + {displacement:#x}"),
        _ => format!("{registers} - {:#x}", displacement.unsigned_abs()),
    }
}

fn register_name(register: Register) -> String {
    format!("{register:?}").to_ascii_lowercase()
}

/// A register's value at the fault, for address computation; segment bases are 0 except fs and gs (unknown here).
fn register_value(regs: &CrashRegs, register: Register) -> Option<u64> {
    if register.is_segment_register() {
        return matches!(register, Register::ES | Register::CS | Register::SS | Register::DS).then_some(0);
    }
    let full = match register.full_register() {
        Register::RAX => regs.rax,
        Register::RBX => regs.rbx,
        Register::RCX => regs.rcx,
        Register::RDX => regs.rdx,
        Register::RSI => regs.rsi,
        Register::RDI => regs.rdi,
        Register::RBP => regs.rbp,
        Register::RSP => regs.rsp,
        Register::R8 => regs.r8,
        Register::R9 => regs.r9,
        Register::R10 => regs.r10,
        Register::R11 => regs.r11,
        Register::R12 => regs.r12,
        Register::R13 => regs.r13,
        Register::R14 => regs.r14,
        Register::R15 => regs.r15,
        Register::RIP => regs.rip,
        _ => return None,
    };
    Some(match register.size() {
        4 => full & 0xffff_ffff,
        2 => full & 0xffff,
        1 => full & 0xff,
        _ => full,
    })
}
