//! Exists only so that profiler-user can name this crate as a build-dependency (cargo then rebuilds the
//! embedded object when it changes); the programs are the `profiler` binary target.
#![no_std]
