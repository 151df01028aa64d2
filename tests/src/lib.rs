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
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + patience();
    let mut delay = Duration::from_millis(10);
    loop {
        match check().await {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => panic!("timed out waiting for {what}: {e:#}"),
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

/// A free TCP port on 127.0.0.1 (bound and released; the OS does not hand it out again at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
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
        let mut child = Command::new(binary("bowline-echo"))
            .args(["--name", name, "--listen", "127.0.0.1:0"])
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
        HttpClient { inner }
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
        let resp = tokio::time::timeout(Duration::from_secs(10), self.inner.request(req))
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
    /// Writes `files` (name, content) into a fresh manifests directory, starts the control plane
    /// and a gateway for `gateway` (`ns/name`), and waits until both are ready.
    pub async fn start(files: &[(&str, String)], gateway: &str) -> Stack {
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
                "--gateway".into(),
                gateway.into(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--admin-addr".into(),
                gw_admin.to_string(),
                "--log-level".into(),
                "debug".into(),
            ],
            dir.path(),
        )
        .expect("gateway");
        eventually("gateway ready", || ready(gw_admin)).await;
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
