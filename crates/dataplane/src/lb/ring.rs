//! Ring hash: every endpoint owns points ("virtual nodes") on a 64-bit ring, in proportion to its
//! weight; a key belongs to the first point at or after its hash. A point's position depends only
//! on its endpoint's identity and index, so adding or removing an endpoint moves only the keys of
//! the points it adds or removes (≈ 1/N of them).

use super::hash::mix;

/// Points of the lightest endpoint; heavier ones get proportionally more. With 256 points per
/// endpoint the share of keys each one gets stays within a few percent of its weight's share.
pub const POINTS_PER_MIN_WEIGHT: u64 = 256;

/// Upper bound on the ring's size (points are scaled down proportionally above it).
pub const MAX_POINTS: u64 = 1 << 20;

#[derive(Debug)]
pub struct Ring {
    /// Sorted point positions.
    points: Box<[u64]>,
    /// Endpoint index of each point.
    owners: Box<[u32]>,
}

impl Ring {
    /// A ring over endpoints identified by `ids` (stable hashes of their addresses) with
    /// `weights` (each at least 1). `None` without endpoints.
    pub fn new(ids: &[u64], weights: &[u32]) -> Option<Ring> {
        let min = weights.iter().copied().filter(|w| *w > 0).min()?;
        let mut counts: Vec<u64> = weights
            .iter()
            .map(|&w| (u64::from(w) * POINTS_PER_MIN_WEIGHT / u64::from(min)).max(1))
            .collect();
        let total: u64 = counts.iter().sum();
        if total > MAX_POINTS {
            for c in &mut counts {
                *c = (*c * MAX_POINTS / total).max(1);
            }
        }
        let mut entries: Vec<(u64, u32)> = Vec::with_capacity(counts.iter().sum::<u64>() as usize);
        for (i, (&id, &count)) in ids.iter().zip(&counts).enumerate() {
            for r in 0..count {
                entries.push((point(id, r), i as u32));
            }
        }
        entries.sort_unstable();
        Some(Ring {
            points: entries.iter().map(|e| e.0).collect(),
            owners: entries.iter().map(|e| e.1).collect(),
        })
    }

    /// The owner of `key`, or of the first of the next `max_steps` points whose owner is `ok`.
    pub fn lookup(&self, key: u64, ok: &dyn Fn(usize) -> bool, max_steps: usize) -> Option<usize> {
        let len = self.points.len();
        let start = self.points.partition_point(|&p| p < key);
        (0..max_steps.min(len))
            .map(|step| self.owners[(start + step) % len] as usize)
            .find(|&owner| ok(owner))
    }

    /// Points on the ring.
    pub fn points(&self) -> usize {
        self.points.len()
    }
}

/// The position of point `r` of the endpoint `id`.
fn point(id: u64, r: u64) -> u64 {
    mix(id ^ mix(r))
}
