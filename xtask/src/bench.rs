//! `cargo xtask bench <target>`: benchmark programs (not timed tests). Their results, the machine
//! they ran on and how to reproduce them go in `docs/benchmarks.md`.
//!
//! * `gateway`: bowline-gateway side by side with nginx as the same reverse proxy, in the same
//!   run, HTTP/1.1 (wrk) and h2c (h2load) ([`gateway`]).
//! * `routes`: the route-matching micro-benchmark, 10 routes against 10,000
//!   (`crates/dataplane/examples/route_match.rs`).

mod gateway;
mod load;
mod sys;

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

#[derive(clap::Args, Debug)]
pub struct Bench {
    #[command(subcommand)]
    target: Target,
}

#[derive(clap::Subcommand, Debug)]
enum Target {
    /// bowline-gateway against nginx (one worker each, pinned), HTTP/1.1 with wrk and h2c with
    /// h2load; prints one table and the PASS/FAIL of each bar of issue 3.
    Gateway(gateway::Gateway),
    /// The route-matching micro-benchmark: ns per match with 10 routes over 1 host and with
    /// 10,000 routes over 1,000 hosts.
    Routes(Routes),
}

impl Bench {
    pub fn run(self, root: &Path) -> anyhow::Result<()> {
        match self.target {
            Target::Gateway(task) => task.run(root),
            Target::Routes(task) => task.run(root),
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Routes {
    /// Length of one timed batch, in milliseconds.
    #[arg(long, default_value_t = 200)]
    millis: u64,
    /// Timed batches per case (the median is reported).
    #[arg(long, default_value_t = 9)]
    batches: u64,
    /// Pin the benchmark to this CPU (taskset), away from other work.
    #[arg(long, value_name = "CPU")]
    cpu: Option<usize>,
}

impl Routes {
    fn run(self, root: &Path) -> anyhow::Result<()> {
        if self.cpu.is_some() {
            sys::require_tools(&[sys::TASKSET])?;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(&cargo)
            .current_dir(root)
            .args([
                "build",
                "--release",
                "-p",
                "bowline-dataplane",
                "--example",
                "route_match",
            ])
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("cargo build failed");
        }
        let program = sys::target_dir(root, "release")
            .join("examples")
            .join("route_match");
        let mut cmd = sys::pinned(&program, self.cpu);
        cmd.args([
            "--millis",
            &self.millis.to_string(),
            "--batches",
            &self.batches.to_string(),
        ]);
        let status = cmd
            .status()
            .with_context(|| format!("running {}", program.display()))?;
        if !status.success() {
            bail!("the route_match benchmark failed ({status})");
        }
        Ok(())
    }
}
