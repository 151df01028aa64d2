//! `bowline-sidecar`: the east-west proxy next to the application of one VirtualNode. Its
//! inbound listeners (one per node listener, terminating the listener's TLS) forward to the
//! application; its outbound listener routes the application's calls to the node's backend
//! virtual services (originating the client policy's TLS). This release wires ports
//! explicitly: the application calls its backends through `127.0.0.1:<--outbound-port>`, and
//! listens on `--app-address` at its listener ports (or `--app-port` mappings) while the sidecar
//! binds the node's listener ports on `--inbound-address`.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use bowline_dataplane::cli::{self, ProxyArgs, parse_namespaced_name};
use bowline_dataplane::config::{Node, SidecarNode};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "bowline-sidecar",
    version,
    about = "The Bowline sidecar (east-west proxy next to one VirtualNode's application)"
)]
struct Cli {
    /// The VirtualNode whose application this sidecar sits next to, as NAMESPACE/NAME.
    #[arg(long, env = "BOWLINE_VIRTUAL_NODE", value_name = "NAMESPACE/NAME")]
    virtual_node: String,

    /// Port of the outbound listener on 127.0.0.1, which the application calls its backends
    /// through (`http://127.0.0.1:15001` with the backend's name as Host).
    #[arg(
        long,
        env = "BOWLINE_OUTBOUND_PORT",
        value_name = "PORT",
        default_value_t = 15001
    )]
    outbound_port: u16,

    /// Address the inbound listeners bind (the pod's address); default: `--bind`.
    #[arg(long, env = "BOWLINE_INBOUND_ADDRESS", value_name = "IP")]
    inbound_address: Option<IpAddr>,

    /// Address of the application, which inbound requests are forwarded to.
    #[arg(
        long,
        env = "BOWLINE_APP_ADDRESS",
        value_name = "IP",
        default_value = "127.0.0.1"
    )]
    app_address: IpAddr,

    /// The application's port for a node listener port, as LISTENER=APP (repeated or
    /// comma-separated); unmapped listener ports are the application's own.
    #[arg(long, env = "BOWLINE_APP_PORTS", value_name = "LISTENER=APP", value_delimiter = ',', value_parser = parse_app_port)]
    app_port: Vec<(u16, u16)>,

    /// Address of the admin server (/live, /ready, /config_dump, /metrics).
    #[arg(
        long,
        env = "BOWLINE_ADMIN_ADDR",
        value_name = "ADDR",
        default_value = "127.0.0.1:15020"
    )]
    admin_addr: SocketAddr,

    #[command(flatten)]
    proxy: ProxyArgs,
}

const BINARY: &str = "bowline-sidecar";

fn main() -> ExitCode {
    let cli: Cli = match cli::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let (namespace, name) = match parse_namespaced_name(&cli.virtual_node) {
        Ok(v) => v,
        Err(msg) => {
            return cli::usage(
                BINARY,
                &format!("invalid --virtual-node {:?}: {msg}", cli.virtual_node),
            );
        }
    };
    let wiring = match wiring(&cli) {
        Ok(w) => w,
        Err(msg) => return cli::usage(BINARY, &msg),
    };
    let node = Node {
        kind: "sidecar".into(),
        namespace,
        name,
        build_version: env!("CARGO_PKG_VERSION").into(),
        ingress: None,
        sidecar: Some(wiring),
    };
    cli::serve(BINARY, &cli.proxy, node, cli.admin_addr)
}

/// The local wiring the control plane builds the sidecar's listeners from.
fn wiring(cli: &Cli) -> Result<SidecarNode, String> {
    if cli.outbound_port == 0 {
        return Err("invalid --outbound-port 0: expected a port from 1 to 65535".into());
    }
    let mut app_ports = BTreeMap::new();
    for (listener, app) in &cli.app_port {
        if app_ports.insert(*listener, *app).is_some() {
            return Err(format!("--app-port maps listener port {listener} twice"));
        }
    }
    Ok(SidecarNode {
        outbound_port: cli.outbound_port,
        inbound_address: cli
            .inbound_address
            .map(|a| a.to_string())
            .unwrap_or_default(),
        app_address: cli.app_address.to_string(),
        app_ports,
    })
}

/// `LISTENER=APP`, two ports.
fn parse_app_port(s: &str) -> Result<(u16, u16), String> {
    let (l, a) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected LISTENER=APP (two ports)"))?;
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{s:?}: {p:?} is not a port from 1 to 65535"))
    };
    Ok((port(l)?, port(a)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("bowline-sidecar").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_and_wiring() {
        let cli = parse(&["--virtual-node", "shop/blue"]).unwrap();
        assert_eq!(
            cli.admin_addr,
            "127.0.0.1:15020".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            wiring(&cli),
            Ok(SidecarNode {
                outbound_port: 15001,
                inbound_address: String::new(),
                app_address: "127.0.0.1".into(),
                app_ports: BTreeMap::new(),
            })
        );
        let cli = parse(&[
            "--virtual-node",
            "shop/blue",
            "--inbound-address",
            "10.0.0.7",
            "--app-port",
            "8080=18080,9090=19090",
            "--outbound-port",
            "15999",
        ])
        .unwrap();
        let w = wiring(&cli).unwrap();
        assert_eq!(w.inbound_address, "10.0.0.7");
        assert_eq!(w.outbound_port, 15999);
        assert_eq!(
            w.app_ports.into_iter().collect::<Vec<_>>(),
            [(8080, 18080), (9090, 19090)]
        );
    }

    #[test]
    fn bad_flags_say_what_is_wrong() {
        assert!(parse(&[]).unwrap_err().use_stderr());
        for bad in ["8080", "8080=", "0=1", "8080=70000"] {
            let err = parse(&["--virtual-node", "shop/blue", "--app-port", bad]).unwrap_err();
            assert!(
                err.to_string().contains("LISTENER=APP")
                    || err.to_string().contains("is not a port"),
                "{bad}: {err}"
            );
        }
        let cli = parse(&[
            "--virtual-node",
            "shop/blue",
            "--app-port",
            "8080=1",
            "--app-port",
            "8080=2",
        ])
        .unwrap();
        assert!(wiring(&cli).unwrap_err().contains("twice"));
        let cli = parse(&["--virtual-node", "shop/blue", "--outbound-port", "0"]).unwrap();
        assert!(wiring(&cli).unwrap_err().contains("--outbound-port 0"));
    }
}
