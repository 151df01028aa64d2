//! Request mirroring: a copy of a forwarded request goes to another cluster, fire-and-forget.
//!
//! * Sampling is exact and spread evenly: a mirror at 25 % copies one request in four.
//! * The copy has the upstream request's method, path, query and headers (after rewrites and
//!   header changes), and the `Host` / `:authority` of the real request.
//! * Bodies: a request without a body is copied at once. A body is teed as it streams to the
//!   real upstream, up to [`MIRROR_BODY_CAP`] bytes; the copy is sent once the body has ended. A
//!   body that is larger (by its `Content-Length`, or once it grows past the cap), that fails, or
//!   that the real upstream does not read to its end is not mirrored. Trailers are not copied.
//! * The real request never waits for a mirror, and a mirror's failure (refused, slow, error
//!   status) never changes the real response. Mirror responses are read and discarded within
//!   [`MIRROR_TIMEOUT`]. At most [`MIRRORS_IN_FLIGHT`] copies per mirror are in flight; beyond
//!   that, requests are not mirrored (a slow mirror target cannot pile up memory).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tracing::debug;

use super::{Cluster, UpstreamProtocol};
use crate::upstream::{Tee, UpstreamBody};

/// Largest request body copied to mirrors.
pub const MIRROR_BODY_CAP: usize = 64 * 1024;
/// How long a mirror may take to answer (and to send its whole response).
pub const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);
/// Copies in flight per mirror.
pub const MIRRORS_IN_FLIGHT: usize = 128;

/// One mirror of a route.
#[derive(Debug)]
pub(super) struct MirrorPolicy {
    cluster: Arc<Cluster>,
    percent: u32,
    counter: AtomicU64,
    in_flight: Arc<AtomicUsize>,
}

impl MirrorPolicy {
    pub(super) fn new(cluster: Arc<Cluster>, percent: u32) -> Self {
        MirrorPolicy {
            cluster,
            percent: percent.min(100),
            counter: AtomicU64::new(0),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Whether this request is copied.
    fn sample(&self) -> bool {
        sampled(&self.counter, self.percent)
    }

    /// A slot for one more copy in flight, if there is room.
    fn acquire(&self) -> Option<InFlight> {
        let prev = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = InFlight(self.in_flight.clone());
        (prev < MIRRORS_IN_FLIGHT).then_some(slot)
    }
}

/// Exactly `percent` of every 100 calls say yes, evenly spread.
fn sampled(counter: &AtomicU64, percent: u32) -> bool {
    match percent {
        0 => false,
        100.. => true,
        p => {
            let n = counter.fetch_add(1, Ordering::Relaxed) % 100;
            (n * u64::from(p)) % 100 < u64::from(p)
        }
    }
}

/// Frees a mirror's in-flight slot when dropped.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The head of a mirrored request, copied from the upstream request.
struct Head {
    method: http::Method,
    path_and_query: Option<http::uri::PathAndQuery>,
    headers: http::HeaderMap,
    /// `Host` / `:authority` of the real request.
    host: Option<Authority>,
}

/// Starts the sampled mirrors of `policies` for a request about to be sent; returns the body
/// for the real upstream.
pub(super) fn start<'a>(
    policies: impl Iterator<Item = &'a MirrorPolicy>,
    head: &http::request::Parts,
    body: Incoming,
) -> UpstreamBody {
    let targets: Vec<(Arc<Cluster>, InFlight)> = policies
        .filter(|p| p.sample())
        .filter_map(|p| Some((p.cluster.clone(), p.acquire()?)))
        .collect();
    if targets.is_empty() {
        return UpstreamBody::Streaming(body);
    }
    let host = head
        .headers
        .get(HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .or_else(|| head.uri.authority().cloned());
    let copy = Head {
        method: head.method.clone(),
        path_and_query: head.uri.path_and_query().cloned(),
        headers: head.headers.clone(),
        host,
    };
    if body.is_end_stream() {
        tokio::spawn(send_all(copy, targets, Bytes::new()));
        return UpstreamBody::Streaming(body);
    }
    if body.size_hint().lower() > MIRROR_BODY_CAP as u64 {
        debug!("request body larger than the mirror cap; not mirrored");
        return UpstreamBody::Streaming(body);
    }
    let (tee, copied) = Tee::new(body, MIRROR_BODY_CAP);
    tokio::spawn(async move {
        match copied.await {
            Ok(bytes) => send_all(copy, targets, bytes).await,
            Err(_) => debug!("request body not copied in full; not mirrored"),
        }
    });
    UpstreamBody::Tee(Box::new(tee))
}

async fn send_all(head: Head, targets: Vec<(Arc<Cluster>, InFlight)>, body: Bytes) {
    let head = Arc::new(head);
    for (cluster, slot) in targets {
        let head = head.clone();
        let body = body.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let name = cluster.name.clone();
            match tokio::time::timeout(MIRROR_TIMEOUT, send_one(&cluster, &head, body)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => debug!(cluster = %name, %error, "mirror failed"),
                Err(_) => debug!(cluster = %name, "mirror timed out"),
            }
        });
    }
}

/// Sends one copy and reads its response to the end.
async fn send_one(cluster: &Cluster, head: &Head, body: Bytes) -> Result<(), String> {
    let endpoint = cluster.pick().ok_or("no endpoints")?;
    let mut req = Request::new(UpstreamBody::full(body));
    *req.method_mut() = head.method.clone();
    *req.headers_mut() = head.headers.clone();
    let authority = match cluster.protocol {
        UpstreamProtocol::Http1 | UpstreamProtocol::Tcp => {
            *req.version_mut() = Version::HTTP_11;
            if let Some(h) = &head.host
                && let Ok(v) = HeaderValue::from_str(h.as_str())
            {
                req.headers_mut().insert(HOST, v);
            }
            endpoint.authority.clone()
        }
        UpstreamProtocol::Http2 => {
            *req.version_mut() = Version::HTTP_2;
            req.headers_mut().remove(HOST);
            head.host
                .clone()
                .unwrap_or_else(|| endpoint.authority.clone())
        }
    };
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(authority);
    uri.path_and_query = Some(
        head.path_and_query
            .clone()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    *req.uri_mut() = Uri::from_parts(uri).map_err(|e| e.to_string())?;
    // The connection goes back to the endpoint after the body is read.
    let (resp, _conn) = cluster
        .send(endpoint, req)
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(|e| e.to_string())?;
    }
    debug!(cluster = %cluster.name, %status, "mirrored");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_exact_and_spread() {
        let run = |percent: u32, n: usize| -> Vec<bool> {
            let counter = AtomicU64::new(0);
            (0..n).map(|_| sampled(&counter, percent)).collect()
        };
        for p in [0u32, 1, 10, 25, 33, 50, 99, 100] {
            let got = run(p, 1000).iter().filter(|s| **s).count();
            assert_eq!(got, p as usize * 10, "{p}%");
        }
        let quarter = run(25, 8);
        assert_eq!(
            quarter,
            [true, false, false, false, true, false, false, false]
        );
    }
}
