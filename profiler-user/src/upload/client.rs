//! Sends one prepared request and says what to do next: done, retry (and when), or give up on it.
//!
//! The classification is the retry policy: connection errors, timeouts, 408, 429 and 5xx are worth retrying
//! (with exponential backoff and jitter, or after the server's `Retry-After`); 401/403 mean the credentials are
//! wrong and will stay wrong until someone fixes them; any other 4xx means this request will never be accepted.
use std::{
    error::Error as _,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};
use reqwest::{header, StatusCode};

use super::{config::Credentials, protocol::Request};

/// A `Retry-After` longer than this is capped: the queue's age bound is the real limit on waiting.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// How much of an error response we read and show.
const MAX_ERROR_BODY: usize = 4096;

/// What became of one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Delivered,
    /// Worth another attempt: the server is down, slow, overloaded or asked us to come back later.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// 401 or 403: the username or key is wrong.
    Unauthorized {
        status: u16,
        message: String,
    },
    /// Any other 4xx (or a redirect): sending the same request again cannot succeed.
    Rejected {
        status: u16,
        message: String,
    },
}

pub(crate) struct Client {
    http: reqwest::Client,
    credentials: Option<Credentials>,
    tenant_id: Option<String>,
}

impl Client {
    pub(crate) fn new(credentials: Option<Credentials>, tenant_id: Option<String>) -> Result<Self> {
        // reqwest is built without a default crypto provider (see Cargo.toml); an error means one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("profiler/", env!("CARGO_PKG_VERSION")))
            // The Connect protocol's unary calls are plain HTTP/1.1 POSTs; that is what the SDK speaks too.
            .http1_only()
            // A redirect would turn the POST into a GET or send the key elsewhere; report it instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("setting up the HTTP client")?;
        Ok(Self { http, credentials, tenant_id })
    }

    /// Sends `request` once, giving up after `timeout` (connecting included).
    pub(crate) async fn send(&self, request: &Request, timeout: Duration) -> Outcome {
        let mut builder = self
            .http
            .post(request.url.clone())
            .timeout(timeout)
            .header(header::CONTENT_TYPE, &request.content_type)
            .body(request.body.clone());
        if request.content_type == "application/proto" {
            builder = builder.header("Connect-Protocol-Version", "1");
        }
        if let Some(credentials) = &self.credentials {
            // reqwest marks the header sensitive, which keeps it out of its own debug output.
            builder = builder.basic_auth(&credentials.username, Some(credentials.key.expose()));
        }
        if let Some(tenant) = &self.tenant_id {
            builder = builder.header("X-Scope-OrgID", tenant);
        }
        let response = match builder.send().await {
            Ok(response) => response,
            Err(err) => return Outcome::Retry { reason: self.redact(&describe(&err, timeout)), after: None },
        };
        let status = response.status();
        if status.is_success() {
            return Outcome::Delivered;
        }
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        let location = response.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let message = self.redact(&error_message(response).await);
        classify(status, retry_after, message, location)
    }

    fn redact(&self, text: &str) -> String {
        self.credentials.as_ref().map_or_else(|| text.to_owned(), |c| c.redact(text))
    }
}

fn classify(status: StatusCode, retry_after: Option<Duration>, message: String, location: Option<String>) -> Outcome {
    let code = status.as_u16();
    let with_status = |message: &str| {
        if message.is_empty() {
            format!("HTTP {code}")
        } else {
            format!("HTTP {code}: {message}")
        }
    };
    match code {
        401 | 403 => Outcome::Unauthorized { status: code, message },
        408 | 429 | 500..=599 => Outcome::Retry { reason: with_status(&message), after: retry_after },
        300..=399 => Outcome::Rejected {
            status: code,
            message: format!(
                "the server redirects to {}: set the server URL to where it points",
                location.as_deref().unwrap_or("another URL")
            ),
        },
        // Not a Pyroscope (or Alloy) at that URL.
        404 | 405 => Outcome::Rejected {
            status: code,
            message: "no such endpoint: check the server URL and --protocol".to_owned(),
        },
        _ => Outcome::Rejected { status: code, message },
    }
}

/// The useful part of an error response, on one line: Connect's `{"code":..,"message":..}` message or the
/// start of the body.
async fn error_message(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(MAX_ERROR_BODY);
    summarize_body(&String::from_utf8_lossy(&body))
}

fn summarize_body(text: &str) -> String {
    let message = json_string_field(text, "message").unwrap_or_else(|| text.to_owned());
    let one_line: String = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 300 {
        format!("{}…", one_line.chars().take(300).collect::<String>())
    } else {
        one_line
    }
}

/// The string value of `"field":"..."` in a JSON object, without a JSON parser for one field.
fn json_string_field(text: &str, field: &str) -> Option<String> {
    let start = text.find(&format!("\"{field}\""))? + field.len() + 2;
    let rest = text[start..].trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => value.push(match chars.next()? {
                'n' | 't' | 'r' => ' ',
                other => other,
            }),
            c => value.push(c),
        }
    }
    None
}

/// A transport error as one line: timeout, or the innermost cause of a connection failure.
fn describe(err: &reqwest::Error, timeout: Duration) -> String {
    if err.is_timeout() {
        return format!("no answer within {:.0?}", timeout);
    }
    let mut causes = Vec::new();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !causes.iter().any(|seen: &String| seen.contains(&text)) {
            causes.push(text);
        }
        source = cause.source();
    }
    // The outer message only repeats the URL, which the caller logs anyway.
    if causes.is_empty() {
        err.to_string()
    } else {
        causes.join(": ")
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (IMF-fixdate, the form servers must send).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        parse_http_date(value)?.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_http_date(text: &str) -> Option<SystemTime> {
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    let [weekday, day, month, year, time, "GMT"] = fields[..] else { return None };
    if !weekday.ends_with(',') {
        return None;
    }
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| *m == month)? as u32 + 1;
    let day: u32 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    let mut hms = time.split(':').map(|part| part.parse::<u64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = u64::try_from(days).ok()? * 86_400 + h * 3600 + m * 60 + s;
    Some(UNIX_EPOCH + Duration::from_secs(seconds))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Exponential backoff with "equal jitter": the n-th delay is uniform in [d/2, d] with d = min(max, initial·2ⁿ),
/// so retries from many agents spread out but never come sooner than half the nominal delay.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max, failures: 0 }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let unit = getrandom::u64().map_or(0.5, |r| (r >> 11) as f64 / (1u64 << 53) as f64);
        self.next_delay_with(unit)
    }

    /// `unit` in [0, 1) picks the point in the jitter range.
    fn next_delay_with(&mut self, unit: f64) -> Duration {
        let nominal = self.initial.saturating_mul(1u32 << self.failures.min(20)).min(self.max);
        self.failures = self.failures.saturating_add(1);
        nominal / 2 + (nominal / 2).mul_f64(unit.clamp(0.0, 1.0))
    }

    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:30 GMT", now), Some(Duration::ZERO), "in the past");
        assert_eq!(parse_retry_after("86400", now), Some(MAX_RETRY_AFTER));
        for bad in ["", "-1", "soon", "1.5", "Sun, 06 Nov 1994 08:49:37 UTC", "Sunday, 06-Nov-94 08:49:37 GMT"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn http_dates_convert_to_unix_time() {
        let at = |text| parse_http_date(text).unwrap().duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(at("Thu, 01 Jan 1970 00:00:00 GMT"), 0);
        assert_eq!(at("Sun, 06 Nov 1994 08:49:37 GMT"), 784_111_777);
        assert_eq!(at("Tue, 29 Feb 2028 12:00:00 GMT"), 1_835_438_400);
        assert!(parse_http_date("Sun, 32 Nov 1994 08:49:37 GMT").is_none());
        assert!(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT").is_none());
    }

    #[test]
    fn backoff_doubles_within_jitter_bounds_up_to_the_cap() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let low: Vec<_> = (0..7).map(|_| backoff.next_delay_with(0.0).as_millis()).collect();
        assert_eq!(low, [500, 1000, 2000, 4000, 8000, 15000, 15000]);
        backoff.reset();
        let high: Vec<_> = (0..7).map(|_| backoff.next_delay_with(0.999_999).as_millis()).collect();
        assert_eq!(high, [999, 1999, 3999, 7999, 15999, 29999, 29999]);
        backoff.reset();
        for n in 0..40 {
            let delay = backoff.next_delay();
            let nominal = Duration::from_secs(1u64 << n.min(20)).min(Duration::from_secs(30));
            assert!(delay >= nominal / 2 && delay <= nominal, "attempt {n}: {delay:?}");
        }
    }

    #[test]
    fn statuses_map_to_the_retry_policy() {
        let retry = |code| classify(StatusCode::from_u16(code).unwrap(), None, String::new(), None);
        assert!(matches!(retry(500), Outcome::Retry { .. }));
        assert!(matches!(retry(503), Outcome::Retry { .. }));
        assert!(matches!(retry(408), Outcome::Retry { .. }));
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(3)), "slow down".into(), None),
            Outcome::Retry { reason: "HTTP 429: slow down".into(), after: Some(Duration::from_secs(3)) }
        );
        assert!(matches!(retry(401), Outcome::Unauthorized { status: 401, .. }));
        assert!(matches!(retry(403), Outcome::Unauthorized { status: 403, .. }));
        assert!(matches!(retry(400), Outcome::Rejected { status: 400, .. }));
        assert!(matches!(retry(413), Outcome::Rejected { status: 413, .. }));
        let Outcome::Rejected { message, .. } =
            classify(StatusCode::FOUND, None, String::new(), Some("https://x/".into()))
        else {
            panic!()
        };
        assert!(message.contains("redirects to https://x/"), "{message}");
    }

    #[test]
    fn error_bodies_become_one_line() {
        assert_eq!(
            summarize_body(r#"{"code":"invalid_argument","message":"invalid labels\n 'x'"}"#),
            "invalid labels 'x'"
        );
        assert_eq!(summarize_body("line one\nline   two"), "line one line two");
        assert!(summarize_body(&"x".repeat(1000)).chars().count() <= 301);
    }
}
