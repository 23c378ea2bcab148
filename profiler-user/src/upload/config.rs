//! Where and how uploads go: the server URL and its transport policy, the credentials, and the API key kept out
//! of every log line, error message and `Debug` output.
//!
//! The policy is checked once, before anything is loaded, so a misconfigured agent fails in the first second with
//! one line instead of pushing a key in clear text or retrying against a URL that can never work.
use std::{fmt, net::IpAddr, path::PathBuf, time::Duration};

use anyhow::{bail, Context as _, Result};
use reqwest::Url;

/// Which API uploads go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Protocol {
    /// `/push.v1.PusherService/Push` (Connect, protobuf), what current SDKs use.
    Push,
    /// The legacy `/ingest` endpoint with a multipart pprof.
    Ingest,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Push => "push",
            Protocol::Ingest => "ingest",
        })
    }
}

/// A value that must never be printed: `Debug` shows a placeholder, and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(value: String) -> Self {
        Self(value)
    }

    /// The value itself, for the one place that needs it: the `Authorization` header.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the secret blanked out, for messages that come from elsewhere (a server's
    /// error body could echo what it was sent).
    pub(crate) fn redact(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.0, "<redacted>")
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// HTTP basic auth as Grafana Cloud wants it: user = the stack's Profiles instance id, password = an access
/// policy token.
#[derive(Clone, Debug)]
pub(crate) struct Credentials {
    pub username: String,
    pub key: Secret,
}

impl Credentials {
    /// `text` without the key in any form it was sent in: as itself, and inside the base64 of the
    /// `Authorization: Basic` header (a server or proxy may echo the header it got in an error body).
    pub(crate) fn redact(&self, text: &str) -> String {
        let text = self.key.redact(text);
        if self.key.0.is_empty() {
            return text;
        }
        let header = base64(format!("{}:{}", self.username, self.key.0).as_bytes());
        text.replace(&header, "<redacted>")
    }
}

/// Standard base64 with padding (RFC 4648), as HTTP basic auth encodes `user:password`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Where the API key comes from; reading the file is a separate step so resolving arguments does no I/O.
#[derive(Clone, Debug)]
pub(crate) enum KeySource {
    None,
    /// `PYROSCOPE_API_KEY`.
    Env(Secret),
    /// `--api-key-file`.
    File(PathBuf),
}

impl KeySource {
    /// The key, read from its file if it comes from one (surrounding whitespace, such as the newline editors add,
    /// is not part of it).
    pub(crate) fn load(self) -> Result<Option<Secret>> {
        match self {
            KeySource::None => Ok(None),
            KeySource::Env(secret) => Ok(Some(secret)),
            KeySource::File(path) => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading the API key from {}", path.display()))?;
                let key = text.trim();
                if key.is_empty() {
                    bail!("the API key file {} is empty", path.display());
                }
                warn_if_world_readable(&path);
                Ok(Some(Secret::new(key.to_owned())))
            }
        }
    }
}

/// The username, and where the key comes from, before the key file is read.
#[derive(Clone, Debug)]
pub(crate) struct PendingCredentials {
    pub username: String,
    pub key: KeySource,
}

impl PendingCredentials {
    pub(crate) fn load(self) -> Result<Credentials> {
        let Some(key) = self.key.load()? else {
            bail!("PYROSCOPE_USERNAME is set but there is no API key: set PYROSCOPE_API_KEY or --api-key-file");
        };
        Ok(Credentials { username: self.username, key })
    }
}

fn warn_if_world_readable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).map(|meta| meta.permissions().mode()).unwrap_or(0);
    if mode & 0o004 != 0 {
        tracing::warn!("the API key file {} is readable by every user: chmod 600 it", path.display());
    }
}

/// The server's base URL, checked against the transport policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    base: Url,
}

impl Endpoint {
    /// Parses `text` as the user gave it: without a scheme it is https. Plain http with credentials is refused
    /// unless the host is loopback (a local Alloy or an SSH tunnel) or `allow_insecure` is set. Credentials,
    /// queries and fragments in the URL are refused: URLs end up in logs and error messages.
    pub(crate) fn parse(text: &str, with_credentials: bool, allow_insecure: bool) -> Result<Self> {
        let text = text.trim();
        if text.is_empty() {
            bail!("the server URL is empty (set PYROSCOPE_SERVER_URL or --server-url)");
        }
        // Without `://`, `host:4040` would parse as the scheme `host`.
        let with_scheme = if text.contains("://") { text.to_owned() } else { format!("https://{text}") };
        let url = Url::parse(&with_scheme).map_err(|err| {
            if with_scheme.contains('@') {
                // The text may hold a password: don't repeat it.
                anyhow::anyhow!("the server URL is not a valid URL ({err})")
            } else {
                anyhow::anyhow!("the server URL `{text}` is not a valid URL ({err})")
            }
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            bail!(
                "the server URL must not contain credentials: put them in PYROSCOPE_USERNAME and PYROSCOPE_API_KEY \
                 (or --api-key-file)"
            );
        }
        match url.scheme() {
            "https" | "http" => {}
            other => {
                bail!("the server URL `{text}` has the scheme `{other}`: use https:// (or http:// for a local Alloy)")
            }
        }
        if url.host().is_none() {
            bail!("the server URL `{text}` has no host");
        }
        if url.query().is_some() || url.fragment().is_some() {
            bail!("the server URL `{text}` must not have a query or fragment: give the server's base URL");
        }
        let endpoint = Self { base: url };
        if endpoint.is_plain_http() && with_credentials && !endpoint.is_loopback() && !allow_insecure {
            bail!(
                "refusing to send the API key in clear text to {}: use https, or --allow-insecure if the network \
                 to it is trusted (e.g. an Alloy next to the app)",
                endpoint
            );
        }
        Ok(endpoint)
    }

    pub(crate) fn is_plain_http(&self) -> bool {
        self.base.scheme() == "http"
    }

    pub(crate) fn is_loopback(&self) -> bool {
        let Some(host) = self.base.host_str() else { return false };
        // IPv6 hosts come bracketed, as in the URL.
        match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => host.eq_ignore_ascii_case("localhost"),
        }
    }

    /// The URL of `path` (which starts with `/`) under the base URL, keeping any path prefix of a reverse proxy.
    pub(crate) fn join(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let joined = format!("{}{}", url.path().trim_end_matches('/'), path);
        url.set_path(&joined);
        url
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.base.as_str().trim_end_matches('/'))
    }
}

/// Everything the uploader needs, checked for consistency.
#[derive(Clone, Debug)]
pub(crate) struct UploadConfig {
    pub endpoint: Endpoint,
    pub protocol: Protocol,
    /// `X-Scope-OrgID`, for self-hosted multi-tenant servers.
    pub tenant_id: Option<String>,
    /// Series labels besides `__name__` and `service_name`, validated, in the order given.
    pub tags: Vec<(String, String)>,
    /// Sampling rate: the ingest API wants it as `sampleRate`.
    pub rate_hz: u64,
    /// Encoded windows kept while the server is unreachable; the oldest go first.
    pub max_queue_bytes: usize,
    /// Windows older than this are dropped rather than sent late.
    pub max_queue_age: Duration,
    /// Per request, connection included.
    pub request_timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_shows_in_debug_output() {
        let secret = Secret::new("glc_topsecret123".into());
        let credentials = Credentials { username: "123456".into(), key: secret.clone() };
        for text in [format!("{secret:?}"), format!("{credentials:?}"), format!("{credentials:#?}")] {
            assert!(!text.contains("topsecret"), "{text}");
            assert!(text.contains("redacted"), "{text}");
        }
        let config = KeySource::Env(secret.clone());
        assert!(!format!("{config:?}").contains("topsecret"));
        assert_eq!(secret.redact("got glc_topsecret123 back"), "got <redacted> back");
        assert_eq!(Secret::new(String::new()).redact("text"), "text");
        // The Authorization header a server may echo: base64 of `user:key`.
        let credentials = Credentials { username: "123456".into(), key: Secret::new("glc_topsecret123".into()) };
        assert_eq!(base64(b"123456:glc_topsecret123"), "MTIzNDU2OmdsY190b3BzZWNyZXQxMjM=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(
            credentials.redact("bad header Basic MTIzNDU2OmdsY190b3BzZWNyZXQxMjM= and glc_topsecret123"),
            "bad header Basic <redacted> and <redacted>"
        );
    }

    #[test]
    fn urls_without_scheme_are_https() {
        let e = Endpoint::parse("profiles-prod-001.grafana.net", true, false).unwrap();
        assert_eq!(e.to_string(), "https://profiles-prod-001.grafana.net");
        assert!(!e.is_plain_http());
        let e = Endpoint::parse("  https://example.com/prefix/ ", true, false).unwrap();
        assert_eq!(e.join("/ingest").as_str(), "https://example.com/prefix/ingest");
        let e = Endpoint::parse("example.com:4040", false, false).unwrap();
        assert_eq!(
            e.join("/push.v1.PusherService/Push").as_str(),
            "https://example.com:4040/push.v1.PusherService/Push"
        );
    }

    #[test]
    fn plain_http_with_credentials_needs_loopback_or_allow_insecure() {
        let err = Endpoint::parse("http://pyroscope.internal:4040", true, false).unwrap_err().to_string();
        assert!(err.contains("refusing to send the API key in clear text to http://pyroscope.internal:4040"), "{err}");
        assert!(Endpoint::parse("http://pyroscope.internal:4040", true, true).is_ok());
        assert!(Endpoint::parse("http://pyroscope.internal:4040", false, false).is_ok());
        for loopback in ["http://127.0.0.1:4040", "http://127.3.2.1", "http://[::1]:4040", "http://LOCALHOST:4040"] {
            let e = Endpoint::parse(loopback, true, false).unwrap();
            assert!(e.is_loopback() && e.is_plain_http(), "{loopback}");
        }
        assert!(Endpoint::parse("http://10.0.0.1", true, false).is_err());
    }

    #[test]
    fn rejects_urls_that_cannot_work_or_would_leak() {
        let err = Endpoint::parse("https://123:glc_secret@example.com", true, false).unwrap_err().to_string();
        assert!(err.contains("must not contain credentials") && !err.contains("glc_secret"), "{err}");
        let err = Endpoint::parse("https://u:glc_secret@exa mple.com", true, false).unwrap_err().to_string();
        assert!(!err.contains("glc_secret"), "{err}");
        assert!(Endpoint::parse("ftp://example.com", false, false).unwrap_err().to_string().contains("scheme `ftp`"));
        assert!(Endpoint::parse("", false, false).unwrap_err().to_string().contains("PYROSCOPE_SERVER_URL"));
        assert!(Endpoint::parse("https://example.com/?a=b", false, false).is_err());
        assert!(Endpoint::parse("https://example.com/#x", false, false).is_err());
    }

    #[test]
    fn key_file_is_trimmed_and_must_not_be_empty() {
        let dir = std::env::temp_dir().join(format!("profiler-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, "glc_abc\n").unwrap();
        let key = KeySource::File(path.clone()).load().unwrap().unwrap();
        assert_eq!(key.expose(), "glc_abc");
        std::fs::write(&path, " \n").unwrap();
        assert!(KeySource::File(path.clone()).load().unwrap_err().to_string().contains("is empty"));
        let err = KeySource::File(dir.join("missing")).load().unwrap_err();
        assert!(format!("{err:#}").contains("reading the API key from"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
