//! The `mqtt-operator` command line.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use operator::{check, crd, manifest};

#[derive(Parser)]
#[command(
    name = "mqtt-operator",
    version,
    about = "Run production MQTT on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the four CustomResourceDefinitions as YAML (or write one file per CRD).
    Crd {
        /// Write `<crd-name>.yaml` files into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Validate manifests offline (files or directories), as CI would before merge.
    ///
    /// Exit codes: 0 clean, 1 problems found, 2 unreadable input.
    Check {
        /// Files or directories (searched recursively for .yaml/.yml).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    /// One line per problem: `file:doc-index: Kind/name: field.path: message`.
    Text,
    /// A JSON report.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { out_dir } => run_crd(out_dir),
        Command::Check { files, output } => run_check(&files, output),
    }
}

fn run_crd(out_dir: Option<PathBuf>) -> ExitCode {
    let Some(dir) = out_dir else {
        print!("{}", crd::all_yaml());
        return ExitCode::SUCCESS;
    };
    for (name, yaml) in crd::files() {
        let path = dir.join(name);
        if let Err(e) = std::fs::write(&path, yaml) {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(2);
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}

fn run_check(files: &[PathBuf], output: Output) -> ExitCode {
    let docs = match manifest::load_paths(files).and_then(|f| manifest::parse_files(&f)) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let report = check::check(&docs);
    match output {
        Output::Text => {
            for n in &report.notes {
                eprintln!("note: {n}");
            }
            for f in &report.findings {
                println!("{f}");
            }
            let errors = report
                .findings
                .iter()
                .filter(|f| f.severity == check::Severity::Error)
                .count();
            eprintln!(
                "checked {} object(s): {errors} problem(s), {} warning(s)",
                report.checked,
                report.findings.len() - errors
            );
        }
        Output::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("report serializes")
            );
        }
    }
    if report.has_errors() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
