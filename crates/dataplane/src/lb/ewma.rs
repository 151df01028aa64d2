//! The latency estimate of the peak EWMA policy: a moving average of an endpoint's time to
//! response headers that is sensitive to peaks (Finagle's, Linkerd's and ingress-nginx's `ewma`).
//!
//! An observation slower than the estimate replaces it at once; a faster one pulls it down with
//! the weight `1 - e^(-Δt/τ)`, where Δt is the time since the last update and τ is
//! [`DECAY`]. Read without a new observation, the estimate decays toward zero the same way, so
//! an endpoint that was slow once is tried again after a while rather than never. An endpoint
//! never measured estimates 0, so that it is tried soon; the balancer's cost adds [`FLOOR`] to
//! every estimate before multiplying by the requests in flight, so that a new endpoint does not
//! take every request before its first answer.
//!
//! The estimate lives in the endpoint's state, kept across config updates, in two atomics (the
//! value as `f64` bits and the time of the last update): concurrent updates may overwrite each
//! other, which only drops an observation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// τ of the exponential decay (ingress-nginx's `DECAY_TIME`, Linkerd's default).
pub const DECAY: Duration = Duration::from_secs(10);
/// Added to every estimate by the balancer's cost: what a request in flight weighs on an
/// endpoint not measured yet (or whose estimate decayed to nothing).
pub const FLOOR: Duration = Duration::from_micros(100);
/// What a failed attempt (no response) counts as, at least.
pub const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// Peak EWMA of one endpoint's latency, in nanoseconds.
#[derive(Debug)]
pub struct RttEstimate {
    nanos: AtomicU64,
    /// [`crate::resilience::now_ms`] of the last observation; 0: never observed.
    at_ms: AtomicU64,
}

impl Default for RttEstimate {
    fn default() -> Self {
        RttEstimate {
            nanos: AtomicU64::new(0f64.to_bits()),
            at_ms: AtomicU64::new(0),
        }
    }
}

impl RttEstimate {
    /// Records an attempt's time to response headers, observed at `now_ms`.
    pub fn observe(&self, rtt: Duration, now_ms: u64) {
        let rtt = rtt.as_nanos() as f64;
        let current = self.estimate(now_ms);
        let next = if rtt > current || self.at_ms.load(Ordering::Relaxed) == 0 {
            rtt
        } else {
            // `estimate` has already decayed the old value to now: blend with the weight of
            // the time since the last update.
            let at = self.at_ms.load(Ordering::Relaxed);
            let weight = decay_weight(now_ms.saturating_sub(at));
            let old = f64::from_bits(self.nanos.load(Ordering::Relaxed));
            old * weight + rtt * (1.0 - weight)
        };
        self.nanos.store(next.to_bits(), Ordering::Relaxed);
        self.at_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Records a failed attempt that took `elapsed`: at least [`FAILURE_PENALTY`].
    pub fn observe_failure(&self, elapsed: Duration, now_ms: u64) {
        self.observe(elapsed.max(FAILURE_PENALTY), now_ms);
    }

    /// The estimate at `now_ms`, in nanoseconds: the last value decayed toward zero since it
    /// was set (0 before any observation).
    #[inline]
    pub fn estimate(&self, now_ms: u64) -> f64 {
        let value = f64::from_bits(self.nanos.load(Ordering::Relaxed));
        match self.at_ms.load(Ordering::Relaxed) {
            0 => value,
            at => value * decay_weight(now_ms.saturating_sub(at)),
        }
    }
}

/// `e^(-elapsed/τ)`: the share of the old value that remains after `elapsed_ms`.
#[inline]
fn decay_weight(elapsed_ms: u64) -> f64 {
    (-(elapsed_ms as f64) / DECAY.as_millis() as f64).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: f64) -> f64 {
        v * 1e6
    }

    #[test]
    fn starts_unmeasured_jumps_to_peaks_and_decays() {
        let e = RttEstimate::default();
        assert_eq!(e.estimate(1_000), 0.0);
        // The first answer sets it; a slower one counts at once.
        e.observe(Duration::from_millis(20), 1_000);
        assert_eq!(e.estimate(1_000), ms(20.0));
        e.observe(Duration::from_millis(50), 1_000);
        assert_eq!(e.estimate(1_000), ms(50.0));
        // Read later, it has decayed: e^-1 after τ.
        let later = e.estimate(11_000);
        assert!((later - ms(50.0) * (-1f64).exp()).abs() < 1.0, "{later}");
        // A faster answer right away barely moves it; after τ it pulls it most of the way.
        e.observe(Duration::from_millis(5), 1_001);
        let near = e.estimate(1_001);
        assert!(near > ms(49.0) && near < ms(50.0), "{near}");
        let e2 = RttEstimate::default();
        e2.observe(Duration::from_millis(50), 1_000);
        e2.observe(Duration::from_millis(5), 11_000);
        let blended = e2.estimate(11_000);
        // The old value decayed for τ, plus the new one with the weight of τ.
        let want = ms(50.0) * (-1f64).exp() + ms(5.0) * (1.0 - (-1f64).exp());
        assert!((blended - want).abs() < 1e3, "{blended} vs {want}");
    }

    #[test]
    fn failures_count_as_slow() {
        let e = RttEstimate::default();
        e.observe_failure(Duration::from_millis(2), 5);
        assert_eq!(e.estimate(5), FAILURE_PENALTY.as_nanos() as f64);
        e.observe_failure(Duration::from_secs(3), 5);
        assert_eq!(e.estimate(5), 3e9);
    }
}
