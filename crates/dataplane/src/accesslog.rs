//! Access logs: a listener's template ([`bowline_model::accesslog`]) compiled once per config
//! update, rendered once per request, and written by one background task per file so requests
//! never wait on disk. When a writer falls behind by more than [`QUEUE`] lines, lines are
//! dropped and counted rather than slowing requests down.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bowline_model::accesslog::{self, Token};
use bowline_model::ir;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, Method, StatusCode, Uri, Version};
use tokio::sync::mpsc;
use tracing::warn;

/// Lines a writer may have queued before new lines are dropped.
const QUEUE: usize = 8192;

/// A compiled access log of one listener.
#[derive(Debug)]
pub struct AccessLogger {
    format: Format,
    sink: Sink,
}

#[derive(Debug)]
enum Format {
    Text(Vec<Token>),
    Json(Vec<(String, Vec<Token>)>),
}

/// What a request looked like, captured before it is forwarded.
#[derive(Debug)]
pub struct RequestRecord {
    start: SystemTime,
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    peer: SocketAddr,
}

/// What the proxy did with it.
#[derive(Debug)]
pub struct Outcome<'a> {
    pub status: StatusCode,
    pub headers: &'a HeaderMap,
    pub duration: Duration,
    pub route: &'a str,
    pub upstream: Option<SocketAddr>,
}

impl AccessLogger {
    /// Compiles a listener's access log; the error names the bad template.
    pub fn compile(log: &ir::AccessLog) -> Result<AccessLogger, String> {
        let format = match &log.format {
            ir::AccessLogFormat::Text(t) => {
                let mut tokens = accesslog::parse(t).map_err(|e| format!("format.text: {e}"))?;
                if !t.ends_with('\n') {
                    tokens.push(Token::Literal("\n".into()));
                }
                Format::Text(tokens)
            }
            ir::AccessLogFormat::Json(fields) => Format::Json(
                fields
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        accesslog::parse(&f.value)
                            .map(|t| (f.key.clone(), t))
                            .map_err(|e| format!("format.json[{i}].value: {e}"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(AccessLogger {
            format,
            sink: Sink::for_path(&log.path),
        })
    }

    /// Captures the request (only listeners with an access log pay for this copy).
    pub fn capture(
        &self,
        req: &http::Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> RequestRecord {
        RequestRecord {
            start: SystemTime::now(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
            peer,
        }
    }

    /// Renders and queues one line.
    pub fn log(&self, req: &RequestRecord, out: &Outcome<'_>) {
        self.sink.send(self.line(req, out));
    }

    fn line(&self, req: &RequestRecord, out: &Outcome<'_>) -> String {
        self.format_line(|s, tokens| render(s, tokens, req, out))
    }

    /// One line in the log's format, each template rendered by `render`.
    fn format_line(&self, render: impl Fn(&mut String, &[Token])) -> String {
        let mut line = String::with_capacity(256);
        match &self.format {
            Format::Text(tokens) => render(&mut line, tokens),
            Format::Json(fields) => {
                let mut obj = serde_json::Map::with_capacity(fields.len());
                let mut value = String::new();
                for (key, tokens) in fields {
                    value.clear();
                    render(&mut value, tokens);
                    obj.insert(key.clone(), serde_json::Value::String(value.clone()));
                }
                line = serde_json::Value::Object(obj).to_string();
                line.push('\n');
            }
        }
        line
    }
}

fn render(out: &mut String, tokens: &[Token], req: &RequestRecord, o: &Outcome<'_>) {
    use std::fmt::Write as _;
    for t in tokens {
        match t {
            Token::Literal(s) => out.push_str(s),
            Token::StartTime => rfc3339(out, req.start),
            Token::Request {
                header,
                fallback,
                max_len,
            } => {
                let v = request_header(req, header)
                    .or_else(|| fallback.as_deref().and_then(|f| request_header(req, f)));
                push_limited(out, v.as_deref(), *max_len);
            }
            Token::Response {
                header,
                fallback,
                max_len,
            } => {
                let v = header_str(o.headers, header)
                    .or_else(|| fallback.as_deref().and_then(|f| header_str(o.headers, f)));
                push_limited(out, v, *max_len);
            }
            Token::Protocol => out.push_str(match req.version {
                Version::HTTP_09 => "HTTP/0.9",
                Version::HTTP_10 => "HTTP/1.0",
                Version::HTTP_11 => "HTTP/1.1",
                Version::HTTP_2 => "HTTP/2",
                _ => "HTTP/3",
            }),
            Token::ResponseCode => {
                let _ = write!(out, "{}", o.status.as_u16());
            }
            Token::Duration => {
                let _ = write!(out, "{}", o.duration.as_millis());
            }
            Token::ResponseFlags => {
                out.push_str(header_str(o.headers, "x-bowline-error").unwrap_or("-"))
            }
            Token::BytesReceived => {
                out.push_str(header_str(&req.headers, "content-length").unwrap_or("0"))
            }
            Token::BytesSent => out.push_str(
                o.headers
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("0"),
            ),
            Token::UpstreamHost => match o.upstream {
                Some(a) => {
                    let _ = write!(out, "{a}");
                }
                None => out.push('-'),
            },
            Token::RouteName => out.push_str(o.route),
            Token::DownstreamRemoteAddress => {
                let _ = write!(out, "{}", req.peer);
            }
            Token::DownstreamRemoteAddressWithoutPort => {
                let _ = write!(out, "{}", req.peer.ip());
            }
            Token::Hostname => out.push_str(hostname()),
        }
    }
}

fn request_header(req: &RequestRecord, name: &str) -> Option<String> {
    match name {
        ":method" => Some(req.method.as_str().to_string()),
        ":path" => req.uri.path_and_query().map(|p| p.as_str().to_string()),
        ":authority" => req
            .uri
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| header_str(&req.headers, "host").map(str::to_string)),
        ":scheme" => Some(req.uri.scheme_str().unwrap_or("http").to_string()),
        _ => header_str(&req.headers, name).map(str::to_string),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn push_limited(out: &mut String, v: Option<&str>, max: Option<usize>) {
    match v {
        None => out.push('-'),
        Some(v) => match max {
            Some(n) if v.len() > n => {
                let mut end = n;
                while !v.is_char_boundary(end) {
                    end -= 1;
                }
                out.push_str(&v[..end]);
            }
            _ => out.push_str(v),
        },
    }
}

fn hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "-".into())
    })
}

/// `2026-11-26T13:17:06.123Z`.
fn rfc3339(out: &mut String, t: SystemTime) {
    use std::fmt::Write as _;
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_millis()
    );
}

// === tcp connections ===

/// What a proxied tcp connection did, for its access-log line. HTTP operators (`%REQ(…)%`,
/// `%RESP(…)%`, `%PROTOCOL%`, `%RESPONSE_CODE%`) render as `-`, as in Envoy.
#[derive(Debug)]
pub struct TcpRecord<'a> {
    /// When the connection was accepted.
    pub start: SystemTime,
    pub peer: SocketAddr,
    /// The endpoint connected to, if any.
    pub upstream: Option<SocketAddr>,
    /// Bytes received from the client (and sent upstream).
    pub bytes_received: u64,
    /// Bytes sent to the client (received from upstream).
    pub bytes_sent: u64,
    /// From accept to close.
    pub duration: Duration,
    pub route: &'a str,
    /// Why the proxy ended or refused the connection (`%RESPONSE_FLAGS%`); `-` when the peers
    /// closed it.
    pub flags: &'a str,
}

impl AccessLogger {
    /// Renders and queues the line of one tcp connection.
    pub fn log_tcp(&self, r: &TcpRecord<'_>) {
        self.sink
            .send(self.format_line(|s, tokens| render_tcp(s, tokens, r)));
    }
}

fn render_tcp(out: &mut String, tokens: &[Token], r: &TcpRecord<'_>) {
    use std::fmt::Write as _;
    for t in tokens {
        match t {
            Token::Literal(s) => out.push_str(s),
            Token::StartTime => rfc3339(out, r.start),
            Token::Request { .. }
            | Token::Response { .. }
            | Token::Protocol
            | Token::ResponseCode => out.push('-'),
            Token::Duration => {
                let _ = write!(out, "{}", r.duration.as_millis());
            }
            Token::ResponseFlags => out.push_str(r.flags),
            Token::BytesReceived => {
                let _ = write!(out, "{}", r.bytes_received);
            }
            Token::BytesSent => {
                let _ = write!(out, "{}", r.bytes_sent);
            }
            Token::UpstreamHost => match r.upstream {
                Some(a) => {
                    let _ = write!(out, "{a}");
                }
                None => out.push('-'),
            },
            Token::RouteName => out.push_str(r.route),
            Token::DownstreamRemoteAddress => {
                let _ = write!(out, "{}", r.peer);
            }
            Token::DownstreamRemoteAddressWithoutPort => {
                let _ = write!(out, "{}", r.peer.ip());
            }
            Token::Hostname => out.push_str(hostname()),
        }
    }
}

// === sinks ===

/// A queue to the writer task of one path. Shared by every listener logging to that path.
#[derive(Clone, Debug)]
struct Sink {
    tx: mpsc::Sender<String>,
    dropped: Arc<AtomicU64>,
}

impl Sink {
    fn for_path(path: &str) -> Sink {
        static SINKS: OnceLock<Mutex<HashMap<String, Sink>>> = OnceLock::new();
        let mut sinks = SINKS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = sinks.get(path)
            && !s.tx.is_closed()
        {
            return s.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let sink = Sink {
            tx,
            dropped: Arc::default(),
        };
        let path_owned = path.to_string();
        let dropped = sink.dropped.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(&path_owned, rx, &dropped))
            .expect("spawn the access-log writer");
        sinks.insert(path.to_string(), sink.clone());
        sink
    }

    fn send(&self, line: String) {
        if self.tx.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Writes lines to `path` until every sender is gone. Runs on its own thread: file writes block.
fn write_loop(path: &str, mut rx: mpsc::Receiver<String>, dropped: &AtomicU64) {
    let mut out: Box<dyn Write + Send> = match path {
        "/dev/stdout" => Box::new(std::io::stdout()),
        "/dev/stderr" => Box::new(std::io::stderr()),
        _ => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => Box::new(std::io::BufWriter::new(f)),
            Err(error) => {
                warn!(path, %error, "cannot open the access log; its lines are dropped");
                while rx.blocking_recv().is_some() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        },
    };
    while let Some(line) = rx.blocking_recv() {
        let _ = out.write_all(line.as_bytes());
        // Flush when the queue is empty: batches under load, prompt when idle.
        if rx.is_empty() {
            let _ = out.flush();
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            warn!(
                path,
                lost, "access-log lines dropped: the writer fell behind"
            );
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> RequestRecord {
        let mut headers = HeaderMap::new();
        headers.insert("user-agent", "curl/8".parse().unwrap());
        headers.insert("host", "shop.example".parse().unwrap());
        RequestRecord {
            start: UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
            method: Method::GET,
            uri: "/color?x=1".parse().unwrap(),
            version: Version::HTTP_11,
            headers,
            peer: "10.0.0.1:5555".parse().unwrap(),
        }
    }

    fn line(template: &str) -> String {
        let mut h = HeaderMap::new();
        h.insert("content-length", "42".parse().unwrap());
        let out = Outcome {
            status: StatusCode::OK,
            headers: &h,
            duration: Duration::from_millis(7),
            route: "gatewayroute/shop/color",
            upstream: Some("127.0.0.1:9000".parse().unwrap()),
        };
        let mut s = String::new();
        render(
            &mut s,
            &accesslog::parse(template).unwrap(),
            &record(),
            &out,
        );
        s
    }

    #[test]
    fn renders_envoy_operators() {
        assert_eq!(
            line(
                "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_SENT% %DURATION% \"%REQ(USER-AGENT)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %ROUTE_NAME% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"
            ),
            "[2026-11-18T11:06:40.123Z] \"GET /color?x=1 HTTP/1.1\" 200 - 42 7 \"curl/8\" \"shop.example\" \"127.0.0.1:9000\" gatewayroute/shop/color 10.0.0.1"
        );
        assert_eq!(line("%REQ(user-agent):4%|%REQ(x-missing)%"), "curl|-");
    }

    #[test]
    fn json_format_escapes_values() {
        let log = AccessLogger {
            format: Format::Json(vec![
                ("protocol".into(), accesslog::parse("%PROTOCOL%").unwrap()),
                (
                    "agent".into(),
                    accesslog::parse("say \"%REQ(user-agent)%\"").unwrap(),
                ),
            ]),
            sink: Sink::for_path("/dev/null"),
        };
        let h = HeaderMap::new();
        let out = Outcome {
            status: StatusCode::OK,
            headers: &h,
            duration: Duration::ZERO,
            route: "r",
            upstream: None,
        };
        assert_eq!(
            log.line(&record(), &out),
            "{\"agent\":\"say \\\"curl/8\\\"\",\"protocol\":\"HTTP/1.1\"}\n"
        );
    }

    #[test]
    fn a_bad_template_names_the_field() {
        let err = AccessLogger::compile(&ir::AccessLog {
            path: "/dev/null".into(),
            format: ir::AccessLogFormat::Json(vec![ir::JsonLogField {
                key: "k".into(),
                value: "%NOPE%".into(),
            }]),
        })
        .unwrap_err();
        assert!(err.starts_with("format.json[0].value: %NOPE%"), "{err}");
    }

    #[test]
    fn start_time_is_rfc3339_utc() {
        let mut s = String::new();
        rfc3339(&mut s, UNIX_EPOCH + Duration::from_millis(951_782_400_000));
        assert_eq!(s, "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn tcp_lines_render_connection_operators_and_dash_for_http_ones() {
        let r = TcpRecord {
            start: UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
            peer: "10.0.0.1:5555".parse().unwrap(),
            upstream: Some("127.0.0.1:9000".parse().unwrap()),
            bytes_received: 12,
            bytes_sent: 1_048_576,
            duration: Duration::from_millis(1500),
            route: "gatewayroute/shop/db",
            flags: "idle_timeout",
        };
        let mut s = String::new();
        render_tcp(
            &mut s,
            &accesslog::parse(
                "[%START_TIME%] %DOWNSTREAM_REMOTE_ADDRESS% -> %UPSTREAM_HOST% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESPONSE_FLAGS% %ROUTE_NAME% \"%REQ(:METHOD)%\" %PROTOCOL% %RESPONSE_CODE% %RESP(x)%",
            )
            .unwrap(),
            &r,
        );
        assert_eq!(
            s,
            "[2026-11-18T11:06:40.123Z] 10.0.0.1:5555 -> 127.0.0.1:9000 12 1048576 1500 idle_timeout gatewayroute/shop/db \"-\" - - -"
        );
    }
}
