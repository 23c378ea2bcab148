//! Step 3 of `cargo xtask kernels`: one boot under qemu (TCG), its serial console collected and logged.
use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::cmd;

/// Boots `vmlinuz` with `initramfs` under TCG and returns what the guest wrote to its console (also written to
/// `log` as it comes, with the `@@step` lines echoed here so a long boot shows progress).
pub(super) fn boot(vmlinuz: &Path, initramfs: &Path, log: &Path, timeout: Duration) -> Result<String> {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2", "-m", "2048"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 quiet panic=-1", "-nographic", "-no-reboot"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let line = cmd::display(&qemu);
    let mut child = qemu
        .spawn()
        .with_context(|| format!("could not start `{line}`: install qemu-system-x86 (`cargo xtask setup`)"))?;
    let stdout = child.stdout.take().context("qemu's stdout")?;
    let mut log_file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let (sender, receiver) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut console = String::new();
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line).replace('\r', "");
            let _ = writeln!(log_file, "{line}");
            if let Some(marker) = line.find("@@step ").map(|at| &line[at..]) {
                eprintln!("  {}", marker.trim_start_matches("@@"));
            }
            console.push_str(&line);
            console.push('\n');
        }
        let _ = sender.send(());
        console
    });
    let deadline = Instant::now() + timeout;
    let finished = loop {
        if receiver.recv_timeout(Duration::from_millis(200)).is_ok() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    if !finished {
        let _ = child.kill();
    }
    let status = child.wait().context("waiting for qemu")?;
    let console = reader.join().map_err(|_| anyhow::anyhow!("the console reader panicked"))?;
    if !finished {
        bail!("the guest did not power off within {timeout:?}; its console is in {}", log.display());
    }
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
        }
        bail!("`{line}` failed ({status}): {}", stderr.trim());
    }
    Ok(console)
}
