use super::*;

fn of(pairs: &[(&str, &str)]) -> (Annotations, Vec<String>) {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (a, problems) = parse(Some(&map));
    assert!(problems.iter().all(|p| !p.is_error()));
    (a, problems.iter().map(ToString::to_string).collect())
}

fn nginx(name: &str) -> String {
    format!("nginx.ingress.kubernetes.io/{name}")
}

#[test]
fn defaults_are_ingress_nginx_ones() {
    let (a, problems) = of(&[]);
    assert!(problems.is_empty());
    assert_eq!(a, Annotations::default());
    assert!(a.ssl_redirect && !a.force_ssl_redirect && !a.use_regex);
    assert_eq!(a.limits.burst_multiplier, 5);
    let (a, _) = of(&[(&nginx("enable-cors"), "true")]);
    let cors = a.cors.unwrap();
    assert_eq!(cors.allow_origins, ["*"]);
    assert_eq!(
        cors.allow_methods,
        ["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"]
    );
    assert!(cors.allow_headers.contains(&"Authorization".to_string()));
    assert!(cors.allow_credentials);
    assert_eq!(cors.max_age_seconds, Some(1_728_000));
    let (a, _) = of(&[(&nginx("affinity"), "cookie")]);
    assert_eq!(
        a.affinity,
        Some(Affinity {
            cookie: "INGRESSCOOKIE".into(),
            max_age_seconds: None,
            path: None,
            domain: None,
            secure: false,
            same_site: None,
        })
    );
}

#[test]
fn good_values_are_applied() {
    let (a, problems) = of(&[
        (&nginx("rewrite-target"), "/$2"),
        (&nginx("use-regex"), "True"),
        (&nginx("app-root"), "/app1"),
        (&nginx("ssl-redirect"), "false"),
        (&nginx("force-ssl-redirect"), "1"),
        (
            &nginx("permanent-redirect"),
            "https://www.example.com:8443/new",
        ),
        (&nginx("permanent-redirect-code"), "308"),
        (&nginx("backend-protocol"), "grpc"),
        (&nginx("affinity"), "cookie"),
        (&nginx("session-cookie-name"), "route"),
        (&nginx("session-cookie-expires"), "60"),
        (&nginx("session-cookie-max-age"), "172800"),
        (&nginx("upstream-hash-by"), "$http_x_user_id"),
        (&nginx("load-balance"), "ewma"),
        (&nginx("proxy-connect-timeout"), "3"),
        (&nginx("proxy-read-timeout"), "120"),
        (&nginx("proxy-send-timeout"), "30"),
        (&nginx("enable-cors"), "true"),
        (
            &nginx("cors-allow-origin"),
            "https://a.example.com, https://*.b.example.com:8443",
        ),
        (&nginx("cors-allow-methods"), "GET, POST"),
        (&nginx("cors-allow-credentials"), "false"),
        (&nginx("cors-max-age"), "600"),
        (
            &nginx("whitelist-source-range"),
            "10.0.0.0/8, 192.168.1.1, ::1/128",
        ),
        (&nginx("limit-rps"), "10"),
        (&nginx("limit-burst-multiplier"), "3"),
        (&nginx("proxy-body-size"), "8m"),
    ]);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(a.rewrite_target.as_deref(), Some("/$2"));
    assert!(a.use_regex && !a.ssl_redirect && a.force_ssl_redirect);
    assert_eq!(a.app_root.as_deref(), Some("/app1"));
    assert_eq!(
        a.redirect,
        Some(UrlRedirect {
            scheme: "https".into(),
            host: "www.example.com".into(),
            port: Some(8443),
            path: Some("/new".into()),
            status: 308
        })
    );
    assert_eq!(a.backend_protocol, BackendProtocol::Grpc);
    assert_eq!(
        a.affinity,
        Some(Affinity {
            cookie: "route".into(),
            max_age_seconds: Some(172800),
            path: None,
            domain: None,
            secure: false,
            same_site: None,
        })
    );
    assert_eq!(a.hash_by, Some(HashBy::Header("x-user-id".into())));
    assert_eq!(a.load_balance, Some(LoadBalance::Ewma));
    assert_eq!(
        (
            a.connect_timeout_seconds,
            a.read_timeout_seconds,
            a.send_timeout_seconds
        ),
        (Some(3), Some(120), Some(30))
    );
    let cors = a.cors.unwrap();
    assert_eq!(
        cors.allow_origins,
        ["https://a.example.com", "https://*.b.example.com:8443"]
    );
    assert_eq!(cors.allow_methods, ["GET", "POST"]);
    assert!(!cors.allow_credentials);
    assert_eq!(cors.max_age_seconds, Some(600));
    assert_eq!(a.allow_sources, ["10.0.0.0/8", "192.168.1.1", "::1/128"]);
    assert_eq!((a.limits.rps, a.limits.burst_multiplier), (Some(10), 3));
    assert_eq!(a.body_size, Some(8 << 20));
}

#[test]
fn bad_values_are_reported_and_not_applied() {
    // (annotation, value, expected message start after the path)
    let cases: &[(&str, &str, &str)] = &[
        (
            "proxy-connect-timeout",
            "-3",
            "\"-3\" is not a whole number of seconds above 0",
        ),
        (
            "proxy-read-timeout",
            "5s",
            "\"5s\" is not a whole number of seconds above 0",
        ),
        ("use-regex", "yes", "\"yes\" is not a boolean"),
        (
            "rewrite-target",
            "http://x/$1",
            "\"http://x/$1\" is not a path",
        ),
        ("app-root", "app1", "\"app1\" is not an absolute path"),
        (
            "permanent-redirect",
            "/relative",
            "\"/relative\" is not an absolute http or https URL",
        ),
        (
            "backend-protocol",
            "SPDY",
            "\"SPDY\" is not one of HTTP, HTTPS, GRPC, GRPCS, AJP, FCGI",
        ),
        (
            "backend-protocol",
            "FCGI",
            "\"FCGI\" is not supported (HTTP, HTTPS, GRPC and GRPCS are)",
        ),
        ("affinity", "ip", "\"ip\" is not \"cookie\""),
        (
            "upstream-hash-by",
            "$scheme$request_uri",
            "\"$scheme$request_uri\" is not supported: $scheme",
        ),
        ("upstream-hash-by", "fixed", "\"fixed\" has no variable"),
        (
            "load-balance",
            "least_conn",
            "\"least_conn\" is not round_robin or ewma",
        ),
        (
            "whitelist-source-range",
            "10.0.0.0/33",
            "\"10.0.0.0/33\" has \"10.0.0.0/33\", which is not an IP address or CIDR",
        ),
        (
            "denylist-source-range",
            "10.0.0.1,nope",
            "\"10.0.0.1,nope\" has \"nope\"",
        ),
        ("limit-rps", "0", "\"0\" is not a whole number above 0"),
        ("limit-rpm", "2000000", "\"2000000\" is above 1000000"),
        ("proxy-body-size", "8 mb", "\"8 mb\" is not a size"),
    ];
    for (name, value, want) in cases {
        let key = nginx(name);
        let (a, problems) = of(&[(&key, value)]);
        assert_eq!(problems.len(), 1, "{name}: {problems:#?}");
        let prefix = format!("metadata.annotations[{key:?}]: ignored: {want}");
        assert!(problems[0].starts_with(&prefix), "{name}: {}", problems[0]);
        assert!(
            problems[0].ends_with("the annotation is not applied"),
            "{}",
            problems[0]
        );
        assert_eq!(a, Annotations::default(), "{name}");
    }
}

#[test]
fn canary_values_are_checked_against_the_total() {
    let (a, problems) = of(&[(&nginx("canary"), "true"), (&nginx("canary-weight"), "abc")]);
    assert_eq!(a.canary.unwrap().weight, 0);
    assert!(problems[0].contains("\"abc\" is not a whole number between 0 and 100"));
    let (a, problems) = of(&[
        (&nginx("canary"), "true"),
        (&nginx("canary-weight"), "150"),
        (&nginx("canary-weight-total"), "200"),
        (&nginx("canary-by-header"), "X-Canary"),
        (&nginx("canary-by-header-value"), "yes"),
        (&nginx("canary-by-header-pattern"), "^y"),
        (&nginx("canary-by-cookie"), "beta"),
    ]);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(
        a.canary,
        Some(Canary {
            by_header: Some("X-Canary".into()),
            header_value: Some("yes".into()),
            // canary-by-header-value wins over the pattern.
            header_pattern: None,
            by_cookie: Some("beta".into()),
            weight: 150,
            weight_total: 200,
        })
    );
    let (a, problems) = of(&[(&nginx("canary-weight"), "10")]);
    assert_eq!(a.canary, None);
    assert!(problems[0].ends_with("has no effect without canary: \"true\""));
}

#[test]
fn unsupported_refused_unknown_and_twins_are_reported() {
    let (a, problems) = of(&[
        (
            &nginx("configuration-snippet"),
            "more_set_headers \"X: y\";",
        ),
        (&nginx("server-snippet"), "return 403;"),
        (&nginx("auth-url"), "http://auth"),
        (&nginx("no-such-thing"), "x"),
        ("bowline.io/use-regex", "true"),
        (&nginx("use-regex"), "false"),
        ("bowline.io/app-root", "/b"),
    ]);
    assert!(a.use_regex, "the bowline.io/ twin wins");
    assert_eq!(a.app_root.as_deref(), Some("/b"));
    let has = |key: &str, text: &str| {
        problems
            .iter()
            .any(|p| p.contains(&format!("[{key:?}]")) && p.contains(text))
    };
    assert!(
        has(
            &nginx("configuration-snippet"),
            "refused: it holds raw nginx configuration"
        ),
        "{problems:#?}"
    );
    assert!(has(&nginx("server-snippet"), "refused"));
    assert!(has(&nginx("auth-url"), "not supported by Bowline"));
    assert!(has(&nginx("no-such-thing"), "unknown annotation"));
    assert!(has(
        &nginx("use-regex"),
        "\"bowline.io/use-regex\" is also set and takes precedence"
    ));
    assert_eq!(problems.len(), 5, "{problems:#?}");
}

#[test]
fn redirect_precedence_and_codes() {
    let (a, problems) = of(&[
        (&nginx("permanent-redirect"), "https://a.example.com"),
        (&nginx("temporal-redirect"), "http://b.example.com/x"),
    ]);
    let r = a.redirect.unwrap();
    assert_eq!((r.host.as_str(), r.status), ("b.example.com", 302));
    assert!(problems[0].contains("temporal-redirect is also set"));
    let (a, problems) = of(&[
        (&nginx("permanent-redirect"), "https://a.example.com"),
        (&nginx("permanent-redirect-code"), "299"),
    ]);
    assert_eq!(a.redirect.unwrap().status, 301);
    assert!(problems[0].contains("is not a redirect status"));
}

#[test]
fn sizes_and_substitutions() {
    assert_eq!(size("0"), Ok(0));
    assert_eq!(size("1k"), Ok(1024));
    assert_eq!(size("1K"), Ok(1024));
    assert_eq!(size("2g"), Ok(2 << 30));
    assert!(size("m").is_err() && size("-1").is_err() && size("1.5m").is_err());
    let re = regex::Regex::new("/something(/|$)(.*)").unwrap();
    assert_eq!(nginx_substitution("/$2", Some(&re)).unwrap(), "/${2}");
    // nginx reads one digit; a group the path lacks expands to nothing.
    assert_eq!(nginx_substitution("/$10", Some(&re)).unwrap(), "/${1}0");
    assert_eq!(nginx_substitution("/$3x", Some(&re)).unwrap(), "/x");
    assert_eq!(nginx_substitution("/a$", Some(&re)).unwrap(), "/a$$");
    let named = regex::Regex::new("/u/(?P<id>[0-9]+)").unwrap();
    assert_eq!(
        nginx_substitution("/users/$id", Some(&named)).unwrap(),
        "/users/${id}"
    );
    assert!(
        nginx_substitution("/$host/x", Some(&re))
            .unwrap_err()
            .contains("not a capture group")
    );
}

#[test]
fn a_canary_ingress_inherits_route_settings() {
    let (a, problems) = of(&[
        (&nginx("canary"), "true"),
        (&nginx("canary-by-cookie"), "beta"),
        (&nginx("rewrite-target"), "/"),
        (&nginx("load-balance"), "ewma"),
    ]);
    assert_eq!(a.rewrite_target, None);
    assert_eq!(a.load_balance, Some(LoadBalance::Ewma));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].contains("ignored on a canary Ingress"));
}

#[test]
fn tls_backends_and_their_proxy_ssl_settings() {
    let (a, problems) = of(&[
        (&nginx("backend-protocol"), "HTTPS"),
        (&nginx("proxy-ssl-secret"), "shop/backend-ca"),
        (&nginx("proxy-ssl-verify"), "on"),
        (&nginx("proxy-ssl-name"), "Backend.Internal"),
        (&nginx("proxy-ssl-server-name"), "on"),
    ]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(a.backend_protocol, BackendProtocol::Https);
    assert_eq!(
        a.proxy_ssl,
        ProxySsl {
            secret: Some(("shop".into(), "backend-ca".into())),
            verify: true,
            name: Some("backend.internal".into()),
        }
    );
    let (a, problems) = of(&[(&nginx("backend-protocol"), "grpcs")]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(a.backend_protocol, BackendProtocol::Grpcs);
    assert_eq!(a.proxy_ssl, ProxySsl::default());

    // Without a TLS backend protocol the settings do nothing, and say so.
    let (_, problems) = of(&[(&nginx("proxy-ssl-verify"), "on")]);
    assert_eq!(
        problems,
        [
            r#"metadata.annotations["nginx.ingress.kubernetes.io/proxy-ssl-verify"]: ignored: has no effect: backend-protocol is not HTTPS or GRPCS (the backend is spoken to in plaintext)"#
        ]
    );
    // Bad values, SNI off, and verification without a CA to verify against.
    let (a, problems) = of(&[
        (&nginx("backend-protocol"), "HTTPS"),
        (&nginx("proxy-ssl-secret"), "backend-ca"),
        (&nginx("proxy-ssl-verify"), "on"),
        (&nginx("proxy-ssl-server-name"), "off"),
    ]);
    assert!(a.proxy_ssl.verify && a.proxy_ssl.secret.is_none());
    assert_eq!(
        problems,
        [
            r#"metadata.annotations["nginx.ingress.kubernetes.io/proxy-ssl-secret"]: ignored: "backend-ca" is not namespace/secretName; the annotation is not applied"#,
            r#"metadata.annotations["nginx.ingress.kubernetes.io/proxy-ssl-server-name"]: ignored: "off" is not supported: Bowline always sends the server name (SNI) to TLS backends; the annotation is not applied"#,
            r#"metadata.annotations["nginx.ingress.kubernetes.io/proxy-ssl-verify"]: ignored: needs proxy-ssl-secret (a Secret with ca.crt) to verify against; the backend's requests are refused (answered 503) rather than sent unverified"#,
        ]
    );
}

#[test]
fn upstream_hash_by_takes_nginx_values() {
    let hash = |v: &str| of(&[(&nginx("upstream-hash-by"), v)]).0.hash_by;
    assert_eq!(hash("$remote_addr"), Some(HashBy::ClientAddress));
    assert_eq!(
        hash("${http_x_user}"),
        Some(HashBy::Header("x-user".into()))
    );
    assert_eq!(
        hash("$host$request_uri"),
        Some(HashBy::Template(vec![
            ir::HashPart::Host,
            ir::HashPart::RequestUri
        ]))
    );
    assert_eq!(
        hash("tenant-${arg_tenant}/$cookie_session:$uri"),
        Some(HashBy::Template(vec![
            ir::HashPart::Literal("tenant-".into()),
            ir::HashPart::QueryParam("tenant".into()),
            ir::HashPart::Literal("/".into()),
            ir::HashPart::Cookie("session".into()),
            ir::HashPart::Literal(":".into()),
            ir::HashPart::Path,
        ]))
    );
    assert_eq!(
        hash("$request_uri"),
        Some(HashBy::Template(vec![ir::HashPart::RequestUri]))
    );
    assert_eq!(hash("${host"), None);
}

#[test]
fn affinity_cookie_attributes() {
    let (a, problems) = of(&[
        (&nginx("affinity"), "cookie"),
        (&nginx("session-cookie-domain"), ".Shop.Example"),
        (&nginx("session-cookie-secure"), "true"),
        (&nginx("session-cookie-samesite"), "lax"),
    ]);
    assert!(problems.is_empty(), "{problems:?}");
    let a = a.affinity.unwrap();
    assert_eq!(
        (a.domain.as_deref(), a.secure, a.same_site.as_deref()),
        (Some(".shop.example"), true, Some("Lax"))
    );
    let (_, problems) = of(&[
        (&nginx("affinity"), "cookie"),
        (&nginx("session-cookie-samesite"), "sometimes"),
    ]);
    assert_eq!(
        problems,
        [
            r#"metadata.annotations["nginx.ingress.kubernetes.io/session-cookie-samesite"]: ignored: "sometimes" is not None, Lax or Strict; the annotation is not applied"#
        ]
    );
    let (_, problems) = of(&[(&nginx("session-cookie-secure"), "true")]);
    assert_eq!(
        problems,
        [
            r#"metadata.annotations["nginx.ingress.kubernetes.io/session-cookie-secure"]: ignored: has no effect without affinity: "cookie""#
        ]
    );
}
