//! A loopback stand-in for Pyroscope in the upload tests: a strict HTTP/1.1 server on 127.0.0.1 that records every
//! request, answers from a script (500 twice then 200, 429 with Retry-After, 401, never answer), and decodes both
//! upload protocols strictly: path, headers, auth, gzip, protobuf, labels and the pprof inside.
//!
//! The Push API messages are declared here again, from grafana/pyroscope's push.proto, rather than taken from the
//! profiler: a wrong field number on the profiler's side must fail these tests, not be shared by them.
//! Everything panics on what a real server would reject; protocol errors seen on the server threads (which cannot
//! fail the test themselves) are collected and checked by [`Receiver::assert_clean`].
use std::{
    collections::{BTreeMap, VecDeque},
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Condvar, Mutex, MutexGuard,
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use profiler::pprof::proto;
use prost::Message as _;

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// This status; errors get a Connect-style JSON body.
    Status(u16),
    /// This status with extra headers (e.g. `Retry-After`).
    StatusWith(u16, Vec<(String, String)>),
    /// Read the request and never answer: the connection stays open until the receiver is dropped.
    Hang,
    /// This status, with the request's `Authorization` header echoed in the error message (a hostile or careless
    /// server or proxy).
    EchoAuthorization(u16),
}

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Request {
    /// When its last byte arrived.
    pub at: Instant,
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// What it was answered; `None` for [`Reply::Hang`].
    pub answered: Option<u16>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut values = self.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let value = values.next();
        assert!(values.next().is_none(), "header {name} appears twice in {}", self.target);
        value
    }

    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(path, _)| path)
    }

    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, query)| query)
    }
}

struct Shared {
    requests: Mutex<Vec<Request>>,
    arrived: Condvar,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    errors: Mutex<Vec<String>>,
    stop: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Receiver {
    /// Listens on a free loopback port.
    pub fn start() -> Receiver {
        Receiver::start_on(0)
    }

    /// Listens on `port` of 127.0.0.1 (a port from [`free_port`] to play a server that comes up late).
    pub fn start_on(port: u16) -> Receiver {
        let listener =
            TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|err| panic!("binding 127.0.0.1:{port}: {err}"));
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(Reply::Status(200)),
            errors: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = shared.clone();
                    thread::spawn(move || serve(stream, &shared));
                }
            })
        };
        Receiver { addr, shared, acceptor: Some(acceptor) }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next requests get these replies, in order; after them, the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.shared.script).extend(replies);
    }

    /// The reply once the script is used up (200 unless set).
    pub fn set_default(&self, reply: Reply) {
        *lock(&self.shared.default) = reply;
    }

    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared.requests).clone()
    }

    /// Waits until `done` holds for the requests so far; panics after `limit`, saying `what` was awaited.
    pub fn wait_for(&self, what: &str, limit: Duration, done: impl Fn(&[Request]) -> bool) -> Vec<Request> {
        let give_up = Instant::now() + limit;
        let mut requests = lock(&self.shared.requests);
        loop {
            if done(&requests) {
                return requests.clone();
            }
            let now = Instant::now();
            assert!(now < give_up, "waited {limit:?} for {what}; the receiver got {} request(s)", requests.len());
            requests = self.shared.arrived.wait_timeout(requests, give_up - now).expect("receiver lock").0;
        }
    }

    /// Panics if any request broke HTTP/1.1 framing as this server checks it.
    pub fn assert_clean(&self) {
        let errors = lock(&self.shared.errors);
        assert!(errors.is_empty(), "the receiver saw malformed requests: {errors:#?}");
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the acceptor, which then sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// A loopback port nothing listens on right now (bound and released), for a server that is down.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("binding a free port").local_addr().expect("local address").port()
}

/// The whole answer (status line, headers, body) to an HTTP/1.0 GET of `path` on loopback `port`, or `None` when
/// nothing answered within 10 s: how the tests ask the servers they start (the demo app, debuginfod) whether
/// they are up.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    (!answer.is_empty()).then(|| String::from_utf8_lossy(&answer).into_owned())
}

/// Serves the requests of one connection (HTTP/1.1 keeps it open between them).
fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let request = match read_request(&mut reader) {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(err) => {
                if !shared.stop.load(Ordering::SeqCst) {
                    lock(&shared.errors).push(err);
                }
                return;
            }
        };
        let reply = lock(&shared.script).pop_front().unwrap_or_else(|| lock(&shared.default).clone());
        let answered = match &reply {
            Reply::Status(code) | Reply::StatusWith(code, _) | Reply::EchoAuthorization(code) => Some(*code),
            Reply::Hang => None,
        };
        let authorization = request.header("authorization").unwrap_or("").to_owned();
        lock(&shared.requests).push(Request { answered, ..request });
        shared.arrived.notify_all();
        match reply {
            Reply::Status(code) => respond(&mut writer, code, &[]),
            Reply::EchoAuthorization(code) => {
                respond_with(&mut writer, code, &[], &format!("you sent {authorization}"))
            }
            Reply::StatusWith(code, headers) => respond(&mut writer, code, &headers),
            Reply::Hang => {
                while !shared.stop.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(20));
                }
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

fn respond(writer: &mut TcpStream, code: u16, headers: &[(String, String)]) {
    respond_with(writer, code, headers, &format!("scripted {code}"))
}

fn respond_with(writer: &mut TcpStream, code: u16, headers: &[(String, String)], message: &str) {
    let (reason, connect_code) = match code {
        200 => ("OK", ""),
        400 => ("Bad Request", "invalid_argument"),
        401 => ("Unauthorized", "unauthenticated"),
        403 => ("Forbidden", "permission_denied"),
        429 => ("Too Many Requests", "resource_exhausted"),
        503 => ("Service Unavailable", "unavailable"),
        _ => ("Error", "internal"),
    };
    let (content_type, body) = if code == 200 {
        // An empty PushResponse.
        ("application/proto", String::new())
    } else {
        ("application/json", format!(r#"{{"code":"{connect_code}","message":"{message}"}}"#))
    };
    let mut response =
        format!("HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(&body);
    let _ = writer.write_all(response.as_bytes());
    let _ = writer.flush();
}

/// Reads one request; `Ok(None)` at a clean end of the connection.
fn read_request(reader: &mut BufReader<TcpStream>) -> Result<Option<Request>, String> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(err) => return Err(format!("reading the request line: {err}")),
    }
    let request_line = line.strip_suffix("\r\n").ok_or_else(|| format!("request line not ended by CRLF: {line:?}"))?;
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, "HTTP/1.1"] = parts[..] else {
        return Err(format!("not an HTTP/1.1 request line: {request_line:?}"));
    };
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|err| format!("reading headers: {err}"))?;
        let line = line.strip_suffix("\r\n").ok_or_else(|| format!("header line not ended by CRLF: {line:?}"))?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or_else(|| format!("malformed header line {line:?}"))?;
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    if headers.iter().any(|(name, _)| name == "transfer-encoding") {
        return Err(format!("{target}: chunked request bodies are not expected, uploads have a known length"));
    }
    let lengths: Vec<&str> = headers.iter().filter(|(n, _)| n == "content-length").map(|(_, v)| v.as_str()).collect();
    let [length] = lengths[..] else {
        return Err(format!("{target}: expected exactly one Content-Length, got {lengths:?}"));
    };
    let length: usize = length.parse().map_err(|_| format!("{target}: bad Content-Length {length:?}"))?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).map_err(|err| format!("{target}: reading a {length}-byte body: {err}"))?;
    Ok(Some(Request {
        at: Instant::now(),
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
        body,
        answered: None,
    }))
}

// ---------------------------------------------------------------------------------------------------------------
// Decoding uploads

/// The Push API's messages (grafana/pyroscope api/push/v1/push.proto, types/v1/types.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<RawProfileSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RawProfileSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<RawSample>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RawSample {
    #[prost(bytes = "vec", tag = "1")]
    pub raw_profile: Vec<u8>,
    #[prost(string, tag = "2")]
    pub id: String,
}

/// What every upload must carry.
#[derive(Clone, Debug, Default)]
pub struct Expect {
    /// The whole `Authorization` header value (see [`basic_auth`]); `None`: the header must be absent.
    pub authorization: Option<String>,
    /// `X-Scope-OrgID`; `None`: absent.
    pub tenant: Option<String>,
}

/// One profile pushed through the Push API.
#[derive(Clone, Debug)]
pub struct Pushed {
    /// Series labels by name (each name at most once).
    pub labels: BTreeMap<String, String>,
    /// `RawSample.ID`.
    pub id: String,
    pub profile: proto::Profile,
}

/// One profile posted to /ingest.
#[derive(Clone, Debug)]
pub struct Ingested {
    /// The application name before `{`.
    pub app: String,
    /// The `{k=v,...}` part of `name`.
    pub tags: BTreeMap<String, String>,
    pub from: u64,
    pub until: u64,
    pub sample_rate: u64,
    pub spy_name: String,
    pub profile: proto::Profile,
}

/// The value of an `Authorization: Basic` header: standard base64 of `user:password`, by the base64 crate, not the
/// profiler's own encoder.
pub fn basic_auth(username: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")))
}

fn check_common(request: &Request, expect: &Expect) {
    let what = format!("{} {}", request.method, request.target);
    assert_eq!(request.method, "POST", "{what}");
    assert_eq!(request.header("authorization"), expect.authorization.as_deref(), "Authorization of {what}");
    assert_eq!(request.header("x-scope-orgid"), expect.tenant.as_deref(), "X-Scope-OrgID of {what}");
    assert_eq!(request.header("content-encoding"), None, "{what}: the body is sent as is");
    let agent = request.header("user-agent").unwrap_or_default();
    assert!(agent.starts_with("profiler/"), "{what}: User-Agent {agent:?}");
}

/// Decodes a Push API request strictly: exactly one series with one sample, as the profiler sends them.
pub fn decode_push(request: &Request, expect: &Expect) -> Pushed {
    check_common(request, expect);
    assert_eq!(request.target, "/push.v1.PusherService/Push", "the Push API path, no query");
    assert_eq!(request.header("content-type"), Some("application/proto"), "Connect unary with a binary protobuf body");
    assert_eq!(request.header("connect-protocol-version"), Some("1"));
    let message = PushRequest::decode(&request.body[..]).expect("the body is a PushRequest protobuf");
    assert_eq!(message.series.len(), 1, "one series per request");
    let series = &message.series[0];
    assert_eq!(series.samples.len(), 1, "one profile per series");
    let mut labels = BTreeMap::new();
    for label in &series.labels {
        let previous = labels.insert(label.name.clone(), label.value.clone());
        assert!(previous.is_none(), "label {} appears twice", label.name);
        assert!(!label.value.is_empty(), "label {} is empty", label.name);
    }
    let sample = &series.samples[0];
    Pushed { labels, id: sample.id.clone(), profile: decode_gzipped_pprof(&sample.raw_profile) }
}

/// Decodes an ingest API request strictly: the query parameters, the multipart body, the pprof.
pub fn decode_ingest(request: &Request, expect: &Expect) -> Ingested {
    check_common(request, expect);
    assert_eq!(request.path(), "/ingest");
    let query = request.query().expect("ingest parameters are in the query");
    let mut params = BTreeMap::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or_else(|| panic!("query pair without `=`: {pair}"));
        assert!(params.insert(percent_decode(key), percent_decode(value)).is_none(), "{key} given twice");
    }
    let keys: Vec<&str> = params.keys().map(String::as_str).collect();
    assert_eq!(keys, ["format", "from", "name", "sampleRate", "spyName", "until"], "ingest query parameters");
    assert_eq!(params["format"], "pprof");
    let name = &params["name"];
    let (app, rest) = name.split_once('{').unwrap_or_else(|| panic!("name {name:?} has no {{tags}}"));
    let tags_text = rest.strip_suffix('}').unwrap_or_else(|| panic!("name {name:?} does not end with }}"));
    let mut tags = BTreeMap::new();
    for pair in tags_text.split(',').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or_else(|| panic!("tag without `=`: {pair}"));
        assert!(tags.insert(key.to_owned(), value.to_owned()).is_none(), "tag {key} given twice");
    }

    let content_type = request.header("content-type").expect("Content-Type");
    let boundary = content_type
        .strip_prefix("multipart/form-data; boundary=")
        .unwrap_or_else(|| panic!("ingest Content-Type {content_type:?} is not multipart/form-data"));
    let profile = decode_gzipped_pprof(&multipart_profile(&request.body, boundary));
    let number =
        |key: &str| params[key].parse::<u64>().unwrap_or_else(|_| panic!("{key}={} is not a number", params[key]));
    Ingested {
        app: app.to_owned(),
        tags,
        from: number("from"),
        until: number("until"),
        sample_rate: number("sampleRate"),
        spy_name: params["spyName"].clone(),
        profile,
    }
}

/// The content of the only part, which must be the `profile` file field.
fn multipart_profile(body: &[u8], boundary: &str) -> Vec<u8> {
    let opening = format!("--{boundary}\r\n");
    let closing = format!("\r\n--{boundary}--\r\n");
    assert!(body.starts_with(opening.as_bytes()), "multipart body does not open with the boundary");
    assert!(body.ends_with(closing.as_bytes()), "multipart body does not close with the boundary");
    let inner = &body[opening.len()..body.len() - closing.len()];
    let split = inner.windows(4).position(|w| w == b"\r\n\r\n").expect("part headers end with an empty line");
    let headers = String::from_utf8(inner[..split].to_vec()).expect("part headers are text");
    let content = &inner[split + 4..];
    assert!(
        !content.windows(boundary.len()).any(|w| w == boundary.as_bytes()),
        "exactly one part (the boundary occurs inside it)"
    );
    let disposition = headers
        .lines()
        .find_map(|line| line.strip_prefix("Content-Disposition: "))
        .expect("the part has a Content-Disposition");
    assert!(disposition.starts_with("form-data; name=\"profile\""), "the part is the `profile` field: {disposition}");
    content.to_vec()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("percent escape");
                out.push(u8::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("bad percent escape %{hex}")));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("query text is UTF-8")
}

/// A pprof that must be gzipped, as the profiler sends it.
pub fn decode_gzipped_pprof(bytes: &[u8]) -> proto::Profile {
    assert_eq!(bytes.get(..2), Some(&[0x1f, 0x8b][..]), "the pprof is gzipped");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut raw).expect("the pprof gunzips");
    let profile = proto::Profile::decode(&raw[..]).expect("the pprof is a valid protobuf");
    crate::go_pprof::assert_go_pprof_reads_bytes(bytes);
    profile
}

// ---------------------------------------------------------------------------------------------------------------
// Reading a pprof

/// The string at index `i` of a pprof's string table.
pub fn string(profile: &proto::Profile, i: i64) -> &str {
    &profile.string_table[usize::try_from(i).expect("string index")]
}

/// Every function name in the profile's samples.
pub fn function_names(profile: &proto::Profile) -> std::collections::BTreeSet<String> {
    let functions: BTreeMap<u64, &proto::Function> = profile.function.iter().map(|f| (f.id, f)).collect();
    let locations: BTreeMap<u64, &proto::Location> = profile.location.iter().map(|l| (l.id, l)).collect();
    profile
        .sample
        .iter()
        .flat_map(|sample| &sample.location_id)
        .flat_map(|id| &locations[id].line)
        .map(|line| string(profile, functions[&line.function_id].name).to_owned())
        .collect()
}

/// The string values of the sample label `key`, across samples.
pub fn label_values(profile: &proto::Profile, key: &str) -> std::collections::BTreeSet<String> {
    profile
        .sample
        .iter()
        .flat_map(|sample| &sample.label)
        .filter(|label| string(profile, label.key) == key)
        .map(|label| string(profile, label.str).to_owned())
        .collect()
}

/// Checks the CPU conventions (sample and period type `cpu/nanoseconds`, the period, values = count × period)
/// and returns the number of samples the values stand for.
pub fn cpu_sample_count(profile: &proto::Profile, period_ns: i64) -> i64 {
    assert_eq!(profile.sample_type.len(), 1, "one sample type");
    let value_type =
        |vt: &proto::ValueType| (string(profile, vt.r#type).to_owned(), string(profile, vt.unit).to_owned());
    assert_eq!(value_type(&profile.sample_type[0]), ("cpu".into(), "nanoseconds".into()));
    let period_type = profile.period_type.as_ref().expect("a period type");
    assert_eq!(value_type(period_type), ("cpu".into(), "nanoseconds".into()));
    assert_eq!(profile.period, period_ns);
    profile
        .sample
        .iter()
        .map(|sample| {
            let [value] = sample.value[..] else { panic!("one value per sample, got {:?}", sample.value) };
            assert!(value > 0 && value % period_ns == 0, "value {value} is not a positive count × period {period_ns}");
            value / period_ns
        })
        .sum()
}

/// Now, in nanoseconds since the Unix epoch.
pub fn unix_now_ns() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("after 1970").as_nanos() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_base64_of_user_colon_password() {
        // As `printf 12345:sekrit-key | base64` prints it (and as the SDK sent it).
        assert_eq!(basic_auth("12345", "sekrit-key"), "Basic MTIzNDU6c2Vrcml0LWtleQ==");
        assert_eq!(basic_auth("a", "b"), "Basic YTpi");
        assert_eq!(basic_auth("ab", "c"), "Basic YWI6Yw==");
    }

    #[test]
    fn percent_decoding_handles_plus_and_escapes() {
        assert_eq!(percent_decode("app%7Benv%3Dprod%2Cregion%3Deu%7D"), "app{env=prod,region=eu}");
        assert_eq!(percent_decode("a+b"), "a b");
    }
}
