//! Fuzz target: Python's thread names read from a fake interpreter's memory (python/thread_names.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| profiler::fuzzing::thread_names(data));
