//! `bowline-gateway`: the north-south proxy for one VirtualGateway and/or the Ingresses of one
//! IngressClass. Parses flags, sets up logging, runs the dataplane engine until SIGTERM/SIGINT,
//! then drains.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bowline_dataplane::config::{Backoff, IngressNode, Node};
use bowline_dataplane::proxy::{EdgeConfig, parse_trusted};
use bowline_dataplane::{Engine, EngineConfig};
use clap::{Parser, ValueEnum};
use tracing_subscriber::EnvFilter;

/// EX_USAGE: the command line or environment is invalid.
const EXIT_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "bowline-gateway",
    version,
    about = "The Bowline gateway (north-south proxy)"
)]
struct Cli {
    /// gRPC address of the control plane.
    #[arg(
        long,
        env = "BOWLINE_CONTROL_PLANE",
        value_name = "URL",
        default_value = "http://127.0.0.1:15010"
    )]
    control_plane: String,

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

    /// Address listeners bind unless the config gives one.
    #[arg(
        long,
        env = "BOWLINE_BIND",
        value_name = "IP",
        default_value = "0.0.0.0"
    )]
    bind: IpAddr,

    /// Address of the admin server (/live, /ready, /config_dump, /metrics).
    #[arg(
        long,
        env = "BOWLINE_ADMIN_ADDR",
        value_name = "ADDR",
        default_value = "127.0.0.1:15021"
    )]
    admin_addr: SocketAddr,

    /// Log filter, in tracing EnvFilter syntax (for example `info,bowline_dataplane=debug`).
    #[arg(
        long,
        env = "BOWLINE_LOG_LEVEL",
        value_name = "FILTER",
        default_value = "info"
    )]
    log_level: String,

    /// Log format.
    #[arg(long, env = "BOWLINE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// How long in-flight requests may take to finish on shutdown (`10s`, `500ms`, `1m`).
    #[arg(long, env = "BOWLINE_DRAIN_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    drain_timeout: Duration,

    /// Time a client has to send a complete request head before the connection is closed
    /// (slowloris protection).
    #[arg(long, env = "BOWLINE_HEADER_READ_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    header_read_timeout: Duration,

    /// Largest request head (request line and headers) in bytes; larger requests get 431.
    #[arg(
        long,
        env = "BOWLINE_MAX_REQUEST_HEADER_BYTES",
        value_name = "BYTES",
        default_value_t = 65536
    )]
    max_request_header_bytes: usize,

    /// Most request headers; more get 431.
    #[arg(
        long,
        env = "BOWLINE_MAX_REQUEST_HEADERS",
        value_name = "N",
        default_value_t = 100
    )]
    max_request_headers: usize,

    /// Longest request target (path and query) in bytes; longer get 414.
    #[arg(
        long,
        env = "BOWLINE_MAX_URI_BYTES",
        value_name = "BYTES",
        default_value_t = 8192
    )]
    max_uri_bytes: usize,

    /// Largest request body by Content-Length in bytes; larger get 413. 0: no limit.
    #[arg(
        long,
        env = "BOWLINE_MAX_REQUEST_BODY_BYTES",
        value_name = "BYTES",
        default_value_t = 0
    )]
    max_request_body_bytes: u64,

    /// Most concurrent client connections; beyond, new connections are closed at once.
    #[arg(
        long,
        env = "BOWLINE_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = 16384
    )]
    max_connections: usize,

    /// Peers (IP or CIDR, comma-separated or repeated) whose X-Forwarded-For/-Proto/-Host and
    /// X-Request-Id are kept; every other client's are replaced.
    #[arg(long, env = "BOWLINE_TRUSTED_PROXIES", value_name = "CIDR", value_delimiter = ',', value_parser = parse_trusted)]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Threads of the async runtime that serve connections (default: one per CPU).
    #[arg(long, env = "BOWLINE_WORKER_THREADS", value_name = "N")]
    worker_threads: Option<NonZeroUsize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let (namespace, name) = match cli.gateway.as_deref().map(parse_gateway) {
        Some(Ok(v)) => v,
        Some(Err(msg)) => {
            return usage(&format!(
                "invalid --gateway {:?}: {msg}",
                cli.gateway.unwrap_or_default()
            ));
        }
        None => Default::default(),
    };
    let ingress = match ingress_node(&cli) {
        Ok(i) => i,
        Err(msg) => return usage(&msg),
    };
    if let Err(msg) = check_url(&cli.control_plane) {
        return usage(&format!(
            "invalid --control-plane {:?}: {msg}",
            cli.control_plane
        ));
    }
    let filter = match EnvFilter::try_new(&cli.log_level) {
        Ok(f) => f,
        Err(e) => return usage(&format!("invalid --log-level {:?}: {e}", cli.log_level)),
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }

    let runtime = match build_runtime(cli.worker_threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bowline-gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, namespace, name, ingress)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("bowline-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The runtime: with one worker, a current-thread runtime on the main thread (no work-stealing
/// queues, no cross-thread wake-ups: measurably less CPU per request); otherwise a multi-threaded
/// runtime with `worker_threads` workers, or one per CPU.
fn build_runtime(worker_threads: Option<NonZeroUsize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match worker_threads {
        Some(n) if n.get() == 1 => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.get());
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build()
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("bowline-gateway: {msg}");
    ExitCode::from(EXIT_USAGE)
}

async fn run(
    cli: Cli,
    namespace: String,
    name: String,
    ingress: Option<IngressNode>,
) -> anyhow::Result<()> {
    let engine = Engine::start(EngineConfig {
        control_plane: cli.control_plane,
        node: Node {
            kind: "gateway".into(),
            namespace,
            name,
            build_version: env!("CARGO_PKG_VERSION").into(),
            ingress,
        },
        bind: cli.bind,
        admin_addr: cli.admin_addr,
        backoff: Backoff::default(),
        edge: EdgeConfig {
            header_read_timeout: cli.header_read_timeout,
            max_request_header_bytes: cli.max_request_header_bytes,
            max_request_headers: cli.max_request_headers,
            max_uri_bytes: cli.max_uri_bytes,
            max_request_body_bytes: (cli.max_request_body_bytes > 0)
                .then_some(cli.max_request_body_bytes),
            max_connections: cli.max_connections,
            trusted_proxies: cli.trusted_proxies,
        },
    })
    .await
    .context("starting the gateway")?;
    let signal = shutdown_signal().await.context("waiting for a signal")?;
    tracing::info!(signal, "shutting down");
    engine.shutdown(cli.drain_timeout).await;
    Ok(())
}

/// Waits for SIGTERM or SIGINT and names it.
async fn shutdown_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// What `--ingress-class` and its ports ask for; an error when neither it nor `--gateway` is
/// given.
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
fn parse_gateway(s: &str) -> Result<(String, String), String> {
    let (ns, name) = s.split_once('/').ok_or("expected NAMESPACE/NAME")?;
    for (what, v) in [("namespace", ns), ("name", name)] {
        if v.is_empty() {
            return Err(format!("the {what} is empty (expected NAMESPACE/NAME)"));
        }
        let valid = v.len() <= 253
            && v.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && v.as_bytes()[0].is_ascii_alphanumeric()
            && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric();
        if !valid {
            return Err(format!(
                "the {what} {v:?} is not a Kubernetes name (lower-case letters, digits, '-' and '.')"
            ));
        }
    }
    Ok((ns.to_string(), name.to_string()))
}

fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("expected http://HOST:PORT")?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err("no host".into());
    }
    Ok(())
}

/// `10s`, `500ms`, `2m`, or a number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (like 10s, 500ms, 2m)"))?;
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?} is not a duration (like 10s, 500ms, 2m)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_names() {
        assert_eq!(parse_gateway("shop/gw"), Ok(("shop".into(), "gw".into())));
        assert_eq!(parse_gateway("a-b.c/x1"), Ok(("a-b.c".into(), "x1".into())));
        for bad in [
            "gw",
            "/gw",
            "shop/",
            "Shop/gw",
            "shop/gw/x",
            "shop/-gw",
            "shop/g_w",
        ] {
            assert!(parse_gateway(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("1h").is_err());
    }

    #[test]
    fn control_plane_urls() {
        assert!(check_url("http://127.0.0.1:15010").is_ok());
        assert!(check_url("https://cp.bowline-system:15010").is_ok());
        assert!(check_url("127.0.0.1:15010").is_err());
        assert!(check_url("http://").is_err());
    }

    #[test]
    fn flags_parse_with_defaults() {
        let cli = Cli::try_parse_from(["bowline-gateway", "--gateway", "shop/gw"]).unwrap();
        assert_eq!(cli.bind, "0.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(
            cli.admin_addr,
            "127.0.0.1:15021".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(cli.drain_timeout, Duration::from_secs(10));
        assert_eq!(cli.log_format, LogFormat::Text);
        assert_eq!(cli.worker_threads, None);
        let err =
            Cli::try_parse_from(["bowline-gateway", "--gateway", "shop/gw", "--bind", "nope"])
                .unwrap_err();
        assert!(err.use_stderr());
    }

    #[test]
    fn worker_threads_flag() {
        let cli = Cli::try_parse_from([
            "bowline-gateway",
            "--gateway",
            "shop/gw",
            "--worker-threads",
            "1",
        ])
        .unwrap();
        assert_eq!(cli.worker_threads, NonZeroUsize::new(1));
        let rt = build_runtime(cli.worker_threads).unwrap();
        assert_eq!(rt.metrics().num_workers(), 1);
        use tokio::runtime::RuntimeFlavor;
        assert_eq!(rt.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        let rt = build_runtime(NonZeroUsize::new(2)).unwrap();
        assert_eq!(rt.metrics().num_workers(), 2);
        assert_eq!(rt.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        for bad in ["0", "-1", "many"] {
            let err = Cli::try_parse_from([
                "bowline-gateway",
                "--gateway",
                "shop/gw",
                "--worker-threads",
                bad,
            ])
            .unwrap_err();
            assert!(err.use_stderr(), "{bad}");
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
