//! Service discovery: from a VirtualNode's `serviceDiscovery` to endpoints.
//!
//! * `awsCloudMap`: the pods the App Mesh controller would have registered, known through the
//!   Services that select them (see [`from_cloud_map`]).
//! * `<service>.<namespace>.svc` and `<service>.<namespace>.svc.cluster.local` resolve against
//!   the Service and `discovery.k8s.io/v1` EndpointSlice objects of the world, as cluster DNS plus
//!   kube-proxy would ([`resolve`], pure).
//! * IP literals are their own endpoint.
//! * Any other name (including `localhost`) resolves through DNS (system configuration and hosts
//!   file). A background task ([`spawn_dns`]) keeps a [`DnsTable`] of the names the world needs,
//!   refreshed on TTL (clamped to [`MIN_TTL`]..=[`MAX_TTL`]); on failure the last good addresses
//!   stay and the lookup is retried with backoff. Every change of the table is published.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bowline_model::appmesh::VirtualNodeSpec;
use bowline_model::ir;
use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::world::World;

/// Shortest time a DNS answer is used before it is looked up again.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// Longest time a DNS answer is used before it is looked up again.
pub const MAX_TTL: Duration = Duration::from_secs(300);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Where a hostname's endpoints come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A Kubernetes Service, resolved from Service and EndpointSlice objects.
    Service { namespace: String, name: String },
    /// An IP literal.
    Ip(IpAddr),
    /// A DNS name (lower case, without a trailing dot).
    Dns(String),
}

/// Classifies a VirtualNode hostname.
pub fn target(hostname: &str) -> Target {
    let host = hostname.trim().trim_end_matches('.').to_ascii_lowercase();
    let unbracketed = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Target::Ip(ip);
    }
    let labels: Vec<&str> = host.split('.').collect();
    match labels.as_slice() {
        [name, namespace, "svc"] | [name, namespace, "svc", "cluster", "local"]
            if !name.is_empty() && !namespace.is_empty() =>
        {
            Target::Service {
                namespace: namespace.to_string(),
                name: name.to_string(),
            }
        }
        _ => Target::Dns(host),
    }
}

/// The DNS names the world needs resolved: VirtualNode hostnames that are neither Kubernetes
/// service names nor IP literals, and the `externalName` of ExternalName Services they or an
/// Ingress backend name.
pub fn dns_names(world: &World) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (_, node) in world.virtual_nodes() {
        let Some(hostname) = node_hostname(&node.spec) else {
            continue;
        };
        match target(hostname) {
            Target::Dns(name) => {
                names.insert(name);
            }
            Target::Service { namespace, name } => {
                if let Some(Target::Dns(n)) = world
                    .service(&namespace, &name)
                    .and_then(external_name)
                    .map(|n| target(&n))
                {
                    names.insert(n);
                }
            }
            Target::Ip(_) => {}
        }
    }
    for (_, ingress) in world.ingresses() {
        let namespace = ingress.metadata.namespace.as_deref().unwrap_or("default");
        for service in ingress_backend_services(ingress) {
            if let Some(Target::Dns(n)) = world
                .service(namespace, service)
                .and_then(external_name)
                .map(|n| target(&n))
            {
                names.insert(n);
            }
        }
    }
    names
}

/// The Service names an Ingress's backends refer to (default backend and every path).
fn ingress_backend_services(
    ingress: &k8s_openapi::api::networking::v1::Ingress,
) -> impl Iterator<Item = &str> {
    let spec = ingress.spec.as_ref();
    let default = spec.and_then(|s| s.default_backend.as_ref());
    let paths = spec
        .and_then(|s| s.rules.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|r| r.http.as_ref())
        .flat_map(|h| h.paths.iter().map(|p| &p.backend));
    default
        .into_iter()
        .chain(paths)
        .filter_map(|b| b.service.as_ref().map(|s| s.name.as_str()))
}

fn node_hostname(spec: &VirtualNodeSpec) -> Option<&str> {
    spec.service_discovery
        .as_ref()?
        .dns
        .as_ref()
        .map(|d| d.hostname.as_str())
}

fn external_name(svc: &Service) -> Option<String> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        spec.external_name.clone()
    } else {
        None
    }
}

/// Addresses of the DNS names in use, as last resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsTable {
    /// Grows with every change.
    pub version: u64,
    /// Sorted, without duplicates. A name is absent until its first successful lookup.
    pub names: BTreeMap<String, Vec<IpAddr>>,
}

/// Endpoints of one VirtualNode listener port, and why some may be missing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Sorted by address then port, without duplicates.
    pub endpoints: Vec<ir::Endpoint>,
    /// Human-readable notes (missing Service, no matching port, waiting for DNS, …).
    pub notes: Vec<String>,
}

/// Resolves the endpoints of a VirtualNode for one of its listener ports. Pure.
pub fn resolve(world: &World, dns: &DnsTable, node: &VirtualNodeSpec, port: u16) -> Resolved {
    let mut out = Resolved::default();
    if let Some(cloud_map) = node
        .service_discovery
        .as_ref()
        .and_then(|sd| sd.aws_cloud_map.as_ref())
    {
        let mut addrs = Vec::new();
        from_cloud_map(world, dns, cloud_map, port, &mut addrs, &mut out.notes);
        out.endpoints = endpoints_of(addrs);
        return out;
    }
    let Some(hostname) = node_hostname(node) else {
        out.notes
            .push("no serviceDiscovery.dns.hostname; the node has no endpoints".into());
        return out;
    };
    let mut addrs: Vec<(IpAddr, u16)> = Vec::new();
    match target(hostname) {
        Target::Ip(ip) => addrs.push((ip, port)),
        Target::Dns(name) => from_dns(dns, &name, port, &mut addrs, &mut out.notes),
        Target::Service { namespace, name } => from_service(
            world,
            dns,
            &namespace,
            &name,
            ServicePortOf::Port(port),
            &mut addrs,
            &mut out.notes,
        ),
    }
    out.endpoints = endpoints_of(addrs);
    out
}

/// Resolves the endpoints of one port of a Kubernetes Service (an Ingress backend) exactly as a
/// VirtualNode whose hostname names that Service. Pure.
pub fn resolve_service(
    world: &World,
    dns: &DnsTable,
    namespace: &str,
    name: &str,
    port: u16,
) -> Resolved {
    let mut out = Resolved::default();
    let mut addrs: Vec<(IpAddr, u16)> = Vec::new();
    from_service(
        world,
        dns,
        namespace,
        name,
        ServicePortOf::Port(port),
        &mut addrs,
        &mut out.notes,
    );
    out.endpoints = endpoints_of(addrs);
    out
}

/// Sorted, deduplicated endpoints of weight 1.
fn endpoints_of(mut addrs: Vec<(IpAddr, u16)>) -> Vec<ir::Endpoint> {
    addrs.sort();
    addrs.dedup();
    addrs
        .into_iter()
        .map(|(ip, port)| ir::Endpoint {
            address: ip.to_string(),
            port,
            weight: 1,
        })
        .collect()
}

fn from_dns(
    dns: &DnsTable,
    name: &str,
    port: u16,
    addrs: &mut Vec<(IpAddr, u16)>,
    notes: &mut Vec<String>,
) {
    match dns.names.get(name) {
        Some(ips) => addrs.extend(ips.iter().map(|ip| (*ip, port))),
        None => notes.push(format!(
            "{name:?} has not been resolved through DNS yet; the node has no endpoints until it is"
        )),
    }
}

/// Kubernetes semantics: the requested port must be a Service `port`; the endpoint port is that
/// of the EndpointSlice port whose `name` equals the Service port's name (the EndpointSlice
/// controller writes the Service port's name and the resolved numeric `targetPort` there, so a
/// named `targetPort` is honoured through the slice). Endpoints whose `conditions.ready` is false
/// are excluded unless the Service publishes not-ready addresses. Headless Services
/// (`clusterIP: None`) resolve to the ready endpoints on the requested port, as their DNS records
/// do; ExternalName Services resolve their `externalName` through DNS.
/// Which port of a Service is meant.
#[derive(Clone, Copy, Debug)]
enum ServicePortOf {
    /// The Service port with this `port` number (what a client of the Service dials).
    Port(u16),
    /// The Service port whose numeric `targetPort` (its `port` when unset) is this container
    /// port: how a pod's own listener port is found behind its Service.
    Target(u16),
}

impl ServicePortOf {
    fn number(self) -> u16 {
        match self {
            ServicePortOf::Port(p) | ServicePortOf::Target(p) => p,
        }
    }

    fn picks(self, sp: &ServicePort) -> bool {
        match self {
            ServicePortOf::Port(p) => sp.port == i32::from(p),
            ServicePortOf::Target(p) => match &sp.target_port {
                None => sp.port == i32::from(p),
                Some(IntOrString::Int(t)) => *t == i32::from(p),
                Some(IntOrString::String(_)) => false,
            },
        }
    }
}

fn from_service(
    world: &World,
    dns: &DnsTable,
    namespace: &str,
    name: &str,
    pick: ServicePortOf,
    addrs: &mut Vec<(IpAddr, u16)>,
    notes: &mut Vec<String>,
) {
    let port = pick.number();
    let Some(svc) = world.service(namespace, name) else {
        notes.push(format!(
            "Service {namespace}/{name} not found; the node has no endpoints"
        ));
        return;
    };
    if let Some(ext) = external_name(svc) {
        match target(&ext) {
            Target::Ip(ip) => addrs.push((ip, port)),
            Target::Dns(n) => from_dns(dns, &n, port, addrs, notes),
            Target::Service { namespace, name } => notes.push(format!(
                "ExternalName Service points at Service {namespace}/{name}; chains are not followed"
            )),
        }
        return;
    }
    let spec = svc.spec.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let service_port = spec
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|p| pick.picks(p) && is_tcp(p.protocol.as_deref()));
    if service_port.is_none() && !headless {
        let what = match pick {
            ServicePortOf::Port(_) => "port",
            ServicePortOf::Target(_) => "port targeting container port",
        };
        notes.push(format!(
            "Service {namespace}/{name} has no TCP {what} {port}; the node has no endpoints"
        ));
        return;
    }
    let mut slices = 0;
    for (_, slice) in world.endpoint_slices() {
        let meta = &slice.metadata;
        if meta.namespace.as_deref().unwrap_or("default") != namespace
            || meta
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(String::as_str)
                != Some(name)
        {
            continue;
        }
        slices += 1;
        let slice_name = meta.name.as_deref().unwrap_or_default();
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            notes.push(format!(
                "EndpointSlice {namespace}/{slice_name}: addressType {:?} is not supported; ignored",
                slice.address_type
            ));
            continue;
        }
        let endpoint_port = match service_port {
            None => port,
            Some(sp) => match slice_port(slice, sp) {
                Ok(p) => p,
                Err(note) => {
                    notes.push(format!("EndpointSlice {namespace}/{slice_name}: {note}"));
                    continue;
                }
            },
        };
        for ep in slice.endpoints.as_deref().unwrap_or_default() {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready && !publish_not_ready {
                continue;
            }
            // Addresses of one endpoint are fungible; consumers use the first (as kube-proxy).
            let Some(first) = ep.addresses.first() else {
                continue;
            };
            match first.parse::<IpAddr>() {
                Ok(ip) => addrs.push((ip, endpoint_port)),
                Err(_) => notes.push(format!(
                    "EndpointSlice {namespace}/{slice_name}: {first:?} is not an IP address; ignored"
                )),
            }
        }
    }
    if slices == 0 {
        notes.push(format!(
            "Service {namespace}/{name} has no EndpointSlice (label {SERVICE_NAME_LABEL}={name}); the node has no endpoints"
        ));
    }
}

/// AWS Cloud Map discovery, as the App Mesh controller for Kubernetes feeds it. The controller
/// registers the pods each VirtualNode's `podSelector` selects (ready ones healthy) as instances
/// of the node's Cloud Map service (`namespaceName`, `serviceName`), with the pod's labels and the
/// node's `attributes` as instance attributes; a node's endpoints are the instances of its
/// service whose attributes include all of its `attributes`, on the listener port. The pods are
/// known two ways, and both count: Pod objects (running, with a `status.podIP`, not unready),
/// and the Services that select them: a Service in the registering node's namespace whose
/// `selector` the node's `podSelector` selects contributes the endpoints of its EndpointSlices
/// (through the Service port targeting the listener port), with the Service's selector as their
/// labels. So several nodes that share one Cloud Map service (told apart by
/// `attributes`, as in the howto-k8s-cloudmap walkthrough) resolve as they do on AWS. Pure.
fn from_cloud_map(
    world: &World,
    dns: &DnsTable,
    want: &bowline_model::appmesh::AwsCloudMapServiceDiscovery,
    port: u16,
    addrs: &mut Vec<(IpAddr, u16)>,
    notes: &mut Vec<String>,
) {
    let same_service = |sd: &bowline_model::appmesh::AwsCloudMapServiceDiscovery| {
        sd.namespace_name.eq_ignore_ascii_case(&want.namespace_name)
            && sd.service_name.eq_ignore_ascii_case(&want.service_name)
    };
    let mut services: BTreeSet<(String, String)> = BTreeSet::new();
    let mut registrars = 0;
    let mut pods = 0;
    for (_, node) in world.virtual_nodes() {
        let Some(registered) = node
            .spec
            .service_discovery
            .as_ref()
            .and_then(|sd| sd.aws_cloud_map.as_ref())
            .filter(|sd| same_service(sd))
        else {
            continue;
        };
        let Some(pod_selector) = node.spec.pod_selector.as_ref() else {
            continue;
        };
        registrars += 1;
        let node_ns = node.metadata.namespace.as_deref().unwrap_or("default");
        // The instance attributes: the pod's labels, then the registering node's own.
        let attributes_of = |labels: &BTreeMap<String, String>| {
            let mut attributes = labels.clone();
            for a in registered.attributes.iter().flatten() {
                attributes.insert(a.key.clone(), a.value.clone());
            }
            attributes
        };
        let wanted = |attributes: &BTreeMap<String, String>| {
            want.attributes
                .iter()
                .flatten()
                .all(|a| attributes.get(&a.key) == Some(&a.value))
        };
        for (_, pod) in world.pods() {
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            if pod.metadata.namespace.as_deref().unwrap_or("default") != node_ns
                || pod_selector.matches(&labels) != Ok(true)
                || !wanted(&attributes_of(&labels))
            {
                continue;
            }
            if let Some(ip) = running_pod_ip(pod) {
                addrs.push((ip, port));
                pods += 1;
            }
        }
        for (_, svc) in world.services() {
            if svc.metadata.namespace.as_deref().unwrap_or("default") != node_ns {
                continue;
            }
            let Some(selector) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
                continue;
            };
            if selector.is_empty() || pod_selector.matches(selector) != Ok(true) {
                continue;
            }
            // Other Services of the same pods (metrics, admin) are not the listener's.
            let on_listener = svc
                .spec
                .as_ref()
                .and_then(|s| s.ports.as_deref())
                .unwrap_or_default()
                .iter()
                .any(|p| ServicePortOf::Target(port).picks(p));
            if !on_listener {
                continue;
            }
            if wanted(&attributes_of(selector)) {
                services.insert((
                    node_ns.to_string(),
                    svc.metadata.name.clone().unwrap_or_default(),
                ));
            }
        }
    }
    let cloud_map = format!(
        "AWS Cloud Map service {}/{}",
        want.namespace_name, want.service_name
    );
    if registrars == 0 {
        notes.push(format!(
            "{cloud_map}: no VirtualNode with a podSelector registers pods in it; the node has no endpoints"
        ));
        return;
    }
    if services.is_empty() && pods == 0 {
        notes.push(format!(
            "{cloud_map}: no running Pod, and no Service with a port targeting {port}, is selected by its nodes' podSelector (and these attributes); the node has no endpoints"
        ));
        return;
    }
    for (ns, name) in services {
        from_service(
            world,
            dns,
            &ns,
            &name,
            ServicePortOf::Target(port),
            addrs,
            notes,
        );
    }
}

/// The address of a pod that is running and not unready: `status.podIP`, unless the phase is
/// `Succeeded` or `Failed` or the `Ready` condition is `False`.
fn running_pod_ip(pod: &k8s_openapi::api::core::v1::Pod) -> Option<IpAddr> {
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let unready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "False");
    if unready {
        return None;
    }
    status.pod_ip.as_deref()?.parse().ok()
}

fn is_tcp(protocol: Option<&str>) -> bool {
    protocol.is_none_or(|p| p.eq_ignore_ascii_case("TCP"))
}

/// The endpoint port of a slice for one Service port: the slice port with the same name.
fn slice_port(
    slice: &k8s_openapi::api::discovery::v1::EndpointSlice,
    sp: &ServicePort,
) -> Result<u16, String> {
    let want = sp.name.as_deref().unwrap_or_default();
    let ports = slice.ports.as_deref().unwrap_or_default();
    let Some(found) = ports
        .iter()
        .find(|p| p.name.as_deref().unwrap_or_default() == want && is_tcp(p.protocol.as_deref()))
    else {
        let names: Vec<String> = ports
            .iter()
            .map(|p| format!("{:?}", p.name.as_deref().unwrap_or_default()))
            .collect();
        return Err(format!(
            "no port named {want:?} (the Service port's name; EndpointSlice ports carry the Service port name, not the targetPort name), found [{}]; ignored",
            names.join(", ")
        ));
    };
    let number = match found.port {
        Some(p) => p,
        // A slice port without a number: fall back to the Service's numeric targetPort.
        None => match &sp.target_port {
            None => sp.port,
            Some(IntOrString::Int(p)) => *p,
            Some(IntOrString::String(n)) => {
                return Err(format!(
                    "port {want:?} has no number and the Service's targetPort {n:?} is a name; ignored"
                ));
            }
        },
    };
    u16::try_from(number)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("port {want:?} number {number} is out of range; ignored"))
}

// === DNS ===

/// One DNS answer: the addresses and how long they may be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub addresses: Vec<IpAddr>,
    pub ttl: Duration,
}

pub type LookupFuture = Pin<Box<dyn Future<Output = Result<Answer, String>> + Send>>;

/// Something that resolves names (the system resolver, or a fake in tests).
pub trait Resolve: Send + Sync + 'static {
    fn lookup(&self, name: &str) -> LookupFuture;
}

/// The system resolver: `/etc/resolv.conf` and the hosts file.
pub struct SystemResolver {
    inner: hickory_resolver::TokioResolver,
}

impl SystemResolver {
    pub fn new() -> Self {
        let builder = match hickory_resolver::TokioResolver::builder_tokio() {
            Ok(b) => b,
            Err(error) => {
                warn!(%error, "cannot read the system DNS configuration; using defaults");
                hickory_resolver::TokioResolver::builder_with_config(
                    hickory_resolver::config::ResolverConfig::default(),
                    hickory_resolver::name_server::TokioConnectionProvider::default(),
                )
            }
        };
        SystemResolver {
            inner: builder.build(),
        }
    }
}

impl Default for SystemResolver {
    fn default() -> Self {
        Self::new()
    }
}

impl Resolve for SystemResolver {
    fn lookup(&self, name: &str) -> LookupFuture {
        let resolver = self.inner.clone();
        let name = name.to_string();
        Box::pin(async move {
            let lookup = resolver
                .lookup_ip(name.as_str())
                .await
                .map_err(|e| e.to_string())?;
            let ttl = lookup
                .valid_until()
                .saturating_duration_since(std::time::Instant::now());
            Ok(Answer {
                addresses: lookup.iter().collect(),
                ttl,
            })
        })
    }
}

/// Runs DNS discovery until `drain` fires: resolves every name of [`dns_names`] for the current
/// world, and publishes the table whenever an address list changes or a name goes away.
pub fn spawn_dns(
    mut world: watch::Receiver<Arc<World>>,
    resolver: Arc<dyn Resolve>,
    mut drain: watch::Receiver<bool>,
) -> (watch::Receiver<Arc<DnsTable>>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Arc::new(DnsTable::default()));
    let tx = Arc::new(tx);
    let task = tokio::spawn(async move {
        let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        loop {
            let wanted = dns_names(&world.borrow_and_update());
            running.retain(|name, task| {
                let keep = wanted.contains(name);
                if !keep {
                    task.abort();
                    debug!(name, "DNS name no longer used");
                }
                keep
            });
            tx.send_if_modified(|table| {
                let stale: Vec<String> = table
                    .names
                    .keys()
                    .filter(|n| !wanted.contains(*n))
                    .cloned()
                    .collect();
                if stale.is_empty() {
                    return false;
                }
                let t = Arc::make_mut(table);
                for n in stale {
                    t.names.remove(&n);
                }
                t.version += 1;
                true
            });
            for name in wanted {
                running
                    .entry(name.clone())
                    .or_insert_with(|| tokio::spawn(refresh(name, resolver.clone(), tx.clone())));
            }
            tokio::select! {
                changed = world.changed() => if changed.is_err() { break },
                _ = crate::drained(&mut drain) => break,
            }
        }
        for (_, task) in running {
            task.abort();
        }
    });
    (rx, task)
}

/// Keeps one name resolved forever (until aborted).
async fn refresh(name: String, resolver: Arc<dyn Resolve>, tx: Arc<watch::Sender<Arc<DnsTable>>>) {
    let mut backoff = FIRST_BACKOFF;
    let mut failing = false;
    loop {
        let wait = match resolver.lookup(&name).await {
            Ok(answer) if !answer.addresses.is_empty() => {
                let mut ips = answer.addresses;
                ips.sort();
                ips.dedup();
                let changed = tx.send_if_modified(|table| {
                    if table.names.get(&name) == Some(&ips) {
                        return false;
                    }
                    let t = Arc::make_mut(table);
                    t.names.insert(name.clone(), ips.clone());
                    t.version += 1;
                    true
                });
                if changed || failing {
                    info!(name, addresses = ?ips, "DNS name resolved");
                }
                failing = false;
                backoff = FIRST_BACKOFF;
                answer.ttl.clamp(MIN_TTL, MAX_TTL)
            }
            result => {
                let error = match result {
                    Ok(_) => "no addresses".to_string(),
                    Err(e) => e,
                };
                if failing {
                    debug!(name, %error, retry_in = ?backoff, "DNS lookup failed again");
                } else {
                    warn!(name, %error, retry_in = ?backoff, "DNS lookup failed; keeping the last good addresses");
                }
                failing = true;
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests;
