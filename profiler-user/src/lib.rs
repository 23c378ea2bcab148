//! The profiler's library: each module is one stage of the pipeline in DESIGN.md, data flowing one way:
//! target → sample → unwind → symbolize → merge → aggregate → output / pprof → upload.
pub mod aggregate;
pub mod cli;
pub mod crash;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod merge;
pub mod output;
pub mod pipeline;
pub mod pprof;
pub mod privilege;
pub mod python;
pub mod sample;
pub mod session;
pub mod symbolize;
pub mod target;
pub mod unwind;
pub mod upload;
