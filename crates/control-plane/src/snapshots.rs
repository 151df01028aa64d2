//! Per-proxy snapshots of the current inputs (world + DNS table), computed once per input
//! version and shared by every stream and the admin port. New translation diagnostics are logged
//! here, once per gateway and change.

use std::collections::HashMap;
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bowline_model::proto::{self, pb};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::discovery::DnsTable;
use crate::translate::ingress::{IngressTarget, TlsFile};
use crate::translate::{self, Inputs, SidecarTarget, Translation};
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
    ingress: Arc<IngressState>,
}

/// What one proxy serves: a VirtualGateway (`namespace`, `name`), the Ingresses of a class, or
/// both; or, for a sidecar, its VirtualNode.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Served {
    pub gateway: Option<(String, String)>,
    pub ingress: Option<IngressTarget>,
    /// A sidecar: `gateway` is then its VirtualNode.
    pub sidecar: Option<SidecarTarget>,
}

/// Ingress serving: the directory of the Secrets' PEM files and the snapshots computed with
/// Ingresses.
#[derive(Default)]
struct IngressState {
    /// `--ingress-tls-dir`; without it, a private temporary directory created on first use and
    /// removed when the control plane exits.
    configured: Option<PathBuf>,
    temporary: OnceLock<Result<tempfile::TempDir, String>>,
    cache: Mutex<HashMap<Served, Arc<Computed>>>,
}

impl IngressState {
    fn tls_dir(&self) -> Result<PathBuf, String> {
        if let Some(dir) = &self.configured {
            return Ok(dir.clone());
        }
        self.temporary
            .get_or_init(|| {
                tempfile::Builder::new()
                    .prefix("bowline-ingress-tls-")
                    .tempdir()
                    .map_err(|e| {
                        format!("cannot create a private directory for Ingress TLS files: {e}")
                    })
            })
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .map_err(Clone::clone)
    }
}

/// Writes the TLS files a snapshot names: owner-only directory and files, each written to a
/// temporary name then renamed, skipped when present (names are derived from the content).
fn write_tls_files(files: &[TlsFile]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    for f in files {
        if f.path.exists() {
            continue;
        }
        let dir = f.path.parent().unwrap_or(std::path::Path::new("."));
        let fail = |what: &str, e: std::io::Error| format!("{what} {}: {e}", f.path.display());
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| fail("cannot create the directory of", e))?;
        let tmp = f.path.with_extension("tmp");
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| fail("cannot write", e))?;
        out.write_all(&f.contents)
            .and_then(|()| out.sync_all())
            .map_err(|e| fail("cannot write", e))?;
        std::fs::rename(&tmp, &f.path).map_err(|e| fail("cannot write", e))?;
    }
    Ok(())
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
            ingress: Arc::default(),
        }
    }

    /// Writes the PEM files of Ingress TLS Secrets under `dir` (`--ingress-tls-dir`) instead of
    /// a private temporary directory.
    pub fn with_ingress_tls_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.ingress = Arc::new(IngressState {
            configured: dir,
            ..IngressState::default()
        });
        self
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
        let key = (namespace.to_string(), name.to_string());
        let label = format!("{namespace}/{name}");
        self.compute(&self.cache, key, &label, |inputs| {
            self.translate_gateway(inputs, namespace, name)
        })
    }

    /// The translation of `--gateway NAMESPACE/NAME`: the VirtualGateway of that name, else the
    /// Gateway API Gateway of that name (a VirtualGateway wins when both exist: the Gateway is
    /// not served, with a diagnostic).
    fn translate_gateway(&self, inputs: &Inputs<'_>, namespace: &str, name: &str) -> Translation {
        let api = translate::gatewayapi::exists(inputs, namespace, name);
        if inputs.world.virtual_gateway(namespace, name).is_none() && api {
            return self.gateway_api(inputs, namespace, name);
        }
        let mut translation = translate::gateway(inputs, namespace, name);
        if api {
            translation.diagnostics.push(translate::Diagnostic::new(
                inputs.world,
                bowline_model::manifest::Kind::Gateway,
                namespace,
                name,
                "",
                "a VirtualGateway has the same namespace/name and is served by --gateway instead; rename one of them",
            ));
        }
        translation
    }

    /// A Gateway API Gateway's translation, its TLS files written (HTTPS listeners are left out
    /// when they cannot be).
    fn gateway_api(&self, inputs: &Inputs<'_>, namespace: &str, name: &str) -> Translation {
        let dir = match self.ingress.tls_dir() {
            Ok(dir) => dir,
            Err(e) => {
                warn!("{e}; HTTPS listeners of Gateway {namespace}/{name} are not served");
                PathBuf::new()
            }
        };
        let mut out = translate::gatewayapi::gateway_api(inputs, namespace, name, &dir);
        let failed = if dir.as_os_str().is_empty() {
            true
        } else if let Err(e) = write_tls_files(&out.files) {
            warn!("{e}; HTTPS listeners of Gateway {namespace}/{name} are not served");
            true
        } else {
            false
        };
        if failed {
            out.translation
                .snapshot
                .listeners
                .retain(|l| l.tls.is_none());
        }
        out.translation
    }

    /// The snapshot of what a gateway serves: its VirtualGateway, the Ingresses of its class, or
    /// both (the Ingress TLS files are written before the snapshot is returned).
    pub fn served(&self, served: &Served) -> Arc<Computed> {
        if let Some(target) = &served.sidecar {
            let (namespace, name) = served.gateway.clone().unwrap_or_default();
            let label = format!("sidecar {namespace}/{name}");
            return self.compute(&self.ingress.cache, served.clone(), &label, |inputs| {
                translate::sidecar(inputs, &namespace, &name, target)
            });
        }
        let Some(target) = &served.ingress else {
            let (namespace, name) = served.gateway.clone().unwrap_or_default();
            return self.gateway(&namespace, &name);
        };
        let label = match &served.gateway {
            Some((ns, name)) => format!("{ns}/{name} + ingress class {}", target.class),
            None => format!("ingress class {}", target.class),
        };
        self.compute(&self.ingress.cache, served.clone(), &label, |inputs| {
            let mut translation = match &served.gateway {
                Some((ns, name)) => self.translate_gateway(inputs, ns, name),
                None => Translation::default(),
            };
            let dir = match self.ingress.tls_dir() {
                Ok(dir) => dir,
                Err(e) => {
                    warn!("{e}; Ingress TLS hosts are not served");
                    PathBuf::new()
                }
            };
            let mut ingress = translate::ingress::ingress(inputs, target, &dir);
            if dir.as_os_str().is_empty() {
                ingress
                    .translation
                    .snapshot
                    .listeners
                    .retain(|l| l.tls.is_none());
            } else if let Err(e) = write_tls_files(&ingress.files) {
                warn!("{e}; Ingress TLS hosts are not served");
                ingress
                    .translation
                    .snapshot
                    .listeners
                    .retain(|l| l.tls.is_none());
            }
            for why in &ingress.ignored {
                debug!(class = %target.class, "Ingress not served: {why}");
            }
            translate::ingress::merge(&mut translation, ingress.translation);
            translation
        })
    }

    /// The cached snapshot under `key` for the current inputs, or a new one from `translate`.
    fn compute<K: Eq + Hash + Clone>(
        &self,
        cache: &Mutex<HashMap<K, Arc<Computed>>>,
        key: K,
        label: &str,
        translate: impl FnOnce(&Inputs<'_>) -> Translation,
    ) -> Arc<Computed> {
        let world = self.world();
        let dns = self.dns();
        let version = (world.version, dns.version);
        let previous = {
            let cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
            match cache.get(&key) {
                Some(c) if c.inputs_version == version => return c.clone(),
                other => other.cloned(),
            }
        };
        let translation = translate(&Inputs {
            world: &world,
            dns: &dns,
        });
        for d in &translation.diagnostics {
            if previous
                .as_ref()
                .is_none_or(|p| !p.translation.diagnostics.contains(d))
            {
                warn!(gateway = %label, "{d}");
            }
        }
        let resources = proto::snapshot_to_resources(&translation.snapshot);
        let computed = Arc::new(Computed {
            inputs_version: version,
            system_version: system_version(&resources),
            translation,
            resources,
        });
        let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// `--gateway NS/NAME` serves a Gateway API Gateway when no VirtualGateway has that name; when
    /// both exist the VirtualGateway wins and a diagnostic names the Gateway.
    #[test]
    fn gateway_names_resolve_virtual_gateway_first_then_gateway_api() {
        let gateway_api = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: b}\nspec: {controllerName: bowline.io/gateway-controller}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: demo}\nspec:\n  gatewayClassName: b\n  listeners: [{name: http, port: 8081, protocol: HTTP}]\n";
        let virtual_gateway = "---\napiVersion: appmesh.k8s.aws/v1beta2\nkind: VirtualGateway\nmetadata: {name: gw, namespace: demo}\nspec:\n  listeners: [{portMapping: {port: 8080, protocol: http}}]\n";
        let world = |text: &str| {
            let docs = bowline_model::manifest::parse_file(std::path::Path::new("t.yaml"), text)
                .into_iter()
                .map(|p| match p {
                    bowline_model::manifest::Parsed::Object { source, object, .. } => {
                        (source, *object)
                    }
                    other => panic!("{other:?}"),
                });
            Arc::new(World::from_documents(1, docs))
        };
        let tls = tempfile::tempdir().unwrap();
        for (text, port, conflict) in [
            (gateway_api.to_string(), 8081, false),
            (format!("{gateway_api}{virtual_gateway}"), 8080, true),
        ] {
            let (_world_tx, world_rx) = watch::channel(world(&text));
            let (_dns_tx, dns_rx) = watch::channel(Arc::new(DnsTable::default()));
            let snapshots = Snapshots::new(world_rx, dns_rx)
                .with_ingress_tls_dir(Some(tls.path().to_path_buf()));
            let c = snapshots.gateway("demo", "gw");
            let ports: Vec<u16> = c
                .translation
                .snapshot
                .listeners
                .iter()
                .map(|l| l.port)
                .collect();
            assert_eq!(ports, [port]);
            let diagnosed = c
                .translation
                .diagnostics
                .iter()
                .any(|d| d.object == "Gateway demo/gw" && d.message.contains("VirtualGateway"));
            assert_eq!(diagnosed, conflict, "{:?}", c.translation.diagnostics);
        }
    }

    #[test]
    fn tls_files_are_owner_only_and_written_once() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ingress-tls");
        let file = TlsFile {
            path: dir.join("default.a-tls.0123.key"),
            contents: Arc::from(&b"-----BEGIN PRIVATE KEY-----\n"[..]),
        };
        write_tls_files(std::slice::from_ref(&file)).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&file.path), 0o600);
        assert_eq!(std::fs::read(&file.path).unwrap(), &file.contents[..]);
        // Named after their content: an existing file is left alone.
        std::fs::write(&file.path, b"kept").unwrap();
        write_tls_files(std::slice::from_ref(&file)).unwrap();
        assert_eq!(std::fs::read(&file.path).unwrap(), b"kept");
        assert!(!dir.join("default.a-tls.0123.tmp").exists());
    }
}
