//! The live status line on a terminal: elapsed time, samples, threads, lost samples.
use std::{io::Write as _, time::Duration};

use crate::pipeline::Stats;

pub(crate) struct StatusLine {
    enabled: bool,
    shown: bool,
    last: Option<Duration>,
}

/// Redrawing faster than this only flickers.
const REDRAW_EVERY: Duration = Duration::from_millis(250);

impl StatusLine {
    pub(crate) fn new(enabled: bool) -> Self {
        Self { enabled, shown: false, last: None }
    }

    pub(crate) fn show(&mut self, elapsed: Duration, stats: &Stats, lost: u64) {
        if !self.enabled || self.last.is_some_and(|last| elapsed < last + REDRAW_EVERY) {
            return;
        }
        self.last = Some(elapsed);
        let mut stderr = std::io::stderr().lock();
        let _ = write!(
            stderr,
            "\r\x1b[Krecording {:.1} s | {} samples | {} threads | {} lost (Ctrl-C to stop)",
            elapsed.as_secs_f64(),
            stats.samples,
            stats.thread_count(),
            lost
        );
        let _ = stderr.flush();
        self.shown = true;
    }

    pub(crate) fn clear(&mut self) {
        if self.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
            self.shown = false;
        }
    }
}
