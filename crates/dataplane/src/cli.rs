//! What both proxy binaries (`bowline-gateway`, `bowline-sidecar`) take from the command line
//! and do around the engine: the shared flags ([`ProxyArgs`], flattened into each binary's
//! own), logging, the runtime, signals, and name and duration parsing.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::config::{Backoff, Node};
use crate::proxy::{EdgeConfig, parse_trusted};
use crate::{Engine, EngineConfig};

/// EX_USAGE: the command line or environment is invalid.
pub const EXIT_USAGE: u8 = 64;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The flags every proxy takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// gRPC address of the control plane.
    #[arg(
        long,
        env = "BOWLINE_CONTROL_PLANE",
        value_name = "URL",
        default_value = "http://127.0.0.1:15010"
    )]
    pub control_plane: String,

    /// Address listeners bind unless the config gives one.
    #[arg(
        long,
        env = "BOWLINE_BIND",
        value_name = "IP",
        default_value = "0.0.0.0"
    )]
    pub bind: IpAddr,

    /// Log filter, in tracing EnvFilter syntax (for example `info,bowline_dataplane=debug`).
    #[arg(
        long,
        env = "BOWLINE_LOG_LEVEL",
        value_name = "FILTER",
        default_value = "info"
    )]
    pub log_level: String,

    /// Log format.
    #[arg(long, env = "BOWLINE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// How long in-flight requests may take to finish on shutdown (`10s`, `500ms`, `1m`).
    #[arg(long, env = "BOWLINE_DRAIN_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Time a client has to send a complete request head before the connection is closed
    /// (slowloris protection).
    #[arg(long, env = "BOWLINE_HEADER_READ_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Largest request head (request line and headers) in bytes; larger requests get 431.
    #[arg(
        long,
        env = "BOWLINE_MAX_REQUEST_HEADER_BYTES",
        value_name = "BYTES",
        default_value_t = 65536
    )]
    pub max_request_header_bytes: usize,

    /// Most request headers; more get 431.
    #[arg(
        long,
        env = "BOWLINE_MAX_REQUEST_HEADERS",
        value_name = "N",
        default_value_t = 100
    )]
    pub max_request_headers: usize,

    /// Longest request target (path and query) in bytes; longer get 414.
    #[arg(
        long,
        env = "BOWLINE_MAX_URI_BYTES",
        value_name = "BYTES",
        default_value_t = 8192
    )]
    pub max_uri_bytes: usize,

    /// Largest request body by Content-Length in bytes; larger get 413. 0: no limit.
    #[arg(
        long,
        env = "BOWLINE_MAX_REQUEST_BODY_BYTES",
        value_name = "BYTES",
        default_value_t = 0
    )]
    pub max_request_body_bytes: u64,

    /// Most concurrent client connections; beyond, new connections are closed at once.
    #[arg(
        long,
        env = "BOWLINE_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = 16384
    )]
    pub max_connections: usize,

    /// Peers (IP or CIDR, comma-separated or repeated) whose X-Forwarded-For/-Proto/-Host and
    /// X-Request-Id are kept; every other client's are replaced.
    #[arg(long, env = "BOWLINE_TRUSTED_PROXIES", value_name = "CIDR", value_delimiter = ',', value_parser = parse_trusted)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Threads of the async runtime that serve connections (default: one per CPU).
    #[arg(long, env = "BOWLINE_WORKER_THREADS", value_name = "N")]
    pub worker_threads: Option<NonZeroUsize>,
}

impl ProxyArgs {
    /// Checks what clap cannot: the control plane URL and the log filter.
    pub fn check(&self) -> Result<(), String> {
        check_url(&self.control_plane)
            .map_err(|msg| format!("invalid --control-plane {:?}: {msg}", self.control_plane))?;
        EnvFilter::try_new(&self.log_level)
            .map_err(|e| format!("invalid --log-level {:?}: {e}", self.log_level))?;
        Ok(())
    }

    /// Installs the global log subscriber (text or JSON, with the `--log-level` filter).
    pub fn init_logging(&self) {
        let filter = EnvFilter::try_new(&self.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
        let logs = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
        match self.log_format {
            LogFormat::Text => logs.init(),
            LogFormat::Json => logs.json().init(),
        }
    }

    /// The limits and trust applied to client connections.
    pub fn edge(&self) -> EdgeConfig {
        EdgeConfig {
            header_read_timeout: self.header_read_timeout,
            max_request_header_bytes: self.max_request_header_bytes,
            max_request_headers: self.max_request_headers,
            max_uri_bytes: self.max_uri_bytes,
            max_request_body_bytes: (self.max_request_body_bytes > 0)
                .then_some(self.max_request_body_bytes),
            max_connections: self.max_connections,
            trusted_proxies: self.trusted_proxies.clone(),
        }
    }

    /// The async runtime: `--worker-threads` threads (1: the current thread), else one per CPU.
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = match self.worker_threads {
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
}

/// Parses the command line; on an error (or `--help`), prints it and gives the exit code: 64 for
/// a usage error, 0 for help and version.
pub fn parse<C: Parser>() -> Result<C, ExitCode> {
    C::try_parse().map_err(|e| {
        let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
        let _ = e.print();
        ExitCode::from(code)
    })
}

/// Prints `binary: msg` and gives the usage exit code (64).
pub fn usage(binary: &str, msg: &str) -> ExitCode {
    eprintln!("{binary}: {msg}");
    ExitCode::from(EXIT_USAGE)
}

/// Runs a proxy until SIGTERM or SIGINT, then drains: checks the shared flags, installs logging,
/// builds the runtime, and starts the engine for `node` with its admin server on `admin_addr`.
pub fn serve(binary: &str, proxy: &ProxyArgs, node: Node, admin_addr: SocketAddr) -> ExitCode {
    if let Err(msg) = proxy.check() {
        return usage(binary, &msg);
    }
    proxy.init_logging();
    let runtime = match proxy.runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{binary}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = EngineConfig {
        control_plane: proxy.control_plane.clone(),
        node,
        bind: proxy.bind,
        admin_addr,
        backoff: Backoff::default(),
        edge: proxy.edge(),
    };
    let run = async {
        let engine = Engine::start(config)
            .await
            .map_err(|e| format!("starting the engine: {}", chain(&e)))?;
        let signal = shutdown_signal()
            .await
            .map_err(|e| format!("waiting for a signal: {}", chain(&e)))?;
        tracing::info!(signal, "shutting down");
        engine.shutdown(proxy.drain_timeout).await;
        Ok::<(), String>(())
    };
    match runtime.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("{binary}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// An error and its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Waits for SIGTERM or SIGINT and names it.
pub async fn shutdown_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// `NAMESPACE/NAME`, both Kubernetes names.
pub fn parse_namespaced_name(s: &str) -> Result<(String, String), String> {
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

/// A duration flag: `10s`, `500ms`, `2m` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
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
    fn namespaced_names() {
        assert_eq!(
            parse_namespaced_name("shop/gw"),
            Ok(("shop".into(), "gw".into()))
        );
        assert_eq!(
            parse_namespaced_name("a-b.c/x1"),
            Ok(("a-b.c".into(), "x1".into()))
        );
        for bad in [
            "gw",
            "/gw",
            "shop/",
            "Shop/gw",
            "shop/gw/x",
            "shop/-gw",
            "shop/g_w",
        ] {
            assert!(parse_namespaced_name(bad).is_err(), "{bad}");
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
}
