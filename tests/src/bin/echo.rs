//! `bowline-echo`: a tiny upstream for the quickstart and the end-to-end tests.
//!
//! It answers every request with its own name and what it received, as JSON:
//! `{"name":"blue","method":"GET","path":"/x?y=1","host":"...","version":"HTTP/1.1","headers":{...},"bodyBytes":0}`
//! and a header `x-echo-name`. It speaks HTTP/1.1 and HTTP/2 (h2c prior knowledge) on one port.
//! On start it prints `listening on ADDR` on stdout, so it can be started on port 0.
//!
//! With `--tls-cert` and `--tls-key` (PEM files) it serves TLS instead (TLS 1.2 and 1.3, ALPN
//! `h2` and `http/1.1`), and the answer also carries `"tls": {"sni": ..., "alpn": ...}`
//! (`"tls": null` in plaintext).
//! With `--delay-ms MS` every answer waits MS milliseconds (a slow pod).
//! For resilience tests, path segments choose the answer: `/delay/MS` waits MS milliseconds and
//! `/status/N` answers status N (they combine: `/delay/300/status/503`). Paths under `/__echo/`
//! are its own and are not counted: `/__echo/health` answers 200; `/__echo/hold` waits until
//! `/__echo/release` is requested; `/__echo/stats` reports
//! `{"requests":N,"retries":N,"held":N,"maxConcurrentRetries":N,"grpcCalls":N}` (a retry is a
//! request with `x-bowline-attempt` of 2 or more); after `/__echo/fault` every other request
//! gets 500 (as the App Mesh walkthroughs' colorapp `/fault`), until `/__echo/recover`.
//!
//! A gRPC call (`content-type: application/grpc…`, one length-prefixed message) is answered in
//! gRPC terms: the message echoed back, length-prefixed, with `grpc-status: 0` in the trailers.
//! With `--grpc-unavailable N`, the first N calls instead get a trailers-only `grpc-status: 14`
//! (UNAVAILABLE); a malformed message gets 13 (INTERNAL). Every gRPC answer carries
//! `x-echo-attempt`, the call's `x-bowline-attempt` (1 when absent), `x-echo-path`, the call's
//! path (`/package.Service/Method`), and `x-echo-headers`, the call's request headers as the JSON
//! object of `"headers"` above.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Counters of `/__echo/stats`.
#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    retries: AtomicU64,
    retries_in_flight: AtomicU64,
    max_concurrent_retries: AtomicU64,
    held: AtomicU64,
    release: Notify,
    grpc_calls: AtomicU64,
    /// Set by `/__echo/fault`, cleared by `/__echo/recover`.
    faulty: std::sync::atomic::AtomicBool,
    /// `--grpc-unavailable`.
    grpc_unavailable: AtomicU64,
    /// `--delay-ms`.
    delay_ms: AtomicU64,
}

static STATS: std::sync::LazyLock<Stats> = std::sync::LazyLock::new(Stats::default);

/// Counts a retry in flight until dropped.
struct RetryInFlight;

impl RetryInFlight {
    fn start() -> RetryInFlight {
        let now = STATS.retries_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        STATS
            .max_concurrent_retries
            .fetch_max(now, Ordering::SeqCst);
        RetryInFlight
    }
}

impl Drop for RetryInFlight {
    fn drop(&mut self) {
        STATS.retries_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "bowline-echo",
    about = "An upstream that echoes what it received"
)]
struct Args {
    /// Name reported in every answer.
    #[arg(long, env = "ECHO_NAME", default_value = "echo")]
    name: String,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "ECHO_LISTEN", default_value = "127.0.0.1:0")]
    listen: Vec<SocketAddr>,
    /// PEM certificate chain: serve TLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Answer the first N gRPC calls with a trailers-only UNAVAILABLE (grpc-status 14).
    #[arg(long, env = "ECHO_GRPC_UNAVAILABLE", default_value_t = 0)]
    grpc_unavailable: u64,
    /// Wait this many milliseconds before every answer (a slow pod; `/delay/MS` adds to it).
    #[arg(long, env = "ECHO_DELAY_MS", default_value_t = 0)]
    delay_ms: u64,
}

/// What the answer reports about the connection's TLS.
#[derive(Clone, Debug)]
struct TlsInfo {
    sni: Option<String>,
    alpn: Option<String>,
}

fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    STATS
        .grpc_unavailable
        .store(args.grpc_unavailable, Ordering::SeqCst);
    STATS.delay_ms.store(args.delay_ms, Ordering::SeqCst);
    let name: &'static str = Box::leak(args.name.into_boxed_str());
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    let mut tasks = Vec::new();
    for addr in args.listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        println!("listening on {}", listener.local_addr()?);
        tasks.push(tokio::spawn(serve(listener, name, tls.clone())));
    }
    tokio::select! {
        _ = futures_wait(tasks) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

async fn futures_wait(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

async fn serve(listener: TcpListener, name: &'static str, tls: Option<tokio_rustls::TlsAcceptor>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            match tls {
                None => {
                    let svc = hyper::service::service_fn(move |req| answer(req, name, None));
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                }
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let conn = stream.get_ref().1;
                    let info = TlsInfo {
                        sni: conn.server_name().map(str::to_string),
                        alpn: conn
                            .alpn_protocol()
                            .map(|p| String::from_utf8_lossy(p).into_owned()),
                    };
                    let svc = hyper::service::service_fn(move |req| {
                        answer(req, name, Some(info.clone()))
                    });
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                }
            }
        });
    }
}

/// An answer's body: a whole body, or a gRPC answer (a message, then trailers).
type EchoBody = Either<Full<Bytes>, GrpcBody>;

async fn answer(
    mut req: Request<Incoming>,
    name: &'static str,
    tls: Option<TlsInfo>,
) -> Result<Response<EchoBody>, Infallible> {
    if let Some(resp) = websocket(&mut req, name) {
        return Ok(resp.map(Either::Left));
    }
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    if let Some(own) = path.strip_prefix("/__echo/") {
        return Ok(own_answer(own, name).await.map(Either::Left));
    }
    STATS.requests.fetch_add(1, Ordering::SeqCst);
    let slow = STATS.delay_ms.load(Ordering::SeqCst);
    if slow > 0 {
        tokio::time::sleep(Duration::from_millis(slow)).await;
    }
    let attempt: u64 = parts
        .headers
        .get("x-bowline-attempt")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(1);
    let _retry = (attempt >= 2).then(|| {
        STATS.retries.fetch_add(1, Ordering::SeqCst);
        RetryInFlight::start()
    });
    let grpc = parts
        .headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        return Ok(grpc_answer(&parts, body, name, attempt)
            .await
            .map(Either::Right));
    }
    let mut status = if STATS.faulty.load(Ordering::SeqCst) {
        500
    } else {
        200u16
    };
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    while let Some(seg) = segments.next() {
        match (
            seg,
            segments.clone().next().and_then(|v| v.parse::<u64>().ok()),
        ) {
            ("delay", Some(ms)) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                segments.next();
            }
            ("status", Some(n)) => {
                status = u16::try_from(n).unwrap_or(500);
                segments.next();
            }
            _ => {}
        }
    }
    let body_bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let headers = header_map(&parts.headers);
    let host = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| headers.get("host").and_then(|h| h.first().cloned()))
        .unwrap_or_default();
    let report = serde_json::json!({
        "name": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "host": host,
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "bodyBytes": body_bytes,
        "tls": tls.map(|t| serde_json::json!({"sni": t.sni, "alpn": t.alpn})),
    });
    let mut body = serde_json::to_vec(&report).unwrap_or_default();
    body.push(b'\n');
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-echo-name", name)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
        .map(Either::Left))
}

// === gRPC ===

/// The body of a gRPC answer: one length-prefixed message (none for a trailers-only answer),
/// then the trailers.
#[derive(Default)]
struct GrpcBody {
    message: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl hyper::body::Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match self.message.take() {
            Some(m) => Some(Frame::data(m)),
            None => self.trailers.take().map(Frame::trailers),
        };
        Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.message.is_none() && self.trailers.is_none()
    }
}

/// The one message of a unary gRPC request body: a 0 (uncompressed) flag byte, a big-endian
/// length, that many bytes, nothing more.
fn grpc_message(body: &[u8]) -> Option<&[u8]> {
    let (head, message) = body.split_first_chunk::<5>()?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    (head[0] == 0 && usize::try_from(len).ok()? == message.len()).then_some(message)
}

/// Request headers by name, each with its values in order.
fn header_map(headers: &http::HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut map = BTreeMap::new();
    for (k, v) in headers {
        map.entry(k.as_str().to_string())
            .or_insert_with(Vec::new)
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    map
}

/// Answers a unary gRPC call (see the module documentation).
async fn grpc_answer(
    parts: &http::request::Parts,
    body: Incoming,
    name: &'static str,
    attempt: u64,
) -> Response<GrpcBody> {
    let call = STATS.grpc_calls.fetch_add(1, Ordering::SeqCst);
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let resp = Response::builder()
        .header("content-type", "application/grpc")
        .header("x-echo-name", name)
        .header("x-echo-attempt", attempt)
        .header("x-echo-path", parts.uri.path())
        .header(
            "x-echo-headers",
            serde_json::to_string(&header_map(&parts.headers)).unwrap_or_default(),
        );
    let answer = match grpc_message(&body) {
        None => Err(("13", "malformed gRPC message")),
        Some(_) if call < STATS.grpc_unavailable.load(Ordering::SeqCst) => {
            Err(("14", "echo: unavailable"))
        }
        Some(message) => Ok(message),
    };
    match answer {
        // Trailers-only: the status goes with the headers, and the stream ends there.
        Err((status, why)) => resp
            .header("grpc-status", status)
            .header("grpc-message", why)
            .body(GrpcBody::default()),
        Ok(message) => {
            let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
            let mut framed = Vec::with_capacity(5 + message.len());
            framed.push(0);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(message);
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            resp.body(GrpcBody {
                message: Some(Bytes::from(framed)),
                trailers: Some(trailers),
            })
        }
    }
    .unwrap_or_default()
}

/// A WebSocket handshake: answers 101 and echoes every text message back, prefixed with the name.
fn websocket(req: &mut Request<Incoming>, name: &'static str) -> Option<Response<Full<Bytes>>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;

    let wants = req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if !wants {
        return None;
    }
    let accept = derive_accept_key(req.headers().get("sec-websocket-key")?.as_bytes());
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            let reply = match msg {
                Message::Text(t) => Message::text(format!("{name}: {t}")),
                Message::Close(_) => break,
                other => other,
            };
            if ws.send(reply).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(101)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .header("x-echo-name", name)
        .body(Full::new(Bytes::new()))
        .ok()
}

/// The echo's own paths (not counted).
async fn own_answer(path: &str, name: &'static str) -> Response<Full<Bytes>> {
    let json = match path {
        "hold" => {
            let released = STATS.release.notified();
            STATS.held.fetch_add(1, Ordering::SeqCst);
            released.await;
            STATS.held.fetch_sub(1, Ordering::SeqCst);
            serde_json::json!({"name": name, "held": true})
        }
        "release" => {
            STATS.release.notify_waiters();
            serde_json::json!({"name": name, "released": true})
        }
        "fault" | "recover" => {
            STATS.faulty.store(path == "fault", Ordering::SeqCst);
            serde_json::json!({"name": name, "faulty": path == "fault"})
        }
        "stats" => serde_json::json!({
            "name": name,
            "requests": STATS.requests.load(Ordering::SeqCst),
            "retries": STATS.retries.load(Ordering::SeqCst),
            "held": STATS.held.load(Ordering::SeqCst),
            "maxConcurrentRetries": STATS.max_concurrent_retries.load(Ordering::SeqCst),
            "grpcCalls": STATS.grpc_calls.load(Ordering::SeqCst),
        }),
        _ => serde_json::json!({"name": name}),
    };
    let mut body = json.to_string().into_bytes();
    body.push(b'\n');
    Response::builder()
        .header("content-type", "application/json")
        .header("x-echo-name", name)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::grpc_message;

    #[test]
    fn grpc_messages_are_length_prefixed_and_uncompressed() {
        assert_eq!(grpc_message(b"\0\0\0\0\x02hi"), Some(&b"hi"[..]));
        assert_eq!(grpc_message(b"\0\0\0\0\0"), Some(&b""[..]));
        // Compressed, short, long, or two messages: not a unary uncompressed call.
        assert_eq!(grpc_message(b"\x01\0\0\0\x02hi"), None);
        assert_eq!(grpc_message(b"\0\0\0\0\x03hi"), None);
        assert_eq!(grpc_message(b"\0\0\0\0\x01hi"), None);
        assert_eq!(grpc_message(b"\0\0\0"), None);
    }
}
