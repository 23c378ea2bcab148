//! Where a CPython process keeps its GIL, so that the off-CPU sampler can tell a futex wait on it from any other.
//!
//! In every supported version the GIL is a `struct _gil_runtime_state`: `interval` (the switch interval in
//! microseconds, 5000 by default), `last_holder`, `locked`, `switch_number`, then the condition variables and
//! mutexes a waiting thread blocks on (`cond`, `mutex`, `switch_cond`, `switch_mutex`: glibc's 48- and 40-byte
//! types), 208 bytes on x86_64. A thread waiting for the GIL sleeps in a futex on an address inside it. It lives
//! in `_PyRuntime.ceval` up to 3.11, just before `gilstate` (whose `tstate_current` is the holder the layout
//! knows), and per interpreter from 3.12 (`interp->ceval.gil`, or inline where `_Py_DebugOffsets` says).
//!
//! The address is derived from the layout and then checked against what the struct holds (a plausible switch
//! interval, `locked` 0 or 1), so a layout that is off never turns every futex of a process into a GIL wait.
// Values here come from a target (its memory): no implicit arithmetic.
#![deny(clippy::arithmetic_side_effects)]
use std::ops::Range;

use profiler_common::{PyLayout, GIL_RUNTIME_TSTATE, GIL_STRUCT, NO_OFFSET};

use crate::process::memory;

/// Bytes of `struct _gil_runtime_state` on x86_64 with glibc.
const GIL_STRUCT_LEN: u64 = 208;
/// Offset of `last_holder` in it.
const LAST_HOLDER: u64 = 8;
/// `gilstate.tstate_current` is 8 bytes into `gilstate`, which follows the GIL struct (3.8–3.11).
const TSTATE_CURRENT_AFTER_GIL: u64 = GIL_STRUCT_LEN + 8;
/// Switch intervals `sys.setswitchinterval` can set that anyone would (1 µs to 10 s).
const PLAUSIBLE_INTERVAL_US: std::ops::RangeInclusive<u64> = 1..=10_000_000;

/// The address range of process `pid`'s GIL, when the layout says where it is and the memory there looks like one.
pub(crate) fn locate(pid: u32, layout: &PyLayout) -> Option<Range<u64>> {
    let start = match layout.gil_mode {
        GIL_RUNTIME_TSTATE => layout.runtime.checked_add(layout.gil_holder)?.checked_sub(TSTATE_CURRENT_AFTER_GIL)?,
        GIL_STRUCT if layout.gil_holder != NO_OFFSET => {
            let interp = read_u64(pid, layout.runtime.checked_add(layout.runtime_interpreters_head)?)?;
            let base =
                if layout.gil_ptr == NO_OFFSET { interp } else { read_u64(pid, interp.checked_add(layout.gil_ptr)?)? };
            base.checked_add(layout.gil_holder)?.checked_sub(LAST_HOLDER)?
        }
        _ => return None,
    };
    let head = memory::read(pid, start, 24).ok()?;
    looks_like_gil(&head).then(|| start..start.saturating_add(GIL_STRUCT_LEN))
}

/// Whether the first 24 bytes of a candidate struct hold a GIL's `interval` and `locked`.
fn looks_like_gil(head: &[u8]) -> bool {
    let interval = memory::u64_at(head, 0);
    let locked = memory::u32_at(head, 16);
    matches!((interval, locked), (Some(interval), Some(0 | 1)) if PLAUSIBLE_INTERVAL_US.contains(&interval))
}

fn read_u64(pid: u32, address: u64) -> Option<u64> {
    memory::read(pid, address, 8).ok().and_then(|bytes| memory::u64_at(&bytes, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gil_has_a_plausible_interval_and_a_boolean_lock() {
        let head = |interval: u64, locked: u32| {
            let mut bytes = interval.to_le_bytes().to_vec();
            bytes.extend(0x7f00_dead_beefu64.to_le_bytes());
            bytes.extend(locked.to_le_bytes());
            bytes.extend([0; 4]);
            bytes
        };
        assert!(looks_like_gil(&head(5000, 1)));
        assert!(looks_like_gil(&head(5000, 0)));
        assert!(!looks_like_gil(&head(0, 0)), "an interval of 0 is not a GIL's");
        assert!(!looks_like_gil(&head(0x5555_5555_0000, 0)), "a pointer is not an interval");
        assert!(!looks_like_gil(&head(5000, 7)));
        assert!(!looks_like_gil(&head(5000, 0)[..16]), "too short to hold `locked`");
    }

    /// Against a live interpreter: the host's Python (the integration tests cover every supported version).
    #[test]
    fn finds_the_gil_of_a_live_python() {
        // python3 may be a launcher script (pyenv): ask it for the interpreter itself.
        let output = std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 on PATH");
        let python = String::from_utf8(output.stdout).expect("UTF-8").trim().to_owned();
        let mut child = std::process::Command::new(python)
            .args([
                "-c",
                "import threading,time\nthreading.Thread(target=time.sleep,args=(30,)).start()\ntime.sleep(30)",
            ])
            .spawn()
            .expect("starting python");
        std::thread::sleep(std::time::Duration::from_millis(500));
        let pid = child.id();
        let found = crate::python::detect::detect(pid, &mut Default::default())
            .ok()
            .flatten()
            .and_then(|i| locate(pid, &i.layouts.kernel));
        let _ = child.kill();
        let _ = child.wait();
        let gil = found.expect("the GIL of a running Python");
        assert_eq!(gil.end - gil.start, GIL_STRUCT_LEN);
    }
}
