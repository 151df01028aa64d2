//! Matcher tables and filter behaviour of the router: cookies, wildcard hosts, repeated
//! headers, large indexed tables, CORS preflight matching, redirects, regex rewrites, and the
//! filter chain across delegations.

use super::tests::{forward, kv, prefix, route, vhost};
use super::*;
use http::{HeaderMap, Method};

fn exact(p: &str) -> ir::RouteMatch {
    ir::RouteMatch {
        path: Some(ir::PathMatch::Exact(p.into())),
        ..Default::default()
    }
}

fn any(routes: Vec<ir::Route>) -> Vec<ir::VirtualHost> {
    vec![vhost("any", vec![ir::HostMatch::Any], routes)]
}

/// Listener 8080 → table `main` (`vhosts`), more tables, clusters `a`, `b`, `c`.
fn snapshot(vhosts: Vec<ir::VirtualHost>, extra: Vec<ir::RouteTable>) -> ir::Snapshot {
    let mut route_tables = vec![ir::RouteTable {
        name: "main".into(),
        virtual_hosts: vhosts,
    }];
    route_tables.extend(extra);
    let clusters = ["a", "b", "c"];
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
        clusters: clusters
            .iter()
            .map(|c| ir::Cluster {
                name: (*c).into(),
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
            })
            .collect(),
        endpoints: clusters
            .iter()
            .enumerate()
            .map(|(i, c)| ir::ClusterEndpoints {
                cluster: (*c).into(),
                endpoints: vec![ir::Endpoint {
                    address: "127.0.0.1".into(),
                    port: 9001 + i as u16,
                    weight: 1,
                }],
            })
            .collect(),
    }
}

fn compile(s: &ir::Snapshot) -> Result<Router, CompileError> {
    let (u, m) = (Upstreams::default(), ProxyMetrics::default());
    Router::compile(
        s,
        CompileContext {
            upstreams: &u,
            metrics: &m,
            previous: None,
        },
    )
}

/// A request: method, host, URI and headers.
struct Req {
    method: Method,
    host: String,
    uri: String,
    headers: HeaderMap,
}

fn req(host: &str, uri: &str) -> Req {
    Req {
        method: Method::GET,
        host: host.into(),
        uri: uri.into(),
        headers: HeaderMap::new(),
    }
}

impl Req {
    fn header(mut self, k: &'static str, v: &'static str) -> Self {
        self.headers.append(k, HeaderValue::from_static(v));
        self
    }

    fn method(mut self, m: Method) -> Self {
        self.method = m;
        self
    }
}

/// Routes `r` and hands the outcome to `f`.
fn with_routed<T>(
    router: &Router,
    r: &Req,
    f: impl FnOnce(Result<Routed<'_>, RouteError>) -> T,
) -> T {
    let (path, query) = r
        .uri
        .split_once('?')
        .map_or((r.uri.as_str(), None), |(p, q)| (p, Some(q)));
    let head = RequestHead {
        method: &r.method,
        path,
        query,
        headers: &r.headers,
        port: 8080,
        scheme: "http",
    };
    let l = router.listener(8080).unwrap();
    f(router.route(l, strip_port(&r.host), &head))
}

/// `route -> cluster path`, `route direct N`, `route redirect N path`, or the error.
fn run(router: &Router, r: &Req) -> String {
    with_routed(router, r, |routed| match routed {
        Err(e) => e.to_string(),
        Ok(routed) => {
            let path = routed
                .path
                .clone()
                .unwrap_or_else(|| r.uri.split('?').next().unwrap().to_string());
            match routed.action {
                RoutedAction::Forward(f) => {
                    format!("{} -> {} {path}", routed.route.name, f.pick().name)
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
    })
}

fn name_of(router: &Router, r: &Req) -> String {
    run(router, r).split(' ').next().unwrap().to_string()
}

#[test]
fn cookie_matchers() {
    let cm = |c: Vec<ir::KeyValueMatch>| ir::RouteMatch {
        cookies: c,
        ..Default::default()
    };
    let s = snapshot(
        any(vec![
            route(
                "beta",
                cm(vec![kv(
                    "channel",
                    ir::StringMatch::Exact("beta".into()),
                    false,
                )]),
                forward("a"),
            ),
            route(
                "user",
                cm(vec![kv(
                    "uid",
                    ir::StringMatch::Regex("u[0-9]+".into()),
                    false,
                )]),
                forward("b"),
            ),
            route(
                "session-no-debug",
                cm(vec![
                    kv("session", ir::StringMatch::Present, false),
                    kv("debug", ir::StringMatch::Present, true),
                ]),
                forward("c"),
            ),
            route("rest", ir::RouteMatch::default(), forward("a")),
        ]),
        vec![],
    );
    let r = compile(&s).unwrap();
    for (cookies, want) in [
        (vec!["channel=beta"], "beta"),
        (vec!["a=1; channel=beta; b=2"], "beta"),
        (vec!["a=1;channel=beta"], "beta"),
        (vec!["channel=\"beta\""], "beta"),
        (vec!["a=1", "channel=beta"], "beta"),
        // The first cookie of a name counts; names and values are case-sensitive.
        (vec!["channel=stable; channel=beta"], "rest"),
        (vec!["Channel=beta"], "rest"),
        (vec!["channel=Beta"], "rest"),
        (vec!["uid=u42"], "user"),
        (vec!["uid=u42x"], "rest"),
        (vec!["uid=x"], "rest"),
        (vec!["session=abc"], "session-no-debug"),
        (vec!["session="], "session-no-debug"),
        (vec!["session=abc; debug=1"], "rest"),
        (vec!["session"], "rest"),
        (vec![], "rest"),
    ] {
        let mut q = req("h", "/");
        for c in &cookies {
            q.headers
                .append(http::header::COOKIE, HeaderValue::from_str(c).unwrap());
        }
        assert_eq!(name_of(&r, &q), want, "{cookies:?}");
    }
}

#[test]
fn cookie_matches_compile_errors_name_the_field() {
    let s = snapshot(
        any(vec![route(
            "bad",
            ir::RouteMatch {
                cookies: vec![kv("c", ir::StringMatch::Regex("(".into()), false)],
                ..Default::default()
            },
            forward("a"),
        )]),
        vec![],
    );
    let e = compile(&s).unwrap_err();
    assert_eq!(
        e.path,
        "virtualHosts[0].routes[0].match.cookies[0].match.regex"
    );
}

#[test]
fn wildcard_hosts_match_one_or_more_labels() {
    let s = snapshot(
        vec![
            vhost(
                "wild",
                vec![ir::HostMatch::Suffix("*.example.com".into())],
                vec![route("wild", prefix("/"), forward("a"))],
            ),
            vhost(
                "deeper",
                vec![ir::HostMatch::Suffix(".eu.example.com".into())],
                vec![route("deeper", prefix("/"), forward("a"))],
            ),
            vhost(
                "exact",
                vec![ir::HostMatch::Exact("www.eu.example.com".into())],
                vec![route("exact", prefix("/"), forward("a"))],
            ),
            vhost(
                "dup",
                vec![ir::HostMatch::Suffix(".example.com".into())],
                vec![route("dup", prefix("/"), forward("a"))],
            ),
            vhost(
                "any",
                vec![ir::HostMatch::Any],
                vec![route("any", prefix("/"), forward("a"))],
            ),
        ],
        vec![],
    );
    let r = compile(&s).unwrap();
    for (host, want) in [
        ("a.example.com", "wild"),
        ("A.B.EXAMPLE.COM:8080", "wild"),
        ("example.com", "any"),
        ("badexample.com", "any"),
        ("x.eu.example.com", "deeper"),
        ("eu.example.com", "wild"),
        ("www.eu.example.com", "exact"),
        ("example.com.evil", "any"),
    ] {
        assert_eq!(name_of(&r, &req(host, "/")), want, "{host}");
    }
}

#[test]
fn many_suffix_hosts_pick_the_longest() {
    let mut vhosts: Vec<ir::VirtualHost> = (0..1000)
        .map(|i| {
            vhost(
                &format!("t{i}"),
                vec![ir::HostMatch::Suffix(format!(".t{i}.example"))],
                vec![route(&format!("t{i}"), prefix("/"), forward("a"))],
            )
        })
        .collect();
    vhosts.push(vhost(
        "deep",
        vec![ir::HostMatch::Suffix(".api.t7.example".into())],
        vec![route("deep", prefix("/"), forward("b"))],
    ));
    let r = compile(&snapshot(vhosts, vec![])).unwrap();
    assert_eq!(name_of(&r, &req("x.t999.example", "/")), "t999");
    assert_eq!(name_of(&r, &req("x.t7.example", "/")), "t7");
    assert_eq!(name_of(&r, &req("x.api.t7.example", "/")), "deep");
    assert_eq!(name_of(&r, &req("x.t1000.example", "/")), "no");
}

#[test]
fn repeated_headers_match_on_their_joined_values() {
    let s = snapshot(
        any(vec![
            route(
                "joined",
                ir::RouteMatch {
                    headers: vec![kv("x-tag", ir::StringMatch::Exact("a,b".into()), false)],
                    ..Default::default()
                },
                forward("a"),
            ),
            route("rest", ir::RouteMatch::default(), forward("b")),
        ]),
        vec![],
    );
    let r = compile(&s).unwrap();
    let two = req("h", "/").header("x-tag", "a").header("x-tag", "b");
    assert_eq!(name_of(&r, &two), "joined");
    assert_eq!(name_of(&r, &req("h", "/").header("x-tag", "a,b")), "joined");
    assert_eq!(name_of(&r, &req("h", "/").header("x-tag", "a")), "rest");
}

#[test]
fn large_tables_keep_first_match_order() {
    let mut routes = Vec::new();
    // A catch-all with a header condition first: it must still win when its header is sent.
    routes.push(route(
        "canary",
        ir::RouteMatch {
            path: Some(ir::PathMatch::Prefix("/".into())),
            headers: vec![kv("x-canary", ir::StringMatch::Present, false)],
            ..Default::default()
        },
        forward("c"),
    ));
    for i in 0..3000 {
        routes.push(route(
            &format!("exact{i}"),
            exact(&format!("/svc{i}/health")),
            forward("a"),
        ));
        routes.push(route(
            &format!("prefix{i}"),
            prefix(&format!("/svc{i}/")),
            forward("a"),
        ));
    }
    routes.push(route(
        "regex",
        ir::RouteMatch {
            path: Some(ir::PathMatch::Regex("/svc[0-9]+/health".into())),
            ..Default::default()
        },
        forward("b"),
    ));
    routes.push(route("short", prefix("/svc1"), forward("b")));
    routes.push(route("root", prefix("/"), forward("b")));
    let r = compile(&snapshot(any(routes), vec![])).unwrap();
    for (uri, want) in [
        ("/svc1/health", "exact1"),
        ("/svc1/healthz", "prefix1"),
        ("/svc2999/x", "prefix2999"),
        ("/svc1", "short"),
        ("/svc12", "short"),
        ("/svc3000/health", "regex"),
        ("/svc3000/x", "root"),
        ("/other", "root"),
    ] {
        assert_eq!(name_of(&r, &req("h", uri)), want, "{uri}");
    }
    assert_eq!(
        name_of(&r, &req("h", "/svc5/health").header("x-canary", "1")),
        "canary"
    );
}

fn cors(origins: &[&str]) -> ir::Cors {
    ir::Cors {
        allow_origins: origins.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn cors_preflights_match_routes_by_the_requested_method() {
    let get_api = |name: &str, path: &str, with_cors: bool| {
        let mut r = route(
            name,
            ir::RouteMatch {
                path: Some(ir::PathMatch::Prefix(path.into())),
                method: Some("GET".into()),
                ..Default::default()
            },
            forward("a"),
        );
        if with_cors {
            r.cors = Some(Box::new(cors(&["https://app.example"])));
        }
        r
    };
    let s = snapshot(
        any(vec![
            get_api("api", "/api", true),
            get_api("plain", "/plain", false),
        ]),
        vec![],
    );
    let r = compile(&s).unwrap();
    let preflight = |uri: &str, method: &'static str| {
        req("h", uri)
            .method(Method::OPTIONS)
            .header("origin", "https://app.example")
            .header("access-control-request-method", method)
    };
    assert_eq!(name_of(&r, &preflight("/api/x", "GET")), "api");
    assert_eq!(name_of(&r, &preflight("/api/x", "POST")), "no");
    assert_eq!(name_of(&r, &preflight("/plain/x", "GET")), "no");
    // Not a preflight: no Origin.
    let bare = req("h", "/api/x")
        .method(Method::OPTIONS)
        .header("access-control-request-method", "GET");
    assert_eq!(name_of(&r, &bare), "no");
    // The routed preflight is answered by the policy.
    with_routed(&r, &preflight("/api/x", "GET"), |routed| {
        let routed = routed.unwrap();
        let q = preflight("/api/x", "GET");
        let resp = routed.filters.preflight(&q.method, &q.headers).unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()[http::header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
    });
}

#[test]
fn redirects_compute_their_path() {
    let redirect = |path: Option<ir::RedirectPath>, status: u16| {
        ir::RouteAction::Redirect(ir::Redirect {
            scheme: Some("https".into()),
            host: None,
            port: None,
            path,
            status,
            drop_query: false,
        })
    };
    let s = snapshot(
        any(vec![
            route(
                "moved",
                prefix("/old/"),
                redirect(Some(ir::RedirectPath::Prefix("/new/".into())), 301),
            ),
            route(
                "landing",
                exact("/promo"),
                redirect(Some(ir::RedirectPath::FullPath("/landing".into())), 302),
            ),
            route("https", prefix("/"), redirect(None, 308)),
        ]),
        vec![],
    );
    let r = compile(&s).unwrap();
    assert_eq!(
        run(&r, &req("h", "/old/a/b?x=1")),
        "moved redirect 301 /new/a/b"
    );
    assert_eq!(
        run(&r, &req("h", "/promo")),
        "landing redirect 302 /landing"
    );
    assert_eq!(run(&r, &req("h", "/any")), "https redirect 308 /any");

    // A prefix redirect needs a prefix match.
    let s = snapshot(
        any(vec![route(
            "bad",
            exact("/x"),
            redirect(Some(ir::RedirectPath::Prefix("/y".into())), 301),
        )]),
        vec![],
    );
    assert_eq!(
        compile(&s).unwrap_err().path,
        "virtualHosts[0].routes[0].redirect.path.prefix"
    );
}

#[test]
fn regex_rewrites_through_routing() {
    let rw = |pattern: &str, substitution: &str| {
        ir::RouteAction::Forward(ir::ForwardAction {
            clusters: vec![ir::WeightedCluster::new("a".into(), 1)],
            rewrite: ir::Rewrite {
                regex: Some(ir::RegexRewrite {
                    pattern: pattern.into(),
                    substitution: substitution.into(),
                }),
                ..Default::default()
            },
            timeout_ms: None,
            retry: None,
            idle_timeout_ms: None,
            unresolved_weight: 0,
        })
    };
    let s = snapshot(
        any(vec![route(
            "users",
            prefix("/users/"),
            rw(r"^/users/(\d+)/(\w+)$", "/v2/$2/${1}"),
        )]),
        vec![],
    );
    let r = compile(&s).unwrap();
    assert_eq!(
        run(&r, &req("h", "/users/42/orders?x=1")),
        "users -> a /v2/orders/42"
    );
    // No match: the path stays.
    assert_eq!(run(&r, &req("h", "/users/x")), "users -> a /users/x");

    let bad = snapshot(
        any(vec![route("bad", prefix("/"), rw(r"^/(\d+)", "/$2"))]),
        vec![],
    );
    assert_eq!(
        compile(&bad).unwrap_err().path,
        "virtualHosts[0].routes[0].forward.rewrite.regex.substitution"
    );
    let mut both = snapshot(any(vec![route("both", prefix("/"), rw("a", "b"))]), vec![]);
    if let ir::RouteAction::Forward(f) = &mut both.route_tables[0].virtual_hosts[0].routes[0].action
    {
        f.rewrite.prefix = Some("/".into());
    }
    assert_eq!(
        compile(&both).unwrap_err().path,
        "virtualHosts[0].routes[0].forward.rewrite"
    );
}

#[test]
fn filters_chain_across_delegations() {
    let pair = |n: &str, v: &str| ir::HeaderPair {
        name: n.into(),
        value: v.into(),
    };
    let mut inner = route("inner", prefix("/"), forward("a"));
    inner.request_headers = ir::HeaderMods {
        set: vec![pair("x-layer", "inner")],
        add: vec![pair("x-trail", "inner")],
        ..Default::default()
    };
    inner.response_headers = ir::HeaderMods {
        add: vec![pair("x-served-by", "inner")],
        ..Default::default()
    };
    inner.cors = Some(Box::new(cors(&["https://inner.example"])));
    let router_table = ir::RouteTable {
        name: "router".into(),
        virtual_hosts: any(vec![inner]),
    };
    let mut outer = route(
        "outer",
        prefix("/"),
        ir::RouteAction::Delegate(ir::DelegateAction {
            route_table: "router".into(),
            rewrite: ir::Rewrite::default(),
        }),
    );
    outer.request_headers = ir::HeaderMods {
        set: vec![pair("x-layer", "outer")],
        add: vec![pair("x-trail", "outer")],
        remove: vec!["x-secret".into()],
    };
    outer.response_headers = ir::HeaderMods {
        remove: vec!["server".into()],
        ..Default::default()
    };
    outer.cors = Some(Box::new(cors(&["https://outer.example"])));
    let r = compile(&snapshot(any(vec![outer]), vec![router_table])).unwrap();
    let q = req("h", "/x")
        .header("x-secret", "1")
        .header("origin", "https://inner.example");
    with_routed(&r, &q, |routed| {
        let routed = routed.unwrap();
        assert_eq!(routed.route.name, "inner");
        let mut h = q.headers.clone();
        routed.filters.on_request(&mut h);
        assert_eq!(h["x-layer"], "inner");
        let trail: Vec<_> = h.get_all("x-trail").iter().collect();
        assert_eq!(trail, ["outer", "inner"]);
        assert!(!h.contains_key("x-secret"));

        // The innermost CORS policy decides.
        let cors = routed.filters.cors_origin(&q.headers);
        assert!(cors.is_some());
        let mut out = HeaderMap::new();
        out.insert("server", HeaderValue::from_static("upstream"));
        routed.filters.on_response(&mut out, cors);
        assert_eq!(out["x-served-by"], "inner");
        assert!(!out.contains_key("server"));
        assert_eq!(
            out[http::header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://inner.example"
        );
        let outer_origin = req("h", "/x").header("origin", "https://outer.example");
        assert!(routed.filters.cors_origin(&outer_origin.headers).is_none());
    });
    // A route without filters has an empty chain.
    let plain = compile(&snapshot(
        any(vec![route("p", prefix("/"), forward("a"))]),
        vec![],
    ))
    .unwrap();
    with_routed(&plain, &req("h", "/"), |routed| {
        assert!(routed.unwrap().filters.is_empty());
    });
}

#[test]
fn filter_compile_errors_name_the_field() {
    let with = |f: &dyn Fn(&mut ir::Route)| {
        let mut r = route("r", prefix("/"), forward("a"));
        f(&mut r);
        compile(&snapshot(any(vec![r]), vec![])).unwrap_err().path
    };
    assert_eq!(
        with(&|r| r.mirrors = vec![ir::Mirror {
            cluster: "nope".into(),
            percent: 10
        }]),
        "virtualHosts[0].routes[0].mirrors[0].cluster"
    );
    assert_eq!(
        with(&|r| {
            r.action = ir::RouteAction::DirectResponse(ir::DirectResponse {
                status: 200,
                body: String::new(),
            });
            r.mirrors = vec![ir::Mirror {
                cluster: "b".into(),
                percent: 10,
            }];
        }),
        "virtualHosts[0].routes[0].mirrors"
    );
    assert_eq!(
        with(&|r| r.response_headers.set = vec![ir::HeaderPair {
            name: "content-length".into(),
            value: "1".into()
        }]),
        "virtualHosts[0].routes[0].responseHeaders.set[0].name"
    );
    assert_eq!(
        with(&|r| r.cors = Some(Box::new(cors(&["nope"])))),
        "virtualHosts[0].routes[0].cors.allowOrigins[0]"
    );
}

#[test]
fn inverted_matches_follow_envoy_for_absent_and_opaque_values() {
    let hm = |m: ir::StringMatch, invert: bool| ir::RouteMatch {
        headers: vec![kv("x-v", m, invert)],
        ..Default::default()
    };
    let s = snapshot(
        any(vec![
            route(
                "not-red",
                hm(ir::StringMatch::Exact("red".into()), true),
                forward("a"),
            ),
            route("absent", hm(ir::StringMatch::Present, true), forward("b")),
            route("rest", ir::RouteMatch::default(), forward("c")),
        ]),
        vec![],
    );
    let r = compile(&s).unwrap();
    assert_eq!(name_of(&r, &req("h", "/").header("x-v", "blue")), "not-red");
    assert_eq!(name_of(&r, &req("h", "/").header("x-v", "red")), "rest");
    // Absent: only the inverted presence match passes.
    assert_eq!(name_of(&r, &req("h", "/")), "absent");
    // Present but not UTF-8: no value matches it, so the inverted value match passes.
    let mut q = req("h", "/");
    q.headers
        .insert("x-v", HeaderValue::from_bytes(&[0xff, 0xfe]).unwrap());
    assert_eq!(name_of(&r, &q), "not-red");
}

#[test]
fn cors_preflights_pass_routes_behind_a_delegating_route_with_a_policy() {
    let inner = route(
        "get-only",
        ir::RouteMatch {
            path: Some(ir::PathMatch::Prefix("/".into())),
            method: Some("GET".into()),
            ..Default::default()
        },
        forward("a"),
    );
    let router_table = ir::RouteTable {
        name: "router".into(),
        virtual_hosts: any(vec![inner]),
    };
    let mut outer = route(
        "outer",
        prefix("/"),
        ir::RouteAction::Delegate(ir::DelegateAction {
            route_table: "router".into(),
            rewrite: ir::Rewrite::default(),
        }),
    );
    outer.cors = Some(Box::new(cors(&["https://app.example"])));
    let r = compile(&snapshot(any(vec![outer]), vec![router_table])).unwrap();
    let preflight = |method: &'static str| {
        req("h", "/x")
            .method(Method::OPTIONS)
            .header("origin", "https://app.example")
            .header("access-control-request-method", method)
    };
    assert_eq!(name_of(&r, &preflight("GET")), "get-only");
    assert_eq!(name_of(&r, &preflight("DELETE")), "no");
    assert_eq!(name_of(&r, &req("h", "/x").method(Method::OPTIONS)), "no");
}
