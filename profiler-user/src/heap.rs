//! Giving freed heap memory back to the system.
//!
//! glibc's allocator keeps freed memory in its arenas for reuse; after the agent drops something large (the
//! kernel's parsed BTF after loading, the unwind tables and symbols of a service's processes after they exit),
//! that memory stays resident, and over restarts of a service the agent's RSS would climb by what its largest
//! moment needed. musl (the static release build) returns freed groups by itself and has no `malloc_trim`.

/// Hands free heap memory back to the system (glibc); does nothing on other C libraries.
pub(crate) fn release_free_memory() {
    // SAFETY: malloc_trim only releases free heap memory; no allocation is touched.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0)
    };
}
