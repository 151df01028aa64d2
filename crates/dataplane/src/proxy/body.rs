//! The response body type of the proxy: either the upstream's body, streamed as it arrives
//! (trailers included), or a small body the proxy wrote itself. No boxing.
//!
//! Errors are boxed (the upstream's, or the proxy's own such as a stream idle timeout); hyper
//! resets the client's stream on one.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::resilience::TrackedBody;
use crate::router::ClientSlot;

/// A body error: the upstream's, or the proxy's own.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
pub enum ProxyBody {
    /// Streamed from the upstream.
    Upstream(Incoming),
    /// Written by the proxy (errors, direct responses); `None` once sent.
    Full(Option<Bytes>),
    /// Streamed from the upstream while the attempt's counters are held, with the stream idle
    /// timeout.
    Tracked(TrackedBody),
    /// As `Tracked`, while the request's per-client concurrency slots are held (released when
    /// the body is dropped: after its end, or when the client goes away).
    Holding(Box<(TrackedBody, Vec<ClientSlot>)>),
}

impl ProxyBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        ProxyBody::Full((!bytes.is_empty()).then_some(bytes))
    }

    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ProxyBody::Upstream(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(Into::into))),
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Tracked(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Holding(held) => Pin::new(&mut held.0).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(body) => body.is_end_stream(),
            ProxyBody::Full(bytes) => bytes.is_none(),
            ProxyBody::Tracked(body) => body.is_end_stream(),
            ProxyBody::Holding(held) => held.0.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(body) => body.size_hint(),
            ProxyBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ProxyBody::Tracked(body) => body.size_hint(),
            ProxyBody::Holding(held) => held.0.size_hint(),
        }
    }
}
