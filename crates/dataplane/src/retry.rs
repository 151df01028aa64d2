//! Sending a request to a cluster: the attempt loop around the upstream send, with App Mesh's
//! retry policy.
//!
//! * **What is retried** (App Mesh events): `server-error` 500–508, 510, 511; `gateway-error`
//!   502–504; `client-error` 409; both `server-error` and `gateway-error` also retry an attempt
//!   that got no response (connect failure, reset, per-try timeout: Envoy's `reset`);
//!   `stream-error` an HTTP/2 `REFUSED_STREAM`; `connection-error` a failed connect; the gRPC
//!   events the `grpc-status` of a trailers-only response (1, 4, 13, 8, 14). A circuit breaker
//!   overflow and the route's own timeout are never retried.
//! * **Which requests**: only those whose body can be sent again: no body, or a body of at most
//!   [`REPLAY_LIMIT`] bytes. A body of known length (`Content-Length`) is read before the first
//!   attempt. Of one of unknown length (chunked, HTTP/2 streams such as gRPC calls) what has
//!   already arrived is read first (a unary gRPC call usually arrives whole), and the rest is
//!   kept while it streams to the first attempt: such a body cannot be replayed if it grows
//!   beyond the limit, or if that attempt ended before the rest arrived (an upstream that
//!   answered early). An attempt that found no connection (refused, timed out, TLS failed)
//!   never wrote its request: the request comes back untouched and is the retry, whatever its
//!   body (streamed, large, teed for a mirror), without reading it.
//! * **Where**: to another endpoint when there is one (the endpoints tried are skipped).
//! * **When**: after a fully jittered exponential backoff, like Envoy's: a random wait up to
//!   25 ms × (2ⁿ − 1) for retry n, at most 250 ms; never past the route's timeout.
//! * **How many**: at most `maxRetries`, and the cluster's retry budget (Envoy's defaults):
//!   retries in flight stay below 20 % of the cluster's requests in flight, or 3 when that is
//!   more. Retries therefore cannot multiply the load on a failing cluster.
//!
//! Every attempt (the first included) takes the cluster's circuit-breaker permits, is counted
//! in flight on its endpoint, is bounded by `perRetryTimeout` and the stream idle timeout until
//! its response headers arrive, and feeds outlier detection. A retried attempt carries
//! `x-bowline-attempt: N` (2 for the first retry).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bowline_model::ir;
use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;
use tokio::time::error::Elapsed;

use crate::breaker::Overflow;
use crate::lb::{RequestKey, Tried, random_u64};
use crate::metrics::UpstreamErrorReason;
use crate::proxy::ProxyError;
use crate::resilience::{ClusterState, Guards, TrackedBody};
use crate::router::{Cluster, Endpoint, Forward};
use crate::upstream::{Recorded, RecordedSlot, SendError, UpstreamBody, UpstreamError};

/// Largest request body kept for a retry (the size of Envoy's default request buffer).
pub const REPLAY_LIMIT: usize = 64 * 1024;
/// First backoff bound.
pub const BACKOFF_BASE: Duration = Duration::from_millis(25);
/// Largest backoff (10 × the base, as Envoy).
pub const BACKOFF_MAX: Duration = Duration::from_millis(250);
/// Retry budget: retries in flight as a share of requests in flight, in percent.
pub const BUDGET_PERCENT: usize = 20;
/// Retry budget: retries in flight always allowed.
pub const MIN_RETRY_CONCURRENCY: usize = 3;

/// Header of a retried attempt: the attempt's number (2 for the first retry).
pub static X_BOWLINE_ATTEMPT: HeaderName = HeaderName::from_static("x-bowline-attempt");

// === RetryPolicy ===

/// A compiled [`ir::RetryPolicy`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub per_try_timeout: Option<Duration>,
    on: u16,
}

fn bit(e: ir::RetryOn) -> u16 {
    1 << (e as u16)
}

impl RetryPolicy {
    pub fn compile(r: &ir::RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            max_retries: r.max_retries,
            per_try_timeout: r.per_retry_timeout_ms.map(Duration::from_millis),
            on: r.retry_on.iter().fold(0, |acc, e| acc | bit(*e)),
        }
    }

    fn has(&self, e: ir::RetryOn) -> bool {
        self.on & bit(e) != 0
    }

    /// Whether a response is retried.
    pub fn retries_response(&self, status: u16, headers: &HeaderMap) -> bool {
        use ir::RetryOn::*;
        let by_status = match status {
            409 => self.has(ClientError),
            502..=504 => self.has(ServerError) || self.has(GatewayError),
            500..=508 | 510 | 511 => self.has(ServerError),
            _ => false,
        };
        by_status || self.retries_grpc(headers)
    }

    /// A trailers-only gRPC response: `grpc-status` among the response headers.
    fn retries_grpc(&self, headers: &HeaderMap) -> bool {
        use ir::RetryOn::*;
        let grpc = headers
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if !grpc {
            return false;
        }
        let event = match headers.get("grpc-status").map(HeaderValue::as_bytes) {
            Some(b"1") => Cancelled,
            Some(b"4") => DeadlineExceeded,
            Some(b"8") => ResourceExhausted,
            Some(b"13") => Internal,
            Some(b"14") => Unavailable,
            _ => return false,
        };
        self.has(event)
    }

    /// Whether an attempt that got no response is retried.
    fn retries_failure(&self, f: &Failure) -> bool {
        use ir::RetryOn::*;
        let no_response = self.has(ServerError) || self.has(GatewayError);
        match f {
            Failure::Overflow(_) | Failure::Deadline | Failure::RequestBody(_) => false,
            Failure::TryTimeout(_) => no_response,
            Failure::Upstream(e) => match &e.error {
                UpstreamError::ConnectRefused { .. }
                | UpstreamError::ConnectTimeout { .. }
                | UpstreamError::Connect { .. } => no_response || self.has(ConnectionError),
                UpstreamError::Reset { .. } => {
                    no_response || (self.has(StreamError) && refused_stream(&e.error))
                }
                UpstreamError::SendTimeout { .. } => no_response,
            },
        }
    }
}

/// Whether the upstream refused the HTTP/2 stream (it did not process the request).
pub fn refused_stream(e: &UpstreamError) -> bool {
    let UpstreamError::Reset { source, .. } = e else {
        return false;
    };
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
    while let Some(err) = cur {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        cur = err.source();
    }
    false
}

/// The backoff before retry `n` (1-based), from a uniform draw.
pub fn backoff(n: u32, draw: u64) -> Duration {
    let factor = (1u64 << n.min(16)) - 1;
    let bound = (BACKOFF_BASE.as_millis() as u64)
        .saturating_mul(factor)
        .min(BACKOFF_MAX.as_millis() as u64);
    Duration::from_millis(crate::lb::below(draw, bound + 1))
}

/// A retry in flight, counted against the cluster's budget until dropped.
#[derive(Debug)]
pub struct RetryPermit(Arc<ClusterState>);

impl RetryPermit {
    /// A retry slot if the budget has one.
    pub fn take(state: &Arc<ClusterState>) -> Option<RetryPermit> {
        let active = state.active.load(Ordering::Relaxed);
        let allowed = (active * BUDGET_PERCENT / 100).max(MIN_RETRY_CONCURRENCY);
        let prev = state.retries.fetch_add(1, Ordering::AcqRel);
        if prev >= allowed {
            state.retries.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(RetryPermit(state.clone()))
    }
}

impl Drop for RetryPermit {
    fn drop(&mut self) {
        self.0.retries.fetch_sub(1, Ordering::AcqRel);
    }
}

// === the attempt loop ===

/// Why an attempt got no response.
#[derive(Debug)]
enum Failure {
    Overflow(Overflow),
    /// The request's own timeout (route or cluster).
    Deadline,
    /// `perRetryTimeout` or the idle timeout, before the response headers.
    TryTimeout(Duration),
    /// No response; the request itself when it was never written.
    Upstream(SendError),
    /// The client's body could not be read (before the first attempt).
    RequestBody(String),
}

/// How the request can be sent again.
enum Replay {
    Never,
    Empty,
    /// Read before the first attempt.
    Read(Recorded),
    /// Being recorded by the first attempt.
    Recorded(RecordedSlot),
}

impl Replay {
    fn ready(&self) -> bool {
        match self {
            Replay::Never => false,
            Replay::Empty | Replay::Read(_) => true,
            Replay::Recorded(slot) => slot.get().is_some(),
        }
    }

    fn body(&self) -> UpstreamBody {
        match self {
            Replay::Read(r) => UpstreamBody::replay(r),
            Replay::Recorded(slot) => slot
                .get()
                .map_or_else(UpstreamBody::empty, UpstreamBody::replay),
            Replay::Never | Replay::Empty => UpstreamBody::empty(),
        }
    }
}

/// What [`read_available`] found.
enum Available {
    /// The whole body, within [`REPLAY_LIMIT`].
    All(Recorded),
    /// What was read, and the rest to stream.
    Some(Vec<Bytes>, Incoming),
}

/// Reads the frames of `body` that have already arrived, without waiting.
fn read_available(mut body: Incoming) -> Result<Available, String> {
    let mut chunks = Vec::new();
    let mut size = 0;
    let mut trailers = None;
    loop {
        match body.frame().now_or_never() {
            None => return Ok(Available::Some(chunks, body)),
            Some(None) => break,
            Some(Some(Err(e))) => return Err(e.to_string()),
            Some(Some(Ok(frame))) => {
                match frame.into_data() {
                    Ok(data) => {
                        size += data.len();
                        chunks.push(data);
                    }
                    Err(frame) => trailers = frame.into_trailers().ok(),
                }
                if size > REPLAY_LIMIT {
                    return Ok(Available::Some(chunks, body));
                }
                if body.is_end_stream() {
                    break;
                }
            }
        }
    }
    let data = match chunks.len() {
        1 => chunks.pop().unwrap_or_default(),
        _ => chunks.concat().into(),
    };
    Ok(Available::All(Recorded { data, trailers }))
}

/// Reads a whole request body (of a length known to be small) within the request's deadline.
async fn read_body(body: Incoming, deadline: Option<Instant>) -> Result<Recorded, Failure> {
    let collect = body.collect();
    let collected = match deadline {
        None => collect.await,
        Some(d) => tokio::time::timeout_at(d, collect)
            .await
            .map_err(|_| Failure::Deadline)?,
    }
    .map_err(|e| Failure::RequestBody(e.to_string()))?;
    let trailers = collected.trailers().cloned();
    Ok(Recorded {
        data: collected.to_bytes(),
        trailers,
    })
}

/// The request head, kept to build retries.
struct Template {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Template {
    /// The request again (the URI is origin-form for HTTP/1.1 and carries the virtual host for
    /// HTTP/2, whichever endpoint it goes to).
    fn build(&self, body: UpstreamBody, attempt: u32) -> Request<UpstreamBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        *req.uri_mut() = self.uri.clone();
        req.headers_mut()
            .insert(&X_BOWLINE_ATTEMPT, HeaderValue::from(attempt + 1));
        req
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn shortest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Sends `req` (built for the endpoint `first` of `cluster`) with the route's retry policy and
/// the cluster's limits; `start` is when the request arrived.
pub async fn send(
    cluster: &Cluster,
    fwd: &Forward,
    first: usize,
    key: &RequestKey,
    req: Request<UpstreamBody>,
    start: Instant,
    client_timeout: Option<Duration>,
) -> Result<Response<TrackedBody>, ProxyError> {
    let policy = &cluster.resilience;
    let retry = fwd.retry.as_ref();
    // The route's, the cluster's and the client's own deadline (gRPC `grpc-timeout`): shortest wins.
    let total = shortest(
        shortest(fwd.timeout, policy.request_timeout),
        client_timeout,
    );
    let deadline = total.map(|t| start + t);
    let active = policy.state.start();
    if retry.is_none() {
        // No retry policy: one attempt, without the template and replay bookkeeping of
        // `attempts` (and the moves of the request they cost).
        let idle = shortest(fwd.idle_timeout, policy.idle_timeout);
        let endpoints = cluster.endpoints();
        let result = attempt_once(cluster, &endpoints[first], req, None, idle, deadline).await;
        record(cluster, endpoints, first, &result);
        return finish(cluster, total, idle, active, result);
    }

    let (parts, body) = req.into_parts();
    let max_retries = retry.map_or(0, |r| r.max_retries);
    let (body, replay) = match body {
        // A body teed for a mirror (or held by the proxy) has one reader: it is not replayed.
        other
        @ (UpstreamBody::Recording(..) | UpstreamBody::Tee(_) | UpstreamBody::Full { .. }) => {
            let replay = if other.is_end_stream() {
                Replay::Empty
            } else {
                Replay::Never
            };
            (other, replay)
        }
        UpstreamBody::Streaming(body) if max_retries == 0 => {
            (UpstreamBody::from(body), Replay::Never)
        }
        UpstreamBody::Streaming(body) if body.is_end_stream() => {
            (UpstreamBody::empty(), Replay::Empty)
        }
        UpstreamBody::Streaming(body) => match content_length(&parts.headers) {
            Some(n) if n > REPLAY_LIMIT as u64 => (UpstreamBody::from(body), Replay::Never),
            // Boxed: only requests with a body and a retry policy read it first.
            Some(_) => match Box::pin(read_body(body, deadline)).await {
                Ok(read) => (UpstreamBody::replay(&read), Replay::Read(read)),
                Err(Failure::RequestBody(reason)) => {
                    return Err(ProxyError::RequestBody { reason });
                }
                Err(_) => return Err(timeout(cluster, total)),
            },
            None => match read_available(body) {
                Ok(Available::All(read)) => (UpstreamBody::replay(&read), Replay::Read(read)),
                Ok(Available::Some(prefix, rest)) => {
                    let (body, slot) = UpstreamBody::recording(prefix, rest, REPLAY_LIMIT);
                    (body, Replay::Recorded(slot))
                }
                Err(reason) => return Err(ProxyError::RequestBody { reason }),
            },
        },
    };
    attempts(
        cluster, fwd, first, key, total, deadline, parts, body, replay, active,
    )
    .await
}

/// The attempts of one request: the first on `first`, retries (when the policy, the budget and
/// the body allow) on other endpoints.
#[allow(clippy::too_many_arguments)]
async fn attempts(
    cluster: &Cluster,
    fwd: &Forward,
    first: usize,
    key: &RequestKey,
    total: Option<Duration>,
    deadline: Option<Instant>,
    parts: http::request::Parts,
    body: UpstreamBody,
    replay: Replay,
    active: crate::resilience::Active,
) -> Result<Response<TrackedBody>, ProxyError> {
    let policy = &cluster.resilience;
    let endpoints = cluster.endpoints();
    let retry = fwd.retry.as_ref();
    let idle = shortest(fwd.idle_timeout, policy.idle_timeout);
    let per_try = retry.and_then(|r| r.per_try_timeout);
    let max_retries = retry.map_or(0, |r| r.max_retries);
    let template = (!matches!(replay, Replay::Never)).then(|| Template {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
    });
    let mut next = Some(Request::from_parts(parts, body));

    let mut ep = first;
    let mut tried = Tried::NONE;
    let mut attempt = 0u32;
    let mut retrying: Option<RetryPermit> = None;
    loop {
        tried.insert(ep);
        let endpoint = &endpoints[ep];
        let req = match (next.take(), &template) {
            (Some(mut req), _) => {
                if attempt > 0 {
                    req.headers_mut()
                        .insert(&X_BOWLINE_ATTEMPT, HeaderValue::from(attempt + 1));
                }
                req
            }
            (None, Some(t)) => t.build(replay.body(), attempt),
            (None, None) => unreachable!("a retry needs a template or an unsent request"),
        };
        let mut result = attempt_once(cluster, endpoint, req, per_try, idle, deadline).await;
        drop(retrying.take());
        // A request that found no connection was never written: it can go again as it is.
        let unsent = match &mut result {
            Err(Failure::Upstream(e)) => e.unsent.take(),
            _ => None,
        };

        record(cluster, endpoints, ep, &result);

        let wants_retry = retry.is_some_and(|r| match &result {
            Ok((resp, _)) => r.retries_response(resp.status().as_u16(), resp.headers()),
            Err(f) => r.retries_failure(f),
        });
        let expired = deadline.is_some_and(|d| Instant::now() >= d);
        let can_resend = unsent.is_some() || replay.ready();
        if wants_retry && attempt < max_retries && can_resend && !expired {
            match RetryPermit::take(&policy.state) {
                Some(permit) => {
                    policy.stats.retries.inc();
                    drop(result);
                    next = unsent.map(|req| *req);
                    retrying = Some(permit);
                    attempt += 1;
                    let wake = Instant::now() + backoff(attempt, random_u64());
                    match deadline {
                        Some(d) if d <= wake => {
                            tokio::time::sleep_until(d).await;
                            return Err(timeout(cluster, total));
                        }
                        _ => tokio::time::sleep_until(wake).await,
                    }
                    ep = cluster.pick_for(key.hash, tried).map_or(ep, |(i, _)| i);
                    continue;
                }
                None => {
                    policy.stats.budget_exhausted.inc();
                }
            }
        }
        return finish(cluster, total, idle, active, result);
    }
}

/// Counts an attempt's outcome: the endpoint's health (outlier detection) and the cluster's
/// upstream errors.
fn record(
    cluster: &Cluster,
    endpoints: &[Endpoint],
    ep: usize,
    result: &Result<(Response<Incoming>, Guards), Failure>,
) {
    let failed = match result {
        Ok((resp, _)) => resp.status().is_server_error(),
        Err(Failure::Overflow(_) | Failure::Deadline | Failure::RequestBody(_)) => false,
        Err(_) => true,
    };
    if !matches!(result, Err(Failure::Overflow(_))) {
        cluster.resilience.record_outcome(endpoints, ep, failed);
    }
    match result {
        Err(Failure::Upstream(e)) => cluster.stats.record_error(e.error.reason()),
        Err(Failure::TryTimeout(_) | Failure::Deadline) => {
            cluster.stats.record_error(UpstreamErrorReason::Timeout);
        }
        _ => {}
    }
}

/// The request's answer from its last attempt: the response, holding what the request counted
/// until its body ends, or the error.
fn finish(
    cluster: &Cluster,
    total: Option<Duration>,
    idle: Option<Duration>,
    active: crate::resilience::Active,
    result: Result<(Response<Incoming>, Guards), Failure>,
) -> Result<Response<TrackedBody>, ProxyError> {
    match result {
        Ok((resp, mut guards)) => {
            guards.active = Some(active);
            Ok(resp.map(|body| TrackedBody::new(body, guards, idle)))
        }
        Err(Failure::Overflow(limit)) => Err(ProxyError::Overflow {
            cluster: cluster.name.clone(),
            limit,
        }),
        Err(Failure::Deadline) => Err(timeout(cluster, total)),
        Err(Failure::TryTimeout(t)) => Err(ProxyError::Timeout {
            cluster: cluster.name.clone(),
            timeout: t,
        }),
        Err(Failure::Upstream(e)) => Err(ProxyError::Upstream {
            cluster: cluster.name.clone(),
            source: e.error,
        }),
        Err(Failure::RequestBody(reason)) => Err(ProxyError::RequestBody { reason }),
    }
}

type Bounded<F> = futures_util::future::Either<
    futures_util::future::Map<
        F,
        fn(<F as Future>::Output) -> Result<<F as Future>::Output, Elapsed>,
    >,
    tokio::time::Timeout<F>,
>;

/// `f`, bounded by `at` when there is one. One future either way, so the caller's state holds
/// `f` once (two `.await`s on two branches would hold it twice).
fn bounded<F: Future>(at: Option<Instant>, f: F) -> Bounded<F> {
    use futures_util::future::Either;
    match at {
        None => Either::Left(f.map(Ok as fn(_) -> _)),
        Some(at) => Either::Right(tokio::time::timeout_at(at, f)),
    }
}

fn timeout(cluster: &Cluster, total: Option<Duration>) -> ProxyError {
    ProxyError::Timeout {
        cluster: cluster.name.clone(),
        timeout: total.unwrap_or_default(),
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// One attempt: breaker permits, then the send, bounded by the per-try, idle and request
/// deadlines until the response headers.
async fn attempt_once(
    cluster: &Cluster,
    endpoint: &Endpoint,
    req: Request<UpstreamBody>,
    per_try: Option<Duration>,
    idle: Option<Duration>,
    deadline: Option<Instant>,
) -> Result<(Response<Incoming>, Guards), Failure> {
    let policy = &cluster.resilience;
    // Without limits there is nothing to wait for (and no timer to arm).
    let permit = if policy.has_limits() {
        bounded(deadline, policy.acquire())
            .await
            .map_err(|_| Failure::Deadline)?
            .map_err(Failure::Overflow)?
    } else {
        None
    };
    let in_flight = endpoint.state.start();
    let try_limit = shortest(per_try, idle);
    // Peak EWMA balancing learns each attempt's time to response headers; failures count as
    // slow. Other policies skip the clock.
    let sent = policy.tracks_latency().then(Instant::now);
    let try_deadline = try_limit.map(|t| Instant::now() + t);
    let at = earliest(try_deadline, deadline);
    let outcome = bounded(at, cluster.send(endpoint, req)).await;
    if let Some(sent) = sent {
        let (rtt, now) = (sent.elapsed(), crate::resilience::now_ms());
        match outcome {
            Ok(Ok(_)) => endpoint.state.rtt.observe(rtt, now),
            _ => endpoint.state.rtt.observe_failure(rtt, now),
        }
    }
    let result = match outcome {
        Ok(r) => r,
        Err(_) if at == deadline => return Err(Failure::Deadline),
        Err(_) => return Err(Failure::TryTimeout(try_limit.unwrap_or_default())),
    };
    match result {
        Ok((resp, conn)) => Ok((
            resp,
            Guards {
                active: None,
                in_flight,
                permit,
                conn,
            },
        )),
        Err(e) => Err(Failure::Upstream(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: &[ir::RetryOn]) -> RetryPolicy {
        RetryPolicy::compile(&ir::RetryPolicy {
            max_retries: 3,
            per_retry_timeout_ms: Some(500),
            retry_on: on.to_vec(),
        })
    }

    fn grpc(status: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        h.insert("grpc-status", HeaderValue::from_static(status));
        h
    }

    #[test]
    fn http_events_match_app_mesh_status_codes() {
        use ir::RetryOn::*;
        let none = HeaderMap::new();
        let server = policy(&[ServerError]);
        for s in [500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511] {
            assert!(server.retries_response(s, &none), "{s}");
        }
        for s in [200, 404, 409, 509] {
            assert!(!server.retries_response(s, &none), "{s}");
        }
        let gateway = policy(&[GatewayError]);
        for (s, want) in [
            (500, false),
            (502, true),
            (503, true),
            (504, true),
            (505, false),
        ] {
            assert_eq!(gateway.retries_response(s, &none), want, "{s}");
        }
        let client = policy(&[ClientError]);
        assert!(client.retries_response(409, &none));
        assert!(!client.retries_response(400, &none));
        assert!(!client.retries_response(503, &none));
    }

    #[test]
    fn grpc_events_match_trailers_only_statuses() {
        use ir::RetryOn::*;
        let p = policy(&[Unavailable, DeadlineExceeded]);
        assert!(p.retries_response(200, &grpc("14")));
        assert!(p.retries_response(200, &grpc("4")));
        assert!(!p.retries_response(200, &grpc("13")));
        assert!(!p.retries_response(200, &grpc("0")));
        let all = policy(&[Cancelled, Internal, ResourceExhausted]);
        for s in ["1", "13", "8"] {
            assert!(all.retries_response(200, &grpc(s)), "{s}");
        }
        // Not a gRPC response: grpc-status alone means nothing.
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("14"));
        assert!(!p.retries_response(200, &h));
    }

    #[test]
    fn failures_without_a_response() {
        use ir::RetryOn::*;
        let addr = "127.0.0.1:1".parse().unwrap();
        let refused = Failure::Upstream(UpstreamError::ConnectRefused { addr }.into());
        let reset = Failure::Upstream(
            UpstreamError::Reset {
                addr,
                source: "connection closed".into(),
            }
            .into(),
        );
        let try_timeout = Failure::TryTimeout(Duration::from_millis(500));
        let tcp = policy(&[ConnectionError]);
        assert!(tcp.retries_failure(&refused));
        assert!(!tcp.retries_failure(&reset));
        assert!(!tcp.retries_failure(&try_timeout));
        for p in [policy(&[ServerError]), policy(&[GatewayError])] {
            assert!(p.retries_failure(&refused));
            assert!(p.retries_failure(&reset));
            assert!(p.retries_failure(&try_timeout));
            assert!(!p.retries_failure(&Failure::Deadline));
            assert!(!p.retries_failure(&Failure::Overflow(Overflow::MaxRequests)));
        }
        let stream = policy(&[StreamError]);
        assert!(
            !stream.retries_failure(&reset),
            "a plain reset is not a refused stream"
        );
        assert!(!stream.retries_failure(&refused));
        let refused_stream = Failure::Upstream(
            UpstreamError::Reset {
                addr,
                source: Box::new(h2::Error::from(h2::Reason::REFUSED_STREAM)),
            }
            .into(),
        );
        assert!(stream.retries_failure(&refused_stream));
    }

    #[test]
    fn backoff_is_jittered_exponential_and_capped() {
        assert_eq!(backoff(1, 0), Duration::ZERO);
        assert_eq!(backoff(1, u64::MAX), Duration::from_millis(25));
        assert_eq!(backoff(2, u64::MAX), Duration::from_millis(75));
        assert_eq!(backoff(3, u64::MAX), Duration::from_millis(175));
        assert_eq!(backoff(4, u64::MAX), BACKOFF_MAX);
        assert_eq!(backoff(40, u64::MAX), BACKOFF_MAX);
        assert_eq!(backoff(4, u64::MAX / 2), Duration::from_millis(125));
    }

    // === a request that found no connection ===

    use crate::metrics::ProxyMetrics;
    use crate::router::{CompileContext, RequestHead, RoutedAction, Router};
    use crate::upstream::Upstreams;
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;

    /// An HTTP/1.1 upstream that answers `<x-bowline-attempt or 1> <body>`.
    async fn upstream() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let attempt = req
                            .headers()
                            .get(&X_BOWLINE_ATTEMPT)
                            .map_or("1".to_string(), |v| {
                                String::from_utf8_lossy(v.as_bytes()).into_owned()
                            });
                        let body = req.into_body().collect().await?.to_bytes();
                        let answer = format!("{attempt} {}", String::from_utf8_lossy(&body));
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(answer))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        (addr, task)
    }

    /// A port nothing listens on.
    fn refusing() -> std::net::SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    /// A router with one route to cluster `c` (endpoints `refused` and `live`) with `retry`.
    fn router(
        refused: std::net::SocketAddr,
        live: std::net::SocketAddr,
        retry: Option<ir::RetryPolicy>,
    ) -> Router {
        let ep = |a: std::net::SocketAddr| serde_json::json!({"address": a.ip().to_string(), "port": a.port(), "weight": 1});
        // The snapshot as the config dump shows it.
        let snapshot: ir::Snapshot = serde_json::from_value(serde_json::json!({
            "listeners": [{"name": "http-8080", "port": 8080, "protocol": "http", "routeTable": "t"}],
            "routeTables": [{"name": "t", "virtualHosts": [{"name": "*", "hosts": ["any"], "routes": [
                {"name": "r", "match": {}, "action": {"forward": {
                    "clusters": [{"cluster": "c", "weight": 1}], "retry": retry}}}
            ]}]}],
            "clusters": [{"name": "c", "protocol": "http", "connectTimeoutMs": 1000}],
            "endpoints": [{"cluster": "c", "endpoints": [ep(refused), ep(live)]}],
        }))
        .unwrap();
        let (upstreams, metrics) = (Upstreams::default(), ProxyMetrics::default());
        Router::compile(
            &snapshot,
            CompileContext {
                upstreams: &upstreams,
                metrics: &metrics,
                previous: None,
            },
        )
        .unwrap()
    }

    /// Sends a POST with `body` (a body the proxy holds, which retries cannot replay) whose first
    /// attempt goes to the refusing endpoint.
    async fn post_via_refused(
        router: &Router,
        refused: std::net::SocketAddr,
        body: &'static str,
    ) -> Result<String, ProxyError> {
        let listener = router.listener(8080).unwrap();
        let headers = HeaderMap::new();
        let head = RequestHead {
            method: &Method::POST,
            path: "/",
            query: None,
            headers: &headers,
            port: 8080,
            scheme: "http",
        };
        let routed = router.route(listener, "h", &head).unwrap();
        let RoutedAction::Forward(fwd) = routed.action else {
            panic!("a forward route");
        };
        let cluster = fwd.pick();
        let first = cluster
            .endpoints()
            .iter()
            .position(|e| e.addr == refused)
            .unwrap();
        let req = Request::post("/")
            .header(http::header::HOST, "h")
            .body(UpstreamBody::full(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let key = RequestKey::random();
        let resp = send(cluster, fwd, first, &key, req, Instant::now(), None).await?;
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    fn retry_on(events: &[ir::RetryOn]) -> Option<ir::RetryPolicy> {
        Some(ir::RetryPolicy {
            max_retries: 1,
            per_retry_timeout_ms: None,
            retry_on: events.to_vec(),
        })
    }

    #[tokio::test]
    async fn a_request_that_found_no_connection_is_retried_whole_on_another_endpoint() {
        use ir::RetryOn::*;
        let (live, _server) = upstream().await;
        let refused = refusing();
        for events in [&[ConnectionError][..], &[GatewayError], &[ServerError]] {
            let r = router(refused, live, retry_on(events));
            let answer = post_via_refused(&r, refused, "a body no replay keeps").await;
            assert_eq!(
                answer.unwrap(),
                "2 a body no replay keeps",
                "{events:?}: the retry carried the untouched body"
            );
        }
    }

    #[tokio::test]
    async fn a_refused_connect_is_not_retried_without_a_matching_event() {
        let (live, _server) = upstream().await;
        let refused = refusing();
        for retry in [None, retry_on(&[ir::RetryOn::ClientError])] {
            let r = router(refused, live, retry.clone());
            let err = post_via_refused(&r, refused, "x").await.unwrap_err();
            assert!(
                matches!(
                    err,
                    ProxyError::Upstream {
                        source: UpstreamError::ConnectRefused { .. },
                        ..
                    }
                ),
                "{retry:?}: {err}"
            );
        }
    }

    #[test]
    fn the_budget_allows_three_or_a_fifth_of_the_requests_in_flight() {
        let state = Arc::new(ClusterState::default());
        let _requests: Vec<_> = (0..10).map(|_| state.start()).collect();
        let permits: Vec<_> = (0..3).map(|_| RetryPermit::take(&state).unwrap()).collect();
        assert!(RetryPermit::take(&state).is_none(), "max(3, 20 % of 10)");
        drop(permits);
        let _more: Vec<_> = (0..40).map(|_| state.start()).collect();
        let permits: Vec<_> = (0..10)
            .map(|_| RetryPermit::take(&state).unwrap())
            .collect();
        assert!(RetryPermit::take(&state).is_none(), "20 % of 50");
        assert_eq!(state.in_flight(), (50, 10));
        drop(permits);
        assert_eq!(state.in_flight(), (50, 0));
    }
}
