//! Where the agent's log lines go: stderr, except while `profiler top` draws on the terminal.
//!
//! A warning written into a full-screen view would tear it, and one dropped would be lost data; so while the view
//! holds the logs they are kept (up to a bound), the view shows the latest, and they are all written to stderr
//! once the terminal is back to normal.
use std::{
    io::{self, Write as _},
    sync::Mutex,
};

/// Log text kept while held; `None` when lines go straight to stderr.
static HELD: Mutex<Option<Held>> = Mutex::new(None);

/// More than this many bytes of held log text are counted, not kept.
const HELD_LIMIT: usize = 256 * 1024;

#[derive(Default)]
struct Held {
    text: Vec<u8>,
    dropped_bytes: usize,
}

/// Logs go to stderr; `RUST_LOG` selects what (`default` when it is unset).
pub fn init(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal: not in journald, files or pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}

/// What the log subscriber writes each line through.
struct LogWriter;

impl io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut held = HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match held.as_mut() {
            Some(held) if held.text.len() + buf.len() <= HELD_LIMIT => held.text.extend_from_slice(buf),
            Some(held) => held.dropped_bytes += buf.len(),
            None => return io::stderr().write(buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// While this lives, log lines are kept instead of written; dropping it writes them to stderr.
pub(crate) struct HeldLogs(());

/// Starts keeping log lines (see [`HeldLogs`]).
pub(crate) fn hold() -> HeldLogs {
    *HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Held::default());
    HeldLogs(())
}

impl HeldLogs {
    /// The latest line logged while held, without colours: what the view shows.
    pub(crate) fn latest(&self) -> Option<String> {
        let held = HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let text = String::from_utf8_lossy(&held.as_ref()?.text).into_owned();
        text.lines().rev().find(|line| !line.trim().is_empty()).map(without_escapes)
    }
}

impl Drop for HeldLogs {
    fn drop(&mut self) {
        let held = HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(held) = held {
            let mut stderr = io::stderr().lock();
            let _ = stderr.write_all(&held.text);
            if held.dropped_bytes > 0 {
                let _ = writeln!(stderr, "({} more bytes of log lines were dropped)", held.dropped_bytes);
            }
        }
    }
}

/// `line` without its terminal escape sequences (the colours of a log line).
fn without_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters, ended by a letter.
            if chars.next() == Some('[') {
                for end in chars.by_ref() {
                    if end.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_colours_from_a_log_line() {
        assert_eq!(
            without_escapes("\x1b[2m2026-12-07T21:00:00Z\x1b[0m \x1b[33m WARN\x1b[0m no symbols"),
            "2026-12-07T21:00:00Z  WARN no symbols"
        );
        assert_eq!(without_escapes("plain"), "plain");
    }

    #[test]
    fn held_lines_are_kept_and_the_latest_is_shown() {
        let held = hold();
        LogWriter.write_all(b"first line\n").unwrap();
        LogWriter.write_all(b"\x1b[33mWARN\x1b[0m second line\n").unwrap();
        assert_eq!(held.latest().as_deref(), Some("WARN second line"));
        LogWriter.write_all(&vec![b'x'; HELD_LIMIT]).unwrap();
        assert_eq!(HELD.lock().unwrap().as_ref().unwrap().dropped_bytes, HELD_LIMIT);
        drop(held);
        assert!(HELD.lock().unwrap().is_none());
    }
}
