//! Fuzz target: Python detection's reading of an interpreter file (python/detect.rs): symbols, Py_Version, eval-loop ranges.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| profiler::fuzzing::python_symbols(data));
