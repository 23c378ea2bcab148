//! Reads another process's memory with process_vm_readv: one syscall per read, no ptrace stop of the target.
// Values here come from a target (its files, its memory, its maps) or the kernel: no implicit arithmetic.
#![deny(clippy::arithmetic_side_effects)]
use anyhow::{bail, Result};

/// Reads `len` bytes at `address` of process `pid`; a short read (unmapped memory) is an error.
pub(crate) fn read(pid: u32, address: u64, len: usize) -> Result<Vec<u8>> {
    let mut buffer = vec![0u8; len];
    let local = libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: len };
    let remote = libc::iovec { iov_base: address as *mut libc::c_void, iov_len: len };
    // SAFETY: `local` points at `len` writable bytes we own; the kernel validates the remote range.
    let read = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if read < 0 {
        bail!("reading {len} bytes at {address:#x} of PID {pid}: {}", std::io::Error::last_os_error());
    }
    if read as usize != len {
        bail!("reading {len} bytes at {address:#x} of PID {pid}: only {read} bytes readable");
    }
    Ok(buffer)
}

pub(crate) fn u64_at(bytes: &[u8], offset: u64) -> Option<u64> {
    let offset = usize::try_from(offset).ok()?;
    Some(u64::from_le_bytes(bytes.get(offset..offset.checked_add(8)?)?.try_into().ok()?))
}

pub(crate) fn u32_at(bytes: &[u8], offset: u64) -> Option<u32> {
    let offset = usize::try_from(offset).ok()?;
    Some(u32::from_le_bytes(bytes.get(offset..offset.checked_add(4)?)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_memory_and_refuses_unmapped_addresses() {
        let secret = std::hint::black_box(*b"0123456789abcdef");
        let bytes = read(std::process::id(), secret.as_ptr() as u64, 16).unwrap();
        assert_eq!(bytes, secret);
        assert!(read(std::process::id(), 8, 16).is_err());
        assert_eq!(u64_at(&bytes, 0), Some(u64::from_le_bytes(*b"01234567")));
        assert_eq!(u64_at(&bytes, 9), None);
        assert_eq!(u32_at(&bytes, 12), Some(u32::from_le_bytes(*b"cdef")));
    }
}
