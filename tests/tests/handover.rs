//! A new gateway process takes over the port of a running one (SO_REUSEPORT) under load, and the
//! old one drains on SIGTERM: zero failed requests.
//!
//! Runs in a network namespace of its own (as root) with `net.ipv4.tcp_migrate_req=1`, so that
//! connections still queued on the old process's listening socket when it closes move to the new
//! one instead of being reset (docs/gateway.md). Without root it is skipped with a message.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use bowline_tests::binary;

/// A network namespace removed on drop.
struct Netns(String);

impl Netns {
    fn create() -> Option<Netns> {
        let name = format!("bowline-handover-{}", std::process::id());
        let ok = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ok(&["netns", "add", &name]) {
            return None;
        }
        let ns = Netns(name);
        assert!(ok(&["-n", &ns.0, "link", "set", "lo", "up"]));
        assert!(ok(&[
            "netns",
            "exec",
            &ns.0,
            "sysctl",
            "-qw",
            "net.ipv4.tcp_migrate_req=1"
        ]));
        Some(ns)
    }

    fn command(&self, bin: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).arg(bin);
        c
    }

    fn wait_ready(&self, url: &str) {
        let status = self
            .command(&binary("bowline-load"))
            .args(["--wait-ready", url])
            .status()
            .unwrap();
        assert!(status.success(), "{url} never became ready");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn gateway(ns: &Netns, admin: &str, log: &Path) -> Kill {
    let out = std::fs::File::create(log).unwrap();
    Kill(
        ns.command(&binary("bowline-gateway"))
            .args([
                "--control-plane",
                "http://127.0.0.1:15010",
                "--gateway",
                "edge/gw",
                "--bind",
                "127.0.0.1",
                "--admin-addr",
                admin,
                "--drain-timeout",
                "10s",
            ])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    )
}

#[test]
fn a_new_gateway_takes_over_the_port_under_load_with_zero_failures() {
    if !Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
    {
        eprintln!("skipped: needs root for a network namespace");
        return;
    }
    let Some(ns) = Netns::create() else {
        eprintln!("skipped: `ip netns add` failed (no iproute2 or no permission)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(
        manifests.join("all.yaml"),
        r#"
apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualGateway
metadata: {name: gw, namespace: edge}
spec:
  listeners:
    - portMapping: {port: 8080, protocol: http}
---
apiVersion: mesh.bowline.io/v1alpha1
kind: GatewayRoute
metadata: {name: all, namespace: edge}
spec:
  httpRoute:
    match: {prefix: /}
    action:
      target: {virtualService: {virtualServiceRef: {name: app}}}
---
apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualService
metadata: {name: app, namespace: edge}
spec:
  provider: {virtualNode: {virtualNodeRef: {name: app}}}
---
apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualNode
metadata: {name: app, namespace: edge}
spec:
  listeners:
    - portMapping: {port: 9000, protocol: http}
  serviceDiscovery:
    dns: {hostname: 127.0.0.1}
"#,
    )
    .unwrap();
    let _echo = Kill(
        ns.command(&binary("bowline-echo"))
            .args(["--name", "app", "--listen", "127.0.0.1:9000"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let cp_log = std::fs::File::create(dir.path().join("cp.log")).unwrap();
    let _cp = Kill(
        ns.command(&binary("bowline-control-plane"))
            .arg("--manifests")
            .arg(&manifests)
            .args([
                "--grpc-addr",
                "127.0.0.1:15010",
                "--admin-addr",
                "127.0.0.1:15011",
            ])
            .stdout(cp_log.try_clone().unwrap())
            .stderr(cp_log)
            .spawn()
            .unwrap(),
    );
    ns.wait_ready("http://127.0.0.1:15011/ready");
    let mut old = gateway(&ns, "127.0.0.1:15021", &dir.path().join("gw-old.log"));
    ns.wait_ready("http://127.0.0.1:15021/ready");
    ns.wait_ready("http://127.0.0.1:8080/");

    // HTTP/1.1 keep-alive and h2c load, until the stop file appears.
    let stop = dir.path().join("stop");
    let load = |h2: bool| {
        let mut c = ns.command(&binary("bowline-load"));
        c.args([
            "--url",
            "http://127.0.0.1:8080/x",
            "--concurrency",
            "4",
            "--stop-file",
        ])
        .arg(&stop)
        .stdout(Stdio::piped());
        if h2 {
            c.arg("--h2");
        }
        c.spawn().unwrap()
    };
    let mut loads = [load(false), load(true)];
    let mut progress: Vec<_> = loads
        .iter_mut()
        .map(|l| BufReader::new(l.stdout.take().unwrap()).lines())
        .collect();
    // Wait until both loads are running through the old gateway.
    for p in &mut progress {
        let line = p.next().unwrap().unwrap();
        assert!(line.starts_with("progress"), "{line}");
    }

    // The new gateway binds the same port; then the old one drains and exits.
    let _new = gateway(&ns, "127.0.0.1:15022", &dir.path().join("gw-new.log"));
    ns.wait_ready("http://127.0.0.1:15022/ready");
    let pid = old.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = old.0.wait().unwrap();
    assert!(
        status.success(),
        "the old gateway exits cleanly after draining: {status}"
    );

    // Traffic keeps flowing through the new gateway alone for a while.
    for p in &mut progress {
        for _ in 0..3 {
            let line = p.next().unwrap().unwrap();
            assert!(line.starts_with("progress"), "{line}");
        }
    }
    std::fs::write(&stop, "").unwrap();
    for (mut l, p) in loads.into_iter().zip(progress) {
        let last = p.map(Result::unwrap).last().unwrap();
        assert!(l.wait().unwrap().success());
        let summary: serde_json::Value =
            serde_json::from_str(&last).unwrap_or_else(|_| panic!("{last}"));
        assert!(summary["ok"].as_u64().unwrap() > 0, "{summary}");
        assert_eq!(
            summary["failed"], 0,
            "failed requests during the hand-over: {summary}"
        );
    }
}
