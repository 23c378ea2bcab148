//! Frames whose canonical frame address (CFA) framehop cannot compute: their CFI rows, evaluated with gimli.
//!
//! Code that realigns its stack through a DRAP register (GCC does it for functions with over-aligned locals that
//! pass arguments on the stack or that use `force_align_arg_pointer`: numpy's AVX-512 loops that call SVML, such as
//! `np.sin` on float64, and the AVX-512 sort kernels of newer numpy) keeps the caller's stack pointer in its own
//! frame and describes the CFA with a DWARF expression, typically
//! `DW_OP_breg6 (rbp) -8; DW_OP_deref`. framehop 0.16 evaluates expressions only when they read no memory; on
//! anything else it silently applies its frame-pointer fallback, whose return address happens to be right but
//! whose caller stack pointer is not, so every frame after it is garbage. Those functions are rare, so each file
//! is scanned once for the FDEs that need us, and frames inside them are unwound here, from the registers we have
//! (rip, rsp, rbp) and the stack copy; framehop takes over again at the caller. An expression that needs anything
//! else (another register, thread-local storage, a DWARF base type) is not guessed at: it ends the stack, visibly.
// Values here come from a target (its files, its memory, its maps) or the kernel: no implicit arithmetic.
#![deny(clippy::arithmetic_side_effects)]
use std::ops::Range;

use framehop::x86_64::UnwindRegsX86_64;
use gimli::{
    BaseAddresses, CallFrameInstruction, CallFrameInstructionIter, CfaRule, CieOrFde, DebugFrame, EhFrame, Encoding,
    EndianSlice, Evaluation, EvaluationResult, LittleEndian, Location, Piece, Register, RegisterRule, UnwindContext,
    UnwindExpression, UnwindSection, Value, X86_64,
};

use super::elf::ElfFile;

type Slice<'a> = EndianSlice<'a, LittleEndian>;

/// A DWARF expression may loop (`DW_OP_bra`); the ones compilers emit for CFI take fewer than ten steps.
const MAX_EXPRESSION_STEPS: u32 = 1000;

/// The FDEs of one file that framehop would unwind with a guess: the ones that define the CFA by an expression or
/// from a register other than rsp and rbp. Empty for almost every file.
#[derive(Debug, Default)]
pub(crate) struct CfaExpressionIndex {
    /// Each FDE's address range (SVMA) and its offset in the section framehop unwinds this file with, by start.
    fdes: Vec<(Range<u64>, usize)>,
}

impl CfaExpressionIndex {
    /// Scans the section framehop uses for this file: `.eh_frame` when there is one, else `.debug_frame`.
    pub(crate) fn build(elf: &ElfFile) -> Self {
        let bases = bases(elf);
        let mut fdes = match (&elf.eh_frame, &elf.debug_frame) {
            (Some(eh_frame), _) => scan(&eh_frame_section(&eh_frame.bytes), &bases),
            (None, Some(debug_frame)) => scan(&debug_frame_section(&debug_frame.bytes), &bases),
            (None, None) => Vec::new(),
        };
        fdes.sort_by_key(|(range, _)| range.start);
        Self { fdes }
    }

    /// The offset of the FDE covering `svma`, when it is one that needs evaluating here.
    pub(crate) fn fde_at(&self, svma: u64) -> Option<usize> {
        let index = self.fdes.partition_point(|(range, _)| range.start <= svma).checked_sub(1)?;
        let (range, offset) = &self.fdes[index];
        range.contains(&svma).then_some(*offset)
    }

    pub(crate) fn fde_count(&self) -> usize {
        self.fdes.len()
    }
}

/// What unwinding one frame found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unwound {
    /// The caller's code address. `interrupted` when this frame is a signal trampoline: the address is then where
    /// the caller was interrupted, not a return address (so it is looked up as is, not one byte back).
    Caller { address: u64, interrupted: bool },
    /// The return address is undefined: this is the thread's outermost frame.
    Root,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CfaError {
    /// The rule reads memory outside the stack copy.
    StackRead(u64),
    /// The rule needs what a sample does not hold, or what compilers do not emit for CFI.
    Unsupported(&'static str),
    /// The CFI itself does not parse, or arithmetic on it overflows.
    Malformed,
}

/// Unwinds the frame at `svma` (a lookup address of this file, inside the FDE at `fde_offset` of the index):
/// computes the CFA, the return address and the caller's rbp, and on success leaves the caller's registers in `regs`
/// (rip = the return address, rsp = the CFA, rbp). On error `regs` is unchanged.
pub(crate) fn unwind_frame<F>(
    elf: &ElfFile,
    fde_offset: usize,
    svma: u64,
    is_first_frame: bool,
    regs: &mut UnwindRegsX86_64,
    context: &mut UnwindContext<usize>,
    read_stack: &mut F,
) -> Result<Unwound, CfaError>
where
    F: FnMut(u64) -> Result<u64, ()>,
{
    let bases = bases(elf);
    let mut frame = Frame { regs, is_first_frame, read_stack };
    match (&elf.eh_frame, &elf.debug_frame) {
        (Some(eh_frame), _) => frame.unwind(&eh_frame_section(&eh_frame.bytes), &bases, fde_offset, svma, context),
        (None, Some(debug_frame)) => {
            frame.unwind(&debug_frame_section(&debug_frame.bytes), &bases, fde_offset, svma, context)
        }
        (None, None) => Err(CfaError::Malformed),
    }
}

fn eh_frame_section(bytes: &[u8]) -> EhFrame<Slice<'_>> {
    let mut section = EhFrame::new(bytes, LittleEndian);
    section.set_address_size(8);
    section
}

fn debug_frame_section(bytes: &[u8]) -> DebugFrame<Slice<'_>> {
    let mut section = DebugFrame::new(bytes, LittleEndian);
    section.set_address_size(8);
    section
}

/// The bases that pc-relative and section-relative pointers in the CFI resolve against, as framehop sets them.
fn bases(elf: &ElfFile) -> BaseAddresses {
    let start = |section: &Option<super::elf::Section>| section.as_ref().map_or(0, |s| s.svma.start);
    BaseAddresses::default()
        .set_eh_frame(start(&elf.eh_frame))
        .set_eh_frame_hdr(start(&elf.eh_frame_hdr))
        .set_text(start(&elf.text))
        .set_got(elf.got.as_ref().map_or(0, |got| got.start))
}

fn scan<'a, S: UnwindSection<Slice<'a>>>(section: &S, bases: &BaseAddresses) -> Vec<(Range<u64>, usize)> {
    let mut found = Vec::new();
    let mut entries = section.entries(bases);
    // A malformed entry ends the walk: the lengths of the entries after it cannot be trusted. The FDEs not seen
    // are left to framehop, as before this module existed.
    while let Ok(Some(entry)) = entries.next() {
        let CieOrFde::Fde(partial) = entry else { continue };
        let Ok(fde) = partial.parse(S::cie_from_offset) else { continue };
        if needs_us(fde.cie().instructions(section, bases)) || needs_us(fde.instructions(section, bases)) {
            found.push((fde.initial_address()..fde.end_address(), fde.offset()));
        }
    }
    found
}

/// Whether a CFI program defines the CFA in a way framehop cannot follow.
fn needs_us(mut instructions: CallFrameInstructionIter<'_, Slice<'_>>) -> bool {
    while let Ok(Some(instruction)) = instructions.next() {
        match instruction {
            CallFrameInstruction::DefCfaExpression { .. } => return true,
            CallFrameInstruction::DefCfa { register, .. }
            | CallFrameInstruction::DefCfaSf { register, .. }
            | CallFrameInstruction::DefCfaRegister { register }
                if register != X86_64::RSP && register != X86_64::RBP =>
            {
                return true;
            }
            _ => {}
        }
    }
    false
}

/// One frame being unwound: its registers and the stack copy.
struct Frame<'r, F> {
    regs: &'r mut UnwindRegsX86_64,
    is_first_frame: bool,
    read_stack: &'r mut F,
}

impl<F: FnMut(u64) -> Result<u64, ()>> Frame<'_, F> {
    fn unwind<'a, S: UnwindSection<Slice<'a>>>(
        &mut self,
        section: &S,
        bases: &BaseAddresses,
        fde_offset: usize,
        svma: u64,
        context: &mut UnwindContext<usize>,
    ) -> Result<Unwound, CfaError> {
        let fde = section
            .fde_from_offset(bases, S::Offset::from(fde_offset), S::cie_from_offset)
            .map_err(|_| CfaError::Malformed)?;
        let encoding = fde.cie().encoding();
        let row = fde.unwind_info_for_address(section, bases, context, svma).map_err(|_| CfaError::Malformed)?;

        let sp = self.regs.sp();
        let cfa = match row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } => {
                self.register(*register)?.checked_add_signed(*offset).ok_or(CfaError::Malformed)?
            }
            CfaRule::Expression(expression) => self.evaluate(section, expression, encoding)?,
        };
        // The CFA is the caller's stack pointer before its call: above every slot of this frame, return address
        // included. Anything else is a misread that would send the next frames into the weeds.
        if cfa <= sp {
            return Err(CfaError::Unsupported("the CFA is not above the stack pointer"));
        }
        let return_address = match row.register(X86_64::RA) {
            None | Some(RegisterRule::Undefined) => return Ok(Unwound::Root),
            Some(rule) => self.recover(section, rule, cfa, encoding)?,
        };
        // An unsaved rbp still holds the caller's value (it is callee-saved); framehop reads "undefined" the same way.
        let bp = match row.register(X86_64::RBP) {
            None | Some(RegisterRule::SameValue | RegisterRule::Undefined) => self.regs.bp(),
            Some(rule) => self.recover(section, rule, cfa, encoding)?,
        };
        if !self.is_first_frame && cfa == sp && return_address == self.regs.ip() {
            return Err(CfaError::Unsupported("the frame does not advance"));
        }
        let interrupted = fde.is_signal_trampoline();
        self.regs.set_ip(return_address);
        self.regs.set_sp(cfa);
        self.regs.set_bp(bp);
        Ok(Unwound::Caller { address: return_address, interrupted })
    }

    /// The caller's value of a register, by its rule in this frame's row.
    fn recover<'a, S: UnwindSection<Slice<'a>>>(
        &mut self,
        section: &S,
        rule: RegisterRule<usize>,
        cfa: u64,
        encoding: Encoding,
    ) -> Result<u64, CfaError> {
        match rule {
            RegisterRule::Offset(offset) => self.read(cfa.checked_add_signed(offset).ok_or(CfaError::Malformed)?),
            RegisterRule::ValOffset(offset) => cfa.checked_add_signed(offset).ok_or(CfaError::Malformed),
            RegisterRule::Register(register) => self.register(register),
            RegisterRule::SameValue => Err(CfaError::Unsupported("a same-value return address")),
            RegisterRule::Expression(expression) => {
                let address = self.evaluate(section, &expression, encoding)?;
                self.read(address)
            }
            RegisterRule::ValExpression(expression) => self.evaluate(section, &expression, encoding),
            _ => Err(CfaError::Unsupported("an architectural or undefined register rule")),
        }
    }

    /// Runs a CFI expression: the registers it names must be rip, rsp or rbp, and the memory it reads must be in
    /// the stack copy. Its result is the address (or, after `DW_OP_stack_value`, the value) it leaves on its stack.
    fn evaluate<'a, S: UnwindSection<Slice<'a>>>(
        &mut self,
        section: &S,
        expression: &UnwindExpression<usize>,
        encoding: Encoding,
    ) -> Result<u64, CfaError> {
        let expression = expression.get(section).map_err(|_| CfaError::Malformed)?;
        evaluate(expression.0, encoding, self.regs, self.read_stack)
    }

    fn register(&self, register: Register) -> Result<u64, CfaError> {
        register_value(self.regs, register)
    }

    fn read(&mut self, address: u64) -> Result<u64, CfaError> {
        (self.read_stack)(address).map_err(|()| CfaError::StackRead(address))
    }
}

fn register_value(regs: &UnwindRegsX86_64, register: Register) -> Result<u64, CfaError> {
    match register {
        X86_64::RSP => Ok(regs.sp()),
        X86_64::RBP => Ok(regs.bp()),
        // In an expression the return address column stands for rip (the PLT's CFA expression uses it).
        X86_64::RA => Ok(regs.ip()),
        _ => Err(CfaError::Unsupported("a register the sample does not hold (only rip, rsp and rbp)")),
    }
}

fn evaluate<F: FnMut(u64) -> Result<u64, ()>>(
    bytecode: Slice<'_>,
    encoding: Encoding,
    regs: &UnwindRegsX86_64,
    read_stack: &mut F,
) -> Result<u64, CfaError> {
    let mut evaluation = Evaluation::new(bytecode, encoding);
    evaluation.set_max_iterations(MAX_EXPRESSION_STEPS);
    let failed = |_: gimli::Error| CfaError::Unsupported("an expression gimli cannot evaluate");
    let mut state = evaluation.evaluate().map_err(failed)?;
    loop {
        state = match state {
            EvaluationResult::Complete => break,
            // Base type 0 is the generic (address-sized) type, all that CFI uses.
            EvaluationResult::RequiresRegister { register, base_type } if base_type.0 == 0 => {
                evaluation.resume_with_register(Value::Generic(register_value(regs, register)?))
            }
            EvaluationResult::RequiresMemory { address, size, space: None, base_type } if base_type.0 == 0 => {
                let word = read_stack(address).map_err(|()| CfaError::StackRead(address))?;
                // size < 8 here: the shift is at most 56.
                let value = if size >= 8 { word } else { word & (1u64 << (8 * u32::from(size))).wrapping_sub(1) };
                evaluation.resume_with_memory(Value::Generic(value))
            }
            EvaluationResult::RequiresRegister { .. } | EvaluationResult::RequiresMemory { .. } => {
                return Err(CfaError::Unsupported("a typed or address-space-qualified expression operand"));
            }
            EvaluationResult::RequiresTls(_) => return Err(CfaError::Unsupported("thread-local storage in CFI")),
            _ => return Err(CfaError::Unsupported("an expression operation that CFI does not use")),
        }
        .map_err(failed)?;
    }
    match evaluation.result().as_slice() {
        [Piece { location: Location::Address { address }, size_in_bits: None, bit_offset: None }] => Ok(*address),
        [Piece { location: Location::Value { value: Value::Generic(value) }, size_in_bits: None, bit_offset: None }] => {
            Ok(*value)
        }
        _ => Err(CfaError::Unsupported("an expression whose result is not one address")),
    }
}

#[cfg(test)]
// Test data is built here, not read from a target: the module's arithmetic rule is for target data.
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use gimli::{constants::*, Format};

    use super::*;
    use crate::unwind::elf::{Section, SectionBytes};

    const ENCODING: Encoding = Encoding { format: Format::Dwarf32, version: 1, address_size: 8 };

    /// A stack copy of 8-byte words starting at `base`.
    fn stack(base: u64, words: &[(u64, u64)]) -> impl FnMut(u64) -> Result<u64, ()> {
        let words = words.to_vec();
        move |address| {
            if address < base {
                return Err(());
            }
            words.iter().find(|(at, _)| *at == address).map(|(_, value)| *value).ok_or(())
        }
    }

    fn eval(
        bytecode: &[u8],
        regs: UnwindRegsX86_64,
        read: &mut impl FnMut(u64) -> Result<u64, ()>,
    ) -> Result<u64, CfaError> {
        evaluate(EndianSlice::new(bytecode, LittleEndian), ENCODING, &regs, read)
    }

    fn sleb(value: i64) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut value = value;
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            let done = (value == 0 && byte & 0x40 == 0) || (value == -1 && byte & 0x40 != 0);
            bytes.push(if done { byte } else { byte | 0x80 });
            if done {
                return bytes;
            }
        }
    }

    #[test]
    fn evaluates_the_drap_cfa_expression_over_the_stack_copy() {
        // DW_OP_breg6 (rbp) -8; DW_OP_deref: the CFA was pushed just below the saved rbp.
        let expression = [&[DW_OP_breg6.0][..], &sleb(-8), &[DW_OP_deref.0]].concat();
        let regs = UnwindRegsX86_64::new(0x1234, 0x7000, 0x7100);
        let mut read = stack(0x7000, &[(0x70f8, 0x7250)]);
        assert_eq!(eval(&expression, regs, &mut read), Ok(0x7250));
    }

    #[test]
    fn evaluates_plus_uconst_deref_size_and_stack_value() {
        // DW_OP_breg7 (rsp) 16; DW_OP_plus_uconst 8; DW_OP_deref_size 4: a 32-bit read at rsp+24.
        let expression = [DW_OP_breg7.0, 16, DW_OP_plus_uconst.0, 8, DW_OP_deref_size.0, 4];
        let regs = UnwindRegsX86_64::new(0, 0x7000, 0);
        let mut read = stack(0x7000, &[(0x7018, 0xdead_beef_0000_1234)]);
        assert_eq!(eval(&expression, regs, &mut read), Ok(0x1234));
        // DW_OP_breg6 (rbp) 0; DW_OP_lit16; DW_OP_plus; DW_OP_stack_value: a value, not a location.
        let expression = [DW_OP_breg6.0, 0, DW_OP_lit16.0, DW_OP_plus.0, DW_OP_stack_value.0];
        let regs = UnwindRegsX86_64::new(0, 0x7000, 0x7100);
        assert_eq!(eval(&expression, regs, &mut stack(0, &[])), Ok(0x7110));
    }

    #[test]
    fn evaluates_the_plt_cfa_expression() {
        // What ld emits for .plt: rsp + 8, plus 8 more once rip is past the push in its 16-byte entry.
        let expression = [
            DW_OP_breg7.0,
            8,
            DW_OP_breg16.0,
            0,
            DW_OP_lit15.0,
            DW_OP_and.0,
            DW_OP_lit11.0,
            DW_OP_ge.0,
            DW_OP_lit3.0,
            DW_OP_shl.0,
            DW_OP_plus.0,
        ];
        let at = |rip| eval(&expression, UnwindRegsX86_64::new(rip, 0x7000, 0), &mut stack(0, &[]));
        assert_eq!(at(0x1026), Ok(0x7008));
        assert_eq!(at(0x102b), Ok(0x7010));
    }

    #[test]
    fn refuses_what_a_sample_cannot_answer() {
        let regs = UnwindRegsX86_64::new(0x1234, 0x7000, 0x7100);
        // DW_OP_breg3 (rbx) 0: no sample holds rbx.
        assert!(matches!(eval(&[DW_OP_breg3.0, 0], regs, &mut stack(0, &[])), Err(CfaError::Unsupported(_))));
        // DW_OP_form_tls_address, DW_OP_call_frame_cfa, DW_OP_fbreg: not for CFI.
        for op in [DW_OP_form_tls_address, DW_OP_call_frame_cfa] {
            let expression = [DW_OP_lit1.0, op.0];
            assert!(matches!(eval(&expression, regs, &mut stack(0, &[])), Err(CfaError::Unsupported(_))), "{op}");
        }
        assert!(matches!(eval(&[DW_OP_fbreg.0, 0], regs, &mut stack(0, &[])), Err(CfaError::Unsupported(_))));
        // A read beyond the stack copy.
        let expression = [&[DW_OP_breg6.0][..], &sleb(-8), &[DW_OP_deref.0]].concat();
        assert_eq!(eval(&expression, regs, &mut stack(0x8000, &[])), Err(CfaError::StackRead(0x70f8)));
        // An endless loop (DW_OP_skip -3 jumps to itself) is cut, not run forever.
        let expression = [DW_OP_skip.0, 0xfd, 0xff];
        assert!(matches!(eval(&expression, regs, &mut stack(0, &[])), Err(CfaError::Unsupported(_))));
    }

    /// A `.eh_frame` at `EH_FRAME` holding one CIE (CFA = rsp+8, rip at CFA-8, FDE pointers pc-relative) and one FDE
    /// per (start, length, instructions).
    fn eh_frame(fdes: &[(u64, u32, Vec<u8>)]) -> Vec<u8> {
        eh_frame_with(b"zR\0", fdes)
    }

    /// The same with another augmentation string (`zRS`: the FDEs are signal trampolines).
    fn eh_frame_with(augmentation: &[u8], fdes: &[(u64, u32, Vec<u8>)]) -> Vec<u8> {
        let mut section = Vec::new();
        let cie_body = [
            &0u32.to_le_bytes()[..],
            &[1],
            augmentation,
            &[1],      // code alignment factor
            &sleb(-8), // data alignment factor
            &[16],     // return address column
            &[1, DW_EH_PE_pcrel.0 | DW_EH_PE_sdata4.0],
            &[DW_CFA_def_cfa.0, 7, 8, DW_CFA_offset.0 | 16, 1],
        ]
        .concat();
        push_entry(&mut section, &cie_body);
        for (start, length, instructions) in fdes {
            let here = section.len();
            let cie_pointer = (here + 4) as u32;
            let pc_field = EH_FRAME + here as u64 + 8;
            let pc_begin = start.wrapping_sub(pc_field) as u32;
            let body =
                [&cie_pointer.to_le_bytes()[..], &pc_begin.to_le_bytes(), &length.to_le_bytes(), &[0], instructions]
                    .concat();
            push_entry(&mut section, &body);
        }
        section.extend_from_slice(&0u32.to_le_bytes());
        section
    }

    fn push_entry(section: &mut Vec<u8>, body: &[u8]) {
        let mut body = body.to_vec();
        while !(body.len() + 4).is_multiple_of(8) {
            body.push(DW_CFA_nop.0);
        }
        section.extend_from_slice(&(body.len() as u32).to_le_bytes());
        section.extend_from_slice(&body);
    }

    const EH_FRAME: u64 = 0x2000;

    fn elf_with(eh_frame: Vec<u8>) -> ElfFile {
        let svma = EH_FRAME..EH_FRAME + eh_frame.len() as u64;
        ElfFile {
            build_id: None,
            segments: Vec::new(),
            text: None,
            eh_frame: Some(Section { svma, bytes: SectionBytes::Owned(eh_frame.into()) }),
            eh_frame_hdr: None,
            debug_frame: None,
            got: None,
        }
    }

    /// GCC's CFI for a function at 0x11b0 that realigns its stack through r10 (DRAP), as `gcc -O2` emitted it for
    /// tests/workloads/unwind/realign.c's shape: r10 = CFA in the prologue and epilogue, an expression in between.
    fn drap_fde() -> (u64, u32, Vec<u8>) {
        let instructions = [
            &[DW_CFA_advance_loc.0 | 5, DW_CFA_def_cfa.0, 10, 0][..],
            &[DW_CFA_advance_loc.0 | 25, DW_CFA_expression.0, 6, 2, DW_OP_breg6.0, 0],
            &[DW_CFA_advance_loc.0 | 2, DW_CFA_def_cfa_expression.0, 3, DW_OP_breg6.0],
            &sleb(-8),
            &[DW_OP_deref.0],
            &[DW_CFA_advance_loc1.0, 132, DW_CFA_def_cfa.0, 10, 0],
            &[DW_CFA_advance_loc.0 | 7, DW_CFA_def_cfa.0, 7, 8],
        ]
        .concat();
        (0x11b0, 0xac, instructions)
    }

    /// A plain rsp-based function: framehop's business.
    fn plain_fde() -> (u64, u32, Vec<u8>) {
        (0x1150, 0x59, vec![DW_CFA_advance_loc.0 | 1, DW_CFA_def_cfa_offset.0, 16])
    }

    #[test]
    fn indexes_only_the_fdes_framehop_cannot_follow() {
        let elf = elf_with(eh_frame(&[plain_fde(), drap_fde()]));
        let index = CfaExpressionIndex::build(&elf);
        assert_eq!(index.fde_count(), 1);
        assert!(index.fde_at(0x1160).is_none());
        assert!(index.fde_at(0x11af).is_none());
        assert!(index.fde_at(0x11b0).is_some());
        assert!(index.fde_at(0x125b).is_some());
        assert!(index.fde_at(0x125c).is_none());
        assert_eq!(CfaExpressionIndex::build(&elf_with(eh_frame(&[plain_fde()]))).fde_count(), 0);
    }

    #[test]
    fn unwinds_a_drap_frame_to_its_caller() {
        let elf = elf_with(eh_frame(&[plain_fde(), drap_fde()]));
        let index = CfaExpressionIndex::build(&elf);
        // The prologue at entry rsp E: r10 = E+8; rsp = E & -64 = A; push the return address copy, push rbp,
        // rbp = A-16, push r10, then the locals.
        let entry_sp = 0x7f28u64;
        let aligned = entry_sp & !63;
        let (return_address, caller_bp) = (0x5555_0000_1234u64, 0x7fa0u64);
        let words = [
            (entry_sp, return_address),
            (aligned - 8, return_address),
            (aligned - 16, caller_bp),
            (aligned - 24, entry_sp + 8),
        ];
        let mut read = stack(0x7000, &words);
        let mut context = UnwindContext::new();
        // A return address in the body (after the call), as a caller frame: the CFA comes from the expression.
        let svma = 0x1250 - 1;
        let fde = index.fde_at(svma).unwrap();
        let mut regs = UnwindRegsX86_64::new(0x1250, aligned - 24 - 0xa8, aligned - 16);
        let unwound = unwind_frame(&elf, fde, svma, false, &mut regs, &mut context, &mut read);
        assert_eq!(unwound, Ok(Unwound::Caller { address: return_address, interrupted: false }));
        assert_eq!((regs.ip(), regs.sp(), regs.bp()), (return_address, entry_sp + 8, caller_bp));

        // The same state sampled as the leaf, in the body's loop.
        let mut regs = UnwindRegsX86_64::new(0x1201, aligned - 24 - 0xa8, aligned - 16);
        let unwound = unwind_frame(&elf, fde, 0x1201, true, &mut regs, &mut context, &mut read);
        assert_eq!(unwound, Ok(Unwound::Caller { address: return_address, interrupted: false }));
        assert_eq!(regs.sp(), entry_sp + 8);

        // In the prologue the CFA is r10, which no sample holds: refused, and the registers left alone.
        let mut regs = UnwindRegsX86_64::new(0x11c0, aligned, caller_bp);
        let unwound = unwind_frame(&elf, fde, 0x11c0, true, &mut regs, &mut context, &mut read);
        assert!(matches!(unwound, Err(CfaError::Unsupported(_))), "{unwound:?}");
        assert_eq!((regs.ip(), regs.sp(), regs.bp()), (0x11c0, aligned, caller_bp));

        // A CFA slot outside the stack copy.
        let mut regs = UnwindRegsX86_64::new(0x1250, aligned - 24 - 0xa8, aligned - 16);
        let unwound = unwind_frame(&elf, fde, svma, false, &mut regs, &mut context, &mut stack(0x7f00, &[]));
        assert_eq!(unwound, Err(CfaError::StackRead(aligned - 24)));
    }

    #[test]
    fn an_undefined_return_address_is_the_root() {
        // _start's CFI: DW_CFA_undefined rip.
        let fde = (0x1000, 0x20, vec![DW_CFA_undefined.0, 16, DW_CFA_def_cfa_expression.0, 2, DW_OP_breg7.0, 8]);
        let elf = elf_with(eh_frame(&[fde]));
        let index = CfaExpressionIndex::build(&elf);
        let mut regs = UnwindRegsX86_64::new(0x1004, 0x7000, 0);
        let unwound = unwind_frame(
            &elf,
            index.fde_at(0x1004).unwrap(),
            0x1004,
            true,
            &mut regs,
            &mut UnwindContext::new(),
            &mut stack(0x7000, &[]),
        );
        assert_eq!(unwound, Ok(Unwound::Root));
    }

    #[test]
    fn a_signal_trampolines_caller_is_where_it_was_interrupted() {
        // glibc's __restore_rt: the interrupted rsp, rip and rbp are in the ucontext at rsp, at 0xa0, 0xa8, 0x78.
        let breg7 = |offset| [&[DW_OP_breg7.0][..], &sleb(offset)].concat();
        let cfa = [breg7(0xa0), vec![DW_OP_deref.0]].concat();
        let (rbp, rip) = (breg7(0x78), breg7(0xa8));
        let instructions = [
            &[DW_CFA_def_cfa_expression.0, cfa.len() as u8][..],
            &cfa,
            &[DW_CFA_expression.0, 6, rbp.len() as u8],
            &rbp,
            &[DW_CFA_expression.0, 16, rip.len() as u8],
            &rip,
        ]
        .concat();
        let elf = elf_with(eh_frame_with(b"zRS\0", &[(0x3c04f, 10, instructions)]));
        let index = CfaExpressionIndex::build(&elf);
        let mut read = stack(0x7000, &[(0x70a0, 0x7800), (0x70a8, 0x4321), (0x7078, 0x7900)]);
        // __restore_rt is reached by the handler's return: a return address one past its start.
        let mut regs = UnwindRegsX86_64::new(0x3c04f, 0x7000, 0x1111);
        let fde = index.fde_at(0x3c04f).unwrap();
        let unwound = unwind_frame(&elf, fde, 0x3c04f, false, &mut regs, &mut UnwindContext::new(), &mut read);
        assert_eq!(unwound, Ok(Unwound::Caller { address: 0x4321, interrupted: true }));
        assert_eq!((regs.ip(), regs.sp(), regs.bp()), (0x4321, 0x7800, 0x7900));
    }
}
