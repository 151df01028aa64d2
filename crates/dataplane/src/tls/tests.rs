//! Unit tests of the TLS module: certificate selection, PEM loading and reloading, subject
//! alternative names, and handshakes between the compiled server and client configs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bowline_model::ir;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::ServerName;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

// === fixtures ===

/// A certificate authority that issues leaf certificates into a directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// The files of an issued certificate.
struct Leaf {
    chain: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        Pki::named("Bowline Test CA")
    }

    fn named(cn: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name.push(DnType::CommonName, cn);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca }
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues a certificate for DNS names / IP addresses (`names`) and URIs, written as
    /// `<file>.pem` and `<file>.key`.
    fn issue(&self, file: &str, names: &[&str], uris: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        for uri in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*uri).try_into().unwrap()));
        }
        params.distinguished_name.push(DnType::CommonName, file);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let leaf = Leaf {
            chain: self.path(&format!("{file}.pem")),
            key: self.path(&format!("{file}.key")),
        };
        write_atomically(&leaf.chain, cert.pem().as_bytes());
        write_atomically(&leaf.key, key.serialize_pem().as_bytes());
        leaf
    }
}

/// Replaces a file by a rename, as tools that rotate certificates do.
fn write_atomically(path: &Path, content: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn leaf_cert(leaf: &Leaf) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(&leaf.chain).unwrap()
}

fn cert_of(w: &Watched<rustls::sign::CertifiedKey>) -> CertificateDer<'static> {
    w.current().cert[0].clone()
}

fn tls_cert(leaf: &Leaf, names: &[&str]) -> ir::TlsCertificate {
    ir::TlsCertificate {
        certificate_chain: leaf.chain.display().to_string(),
        private_key: leaf.key.display().to_string(),
        server_names: names.iter().map(|s| s.to_string()).collect(),
    }
}

// === certificate selection ===

#[test]
fn sni_picks_exact_then_wildcard_then_default() {
    let pki = Pki::new();
    let files = TlsFiles::default();
    let default = pki.issue("default", &["default.test"], &[]);
    let api = pki.issue("api", &["api.example.com"], &[]);
    let wild = pki.issue("wild", &["*.example.com"], &[]);
    let tls = ir::ListenerTls {
        mode: ir::TlsMode::Strict,
        certificates: vec![
            tls_cert(&wild, &["*.example.com"]),
            tls_cert(&default, &[]),
            tls_cert(&api, &["api.example.com", "api.example.org"]),
        ],
        client_validation: None,
        detect_misdirected: false,
    };
    let server = ServerTls::compile(Some(&tls), &files).unwrap().unwrap();
    let r = server.resolver();
    let picked = |sni: Option<&str>| r.pick(sni).map(|w| cert_of(w));
    assert_eq!(picked(Some("api.example.com")), Some(leaf_cert(&api)));
    assert_eq!(picked(Some("api.example.org")), Some(leaf_cert(&api)));
    assert_eq!(picked(Some("www.example.com")), Some(leaf_cert(&wild)));
    // A wildcard covers exactly one label.
    assert_eq!(picked(Some("a.b.example.com")), Some(leaf_cert(&default)));
    assert_eq!(picked(Some("example.com")), Some(leaf_cert(&default)));
    assert_eq!(picked(None), Some(leaf_cert(&default)));
}

#[test]
fn without_a_default_an_unknown_name_gets_no_certificate() {
    let pki = Pki::new();
    let files = TlsFiles::default();
    let api = pki.issue("api", &["api.example.com"], &[]);
    let mut r = SniResolver::default();
    r.add(
        &["api.example.com".into()],
        files.certificate(&api.chain, &api.key).unwrap(),
        0,
    )
    .unwrap();
    assert!(r.pick(Some("api.example.com")).is_some());
    assert!(r.pick(Some("other.example.com")).is_none());
    assert!(r.pick(None).is_none());
    let err = r
        .add(
            &["x.example.com".into(), "api.example.com".into()],
            files.certificate(&api.chain, &api.key).unwrap(),
            1,
        )
        .unwrap_err();
    assert_eq!(err.0, Some(1));
}

/// The listeners of the Gateway API conformance test HTTPRouteHTTPSListenerDetectMisdirectedRequests:
/// four entries of one port sharing one certificate, and the (SNI, host) pairs it sends.
#[test]
fn a_host_of_another_entry_than_the_sni_is_misdirected() {
    let pki = Pki::new();
    let files = TlsFiles::default();
    let cert = pki.issue("shared", &["example.org"], &[]);
    let mut tls = ir::ListenerTls {
        mode: ir::TlsMode::Strict,
        certificates: vec![
            tls_cert(&cert, &[]),
            tls_cert(&cert, &["second-example.org"]),
            tls_cert(&cert, &["*.wildcard.org"]),
            tls_cert(&cert, &["fourth-example.wildcard.org"]),
        ],
        client_validation: None,
        detect_misdirected: true,
    };
    let server = ServerTls::compile(Some(&tls), &files).unwrap().unwrap();
    assert!(server.detects_misdirected());
    for (sni, host, misdirected) in [
        ("example.org", "example.org", false),
        ("example.org", "second-example.org", true),
        ("example.org", "unknown-example.org", false),
        ("second-example.org", "second-example.org", false),
        ("second-example.org", "Second-Example.org", false),
        ("second-example.org", "example.org", true),
        ("second-example.org", "unknown-example.org", true),
        (
            "third-example.wildcard.org",
            "fith-example.wildcard.org",
            false,
        ),
        (
            "third-example.wildcard.org",
            "fourth-example.wildcard.org",
            true,
        ),
        ("third-example.wildcard.org", "second-example.org", true),
        (
            "fourth-example.wildcard.org",
            "fith-example.wildcard.org",
            true,
        ),
        ("unknown-example.org", "example.org", false),
    ] {
        assert_eq!(
            server.misdirected(Some(sni), host),
            misdirected,
            "SNI {sni}, host {host}"
        );
    }
    assert!(
        server.misdirected(None, "second-example.org"),
        "no SNI: the default entry"
    );
    // Without a default entry, a host no entry serves is left to routing.
    tls.certificates.remove(0);
    let server = ServerTls::compile(Some(&tls), &files).unwrap().unwrap();
    assert!(!server.misdirected(Some("second-example.org"), "nowhere.example"));
    // Off unless asked for.
    tls.detect_misdirected = false;
    let server = ServerTls::compile(Some(&tls), &files).unwrap().unwrap();
    assert!(!server.misdirected(Some("second-example.org"), "fourth-example.wildcard.org"));
}

// === loading ===

#[test]
fn pem_errors_name_the_file() {
    let pki = Pki::new();
    let files = TlsFiles::default();
    let good = pki.issue("good", &["good.test"], &[]);
    let other = pki.issue("other", &["other.test"], &[]);

    let missing = pki.path("missing.pem");
    let err = files.certificate(&missing, &good.key).unwrap_err();
    assert_eq!(err.path, missing);
    assert!(err.reason.contains("cannot read"), "{err}");

    let no_cert = pki.path("no-cert.pem");
    std::fs::write(&no_cert, "just text\n").unwrap();
    let err = files.certificate(&no_cert, &good.key).unwrap_err();
    assert_eq!(err.path, no_cert);
    assert!(err.reason.contains("no PEM certificate"), "{err}");

    let bad_pem = pki.path("bad.pem");
    std::fs::write(
        &bad_pem,
        "-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = files.certificate(&bad_pem, &good.key).unwrap_err();
    assert_eq!(err.path, bad_pem);
    assert!(err.reason.contains("invalid PEM"), "{err}");

    // The key is a certificate: no private key in it.
    let err = files.certificate(&good.chain, &good.chain).unwrap_err();
    assert_eq!(err.path, good.chain);
    assert!(err.reason.contains("no PEM private key"), "{err}");

    // A key that does not belong to the certificate.
    let err = files.certificate(&good.chain, &other.key).unwrap_err();
    assert_eq!(err.path, other.key);
    assert!(err.reason.contains("unusable private key"), "{err}");

    let err = files.trust(&no_cert).unwrap_err();
    assert_eq!(err.path, no_cert);

    assert_eq!(files.loaded(), 0, "failed loads are not kept");
    files.certificate(&good.chain, &good.key).unwrap();
    files.trust(&pki.ca_path()).unwrap();
    assert_eq!(files.loaded(), 2);
}

#[test]
fn compile_errors_name_the_field_and_file() {
    let pki = Pki::new();
    let files = TlsFiles::default();
    let good = pki.issue("good", &["good.test"], &[]);
    let mut tls = ir::ListenerTls {
        mode: ir::TlsMode::Strict,
        certificates: vec![tls_cert(&good, &[]), tls_cert(&good, &["x.test"])],
        client_validation: None,
        detect_misdirected: false,
    };
    tls.certificates[1].private_key = pki.path("gone.key").display().to_string();
    let err = ServerTls::compile(Some(&tls), &files).unwrap_err();
    assert_eq!(err.path, "tls.certificates[1].privateKey");
    assert!(err.reason.contains("gone.key"), "{err}");

    tls.certificates.truncate(1);
    tls.client_validation = Some(ir::TlsValidation {
        trust_chain: pki.path("gone-ca.pem").display().to_string(),
        subject_alternative_names: vec![],
    });
    let err = ServerTls::compile(Some(&tls), &files).unwrap_err();
    assert_eq!(err.path, "tls.clientValidation.trustChain");

    let up = ir::UpstreamTls {
        server_name: "good.test".into(),
        trust_chain: pki.path("gone-ca.pem").display().to_string(),
        subject_alternative_names: vec![],
        client_certificate: None,
        skip_verification: false,
    };
    let err = ClientTls::compile(&up, false, &files).unwrap_err();
    assert_eq!(err.path, "tls.trustChain");
    assert!(err.reason.contains("gone-ca.pem"), "{err}");

    // Disabled: nothing is loaded.
    tls.mode = ir::TlsMode::Disabled;
    assert!(ServerTls::compile(Some(&tls), &files).unwrap().is_none());
}

#[test]
fn reload_swaps_only_changed_and_valid_files() {
    let pki = Pki::new();
    let leaf = pki.issue("site", &["site.test"], &[]);
    let w: Watched<rustls::sign::CertifiedKey> =
        Watched::load(vec![leaf.chain.clone(), leaf.key.clone()]).unwrap();
    let first = cert_of(&w);
    assert_eq!(w.reload().unwrap(), Reloaded::Unchanged);

    // A half-done rotation (new certificate, old key) is refused; the old one stays.
    let rotated = pki.issue("rotated", &["site.test"], &[]);
    write_atomically(&leaf.chain, &std::fs::read(&rotated.chain).unwrap());
    let err = w.reload().unwrap_err();
    assert_eq!(err.path, leaf.key);
    assert_eq!(cert_of(&w), first);

    // Both files replaced: the new certificate is in service.
    write_atomically(&leaf.key, &std::fs::read(&rotated.key).unwrap());
    assert_eq!(w.reload().unwrap(), Reloaded::Changed);
    assert_eq!(cert_of(&w), leaf_cert(&rotated));
    assert_eq!(w.reload().unwrap(), Reloaded::Unchanged);

    // A deleted file keeps the certificate in service.
    std::fs::remove_file(&leaf.chain).unwrap();
    let err = w.reload().unwrap_err();
    assert_eq!(err.path, leaf.chain);
    assert_eq!(cert_of(&w), leaf_cert(&rotated));
}

#[test]
fn the_watcher_reloads_a_replaced_certificate() {
    let pki = Pki::new();
    let files = TlsFiles::default();
    let leaf = pki.issue("site", &["site.test"], &[]);
    let w = files.certificate(&leaf.chain, &leaf.key).unwrap();
    let before = cert_of(&w);
    let fresh = pki.issue("fresh", &["site.test"], &[]);
    // Key first, then the chain: in between the pair does not match and is not taken.
    write_atomically(&leaf.key, &std::fs::read(&fresh.key).unwrap());
    write_atomically(&leaf.chain, &std::fs::read(&fresh.chain).unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while cert_of(&w) == before {
        assert!(
            Instant::now() < deadline,
            "the replaced certificate was not reloaded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(cert_of(&w), leaf_cert(&fresh));
}

#[test]
fn equal_settings_reuse_the_compiled_listener() {
    let pki = Pki::new();
    let files = TlsFiles::default();
    let leaf = pki.issue("site", &["site.test"], &[]);
    let tls = ir::ListenerTls {
        mode: ir::TlsMode::Strict,
        certificates: vec![tls_cert(&leaf, &[])],
        client_validation: None,
        detect_misdirected: false,
    };
    let first = ServerTls::compile(Some(&tls), &files).unwrap().unwrap();
    let again = ServerTls::compile(Some(&tls), &files).unwrap().unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    let mut other = tls.clone();
    other.mode = ir::TlsMode::Permissive;
    let different = ServerTls::compile(Some(&other), &files).unwrap().unwrap();
    assert!(!Arc::ptr_eq(&first, &different));
    drop((first, again));
    files.prune();
    let fresh = ServerTls::compile(Some(&tls), &files).unwrap().unwrap();
    assert!(!Arc::ptr_eq(&fresh, &different));
    assert!(!fresh.permissive());
}

#[test]
fn unused_files_are_forgotten() {
    let pki = Pki::new();
    let files = TlsFiles::default();
    let leaf = pki.issue("site", &["site.test"], &[]);
    let w = files.certificate(&leaf.chain, &leaf.key).unwrap();
    let t = files.trust(&pki.ca_path()).unwrap();
    files.prune();
    assert_eq!(files.loaded(), 2);
    drop(w);
    files.prune();
    assert_eq!(files.loaded(), 1);
    drop(t);
    files.prune();
    assert_eq!(files.loaded(), 0);
}

// === subject alternative names ===

#[test]
fn subject_alternative_names_match_exactly() {
    let pki = Pki::new();
    let leaf = pki.issue(
        "id",
        &["api.example.com", "10.1.2.3"],
        &["spiffe://mesh.local/ns/shop/sa/gw"],
    );
    let cert = leaf_cert(&leaf);
    let has = |names: &[&str]| {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        has_subject_alternative_name(&cert, &names)
    };
    assert!(has(&[]));
    assert!(has(&["api.example.com"]));
    assert!(has(&["API.Example.com"]));
    assert!(has(&["nope.example.com", "10.1.2.3"]));
    assert!(has(&["spiffe://mesh.local/ns/shop/sa/gw"]));
    assert!(!has(&["example.com"]));
    assert!(!has(&["*.example.com"]));
    assert!(!has(&["spiffe://mesh.local/ns/shop/sa/other"]));
    assert!(!has(&["10.1.2.4"]));
}

// === handshakes ===

/// Serves `server` on a loopback port: each connection answers one line with `tls <sni>` or
/// `plain`, after reading a line.
async fn serve(server: Arc<ServerTls>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let server = server.clone();
            tokio::spawn(async move {
                let Some(mut io) = accept(Some(&server), stream).await else {
                    return;
                };
                let mut buf = [0u8; 64];
                let _ = io.read(&mut buf).await;
                let answer = match &io {
                    ServerIo::Plain(_) => "plain\n".to_string(),
                    ServerIo::Tls(s) => format!("tls {:?}\n", s.get_ref().1.server_name()),
                };
                let _ = io.write_all(answer.as_bytes()).await;
                let _ = io.shutdown().await;
            });
        }
    });
    addr
}

fn client_config(
    pki: &Pki,
    client: Option<&Leaf>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.ca_path()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![leaf_cert(leaf)],
                rustls_pki_types::PrivateKeyDer::from_pem_file(&leaf.key).unwrap(),
            )
            .unwrap(),
    };
    Arc::new(config)
}

/// Connects with TLS, sends a line and returns the answer, or the error.
async fn exchange(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    sni: &str,
) -> std::io::Result<String> {
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await?;
    tls.write_all(b"hello\n").await?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await?;
    Ok(answer)
}

fn mtls_listener(pki: &Pki, server: &Leaf, mode: ir::TlsMode, sans: &[&str]) -> ir::ListenerTls {
    ir::ListenerTls {
        mode,
        certificates: vec![tls_cert(server, &[])],
        client_validation: Some(ir::TlsValidation {
            trust_chain: pki.ca_path().display().to_string(),
            subject_alternative_names: sans.iter().map(|s| s.to_string()).collect(),
        }),
        detect_misdirected: false,
    }
}

#[tokio::test]
async fn strict_mutual_tls_requires_a_trusted_client_certificate() {
    let pki = Pki::new();
    let stranger = Pki::named("Stranger CA");
    let files = TlsFiles::default();
    let server = pki.issue("server", &["gw.test"], &[]);
    let good = pki.issue("client", &["client.test"], &["spiffe://test/client"]);
    let other_name = pki.issue("other", &["other.test"], &[]);
    let untrusted = stranger.issue("client", &["client.test"], &["spiffe://test/client"]);
    let tls = mtls_listener(
        &pki,
        &server,
        ir::TlsMode::Strict,
        &["spiffe://test/client"],
    );
    let addr = serve(ServerTls::compile(Some(&tls), &files).unwrap().unwrap()).await;
    let all = rustls::ALL_VERSIONS;

    let answer = exchange(addr, client_config(&pki, Some(&good), all), "gw.test")
        .await
        .unwrap();
    assert_eq!(answer, "tls Some(\"gw.test\")\n");
    for (what, client) in [
        ("no certificate", None),
        ("a certificate without the SAN", Some(&other_name)),
        ("an untrusted certificate", Some(&untrusted)),
    ] {
        let result = exchange(addr, client_config(&pki, client, all), "gw.test").await;
        assert!(result.is_err(), "{what} was accepted: {result:?}");
    }
    // TLS 1.2 clients are served too.
    let tls12 = &[&rustls::version::TLS12];
    let answer = exchange(addr, client_config(&pki, Some(&good), tls12), "gw.test")
        .await
        .unwrap();
    assert!(answer.starts_with("tls"), "{answer}");
}

#[tokio::test]
async fn permissive_accepts_plaintext_and_tls() {
    let pki = Pki::new();
    let files = TlsFiles::default();
    let server = pki.issue("server", &["gw.test"], &[]);
    let tls = mtls_listener(&pki, &server, ir::TlsMode::Permissive, &[]);
    let addr = serve(ServerTls::compile(Some(&tls), &files).unwrap().unwrap()).await;

    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let mut answer = String::new();
    plain.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "plain\n");

    // TLS without a client certificate is accepted in permissive mode.
    let answer = exchange(
        addr,
        client_config(&pki, None, rustls::ALL_VERSIONS),
        "gw.test",
    )
    .await
    .unwrap();
    assert!(answer.starts_with("tls"), "{answer}");
}

#[tokio::test]
async fn origination_verifies_the_name_or_the_subject_alternative_names() {
    let pki = Pki::new();
    let files = TlsFiles::default();
    let upstream = pki.issue("upstream", &["echo.test"], &["spiffe://test/echo"]);
    let tls = ir::ListenerTls {
        mode: ir::TlsMode::Strict,
        certificates: vec![tls_cert(&upstream, &[])],
        client_validation: None,
        detect_misdirected: false,
    };
    let addr = serve(ServerTls::compile(Some(&tls), &files).unwrap().unwrap()).await;
    let connect = |server_name: &str, sans: &[&str]| {
        let up = ir::UpstreamTls {
            server_name: server_name.into(),
            trust_chain: pki.ca_path().display().to_string(),
            subject_alternative_names: sans.iter().map(|s| s.to_string()).collect(),
            client_certificate: None,
            skip_verification: false,
        };
        let client = ClientTls::compile(&up, false, &files).unwrap();
        async move {
            let tcp = TcpStream::connect(addr).await?;
            let mut s = client.connect(tcp).await?;
            s.write_all(b"hi\n").await?;
            let mut answer = String::new();
            s.read_to_string(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        }
    };
    assert!(connect("echo.test", &[]).await.unwrap().starts_with("tls"));
    let err = connect("wrong.test", &[]).await.unwrap_err();
    assert!(err.to_string().contains("not valid for name"), "{err}");
    // With SANs, they are checked instead of the name (which stays the SNI).
    assert!(
        connect("svc.internal", &["spiffe://test/echo"])
            .await
            .unwrap()
            .starts_with("tls")
    );
    let err = connect("echo.test", &["spiffe://test/other"])
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("none of the subject alternative names"),
        "{err}"
    );
}

#[tokio::test]
async fn origination_presents_the_client_certificate() {
    let pki = Pki::new();
    let files = TlsFiles::default();
    let upstream = pki.issue("upstream", &["echo.test"], &[]);
    let gateway = pki.issue("gateway", &["gateway.test"], &["spiffe://test/gateway"]);
    let tls = mtls_listener(
        &pki,
        &upstream,
        ir::TlsMode::Strict,
        &["spiffe://test/gateway"],
    );
    let addr = serve(ServerTls::compile(Some(&tls), &files).unwrap().unwrap()).await;
    let exchange = |client_certificate: Option<ir::TlsClientCertificate>| {
        let up = ir::UpstreamTls {
            server_name: "echo.test".into(),
            trust_chain: pki.ca_path().display().to_string(),
            subject_alternative_names: vec![],
            client_certificate,
            skip_verification: false,
        };
        let client = ClientTls::compile(&up, true, &files).unwrap();
        async move {
            let tcp = TcpStream::connect(addr).await?;
            let mut s = client.connect(tcp).await?;
            s.write_all(b"hi\n").await?;
            let mut answer = String::new();
            s.read_to_string(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        }
    };
    let answer = exchange(Some(ir::TlsClientCertificate {
        certificate_chain: gateway.chain.display().to_string(),
        private_key: gateway.key.display().to_string(),
    }))
    .await
    .unwrap();
    assert!(answer.starts_with("tls"), "{answer}");
    assert!(
        exchange(None).await.is_err(),
        "served without a client certificate"
    );
}

#[tokio::test]
async fn origination_without_verification_accepts_any_certificate() {
    // The endpoint's certificate is from an authority the proxy does not know, for another name.
    let stranger = Pki::new();
    let files = TlsFiles::default();
    let upstream = stranger.issue("upstream", &["elsewhere.test"], &[]);
    let tls = ir::ListenerTls {
        mode: ir::TlsMode::Strict,
        certificates: vec![tls_cert(&upstream, &[])],
        client_validation: None,
        detect_misdirected: false,
    };
    let addr = serve(ServerTls::compile(Some(&tls), &files).unwrap().unwrap()).await;
    let up = ir::UpstreamTls {
        server_name: "backend.test".into(),
        trust_chain: String::new(),
        subject_alternative_names: vec![],
        client_certificate: None,
        skip_verification: true,
    };
    assert_eq!(up.check(), Ok(()));
    let client = ClientTls::compile(&up, false, &files).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut s = client.connect(tcp).await.unwrap();
    s.write_all(b"hi\n").await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("tls"), "{answer}");
    // Skipping verification and naming a trust bundle contradict each other.
    let both = ir::UpstreamTls {
        trust_chain: "/certs/ca.pem".into(),
        ..up
    };
    assert_eq!(both.check().unwrap_err().path, "trustChain");
}
