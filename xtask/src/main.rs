//! `cargo xtask <task>`: development tasks for the Bowline workspace (aliased in
//! `.cargo/config.toml`). xtask depends on no workspace crate: it drives them through `cargo`.
//!
//! Each task is a `clap::Args` struct in its own module with `run(self, root)`; add a variant to
//! [`Cmd`] and an arm to [`Cmd::run`] for a new one.
#![forbid(unsafe_code)]

mod bench;
mod conformance;
mod crds;
mod up;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Bowline development tasks"
)]
struct Xtask {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Regenerate deploy/crds/mesh.bowline.io.yaml from the Rust types (`meshctl crds`).
    GenCrds(crds::GenCrds),
    /// Build and start the quickstart stack (control plane, gateway, echo upstreams) on loopback.
    Up(up::Up),
    /// Run a benchmark program (`gateway`: side by side with nginx; `routes`: route matching).
    #[command(subcommand_required = true)]
    Bench(bench::Bench),
    /// Run the conformance tables and write docs/conformance.md (`--check`: only compare).
    Conformance(conformance::Conformance),
}

impl Cmd {
    fn run(self, root: &Path) -> anyhow::Result<()> {
        match self {
            Cmd::GenCrds(task) => task.run(root),
            Cmd::Up(task) => task.run(root),
            Cmd::Bench(task) => task.run(root),
            Cmd::Conformance(task) => task.run(root),
        }
    }
}

/// The workspace root: xtask's own manifest directory is `<root>/xtask`.
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

fn main() -> ExitCode {
    match Xtask::parse().cmd.run(&project_root()) {
        Ok(()) => ExitCode::SUCCESS,
        // An expected failure (such as a stale file under --check) is one line, not a backtrace.
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
