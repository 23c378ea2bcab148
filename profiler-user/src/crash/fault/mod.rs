//! What the fault hit: the fault address placed in the process's memory map as it was at the crash (the NULL page
//! plus an offset, no mapping at all, a stack's guard page, a mapping without the permission the access needed, which
//! library or heap region), and the faulting instruction decoded, with the register the address came through.
//!
//! The kernel says only that an access failed: the signal, its `si_code` and the address. Telling a NULL field
//! read from a stack overflow or a use of unmapped memory takes the maps and the instruction, and the crashed process
//! is gone by the time anyone looks, so the report says it.
//!
//! This file places and classifies the fault and words it; `decode.rs` decodes the instruction and computes its
//! operands' addresses, `registers.rs` presents the register set. It is over 600 lines because of its tests (about
//! 530 lines of code): one test per class of fault, next to the decision table they check.
// Values here come from a target (its registers, code and maps) or the kernel: no implicit arithmetic.
#![deny(clippy::arithmetic_side_effects)]
mod decode;
mod registers;

use std::fmt::Write as _;

use serde::Serialize;

use self::decode::{decode, Decoded, MemoryOperand};
pub(crate) use self::registers::Registers;
use crate::{process::maps::Mapping, sample::CrashCpuState};

const SIGILL: u32 = 4;
const SIGBUS: u32 = 7;
const SIGFPE: u32 = 8;
const SIGSEGV: u32 = 11;
/// `si_code`s (asm-generic/siginfo.h).
const SEGV_MAPERR: i32 = 1;
const SEGV_ACCERR: i32 = 2;
const SEGV_PKUERR: i32 = 4;
const BUS_ADRALN: i32 = 1;
const BUS_ADRERR: i32 = 2;
const BUS_MCEERR_AR: i32 = 4;
const BUS_MCEERR_AO: i32 = 5;
/// A fault the kernel raised without an address: on x86 a general protection fault (a non-canonical pointer, a
/// privileged instruction).
const SI_KERNEL: i32 = 0x80;

/// Addresses below this are the NULL page plus an offset: Linux's default `vm.mmap_min_addr` (64 KiB) keeps them
/// unmapped, so a fault there is a NULL pointer plus a field or array offset.
const NULL_PAGE_END: u64 = 64 * 1024;
/// How far below a stack a fault still counts as running off its end: the kernel keeps `stack_guard_gap` (256
/// pages, 1 MiB) free below the main thread's stack, and one function's frame (a large local array) can reach 64 KiB
/// past the last page it touched.
const STACK_GUARD_REACH: u64 = (1024 + 64) * 1024;
/// The lowest address of the kernel's half of the x86_64 address space (4-level paging, which user space sees
/// whatever the kernel uses); between the halves, addresses are non-canonical.
const KERNEL_HALF_START: u64 = 0xffff_8000_0000_0000;
const USER_HALF_END: u64 = 0x0000_8000_0000_0000;

/// What kind of address the fault hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FaultClass {
    /// Below 64 KiB: a NULL pointer plus an offset.
    NullPage,
    /// No mapping there.
    Unmapped,
    /// Just below the faulting thread's own stack (its guard page or gap): the stack ran out.
    StackOverflow,
    /// The guard page or gap below a stack that is not the faulting thread's.
    GuardPage,
    /// A write to a mapping without write permission.
    WriteToReadOnly,
    /// Executing a mapping without execute permission.
    ExecuteNonExecutable,
    /// Any access to a mapping with no permissions (PROT_NONE).
    NoAccess,
    /// A permission fault the above do not explain (a protection key, an access of unknown kind).
    Protection,
    /// An address in the kernel's half of the address space.
    KernelAddress,
    /// An address between the two halves (a corrupted pointer); x86 raises a general protection fault.
    NonCanonical,
    /// A general protection fault whose address the instruction does not tell.
    GeneralProtection,
    /// SIGBUS: an access past the end of the file a mapping maps.
    PastEndOfFile,
    /// SIGBUS otherwise (misaligned access, a hardware memory error).
    BusError,
    /// SIGFPE: the instruction says what (a division by zero, an overflow).
    Arithmetic,
    /// SIGILL.
    IllegalInstruction,
    /// The process raised the signal itself (`abort()`, `raise`, `kill`): not a fault.
    Raised,
}

/// How the access at the fault used the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Access {
    Read,
    Write,
    /// Read and written by one instruction (`add [rdi], 1`).
    ReadWrite,
    /// The instruction fetch itself (a call or jump to a bad address).
    Execute,
}

impl Access {
    fn noun(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::ReadWrite => "read-modify-write",
            Self::Execute => "execution",
        }
    }
}

/// When the maps the address was placed in were read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum MapsRead {
    /// While the crashed process still existed, after the fault: they include everything mapped before it.
    AtTheCrash,
    /// Earlier (the process was gone when its crash was processed): a mapping made since is missing.
    BeforeTheCrash,
    /// Never: the process had no readable maps.
    Never,
}

/// One mapping as the report shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct MappingView {
    pub start: String,
    pub end: String,
    pub perms: String,
    /// The path column of `/proc/PID/maps` (`[heap]`, `[stack]`, empty for anonymous memory).
    pub path: String,
}

impl MappingView {
    fn of(mapping: &Mapping) -> Self {
        Self {
            start: format!("{:#x}", mapping.start),
            end: format!("{:#x}", mapping.end),
            perms: mapping.perms(),
            path: mapping.path.clone(),
        }
    }
}

/// What the fault hit, for the report.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Fault {
    pub class: FaultClass,
    /// One line for people: the access, what kind of address, by which instruction, in which module, e.g.
    /// "read of NULL + 0x18 through rdi (no mapping) by `mov eax,[rdi+0x18]` in libcrash.so+0x1139".
    pub description: String,
    /// The address classified: the kernel's fault address, or for a general protection fault (which has none) the
    /// one the instruction computed from the registers.
    pub address: Option<String>,
    /// Set when `address` was computed from the instruction rather than given by the kernel.
    pub address_computed: bool,
    pub access: Option<Access>,
    /// The register(s) the address came from, e.g. `rdi + 0x18`.
    pub address_from: Option<String>,
    /// The mapping holding the address.
    pub mapping: Option<MappingView>,
    /// When no mapping holds it: the nearest mappings below and above.
    pub below: Option<MappingView>,
    pub above: Option<MappingView>,
    /// The faulting instruction in Intel syntax; `None` when its bytes could not be read or decoded.
    pub instruction: Option<String>,
    /// Where the instruction is: `file+0xOFFSET` (offset in the file) or the bare address.
    pub instruction_at: String,
    /// The code bytes copied at the instruction pointer, hex, space-separated (up to 16; the instruction is the first
    /// `instruction_len` of them).
    pub code_bytes: String,
    pub instruction_len: usize,
    pub maps: MapsRead,
}

/// What the classification needs, all of it from the crash record and the pipeline's maps of the process.
pub(crate) struct FaultInput<'a> {
    pub signal: u32,
    pub si_code: i32,
    pub fault_addr: Option<u64>,
    pub cpu: &'a CrashCpuState,
    /// Every mapping of the process, in address order.
    pub mappings: &'a [Mapping],
    pub maps: MapsRead,
}

/// Places the fault and decodes its instruction.
pub(crate) fn analyze(input: &FaultInput) -> Fault {
    let regs = &input.cpu.regs;
    let decoded = decode(&input.cpu.code, regs);
    let faulted_by_address = matches!(input.signal, SIGSEGV | SIGBUS);
    // A general protection fault comes without an address; the instruction's only memory operand says what it was.
    let (address, address_computed) = match input.fault_addr {
        Some(address) if !(input.signal == SIGSEGV && input.si_code == SI_KERNEL) => (Some(address), false),
        _ if faulted_by_address => match decoded.as_ref().map(|d| d.memory.as_slice()) {
            Some([only]) => (Some(only.address), true),
            _ => (None, false),
        },
        _ => (input.fault_addr, false),
    };
    let operand = address.and_then(|address| {
        decoded.as_ref()?.memory.iter().find(|m| {
            address >= m.address && address.checked_sub(m.address).is_some_and(|offset| offset < m.size.max(1))
        })
    });
    let access = match address {
        Some(address) if faulted_by_address && address == regs.rip => Some(Access::Execute),
        Some(_) if faulted_by_address => operand.map(|m| m.access),
        _ => None,
    };
    let mapping = address.and_then(|a| mapping_at(input.mappings, a));
    let (below, above) = match (address, mapping) {
        (Some(address), None) => neighbours(input.mappings, address),
        _ => (None, None),
    };
    let instruction_at = location(input.mappings, regs.rip);

    let (class, what) = classify(input, address, access, mapping, below, above, operand);
    let description = sentence(input.signal, access, &what, decoded.as_ref(), &instruction_at);
    Fault {
        class,
        description,
        address: address.map(|a| format!("{a:#x}")),
        address_computed,
        access,
        address_from: operand.and_then(|m| m.formula.clone()),
        mapping: mapping.map(MappingView::of),
        below: below.map(MappingView::of),
        above: above.map(MappingView::of),
        instruction: decoded.as_ref().map(|d| d.text.clone()),
        instruction_at,
        code_bytes: input.cpu.code.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" "),
        instruction_len: decoded.as_ref().map_or(0, |d| d.len),
        maps: input.maps,
    }
}

/// The class of the fault and the words saying what was hit (`NULL + 0x18 through rdi (no mapping)`).
fn classify(
    input: &FaultInput,
    address: Option<u64>,
    access: Option<Access>,
    mapping: Option<&Mapping>,
    below: Option<&Mapping>,
    above: Option<&Mapping>,
    operand: Option<&MemoryOperand>,
) -> (FaultClass, String) {
    match input.signal {
        _ if input.si_code <= 0 => {
            return (FaultClass::Raised, "raised by the process itself (abort, raise or kill), not a fault".into())
        }
        SIGFPE => return (FaultClass::Arithmetic, fpe_code(input.si_code).into()),
        SIGILL => return (FaultClass::IllegalInstruction, ill_code(input.si_code).into()),
        SIGSEGV | SIGBUS => {}
        _ => return (FaultClass::Protection, format!("si_code {}", input.si_code)),
    }
    let Some(address) = address else {
        return (
            FaultClass::GeneralProtection,
            "a general protection fault (a non-canonical pointer or a privileged instruction; the kernel gives no \
             address)"
                .into(),
        );
    };
    let through = operand.and_then(|m| m.registers.as_deref()).map(|r| format!(" through {r}")).unwrap_or_default();
    if input.signal == SIGBUS {
        let region = mapping.map_or_else(|| format!("{address:#x}"), |m| offset_in(m, address));
        return match (input.si_code, mapping) {
            (BUS_ADRERR, Some(m)) if m.is_file_backed() => (
                FaultClass::PastEndOfFile,
                format!("{region}{through}, past the end of the file (it is shorter than its mapping)"),
            ),
            // The page fault found no page to give (VM_FAULT_SIGBUS): a file mapping past the file's end, in all
            // but rare cases (a hugetlb or shmem allocation failing). The mapping itself may be newer than the maps
            // (a file mapped just before the crash, the process gone before its maps could be read again).
            (BUS_ADRERR, _) => (
                FaultClass::PastEndOfFile,
                format!(
                    "{region}{through}, past the end of a mapped file (its mapping is not in the maps read {})",
                    match input.maps {
                        MapsRead::AtTheCrash => "at the crash",
                        MapsRead::BeforeTheCrash => "before the crash",
                        MapsRead::Never => "ever",
                    }
                ),
            ),
            (BUS_ADRALN, _) => (FaultClass::BusError, format!("{region}{through}: misaligned address")),
            (BUS_MCEERR_AR | BUS_MCEERR_AO, _) => {
                (FaultClass::BusError, format!("{region}{through}: hardware memory error"))
            }
            _ => (FaultClass::BusError, format!("{region}{through} (SIGBUS si_code {})", input.si_code)),
        };
    }
    if mapping.is_none() && address < NULL_PAGE_END {
        return (FaultClass::NullPage, format!("NULL + {address:#x}{through} (no mapping)"));
    }
    if let Some(stack) = overflowed_stack(input.mappings, address, input.cpu.regs.rsp) {
        let distance = stack.mapping.start.saturating_sub(address);
        let place = if mapping.is_some() { "its guard page" } else { "the gap below it" };
        let stack_name = if stack.mapping.path == "[stack]" { "the main thread's stack" } else { "a thread stack" };
        let span = format!("{:#x}-{:#x}", stack.mapping.start, stack.mapping.end);
        return if stack.owned_by_faulting_thread {
            (
                FaultClass::StackOverflow,
                format!(
                    "{address:#x}, {distance:#x} bytes below this thread's stack ({stack_name} {span}), in {place}: a \
                     stack overflow"
                ),
            )
        } else {
            (
                FaultClass::GuardPage,
                format!(
                    "{address:#x}{through}, {distance:#x} bytes below {stack_name} {span}, in {place}; sp {:#x} is \
                     not on that stack (an out-of-bounds pointer into the guard, not this thread's overflow)",
                    input.cpu.regs.rsp
                ),
            )
        };
    }
    match mapping {
        Some(m) => {
            let region = offset_in(m, address);
            let perms = m.perms();
            match (input.si_code, access) {
                // A guard region installed inside the stack's own mapping (MADV_GUARD_INSTALL, Linux 6.13+, where a
                // C library uses it instead of a PROT_NONE mapping): a fault at the low end of the faulting
                // thread's stack mapping, next to sp.
                (SEGV_MAPERR, _)
                    if is_stack_like(m)
                        && (m.start..m.end).contains(&input.cpu.regs.rsp)
                        && address.saturating_sub(m.start) < STACK_GUARD_REACH
                        && input.cpu.regs.rsp.abs_diff(address) < STACK_GUARD_REACH =>
                {
                    (
                        FaultClass::StackOverflow,
                        format!(
                            "{address:#x}, {:#x} bytes above the low end of this thread's stack ({region}), in a guard \
                             region there: a stack overflow",
                            address.saturating_sub(m.start)
                        ),
                    )
                }
                (SEGV_MAPERR, _) => (
                    FaultClass::Unmapped,
                    format!("{address:#x}{through} (no mapping when it faulted; the maps show {region} there now)"),
                ),
                (SEGV_ACCERR, Some(Access::Execute)) if !m.executable => {
                    (FaultClass::ExecuteNonExecutable, format!("{region} ({perms}: not executable)"))
                }
                (SEGV_ACCERR, Some(Access::Write | Access::ReadWrite)) if !m.writable => {
                    (FaultClass::WriteToReadOnly, format!("{region}{through} ({perms}: read-only)"))
                }
                (SEGV_ACCERR, _) if !(m.readable || m.writable || m.executable) => {
                    (FaultClass::NoAccess, format!("{region}{through} ({perms}: no access, PROT_NONE)"))
                }
                (SEGV_PKUERR, _) => {
                    (FaultClass::Protection, format!("{region}{through} ({perms}): denied by a memory protection key"))
                }
                _ => {
                    (FaultClass::Protection, format!("{region}{through} ({perms}, SIGSEGV si_code {})", input.si_code))
                }
            }
        }
        None if address >= KERNEL_HALF_START => {
            (FaultClass::KernelAddress, format!("{address:#x}{through}, a kernel address"))
        }
        None if address >= USER_HALF_END => {
            (FaultClass::NonCanonical, format!("{address:#x}{through}, a non-canonical address (a corrupted pointer)"))
        }
        None => (FaultClass::Unmapped, format!("{address:#x}{through} (no mapping{})", between(address, below, above))),
    }
}

/// The one line of the report: `read of NULL + 0x18 through rdi (no mapping) by `mov eax,[rdi+0x18]` in
/// libcrash.so+0x1139`.
fn sentence(signal: u32, access: Option<Access>, what: &str, decoded: Option<&Decoded>, at: &str) -> String {
    let mut line = String::new();
    match (signal, access) {
        (SIGSEGV | SIGBUS, Some(access)) => {
            let _ = write!(line, "{} of {what}", access.noun());
        }
        (SIGSEGV | SIGBUS, None) => {
            let _ = write!(line, "access to {what}");
        }
        _ => line.push_str(what),
    }
    match (access, decoded) {
        // The bytes at a bad jump target are not the instruction that went there.
        (Some(Access::Execute), _) => {
            let _ = write!(line, ", at {at}: a call or jump to a bad address");
        }
        (_, Some(decoded)) => {
            let _ = write!(line, " by `{}` in {at}", decoded.text);
        }
        (_, None) => {
            let _ = write!(line, " at {at}");
        }
    }
    line
}

/// The stack a fault address ran off: the stack of the faulting thread when sp is on it (or in its guard), else
/// any stack whose guard area holds the address.
struct OverflowedStack<'a> {
    mapping: &'a Mapping,
    owned_by_faulting_thread: bool,
}

fn overflowed_stack<'a>(mappings: &'a [Mapping], address: u64, sp: u64) -> Option<OverflowedStack<'a>> {
    // The address must be in a guard (a PROT_NONE anonymous mapping) or in no mapping at all.
    if mapping_at(mappings, address).is_some_and(|m| !is_guard(m)) {
        return None;
    }
    // The stack above: the first mapping above the address that is not a guard.
    let stack = mappings.iter().find(|m| m.start > address && !is_guard(m))?;
    let below_stack = stack.start.checked_sub(address)?;
    if below_stack > STACK_GUARD_REACH || !is_stack_like(stack) {
        return None;
    }
    // Between the address and that stack only guards (checked by the search) or nothing. Whose stack is it: the
    // faulting thread's when sp is on it, or below it within reach (sp itself ran into the guard).
    let sp_on_it = (stack.start..stack.end).contains(&sp)
        || (sp < stack.start && stack.start.saturating_sub(sp) <= STACK_GUARD_REACH);
    let guarded = mapping_at(mappings, address).is_some();
    // An address in no mapping below anonymous memory is a stack overflow only if sp says so or the region is the main
    // stack; anonymous memory below a guard is a thread stack (glibc puts the guard at the low end).
    if !sp_on_it && !guarded && stack.path != "[stack]" {
        return None;
    }
    Some(OverflowedStack { mapping: stack, owned_by_faulting_thread: sp_on_it })
}

/// A guard page: anonymous memory with no permission at all (glibc's below each thread stack).
fn is_guard(mapping: &Mapping) -> bool {
    mapping.path.is_empty() && !(mapping.readable || mapping.writable || mapping.executable)
}

/// The main thread's stack, or anonymous read-write memory (a thread stack is one).
fn is_stack_like(mapping: &Mapping) -> bool {
    mapping.path == "[stack]" || (mapping.path.is_empty() && mapping.readable && mapping.writable)
}

fn mapping_at(mappings: &[Mapping], address: u64) -> Option<&Mapping> {
    let index = mappings.partition_point(|m| m.start <= address).checked_sub(1)?;
    mappings.get(index).filter(|m| address < m.end)
}

/// The nearest mappings below and above an address in none.
fn neighbours(mappings: &[Mapping], address: u64) -> (Option<&Mapping>, Option<&Mapping>) {
    let index = mappings.partition_point(|m| m.start <= address);
    (index.checked_sub(1).and_then(|i| mappings.get(i)), mappings.get(index))
}

/// `; 0x1000 bytes above the end of libc.so.6, 0x2000 below the heap` for an unmapped address.
fn between(address: u64, below: Option<&Mapping>, above: Option<&Mapping>) -> String {
    let mut text = String::new();
    if let Some(below) = below {
        let _ =
            write!(text, "; {:#x} bytes above the end of {}", address.saturating_sub(below.end), region_name(below));
    }
    if let Some(above) = above {
        let _ = write!(text, "; {:#x} bytes below {}", above.start.saturating_sub(address), region_name(above));
    }
    text
}

/// What a reader calls a mapping: a file's name, the heap, a stack, anonymous memory.
fn region_name(mapping: &Mapping) -> String {
    match mapping.path.as_str() {
        "[heap]" => "the heap".into(),
        "[stack]" => "the main thread's stack".into(),
        "" if is_guard(mapping) => "a PROT_NONE anonymous mapping".into(),
        "" => "anonymous memory".into(),
        path => path.rsplit('/').next().unwrap_or(path).to_owned(),
    }
}

/// `libcrash.so+0x1139` (the offset in the file), `the heap+0x40`, `anonymous memory 0x7f..-0x7f..+0x8`.
fn offset_in(mapping: &Mapping, address: u64) -> String {
    let offset = address.saturating_sub(mapping.start);
    if mapping.is_file_backed() {
        format!("{}+{:#x}", region_name(mapping), mapping.file_offset.saturating_add(offset))
    } else {
        format!("{} {:#x}-{:#x}+{offset:#x}", region_name(mapping), mapping.start, mapping.end)
    }
}

/// Where an instruction is, as `file+0xOFFSET` or the bare address.
fn location(mappings: &[Mapping], address: u64) -> String {
    match mapping_at(mappings, address) {
        Some(mapping) if mapping.is_file_backed() => offset_in(mapping, address),
        Some(mapping) if mapping.path.starts_with('[') => format!("{} {address:#x}", mapping.path),
        _ => format!("{address:#x}"),
    }
}

fn fpe_code(si_code: i32) -> &'static str {
    match si_code {
        1 => "integer divide by zero (or a quotient too large: INT_MIN / -1)",
        2 => "integer overflow",
        3 => "floating-point divide by zero",
        4 => "floating-point overflow",
        5 => "floating-point underflow",
        6 => "floating-point inexact result",
        7 => "invalid floating-point operation",
        8 => "subscript out of range",
        _ => "arithmetic exception",
    }
}

fn ill_code(si_code: i32) -> &'static str {
    match si_code {
        1 => "illegal opcode",
        2 => "illegal operand",
        3 => "illegal addressing mode",
        4 => "illegal trap",
        5 => "privileged opcode",
        6 => "privileged register",
        7 => "coprocessor error",
        8 => "internal stack error",
        _ => "illegal instruction",
    }
}

#[cfg(test)]
mod tests {
    use profiler_common::CrashRegs;

    use super::*;

    fn mapping(start: u64, end: u64, perms: &str, path: &str) -> Mapping {
        let p = perms.as_bytes();
        Mapping {
            start,
            end,
            readable: p[0] == b'r',
            writable: p[1] == b'w',
            executable: p[2] == b'x',
            shared: p[3] == b's',
            file_offset: 0x1000,
            dev: 1,
            inode: if path.starts_with('/') { 7 } else { 0 },
            path: path.into(),
        }
    }

    /// A process: libcrash's code, a read-only data page, the heap, a thread stack with its guard, a file mapping,
    /// the main stack.
    fn maps() -> Vec<Mapping> {
        vec![
            mapping(0x5555_0000_0000, 0x5555_0000_1000, "r-xp", "/tmp/libcrash.so"),
            mapping(0x5555_0000_1000, 0x5555_0000_2000, "r--p", "/tmp/libcrash.so"),
            mapping(0x5555_1000_0000, 0x5555_1002_1000, "rw-p", "[heap]"),
            mapping(0x7f00_0000_0000, 0x7f00_0000_1000, "---p", ""),
            mapping(0x7f00_0000_1000, 0x7f00_0001_0000, "rw-p", ""),
            mapping(0x7f00_1000_0000, 0x7f00_1000_2000, "rw-s", "/tmp/truncated.bin"),
            mapping(0x7ffd_0000_0000, 0x7ffd_0002_1000, "rw-p", "[stack]"),
        ]
    }

    const RIP: u64 = 0x5555_0000_0139;

    fn cpu(code: &[u8], regs: CrashRegs) -> CrashCpuState {
        CrashCpuState { regs: CrashRegs { rip: RIP, ..regs }, code: code.to_vec() }
    }

    fn analyze_segv(si_code: i32, address: Option<u64>, cpu: &CrashCpuState) -> Fault {
        let maps = maps();
        analyze(&FaultInput {
            signal: SIGSEGV,
            si_code,
            fault_addr: address,
            cpu,
            mappings: &maps,
            maps: MapsRead::AtTheCrash,
        })
    }

    /// `mov eax, [rdi+0x18]`
    const LOAD_RDI_0X18: [u8; 3] = [0x8b, 0x47, 0x18];

    #[test]
    fn a_null_field_read_names_offset_register_and_instruction() {
        let cpu = cpu(&LOAD_RDI_0X18, CrashRegs { rdi: 0, rsp: 0x7ffd_0001_0000, ..CrashRegs::default() });
        let fault = analyze_segv(SEGV_MAPERR, Some(0x18), &cpu);
        assert_eq!(fault.class, FaultClass::NullPage);
        assert_eq!(fault.access, Some(Access::Read));
        assert_eq!(fault.instruction.as_deref(), Some("mov eax,[rdi+0x18]"));
        assert_eq!(fault.instruction_len, 3);
        assert_eq!(fault.address_from.as_deref(), Some("rdi + 0x18"));
        assert_eq!(fault.instruction_at, "libcrash.so+0x1139");
        assert_eq!(fault.code_bytes, "8b 47 18");
        assert_eq!(
            fault.description,
            "read of NULL + 0x18 through rdi (no mapping) by `mov eax,[rdi+0x18]` in libcrash.so+0x1139"
        );
        assert!(fault.mapping.is_none());
    }

    #[test]
    fn a_store_is_a_write() {
        // mov dword ptr [rdi], 0x2a
        let cpu = cpu(&[0xc7, 0x07, 0x2a, 0, 0, 0], CrashRegs::default());
        let fault = analyze_segv(SEGV_MAPERR, Some(0), &cpu);
        assert_eq!((fault.class, fault.access), (FaultClass::NullPage, Some(Access::Write)));
        assert_eq!(fault.instruction.as_deref(), Some("mov dword ptr [rdi],0x2a"));
        assert!(fault.description.starts_with("write of NULL + 0x0 through rdi (no mapping)"), "{}", fault.description);
    }

    #[test]
    fn an_unmapped_address_names_its_neighbours() {
        let cpu = cpu(&LOAD_RDI_0X18, CrashRegs { rdi: 0x6000_0000_0000, ..CrashRegs::default() });
        let fault = analyze_segv(SEGV_MAPERR, Some(0x6000_0000_0018), &cpu);
        assert_eq!(fault.class, FaultClass::Unmapped);
        assert_eq!(fault.below.as_ref().map(|m| m.path.as_str()), Some("[heap]"));
        assert_eq!(fault.above.as_ref().map(|m| m.perms.as_str()), Some("---p"));
        assert!(fault.description.contains("bytes above the end of the heap"), "{}", fault.description);
    }

    #[test]
    fn a_push_into_the_guard_of_its_own_thread_stack_is_a_stack_overflow() {
        // push rbp, with sp at the bottom of the thread stack: the write goes to sp - 8, in the guard page.
        let sp = 0x7f00_0000_1000;
        let cpu = cpu(&[0x55], CrashRegs { rsp: sp, ..CrashRegs::default() });
        let fault = analyze_segv(SEGV_ACCERR, Some(sp - 8), &cpu);
        assert_eq!(fault.class, FaultClass::StackOverflow, "{}", fault.description);
        assert_eq!(fault.access, Some(Access::Write));
        assert!(fault.description.contains("a stack overflow"), "{}", fault.description);
        assert!(fault.description.contains("in its guard page"), "{}", fault.description);
        assert_eq!(fault.mapping.as_ref().map(|m| m.perms.as_str()), Some("---p"));
    }

    #[test]
    fn a_call_below_the_main_stack_is_a_stack_overflow() {
        // call rel32: writes the return address at sp - 8, below [stack], in no mapping.
        let sp = 0x7ffd_0000_0000 - 0x10;
        let cpu = cpu(&[0xe8, 0, 0, 0, 0], CrashRegs { rsp: sp, ..CrashRegs::default() });
        let fault = analyze_segv(SEGV_MAPERR, Some(sp - 8), &cpu);
        assert_eq!(fault.class, FaultClass::StackOverflow, "{}", fault.description);
        assert!(fault.description.contains("the main thread's stack"), "{}", fault.description);
        assert!(fault.description.contains("the gap below it"), "{}", fault.description);
    }

    #[test]
    fn a_pointer_into_another_threads_guard_is_not_this_threads_overflow() {
        let cpu =
            cpu(&LOAD_RDI_0X18, CrashRegs { rdi: 0x7f00_0000_0100, rsp: 0x7ffd_0001_0000, ..CrashRegs::default() });
        let fault = analyze_segv(SEGV_ACCERR, Some(0x7f00_0000_0118), &cpu);
        assert_eq!(fault.class, FaultClass::GuardPage, "{}", fault.description);
    }

    #[test]
    fn a_store_to_read_only_data_and_a_jump_to_the_heap_are_permission_faults() {
        // mov dword ptr [rdi], 0x2a into libcrash's read-only page
        let target = 0x5555_0000_1010;
        let cpu = cpu(&[0xc7, 0x07, 0x2a, 0, 0, 0], CrashRegs { rdi: target, ..CrashRegs::default() });
        let fault = analyze_segv(SEGV_ACCERR, Some(target), &cpu);
        assert_eq!(fault.class, FaultClass::WriteToReadOnly, "{}", fault.description);
        assert!(fault.description.contains("libcrash.so+0x1010"), "{}", fault.description);

        let heap = 0x5555_1000_0040;
        let cpu = CrashCpuState { regs: CrashRegs { rip: heap, ..CrashRegs::default() }, code: vec![0; 16] };
        let fault = analyze_segv(SEGV_ACCERR, Some(heap), &cpu);
        assert_eq!((fault.class, fault.access), (FaultClass::ExecuteNonExecutable, Some(Access::Execute)));
        assert!(fault.description.contains("a call or jump to a bad address"), "{}", fault.description);
    }

    #[test]
    fn a_jump_to_null_has_no_instruction_bytes() {
        let cpu = CrashCpuState { regs: CrashRegs::default(), code: Vec::new() };
        let fault = analyze_segv(SEGV_MAPERR, Some(0), &cpu);
        assert_eq!((fault.class, fault.access), (FaultClass::NullPage, Some(Access::Execute)));
        assert_eq!((fault.instruction, fault.code_bytes.as_str()), (None, ""));
        assert_eq!(fault.description, "execution of NULL + 0x0 (no mapping), at 0x0: a call or jump to a bad address");
    }

    #[test]
    fn a_general_protection_fault_takes_its_address_from_the_instruction() {
        let cpu = cpu(&LOAD_RDI_0X18, CrashRegs { rdi: 0xdead_beef_0000_0000, ..CrashRegs::default() });
        let fault = analyze_segv(SI_KERNEL, Some(0), &cpu);
        assert_eq!(fault.class, FaultClass::NonCanonical, "{}", fault.description);
        assert!(fault.address_computed);
        assert_eq!(fault.address.as_deref(), Some("0xdeadbeef00000018"));
    }

    #[test]
    fn sigbus_past_the_end_of_a_file_fpe_and_ill() {
        let maps = maps();
        // mov byte ptr [rax], 1
        let address = 0x7f00_1000_0000;
        let store = cpu(&[0xc6, 0x00, 0x01], CrashRegs { rax: address, ..CrashRegs::default() });
        let input = |signal, si_code| FaultInput {
            signal,
            si_code,
            fault_addr: Some(address),
            cpu: &store,
            mappings: &maps,
            maps: MapsRead::BeforeTheCrash,
        };
        let fault = analyze(&input(SIGBUS, BUS_ADRERR));
        assert_eq!(fault.class, FaultClass::PastEndOfFile, "{}", fault.description);
        assert_eq!(
            fault.description,
            "write of truncated.bin+0x1000 through rax, past the end of the file (it is shorter than its mapping) by \
             `mov byte ptr [rax],1` in libcrash.so+0x1139"
        );
        let unknown = 0x7f20_0000_0000;
        let fault = analyze(&FaultInput { fault_addr: Some(unknown), mappings: &[], ..input(SIGBUS, BUS_ADRERR) });
        assert_eq!(fault.class, FaultClass::PastEndOfFile, "{}", fault.description);
        assert!(fault.description.contains("its mapping is not in the maps read before the crash"));
        assert_eq!(analyze(&input(SIGFPE, 1)).class, FaultClass::Arithmetic);
        assert!(analyze(&input(SIGFPE, 1)).description.starts_with("integer divide by zero"));
        let ud2 = cpu(&[0x0f, 0x0b], CrashRegs::default());
        let fault = analyze(&FaultInput { cpu: &ud2, ..input(SIGILL, 1) });
        assert_eq!(fault.class, FaultClass::IllegalInstruction);
        assert_eq!(fault.description, "illegal opcode by `ud2` in libcrash.so+0x1139");
        assert_eq!(analyze(&input(6, -6)).class, FaultClass::Raised);
    }

    #[test]
    fn garbage_code_and_empty_maps_are_no_panic() {
        let cpu = cpu(&[0xff; 16], CrashRegs { rsp: u64::MAX, rdi: u64::MAX, ..CrashRegs::default() });
        for address in [0, 1, u64::MAX, 0x7fff_ffff_ffff] {
            for si_code in [SEGV_MAPERR, SEGV_ACCERR, SEGV_PKUERR, SI_KERNEL, 3] {
                let fault = analyze(&FaultInput {
                    signal: SIGSEGV,
                    si_code,
                    fault_addr: Some(address),
                    cpu: &cpu,
                    mappings: &[],
                    maps: MapsRead::Never,
                });
                assert!(!fault.description.is_empty());
            }
        }
    }
}
