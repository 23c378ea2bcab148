//! Fuzz target: /proc/PID/maps text (unwind/maps.rs): a process can change its mappings while it is read.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| profiler::fuzzing::maps(data));
