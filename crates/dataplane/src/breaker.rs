//! Connection pools as circuit breakers (App Mesh `connectionPool`, Envoy's circuit breakers),
//! counted per cluster with atomics that outlive config updates:
//!
//! * `maxConnections`: connections in use. An HTTP/1.1 exchange holds its connection until the
//!   response body ends, so this bounds requests in flight. Beyond it a request waits for a
//!   connection as one of at most `maxPendingRequests` (1024 when unset, Envoy's default); beyond
//!   those it is answered 503 (`max-pending-requests`). A tcp pool, which has no queue, answers
//!   `max-connections`.
//! * `maxRequests` (HTTP/2, gRPC): requests in flight; beyond it, 503 at once (`max-requests`).
//!
//! A permit is held from the attempt's start until its response body ends (or is dropped), and
//! a retry takes its own. Waiting is bounded by the request's deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bowline_model::ir;
use tokio::sync::Notify;

/// Envoy's default `max_pending_requests`, used when a pool sets `maxConnections` only.
pub const DEFAULT_MAX_PENDING: u32 = 1024;

/// Which limit a request ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    MaxConnections,
    MaxPendingRequests,
    MaxRequests,
}

impl Overflow {
    /// The value of the `x-bowline-overflow` response header and the metric label.
    pub fn as_str(self) -> &'static str {
        crate::metrics::OVERFLOW_LIMITS[self.index()]
    }

    pub fn index(self) -> usize {
        match self {
            Overflow::MaxConnections => 0,
            Overflow::MaxPendingRequests => 1,
            Overflow::MaxRequests => 2,
        }
    }
}

/// The limits of one cluster, from its config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: Option<u32>,
    /// Waiting requests when `max_connections` are busy; 0 means none wait.
    pub max_pending: u32,
    pub max_requests: Option<u32>,
}

impl Limits {
    pub fn compile(b: &ir::CircuitBreakers) -> Option<Limits> {
        let limits = Limits {
            max_connections: b.max_connections,
            max_pending: b.max_pending_requests.unwrap_or(DEFAULT_MAX_PENDING),
            max_requests: b.max_requests,
        };
        (limits.max_connections.is_some() || limits.max_requests.is_some()).then_some(limits)
    }

    /// Limits of a pool without a queue (tcp): a connection beyond the limit is refused at once.
    pub fn without_queue(mut self) -> Limits {
        self.max_pending = 0;
        self
    }
}

/// The counters of one cluster.
#[derive(Debug, Default)]
pub struct Breaker {
    connections: AtomicU32,
    pending: AtomicU32,
    requests: AtomicU32,
    released: Notify,
}

/// What an attempt holds; released when dropped.
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<Breaker>,
    connection: bool,
    request: bool,
}

/// Increments `counter` if it is below `max`.
fn try_take(counter: &AtomicU32, max: u32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

/// Decrements the pending count when a waiting request stops waiting.
struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Breaker {
    /// Takes what `limits` ask of one attempt, waiting for a connection if needed (the caller
    /// bounds the wait). Fails with the limit that is full.
    pub async fn acquire(self: &Arc<Self>, limits: &Limits) -> Result<Permit, Overflow> {
        let mut permit = Permit {
            breaker: self.clone(),
            connection: false,
            request: false,
        };
        if let Some(max) = limits.max_requests {
            if !try_take(&self.requests, max) {
                return Err(Overflow::MaxRequests);
            }
            permit.request = true;
        }
        if let Some(max) = limits.max_connections {
            if !try_take(&self.connections, max) {
                if !try_take(&self.pending, limits.max_pending) {
                    return Err(if limits.max_pending == 0 {
                        Overflow::MaxConnections
                    } else {
                        Overflow::MaxPendingRequests
                    });
                }
                let _waiting = Waiting(&self.pending);
                loop {
                    let released = self.released.notified();
                    tokio::pin!(released);
                    // Registered before the check, so a release in between is not missed.
                    released.as_mut().enable();
                    if try_take(&self.connections, max) {
                        break;
                    }
                    released.await;
                }
            }
            permit.connection = true;
        }
        Ok(permit)
    }

    /// Connections, waiting requests and requests in use (for tests and the admin).
    pub fn in_use(&self) -> (u32, u32, u32) {
        (
            self.connections.load(Ordering::Acquire),
            self.pending.load(Ordering::Acquire),
            self.requests.load(Ordering::Acquire),
        )
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.request {
            self.breaker.requests.fetch_sub(1, Ordering::AcqRel);
        }
        if self.connection {
            self.breaker.connections.fetch_sub(1, Ordering::AcqRel);
            self.breaker.released.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(conns: Option<u32>, pending: Option<u32>, requests: Option<u32>) -> Limits {
        Limits::compile(&ir::CircuitBreakers {
            max_connections: conns,
            max_pending_requests: pending,
            max_requests: requests,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn max_requests_refuses_at_once() {
        let b = Arc::new(Breaker::default());
        let l = limits(None, None, Some(2));
        let p1 = b.acquire(&l).await.unwrap();
        let _p2 = b.acquire(&l).await.unwrap();
        assert_eq!(b.acquire(&l).await.unwrap_err(), Overflow::MaxRequests);
        drop(p1);
        let _p3 = b.acquire(&l).await.unwrap();
        assert_eq!(b.in_use(), (0, 0, 2));
    }

    #[tokio::test]
    async fn max_connections_queues_up_to_max_pending_then_overflows() {
        let b = Arc::new(Breaker::default());
        let l = limits(Some(1), Some(1), None);
        let first = b.acquire(&l).await.unwrap();
        let (b2, l2) = (b.clone(), l);
        let waiter = tokio::spawn(async move { b2.acquire(&l2).await.map(|_| ()) });
        // The waiter registers as pending; a third request finds the queue full.
        while b.in_use().1 == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            b.acquire(&l).await.unwrap_err(),
            Overflow::MaxPendingRequests
        );
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter gets the released connection")
            .unwrap()
            .unwrap();
        assert_eq!(b.in_use(), (0, 0, 0));
    }

    #[tokio::test]
    async fn a_pool_without_queue_names_max_connections() {
        let b = Arc::new(Breaker::default());
        let l = limits(Some(1), None, None).without_queue();
        let _held = b.acquire(&l).await.unwrap();
        assert_eq!(b.acquire(&l).await.unwrap_err(), Overflow::MaxConnections);
        assert_eq!(Overflow::MaxConnections.as_str(), "max-connections");
        assert_eq!(
            Overflow::MaxPendingRequests.as_str(),
            "max-pending-requests"
        );
        assert_eq!(Overflow::MaxRequests.as_str(), "max-requests");
    }

    #[tokio::test]
    async fn a_request_overflowing_max_requests_holds_no_connection() {
        let b = Arc::new(Breaker::default());
        let l = limits(Some(5), None, Some(1));
        let _held = b.acquire(&l).await.unwrap();
        assert!(b.acquire(&l).await.is_err());
        assert_eq!(b.in_use(), (1, 0, 1));
    }

    #[test]
    fn limits_default_the_queue_to_envoys() {
        let l = limits(Some(10), None, None);
        assert_eq!(l.max_pending, DEFAULT_MAX_PENDING);
        assert!(Limits::compile(&ir::CircuitBreakers::default()).is_none());
    }
}
