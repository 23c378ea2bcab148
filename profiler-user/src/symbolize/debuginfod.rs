//! Debug information by build-id from debuginfod servers, for the native frames nothing on the machine names.
//!
//! CPython's extension modules and wheels such as lxml ship stripped: their static functions have no names on the
//! machine, but Debian, Ubuntu, Fedora and others serve the split debug files by build-id. The servers are those of
//! the standard `DEBUGINFOD_URLS` (space-separated, as gdb and perf read it). What is sent: the build-id of a
//! module whose frames stay unnamed, once per run, as `GET SERVER/buildid/ID/debuginfo`; nothing else.
//!
//! The symbolizer never waits. It asks, and frames it names before the file arrives stay unnamed; the later ones
//! get names. One background task fetches one file at a time, with a connect and a whole-request timeout and a size
//! limit, and keeps only an ELF file that carries the build-id asked for. Files stay in a cache directory whose
//! size is capped (the oldest go first). A build-id no server has is remembered for a day (`ID.missing` in the
//! cache); one whose fetch failed (a timeout, a refused connection, a server error) is asked again after
//! `RETRY_FAILED_AFTER`.
use std::{
    collections::HashMap,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context as _, Result};

/// Where the cache is unless told otherwise (`--debuginfod-cache`).
pub(crate) const DEFAULT_CACHE_DIR: &str = "/var/cache/profiler/debuginfod";
/// A debug file larger than this is not downloaded (libxul's is 1 GiB; CPython's and lxml's are tens of MiB).
const MAX_FILE_BYTES: u64 = 1 << 30;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// For one whole download.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a build-id no server has is not asked for again.
const MISSING_FOR: Duration = Duration::from_secs(24 * 3600);
/// How long after a failed fetch a build-id is asked for again (the warning says 10 minutes).
const RETRY_FAILED_AFTER: Duration = Duration::from_secs(600);

/// Where debug files come from and where they are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DebuginfodConfig {
    /// Base URLs, without a trailing `/`.
    pub servers: Vec<String>,
    pub cache_dir: PathBuf,
    pub cache_bytes: u64,
}

/// The servers of a `DEBUGINFOD_URLS` value: none when it is empty; an error names a URL that is not http(s).
pub(crate) fn parse_servers(urls: &str) -> Result<Vec<String>> {
    urls.split_whitespace()
        .map(|url| {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("DEBUGINFOD_URLS: `{url}` is not an http:// or https:// URL");
            }
            Ok(url.trim_end_matches('/').to_owned())
        })
        .collect()
}

/// The symbolizer's side: asks for build-ids, finds what arrived.
pub(crate) struct Debuginfod {
    cache_dir: PathBuf,
    /// Build-ids asked for in this run, and when.
    asked: HashMap<String, Instant>,
    requests: tokio::sync::mpsc::UnboundedSender<String>,
    /// Files stored so far (the fetcher adds one for each).
    arrivals: Arc<AtomicU64>,
}

impl Debuginfod {
    /// Creates the cache directory (mode 0700) and starts the fetcher on the current tokio runtime.
    pub(crate) fn start(config: &DebuginfodConfig) -> Result<Self> {
        use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
        let dir = &config.cache_dir;
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).with_context(|| {
            format!("creating the debuginfod cache {}: choose another with --debuginfod-cache", dir.display())
        })?;
        // Files are written there as the agent's user (root, often): the directory must be its own alone.
        let meta = fs::symlink_metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if !meta.is_dir() || meta.uid() != euid || meta.permissions().mode() & 0o022 != 0 {
            bail!(
                "the debuginfod cache {} is not a directory that only this user owns and can write: choose another \
                 with --debuginfod-cache",
                dir.display()
            );
        }
        // reqwest is built without a default crypto provider (see Cargo.toml); an error means one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .user_agent(concat!("profiler/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("setting up the HTTP client for debuginfod")?;
        let (requests, pending) = tokio::sync::mpsc::unbounded_channel();
        let arrivals = Arc::new(AtomicU64::new(0));
        let fetcher = Fetcher { client, config: config.clone(), arrivals: arrivals.clone(), warned: Vec::new() };
        tokio::spawn(fetcher.run(pending));
        Ok(Self { cache_dir: dir.clone(), asked: HashMap::new(), requests, arrivals })
    }

    /// The debug file of `build_id` if it is in the cache.
    pub(crate) fn cached(&self, build_id: &str) -> Option<PathBuf> {
        let path = self.cache_dir.join(format!("{}.debug", valid_build_id(build_id)?));
        path.is_file().then_some(path)
    }

    /// Asks for the debug file of `build_id` in the background, unless it was asked for lately or no server had
    /// it yesterday.
    pub(crate) fn ask(&mut self, build_id: &str) {
        let Some(build_id) = valid_build_id(build_id) else { return };
        if self.asked.get(build_id).is_some_and(|at| at.elapsed() < RETRY_FAILED_AFTER) {
            return;
        }
        self.asked.insert(build_id.to_owned(), Instant::now());
        let missing = self.cache_dir.join(format!("{build_id}.missing"));
        let known_missing = fs::metadata(&missing)
            .and_then(|meta| meta.modified())
            .is_ok_and(|at| SystemTime::now().duration_since(at).unwrap_or_default() < MISSING_FOR);
        if !known_missing && self.cached(build_id).is_none() {
            let _ = self.requests.send(build_id.to_owned());
        }
    }

    /// How many files arrived so far: frames named before a change may now be named better.
    pub(crate) fn arrivals(&self) -> u64 {
        self.arrivals.load(Ordering::Acquire)
    }
}

/// A build-id as it may go into a URL and a file name: 2–128 lowercase hex digits.
fn valid_build_id(build_id: &str) -> Option<&str> {
    let ok = (2..=128).contains(&build_id.len()) && build_id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then_some(build_id)
}

/// The background task that downloads.
struct Fetcher {
    client: reqwest::Client,
    config: DebuginfodConfig,
    arrivals: Arc<AtomicU64>,
    /// Servers whose failure was logged already (once each per run).
    warned: Vec<String>,
}

/// What the servers said about one build-id.
enum Outcome {
    Stored,
    /// Every server answered, none has it.
    Missing,
    /// No server has it, and some could not say.
    Failed,
}

impl Fetcher {
    async fn run(mut self, mut pending: tokio::sync::mpsc::UnboundedReceiver<String>) {
        while let Some(build_id) = pending.recv().await {
            match self.fetch(&build_id).await {
                Outcome::Stored => {
                    self.arrivals.fetch_add(1, Ordering::Release);
                    if let Err(err) = prune(&self.config.cache_dir, self.config.cache_bytes) {
                        tracing::warn!("keeping the debuginfod cache under its size: {err:#}");
                    }
                }
                Outcome::Missing => {
                    let missing = self.config.cache_dir.join(format!("{build_id}.missing"));
                    let _ = fs::remove_file(&missing);
                    let _ = fs::OpenOptions::new().write(true).create_new(true).open(&missing);
                }
                Outcome::Failed => {}
            }
        }
    }

    async fn fetch(&mut self, build_id: &str) -> Outcome {
        let mut failed = false;
        for server in self.config.servers.clone() {
            match self.fetch_from(&server, build_id).await {
                Ok(true) => {
                    tracing::info!("debug info of build-id {build_id} from {server}");
                    return Outcome::Stored;
                }
                Ok(false) => {}
                Err(err) => {
                    failed = true;
                    if self.warned.contains(&server) {
                        tracing::debug!("debuginfod {server}: build-id {build_id}: {err:#}");
                    } else {
                        self.warned.push(server.clone());
                        tracing::warn!(
                            "debuginfod {server}: {err:#}; the frames it could name stay unnamed (asked again in 10 \
                             minutes)"
                        );
                    }
                }
            }
        }
        if failed {
            Outcome::Failed
        } else {
            Outcome::Missing
        }
    }

    /// Ok(false): the server does not have it.
    async fn fetch_from(&self, server: &str, build_id: &str) -> Result<bool> {
        let url = format!("{server}/buildid/{build_id}/debuginfo");
        let mut response =
            self.client.get(&url).send().await.map_err(|err| anyhow::anyhow!("{}", without_url(&err)))?;
        match response.status().as_u16() {
            200 => {}
            404 => return Ok(false),
            status => bail!("HTTP {status}"),
        }
        if response.content_length().is_some_and(|length| length > MAX_FILE_BYTES) {
            bail!("build-id {build_id}: the debug file is over {} MiB, not downloaded", MAX_FILE_BYTES >> 20);
        }
        let dir = &self.config.cache_dir;
        let partial = dir.join(format!(".{build_id}.partial"));
        let _ = fs::remove_file(&partial);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        let mut written = 0u64;
        let stored = async {
            while let Some(chunk) = response.chunk().await.map_err(|err| anyhow::anyhow!("{}", without_url(&err)))? {
                written = written.saturating_add(chunk.len() as u64);
                if written > MAX_FILE_BYTES {
                    bail!("build-id {build_id}: the debug file is over {} MiB, not kept", MAX_FILE_BYTES >> 20);
                }
                file.write_all(&chunk).with_context(|| format!("writing {}", partial.display()))?;
            }
            file.sync_all().ok();
            let got = crate::unwind::elf::read_build_id(&fs::File::open(&partial)?)
                .with_context(|| format!("build-id {build_id}: what the server sent is not an ELF file"))?;
            if got.as_deref() != Some(build_id) {
                bail!("build-id {build_id}: the server sent the debug file of another build-id ({got:?})");
            }
            fs::rename(&partial, dir.join(format!("{build_id}.debug"))).context("storing the debug file")?;
            Ok(true)
        }
        .await;
        if stored.is_err() {
            let _ = fs::remove_file(&partial);
        }
        stored
    }
}

/// reqwest's error text without the URL it names (the URL is the server's, which the log line names already).
fn without_url(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    if let Some(url) = err.url() {
        text = text.replace(&format!(" ({url})"), "").replace(url.as_str(), "the server");
    }
    if err.is_timeout() {
        return "timed out".to_owned();
    }
    text
}

/// Removes the oldest debug files until those left hold at most `cap` bytes (the newest is kept in any case).
fn prune(dir: &Path, cap: u64) -> Result<()> {
    let mut files: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "debug") {
            continue;
        }
        let meta = entry.metadata()?;
        files.push((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len(), path));
    }
    files.sort();
    let mut total: u64 = files.iter().map(|(_, size, _)| size).sum();
    let keep_newest = files.len().saturating_sub(1);
    for (_, size, path) in files.iter().take(keep_newest) {
        if total <= cap {
            break;
        }
        fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
        total = total.saturating_sub(*size);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_http_urls_separated_by_spaces() {
        assert_eq!(
            parse_servers(" https://debuginfod.debian.net/  http://127.0.0.1:8002 ").unwrap(),
            ["https://debuginfod.debian.net", "http://127.0.0.1:8002"]
        );
        assert!(parse_servers("").unwrap().is_empty());
        let err = parse_servers("https://ok ftp://nope").unwrap_err().to_string();
        assert!(err.contains("`ftp://nope` is not an http:// or https:// URL"), "{err}");
    }

    #[test]
    fn only_hex_build_ids_reach_urls_and_file_names() {
        assert_eq!(valid_build_id("ab12"), Some("ab12"));
        for bad in ["", "a", "../etc", "AB12", "ab/12", &"a".repeat(129)] {
            assert_eq!(valid_build_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_cache_directory_others_can_write_or_a_link_to_one_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let base = std::env::temp_dir().join(format!("debuginfod-cache-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let open = base.join("open");
        fs::create_dir_all(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let real = base.join("real");
        fs::create_dir_all(&real).unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o700)).unwrap();
        let link = base.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut refused = vec![open, link];
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // Root (as CI runs the tests): a directory of another user, even one only that user can write.
            let theirs = base.join("theirs");
            fs::create_dir_all(&theirs).unwrap();
            fs::set_permissions(&theirs, fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            refused.push(theirs);
        }
        for dir in refused {
            let config =
                DebuginfodConfig { servers: vec!["http://127.0.0.1:9".into()], cache_dir: dir, cache_bytes: 1 };
            let err = Debuginfod::start(&config).err().expect("refused").to_string();
            assert!(err.contains("not a directory that only this user owns and can write"), "{err}");
        }
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn pruning_removes_the_oldest_debug_files_first_and_keeps_the_newest() {
        let dir = std::env::temp_dir().join(format!("debuginfod-prune-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        for (i, name) in ["old.debug", "mid.debug", "new.debug"].iter().enumerate() {
            let path = dir.join(name);
            fs::write(&path, vec![0u8; 100]).unwrap();
            let at =
                SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(1_000_000u64.saturating_add(i as u64))).unwrap();
            fs::File::options().write(true).open(&path).unwrap().set_modified(at).unwrap();
        }
        fs::write(dir.join("x.missing"), b"").unwrap();
        prune(&dir, 200).unwrap();
        let mut left: Vec<String> =
            fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["mid.debug", "new.debug", "x.missing"]);
        prune(&dir, 10).unwrap();
        assert!(dir.join("new.debug").exists() && !dir.join("mid.debug").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
