//! A terminal a test uses as a person would: tmux runs a command in a detached session of a fixed size, the test
//! types keys into it and reads the screen back as text. Each terminal has its own tmux server (its own socket),
//! so tests and a developer's own tmux never meet.
use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

/// What the session prints after the command ends, with its exit status, so a test can tell an exit from a hang.
pub const EXITED: &str = "command exited with status";

pub struct Terminal {
    socket: PathBuf,
}

impl Terminal {
    /// Starts `program args` in a `width`×`height` terminal; the session stays open after it ends, showing
    /// [`EXITED`] and the status.
    pub fn start(dir: &Path, program: &Path, args: &[&str], width: u16, height: u16) -> Terminal {
        let socket = dir.join("tmux.socket");
        let quoted: Vec<String> =
            std::iter::once(program.to_str().expect("UTF-8 path")).chain(args.iter().copied()).map(quote).collect();
        let script = format!("{}; echo \"{EXITED} $?\"; sleep 3600", quoted.join(" "));
        let terminal = Terminal { socket };
        terminal.tmux(
            &["new-session", "-d", "-s", "test", "-x", &width.to_string(), "-y", &height.to_string()],
            &["sh", "-c", &script],
        );
        terminal
    }

    /// The screen as text, one line per row.
    pub fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "test"], &[])
    }

    /// Types `keys` (tmux key names: `q`, `2`, `C-c`, `Down`).
    pub fn press(&self, keys: &str) {
        self.tmux(&["send-keys", "-t", "test", keys], &[]);
    }

    /// The screen once `ready` holds for it; panics with the last screen after `limit`.
    pub fn wait_for(&self, what: &str, limit: Duration, ready: impl Fn(&str) -> bool) -> String {
        let give_up = Instant::now() + limit;
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(Instant::now() < give_up, "no {what} on the screen within {limit:?}; it shows:\n{screen}");
            thread::sleep(Duration::from_millis(200));
        }
    }

    fn tmux(&self, args: &[&str], command: &[&str]) -> String {
        let output = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .args(command)
            .env_remove("TMUX")
            .output()
            .unwrap_or_else(|err| panic!("could not run tmux (install it: `cargo xtask setup`): {err}"));
        assert!(output.status.success(), "tmux {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        // Ends the session's command too (SIGHUP), whatever state the test left it in.
        let _ = Command::new("tmux").arg("-S").arg(&self.socket).arg("kill-server").output();
    }
}

/// `text` as one shell word.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
