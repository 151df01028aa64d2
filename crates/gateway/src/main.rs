//! `bowline-gateway`: the north-south proxy for one VirtualGateway and/or the Ingresses of one
//! IngressClass. Parses flags, sets up logging, runs the dataplane engine until SIGTERM/SIGINT,
//! then drains.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use bowline_dataplane::cli::{self, ProxyArgs, parse_namespaced_name};
use bowline_dataplane::config::{IngressNode, Node};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "bowline-gateway",
    version,
    about = "The Bowline gateway (north-south proxy)"
)]
struct Cli {
    /// The VirtualGateway this gateway serves, as NAMESPACE/NAME (or, when no VirtualGateway
    /// has that name, the Gateway API Gateway of that name). Optional with
    /// `--ingress-class`; at least one of the two is required.
    #[arg(long, env = "BOWLINE_GATEWAY", value_name = "NAMESPACE/NAME")]
    gateway: Option<String>,

    /// Serve the `networking.k8s.io/v1` Ingresses of this IngressClass (and those without a
    /// class when it is the default class).
    #[arg(long, env = "BOWLINE_INGRESS_CLASS", value_name = "NAME")]
    ingress_class: Option<String>,

    /// Port of the Ingress HTTP listener.
    #[arg(
        long,
        env = "BOWLINE_INGRESS_HTTP_PORT",
        value_name = "PORT",
        default_value_t = 80
    )]
    ingress_http_port: u16,

    /// Port of the Ingress HTTPS listener (certificates from the Ingresses' TLS Secrets).
    #[arg(
        long,
        env = "BOWLINE_INGRESS_HTTPS_PORT",
        value_name = "PORT",
        default_value_t = 443
    )]
    ingress_https_port: u16,

    /// Address of the admin server (/live, /ready, /config_dump, /metrics).
    #[arg(
        long,
        env = "BOWLINE_ADMIN_ADDR",
        value_name = "ADDR",
        default_value = "127.0.0.1:15021"
    )]
    admin_addr: SocketAddr,

    #[command(flatten)]
    proxy: ProxyArgs,
}

const BINARY: &str = "bowline-gateway";

fn main() -> ExitCode {
    let cli: Cli = match cli::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let (namespace, name) = match cli.gateway.as_deref().map(parse_namespaced_name) {
        Some(Ok(v)) => v,
        Some(Err(msg)) => {
            return cli::usage(
                BINARY,
                &format!(
                    "invalid --gateway {:?}: {msg}",
                    cli.gateway.unwrap_or_default()
                ),
            );
        }
        None => Default::default(),
    };
    let ingress = match ingress_node(&cli) {
        Ok(i) => i,
        Err(msg) => return cli::usage(BINARY, &msg),
    };
    let node = Node {
        kind: "gateway".into(),
        namespace,
        name,
        build_version: env!("CARGO_PKG_VERSION").into(),
        ingress,
        sidecar: None,
    };
    cli::serve(BINARY, &cli.proxy, node, cli.admin_addr)
}

fn ingress_node(cli: &Cli) -> Result<Option<IngressNode>, String> {
    let Some(class) = &cli.ingress_class else {
        if cli.gateway.is_none() {
            return Err("nothing to serve: give --gateway NAMESPACE/NAME (a VirtualGateway), --ingress-class NAME (the Ingresses of a class), or both".into());
        }
        return Ok(None);
    };
    let valid = !class.is_empty()
        && class.len() <= 253
        && class
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid {
        return Err(format!(
            "invalid --ingress-class {class:?}: expected a Kubernetes name (lower-case letters, digits, '-' and '.')"
        ));
    }
    for (flag, port) in [
        ("--ingress-http-port", cli.ingress_http_port),
        ("--ingress-https-port", cli.ingress_https_port),
    ] {
        if port == 0 {
            return Err(format!("invalid {flag} 0: expected a port from 1 to 65535"));
        }
    }
    if cli.ingress_http_port == cli.ingress_https_port {
        return Err(format!(
            "--ingress-http-port and --ingress-https-port are both {}",
            cli.ingress_http_port
        ));
    }
    Ok(Some(IngressNode {
        class: class.clone(),
        http_port: cli.ingress_http_port,
        https_port: cli.ingress_https_port,
    }))
}

/// `NAMESPACE/NAME`, both Kubernetes names (lower-case letters, digits, `-` and `.`).
/// `10s`, `500ms`, `2m`, or a number of seconds.
#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::num::NonZeroUsize;
    use std::time::Duration;

    use bowline_dataplane::cli::LogFormat;

    use super::*;

    #[test]
    fn flags_parse_with_defaults() {
        let cli = Cli::try_parse_from(["bowline-gateway", "--gateway", "shop/gw"]).unwrap();
        assert_eq!(cli.proxy.bind, "0.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(
            cli.admin_addr,
            "127.0.0.1:15021".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(cli.proxy.drain_timeout, Duration::from_secs(10));
        assert_eq!(cli.proxy.log_format, LogFormat::Text);
        assert_eq!(cli.proxy.worker_threads, None);
        let err =
            Cli::try_parse_from(["bowline-gateway", "--gateway", "shop/gw", "--bind", "nope"])
                .unwrap_err();
        assert!(err.use_stderr());
    }

    #[test]
    fn worker_threads_flag() {
        let parse = |n: &str| {
            Cli::try_parse_from([
                "bowline-gateway",
                "--gateway",
                "shop/gw",
                "--worker-threads",
                n,
            ])
        };
        let cli = parse("1").unwrap();
        assert_eq!(cli.proxy.worker_threads, NonZeroUsize::new(1));
        let rt = cli.proxy.runtime().unwrap();
        assert_eq!(rt.metrics().num_workers(), 1);
        use tokio::runtime::RuntimeFlavor;
        assert_eq!(rt.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        let rt = parse("2").unwrap().proxy.runtime().unwrap();
        assert_eq!(rt.metrics().num_workers(), 2);
        assert_eq!(rt.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        for bad in ["0", "-1", "many"] {
            assert!(parse(bad).unwrap_err().use_stderr(), "{bad}");
        }
    }
}

#[cfg(test)]
mod ingress_flag_tests {
    use super::*;

    fn node(args: &[&str]) -> Result<Option<IngressNode>, String> {
        let cli =
            Cli::try_parse_from(std::iter::once("bowline-gateway").chain(args.iter().copied()))
                .map_err(|e| e.to_string())?;
        ingress_node(&cli)
    }

    #[test]
    fn ingress_class_alone_or_with_a_gateway() {
        let want = IngressNode {
            class: "bowline".into(),
            http_port: 80,
            https_port: 443,
        };
        assert_eq!(
            node(&["--ingress-class", "bowline"]),
            Ok(Some(want.clone()))
        );
        assert_eq!(
            node(&["--gateway", "shop/gw", "--ingress-class", "bowline"]),
            Ok(Some(want))
        );
        assert_eq!(node(&["--gateway", "shop/gw"]), Ok(None));
        assert_eq!(
            node(&[
                "--ingress-class",
                "bowline",
                "--ingress-http-port",
                "8080",
                "--ingress-https-port",
                "8443"
            ]),
            Ok(Some(IngressNode {
                class: "bowline".into(),
                http_port: 8080,
                https_port: 8443,
            }))
        );
    }

    #[test]
    fn nothing_to_serve_and_bad_values_are_usage_errors() {
        assert!(node(&[]).unwrap_err().contains("nothing to serve"));
        assert!(
            node(&["--ingress-class", "Bad_Class"])
                .unwrap_err()
                .contains("invalid --ingress-class")
        );
        assert!(
            node(&["--ingress-class", "b", "--ingress-http-port", "0"])
                .unwrap_err()
                .contains("--ingress-http-port 0")
        );
        assert!(
            node(&["--ingress-class", "b", "--ingress-https-port", "80"])
                .unwrap_err()
                .contains("both 80")
        );
    }
}
