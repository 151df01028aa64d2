//! Copying bytes both ways between a client and an upstream connection, in one task, with a
//! shared idle timeout and half-close.
//!
//! Each direction reads into its own buffer and writes it out before reading again (so a slow
//! reader slows its writer down: TCP back-pressure passes through). When a side ends its stream,
//! the other side's write half is shut down once everything read before has been written (a
//! FIN, or a TLS `close_notify`), and the opposite direction keeps flowing; the pair is done
//! when both directions are. The idle timer is re-armed lazily: progress only records the time,
//! and the timer, when it fires, sleeps again until `last progress + timeout` if that is later.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::TcpStats;

/// Buffer of each direction.
const BUFFER: usize = 16 * 1024;

/// How long closing both sides after an idle timeout may take (a TLS `close_notify`).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Bytes moved by a pipe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Piped {
    /// Read from the client and written upstream.
    pub received: u64,
    /// Read from upstream and written to the client.
    pub sent: u64,
}

/// Why a pipe ended.
#[derive(Debug)]
pub enum End {
    /// Both sides ended their streams and every byte was passed on.
    Closed,
    /// No byte moved either way for the idle timeout; both sides were closed.
    IdleTimeout,
    /// Reading from or writing to this side failed.
    Failed(Side, io::Error),
}

/// One side of a pipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Client => Side::Upstream,
            Side::Upstream => Side::Client,
        }
    }
}

/// One direction of a pipe: what was read from `from` and not yet written to the other side.
struct Direction {
    from: Side,
    buf: Box<[u8]>,
    pos: usize,
    cap: usize,
    eof: bool,
    unflushed: bool,
    /// The end of stream was passed on: nothing more to do.
    done: bool,
    bytes: u64,
}

impl Direction {
    fn new(from: Side) -> Direction {
        Direction {
            from,
            buf: vec![0; BUFFER].into_boxed_slice(),
            pos: 0,
            cap: 0,
            eof: false,
            unflushed: false,
            done: false,
            bytes: 0,
        }
    }

    /// Polls the direction unless it is done; `Some` when the pipe must end.
    fn step<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: Pin<&mut R>,
        w: Pin<&mut W>,
        written: &Counter,
        moved: &mut bool,
    ) -> Option<End>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if self.done {
            return None;
        }
        match self.poll_copy(cx, r, w, written, moved) {
            Poll::Ready(Ok(())) => {
                self.done = true;
                None
            }
            Poll::Ready(Err((side, e))) => Some(End::Failed(side, e)),
            Poll::Pending => None,
        }
    }

    /// Moves bytes from `r` to `w` until `r` has nothing more for now (setting `moved` when a
    /// byte moved). Ready once `r`'s end of stream has been passed on by shutting `w` down.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut r: Pin<&mut R>,
        mut w: Pin<&mut W>,
        written: &Counter,
        moved: &mut bool,
    ) -> Poll<Result<(), (Side, io::Error)>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        let to = self.from.other();
        loop {
            if self.pos == self.cap && !self.eof {
                let mut buf = ReadBuf::new(&mut self.buf);
                match r.as_mut().poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(())) => match buf.filled().len() {
                        0 => self.eof = true,
                        n => {
                            (self.pos, self.cap) = (0, n);
                            *moved = true;
                        }
                    },
                    Poll::Ready(Err(e)) => return Poll::Ready(Err((self.from, e))),
                    Poll::Pending => {
                        // Nothing to read for now: push out what the writer buffered (TLS).
                        if self.unflushed {
                            ready!(w.as_mut().poll_flush(cx)).map_err(|e| (to, e))?;
                            self.unflushed = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.pos < self.cap {
                let n = ready!(w.as_mut().poll_write(cx, &self.buf[self.pos..self.cap]))
                    .map_err(|e| (to, e))?;
                if n == 0 {
                    return Poll::Ready(Err((to, io::ErrorKind::WriteZero.into())));
                }
                self.pos += n;
                self.bytes += n as u64;
                written.inc_by(n as u64);
                self.unflushed = true;
                *moved = true;
            }
            if self.eof {
                return match ready!(w.as_mut().poll_shutdown(cx)) {
                    // The peer is gone already: nothing is left to tell it.
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
                    result => Poll::Ready(result.map_err(|e| (to, e))),
                };
            }
        }
    }
}

/// The idle timer of a pipe.
struct Idle {
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl Idle {
    /// `None` without a timeout (or one too far away to represent).
    fn new(timeout: Option<Duration>, now: Instant) -> Option<Idle> {
        let timeout = timeout?;
        Some(Idle {
            timeout,
            sleep: Box::pin(tokio::time::sleep_until(now.checked_add(timeout)?)),
        })
    }

    /// Ready when nothing has moved since `last` for the timeout.
    fn poll_expired(&mut self, cx: &mut Context<'_>, last: Instant) -> Poll<()> {
        while self.sleep.as_mut().poll(cx).is_ready() {
            match last.checked_add(self.timeout) {
                Some(deadline) if deadline > Instant::now() => self.sleep.as_mut().reset(deadline),
                _ => return Poll::Ready(()),
            }
        }
        Poll::Pending
    }
}

/// Copies bytes between `client` and `upstream` until both directions have ended, one side
/// fails, or nothing moved for `idle` (`None`: no idle timeout). Bytes are counted in `stats` as
/// they are written.
pub async fn pipe<A, B>(
    client: &mut A,
    upstream: &mut B,
    idle: Option<Duration>,
    stats: &TcpStats,
) -> (Piped, End)
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut up = Direction::new(Side::Client);
    let mut down = Direction::new(Side::Upstream);
    let mut last = Instant::now();
    let mut timer = Idle::new(idle, last);
    let end = poll_fn(|cx| {
        let mut moved = false;
        let (c, u) = (Pin::new(&mut *client), Pin::new(&mut *upstream));
        if let Some(end) = up.step(cx, c, u, &stats.received, &mut moved) {
            return Poll::Ready(end);
        }
        let (c, u) = (Pin::new(&mut *client), Pin::new(&mut *upstream));
        if let Some(end) = down.step(cx, u, c, &stats.sent, &mut moved) {
            return Poll::Ready(end);
        }
        if up.done && down.done {
            return Poll::Ready(End::Closed);
        }
        if moved {
            last = Instant::now();
        }
        match timer.as_mut().map(|t| t.poll_expired(cx, last)) {
            Some(Poll::Ready(())) => Poll::Ready(End::IdleTimeout),
            _ => Poll::Pending,
        }
    })
    .await;
    if matches!(end, End::IdleTimeout) {
        // Best effort: a FIN (and a TLS close_notify) rather than a bare close.
        let close = async {
            let _ = client.shutdown().await;
            let _ = upstream.shutdown().await;
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, close).await;
    }
    let piped = Piped {
        received: up.bytes,
        sent: down.bytes,
    };
    (piped, end)
}
