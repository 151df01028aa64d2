//! Deterministic weighted choice: a smooth weighted round-robin order computed once per config
//! update and walked with an atomic counter. Over any whole cycle every entry is chosen exactly in
//! proportion to its weight (1,000 requests on a 75/25 split give 750/250), and choices are spread
//! evenly inside a cycle (`a a b a`, not `a a a b`).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Longest cycle kept as a table. Longer cycles (large, coprime weights) use cumulative weights and
/// a binary search, which is just as exact over a cycle but not smooth.
const MAX_TABLE: u64 = 4096;

#[derive(Debug)]
pub struct Schedule {
    kind: Kind,
    next: AtomicUsize,
}

#[derive(Debug)]
enum Kind {
    /// One eligible entry.
    Single(usize),
    /// Entry index per step of the cycle.
    Table(Box<[u32]>),
    /// Cumulative weights: step `n` picks the first entry whose cumulative weight exceeds `n`.
    Cumulative { cumulative: Box<[u64]>, total: u64 },
}

// === impl Schedule ===

impl Schedule {
    /// A schedule over `weights` (entries of weight 0 are never chosen). `None` when every weight
    /// is 0 or there are no weights.
    pub fn new(weights: &[u32]) -> Option<Schedule> {
        let eligible: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] > 0).collect();
        let kind = match eligible.as_slice() {
            [] => return None,
            [only] => Kind::Single(*only),
            _ => {
                let gcd = eligible
                    .iter()
                    .fold(0u64, |g, &i| gcd(g, u64::from(weights[i])));
                let reduced: Vec<u64> = weights.iter().map(|&w| u64::from(w) / gcd).collect();
                let total: u64 = reduced.iter().sum();
                if total <= MAX_TABLE {
                    Kind::Table(smooth(&reduced, total))
                } else {
                    let mut acc = 0;
                    let cumulative = reduced
                        .iter()
                        .map(|w| {
                            acc += w;
                            acc
                        })
                        .collect();
                    Kind::Cumulative { cumulative, total }
                }
            }
        };
        Some(Schedule {
            kind,
            next: AtomicUsize::new(0),
        })
    }

    /// The index (into the weights given to [`Schedule::new`]) of the next choice.
    #[inline]
    pub fn next(&self) -> usize {
        match &self.kind {
            Kind::Single(i) => *i,
            Kind::Table(order) => {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                order[n % order.len()] as usize
            }
            Kind::Cumulative { cumulative, total } => {
                let n = self.next.fetch_add(1, Ordering::Relaxed) as u64 % total;
                cumulative.partition_point(|&c| c <= n)
            }
        }
    }

    /// Length of one cycle.
    pub fn cycle_len(&self) -> usize {
        match &self.kind {
            Kind::Single(_) => 1,
            Kind::Table(order) => order.len(),
            Kind::Cumulative { total, .. } => usize::try_from(*total).unwrap_or(usize::MAX),
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Nginx's smooth weighted round robin, run for one cycle.
fn smooth(weights: &[u64], total: u64) -> Box<[u32]> {
    let mut current = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = usize::MAX;
        for (i, w) in weights.iter().enumerate() {
            if *w == 0 {
                continue;
            }
            current[i] += *w as i64;
            if best == usize::MAX || current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        order.push(best as u32);
    }
    order.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(s: &Schedule, n: usize, len: usize) -> Vec<usize> {
        let mut c = vec![0; len];
        for _ in 0..n {
            c[s.next()] += 1;
        }
        c
    }

    #[test]
    fn splits_are_exact_over_a_thousand_requests() {
        for (weights, want) in [
            (vec![75, 25], vec![750, 250]),
            (vec![50, 50], vec![500, 500]),
            (vec![1, 1, 2], vec![250, 250, 500]),
            (vec![33, 67], vec![330, 670]),
            (vec![90, 0, 10], vec![900, 0, 100]),
            (vec![0, 100], vec![0, 1000]),
        ] {
            let s = Schedule::new(&weights).unwrap();
            assert_eq!(counts(&s, 1000, weights.len()), want, "{weights:?}");
        }
    }

    #[test]
    fn choices_are_spread_inside_a_cycle() {
        let s = Schedule::new(&[3, 1]).unwrap();
        let order: Vec<usize> = (0..4).map(|_| s.next()).collect();
        assert_eq!(order, [0, 0, 1, 0]);
        let s = Schedule::new(&[1, 1, 1]).unwrap();
        let order: Vec<usize> = (0..6).map(|_| s.next()).collect();
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
        // Every window of 4 consecutive picks on a 75/25 split has exactly one `1`.
        let s = Schedule::new(&[75, 25]).unwrap();
        let picks: Vec<usize> = (0..100).map(|_| s.next()).collect();
        for w in picks.windows(4) {
            assert_eq!(w.iter().filter(|&&i| i == 1).count(), 1, "{picks:?}");
        }
    }

    #[test]
    fn zero_weights_and_single_entries() {
        assert!(Schedule::new(&[]).is_none());
        assert!(Schedule::new(&[0, 0]).is_none());
        let s = Schedule::new(&[0, 7, 0]).unwrap();
        assert_eq!(s.cycle_len(), 1);
        assert!((0..10).all(|_| s.next() == 1));
    }

    #[test]
    fn long_cycles_stay_exact() {
        // 4999 + 5003 is prime-ish and above the table limit: cumulative mode.
        let s = Schedule::new(&[4999, 5003]).unwrap();
        assert_eq!(s.cycle_len(), 10002);
        assert_eq!(counts(&s, 10002 * 2, 2), [4999 * 2, 5003 * 2]);
    }
}
