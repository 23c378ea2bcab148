//! Fuzz target: CPython line tables of 3.8-3.15 (python/linetable.rs), as copied from a target's memory.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| profiler::fuzzing::line_tables(data));
