//! Fuzz target: ELF files as the unwinder maps them (unwind/elf.rs): targets map truncated, hand-made or odd files.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| profiler::fuzzing::elf(data));
