//! End-to-end TLS: the real control plane, gateway and echo upstreams on loopback, with
//! certificates made by rcgen in temporary directories.
//!
//! * termination: SNI picks the certificate, ALPN h2, TLS 1.2 and 1.3 but not 1.1, a replaced
//!   certificate file is served without a restart while an open connection keeps working;
//! * client certificates: STRICT mutual TLS and PERMISSIVE mode, and a config naming a missing
//!   certificate file is rejected;
//! * origination: the gateway's client policy verifies the upstream's name (or SANs).

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, ensure};
use bowline_tests::{
    Echo, HttpClient, IssuedCert, Reply, Stack, TestPki, TlsConn, TlsOptions, eventually,
    free_port, replace_file, tls_get,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

fn path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// A file certificate in manifest syntax.
fn file_cert(c: &IssuedCert) -> String {
    format!(
        "{{certificateChain: {}, privateKey: {}}}",
        path(&c.chain),
        path(&c.key)
    )
}

/// VirtualServices, VirtualNodes, Services and EndpointSlices in namespace `shop`:
/// `(name, node listener port, protocol, DNS service name, upstream port)`. Nodes sharing a
/// DNS service name share its endpoints.
fn backends(nodes: &[(&str, u16, &str, &str, u16)]) -> String {
    let mut out = String::new();
    let mut services = std::collections::BTreeSet::new();
    for (name, port, protocol, service, upstream) in nodes {
        out += &format!(
            r#"
---
apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualService
metadata: {{name: {name}, namespace: shop}}
spec:
  provider: {{virtualNode: {{virtualNodeRef: {{name: {name}}}}}}}
---
apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualNode
metadata: {{name: {name}, namespace: shop}}
spec:
  listeners:
    - portMapping: {{port: {port}, protocol: {protocol}}}
  serviceDiscovery:
    dns: {{hostname: {service}.shop.svc.cluster.local}}
"#
        );
        if services.insert(*service) {
            out += &format!(
                r#"
---
apiVersion: v1
kind: Service
metadata: {{name: {service}, namespace: shop}}
spec:
  ports: [{{name: http, port: {port}, targetPort: {upstream}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {service}-a
  namespace: shop
  labels: {{kubernetes.io/service-name: {service}}}
addressType: IPv4
ports: [{{name: http, port: {upstream}}}]
endpoints:
  - addresses: ["127.0.0.1"]
"#
            );
        }
    }
    out
}

/// A GatewayRoute `prefix` → virtual service `target` (prefix kept).
fn route(name: &str, prefix: &str, target: &str) -> String {
    format!(
        r#"
---
apiVersion: mesh.bowline.io/v1alpha1
kind: GatewayRoute
metadata: {{name: {name}, namespace: shop}}
spec:
  httpRoute:
    match: {{prefix: {prefix}}}
    action:
      target: {{virtualService: {{virtualServiceRef: {{name: {target}}}}}}}
      rewrite:
        prefix: {{defaultPrefix: DISABLED}}
"#
    )
}

fn gateway(listeners: &str, backend_defaults: &str) -> String {
    format!(
        r#"apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualGateway
metadata: {{name: gw, namespace: shop}}
spec:
  listeners:
{listeners}
{backend_defaults}
"#
    )
}

fn echo_header(r: &Reply, name: &str) -> Option<String> {
    r.json()
        .and_then(|j| j["headers"][name][0].as_str().map(str::to_string))
}

/// The reply of `request` if it is a 200.
async fn ok(request: impl Future<Output = anyhow::Result<Reply>>) -> anyhow::Result<Reply> {
    let r = request.await?;
    ensure!(r.status == 200, "status {}: {}", r.status, r.body);
    Ok(r)
}

/// Sends a TLS 1.1 ClientHello (no supported_versions extension) and returns the first bytes
/// of the answer.
async fn tls11_hello(addr: SocketAddr, sni: &str) -> anyhow::Result<Vec<u8>> {
    let mut body = vec![0x03, 0x02]; // client_version: TLS 1.1
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // session id
    // Cipher suites: TLS 1.2 ECDHE-GCM ones rustls has, and TLS 1.0/1.1 CBC ones.
    body.extend_from_slice(&[0x00, 0x08, 0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x13, 0x00, 0x2f]);
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    let name = sni.as_bytes();
    let mut ext = vec![0x00, 0x00]; // server_name
    let list_len = name.len() + 3;
    ext.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
    ext.extend_from_slice(&(list_len as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    ext.extend_from_slice(name);
    // signature_algorithms (ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256)
    // and supported_groups (x25519, secp256r1), so that only the version is wrong.
    ext.extend_from_slice(&[
        0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01,
    ]);
    ext.extend_from_slice(&[0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut handshake = vec![0x01];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);

    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(&record).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut answer),
    )
    .await??;
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_alpn_versions_and_certificate_reload() {
    let pki = TestPki::new("Gateway CA");
    // The default certificate also names other.test, so that the client can verify it there.
    let default = pki.issue("default", &["default.test", "other.test"], &[]);
    let api = pki.issue("api", &["api.example.com"], &[]);
    let wild = pki.issue("wild", &["*.example.org"], &[]);
    let echo = Echo::start("plain").unwrap();
    let gw_port = free_port();
    let listeners = format!(
        r#"    - portMapping: {{port: {gw_port}, protocol: http}}
      tls:
        mode: STRICT
        certificate: {{file: {}}}
        certificates:
          - file: {}
            serverNames: [api.example.com]
          - file: {}
            serverNames: ["*.example.org"]"#,
        file_cert(&default),
        file_cert(&api),
        file_cert(&wild),
    );
    let files = vec![
        ("gateway.yaml", gateway(&listeners, "")),
        ("routes.yaml", route("all", "/", "plain")),
        (
            "backends.yaml",
            backends(&[("plain", 8080, "http", "plain", echo.port())]),
        ),
    ];
    let stack = Stack::start(&files, "shop/gw").await;
    let gw = addr(gw_port);
    let ca = pki.ca_path();
    let opts = TlsOptions::new(&ca);
    eventually("HTTPS through the gateway", || {
        ok(tls_get(
            gw,
            "api.example.com",
            "api.example.com",
            "/hello",
            opts,
        ))
    })
    .await;

    // SNI: exact name, wildcard, default.
    for (sni, cert, san) in [
        ("api.example.com", &api, "api.example.com"),
        ("www.example.org", &wild, "*.example.org"),
        ("other.test", &default, "default.test"),
        ("default.test", &default, "default.test"),
    ] {
        let mut conn = TlsConn::connect(gw, sni, opts)
            .await
            .unwrap_or_else(|e| panic!("{sni}: {e:#}"));
        assert!(conn.peer_dns_names().iter().any(|n| n == san), "SNI {sni}");
        assert_eq!(conn.peer, cert.der, "SNI {sni}");
        assert_eq!(conn.version, Some(rustls::ProtocolVersion::TLSv1_3));
        assert_eq!(conn.alpn.as_deref(), Some(&b"http/1.1"[..]));
        let r = conn.get("shop.example", "/sni").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            echo_header(&r, "x-forwarded-proto").as_deref(),
            Some("https")
        );
    }

    // ALPN h2: HTTP/2 over TLS to the gateway, HTTP/1.1 to the upstream.
    let h2 = TlsOptions { h2: true, ..opts };
    let mut conn = TlsConn::connect(gw, "api.example.com", h2).await.unwrap();
    assert_eq!(conn.alpn.as_deref(), Some(&b"h2"[..]));
    for _ in 0..3 {
        let r = conn.get("shop.example", "/h2").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.echo_field("version").as_deref(), Some("HTTP/1.1"));
    }

    // TLS 1.2 is served; TLS 1.1 is refused with an alert before any ServerHello.
    let tls12 = TlsOptions {
        tls12_only: true,
        ..opts
    };
    let mut conn = TlsConn::connect(gw, "api.example.com", tls12)
        .await
        .unwrap();
    assert_eq!(conn.version, Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(conn.get("shop.example", "/12").await.unwrap().status, 200);
    let answer = tls11_hello(gw, "api.example.com").await.unwrap();
    assert!(
        answer.first() == Some(&0x15),
        "expected a TLS alert record, got {answer:02x?}"
    );
    assert_eq!(answer.get(5), Some(&2), "a fatal alert: {answer:02x?}");
    assert_eq!(answer.get(6), Some(&70), "protocol_version: {answer:02x?}");

    // Plaintext HTTP on a STRICT port gets no answer.
    let plain = HttpClient::http1()
        .get(gw, "shop.example", "/plain", &[])
        .await;
    assert!(plain.is_err(), "plaintext was served: {plain:?}");

    // Rotation: replace the api certificate files; new handshakes get the new certificate
    // without a restart, and an open keep-alive connection keeps working.
    let mut kept = TlsConn::connect(gw, "api.example.com", opts).await.unwrap();
    assert_eq!(
        kept.get("shop.example", "/before").await.unwrap().status,
        200
    );
    let rotated = pki.issue("api", &["api.example.com"], &[]);
    assert_ne!(rotated.der, api.der);
    eventually("the rotated certificate", || {
        let ca = pki.ca_path();
        let want = rotated.der.clone();
        async move {
            let conn = TlsConn::connect(gw, "api.example.com", TlsOptions::new(&ca)).await?;
            ensure!(conn.peer == want, "still the previous certificate");
            Ok(())
        }
    })
    .await;
    for _ in 0..3 {
        let r = kept.get("shop.example", "/after").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(kept.peer, api.der);

    // A broken file keeps the certificate in service and is logged with its path.
    replace_file(&rotated.chain, b"not a certificate\n");
    eventually("the reload error in the gateway log", || {
        let log = stack.gateway.output();
        let chain = rotated.chain.display().to_string();
        async move {
            ensure!(
                log.contains("not reloaded") && log.contains(&chain),
                "no reload error yet"
            );
            Ok(())
        }
    })
    .await;
    let conn = TlsConn::connect(gw, "api.example.com", opts).await.unwrap();
    assert_eq!(conn.peer, rotated.der);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_permissive_mode_and_unloadable_certificates() {
    let server_pki = TestPki::new("Gateway CA");
    let client_pki = TestPki::new("Partner CA");
    let stranger_pki = TestPki::new("Stranger CA");
    let server = server_pki.issue("gw", &["gw.example.com"], &[]);
    let partner = client_pki.issue("partner", &["partner.test"], &["spiffe://shop/partner"]);
    let other = client_pki.issue("other", &["other.test"], &["spiffe://shop/other"]);
    let stranger = stranger_pki.issue("partner", &["partner.test"], &["spiffe://shop/partner"]);
    let echo = Echo::start("plain").unwrap();
    let (strict_port, permissive_port) = (free_port(), free_port());
    let listeners = format!(
        r#"    - portMapping: {{port: {strict_port}, protocol: http}}
      tls:
        mode: STRICT
        certificate: {{file: {cert}}}
        validation:
          trust: {{file: {{certificateChain: {ca}}}}}
          subjectAlternativeNames: {{match: {{exact: ["spiffe://shop/partner"]}}}}
    - portMapping: {{port: {permissive_port}, protocol: http}}
      tls:
        mode: PERMISSIVE
        certificate: {{file: {cert}}}"#,
        cert = file_cert(&server),
        ca = path(&client_pki.ca_path()),
    );
    let files = vec![
        ("gateway.yaml", gateway(&listeners, "")),
        ("routes.yaml", route("all", "/", "plain")),
        (
            "backends.yaml",
            backends(&[("plain", 8080, "http", "plain", echo.port())]),
        ),
    ];
    let stack = Stack::start(&files, "shop/gw").await;
    let (strict, permissive) = (addr(strict_port), addr(permissive_port));
    let ca = server_pki.ca_path();
    let with = |client_cert| TlsOptions {
        client_cert,
        ..TlsOptions::new(&ca)
    };
    eventually("mutual TLS with the partner certificate", || {
        ok(tls_get(
            strict,
            "gw.example.com",
            "shop.example",
            "/m",
            with(Some(&partner)),
        ))
    })
    .await;
    for (what, cert) in [
        ("no client certificate", None),
        ("a certificate without the SAN", Some(&other)),
        ("an untrusted certificate", Some(&stranger)),
    ] {
        let r = tls_get(strict, "gw.example.com", "shop.example", "/m", with(cert)).await;
        assert!(r.is_err(), "{what} was served: {r:?}");
    }
    for cert in [None, Some(&partner)] {
        let r = tls_get(
            permissive,
            "gw.example.com",
            "shop.example",
            "/p",
            with(cert),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            echo_header(&r, "x-forwarded-proto").as_deref(),
            Some("https")
        );
    }
    let r = HttpClient::http1()
        .get(permissive, "shop.example", "/p", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        echo_header(&r, "x-forwarded-proto").as_deref(),
        Some("http")
    );

    // A listener whose certificate cannot be loaded: the update is rejected, naming the
    // listener and the file, and the previous configuration keeps serving.
    let bad_port = free_port();
    let missing = server_pki.dir().join("missing.pem");
    let bad = format!(
        r#"{listeners}
    - portMapping: {{port: {bad_port}, protocol: http}}
      tls:
        mode: STRICT
        certificate: {{file: {{certificateChain: {}, privateKey: {}}}}}"#,
        path(&missing),
        path(&server.key),
    );
    stack.write_manifest("gateway.yaml", &gateway(&bad, ""));
    eventually("the rejected update in the gateway log", || {
        let log = stack.gateway.output();
        let listener = format!("listener/http-{bad_port}: tls.certificates[0].certificateChain");
        let file = missing.display().to_string();
        async move {
            let line = log
                .lines()
                .find(|l| l.contains("config rejected"))
                .unwrap_or_default();
            if !(line.contains(&listener) && line.contains(&file)) {
                bail!("no NACK naming {listener} and {file} yet");
            }
            Ok(())
        }
    })
    .await;
    let r = tls_get(
        strict,
        "gw.example.com",
        "shop.example",
        "/m",
        with(Some(&partner)),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_origination_verifies_the_upstream() {
    let mesh = TestPki::new("Mesh CA");
    let secure_cert = mesh.issue(
        "secure",
        &["secure.shop.svc.cluster.local"],
        &["spiffe://shop/secure"],
    );
    let secure = Echo::start_tls("secure", &secure_cert).unwrap();
    let plain = Echo::start("plain").unwrap();
    let gw_port = free_port();
    let listeners = format!("    - portMapping: {{port: {gw_port}, protocol: http}}");
    let policy = |sans: &str| {
        format!(
            r#"  backendDefaults:
    clientPolicy:
      tls:
        ports: [8080]
        validation:
          trust: {{file: {{certificateChain: {}}}}}{sans}"#,
            path(&mesh.ca_path())
        )
    };
    let files = vec![
        ("gateway.yaml", gateway(&listeners, &policy(""))),
        (
            "routes.yaml",
            [
                route("secure", "/secure", "secure"),
                route("misnamed", "/misnamed", "misnamed"),
                route("h2", "/h2", "secure-h2"),
                route("plain", "/plain", "plain"),
            ]
            .concat(),
        ),
        (
            "backends.yaml",
            backends(&[
                ("secure", 8080, "http", "secure", secure.port()),
                ("secure-h2", 8080, "http2", "secure", secure.port()),
                ("misnamed", 8080, "http", "misnamed", secure.port()),
                ("plain", 9090, "http", "plain", plain.port()),
            ]),
        ),
    ];
    let stack = Stack::start(&files, "shop/gw").await;
    let gw = addr(gw_port);
    let client = HttpClient::http1();
    let get = |path: &'static str| {
        let client = client.clone();
        async move { client.get(gw, "shop.example", path, &[]).await }
    };
    let r = eventually("HTTPS to the upstream", || ok(get("/secure"))).await;
    let tls = &r.json().unwrap()["tls"];
    assert_eq!(tls["sni"], "secure.shop.svc.cluster.local");
    assert_eq!(tls["alpn"], "http/1.1");

    let r = ok(get("/h2")).await.unwrap();
    assert_eq!(r.echo_field("version").as_deref(), Some("HTTP/2.0"));
    assert_eq!(r.json().unwrap()["tls"]["alpn"], "h2");

    // The port the policy leaves out stays plaintext.
    let r = ok(get("/plain")).await.unwrap();
    assert!(r.json().unwrap()["tls"].is_null(), "{}", r.body);

    // The certificate is not valid for misnamed.shop.svc.cluster.local.
    let r = get("/misnamed").await.unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("not valid for name"), "{}", r.body);

    // With subject alternative names, the certificate must carry one of them (instead of being
    // valid for the server name).
    let wrong = "\n          subjectAlternativeNames: {match: {exact: [\"spiffe://shop/other\"]}}";
    stack.write_manifest("gateway.yaml", &gateway(&listeners, &policy(wrong)));
    let r = eventually("503 on a wrong SAN", || async {
        let r = get("/secure").await?;
        ensure!(r.status == 503, "status {}", r.status);
        Ok(r)
    })
    .await;
    assert!(
        r.body.contains("none of the subject alternative names"),
        "{}",
        r.body
    );
    let right = "\n          subjectAlternativeNames: {match: {exact: [\"spiffe://shop/secure\"]}}";
    stack.write_manifest("gateway.yaml", &gateway(&listeners, &policy(right)));
    eventually("200 with the right SAN", || ok(get("/secure"))).await;
    ok(get("/misnamed")).await.unwrap();
}
