use super::*;
use http::{HeaderMap, Method};

fn cx_parts() -> (Upstreams, ProxyMetrics) {
    (Upstreams::default(), ProxyMetrics::default())
}

pub(super) fn forward(cluster: &str) -> ir::RouteAction {
    ir::RouteAction::Forward(ir::ForwardAction {
        clusters: vec![ir::WeightedCluster::new(cluster.into(), 1)],
        rewrite: ir::Rewrite::default(),
        timeout_ms: None,
        retry: None,
        idle_timeout_ms: None,
        unresolved_weight: 0,
    })
}

pub(super) fn route(name: &str, matcher: ir::RouteMatch, action: ir::RouteAction) -> ir::Route {
    ir::Route::new(name, matcher, action)
}

pub(super) fn prefix(p: &str) -> ir::RouteMatch {
    ir::RouteMatch {
        path: Some(ir::PathMatch::Prefix(p.into())),
        ..Default::default()
    }
}

fn cluster(name: &str) -> ir::Cluster {
    ir::Cluster {
        name: name.into(),
        protocol: ir::Protocol::Http,
        lb_policy: ir::LbPolicy::RoundRobin,
        connect_timeout_ms: 1000,
        tls: None,
        hash_on: None,
        health_check: None,
        outlier_detection: None,
        circuit_breakers: None,
        idle_timeout_ms: None,
        request_timeout_ms: None,
        tcp_idle_timeout_ms: None,
        send_timeout_ms: None,
    }
}

fn endpoints(cluster: &str, ports: &[(u16, u32)]) -> ir::ClusterEndpoints {
    ir::ClusterEndpoints {
        cluster: cluster.into(),
        endpoints: ports
            .iter()
            .map(|&(port, weight)| ir::Endpoint {
                address: "127.0.0.1".into(),
                port,
                weight,
            })
            .collect(),
    }
}

/// One listener on 8080 with route table `main` made of `vhosts`, plus `extra` tables and
/// clusters `a`, `b`, `c` (one endpoint each).
fn snapshot(vhosts: Vec<ir::VirtualHost>, extra: Vec<ir::RouteTable>) -> ir::Snapshot {
    let mut route_tables = vec![ir::RouteTable {
        name: "main".into(),
        virtual_hosts: vhosts,
    }];
    route_tables.extend(extra);
    ir::Snapshot {
        listeners: vec![ir::Listener {
            name: "http-8080".into(),
            address: String::new(),
            port: 8080,
            protocol: ir::Protocol::Http,
            route_table: "main".into(),
            access_log: None,
            tls: None,
            tcp_proxy: None,
        }],
        route_tables,
        clusters: vec![cluster("a"), cluster("b"), cluster("c")],
        endpoints: vec![
            endpoints("a", &[(9001, 1)]),
            endpoints("b", &[(9002, 1)]),
            endpoints("c", &[(9003, 1)]),
        ],
    }
}

pub(super) fn vhost(
    name: &str,
    hosts: Vec<ir::HostMatch>,
    routes: Vec<ir::Route>,
) -> ir::VirtualHost {
    ir::VirtualHost {
        name: name.into(),
        hosts,
        routes,
    }
}

fn compile(s: &ir::Snapshot) -> Result<Router, CompileError> {
    let (u, m) = cx_parts();
    Router::compile(
        s,
        CompileContext {
            upstreams: &u,
            metrics: &m,
            previous: None,
        },
    )
}

/// A request to route.
struct Req<'a> {
    method: Method,
    host: &'a str,
    uri: &'a str,
    headers: HeaderMap,
}

fn req<'a>(host: &'a str, uri: &'a str) -> Req<'a> {
    Req {
        method: Method::GET,
        host,
        uri,
        headers: HeaderMap::new(),
    }
}

impl Req<'_> {
    fn header(mut self, k: &'static str, v: &'static str) -> Self {
        self.headers.append(k, HeaderValue::from_static(v));
        self
    }

    fn method(mut self, m: Method) -> Self {
        self.method = m;
        self
    }
}

/// Outcome as text: `route -> cluster path host`, `direct <status>`, or the error.
fn run(router: &Router, r: &Req<'_>) -> String {
    let (path, query) = r
        .uri
        .split_once('?')
        .map_or((r.uri, None), |(p, q)| (p, Some(q)));
    let head = RequestHead {
        method: &r.method,
        path,
        query,
        headers: &r.headers,
        port: 8080,
        scheme: "http",
    };
    let l = router.listener(8080).unwrap();
    match router.route(l, strip_port(r.host), &head) {
        Err(e) => e.to_string(),
        Ok(routed) => {
            let path = routed.path.as_deref().unwrap_or(path).to_string();
            let host = routed.host.map_or("-", |h| &*h.host).to_string();
            match routed.action {
                RoutedAction::Forward(f) => {
                    format!("{} -> {} {path} {host}", routed.route.name, f.pick().name)
                }
                RoutedAction::Direct(d) => {
                    format!("{} direct {}", routed.route.name, d.status.as_u16())
                }
                RoutedAction::Redirect(rd) => {
                    format!(
                        "{} redirect {} {path}",
                        routed.route.name,
                        rd.status.as_u16()
                    )
                }
            }
        }
    }
}

#[test]
fn host_precedence_exact_then_longest_suffix_then_any() {
    let s = snapshot(
        vec![
            vhost(
                "any",
                vec![ir::HostMatch::Any],
                vec![route("any", prefix("/"), forward("c"))],
            ),
            vhost(
                "short",
                vec![ir::HostMatch::Suffix(".example.com".into())],
                vec![route("short", prefix("/"), forward("b"))],
            ),
            vhost(
                "long",
                vec![ir::HostMatch::Suffix(".api.example.com".into())],
                vec![route("long", prefix("/"), forward("b"))],
            ),
            vhost(
                "exact",
                vec![ir::HostMatch::Exact("Www.Example.com".into())],
                vec![route("exact", prefix("/"), forward("a"))],
            ),
        ],
        vec![],
    );
    let r = compile(&s).unwrap();
    for (host, want) in [
        ("www.example.com", "exact"),
        ("WWW.EXAMPLE.COM:8080", "exact"),
        ("www.example.com.", "exact"),
        ("v1.api.example.com", "long"),
        ("V1.API.Example.Com", "long"),
        ("shop.example.com", "short"),
        ("example.com", "any"),
        ("other.org", "any"),
        ("", "any"),
        ("[::1]:8080", "any"),
    ] {
        let out = run(&r, &req(host, "/"));
        assert!(out.starts_with(&format!("{want} ->")), "{host}: {out}");
    }
}

#[test]
fn no_host_match_and_no_route_match_are_no_route() {
    let s = snapshot(
        vec![vhost(
            "exact",
            vec![ir::HostMatch::Exact("a.example".into())],
            vec![route("r", prefix("/api"), forward("a"))],
        )],
        vec![],
    );
    let r = compile(&s).unwrap();
    assert_eq!(run(&r, &req("b.example", "/api")), "no route");
    assert_eq!(run(&r, &req("a.example", "/other")), "no route");
    assert_eq!(run(&r, &req("a.example", "/api")), "r -> a /api -");
}

#[test]
fn path_matchers() {
    let m = |p: ir::PathMatch| ir::RouteMatch {
        path: Some(p),
        ..Default::default()
    };
    let s = snapshot(
        vec![vhost(
            "v",
            vec![ir::HostMatch::Any],
            vec![
                route(
                    "exact",
                    m(ir::PathMatch::Exact("/exact".into())),
                    forward("a"),
                ),
                route(
                    "regex",
                    m(ir::PathMatch::Regex("/items/[0-9]+".into())),
                    forward("b"),
                ),
                route(
                    "prefix",
                    m(ir::PathMatch::Prefix("/pre".into())),
                    forward("c"),
                ),
            ],
        )],
        vec![],
    );
    let r = compile(&s).unwrap();
    for (uri, want) in [
        ("/exact", "exact"),
        ("/exact?q=1", "exact"),
        ("/exact/", "no route"),
        ("/items/42", "regex"),
        ("/items/42?x=y", "regex"),
        // The regex must match the whole path.
        ("/items/42/more", "no route"),
        ("/v1/items/42", "no route"),
        // Character-wise prefix, as App Mesh matches.
        ("/pre", "prefix"),
        ("/prefix", "prefix"),
        ("/pre/x", "prefix"),
        ("/pr", "no route"),
    ] {
        let out = run(&r, &req("h", uri));
        assert!(out.starts_with(want), "{uri}: {out}");
    }
}

#[test]
fn first_matching_route_wins() {
    let s = snapshot(
        vec![vhost(
            "v",
            vec![ir::HostMatch::Any],
            vec![
                route("first", prefix("/"), forward("a")),
                route("second", prefix("/specific"), forward("b")),
            ],
        )],
        vec![],
    );
    let r = compile(&s).unwrap();
    assert!(run(&r, &req("h", "/specific")).starts_with("first"));
}

#[test]
fn method_port_and_scheme_matchers() {
    let s = snapshot(
        vec![vhost(
            "v",
            vec![ir::HostMatch::Any],
            vec![
                route(
                    "post",
                    ir::RouteMatch {
                        method: Some("POST".into()),
                        ..Default::default()
                    },
                    forward("a"),
                ),
                route(
                    "other-port",
                    ir::RouteMatch {
                        port: Some(9999),
                        ..Default::default()
                    },
                    forward("b"),
                ),
                route(
                    "https",
                    ir::RouteMatch {
                        scheme: Some("https".into()),
                        ..Default::default()
                    },
                    forward("b"),
                ),
                route(
                    "this-port",
                    ir::RouteMatch {
                        port: Some(8080),
                        scheme: Some("http".into()),
                        ..Default::default()
                    },
                    forward("c"),
                ),
            ],
        )],
        vec![],
    );
    let r = compile(&s).unwrap();
    assert!(run(&r, &req("h", "/").method(Method::POST)).starts_with("post"));
    assert!(run(&r, &req("h", "/")).starts_with("this-port"));
}

pub(super) fn kv(name: &str, m: ir::StringMatch, invert: bool) -> ir::KeyValueMatch {
    ir::KeyValueMatch {
        name: name.into(),
        matcher: m,
        invert,
    }
}

#[test]
fn header_matchers() {
    let hm = |h: ir::KeyValueMatch| ir::RouteMatch {
        headers: vec![h],
        ..Default::default()
    };
    /// A header value sent (`None`: absent) and whether the route must match.
    type Check = (Option<&'static str>, bool);
    let cases: Vec<(ir::KeyValueMatch, Vec<Check>)> = vec![
        (
            kv("x-v", ir::StringMatch::Exact("red".into()), false),
            vec![(Some("red"), true), (Some("Red"), false), (None, false)],
        ),
        (
            kv("X-V", ir::StringMatch::Exact("red".into()), true),
            // Envoy's (App Mesh's) rule: an inverted value match needs the header present.
            vec![(Some("red"), false), (Some("blue"), true), (None, false)],
        ),
        (
            kv("x-v", ir::StringMatch::Prefix("ab".into()), false),
            vec![(Some("abc"), true), (Some("xab"), false)],
        ),
        (
            kv("x-v", ir::StringMatch::Suffix("bc".into()), false),
            vec![(Some("abc"), true), (Some("bcd"), false)],
        ),
        (
            kv("x-v", ir::StringMatch::Regex("v[0-9]".into()), false),
            vec![
                (Some("v1"), true),
                (Some("v12"), false),
                (Some("xv1"), false),
            ],
        ),
        (
            kv("x-v", ir::StringMatch::Range { start: 10, end: 20 }, false),
            vec![
                (Some("10"), true),
                (Some("19"), true),
                (Some("20"), false),
                (Some("9"), false),
                (Some("-5"), false),
                (Some("abc"), false),
                (None, false),
            ],
        ),
        (
            kv("x-v", ir::StringMatch::Range { start: -5, end: 0 }, true),
            vec![(Some("-5"), false), (Some("0"), true), (None, false)],
        ),
        (
            kv("x-v", ir::StringMatch::Present, false),
            vec![(Some(""), true), (Some("x"), true), (None, false)],
        ),
        (
            kv("x-v", ir::StringMatch::Present, true),
            vec![(Some("x"), false), (None, true)],
        ),
    ];
    for (m, checks) in cases {
        let s = snapshot(
            vec![vhost(
                "v",
                vec![ir::HostMatch::Any],
                vec![route("r", hm(m.clone()), forward("a"))],
            )],
            vec![],
        );
        let r = compile(&s).unwrap();
        for (value, want) in checks {
            let mut q = req("h", "/");
            if let Some(v) = value {
                // Header names are case-insensitive: send it in another case.
                q = q.header("X-v", v);
            }
            let got = run(&r, &q).starts_with("r ->");
            assert_eq!(got, want, "{m:?} with {value:?}");
        }
    }
}

#[test]
fn query_parameter_matchers() {
    let qm = |q: Vec<ir::KeyValueMatch>| ir::RouteMatch {
        query_parameters: q,
        ..Default::default()
    };
    let s = snapshot(
        vec![vhost(
            "v",
            vec![ir::HostMatch::Any],
            vec![
                route(
                    "both",
                    qm(vec![
                        kv("a", ir::StringMatch::Exact("hello world".into()), false),
                        kv("b", ir::StringMatch::Present, false),
                    ]),
                    forward("a"),
                ),
                route(
                    "not-debug",
                    qm(vec![kv("debug", ir::StringMatch::Exact("1".into()), true)]),
                    forward("b"),
                ),
                route("rest", ir::RouteMatch::default(), forward("c")),
            ],
        )],
        vec![],
    );
    let r = compile(&s).unwrap();
    for (uri, want) in [
        ("/?a=hello+world&b", "both"),
        ("/?b=&a=hello%20world", "both"),
        // An inverted value match needs the parameter present (as for headers).
        ("/?a=hello%20world", "rest"),
        // Names are case-sensitive.
        ("/?A=hello+world&b=1&debug=0", "not-debug"),
        ("/?debug=1", "rest"),
        ("/?debug=2", "not-debug"),
        ("/", "rest"),
        ("/?bad=%zz&debug=%31", "rest"),
    ] {
        let out = run(&r, &req("h", uri));
        assert!(out.starts_with(want), "{uri}: {out}");
    }
}

fn rewrite_route(p: &str, rw: ir::Rewrite) -> ir::Route {
    route(
        p,
        prefix(p),
        ir::RouteAction::Forward(ir::ForwardAction {
            clusters: vec![ir::WeightedCluster::new("a".into(), 1)],
            rewrite: rw,
            timeout_ms: None,
            retry: None,
            idle_timeout_ms: None,
            unresolved_weight: 0,
        }),
    )
}

#[test]
fn rewrites() {
    let pre = |v: &str| ir::Rewrite {
        prefix: Some(v.into()),
        ..Default::default()
    };
    let s = snapshot(
        vec![vhost(
            "v",
            vec![ir::HostMatch::Any],
            vec![
                rewrite_route("/red", pre("/")),
                rewrite_route("/legacy/", pre("/v2/")),
                rewrite_route("/blue", pre("/colors/blue")),
                rewrite_route(
                    "/full",
                    ir::Rewrite {
                        full_path: Some("/replaced".into()),
                        ..Default::default()
                    },
                ),
                rewrite_route(
                    "/host",
                    ir::Rewrite {
                        host: Some("Backend.Internal:8443".into()),
                        ..Default::default()
                    },
                ),
            ],
        )],
        vec![],
    );
    let r = compile(&s).unwrap();
    for (uri, want) in [
        ("/red/x", "/x -"),
        ("/red", "/ -"),
        ("/red/", "/ -"),
        ("/redx", "/x -"),
        ("/legacy/items", "/v2/items -"),
        ("/blue/1", "/colors/blue/1 -"),
        ("/full/a/b?q=1", "/replaced -"),
        ("/host/a", "/host/a backend.internal"),
    ] {
        let out = run(&r, &req("h", uri));
        assert!(out.ends_with(&format!(" {want}")), "{uri}: {out}");
    }
    assert_eq!(replace_prefix("", ""), "/");
    assert_eq!(replace_prefix("", "/x"), "/x");
    assert_eq!(replace_prefix("", "x"), "/x");
    assert_eq!(replace_prefix("v2/", "/x"), "/v2/x");
    assert_eq!(replace_prefix("/a", ""), "/a");
}

#[test]
fn delegation_rewrites_then_routes_in_the_other_table() {
    let router_table = ir::RouteTable {
        name: "router".into(),
        virtual_hosts: vec![vhost(
            "any",
            vec![ir::HostMatch::Any],
            vec![
                route(
                    "by-header",
                    ir::RouteMatch {
                        path: Some(ir::PathMatch::Prefix("/".into())),
                        headers: vec![kv("color", ir::StringMatch::Exact("red".into()), false)],
                        ..Default::default()
                    },
                    forward("c"),
                ),
                route(
                    "shades",
                    prefix("/shades"),
                    ir::RouteAction::Forward(ir::ForwardAction {
                        clusters: vec![ir::WeightedCluster::new("b".into(), 1)],
                        rewrite: ir::Rewrite {
                            prefix: Some("/s".into()),
                            ..Default::default()
                        },
                        timeout_ms: None,
                        retry: None,
                        idle_timeout_ms: None,
                        unresolved_weight: 0,
                    }),
                ),
                route("rest", prefix("/"), forward("a")),
            ],
        )],
    };
    let delegate = ir::RouteAction::Delegate(ir::DelegateAction {
        route_table: "router".into(),
        rewrite: ir::Rewrite {
            prefix: Some("/".into()),
            host: Some("color.shop.svc.cluster.local".into()),
            ..Default::default()
        },
    });
    let s = snapshot(
        vec![vhost(
            "v",
            vec![ir::HostMatch::Any],
            vec![route("color", prefix("/color"), delegate)],
        )],
        vec![router_table],
    );
    let r = compile(&s).unwrap();
    let host = "color.shop.svc.cluster.local";
    assert_eq!(
        run(&r, &req("shop.example", "/color/x?q")),
        format!("rest -> a /x {host}")
    );
    assert_eq!(
        run(&r, &req("shop.example", "/color")),
        format!("rest -> a / {host}")
    );
    assert_eq!(
        run(&r, &req("shop.example", "/color/shades/1")),
        format!("shades -> b /s/1 {host}")
    );
    assert_eq!(
        run(&r, &req("shop.example", "/color").header("color", "red")),
        format!("by-header -> c / {host}")
    );
}

#[test]
fn delegation_loops_stop_after_four_hops() {
    let hop = |name: &str, to: &str| ir::RouteTable {
        name: name.into(),
        virtual_hosts: vec![vhost(
            "any",
            vec![ir::HostMatch::Any],
            vec![route(
                &format!("{name}->{to}"),
                prefix("/"),
                ir::RouteAction::Delegate(ir::DelegateAction {
                    route_table: to.into(),
                    rewrite: ir::Rewrite::default(),
                }),
            )],
        )],
    };
    let mut s = snapshot(vec![], vec![]);
    s.route_tables = vec![
        hop("main", "t1"),
        hop("t1", "t2"),
        hop("t2", "t3"),
        hop("t3", "t4"),
        {
            let mut t = hop("t4", "x");
            t.virtual_hosts[0].routes = vec![route("end", prefix("/"), forward("a"))];
            t
        },
    ];
    // Exactly four delegations: served.
    let r = compile(&s).unwrap();
    assert_eq!(run(&r, &req("h", "/p")), "end -> a /p -");
    // A loop: refused after four.
    s.route_tables = vec![hop("main", "main")];
    let r = compile(&s).unwrap();
    assert_eq!(
        run(&r, &req("h", "/p")),
        r#"route "main->main" delegates more than 4 times"#
    );
}

#[test]
fn direct_responses() {
    let s = snapshot(
        vec![vhost(
            "v",
            vec![ir::HostMatch::Any],
            vec![route(
                "teapot",
                prefix("/"),
                ir::RouteAction::DirectResponse(ir::DirectResponse {
                    status: 418,
                    body: "short and stout".into(),
                }),
            )],
        )],
        vec![],
    );
    let r = compile(&s).unwrap();
    assert_eq!(run(&r, &req("h", "/")), "teapot direct 418");
}

#[test]
fn weighted_clusters_split_exactly() {
    let s = snapshot(
        vec![vhost(
            "v",
            vec![ir::HostMatch::Any],
            vec![route(
                "split",
                prefix("/"),
                ir::RouteAction::Forward(ir::ForwardAction {
                    clusters: vec![
                        ir::WeightedCluster::new("a".into(), 75),
                        ir::WeightedCluster::new("b".into(), 25),
                        ir::WeightedCluster::new("c".into(), 0),
                    ],
                    rewrite: ir::Rewrite::default(),
                    timeout_ms: None,
                    retry: None,
                    idle_timeout_ms: None,
                    unresolved_weight: 0,
                }),
            )],
        )],
        vec![],
    );
    let r = compile(&s).unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..1000 {
        let out = run(&r, &req("h", "/"));
        let cluster = out.split(' ').nth(2).unwrap().to_string();
        *counts.entry(cluster).or_insert(0) += 1;
    }
    assert_eq!(counts.get("a"), Some(&750));
    assert_eq!(counts.get("b"), Some(&250));
    assert_eq!(counts.get("c"), None);
}

#[test]
fn endpoints_round_robin_by_weight() {
    let mut s = snapshot(
        vec![vhost(
            "v",
            vec![ir::HostMatch::Any],
            vec![route("r", prefix("/"), forward("a"))],
        )],
        vec![],
    );
    s.endpoints[0] = endpoints("a", &[(9001, 1), (9002, 3), (9003, 0)]);
    s.endpoints.retain(|e| e.cluster != "b");
    let r = compile(&s).unwrap();
    let l = r.listener(8080).unwrap();
    let head_headers = HeaderMap::new();
    let head = RequestHead {
        method: &Method::GET,
        path: "/",
        query: None,
        headers: &head_headers,
        port: 8080,
        scheme: "http",
    };
    let routed = r.route(l, "h", &head).unwrap();
    let RoutedAction::Forward(f) = routed.action else {
        panic!("forward expected");
    };
    let c = f.pick();
    let mut counts = [0; 3];
    for _ in 0..500 {
        counts[(c.pick().unwrap().addr.port() - 9001) as usize] += 1;
    }
    // Weight 0 counts as 1 (unset).
    assert_eq!(counts, [100, 300, 100]);
    // A cluster without endpoints (no ClusterEndpoints resource at all) picks none.
    let mut s2 = s.clone();
    s2.endpoints.clear();
    let r2 = compile(&s2).unwrap();
    let l2 = r2.listener(8080).unwrap();
    let routed = r2.route(l2, "h", &head).unwrap();
    let RoutedAction::Forward(f) = routed.action else {
        panic!("forward expected");
    };
    assert!(f.pick().pick().is_none());
}

#[test]
fn compile_errors_name_the_resource_and_field() {
    let base = || {
        snapshot(
            vec![vhost(
                "v",
                vec![ir::HostMatch::Any],
                vec![route("r", prefix("/"), forward("a"))],
            )],
            vec![],
        )
    };
    let set_action = |s: &mut ir::Snapshot, a: ir::RouteAction| {
        s.route_tables[0].virtual_hosts[0].routes[0].action = a;
    };
    let set_match = |s: &mut ir::Snapshot, m: ir::RouteMatch| {
        s.route_tables[0].virtual_hosts[0].routes[0].matcher = m;
    };
    let mut cases: Vec<(ir::Snapshot, &str)> = Vec::new();

    let mut s = base();
    set_action(&mut s, forward("missing"));
    cases.push((
        s,
        r#"routeTable/main: virtualHosts[0].routes[0].forward.clusters[0].cluster: unknown cluster "missing""#,
    ));

    let mut s = base();
    s.listeners[0].route_table = "nope".into();
    cases.push((
        s,
        r#"listener/http-8080: routeTable: unknown route table "nope""#,
    ));

    let mut s = base();
    set_action(
        &mut s,
        ir::RouteAction::Delegate(ir::DelegateAction {
            route_table: "nope".into(),
            rewrite: ir::Rewrite::default(),
        }),
    );
    cases.push((
        s,
        r#"routeTable/main: virtualHosts[0].routes[0].delegate.routeTable: unknown route table "nope""#,
    ));

    let mut s = base();
    set_match(
        &mut s,
        ir::RouteMatch {
            path: Some(ir::PathMatch::Regex("/(unclosed".into())),
            ..Default::default()
        },
    );
    cases.push((
        s,
        "routeTable/main: virtualHosts[0].routes[0].match.path.regex: invalid regular expression",
    ));

    let mut s = base();
    set_match(
        &mut s,
        ir::RouteMatch {
            headers: vec![kv("x", ir::StringMatch::Regex("[".into()), false)],
            ..Default::default()
        },
    );
    cases.push((s, "routeTable/main: virtualHosts[0].routes[0].match.headers[0].match.regex: invalid regular expression"));

    let mut s = base();
    set_match(
        &mut s,
        ir::RouteMatch {
            headers: vec![kv("bad header", ir::StringMatch::Present, false)],
            ..Default::default()
        },
    );
    cases.push((
        s,
        "routeTable/main: virtualHosts[0].routes[0].match.headers[0].name:",
    ));

    let mut s = base();
    set_action(
        &mut s,
        ir::RouteAction::Forward(ir::ForwardAction {
            clusters: vec![
                ir::WeightedCluster::new("a".into(), 0),
                ir::WeightedCluster::new("b".into(), 0),
            ],
            rewrite: ir::Rewrite::default(),
            timeout_ms: None,
            retry: None,
            idle_timeout_ms: None,
            unresolved_weight: 0,
        }),
    );
    cases.push((
        s,
        "routeTable/main: virtualHosts[0].routes[0].forward.clusters: no cluster has a weight above 0",
    ));

    let mut s = base();
    set_match(
        &mut s,
        ir::RouteMatch {
            path: Some(ir::PathMatch::Exact("/x".into())),
            ..Default::default()
        },
    );
    set_action(
        &mut s,
        ir::RouteAction::Forward(ir::ForwardAction {
            clusters: vec![ir::WeightedCluster::new("a".into(), 1)],
            rewrite: ir::Rewrite {
                prefix: Some("/".into()),
                ..Default::default()
            },
            timeout_ms: None,
            retry: None,
            idle_timeout_ms: None,
            unresolved_weight: 0,
        }),
    );
    cases.push((
        s,
        "routeTable/main: virtualHosts[0].routes[0].forward.rewrite.prefix: a prefix rewrite needs a prefix path match",
    ));

    let mut s = base();
    s.listeners.push(ir::Listener {
        name: "again".into(),
        address: String::new(),
        port: 8080,
        protocol: ir::Protocol::Http2,
        route_table: "main".into(),
        access_log: None,
        tls: None,
        tcp_proxy: None,
    });
    cases.push((
        s,
        r#"listener/again: port: port 8080 is also used by listener "http-8080""#,
    ));

    let mut s = base();
    s.clusters[0].protocol = ir::Protocol::Tcp;
    cases.push((
        s,
        r#"routeTable/main: virtualHosts[0].routes[0].forward.clusters[0].cluster: cluster "a" is a tcp cluster: only a tcp listener can send to it"#,
    ));

    let mut s = base();
    s.endpoints[0].endpoints[0].address = "a.example".into();
    cases.push((
        s,
        r#"endpoints/a: endpoints[0].address: "a.example" is not an IP address"#,
    ));

    for (s, want) in cases {
        let err = compile(&s).unwrap_err().to_string();
        assert!(err.starts_with(want), "got {err:?}, want {want:?}");
    }
}

#[test]
fn endpoints_of_unknown_clusters_are_ignored_and_missing_endpoints_are_empty() {
    let mut s = snapshot(
        vec![vhost(
            "v",
            vec![ir::HostMatch::Any],
            vec![route("r", prefix("/"), forward("a"))],
        )],
        vec![],
    );
    s.endpoints.push(endpoints("ghost", &[(1, 1)]));
    s.endpoints.retain(|e| e.cluster != "a");
    assert!(compile(&s).is_ok());
}

#[test]
fn http2_clusters_reuse_endpoint_connections_across_compiles() {
    let mut s = snapshot(
        vec![vhost(
            "v",
            vec![ir::HostMatch::Any],
            vec![route("r", prefix("/"), forward("a"))],
        )],
        vec![],
    );
    s.clusters[0].protocol = ir::Protocol::Grpc;
    let (u, m) = cx_parts();
    let cx = CompileContext {
        upstreams: &u,
        metrics: &m,
        previous: None,
    };
    let r1 = Router::compile(&s, cx).unwrap();
    let r2 = Router::compile(&s, cx).unwrap();
    assert_eq!(u.h2_endpoints(), 1);
    let first = |r: &Router| -> Arc<H2Endpoint> {
        let headers = HeaderMap::new();
        let head = RequestHead {
            method: &Method::GET,
            path: "/",
            query: None,
            headers: &headers,
            port: 8080,
            scheme: "http",
        };
        let routed = r.route(r.listener(8080).unwrap(), "h", &head).unwrap();
        let RoutedAction::Forward(f) = routed.action else {
            panic!("forward expected");
        };
        f.pick().pick().unwrap().h2.clone().unwrap()
    };
    assert!(Arc::ptr_eq(&first(&r1), &first(&r2)));
    drop((r1, r2));
    u.prune();
    assert_eq!(u.h2_endpoints(), 0);
}

#[test]
fn unchanged_splits_continue_across_compiles() {
    let split = |a: u32, b: u32| {
        snapshot(
            vec![vhost(
                "v",
                vec![ir::HostMatch::Any],
                vec![route(
                    "split",
                    prefix("/"),
                    ir::RouteAction::Forward(ir::ForwardAction {
                        clusters: vec![
                            ir::WeightedCluster::new("a".into(), a),
                            ir::WeightedCluster::new("b".into(), b),
                        ],
                        rewrite: ir::Rewrite::default(),
                        timeout_ms: None,
                        retry: None,
                        idle_timeout_ms: None,
                        unresolved_weight: 0,
                    }),
                )],
            )],
            vec![],
        )
    };
    let (u, m) = cx_parts();
    let compile_after = |s: &ir::Snapshot, previous: Option<&Router>| {
        Router::compile(
            s,
            CompileContext {
                upstreams: &u,
                metrics: &m,
                previous,
            },
        )
        .unwrap()
    };
    let pick = |r: &Router| {
        run(r, &req("h", "/"))
            .split(' ')
            .nth(2)
            .unwrap()
            .to_string()
    };
    // 3:1 goes a a b a.
    let r1 = compile_after(&split(75, 25), None);
    assert_eq!([pick(&r1), pick(&r1)], ["a", "a"]);
    // Same split (another part of the config changed): continues with `b`.
    let mut s = split(75, 25);
    s.endpoints[0].endpoints[0].port = 9999;
    let r2 = compile_after(&s, Some(&r1));
    assert_eq!([pick(&r2), pick(&r2)], ["b", "a"]);
    // A new split starts over.
    let r3 = compile_after(&split(50, 50), Some(&r2));
    assert_eq!([pick(&r3), pick(&r3), pick(&r3)], ["a", "b", "a"]);
}
