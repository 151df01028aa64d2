//! Per-proxy snapshots of the current inputs (world + DNS table), computed once per input
//! version and shared by every stream and the admin port. New translation diagnostics are logged
//! here, once per gateway and change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bowline_model::proto::{self, pb};
use tokio::sync::watch;
use tracing::warn;

use crate::discovery::DnsTable;
use crate::translate::{self, Inputs, Translation};
use crate::world::World;

/// One gateway's translation for one version of the inputs.
#[derive(Debug)]
pub struct Computed {
    /// (world version, DNS table version) the snapshot was computed from.
    pub inputs_version: (u64, u64),
    pub translation: Translation,
    /// Wire resources keyed `kind/name`, with content versions.
    pub resources: Vec<(String, pb::Resource)>,
    /// Digest of every key and version: equal versions mean equal configurations.
    pub system_version: String,
}

/// Shared access to the current inputs and the snapshots computed from them.
#[derive(Clone)]
pub struct Snapshots {
    world: watch::Receiver<Arc<World>>,
    dns: watch::Receiver<Arc<DnsTable>>,
    cache: Arc<Mutex<Cache>>,
}

/// Computed snapshots by (namespace, name).
type Cache = HashMap<(String, String), Arc<Computed>>;

/// Notifies of every new version of the inputs.
pub struct Changes {
    world: watch::Receiver<Arc<World>>,
    dns: watch::Receiver<Arc<DnsTable>>,
}

impl Changes {
    /// Waits for the next change of the world or the DNS table; `false` once the sources are
    /// gone (shutdown).
    pub async fn changed(&mut self) -> bool {
        tokio::select! {
            r = self.world.changed() => r.is_ok(),
            r = self.dns.changed() => r.is_ok(),
        }
    }
}

// === impl Snapshots ===

impl Snapshots {
    pub fn new(world: watch::Receiver<Arc<World>>, dns: watch::Receiver<Arc<DnsTable>>) -> Self {
        Snapshots {
            world,
            dns,
            cache: Arc::default(),
        }
    }

    pub fn subscribe(&self) -> Changes {
        let mut world = self.world.clone();
        let mut dns = self.dns.clone();
        world.mark_unchanged();
        dns.mark_unchanged();
        Changes { world, dns }
    }

    pub fn world(&self) -> Arc<World> {
        self.world.borrow().clone()
    }

    pub fn dns(&self) -> Arc<DnsTable> {
        self.dns.borrow().clone()
    }

    /// The snapshot of a gateway for the current inputs.
    pub fn gateway(&self, namespace: &str, name: &str) -> Arc<Computed> {
        let world = self.world();
        let dns = self.dns();
        let version = (world.version, dns.version);
        let key = (namespace.to_string(), name.to_string());
        let previous = {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            match cache.get(&key) {
                Some(c) if c.inputs_version == version => return c.clone(),
                other => other.cloned(),
            }
        };
        let translation = translate::gateway(
            &Inputs {
                world: &world,
                dns: &dns,
            },
            namespace,
            name,
        );
        for d in &translation.diagnostics {
            if previous
                .as_ref()
                .is_none_or(|p| !p.translation.diagnostics.contains(d))
            {
                warn!(gateway = %format!("{namespace}/{name}"), "{d}");
            }
        }
        let resources = proto::snapshot_to_resources(&translation.snapshot);
        let computed = Arc::new(Computed {
            inputs_version: version,
            system_version: system_version(&resources),
            translation,
            resources,
        });
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        // Another caller may have computed a newer version meanwhile; keep the newest.
        match cache.get(&key) {
            Some(c) if c.inputs_version > version => c.clone(),
            _ => {
                cache.insert(key, computed.clone());
                computed
            }
        }
    }
}

/// A digest of the sorted `key=version` lines of a snapshot.
pub fn system_version(resources: &[(String, pb::Resource)]) -> String {
    let mut lines: Vec<String> = resources
        .iter()
        .map(|(k, r)| format!("{k}={}\n", r.version))
        .collect();
    lines.sort();
    proto::digest(lines.concat().as_bytes())
}
