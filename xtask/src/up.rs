//! `cargo xtask up`: build and start the quickstart stack on loopback: the echo upstreams of
//! `examples/quickstart`, the control plane watching that directory, and a gateway for
//! `quickstart/ingress`. Prints the URLs and a few curl lines; Ctrl-C stops everything.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Ports fixed by `examples/quickstart/endpoints.yaml` and `mesh.yaml`.
const UPSTREAMS: [(&str, u16); 4] = [
    ("front", 9090),
    ("color-blue", 9091),
    ("color-green", 9092),
    ("color-red", 9093),
];
const GATEWAY_PORT: u16 = 8080;
const CP_GRPC: &str = "127.0.0.1:15010";
const CP_ADMIN: &str = "127.0.0.1:15011";
const GW_ADMIN: &str = "127.0.0.1:15021";

#[derive(clap::Args, Debug)]
pub struct Up {
    /// Build and run release binaries (slower to build, faster to run).
    #[arg(long)]
    release: bool,
    /// The manifests directory the control plane watches.
    #[arg(long, default_value = "examples/quickstart")]
    manifests: PathBuf,
}

struct Children(Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        // Children got the terminal's SIGINT too; give them time to drain, then make sure.
        let deadline = Instant::now() + Duration::from_secs(10);
        for (name, child) in &mut self.0 {
            while Instant::now() < deadline {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            if let Ok(None) = child.try_wait() {
                eprintln!("stopping {name}");
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl Up {
    pub fn run(self, root: &Path) -> anyhow::Result<()> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(&cargo);
        build.current_dir(root).args([
            "build",
            "-p",
            "bowline-control-plane",
            "-p",
            "bowline-gateway",
            "-p",
            "bowline-tests",
            "--bins",
        ]);
        if self.release {
            build.arg("--release");
        }
        if !build.status().context("running cargo build")?.success() {
            bail!("cargo build failed");
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join(if self.release { "release" } else { "debug" });
        let manifests = root.join(&self.manifests);

        for (_, port) in UPSTREAMS {
            ensure_free(port)?;
        }
        ensure_free(GATEWAY_PORT)?;

        let (tx, rx) = mpsc::channel();
        ctrlc::set_handler(move || {
            let _ = tx.send(());
        })
        .context("installing the Ctrl-C handler")?;

        let mut children = Children(Vec::new());
        for (name, port) in UPSTREAMS {
            let child = Command::new(target.join("bowline-echo"))
                .args(["--name", name, "--listen", &format!("127.0.0.1:{port}")])
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| format!("starting upstream {name}"))?;
            children.0.push((name.to_string(), child));
        }
        let cp = Command::new(target.join("bowline-control-plane"))
            .args(["--manifests"])
            .arg(&manifests)
            .args(["--grpc-addr", CP_GRPC, "--admin-addr", CP_ADMIN])
            .spawn()
            .context("starting bowline-control-plane")?;
        children.0.push(("control plane".into(), cp));
        wait_ready(CP_ADMIN, "control plane", &mut children)?;
        let gw = Command::new(target.join("bowline-gateway"))
            .args([
                "--control-plane",
                &format!("http://{CP_GRPC}"),
                "--gateway",
                "quickstart/ingress",
                "--bind",
                "127.0.0.1",
                "--admin-addr",
                GW_ADMIN,
            ])
            .spawn()
            .context("starting bowline-gateway")?;
        children.0.push(("gateway".into(), gw));
        wait_ready(GW_ADMIN, "gateway", &mut children)?;

        let gw = format!("http://127.0.0.1:{GATEWAY_PORT}");
        println!(
            "\nBowline is up.\n\
             \n  gateway            {gw}\
             \n  gateway admin      http://{GW_ADMIN}/config_dump  /metrics  /ready\
             \n  control plane      grpc {CP_GRPC}, admin http://{CP_ADMIN}/debug/proxies\
             \n  manifests          {} (edit them: changes apply live)\
             \n\nTry:\
             \n  curl -s {gw}/                          # front\
             \n  curl -s {gw}/color                     # blue (80%) or green (20%)\
             \n  curl -s -H 'color: red' {gw}/color     # red, by header\
             \n  for i in $(seq 20); do curl -s {gw}/color/ | grep -o '\"name\":\"[a-z-]*\"'; done | sort | uniq -c\
             \n  curl -s {gw}/color/shades?x=1          # path rewritten to /shades?x=1 (see \"path\")\
             \n\nCtrl-C stops everything.\n",
            manifests.display()
        );

        loop {
            if rx.recv_timeout(Duration::from_millis(500)).is_ok() {
                println!("\nstopping…");
                break;
            }
            for (name, child) in &mut children.0 {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!("{name} exited unexpectedly ({status})");
                }
            }
        }
        drop(children);
        println!("stopped");
        Ok(())
    }
}

fn ensure_free(port: u16) -> anyhow::Result<()> {
    std::net::TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .with_context(|| format!("port {port} on 127.0.0.1 is in use; the quickstart needs it"))
}

/// Polls `GET /ready` on an admin address for up to 60 s.
fn wait_ready(addr: &str, what: &str, children: &mut Children) -> anyhow::Result<()> {
    let addr: SocketAddr = addr.parse()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if http_status(addr, "/ready") == Some(200) {
            return Ok(());
        }
        for (name, child) in &mut children.0 {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("{name} exited while waiting for the {what} ({status})");
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the {what} did not become ready on http://{addr}/ready within 60 s")
}

fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}
