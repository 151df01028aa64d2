//! `meshctl`: the Bowline command line.
//!
//! Offline verbs work on manifests and need no cluster or control plane: `validate` checks
//! Kubernetes-style YAML/JSON the way the control plane will read it, `crds` prints the
//! CustomResourceDefinitions of the mesh kinds, `convert` rewrites App Mesh manifests for Bowline
//! (and Ingresses with ingress-nginx annotations into Gateway API objects).
#![forbid(unsafe_code)]

mod convert;
mod convert_nginx;
mod validate;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "meshctl", version, about = "The Bowline command line")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Check manifests offline: every problem, with file, document index, object and field path.
    ///
    /// Exit status: 0 when no document has an error, 1 when one has, 2 when an input cannot be
    /// read.
    Validate(ValidateArgs),
    /// Rewrite manifests for Bowline: App Mesh kinds to mesh.bowline.io/v1alpha1 (without their
    /// AWS-only fields), or ingress-nginx Ingresses to Gateway API objects.
    ///
    /// Writes multi-document YAML to standard output (or one file per input under -o DIR) and
    /// lists on standard error every field or annotation it did not carry over. Exit status: 0 on
    /// success, 1 when a document is invalid (nothing is written), 2 when an input cannot be read.
    Convert(ConvertArgs),
    /// Print the CustomResourceDefinitions of the mesh kinds (mesh.bowline.io/v1alpha1) as YAML.
    Crds,
}

/// The `-f` inputs of the verbs that read manifests.
#[derive(Debug, clap::Args)]
struct Inputs {
    /// A manifest file, or a directory searched recursively for *.yaml, *.yml and *.json (in
    /// sorted order); `-` reads YAML from standard input. Repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR",
        required = true
    )]
    files: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ValidateArgs {
    #[command(flatten)]
    inputs: Inputs,
    /// Print only errors and the summary (hide ignored fields and skipped documents).
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, clap::Args)]
struct ConvertArgs {
    #[command(flatten)]
    inputs: Inputs,
    /// Write one file per input under DIR (a directory's files keep their relative paths; .json
    /// becomes .yaml) instead of everything to standard output.
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// What the input is.
    #[arg(long, value_enum, default_value = "app-mesh")]
    from: convert::From,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Validate(args) => validate::run(&args.inputs.files, args.quiet),
        Cmd::Convert(args) => convert::run(&args.inputs.files, args.output.as_deref(), args.from),
        Cmd::Crds => print_crds(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn print_crds() -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    out.write_all(bowline_model::crd::to_yaml().as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
