//! Load balancing: the choice of an endpoint within a cluster, compiled once per config update.
//!
//! | policy | choice |
//! |---|---|
//! | round robin | smooth weighted round robin ([`Schedule`], continued across updates) |
//! | least request | power of two choices: of two endpoints drawn by weight, the one with fewer requests in flight per unit of weight |
//! | random | drawn by weight |
//! | ring hash | consistent hashing on a ring ([`ring`]) |
//! | Maglev | consistent hashing with a lookup table ([`maglev`]) |
//! | peak EWMA | power of two choices: the lower latency estimate ([`ewma`]) × (requests in flight + 1) |
//!
//! Every policy skips endpoints that cannot take the request: unhealthy (active health checks),
//! ejected (outlier detection) or, for a retry, already tried. A hash policy first walks to the
//! key's next endpoints (so a key keeps its endpoint while that one is fine, and moves
//! consistently when it is not); a policy that finds nothing falls back to a weighted draw over
//! the endpoints that can. When no endpoint is available at all, every endpoint is used again
//! ("panic mode": failing every request is never better than trying).

pub mod ewma;
mod hash;
mod key;
pub mod maglev;
pub mod ring;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use bowline_model::ir;

pub use self::ewma::RttEstimate;
pub use self::hash::{below, hash_bytes, mix, random_u64};
pub use self::key::{HashPolicy, RequestKey, cookie};
use self::maglev::Maglev;
use self::ring::Ring;
use crate::router::Schedule;

/// Points of the ring walked for an endpoint that can take the request.
const RING_STEPS: usize = 64;
/// Draws a random or least-request choice makes before it scans.
const DRAWS: u64 = 3;

/// What a balancer needs to know about a cluster's endpoints at the time of a pick.
pub trait Endpoints {
    /// Number of endpoints.
    fn count(&self) -> usize;
    /// Healthy and not ejected.
    fn available(&self, i: usize) -> bool;
    /// Requests in flight (least request, peak EWMA).
    fn in_flight(&self, i: usize) -> usize;
    /// The latency estimate in nanoseconds at `now_ms` (peak EWMA; see [`RttEstimate`]).
    fn rtt_estimate(&self, i: usize, now_ms: u64) -> f64;
}

/// Endpoints a request already tried (bit `i % 64`; a collision only makes a retry avoid one
/// more endpoint).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tried(u64);

impl Tried {
    pub const NONE: Tried = Tried(0);

    #[inline]
    pub fn insert(&mut self, i: usize) {
        self.0 |= 1 << (i % 64);
    }

    #[inline]
    pub fn contains(self, i: usize) -> bool {
        self.0 & (1 << (i % 64)) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Endpoint weights for draws and scans.
#[derive(Debug)]
pub struct Weighted {
    weights: Box<[u32]>,
    /// Cumulative weights; empty when every weight is equal (a draw is then one multiplication).
    cumulative: Box<[u64]>,
    total: u64,
}

impl Weighted {
    pub fn new(weights: &[u32]) -> Weighted {
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        let mut acc = 0;
        let cumulative: Box<[u64]> = if uniform {
            Box::new([])
        } else {
            weights
                .iter()
                .map(|&w| {
                    acc += u64::from(w);
                    acc
                })
                .collect()
        };
        Weighted {
            weights: weights.into(),
            total: weights.iter().map(|&w| u64::from(w)).sum(),
            cumulative,
        }
    }

    /// Number of endpoints.
    pub fn count(&self) -> usize {
        self.weights.len()
    }

    /// An index drawn by weight with `draw` (a uniform 64-bit value).
    #[inline]
    pub fn draw(&self, draw: u64) -> usize {
        if self.cumulative.is_empty() {
            below(draw, self.weights.len() as u64) as usize
        } else {
            let t = below(draw, self.total);
            self.cumulative.partition_point(|&c| c <= t)
        }
    }

    /// An index drawn by weight among those that are `ok`, with `draw`; a linear scan.
    pub fn draw_among(&self, draw: u64, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
        let total: u64 = (0..self.count())
            .filter(|&i| ok(i))
            .map(|i| u64::from(self.weights[i]))
            .sum();
        if total == 0 {
            return None;
        }
        let mut t = below(draw, total);
        for i in (0..self.count()).filter(|&i| ok(i)) {
            let w = u64::from(self.weights[i]);
            if t < w {
                return Some(i);
            }
            t -= w;
        }
        None
    }

    #[inline]
    pub fn weight(&self, i: usize) -> u64 {
        u64::from(self.weights[i])
    }
}

#[derive(Debug)]
enum Policy {
    RoundRobin(Arc<Schedule>),
    LeastRequest,
    Random,
    RingHash(Ring),
    Maglev(Maglev),
    PeakEwma,
}

/// The compiled load balancer of one cluster.
#[derive(Debug)]
pub struct Balancer {
    policy: Policy,
    weighted: Weighted,
}

impl Balancer {
    /// A balancer over endpoints with stable identities `ids` (hashes of their addresses) and
    /// `weights` (each at least 1). Round robin continues `schedule` (built over the same
    /// weights). `None` without endpoints.
    pub fn new(
        policy: ir::LbPolicy,
        ids: &[u64],
        weights: &[u32],
        schedule: Option<Arc<Schedule>>,
    ) -> Option<Balancer> {
        if weights.is_empty() {
            return None;
        }
        let policy = match policy {
            ir::LbPolicy::RoundRobin => {
                Policy::RoundRobin(schedule.or_else(|| Schedule::new(weights).map(Arc::new))?)
            }
            ir::LbPolicy::LeastRequest => Policy::LeastRequest,
            ir::LbPolicy::Random => Policy::Random,
            ir::LbPolicy::RingHash => Policy::RingHash(Ring::new(ids, weights)?),
            ir::LbPolicy::Maglev => Policy::Maglev(Maglev::new(ids, weights)?),
            ir::LbPolicy::PeakEwma => Policy::PeakEwma,
        };
        Some(Balancer {
            policy,
            weighted: Weighted::new(weights),
        })
    }

    /// Whether the policy hashes the request key (otherwise any random key will do).
    pub fn hashes(&self) -> bool {
        matches!(self.policy, Policy::RingHash(_) | Policy::Maglev(_))
    }

    /// Whether the policy needs each attempt's latency ([`RttEstimate::observe`]).
    pub fn tracks_latency(&self) -> bool {
        matches!(self.policy, Policy::PeakEwma)
    }

    /// Picks an endpoint for `key` (see the module documentation), or `None` when there are no
    /// endpoints.
    pub fn pick<E: Endpoints + ?Sized>(&self, eps: &E, key: u64, tried: Tried) -> Option<usize> {
        if eps.count() != self.weighted.count() {
            return None;
        }
        let fresh = |i: usize| !tried.contains(i) && eps.available(i);
        if let Some(i) = self.choose(eps, key, &fresh) {
            return Some(i);
        }
        if !tried.is_empty()
            && let Some(i) = self.choose(eps, key, &|i| eps.available(i))
        {
            return Some(i);
        }
        // Panic mode: nothing is available.
        self.choose(eps, key, &|i| !tried.contains(i))
            .or_else(|| self.choose(eps, key, &|_| true))
    }

    fn choose<E: Endpoints + ?Sized>(
        &self,
        eps: &E,
        key: u64,
        ok: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let w = &self.weighted;
        let found = match &self.policy {
            Policy::RoundRobin(s) => (0..2 * w.count()).map(|_| s.next()).find(|&i| ok(i)),
            Policy::Random => (0..DRAWS)
                .map(|d| w.draw(if d == 0 { key } else { mix(key ^ d) }))
                .find(|&i| ok(i)),
            // Requests in flight per unit of weight.
            Policy::LeastRequest => two_choices(w, key, ok, &|i| {
                eps.in_flight(i) as f64 / w.weight(i).max(1) as f64
            }),
            // Weights act through the draws only: equally fast endpoints share by weight.
            Policy::PeakEwma => {
                let now = crate::resilience::now_ms();
                let floor = ewma::FLOOR.as_nanos() as f64;
                two_choices(w, key, ok, &|i| {
                    (eps.rtt_estimate(i, now) + floor) * (eps.in_flight(i) + 1) as f64
                })
            }
            Policy::RingHash(r) => r.lookup(key, ok, RING_STEPS),
            Policy::Maglev(m) => m.lookup(key, ok),
        };
        found.or_else(|| w.draw_among(mix(key ^ 0xfa11), ok))
    }
}

/// Power of two choices: of two endpoints drawn by weight with `key`, the one with the lower
/// `cost` (a tie goes to the first draw); when neither can take the request, the lowest of those
/// that can.
fn two_choices(
    w: &Weighted,
    key: u64,
    ok: &dyn Fn(usize) -> bool,
    cost: &dyn Fn(usize) -> f64,
) -> Option<usize> {
    let a = w.draw(key);
    let mut b = w.draw(mix(key));
    if b == a && w.count() > 1 {
        b = w.draw(mix(key ^ 1));
    }
    match (ok(a), ok(b)) {
        (true, true) => Some(if cost(b) < cost(a) { b } else { a }),
        (true, false) => Some(a),
        (false, true) => Some(b),
        (false, false) => (0..w.count())
            .filter(|&i| ok(i))
            .min_by(|&i, &j| cost(i).total_cmp(&cost(j))),
    }
}
