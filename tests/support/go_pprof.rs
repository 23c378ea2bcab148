//! `go tool pprof` (Debian's `golang-go`), the reference reader of pprof files: every profile the tests read, from
//! a file or from a push, must open in it as it opens in our own decoder; and a test reads it as a user would.
use std::{path::Path, process::Command, time::Duration};

/// `go tool pprof ARGS PROFILE`'s output (stdout, then stderr, where it writes its notes); panics when it fails or
/// takes over a minute.
pub fn go_pprof(args: &[&str], profile: &Path) -> String {
    assert!(
        Path::new("/usr/bin/go").exists(),
        "no /usr/bin/go: Debian's golang-go is missing; `cargo xtask test` installs it (or `apt-get install golang-go`)"
    );
    let mut cmd = Command::new("/usr/bin/go");
    cmd.args(["tool", "pprof"]).args(args).arg(profile);
    // Its settings and caches beside the profile, not in the user's home.
    let home = profile.parent().unwrap_or(Path::new("/tmp")).join(".go-pprof-home");
    cmd.env("HOME", &home).env("PPROF_TMPDIR", &home).env_remove("PPROF_BINARY_PATH");
    let run = crate::run(&mut cmd, Duration::from_secs(60));
    assert!(
        run.status.success(),
        "`go tool pprof {}` cannot read {}: {}{}",
        args.join(" "),
        profile.display(),
        run.stdout,
        run.stderr
    );
    format!("{}{}", run.stdout, run.stderr)
}

/// Panics unless `go tool pprof` reads the gzipped pprof file at `profile`: every sample, without symbolizing.
pub fn assert_go_pprof_reads(profile: &Path) {
    go_pprof(&["-raw", "-symbolize=none"], profile);
}

/// Panics unless `go tool pprof` reads `gzipped`, a pprof as it was pushed (written to the scratch space first).
pub fn assert_go_pprof_reads_bytes(gzipped: &[u8]) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = crate::scratch_root().join("pushed-pprofs");
    std::fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("creating {}: {err}", dir.display()));
    let path = dir.join(format!("{}.pb.gz", NEXT.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, gzipped).unwrap_or_else(|err| panic!("writing {}: {err}", path.display()));
    assert_go_pprof_reads(&path);
    let _ = std::fs::remove_file(&path);
}
