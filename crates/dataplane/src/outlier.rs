//! Outlier detection (App Mesh `outlierDetection`, Envoy's consecutive-5xx detector): an endpoint
//! that fails `maxServerErrors` attempts in a row is ejected from load balancing for
//! `baseEjectionDuration` × the number of times it was ejected (at most 300 s, or the base
//! duration when that is longer), unless `maxEjectionPercent` of the cluster's endpoints are
//! ejected already; one endpoint may always be ejected. A failure is a 5xx response or no
//! response (connect failure, reset, timeout); any other response resets the count. The
//! ejection count decays by one for every `interval` the endpoint spends in service.
//!
//! Ejections expire on their own (an ejected endpoint is available again once its time is up):
//! no timer, no sweep task, and no lock on the data path.

use std::sync::atomic::Ordering;

use bowline_model::ir;

use crate::resilience::EndpointState;

/// Envoy's default `max_ejection_time`.
pub const MAX_EJECTION_MS: u64 = 300_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outlier {
    max_errors: u32,
    interval_ms: u64,
    base_ms: u64,
    max_percent: u32,
}

impl Outlier {
    pub fn compile(o: &ir::OutlierDetection) -> Outlier {
        Outlier {
            max_errors: o.max_server_errors.max(1),
            interval_ms: o.interval_ms,
            base_ms: o.base_ejection_duration_ms,
            max_percent: o.max_ejection_percent.min(100),
        }
    }

    /// Records the outcome of an attempt on `endpoints[i]` at `now_ms`; returns whether it
    /// ejected the endpoint.
    pub fn record<E: AsRef<EndpointState>>(
        &self,
        endpoints: &[E],
        i: usize,
        failed: bool,
        now_ms: u64,
    ) -> bool {
        let ep = endpoints[i].as_ref();
        if !failed {
            if ep.consecutive_errors.load(Ordering::Relaxed) != 0 {
                ep.consecutive_errors.store(0, Ordering::Relaxed);
            }
            return false;
        }
        let errors = ep.consecutive_errors.fetch_add(1, Ordering::AcqRel) + 1;
        if errors < self.max_errors {
            return false;
        }
        ep.consecutive_errors.store(0, Ordering::Release);
        let until = ep.ejected_until.load(Ordering::Acquire);
        if until > now_ms {
            return false;
        }
        let ejected = endpoints
            .iter()
            .filter(|e| e.as_ref().ejected_until.load(Ordering::Acquire) > now_ms)
            .count();
        let allowed = (endpoints.len() * self.max_percent as usize / 100).max(1);
        if ejected >= allowed {
            return false;
        }
        // Decay: one ejection forgiven per interval in service since the last one ended.
        let mut count = ep.ejections.load(Ordering::Acquire);
        let last_end = ep.ejection_end.load(Ordering::Acquire);
        if self.interval_ms > 0 && last_end > 0 && now_ms > last_end {
            let forgiven = (now_ms - last_end) / self.interval_ms;
            count = count.saturating_sub(u32::try_from(forgiven).unwrap_or(u32::MAX));
        }
        count = count.saturating_add(1);
        let duration = self
            .base_ms
            .saturating_mul(u64::from(count))
            .min(MAX_EJECTION_MS.max(self.base_ms));
        let end = now_ms.saturating_add(duration).max(now_ms + 1);
        // Only one of several concurrent failures ejects.
        if ep
            .ejected_until
            .compare_exchange(until, end, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        ep.ejections.store(count, Ordering::Release);
        ep.ejection_end.store(end, Ordering::Release);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outlier(max_errors: u32, max_percent: u32) -> Outlier {
        Outlier::compile(&ir::OutlierDetection {
            max_server_errors: max_errors,
            interval_ms: 10_000,
            base_ejection_duration_ms: 30_000,
            max_ejection_percent: max_percent,
        })
    }

    fn states(n: usize) -> Vec<EndpointState> {
        (0..n).map(|_| EndpointState::default()).collect()
    }

    #[test]
    fn consecutive_errors_eject_and_a_success_resets_the_count() {
        let o = outlier(3, 50);
        let s = states(4);
        let eps = &s;
        assert!(!o.record(eps, 0, true, 1000));
        assert!(!o.record(eps, 0, true, 1000));
        assert!(!o.record(eps, 0, false, 1000));
        assert!(!o.record(eps, 0, true, 1000));
        assert!(!o.record(eps, 0, true, 1000));
        assert!(o.record(eps, 0, true, 1000), "third in a row");
        assert!(!s[0].available(1000 + 29_999));
        assert!(
            s[0].available(1000 + 30_000),
            "ejected for the base duration"
        );
    }

    #[test]
    fn ejections_grow_with_repeats_and_decay_with_time_in_service() {
        let o = outlier(1, 100);
        let s = states(2);
        let eps = &s;
        assert!(o.record(eps, 0, true, 1000));
        // Back at 31 s, failing again at once: twice the base.
        assert!(o.record(eps, 0, true, 31_000));
        assert!(!s[0].available(31_000 + 59_999));
        assert!(s[0].available(31_000 + 60_000));
        // 20 s (two intervals) in service after that forgive both: the base again.
        let back = 31_000 + 60_000;
        assert!(o.record(eps, 0, true, back + 20_000));
        assert!(s[0].available(back + 20_000 + 30_000));
    }

    #[test]
    fn the_ejected_share_is_capped_but_one_endpoint_may_always_go() {
        let o = outlier(1, 50);
        let s = states(4);
        let eps = &s;
        assert!(o.record(eps, 0, true, 1000));
        assert!(o.record(eps, 1, true, 1000));
        assert!(!o.record(eps, 2, true, 1000), "50 % of 4 are out already");
        assert!(s[2].available(1000));

        let none = outlier(1, 0);
        let s = states(3);
        let eps = &s;
        assert!(none.record(eps, 0, true, 1000), "at least one");
        assert!(!none.record(eps, 1, true, 1000));
    }

    #[test]
    fn an_ejected_endpoint_is_not_ejected_again_until_it_returns() {
        let o = outlier(1, 100);
        let s = states(2);
        let eps = &s;
        assert!(o.record(eps, 0, true, 1000));
        assert!(!o.record(eps, 0, true, 2000));
        assert_eq!(s[0].ejections.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn ejection_time_is_capped() {
        let o = outlier(1, 100);
        let s = states(1);
        let eps = &s;
        let mut now = 1000;
        for _ in 0..20 {
            assert!(o.record(eps, 0, true, now));
            now = s[0].ejected_until.load(Ordering::Relaxed);
        }
        let last = s[0].ejected_until.load(Ordering::Relaxed);
        assert!(o.record(eps, 0, true, last));
        assert_eq!(
            s[0].ejected_until.load(Ordering::Relaxed) - last,
            MAX_EJECTION_MS
        );
    }
}
