//! Fuzz target: the evaluation loop's unnamed ranges from code bytes and .eh_frame_hdr (python/eval_ranges.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| profiler::fuzzing::eval_ranges(data));
