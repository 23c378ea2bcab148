//! Fuzz target: pprof encoding (pprof/) of profiles of any shape: decodes back, every reference resolves.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| profiler::fuzzing::pprof(data));
