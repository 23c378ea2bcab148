//! Turns one service's window into the HTTP request a Pyroscope-compatible server takes: the Push API (default) or
//! the legacy ingest API. Requests are built once, when the window ends, and kept as bytes in the queue, so a
//! retry resends exactly what failed (same upload id) and the queue bound is a bound on real memory.
//!
//! Push API (what the official SDK uses): `POST {base}/push.v1.PusherService/Push`, the Connect
//! protocol's unary call over HTTP/1.1 with a binary protobuf body (`Content-Type: application/proto`):
//! `PushRequest { series: [RawProfileSeries { labels, samples: [RawSample { raw_profile, ID }] }] }`. The SDK
//! gzips the whole body and leaves the pprof raw; we send the pprof gzipped, as pprof files are stored, and the
//! body as is: compressing it again would gain nothing. Pyroscope and Alloy accept both.
//!
//! Ingest API: `POST {base}/ingest?name=app{k=v,...}&from=&until=&sampleRate=&spyName=&format=pprof`, the pprof in
//! the `profile` field of a multipart/form-data body.
use std::fmt;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use prost::Message as _;
use reqwest::Url;

use super::{
    config::{Endpoint, Protocol, UploadConfig},
    labels::{HOSTNAME, SERVICE_NAME},
};
use crate::aggregate::Profile;

pub(crate) const PUSH_PATH: &str = "/push.v1.PusherService/Push";
pub(crate) const INGEST_PATH: &str = "/ingest";
/// What the ingest API calls the profiler that produced the data.
pub(crate) const SPY_NAME: &str = "ebpfspy";
/// The instrumentation scope, as the SDK reports its own in `otel.scope.name`/`otel.scope.version`: tells our
/// series apart from an SDK's or Alloy's for the same service.
pub(crate) const SCOPE_NAME: &str = "profiler";

// The Push API's messages (grafana/pyroscope api/push/v1/push.proto and types/v1), written by hand with prost's
// derive like the pprof ones, so the build needs no protoc.

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<RawProfileSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RawProfileSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<RawSample>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RawSample {
    /// A pprof profile, gzipped or not.
    #[prost(bytes = "vec", tag = "1")]
    pub raw_profile: Vec<u8>,
    /// `ID` in the proto: identifies the upload; kept across retries.
    #[prost(string, tag = "2")]
    pub id: String,
}

/// A request ready to send (and to resend).
#[derive(Clone)]
pub(crate) struct Request {
    pub url: Url,
    pub content_type: String,
    pub body: Bytes,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("url", &self.url.as_str())
            .field("content_type", &self.content_type)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Builds requests for one configuration; labels common to every series are fixed at startup.
#[derive(Clone, Debug)]
pub(crate) struct RequestBuilder {
    endpoint: Endpoint,
    protocol: Protocol,
    /// Every label but `__name__` and `service_name`, sorted by name.
    labels: Vec<(String, String)>,
    rate_hz: u64,
}

impl RequestBuilder {
    /// `hostname` becomes the `hostname` label unless a `--tag hostname=...` overrides it.
    pub(crate) fn new(config: &UploadConfig, hostname: Option<String>) -> Self {
        let mut labels = config.tags.clone();
        if !labels.iter().any(|(name, _)| name == HOSTNAME) {
            labels.extend(hostname.map(|host| (HOSTNAME.to_owned(), host)));
        }
        if config.protocol == Protocol::Push {
            labels.push(("otel.scope.name".to_owned(), SCOPE_NAME.to_owned()));
            labels.push(("otel.scope.version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()));
        }
        labels.sort();
        Self { endpoint: config.endpoint.clone(), protocol: config.protocol, labels, rate_hz: config.rate_hz }
    }

    /// The request that uploads `profile` as the service `service`.
    /// `extra` labels mark a particular profile of the service (e.g. `crash=SIGSEGV`).
    pub(crate) fn build(&self, service: &str, profile: &Profile, extra: &[(&str, &str)]) -> Result<Request> {
        let profile = &super::split::for_upload(profile);
        let pprof = crate::pprof::encode_gzip(profile)?;
        match self.protocol {
            Protocol::Push => Ok(self.push(service, profile.kind.pyroscope_name(), pprof, extra)),
            Protocol::Ingest => self.ingest(service, profile, pprof, extra),
        }
    }

    /// Series labels: `__name__` (the profile's name, e.g. `process_cpu`), `service_name`, then the rest by name,
    /// then `extra`.
    pub(crate) fn series_labels(&self, service: &str, name: &str, extra: &[(&str, &str)]) -> Vec<LabelPair> {
        let fixed = [(PROFILE_NAME_LABEL, name), (SERVICE_NAME, service)];
        fixed
            .into_iter()
            .chain(self.labels.iter().map(|(name, value)| (name.as_str(), value.as_str())))
            .chain(extra.iter().copied())
            .map(|(name, value)| LabelPair { name: name.to_owned(), value: value.to_owned() })
            .collect()
    }

    fn push(&self, service: &str, name: &str, pprof: Vec<u8>, extra: &[(&str, &str)]) -> Request {
        let message = PushRequest {
            series: vec![RawProfileSeries {
                labels: self.series_labels(service, name, extra),
                samples: vec![RawSample { raw_profile: pprof, id: upload_id() }],
            }],
        };
        Request {
            url: self.endpoint.join(PUSH_PATH),
            content_type: "application/proto".to_owned(),
            body: Bytes::from(message.encode_to_vec()),
        }
    }

    fn ingest(&self, service: &str, profile: &Profile, pprof: Vec<u8>, extra: &[(&str, &str)]) -> Result<Request> {
        let tags: Vec<String> = self
            .labels
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .chain(extra.iter().copied())
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let name = format!("{service}{{{}}}", tags.join(","));
        let from = profile.start_unix_ns / 1_000_000_000;
        let until = (profile.start_unix_ns + profile.duration_ns).div_ceil(1_000_000_000).max(from + 1);
        let mut url = self.endpoint.join(INGEST_PATH);
        url.query_pairs_mut()
            .append_pair("name", &name)
            .append_pair("from", &from.to_string())
            .append_pair("until", &until.to_string())
            .append_pair("sampleRate", &self.rate_hz.to_string())
            .append_pair("spyName", SPY_NAME)
            .append_pair("format", "pprof");
        let boundary = format!("profiler-{}", hex(&random_bytes::<12>()?));
        Ok(Request {
            url,
            content_type: format!("multipart/form-data; boundary={boundary}"),
            body: Bytes::from(multipart_profile(&boundary, &pprof)),
        })
    }
}

const PROFILE_NAME_LABEL: &str = "__name__";

/// A multipart/form-data body with the pprof as the `profile` file field.
fn multipart_profile(boundary: &str, pprof: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(pprof.len() + 256);
    body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    body.extend_from_slice(b"Content-Disposition: form-data; name=\"profile\"; filename=\"profile.pprof\"\r\n");
    body.extend_from_slice(b"Content-Type: application/octet-stream\r\n\r\n");
    body.extend_from_slice(pprof);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

/// A random (version 4) UUID, as the SDK sends in `RawSample.ID`.
fn upload_id() -> String {
    let mut b = random_bytes::<16>().unwrap_or_else(|_| {
        // No entropy source: still unique enough per process for an id nobody relies on.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        (nanos ^ u128::from(std::process::id()) << 64).to_le_bytes()
    });
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("{err}")).context("reading random bytes")?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::{io::Read as _, time::Duration};

    use flate2::read::GzDecoder;

    use super::*;
    use crate::{
        aggregate::{Aggregator, Frame, FrameKind},
        pprof::proto,
    };

    fn config(protocol: Protocol, tags: &[(&str, &str)]) -> UploadConfig {
        UploadConfig {
            endpoint: Endpoint::parse("https://profiles.example.com/base", true, false).unwrap(),
            protocol,
            tenant_id: None,
            tags: tags.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            rate_hz: 100,
            max_queue_bytes: 1 << 20,
            max_queue_age: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
        }
    }

    fn profile() -> Profile {
        let mut aggregator = Aggregator::new(10_000_000);
        let frame = Frame {
            kind: FrameKind::Native,
            function: "hot".into(),
            file: None,
            line: None,
            module: None,
            address: 0,
            inlined: false,
        };
        for _ in 0..7 {
            aggregator.add([&frame], vec![]);
        }
        let mut profile = aggregator.take();
        profile.start_unix_ns = 1_700_000_000_250_000_000;
        profile.duration_ns = 15_000_000_000;
        profile
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn push_request_carries_labels_and_the_gzipped_pprof() {
        let builder = RequestBuilder::new(
            &config(Protocol::Push, &[("region", "eu"), ("environment", "prod")]),
            Some("box".into()),
        );
        let request = builder.build("quake", &profile(), &[]).unwrap();
        assert_eq!(request.url.as_str(), "https://profiles.example.com/base/push.v1.PusherService/Push");
        assert_eq!(request.content_type, "application/proto");

        let decoded = PushRequest::decode(request.body.clone()).unwrap();
        assert_eq!(decoded.series.len(), 1);
        let labels: Vec<(&str, &str)> =
            decoded.series[0].labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
        assert_eq!(
            labels,
            [
                ("__name__", "process_cpu"),
                ("service_name", "quake"),
                ("environment", "prod"),
                ("hostname", "box"),
                ("otel.scope.name", "profiler"),
                ("otel.scope.version", env!("CARGO_PKG_VERSION")),
                ("region", "eu"),
            ]
        );
        let sample = &decoded.series[0].samples[0];
        assert_eq!(sample.id.len(), 36);
        assert_eq!(&sample.id[14..15], "4", "a version 4 uuid: {}", sample.id);
        assert_eq!(&sample.raw_profile[..2], [0x1f, 0x8b]);
        let pprof = proto::Profile::decode(&gunzip(&sample.raw_profile)[..]).unwrap();
        assert_eq!(pprof.sample[0].value, [70_000_000]);
        assert_eq!(pprof.period, 10_000_000);
    }

    #[test]
    fn push_request_wire_format_matches_the_proto_field_numbers() {
        // Hand-encoded: series(1) { labels(1) { name(1) "a" value(2) "b" } samples(2) { raw(1) "x" ID(2) "i" } }.
        let message = PushRequest {
            series: vec![RawProfileSeries {
                labels: vec![LabelPair { name: "a".into(), value: "b".into() }],
                samples: vec![RawSample { raw_profile: b"x".to_vec(), id: "i".into() }],
            }],
        };
        let label = [0x0a, 1, b'a', 0x12, 1, b'b'];
        let sample = [0x0a, 1, b'x', 0x12, 1, b'i'];
        let mut series = vec![0x0a, label.len() as u8];
        series.extend(label);
        series.extend([0x12, sample.len() as u8]);
        series.extend(sample);
        let mut expected = vec![0x0a, series.len() as u8];
        expected.extend(series);
        assert_eq!(message.encode_to_vec(), expected);
    }

    #[test]
    fn upload_ids_differ() {
        assert_ne!(upload_id(), upload_id());
    }

    #[test]
    fn hostname_tag_overrides_the_machines() {
        let builder = RequestBuilder::new(&config(Protocol::Push, &[("hostname", "pod-7")]), Some("node".into()));
        let labels = builder.series_labels("svc", "process_cpu", &[("crash", "SIGSEGV")]);
        let hosts: Vec<_> = labels.iter().filter(|l| l.name == "hostname").map(|l| l.value.as_str()).collect();
        assert_eq!(hosts, ["pod-7"]);
        let last = labels.last().unwrap();
        assert_eq!((last.name.as_str(), last.value.as_str()), ("crash", "SIGSEGV"));
    }

    #[test]
    fn ingest_request_is_a_multipart_pprof_with_the_key_in_the_query() {
        let builder = RequestBuilder::new(&config(Protocol::Ingest, &[("region", "eu")]), Some("box".into()));
        let request = builder.build("quake", &profile(), &[]).unwrap();
        assert_eq!(request.url.path(), "/base/ingest");
        let query: Vec<(String, String)> = request.url.query_pairs().map(|(k, v)| (k.into(), v.into())).collect();
        let get = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap();
        assert_eq!(get("name"), "quake{hostname=box,region=eu}");
        assert_eq!(get("from"), "1700000000");
        assert_eq!(get("until"), "1700000016");
        assert_eq!(get("sampleRate"), "100");
        assert_eq!(get("spyName"), "ebpfspy");
        assert_eq!(get("format"), "pprof");
        assert!(!request.url.as_str().contains('{'), "the name is percent-encoded: {}", request.url);

        let boundary = request.content_type.strip_prefix("multipart/form-data; boundary=").unwrap();
        let body = &request.body[..];
        let head = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"profile\"; filename=\"profile.pprof\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        assert!(body.starts_with(head.as_bytes()) && body.ends_with(tail.as_bytes()));
        let pprof = &body[head.len()..body.len() - tail.len()];
        let decoded = proto::Profile::decode(&gunzip(pprof)[..]).unwrap();
        assert_eq!(decoded.sample.len(), 1);
    }
}
