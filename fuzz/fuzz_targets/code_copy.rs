//! Fuzz target: Code-object names and line tables as the crash probe copies them (python/code.rs `CodeInfo::from_copy`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| profiler::fuzzing::code_copy(data));
