//! Fuzz target: CFA-expression scanning of .eh_frame/.debug_frame (unwind/cfa.rs): targets map hand-made files.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| profiler::fuzzing::cfa(data));
