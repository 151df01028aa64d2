//! Test support for Bowline's black-box end-to-end tests: start the real binaries on loopback,
//! wait on their readiness endpoints (never on sleeps), and talk HTTP/1.1 and h2c to them.
//!
//! Binaries are found next to the test executable's profile directory (`target/<profile>/`);
//! `cargo test --workspace` builds them because their packages have integration tests.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How long `eventually` waits before failing. `BOWLINE_TEST_PATIENCE_SECS` overrides it.
pub fn patience() -> Duration {
    std::env::var("BOWLINE_TEST_PATIENCE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(30))
}

/// Polls `check` until it returns `Ok`, for at most [`patience`]; returns the last error otherwise.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    match try_eventually(check).await {
        Ok(v) => v,
        Err(e) => panic!("timed out waiting for {what}: {e:#}"),
    }
}

/// The last 40 lines of a process log.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// [`eventually`] that hands back the last error instead of panicking, for callers that record
/// the outcome (see [`conformance`]) before they fail.
pub async fn try_eventually<T, F, Fut>(mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + patience();
    let mut delay = Duration::from_millis(10);
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(200));
            }
        }
    }
}

/// The path of a workspace binary built by cargo.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (`cargo build --workspace --bins`)",
        path.display()
    );
    path
}

/// A free TCP port on 127.0.0.1, for a process under test to bind later.
///
/// Ports come from below the kernel's ephemeral range, so no client socket of a concurrent test
/// can take one as its source port between this check and the bind (a port from `bind(:0)` could
/// be handed out again as a source port at any moment). Each test process walks its own sequence
/// (seeded by its PID), never returns a port twice, and checks that the port binds now.
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    let high = ephemeral_low().max(LOW + 1_000);
    let span = high - LOW;
    let seed = std::process::id().wrapping_mul(7_919);
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // A stride of 7 visits every port of the span when 7 does not divide it.
        let port = LOW + seed.wrapping_add(n.wrapping_mul(7)) % span;
        let port = u16::try_from(port).expect("below the ephemeral range");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {LOW} and {high}");
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A child process killed when dropped, with its stderr+stdout captured to a log file.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `bin` with `args`; output goes to `log_dir/<name>.log`.
    pub fn spawn(name: &str, bin: &Path, args: &[String], log_dir: &Path) -> anyhow::Result<Proc> {
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = Command::new(bin)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        })
    }

    /// The process's output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An echo upstream (`bowline-echo`) on an ephemeral port.
pub struct Echo {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
}

impl Echo {
    pub fn start(name: &str) -> anyhow::Result<Echo> {
        Self::start_with::<&str>(name, &[])
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response as the tests see it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    /// The `name` field of an echo answer (which upstream served the request).
    pub fn echo_name(&self) -> Option<String> {
        self.json()
            .and_then(|j| j["name"].as_str().map(str::to_string))
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// A field of the echo answer: `path`, `host`, `method`…
    pub fn echo_field(&self, field: &str) -> Option<String> {
        self.json()
            .and_then(|j| j[field].as_str().map(str::to_string))
    }
}

/// An HTTP client for tests: HTTP/1.1 keep-alive, or h2c prior knowledge.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    /// How long a request may take until its response headers (10 s unless set).
    timeout: Duration,
}

impl HttpClient {
    pub fn http1() -> Self {
        Self::build(false)
    }

    pub fn h2c() -> Self {
        Self::build(true)
    }

    fn build(h2: bool) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let inner = Client::builder(TokioExecutor::new())
            .http2_only(h2)
            .build(connector);
        HttpClient {
            inner,
            timeout: Duration::from_secs(10),
        }
    }

    /// The same client, waiting up to `timeout` for response headers.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// GET `http://addr{path}` with a Host header and extra headers.
    pub async fn get(
        &self,
        addr: SocketAddr,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Reply> {
        self.request("GET", addr, host, path, headers).await
    }

    pub async fn request(
        &self,
        method: &str,
        addr: SocketAddr,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Reply> {
        let uri: http::Uri = format!("http://{addr}{path}").parse()?;
        let mut req = http::Request::builder().method(method).uri(uri);
        if !host.is_empty() {
            req = req.header(http::header::HOST, host);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::new()))?;
        let resp = tokio::time::timeout(self.timeout, self.inner.request(req))
            .await
            .context("request timed out")??;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// Answers 200 on `GET http://addr/ready`.
pub async fn ready(addr: SocketAddr) -> anyhow::Result<()> {
    let r = HttpClient::http1().get(addr, "", "/ready", &[]).await?;
    if r.status != 200 {
        bail!("{addr}/ready answered {}: {}", r.status, r.body);
    }
    Ok(())
}

/// A control plane and a gateway serving one VirtualGateway, with a manifests directory.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub manifests: PathBuf,
    pub control_plane: Proc,
    pub gateway: Proc,
    pub grpc_port: u16,
    pub cp_admin: SocketAddr,
    pub gw_admin: SocketAddr,
}

impl Stack {
    /// The control plane's `config_dump` of the gateway serving IngressClass `bowline` on these
    /// ports (its snapshot and diagnostics).
    pub async fn ingress_config_dump(
        &self,
        client: &HttpClient,
        http_port: u16,
        https_port: u16,
    ) -> anyhow::Result<Reply> {
        let path = format!(
            "/config_dump?ingressClass=bowline&httpPort={http_port}&httpsPort={https_port}"
        );
        client.get(self.cp_admin, "", &path, &[]).await
    }

    /// Writes `files` (name, content) into a fresh manifests directory, starts the control plane
    /// and a gateway for `gateway` (`ns/name`), and waits until both are ready.
    pub async fn start(files: &[(&str, String)], gateway: &str) -> Stack {
        Self::start_with(files, gateway, &[]).await
    }

    /// As [`Stack::start`], with extra flags for the gateway.
    pub async fn start_with(
        files: &[(&str, String)],
        gateway: &str,
        gateway_args: &[&str],
    ) -> Stack {
        let args: Vec<&str> = ["--gateway", gateway]
            .into_iter()
            .chain(gateway_args.iter().copied())
            .collect();
        Self::start_gateway_with(files, &args).await
    }

    /// As [`Stack::start`], with the gateway's serving flags (`--gateway`, `--ingress-class`, …)
    /// given in `gateway_args` rather than a VirtualGateway name.
    pub async fn start_gateway_with(files: &[(&str, String)], gateway_args: &[&str]) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let manifests = dir.path().join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        for (name, content) in files {
            std::fs::write(manifests.join(name), content).unwrap();
        }
        let grpc_port = free_port();
        let cp_admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let gw_admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let control_plane =
            start_control_plane(dir.path(), &manifests, grpc_port, cp_admin, "control-plane");
        eventually("control plane ready", || ready(cp_admin)).await;
        let gateway = Proc::spawn(
            "gateway",
            &binary("bowline-gateway"),
            &[
                "--control-plane".into(),
                format!("http://127.0.0.1:{grpc_port}"),
                "--bind".into(),
                "127.0.0.1".into(),
                "--admin-addr".into(),
                gw_admin.to_string(),
                "--log-level".into(),
                "debug".into(),
            ]
            .into_iter()
            .chain(gateway_args.iter().map(|a| a.to_string()))
            .collect::<Vec<_>>(),
            dir.path(),
        )
        .expect("gateway");
        if let Err(e) = try_eventually(|| ready(gw_admin)).await {
            panic!(
                "timed out waiting for gateway ready: {e:#}\n--- gateway log ---\n{}\n--- control plane log ---\n{}",
                tail(&gateway.output()),
                tail(&control_plane.output())
            );
        }
        Stack {
            dir,
            manifests,
            control_plane,
            gateway,
            grpc_port,
            cp_admin,
            gw_admin,
        }
    }

    /// Replaces a manifest file atomically (write + rename, as editors and `kubectl` users do).
    pub fn write_manifest(&self, name: &str, content: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, self.manifests.join(name)).unwrap();
    }

    /// Kills the control plane (SIGKILL).
    pub fn kill_control_plane(&mut self) {
        self.control_plane.kill();
    }

    /// Starts a new control plane on the same ports and manifests.
    pub async fn restart_control_plane(&mut self) {
        self.control_plane.kill();
        self.control_plane = start_control_plane(
            self.dir.path(),
            &self.manifests,
            self.grpc_port,
            self.cp_admin,
            "control-plane-2",
        );
        eventually("restarted control plane ready", || ready(self.cp_admin)).await;
    }

    /// The config version the gateway serves (from its config dump).
    pub async fn gateway_version(&self) -> anyhow::Result<String> {
        let r = HttpClient::http1()
            .get(self.gw_admin, "", "/config_dump", &[])
            .await?;
        let j: serde_json::Value = serde_json::from_str(&r.body)?;
        Ok(j["version"].as_str().unwrap_or_default().to_string())
    }
}

fn start_control_plane(
    dir: &Path,
    manifests: &Path,
    grpc_port: u16,
    admin: SocketAddr,
    name: &str,
) -> Proc {
    Proc::spawn(
        name,
        &binary("bowline-control-plane"),
        &[
            "--manifests".into(),
            manifests.display().to_string(),
            "--grpc-addr".into(),
            format!("127.0.0.1:{grpc_port}"),
            "--admin-addr".into(),
            admin.to_string(),
            "--log-level".into(),
            "debug".into(),
        ],
        dir,
    )
    .expect("control plane")
}

/// Runs `n` requests through `f` with up to `concurrency` in flight while `stop` is false,
/// returning (successes, failures as strings).
pub async fn load<F, Fut>(concurrency: usize, stop: Arc<AtomicBool>, f: F) -> (usize, Vec<String>)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let f = Arc::new(f);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let f = f.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0usize;
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match f().await {
                    Ok(()) => ok += 1,
                    Err(e) => failures.push(format!("{e:#}")),
                }
            }
            (ok, failures)
        }));
    }
    let mut ok = 0;
    let mut failures = Vec::new();
    for t in tasks {
        let (o, f) = t.await.expect("load task");
        ok += o;
        failures.extend(f);
    }
    (ok, failures)
}

/// Manifests of one gateway `edge/gw` on `gw_port` routing every request, path unchanged, to one
/// upstream on 127.0.0.1:`upstream`.
pub fn one_route(gw_port: u16, upstream: u16) -> Vec<(&'static str, String)> {
    vec![(
        "all.yaml",
        format!(
            r#"
apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualGateway
metadata: {{name: gw, namespace: edge}}
spec:
  listeners:
    - portMapping: {{port: {gw_port}, protocol: http}}
---
apiVersion: mesh.bowline.io/v1alpha1
kind: GatewayRoute
metadata: {{name: all, namespace: edge}}
spec:
  httpRoute:
    match: {{prefix: /}}
    action:
      target: {{virtualService: {{virtualServiceRef: {{name: app}}}}}}
      rewrite:
        prefix: {{defaultPrefix: DISABLED}}
---
apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualService
metadata: {{name: app, namespace: edge}}
spec:
  provider: {{virtualNode: {{virtualNodeRef: {{name: app}}}}}}
---
apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualNode
metadata: {{name: app, namespace: edge}}
spec:
  listeners:
    - portMapping: {{port: 8080, protocol: http}}
  serviceDiscovery:
    dns: {{hostname: app.edge.svc.cluster.local}}
---
apiVersion: v1
kind: Service
metadata: {{name: app, namespace: edge}}
spec:
  ports: [{{port: 8080, targetPort: {upstream}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: app-1
  namespace: edge
  labels: {{kubernetes.io/service-name: app}}
addressType: IPv4
ports: [{{port: {upstream}}}]
endpoints:
  - addresses: ["127.0.0.1"]
"#
        ),
    )]
}

// === helpers for the routing tests (tests/tests/routing.rs) ===

impl HttpClient {
    /// Any method, with a body, to `http://addr{path}` with a Host header and extra headers.
    pub async fn send(
        &self,
        method: &str,
        addr: SocketAddr,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<Reply> {
        let uri: http::Uri = format!("http://{addr}{path}").parse()?;
        let mut req = http::Request::builder().method(method).uri(uri);
        if !host.is_empty() {
            req = req.header(http::header::HOST, host);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body))?;
        let resp = tokio::time::timeout(self.timeout, self.inner.request(req))
            .await
            .context("request timed out")??;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// What a [`Recorder`] received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// An in-process upstream that answers `200 recorded` and reports every request it received on
/// a channel, so a test can wait for a request (a mirrored copy, say) without polling.
pub struct Recorder {
    pub addr: SocketAddr,
    rx: tokio::sync::mpsc::UnboundedReceiver<Recorded>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    pub async fn start() -> anyhow::Result<Recorder> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let tx = tx.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body.collect().await?.to_bytes();
                                let _ = tx.send(Recorded {
                                    method: parts.method.to_string(),
                                    path: parts
                                        .uri
                                        .path_and_query()
                                        .map(|p| p.to_string())
                                        .unwrap_or_default(),
                                    headers: parts.headers,
                                    body,
                                });
                                Ok::<_, hyper::Error>(http::Response::new(Full::new(
                                    Bytes::from_static(b"recorded"),
                                )))
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Recorder { addr, rx, task })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The next request received, waiting at most [`patience`].
    pub async fn next(&mut self) -> anyhow::Result<Recorded> {
        tokio::time::timeout(patience(), self.rx.recv())
            .await
            .context("no request reached the recorder")?
            .context("recorder stopped")
    }

    /// Requests received so far, without waiting.
    pub fn received(&mut self) -> Vec<Recorded> {
        let mut out = Vec::new();
        while let Ok(r) = self.rx.try_recv() {
            out.push(r);
        }
        out
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP server that accepts connections and reads from them but never answers: an upstream
/// that hangs.
pub struct Silent {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Silent {
    pub async fn start() -> anyhow::Result<Silent> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                // Keep the connection open and unanswered until the server stops.
                open.push(stream);
            }
        });
        Ok(Silent { addr, task })
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === TLS ===

/// A test certificate authority that issues PEM files into its own temporary directory.
pub struct TestPki {
    dir: tempfile::TempDir,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// The files (and DER) of a certificate issued by a [`TestPki`].
#[derive(Clone, Debug)]
pub struct IssuedCert {
    pub chain: PathBuf,
    pub key: PathBuf,
    pub der: rustls_pki_types::CertificateDer<'static>,
}

impl TestPki {
    /// A new CA named `name`, its certificate in `ca.pem`.
    pub fn new(name: &str) -> TestPki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().expect("CA key");
        let ca = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write ca.pem");
        TestPki { dir, ca }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate (a trust bundle).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Issues a certificate for `dns` names (or IP addresses) and `uris` into `<file>.pem` and
    /// `<file>.key`, each replaced atomically (write, then rename) if it exists: the key first,
    /// then the chain.
    pub fn issue(&self, file: &str, dns: &[&str], uris: &[&str]) -> IssuedCert {
        let names: Vec<String> = dns.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("leaf params");
        for uri in uris {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI((*uri).try_into().expect("URI SAN")));
        }
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, file);
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.ca).expect("leaf certificate");
        let issued = IssuedCert {
            chain: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
            der: cert.der().clone(),
        };
        replace_file(&issued.key, key.serialize_pem().as_bytes());
        replace_file(&issued.chain, cert.pem().as_bytes());
        issued
    }
}

/// Replaces a file atomically: write a temporary file beside it, then rename.
pub fn replace_file(path: &Path, content: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).expect("write temporary file");
    std::fs::rename(&tmp, path).expect("rename temporary file");
}

impl Echo {
    /// An echo upstream serving TLS with `cert`.
    pub fn start_tls(name: &str, cert: &IssuedCert) -> anyhow::Result<Echo> {
        let tls = [
            "--tls-cert".as_ref(),
            cert.chain.as_os_str(),
            "--tls-key".as_ref(),
            cert.key.as_os_str(),
        ];
        Self::start_with(name, &tls)
    }
}

/// How a [`TlsConn`] connects.
#[derive(Clone, Copy, Debug)]
pub struct TlsOptions<'a> {
    /// The CA bundle the server certificate must chain to.
    pub ca: &'a Path,
    pub client_cert: Option<&'a IssuedCert>,
    /// Offer TLS 1.2 only (instead of 1.3 and 1.2).
    pub tls12_only: bool,
    /// Offer `h2` (and speak HTTP/2 when the server picks it) besides `http/1.1`.
    pub h2: bool,
}

impl<'a> TlsOptions<'a> {
    pub fn new(ca: &'a Path) -> Self {
        TlsOptions {
            ca,
            client_cert: None,
            tls12_only: false,
            h2: false,
        }
    }
}

/// One TLS connection to a server (rustls), with HTTP/1.1 keep-alive or HTTP/2 on top.
pub struct TlsConn {
    /// The server's end-entity certificate.
    pub peer: rustls_pki_types::CertificateDer<'static>,
    pub alpn: Option<Vec<u8>>,
    pub version: Option<rustls::ProtocolVersion>,
    sender: TlsSender,
}

enum TlsSender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl TlsConn {
    /// Connects to `addr` with SNI `sni` and completes the handshake.
    pub async fn connect(
        addr: SocketAddr,
        sni: &str,
        opts: TlsOptions<'_>,
    ) -> anyhow::Result<TlsConn> {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(opts.ca)? {
            roots.add(cert?)?;
        }
        let versions: &[&'static rustls::SupportedProtocolVersion] = if opts.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)?
        .with_root_certificates(roots);
        let mut config = match opts.client_cert {
            None => builder.with_no_client_auth(),
            Some(c) => builder.with_client_auth_cert(
                vec![c.der.clone()],
                rustls_pki_types::PrivateKeyDer::from_pem_file(&c.key)?,
            )?,
        };
        config.alpn_protocols = if opts.h2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let server_name = rustls_pki_types::ServerName::try_from(sni.to_string())?;
        let tls = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_rustls::TlsConnector::from(Arc::new(config)).connect(server_name, tcp),
        )
        .await
        .context("TLS handshake timed out")??;
        let (_, conn) = tls.get_ref();
        let peer = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .context("no server certificate")?
            .clone()
            .into_owned();
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        let version = conn.protocol_version();
        let io = hyper_util::rt::TokioIo::new(tls);
        let sender = if alpn.as_deref() == Some(b"h2") {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .context("HTTP/2 handshake")?;
            tokio::spawn(conn);
            TlsSender::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .context("HTTP/1.1 handshake")?;
            tokio::spawn(conn);
            TlsSender::H1(sender)
        };
        Ok(TlsConn {
            peer,
            alpn,
            version,
            sender,
        })
    }

    /// The DNS names of the server certificate's subject alternative names.
    pub fn peer_dns_names(&self) -> Vec<String> {
        webpki::EndEntityCert::try_from(&self.peer)
            .map(|c| c.valid_dns_names().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// GET `path` with Host (HTTP/1.1) or `:authority` (HTTP/2) `host` on this connection.
    pub async fn get(&mut self, host: &str, path: &str) -> anyhow::Result<Reply> {
        let fut = async {
            let resp = match &mut self.sender {
                TlsSender::H1(s) => {
                    s.ready().await?;
                    let req = http::Request::get(path)
                        .header(http::header::HOST, host)
                        .body(Full::new(Bytes::new()))?;
                    s.send_request(req).await?
                }
                TlsSender::H2(s) => {
                    s.ready().await?;
                    let req = http::Request::get(format!("https://{host}{path}"))
                        .body(Full::new(Bytes::new()))?;
                    s.send_request(req).await?
                }
            };
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok(Reply {
                status,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .context("request timed out")?
    }
}

/// Connects with TLS and GETs `path` on a new connection.
pub async fn tls_get(
    addr: SocketAddr,
    sni: &str,
    host: &str,
    path: &str,
    opts: TlsOptions<'_>,
) -> anyhow::Result<Reply> {
    TlsConn::connect(addr, sni, opts)
        .await?
        .get(host, path)
        .await
}

// === resilience helpers ===

impl Echo {
    /// Kills the echo (SIGKILL): its port refuses connections and open ones break.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The echo's own counters (`/__echo/stats`).
    pub async fn stats(&self) -> anyhow::Result<serde_json::Value> {
        let r = HttpClient::http1()
            .get(self.addr, "", "/__echo/stats", &[])
            .await?;
        r.json().context("stats are JSON")
    }

    /// A counter of [`Echo::stats`].
    pub async fn stat(&self, name: &str) -> anyhow::Result<u64> {
        self.stats()
            .await?
            .get(name)
            .and_then(serde_json::Value::as_u64)
            .with_context(|| format!("no stat {name}"))
    }

    /// Releases every request waiting on `/__echo/hold`.
    pub async fn release(&self) -> anyhow::Result<()> {
        HttpClient::http1()
            .get(self.addr, "", "/__echo/release", &[])
            .await?;
        Ok(())
    }
}

/// The Prometheus text of an admin server's `/metrics`.
pub async fn metrics(admin: SocketAddr) -> anyhow::Result<String> {
    let r = HttpClient::http1().get(admin, "", "/metrics", &[]).await?;
    if r.status != 200 {
        bail!("{admin}/metrics answered {}", r.status);
    }
    Ok(r.body)
}

/// The value of the series `series` (name and labels, as printed) in Prometheus text; 0 when
/// absent.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

// === tcp proxying (tests/tests/tcp.rs) ===

/// An in-process TCP upstream: it greets each connection with `<name>\n`, echoes what it
/// receives and, once the client has ended its stream, answers `eof <bytes received>\n` and
/// closes. That reply, sent after the client's end of stream, shows that a half-close passed
/// through a proxy and that the other direction still flows.
pub struct TcpEcho {
    pub name: String,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TcpEcho {
    pub async fn start(name: &str) -> anyhow::Result<TcpEcho> {
        Self::serve(name, None).await
    }

    /// An echo upstream serving TLS with `cert` (ALPN `h2` and `http/1.1` offered), whose
    /// greeting says so: `<name> tls alpn=<protocol agreed, or ->`.
    pub async fn start_tls(name: &str, cert: &IssuedCert) -> anyhow::Result<TcpEcho> {
        use rustls_pki_types::pem::PemObject;
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&cert.key)?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der.clone()], key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::serve(
            name,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
        .await
    }

    async fn serve(name: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> anyhow::Result<TcpEcho> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let name_owned = name.to_string();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (name, tls) = (name_owned.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => echo_tcp(stream, format!("{name}\n")).await,
                        Some(acceptor) => {
                            let stream = acceptor.accept(stream).await?;
                            let alpn = stream.get_ref().1.alpn_protocol().map_or_else(
                                || "-".to_string(),
                                |p| String::from_utf8_lossy(p).into_owned(),
                            );
                            echo_tcp(stream, format!("{name} tls alpn={alpn}\n")).await
                        }
                    }
                });
            }
        });
        Ok(TcpEcho {
            name: name.to_string(),
            addr,
            task,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A [`TcpEcho`] connection: the greeting, the echo, then `eof <bytes>` and the close.
async fn echo_tcp<S>(stream: S, greeting: String) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut r, mut w) = tokio::io::split(stream);
    w.write_all(greeting.as_bytes()).await?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
        w.write_all(&buf[..n]).await?;
    }
    w.write_all(format!("eof {total}\n").as_bytes()).await?;
    w.shutdown().await
}

/// Connects to `addr` and reads the first line a [`TcpEcho`] sends: the name of the upstream
/// the connection reached. Fails when the connection closes first.
pub async fn tcp_greeting(
    addr: SocketAddr,
) -> anyhow::Result<(tokio::io::BufReader<tokio::net::TcpStream>, String)> {
    use tokio::io::AsyncBufReadExt;
    let stream = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .context("connect timed out")??;
    let mut stream = tokio::io::BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_line(&mut line))
        .await
        .context("no greeting within 10 s")??;
    let name = line
        .strip_suffix('\n')
        .with_context(|| format!("closed before a greeting (got {line:?})"))?;
    Ok((stream, name.to_string()))
}

// === echo options (tests/tests/grpc_retry.rs) ===

impl Echo {
    /// An echo started with extra flags (`--grpc-unavailable N`, ...).
    pub fn start_with<S: AsRef<std::ffi::OsStr>>(name: &str, args: &[S]) -> anyhow::Result<Echo> {
        Self::spawn(name, "127.0.0.1:0".parse()?, args)
    }

    /// An echo listening on `addr` (a fixed port, for manifests that name one: a pod's
    /// listener port under AWS Cloud Map discovery; loopback has all of 127.0.0.0/8 for
    /// distinct pod addresses).
    pub fn start_on(name: &str, addr: SocketAddr) -> anyhow::Result<Echo> {
        Self::spawn::<&str>(name, addr, &[])
    }

    fn spawn<S: AsRef<std::ffi::OsStr>>(
        name: &str,
        listen: SocketAddr,
        args: &[S],
    ) -> anyhow::Result<Echo> {
        let mut child = Command::new(binary("bowline-echo"))
            .args(["--name", name, "--listen", &listen.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().context("echo stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected echo output {line:?}"))?
            .parse()?;
        Ok(Echo {
            name: name.to_string(),
            addr,
            child,
        })
    }
}

// === mesh manifests for the e2e tests ===
// Each returns YAML documents, each starting with `---`; concatenate them into one file.

/// A VirtualGateway `ns/gw` with `listeners`, each a flow-style YAML listener
/// (`{portMapping: {port: 8080, protocol: http}, connectionPool: {...}}`).
pub fn gateway_manifest(ns: &str, listeners: &[String]) -> String {
    let listeners: String = listeners.iter().map(|l| format!("    - {l}\n")).collect();
    format!(
        "---\napiVersion: mesh.bowline.io/v1alpha1\nkind: VirtualGateway\nmetadata: {{name: gw, namespace: {ns}}}\nspec:\n  listeners:\n{listeners}"
    )
}

/// A GatewayRoute `ns/name` of kind `route` (`httpRoute`, `http2Route`, `grpcRoute`) with
/// `matcher` (flow-style YAML) targeting the virtual service `service`.
pub fn gateway_route_manifest(
    ns: &str,
    name: &str,
    route: &str,
    matcher: &str,
    service: &str,
) -> String {
    format!(
        r#"---
apiVersion: mesh.bowline.io/v1alpha1
kind: GatewayRoute
metadata: {{name: {name}, namespace: {ns}}}
spec:
  {route}:
    match: {matcher}
    action:
      target: {{virtualService: {{virtualServiceRef: {{name: {service}}}}}}}
"#
    )
}

/// A VirtualService `ns/name` provided by the `virtualNode` or `virtualRouter` (`provider`) of
/// the same name.
pub fn service_manifest(ns: &str, name: &str, provider: &str) -> String {
    let kind = match provider {
        "virtualRouter" => "virtualRouterRef",
        _ => "virtualNodeRef",
    };
    format!(
        r#"---
apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualService
metadata: {{name: {name}, namespace: {ns}}}
spec:
  provider: {{{provider}: {{{kind}: {{name: {name}}}}}}}
"#
    )
}

/// A VirtualRouter `ns/name` with a listener on 8080 speaking `protocol` and one route `all` of
/// kind `route` with `matcher` (flow-style) that sends everything to the node `node`, with
/// `retry` (flow-style) as its retryPolicy when given.
pub fn router_manifest(
    ns: &str,
    name: &str,
    protocol: &str,
    route: &str,
    matcher: &str,
    node: &str,
    retry: Option<&str>,
) -> String {
    let retry = retry.map_or(String::new(), |r| format!("        retryPolicy: {r}\n"));
    format!(
        r#"---
apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualRouter
metadata: {{name: {name}, namespace: {ns}}}
spec:
  listeners:
    - portMapping: {{port: 8080, protocol: {protocol}}}
  routes:
    - name: all
      {route}:
        match: {matcher}
        action:
          weightedTargets:
            - virtualNodeRef: {{name: {node}}}
              weight: 1
{retry}"#
    )
}

/// A VirtualNode `ns/name` with one listener on 8080 speaking `protocol` (`extras`: more fields
/// of the listener, flow-style, such as `connectionPool: {...}`), found through a Service of the
/// same name and one EndpointSlice per port of `ports` on 127.0.0.1 (in that order).
pub fn node_manifest(
    ns: &str,
    name: &str,
    protocol: &str,
    extras: &[&str],
    ports: &[u16],
) -> String {
    let extras: String = extras.iter().map(|e| format!("      {e}\n")).collect();
    let mut out = format!(
        r#"---
apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualNode
metadata: {{name: {name}, namespace: {ns}}}
spec:
  listeners:
    - portMapping: {{port: 8080, protocol: {protocol}}}
{extras}  serviceDiscovery:
    dns: {{hostname: {name}.{ns}.svc.cluster.local}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  ports: [{{name: http, port: 8080}}]
"#
    );
    for (i, port) in ports.iter().enumerate() {
        out += &format!(
            r#"---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-{i}
  namespace: {ns}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints:
  - addresses: ["127.0.0.1"]
"#
        );
    }
    out
}

/// Conformance results: each checked case of a data-driven conformance table appends one JSON
/// line `{"suite", "feature", "case", "outcome"}` to `<target dir>/conformance/<suite>.jsonl`,
/// which `cargo xtask conformance` renders into `docs/conformance.md`. A suite's file is
/// truncated the first time the running test binary records into it, so results of an earlier
/// run never mix with this one's (each suite is written by one test binary).
pub mod conformance {
    use std::collections::BTreeSet;
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    /// The suites this process has already truncated (and the lock for appending).
    static OPENED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

    /// `<target dir>/conformance`: `CARGO_TARGET_DIR` when set, else the workspace's `target`.
    pub fn dir() -> PathBuf {
        match std::env::var_os("CARGO_TARGET_DIR") {
            Some(d) => PathBuf::from(d),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        }
        .join("conformance")
    }

    /// Records one case of `suite` for `feature`: `passed` or not. Call it before asserting, so a
    /// failing case is recorded before the test panics.
    pub fn record(suite: &str, feature: &str, case: &str, passed: bool) {
        let mut opened = OPENED.lock().unwrap_or_else(|e| e.into_inner());
        let dir = dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let path = dir.join(format!("{suite}.jsonl"));
        let first = opened.insert(suite.to_string());
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(!first)
            .write(true)
            .truncate(first)
            .open(&path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        let line = serde_json::json!({
            "suite": suite,
            "feature": feature,
            "case": case,
            "outcome": if passed { "pass" } else { "fail" },
        });
        writeln!(file, "{line}").unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}

// === sidecars ===

/// A control plane alone (no gateway) with a manifests directory, for sidecar tests.
pub struct ControlPlane {
    pub dir: tempfile::TempDir,
    pub manifests: PathBuf,
    pub proc: Proc,
    pub grpc_port: u16,
    pub admin: SocketAddr,
}

impl ControlPlane {
    /// Writes `files` into a new manifests directory and starts a control plane on it.
    pub async fn start(files: &[(&str, String)]) -> ControlPlane {
        let dir = tempfile::tempdir().expect("tempdir");
        let manifests = dir.path().join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        for (name, content) in files {
            std::fs::write(manifests.join(name), content).unwrap();
        }
        let grpc_port = free_port();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let proc = start_control_plane(dir.path(), &manifests, grpc_port, admin, "control-plane");
        eventually("control plane ready", || ready(admin)).await;
        ControlPlane {
            dir,
            manifests,
            proc,
            grpc_port,
            admin,
        }
    }

    /// The gRPC URL proxies connect to.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }
}

/// A `bowline-sidecar` serving one VirtualNode, with its outbound listener on 127.0.0.1.
pub struct Sidecar {
    pub proc: Proc,
    pub admin: SocketAddr,
    pub outbound: SocketAddr,
}

/// Whether this process may create mount namespaces (root), which [`Sidecar::start`] needs to
/// put files at the absolute paths unchanged manifests name.
pub fn can_mount() -> bool {
    Command::new("unshare")
        .args(["--mount", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Sidecar {
    /// Starts the sidecar of `virtual_node` (NAMESPACE/NAME) against `cp`, with extra flags
    /// (`--inbound-address`, `--app-port`, …), and waits until it is ready. With `mount`
    /// (directory, mount point), it runs in a private mount namespace where the directory is
    /// bind-mounted on the mount point, as App Mesh's injector mounted certificate Secrets
    /// into Envoy (`appmesh.k8s.aws/secretMounts`): nothing outside the sidecar sees it. The
    /// mount point is created if missing. Needs [`can_mount`].
    pub async fn start(
        cp: &ControlPlane,
        name: &str,
        virtual_node: &str,
        args: &[String],
        mount: Option<(&Path, &Path)>,
    ) -> Sidecar {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let outbound: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let sidecar_args: Vec<String> = [
            "--control-plane".to_string(),
            cp.url(),
            "--virtual-node".into(),
            virtual_node.into(),
            "--outbound-port".into(),
            outbound.port().to_string(),
            "--admin-addr".into(),
            admin.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--log-level".into(),
            "debug".into(),
        ]
        .into_iter()
        .chain(args.iter().cloned())
        .collect();
        let bin = binary("bowline-sidecar");
        let proc = match mount {
            None => Proc::spawn(name, &bin, &sidecar_args, cp.dir.path()),
            Some((dir, at)) => {
                std::fs::create_dir_all(at).expect("mount point");
                let script = r#"mount --bind "$0" "$1" && shift && exec "$@""#;
                let wrapped: Vec<String> = [
                    "--mount".to_string(),
                    "--propagation".into(),
                    "private".into(),
                    "sh".into(),
                    "-c".into(),
                    script.into(),
                    dir.display().to_string(),
                    at.display().to_string(),
                    bin.display().to_string(),
                ]
                .into_iter()
                .chain(sidecar_args)
                .collect();
                Proc::spawn(name, Path::new("unshare"), &wrapped, cp.dir.path())
            }
        }
        .expect("sidecar");
        eventually(&format!("sidecar {name} ready"), || ready(admin)).await;
        Sidecar {
            proc,
            admin,
            outbound,
        }
    }
}
