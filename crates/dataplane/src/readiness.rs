//! Readiness as a set of latches: the process is ready when no latch is held. Each component
//! registers a latch for a prerequisite (the first config applied and its listeners bound, ...)
//! and drops it once the prerequisite is met. Draining registers one again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Shared readiness state. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    pending: Arc<Mutex<BTreeMap<&'static str, usize>>>,
}

/// Holds readiness back until dropped.
#[derive(Debug)]
#[must_use = "readiness is released when the latch is dropped"]
pub struct Latch {
    name: &'static str,
    readiness: Readiness,
}

// === impl Readiness ===

impl Readiness {
    /// Holds readiness back until the returned latch is dropped.
    pub fn register(&self, name: &'static str) -> Latch {
        *self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name)
            .or_default() += 1;
        Latch {
            name,
            readiness: self.clone(),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Names of the latches still held, sorted.
    pub fn pending(&self) -> Vec<&'static str> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect()
    }
}

// === impl Latch ===

impl Latch {
    /// Releases the latch (same as dropping it).
    pub fn release(self) {}
}

impl Drop for Latch {
    fn drop(&mut self) {
        let mut pending = self
            .readiness
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = pending.get_mut(self.name) {
            *n -= 1;
            if *n == 0 {
                pending.remove(self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_every_latch_is_released() {
        let r = Readiness::default();
        assert!(r.is_ready());
        let a = r.register("config");
        let b = r.register("config");
        let c = r.register("admin");
        assert_eq!(r.pending(), ["admin", "config"]);
        a.release();
        assert_eq!(r.pending(), ["admin", "config"]);
        drop(b);
        c.release();
        assert!(r.is_ready());
        assert!(r.pending().is_empty());
    }
}
