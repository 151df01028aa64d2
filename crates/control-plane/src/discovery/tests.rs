use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;

use bowline_model::manifest::{self, Parsed};
use pretty_assertions::assert_eq;

use super::*;

fn world(version: u64, text: &str) -> Arc<World> {
    let docs = manifest::parse_file(Path::new("w.yaml"), text)
        .into_iter()
        .map(|p| match p {
            Parsed::Object { source, object, .. } => (source, *object),
            other => panic!("bad test world: {other:?}"),
        });
    Arc::new(World::from_documents(version, docs))
}

fn node(hostname: &str) -> String {
    format!(
        r#"apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {{name: n, namespace: demo}}
spec:
  listeners:
    - portMapping: {{port: 8080, protocol: http}}
  serviceDiscovery:
    dns: {{hostname: "{hostname}"}}
"#
    )
}

fn endpoints(w: &World, dns: &DnsTable, port: u16) -> Resolved {
    let n = w.virtual_node("demo", "n").expect("node");
    resolve(w, dns, &n.spec, port)
}

fn addrs(r: &Resolved) -> Vec<String> {
    r.endpoints
        .iter()
        .map(|e| format!("{}:{}", e.address, e.port))
        .collect()
}

#[test]
fn hostnames_are_classified() {
    let svc = |ns: &str, name: &str| Target::Service {
        namespace: ns.into(),
        name: name.into(),
    };
    assert_eq!(target("color.demo.svc"), svc("demo", "color"));
    assert_eq!(
        target("Color.Demo.svc.cluster.local."),
        svc("demo", "color")
    );
    assert_eq!(target("10.1.2.3"), Target::Ip("10.1.2.3".parse().unwrap()));
    assert_eq!(target("[::1]"), Target::Ip("::1".parse().unwrap()));
    assert_eq!(target("localhost"), Target::Dns("localhost".into()));
    assert_eq!(
        target("a.b.svc.example.com"),
        Target::Dns("a.b.svc.example.com".into())
    );
    assert_eq!(target("demo.svc"), Target::Dns("demo.svc".into()));
}

const SERVICE: &str = r#"---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  PUBLISH
  ports:
    - {name: http, port: 8080, targetPort: web}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-x
  namespace: demo
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
  - {name: http, port: 3000}
endpoints:
  - addresses: [10.0.0.2]
  - addresses: [10.0.0.1, 10.9.9.9]
    conditions: {ready: true}
  - addresses: [10.0.0.3]
    conditions: {ready: false}
"#;

#[test]
fn kubernetes_services_resolve_through_endpoint_slices() {
    let w = world(
        1,
        &format!("{}{}", node("web.demo.svc"), SERVICE.replace("PUBLISH", "")),
    );
    let r = endpoints(&w, &DnsTable::default(), 8080);
    assert_eq!(addrs(&r), ["10.0.0.1:3000", "10.0.0.2:3000"]);
    assert!(r.notes.is_empty(), "{:?}", r.notes);

    // A port the Service does not have.
    let r = endpoints(&w, &DnsTable::default(), 9999);
    assert!(r.endpoints.is_empty());
    assert_eq!(
        r.notes,
        ["Service demo/web has no TCP port 9999; the node has no endpoints"]
    );

    // publishNotReadyAddresses includes the endpoint that is not ready.
    let w = world(
        1,
        &format!(
            "{}{}",
            node("web.demo.svc"),
            SERVICE.replace("PUBLISH", "publishNotReadyAddresses: true")
        ),
    );
    let r = endpoints(&w, &DnsTable::default(), 8080);
    assert_eq!(
        addrs(&r),
        ["10.0.0.1:3000", "10.0.0.2:3000", "10.0.0.3:3000"]
    );
}

#[test]
fn missing_services_and_slices_leave_the_node_without_endpoints() {
    let w = world(1, &node("nope.demo.svc.cluster.local"));
    let r = endpoints(&w, &DnsTable::default(), 8080);
    assert!(r.endpoints.is_empty());
    assert_eq!(
        r.notes,
        ["Service demo/nope not found; the node has no endpoints"]
    );
}

#[test]
fn headless_and_external_name_services() {
    let headless = r#"---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: demo}
spec:
  clusterIP: None
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: demo
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
endpoints:
  - addresses: [10.0.5.1]
"#;
    let w = world(1, &format!("{}{headless}", node("db.demo.svc")));
    assert_eq!(
        addrs(&endpoints(&w, &DnsTable::default(), 8080)),
        ["10.0.5.1:8080"]
    );

    let external = r#"---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: demo}
spec:
  type: ExternalName
  externalName: api.example.com
"#;
    let w = world(1, &format!("{}{external}", node("ext.demo.svc")));
    assert_eq!(
        dns_names(&w).into_iter().collect::<Vec<_>>(),
        ["api.example.com"]
    );
    let r = endpoints(&w, &DnsTable::default(), 443);
    assert!(r.endpoints.is_empty());
    assert_eq!(r.notes.len(), 1, "waiting for DNS: {:?}", r.notes);
    let mut dns = DnsTable::default();
    dns.names
        .insert("api.example.com".into(), vec!["192.0.2.7".parse().unwrap()]);
    assert_eq!(addrs(&endpoints(&w, &dns, 443)), ["192.0.2.7:443"]);
}

#[test]
fn dns_names_and_ip_literals() {
    let w = world(1, &node("backend.example"));
    assert_eq!(
        dns_names(&w).into_iter().collect::<Vec<_>>(),
        ["backend.example"]
    );
    let mut dns = DnsTable::default();
    dns.names.insert(
        "backend.example".into(),
        vec!["10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap()],
    );
    assert_eq!(
        addrs(&endpoints(&w, &dns, 8080)),
        ["10.0.0.1:8080", "10.0.0.2:8080"]
    );

    let w = world(1, &node("::1"));
    assert!(dns_names(&w).is_empty());
    assert_eq!(addrs(&endpoints(&w, &DnsTable::default(), 80)), ["::1:80"]);
}

/// Answers lookups from a script; records when each lookup happened.
struct Scripted {
    answers: Mutex<VecDeque<Result<Answer, String>>>,
    calls: Mutex<Vec<tokio::time::Instant>>,
}

impl Resolve for Scripted {
    fn lookup(&self, _name: &str) -> LookupFuture {
        self.calls.lock().unwrap().push(tokio::time::Instant::now());
        let next = self.answers.lock().unwrap().pop_front();
        Box::pin(async move {
            match next {
                Some(a) => a,
                // Out of script: never answer.
                None => std::future::pending().await,
            }
        })
    }
}

fn answer(ips: &[&str], ttl: Duration) -> Result<Answer, String> {
    Ok(Answer {
        addresses: ips.iter().map(|s| s.parse().unwrap()).collect(),
        ttl,
    })
}

#[tokio::test(start_paused = true)]
async fn dns_refreshes_on_ttl_and_keeps_the_last_good_answer_on_failure() {
    let resolver = Arc::new(Scripted {
        answers: Mutex::new(VecDeque::from([
            answer(&["10.0.0.1"], Duration::from_secs(30)),
            Err("SERVFAIL".into()),
            answer(&[], Duration::from_secs(30)),
            // A TTL of 0 is clamped to 1 s.
            answer(&["10.0.0.2", "10.0.0.2"], Duration::ZERO),
            answer(&["10.0.0.2"], Duration::from_secs(3600)),
        ])),
        calls: Mutex::new(Vec::new()),
    });
    let (world_tx, world_rx) = watch::channel(world(1, &node("backend.example")));
    let (_drain_tx, drain_rx) = watch::channel(false);
    let (mut table, _task) = spawn_dns(world_rx, resolver.clone(), drain_rx);
    let start = tokio::time::Instant::now();

    table.changed().await.unwrap();
    let t = table.borrow_and_update().clone();
    assert_eq!(
        t.names["backend.example"],
        ["10.0.0.1".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(t.version, 1);

    // Refreshed after 30 s: SERVFAIL, then no addresses (both keep 10.0.0.1, with backoff 1 s
    // then 2 s), then the new answer, published.
    table.changed().await.unwrap();
    let t = table.borrow_and_update().clone();
    assert_eq!(
        t.names["backend.example"],
        ["10.0.0.2".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(t.version, 2);
    assert_eq!(start.elapsed(), Duration::from_secs(33));

    // The same answer again (after the clamped 1 s TTL) publishes nothing; the next lookup
    // waits for the maximum TTL.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let calls = resolver.calls.lock().unwrap().clone();
    let offsets: Vec<u64> = calls.iter().map(|c| (*c - start).as_secs()).collect();
    assert_eq!(offsets, [0, 30, 31, 33, 34]);
    assert!(!table.has_changed().unwrap());

    // The node goes away: so does its name.
    world_tx.send_replace(world(
        2,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
    ));
    table.changed().await.unwrap();
    assert!(table.borrow().names.is_empty());
    assert_eq!(table.borrow().version, 3);
}

#[tokio::test]
async fn the_system_resolver_reads_the_hosts_file() {
    let answer = SystemResolver::new()
        .lookup("localhost")
        .await
        .expect("localhost resolves");
    assert!(
        answer.addresses.iter().any(|a| a.is_loopback()),
        "{answer:?}"
    );
}

#[test]
fn external_name_services_of_ingress_backends_are_resolved() {
    let text = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: demo}
spec:
  defaultBackend: {service: {name: ext, port: {number: 443}}}
  rules:
    - http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: other, port: {number: 80}}}}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: demo}
spec:
  type: ExternalName
  externalName: api.example.com
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: demo}
spec:
  type: ExternalName
  externalName: other.example.com
"#;
    let w = world(1, text);
    assert_eq!(
        dns_names(&w).into_iter().collect::<Vec<_>>(),
        ["api.example.com", "other.example.com"]
    );
    let mut dns = DnsTable::default();
    dns.names
        .insert("api.example.com".into(), vec!["192.0.2.7".parse().unwrap()]);
    let r = resolve_service(&w, &dns, "demo", "ext", 443);
    assert_eq!(addrs(&r), ["192.0.2.7:443"]);
}

/// A VirtualNode `name` registering the pods of `labels` in the Cloud Map service `colorapp`
/// with `attributes` (a YAML flow list).
fn cloud_map_node(name: &str, labels: &str, attributes: &str) -> String {
    format!(
        r#"---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {{name: {name}, namespace: demo}}
spec:
  podSelector: {{matchLabels: {labels}}}
  listeners:
    - portMapping: {{port: 8080, protocol: http}}
  serviceDiscovery:
    awsCloudMap: {{namespaceName: demo.pvt.aws.local, serviceName: colorapp, attributes: {attributes}}}
"#
    )
}

/// A Service `name` selecting `selector`, port 80 → `target`, with one ready endpoint `ip:9000`.
fn selected_service(name: &str, selector: &str, target: u16, ip: &str) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: demo}}
spec:
  selector: {selector}
  ports: [{{name: http, port: 80, targetPort: {target}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: demo, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: 9000}}]
endpoints:
  - addresses: ["{ip}"]
"#
    )
}

#[test]
fn cloud_map_nodes_resolve_to_the_pods_their_pod_selector_selects() {
    // As in howto-k8s-cloudmap: two nodes register in one Cloud Map service, told apart by
    // attributes; one Service per color selects each node's pods.
    let text = [
        cloud_map_node(
            "blue",
            "{app: color, version: blue}",
            "[{key: color, value: blue}]",
        ),
        cloud_map_node(
            "red",
            "{app: color, version: red}",
            "[{key: color, value: red}]",
        ),
        cloud_map_node("all", "{app: nothing}", "[]"),
        selected_service("blue", "{app: color, version: blue}", 8080, "10.0.0.1"),
        selected_service("red", "{app: color, version: red}", 8080, "10.0.0.2"),
        // Selects pods of both colors: not all of them are the blue node's pods.
        selected_service("color", "{app: color}", 8080, "10.0.0.9"),
        // The blue pods, but not on the listener port.
        selected_service(
            "blue-admin",
            "{app: color, version: blue}",
            9901,
            "10.0.0.3",
        ),
    ]
    .concat();
    let w = world(1, &text);
    let dns = DnsTable::default();
    let of = |name: &str| resolve(&w, &dns, &w.virtual_node("demo", name).unwrap().spec, 8080);
    let blue = of("blue");
    assert_eq!(addrs(&blue), ["10.0.0.1:9000"]);
    assert_eq!(blue.notes, Vec::<String>::new());
    assert_eq!(addrs(&of("red")), ["10.0.0.2:9000"]);
    // No attributes: every instance of the Cloud Map service.
    assert_eq!(addrs(&of("all")), ["10.0.0.1:9000", "10.0.0.2:9000"]);
}

#[test]
fn cloud_map_without_registered_pods_explains_why_there_are_no_endpoints() {
    let text = r#"
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: lonely, namespace: demo}
spec:
  listeners:
    - portMapping: {port: 8080, protocol: http}
  serviceDiscovery:
    awsCloudMap: {namespaceName: demo.local, serviceName: lonely}
"#;
    let w = world(1, text);
    let r = resolve(
        &w,
        &DnsTable::default(),
        &w.virtual_node("demo", "lonely").unwrap().spec,
        8080,
    );
    assert!(r.endpoints.is_empty());
    assert_eq!(
        r.notes,
        [
            "AWS Cloud Map service demo.local/lonely: no VirtualNode with a podSelector registers pods in it; the node has no endpoints"
        ]
    );
}

#[test]
fn cloud_map_nodes_resolve_to_their_running_pods() {
    let pod = |name: &str, ns: &str, labels: &str, status: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {labels}}}\nspec: {{containers: [{{name: app, image: colorapp}}]}}\nstatus: {status}\n"
        )
    };
    let text = [
        cloud_map_node("colorapp", "{app: colorapp}", "[]"),
        pod(
            "a",
            "demo",
            "{app: colorapp}",
            "{phase: Running, podIP: 10.0.1.1}",
        ),
        pod(
            "b",
            "demo",
            "{app: colorapp, extra: x}",
            "{phase: Running, podIP: 10.0.1.2, conditions: [{type: Ready, status: \"True\"}]}",
        ),
        pod(
            "unready",
            "demo",
            "{app: colorapp}",
            "{phase: Running, podIP: 10.0.1.3, conditions: [{type: Ready, status: \"False\"}]}",
        ),
        pod(
            "done",
            "demo",
            "{app: colorapp}",
            "{phase: Succeeded, podIP: 10.0.1.4}",
        ),
        pod("pending", "demo", "{app: colorapp}", "{phase: Pending}"),
        pod("elsewhere", "other", "{app: colorapp}", "{podIP: 10.0.1.5}"),
        pod("unselected", "demo", "{app: front}", "{podIP: 10.0.1.6}"),
    ]
    .concat();
    let w = world(1, &text);
    let r = resolve(
        &w,
        &DnsTable::default(),
        &w.virtual_node("demo", "colorapp").unwrap().spec,
        8080,
    );
    assert_eq!(addrs(&r), ["10.0.1.1:8080", "10.0.1.2:8080"]);
    assert!(r.notes.is_empty(), "{:?}", r.notes);
}
