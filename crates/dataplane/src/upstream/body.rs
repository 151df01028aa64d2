//! The body of requests sent upstream: the downstream body streamed as it arrives, the same
//! while a copy of it is kept for a mirror ([`Tee`]), or a small body the proxy holds (a mirrored
//! copy). No boxing.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;

#[derive(Debug)]
pub enum UpstreamBody {
    /// Streamed from the downstream client.
    Incoming(Incoming),
    /// Streamed from the downstream client while a copy is kept.
    Tee(Tee),
    /// Held by the proxy; `None` once sent.
    Full(Option<Bytes>),
}

impl UpstreamBody {
    pub fn full(bytes: Bytes) -> Self {
        UpstreamBody::Full((!bytes.is_empty()).then_some(bytes))
    }
}

impl From<Incoming> for UpstreamBody {
    fn from(body: Incoming) -> Self {
        UpstreamBody::Incoming(body)
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Incoming(body) => Pin::new(body).poll_frame(cx),
            UpstreamBody::Tee(tee) => tee.poll_frame(cx),
            UpstreamBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Incoming(body) => body.is_end_stream(),
            UpstreamBody::Tee(tee) => tee.inner.is_end_stream(),
            UpstreamBody::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Incoming(body) => body.size_hint(),
            UpstreamBody::Tee(tee) => tee.inner.size_hint(),
            UpstreamBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

// === impl Tee ===

/// Passes the downstream body through unchanged and keeps a copy of its data (trailers are not
/// copied) up to `cap` bytes. The copy is sent once the body ends; a body larger than `cap`, or
/// one that fails or is dropped before its end, sends nothing (the receiver sees the sender
/// dropped).
#[derive(Debug)]
pub struct Tee {
    inner: Incoming,
    copy: BytesMut,
    cap: usize,
    done: Option<oneshot::Sender<Bytes>>,
}

impl Tee {
    pub fn new(inner: Incoming, cap: usize) -> (Tee, oneshot::Receiver<Bytes>) {
        let (tx, rx) = oneshot::channel();
        let tee = Tee {
            inner,
            copy: BytesMut::new(),
            cap,
            done: Some(tx),
        };
        (tee, rx)
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Pending => {}
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Err(_))) => {
                self.done = None;
                self.copy = BytesMut::new();
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && self.done.is_some()
                {
                    if self.copy.len() + data.len() > self.cap {
                        self.done = None;
                        self.copy = BytesMut::new();
                    } else {
                        self.copy.extend_from_slice(data);
                    }
                }
                // The server side may stop polling once the body says it ended.
                if self.inner.is_end_stream() {
                    self.finish();
                }
            }
        }
        polled
    }

    fn finish(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(std::mem::take(&mut self.copy).freeze());
        }
    }
}
