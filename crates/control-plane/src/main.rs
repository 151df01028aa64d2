//! `bowline-control-plane`: parse flags, set up logging, run until SIGINT/SIGTERM.

use std::process::ExitCode;

use anyhow::Context;
use bowline_control_plane::{Args, Config, LogFormat};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// EX_USAGE: the command line or the configuration is wrong.
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(EX_USAGE);
        }
        Err(e) => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let filter = match EnvFilter::try_new(&args.log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: invalid --log-level {:?}: {e}", args.log_level);
            return ExitCode::from(EX_USAGE);
        }
    };
    // Colours only for a terminal: log files and collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    tracing::info!(log_level = %args.log_level, log_format = ?args.log_format, "logging configured");

    let runtime = match tokio::runtime::Runtime::new().context("cannot start the async runtime") {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    let config = Config::from(&args);
    let result = runtime.block_on(async move {
        // The handlers are installed before anything listens, so that no signal is missed.
        let shutdown = shutdown_signal();
        bowline_control_plane::run(config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = if e.is_config() {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::FAILURE
            };
            tracing::error!("{e}");
            code
        }
    }
}

/// Installs the SIGINT and SIGTERM handlers now; the future completes on either signal.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                (term, int) => {
                    if let Err(e) = term.and(int) {
                        tracing::warn!(error = %e, "cannot install signal handlers; only Ctrl-C stops the server");
                    }
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
