//! The body of an upstream request: the client's body streamed as it arrives, the same while
//! keeping a copy for retries (up to a size) or for a mirror ([`Tee`]), or a body the proxy
//! holds (a replay, a mirrored copy). No boxing.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;

#[derive(Debug)]
pub enum UpstreamBody {
    /// The client's body, streamed.
    Streaming(Incoming),
    /// The client's body, streamed while a copy is kept for retries.
    Recording(Box<Recording>),
    /// The client's body, streamed while a copy is kept for a mirror.
    Tee(Box<Tee>),
    /// A complete body held in memory (a replay, or no body at all); `None`s once sent.
    Full {
        data: Option<Bytes>,
        trailers: Option<Box<HeaderMap>>,
    },
}

/// A complete request body, kept for replay.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    pub data: Bytes,
    pub trailers: Option<HeaderMap>,
}

/// Where a recording delivers the body once complete; unset while incomplete and for ever when
/// the body was larger than the limit (or the exchange ended before the body did).
pub type RecordedSlot = Arc<OnceLock<Recorded>>;

#[derive(Debug)]
pub struct Recording {
    /// Read from the client before the exchange started; sent first.
    prefix: VecDeque<Bytes>,
    inner: Incoming,
    chunks: Vec<Bytes>,
    size: usize,
    limit: usize,
    trailers: Option<HeaderMap>,
    overflowed: bool,
    slot: RecordedSlot,
}

impl UpstreamBody {
    /// No body.
    pub fn empty() -> Self {
        UpstreamBody::Full {
            data: None,
            trailers: None,
        }
    }

    /// A body held by the proxy (a mirrored copy).
    pub fn full(bytes: Bytes) -> Self {
        UpstreamBody::Full {
            data: (!bytes.is_empty()).then_some(bytes),
            trailers: None,
        }
    }

    /// A replay of a recorded body.
    pub fn replay(r: &Recorded) -> Self {
        UpstreamBody::Full {
            data: (!r.data.is_empty()).then(|| r.data.clone()),
            trailers: r.trailers.clone().map(Box::new),
        }
    }

    /// Streams `prefix` (already read from the client) then `inner`, and records both into the
    /// returned slot if they are at most `limit` bytes.
    pub fn recording(prefix: Vec<Bytes>, inner: Incoming, limit: usize) -> (Self, RecordedSlot) {
        let slot = RecordedSlot::default();
        let size: usize = prefix.iter().map(Bytes::len).sum();
        let overflowed = size > limit;
        let body = UpstreamBody::Recording(Box::new(Recording {
            chunks: if overflowed {
                Vec::new()
            } else {
                prefix.clone()
            },
            prefix: prefix.into(),
            inner,
            size,
            limit,
            trailers: None,
            overflowed,
            slot: slot.clone(),
        }));
        (body, slot)
    }
}

impl From<Incoming> for UpstreamBody {
    fn from(b: Incoming) -> Self {
        UpstreamBody::Streaming(b)
    }
}

impl Recording {
    fn keep(&mut self, frame: &Frame<Bytes>) {
        if self.overflowed {
            return;
        }
        if let Some(data) = frame.data_ref() {
            self.size += data.len();
            if self.size > self.limit {
                self.overflowed = true;
                self.chunks = Vec::new();
            } else if !data.is_empty() {
                self.chunks.push(data.clone());
            }
        } else if let Some(t) = frame.trailers_ref() {
            self.trailers = Some(t.clone());
        }
    }

    fn finish(&mut self) {
        if self.overflowed || self.slot.get().is_some() {
            return;
        }
        let data = match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks[0].clone(),
            _ => {
                let mut all = BytesMut::with_capacity(self.size);
                for c in &self.chunks {
                    all.extend_from_slice(c);
                }
                all.freeze()
            }
        };
        self.chunks = Vec::new();
        let _ = self.slot.set(Recorded {
            data,
            trailers: self.trailers.take(),
        });
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
            UpstreamBody::Streaming(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::Recording(r) => {
                if let Some(data) = r.prefix.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                let polled = Pin::new(&mut r.inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        r.keep(frame);
                        if r.inner.is_end_stream() {
                            r.finish();
                        }
                    }
                    Poll::Ready(None) => r.finish(),
                    Poll::Ready(Some(Err(_))) => r.overflowed = true,
                    Poll::Pending => {}
                }
                polled
            }
            UpstreamBody::Tee(tee) => tee.poll_frame(cx),
            UpstreamBody::Full { data, trailers } => Poll::Ready(
                data.take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(|t| Frame::trailers(*t)))
                    .map(Ok),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Streaming(b) => b.is_end_stream(),
            UpstreamBody::Recording(r) => r.prefix.is_empty() && r.inner.is_end_stream(),
            UpstreamBody::Tee(tee) => tee.inner.is_end_stream(),
            UpstreamBody::Full { data, trailers } => data.is_none() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Streaming(b) => b.size_hint(),
            UpstreamBody::Recording(r) => {
                let prefix: u64 = r.prefix.iter().map(|b| b.len() as u64).sum();
                let mut hint = r.inner.size_hint();
                hint.set_lower(hint.lower() + prefix);
                if let Some(upper) = hint.upper() {
                    hint.set_upper(upper + prefix);
                }
                hint
            }
            UpstreamBody::Tee(tee) => tee.inner.size_hint(),
            UpstreamBody::Full { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |b| b.len() as u64))
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
