//! Load balancing and resilience per cluster: what the router compiles for each cluster
//! ([`ClusterPolicy`]), the state that outlives config updates ([`Registry`]: per cluster
//! [`ClusterState`], per endpoint [`EndpointState`], the health-check tasks), and the response
//! body that holds an attempt's counters until the response ends ([`TrackedBody`]).
//!
//! State is keyed by cluster name (and endpoint address): an update that leaves a cluster or an
//! endpoint in place keeps its health verdict, ejection, in-flight counts and breaker counters.
//! Health checks run as one task per cluster, check configuration and endpoint, started and
//! stopped by [`Registry::sync`] after each update.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bowline_model::ir;
use bowline_model::proto::Kind;
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};
use tracing::debug;

use crate::breaker::{Breaker, Limits, Permit};
use crate::lb::{self, Balancer, HashPolicy, RequestKey};
use crate::metrics::{ProxyMetrics, ResilienceStats};
use crate::outlier::Outlier;
use crate::router::{CompileError, Endpoint, Router, Schedule};

// === clock ===

/// Milliseconds since the first call, from 1: 0 means "never" in the state below.
pub fn now_ms() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

// === EndpointState ===

/// What the proxy knows about one endpoint of one cluster.
#[derive(Debug)]
pub struct EndpointState {
    /// The active health checks' verdict (true without checks).
    pub(crate) healthy: AtomicBool,
    /// Ejected by outlier detection until this time ([`now_ms`]); 0: never ejected.
    pub(crate) ejected_until: AtomicU64,
    /// Times ejected (the multiplier of the ejection time), after decay.
    pub(crate) ejections: AtomicU32,
    /// When the last ejection ended.
    pub(crate) ejection_end: AtomicU64,
    pub(crate) consecutive_errors: AtomicU32,
    /// Attempts in flight (least request, peak EWMA).
    pub(crate) in_flight: AtomicUsize,
    /// Latency estimate (peak EWMA).
    pub(crate) rtt: lb::RttEstimate,
    /// The health-check task that owns [`Self::healthy`] (a newer one supersedes an older).
    pub(crate) check_generation: AtomicU64,
}

impl Default for EndpointState {
    fn default() -> Self {
        EndpointState {
            healthy: AtomicBool::new(true),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            ejection_end: AtomicU64::new(0),
            consecutive_errors: AtomicU32::new(0),
            in_flight: AtomicUsize::new(0),
            rtt: lb::RttEstimate::default(),
            check_generation: AtomicU64::new(0),
        }
    }
}

impl EndpointState {
    /// Healthy and not ejected at `now` (read only when an ejection happened at all).
    #[inline]
    pub fn available_now(&self) -> bool {
        if !self.healthy.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || until <= now_ms()
    }

    /// Healthy and not ejected at `now_ms`.
    pub fn available(&self, now_ms: u64) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.ejected_until.load(Ordering::Relaxed) <= now_ms
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Makes the caller the owner of the health verdict; returns its generation.
    pub(crate) fn claim_checks(&self) -> u64 {
        self.check_generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Whether `generation` still owns the health verdict.
    pub(crate) fn owns_checks(&self, generation: u64) -> bool {
        self.check_generation.load(Ordering::Acquire) == generation
    }

    /// Counts an attempt in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

impl AsRef<EndpointState> for EndpointState {
    fn as_ref(&self) -> &EndpointState {
        self
    }
}

impl AsRef<EndpointState> for Endpoint {
    fn as_ref(&self) -> &EndpointState {
        &self.state
    }
}

/// An attempt in flight on an endpoint.
#[derive(Debug)]
pub struct InFlight(Arc<EndpointState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl lb::Endpoints for [Endpoint] {
    fn count(&self) -> usize {
        self.len()
    }

    #[inline]
    fn available(&self, i: usize) -> bool {
        self[i].state.available_now()
    }

    #[inline]
    fn in_flight(&self, i: usize) -> usize {
        self[i].state.in_flight.load(Ordering::Relaxed)
    }

    #[inline]
    fn rtt_estimate(&self, i: usize, now_ms: u64) -> f64 {
        self[i].state.rtt.estimate(now_ms)
    }
}

// === ClusterState ===

/// Counters of one cluster that outlive config updates.
#[derive(Debug, Default)]
pub struct ClusterState {
    /// Requests in flight (their response bodies included).
    pub(crate) active: AtomicUsize,
    /// Retries in flight.
    pub(crate) retries: AtomicUsize,
    pub(crate) breaker: Arc<Breaker>,
}

impl ClusterState {
    /// Counts a request in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(self.clone())
    }

    /// Requests and retries in flight.
    pub fn in_flight(&self) -> (usize, usize) {
        (
            self.active.load(Ordering::Relaxed),
            self.retries.load(Ordering::Relaxed),
        )
    }
}

/// A request in flight on a cluster.
#[derive(Debug)]
pub struct Active(Arc<ClusterState>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

// === ClusterPolicy ===

/// Load balancing and resilience of one compiled cluster.
#[derive(Debug)]
pub struct ClusterPolicy {
    pub(crate) balancer: Option<Balancer>,
    pub(crate) hash: Option<HashPolicy>,
    pub(crate) state: Arc<ClusterState>,
    pub(crate) limits: Option<Limits>,
    pub(crate) outlier: Option<Outlier>,
    pub(crate) health_check: Option<ir::HealthCheck>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) stats: ResilienceStats,
}

/// A cluster's endpoint, as the policy compiler sees it.
pub struct EndpointSpec {
    pub addr: SocketAddr,
    /// At least 1.
    pub weight: u32,
}

impl ClusterPolicy {
    /// Compiles the policy of cluster `c` over `endpoints`; round robin continues `schedule`
    /// (the router's, over the same weights).
    pub fn compile(
        c: &ir::Cluster,
        endpoints: &[EndpointSpec],
        schedule: Option<Arc<Schedule>>,
        registry: &Registry,
        metrics: &ProxyMetrics,
    ) -> Result<ClusterPolicy, CompileError> {
        let err = |path: &str, reason: String| CompileError {
            resource: Kind::Cluster.key(&c.name),
            path: path.into(),
            reason,
        };
        let hash = match (&c.hash_on, c.lb_policy) {
            (Some(h), ir::LbPolicy::RingHash | ir::LbPolicy::Maglev) => {
                Some(HashPolicy::compile(h).map_err(|(path, reason)| err(path, reason))?)
            }
            (None, ir::LbPolicy::RingHash | ir::LbPolicy::Maglev) => {
                return Err(err(
                    "hashOn",
                    "required by the ringHash and maglev policies".into(),
                ));
            }
            (Some(_), _) => {
                return Err(err(
                    "hashOn",
                    "only the ringHash and maglev policies hash requests".into(),
                ));
            }
            (None, _) => None,
        };
        let ids: Vec<u64> = endpoints
            .iter()
            .map(|e| lb::hash_bytes(e.addr.to_string().as_bytes()))
            .collect();
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight.max(1)).collect();
        let schedule = schedule.filter(|_| c.lb_policy == ir::LbPolicy::RoundRobin);
        Ok(ClusterPolicy {
            balancer: Balancer::new(c.lb_policy, &ids, &weights, schedule),
            hash,
            state: registry.cluster(&c.name),
            limits: c.circuit_breakers.as_ref().and_then(Limits::compile),
            outlier: c.outlier_detection.as_ref().map(Outlier::compile),
            health_check: c.health_check.clone(),
            idle_timeout: c.idle_timeout_ms.map(Duration::from_millis),
            request_timeout: c.request_timeout_ms.map(Duration::from_millis),
            stats: metrics.resilience(&c.name),
        })
    }

    /// The key a request from `client_ip` (textual) for `uri` is balanced by.
    #[inline]
    pub fn request_key(
        &self,
        client_ip: &[u8],
        uri: &http::Uri,
        headers: &HeaderMap,
    ) -> RequestKey {
        match &self.hash {
            Some(h) => h.key(client_ip, uri, headers),
            None => RequestKey::random(),
        }
    }

    /// Records an attempt's outcome for outlier detection.
    pub fn record_outcome(&self, endpoints: &[Endpoint], i: usize, failed: bool) {
        if let Some(o) = &self.outlier
            && o.record(endpoints, i, failed, now_ms())
        {
            self.stats.ejections.inc();
            debug!(endpoint = %endpoints[i].addr, "ejected by outlier detection");
        }
    }

    /// Whether the cluster has connection-pool limits (circuit breakers).
    pub fn has_limits(&self) -> bool {
        self.limits.is_some()
    }

    /// Whether the balancer needs each attempt's latency (peak EWMA).
    #[inline]
    pub fn tracks_latency(&self) -> bool {
        self.balancer.as_ref().is_some_and(Balancer::tracks_latency)
    }

    /// Takes the breaker permits of one attempt.
    pub async fn acquire(&self) -> Result<Option<Permit>, crate::breaker::Overflow> {
        match &self.limits {
            None => Ok(None),
            Some(l) => match self.state.breaker.acquire(l).await {
                Ok(p) => Ok(Some(p)),
                Err(o) => {
                    self.stats.overflows[o.index()].inc();
                    Err(o)
                }
            },
        }
    }

    pub fn state(&self) -> &Arc<ClusterState> {
        &self.state
    }
}

// === Registry ===

/// Load-balancing and resilience state kept across config updates (held by
/// [`Upstreams`](crate::upstream::Upstreams)).
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    clusters: HashMap<String, Arc<ClusterState>>,
    endpoints: HashMap<(String, SocketAddr), Arc<EndpointState>>,
    checks: HashMap<CheckKey, JoinHandle<()>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CheckKey {
    cluster: String,
    addr: SocketAddr,
    check: ir::HealthCheck,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state of a cluster (created on first use).
    pub fn cluster(&self, name: &str) -> Arc<ClusterState> {
        self.lock()
            .clusters
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// The state of a cluster's endpoint (created on first use).
    pub fn endpoint(&self, cluster: &str, addr: SocketAddr) -> Arc<EndpointState> {
        self.lock()
            .endpoints
            .entry((cluster.to_string(), addr))
            .or_default()
            .clone()
    }

    /// After `router` went into service: starts the health checks it asks for, stops those it
    /// no longer does, and forgets state no compiled config refers to. Must run inside a Tokio
    /// runtime.
    pub fn sync(&self, router: &Router) {
        let mut wanted: HashMap<CheckKey, (Arc<EndpointState>, ResilienceStats)> = HashMap::new();
        for c in router.clusters() {
            let Some(check) = &c.resilience.health_check else {
                continue;
            };
            for ep in c.endpoints() {
                wanted.insert(
                    CheckKey {
                        cluster: c.name.clone(),
                        addr: ep.addr,
                        check: check.clone(),
                    },
                    (ep.state.clone(), c.resilience.stats.clone()),
                );
            }
        }
        let mut inner = self.lock();
        inner.checks.retain(|key, task| {
            let keep = wanted.contains_key(key) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, (state, stats)) in wanted {
            if inner.checks.contains_key(&key) {
                continue;
            }
            let task = crate::health::spawn(key.addr, key.check.clone(), state, stats);
            inner.checks.insert(key, task);
        }
        // Forget state no router holds any more (routers still serving requests keep theirs until
        // a later update).
        inner.clusters.retain(|_, s| Arc::strong_count(s) > 1);
        inner.endpoints.retain(|_, s| Arc::strong_count(s) > 1);
    }

    /// Health checks running (for tests).
    pub fn health_checks(&self) -> usize {
        self.lock().checks.len()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self.checks.values() {
            task.abort();
        }
    }
}

// === TrackedBody ===

/// A response body from an upstream, holding what the attempt counted (request in flight,
/// endpoint load, breaker permit) until it ends, and enforcing the stream idle timeout.
#[derive(Debug)]
pub struct TrackedBody {
    inner: Incoming,
    idle: Option<Idle>,
    _guards: Guards,
}

/// What a response holds until it ends.
#[derive(Debug)]
pub struct Guards {
    /// Set once the attempt's response is the request's.
    pub active: Option<Active>,
    pub in_flight: InFlight,
    pub permit: Option<Permit>,
    /// The HTTP/1.1 connection the response arrives on, returned to its endpoint last: after
    /// the counters above, once the body is done.
    pub conn: Option<crate::upstream::PooledConn>,
}

#[derive(Debug)]
struct Idle {
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
}

/// The response body stalled longer than the stream idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("no response data within the idle timeout of {0:?}")]
pub struct IdleTimeout(pub Duration);

impl TrackedBody {
    pub fn new(inner: Incoming, guards: Guards, idle: Option<Duration>) -> TrackedBody {
        TrackedBody {
            idle: idle.map(|timeout| Idle {
                timeout,
                timer: Box::pin(tokio::time::sleep(timeout)),
            }),
            inner,
            _guards: guards,
        }
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(idle) = &mut this.idle {
                    let deadline = Instant::now() + idle.timeout;
                    idle.timer.as_mut().reset(deadline);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match &mut this.idle {
                Some(idle) => match idle.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(IdleTimeout(idle.timeout))))),
                    Poll::Pending => Poll::Pending,
                },
                None => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
