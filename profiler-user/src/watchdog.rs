//! Names the target that stalls the pipeline. Everything the agent reads of a target is opened so as not to block
//! (see `process::files`), but a code path that still blocks (a file system that hangs, a lock, a bug) would stop
//! profiling for every process on the node without a word. The sampling thread says which process and stage it
//! is working on; a thread of its own checks every second and logs once per stall when the same piece of work
//! has taken longer than `STALL`.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    thread,
    time::{Duration, Instant},
};

/// How long one piece of work may take before it is called a stall.
pub(crate) const STALL: Duration = Duration::from_secs(5);

struct Busy {
    pid: u32,
    stage: &'static str,
    since: Instant,
    reported: bool,
}

static BUSY: Mutex<Option<Busy>> = Mutex::new(None);
static STARTED: AtomicBool = AtomicBool::new(false);

/// Marks the sampling thread busy with `pid` in `stage` until the guard is dropped.
pub(crate) fn busy(pid: u32, stage: &'static str) -> Guard {
    if let Ok(mut busy) = BUSY.lock() {
        *busy = Some(Busy { pid, stage, since: Instant::now(), reported: false });
    }
    Guard
}

pub(crate) struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(mut busy) = BUSY.lock() {
            if let Some(done) = busy.take() {
                if done.reported {
                    tracing::warn!(
                        "the pipeline is moving again after {:.0?} on PID {} ({})",
                        done.since.elapsed(),
                        done.pid,
                        done.stage
                    );
                }
            }
        }
    }
}

/// Starts the checking thread (once). Call once capabilities are final: the thread inherits this one's.
pub(crate) fn start() {
    if STARTED.swap(true, Ordering::SeqCst) {
        return;
    }
    let spawned = thread::Builder::new().name("profiler-watch".into()).spawn(|| loop {
        thread::sleep(Duration::from_secs(1));
        check(Instant::now());
    });
    if let Err(err) = spawned {
        tracing::warn!("no watchdog for the pipeline: {err}");
    }
}

fn check(now: Instant) {
    let Ok(mut busy) = BUSY.lock() else { return };
    if let Some(busy) = busy.as_mut().filter(|b| !b.reported && now.duration_since(b.since) >= STALL) {
        busy.reported = true;
        tracing::error!(
            "the pipeline has been stuck for {:.0?} on PID {} ({}): profiling of every target waits for it",
            now.duration_since(busy.since),
            busy.pid,
            busy.stage
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_is_reported_once_and_cleared_with_the_work() {
        let guard = busy(42, "detecting Python");
        check(Instant::now() + STALL + Duration::from_secs(1));
        assert!(BUSY.lock().unwrap().as_ref().is_some_and(|b| b.reported && b.pid == 42));
        drop(guard);
        assert!(BUSY.lock().unwrap().is_none());
    }
}
