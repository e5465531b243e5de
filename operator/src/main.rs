//! The `mqtt-operator` command line.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use operator::acl::explain::{self, Question, Who};
use operator::cli::LogFormat;
use operator::{acl, check, crd, local, manifest};

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
    /// Print every object the operator would create for the manifests, for review in pull
    /// requests (Secret values redacted). Invalid manifests are refused as `check` reports them.
    ///
    /// Exit codes: 0 rendered, 1 invalid manifests or a build error, 2 unreadable input.
    Render {
        /// Files or directories (searched recursively for .yaml/.yml).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Namespace of documents that do not set one.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Output format: a multi-document YAML stream or one JSON `v1/List`.
        #[arg(short, long, value_enum, default_value_t = RenderFormat::Yaml)]
        output: RenderFormat,
    },
    /// Run the controllers (in-cluster or with the current kubeconfig), `/healthz` and `/metrics`.
    Run(operator::cli::RunArgs),
    /// Topic ACL tools.
    Acl {
        #[command(subcommand)]
        command: AclCommand,
    },
    /// Generated documentation.
    Docs {
        #[command(subcommand)]
        command: DocsCommand,
    },
    /// Run a cluster's manifests on this machine, without Kubernetes.
    Local {
        #[command(subcommand)]
        command: LocalCommand,
    },
}

#[derive(Subcommand)]
enum DocsCommand {
    /// Print the API reference generated from the CRD schemas (docs/api.md).
    Api,
}

#[derive(Subcommand)]
enum LocalCommand {
    /// Start one broker per core node on 127.0.0.1, issue the devices' certificates, print
    /// ready-to-run mosquitto commands, and hot-reload policy and device changes until Ctrl-C.
    ///
    /// Exit codes: 0 stopped by a signal, 1 invalid manifests or a broker failure, 2 unreadable
    /// input.
    Up {
        /// Files or directories (searched recursively for .yaml/.yml) with one MqttCluster.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// State directory (CAs, device certificates, node configs, logs).
        #[arg(short = 'd', long = "dir", default_value = ".mqtt-local")]
        dir: PathBuf,
        /// First TCP port; node n uses base+10n .. base+10n+5 (mqtts, wss, mqtt, http, raft, grpc).
        #[arg(long, default_value_t = 18830)]
        base_port: u16,
    },
    /// Stop a running `local up` of the state directory and remove the directory.
    Down {
        /// State directory.
        #[arg(short = 'd', long = "dir", default_value = ".mqtt-local")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum AclCommand {
    /// Decide one request as the broker would, and print the deciding rule.
    ///
    /// Prints `ALLOW by TopicPolicy/<name> rules[<i>]`, `DENY by default`, ... then details.
    /// Exit codes: 0 allowed, 1 denied, 2 unreadable input.
    Explain(ExplainArgs),
    /// Compile a cluster's rule set and print its revision, size and counts.
    ///
    /// Exit codes: 0 compiled, 1 compile error, 2 unreadable input.
    Compile {
        /// Files or directories (searched recursively for .yaml/.yml).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// The MqttCluster (needed when the files define several).
        #[arg(long)]
        cluster: Option<String>,
        /// Write the binary rule set (the broker's format) to this file.
        #[arg(short, long)]
        out: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ExplainArgs {
    /// Files or directories (searched recursively for .yaml/.yml).
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// The MqttCluster (needed when the files define several).
    #[arg(long)]
    cluster: Option<String>,
    /// Ask as this device (its deviceId, the MQTT username).
    #[arg(long, group = "who", required = true)]
    device: Option<String>,
    /// Ask as this non-device user (MQTT username).
    #[arg(long, group = "who")]
    user: Option<String>,
    /// Publish to this topic name.
    #[arg(long, group = "what", required = true, value_name = "TOPIC")]
    publish: Option<String>,
    /// Subscribe with this filter (`$share/<group>/<filter>` allowed).
    #[arg(long, group = "what", value_name = "FILTER")]
    subscribe: Option<String>,
    /// QoS of the publish, or requested QoS of the subscription.
    #[arg(long, default_value_t = 0)]
    qos: u8,
    /// The publish has the retain flag set.
    #[arg(long)]
    retain: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum RenderFormat {
    /// Multi-document YAML.
    Yaml,
    /// A JSON `v1/List`.
    Json,
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
        Command::Run(args) => run_operator(&args),
        Command::Check { files, output } => run_check(&files, output),
        Command::Render {
            files,
            namespace,
            output,
        } => run_render(&files, &namespace, output),
        Command::Acl {
            command: AclCommand::Explain(args),
        } => run_explain(&args),
        Command::Acl {
            command:
                AclCommand::Compile {
                    files,
                    cluster,
                    out,
                },
        } => run_compile(&files, cluster.as_deref(), out.as_deref()),
        Command::Local {
            command:
                LocalCommand::Up {
                    files,
                    dir,
                    base_port,
                },
        } => report(
            local::up(&local::UpOptions {
                files,
                dir,
                base_port,
            })
            .map_err(|e| {
                let code = if matches!(e, local::UpError::Load(_)) {
                    2
                } else {
                    1
                };
                (e.to_string(), code)
            }),
        ),
        Command::Docs {
            command: DocsCommand::Api,
        } => {
            print!("{}", operator::apidoc::markdown());
            ExitCode::SUCCESS
        }
        Command::Local {
            command: LocalCommand::Down { dir },
        } => report(local::down(&dir).map_err(|e| (e.to_string(), 1))),
    }
}

fn report(result: Result<(), (String, u8)>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((message, code)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

fn run_operator(args: &operator::cli::RunArgs) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Json => builder.json().with_current_span(true).init(),
        LogFormat::Text => builder.init(),
    }
    let env = operator::cli::Environment {
        pod_namespace: std::env::var("POD_NAMESPACE").ok(),
        identity: operator::controllers::election::default_identity(
            std::env::var("POD_NAME").ok(),
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .or_else(|| std::env::var("HOSTNAME").ok()),
            std::process::id(),
        ),
    };
    let options = match args.options(&env) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        let client = match kube::Client::try_default().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "no Kubernetes client configuration");
                return ExitCode::from(2);
            }
        };
        match operator::controllers::run(client, options).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "operator stopped");
                ExitCode::FAILURE
            }
        }
    })
}

fn load(files: &[PathBuf]) -> Result<Vec<manifest::Document>, ExitCode> {
    manifest::load_paths(files)
        .and_then(|f| manifest::parse_files(&f))
        .map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(2)
        })
}

fn run_explain(args: &ExplainArgs) -> ExitCode {
    let docs = match load(&args.files) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let who = match (&args.device, &args.user) {
        (Some(d), _) => Who::Device(d),
        (None, Some(u)) => Who::User(u),
        (None, None) => unreachable!("clap requires --device or --user"),
    };
    let (action, topic) = match (&args.publish, &args.subscribe) {
        (Some(t), _) => (contract::acl::Action::Publish, t.as_str()),
        (None, Some(f)) => (contract::acl::Action::Subscribe, f.as_str()),
        (None, None) => unreachable!("clap requires --publish or --subscribe"),
    };
    let q = Question {
        who,
        action,
        topic,
        qos: args.qos,
        retain: args.retain,
    };
    match explain::explain(&docs, args.cluster.as_deref(), &q) {
        Ok(e) => {
            print!("{e}");
            if e.decision.is_allowed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run_compile(
    files: &[PathBuf],
    cluster: Option<&str>,
    out: Option<&std::path::Path>,
) -> ExitCode {
    let docs = match load(files) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let all: Vec<_> = acl::clusters(&docs)
        .filter(|(_, c)| cluster.is_none() || c.metadata.name.as_deref() == cluster)
        .collect();
    let [(namespace, c)] = all.as_slice() else {
        eprintln!(
            "error: {} MqttCluster(s) match; name one with --cluster",
            all.len()
        );
        return ExitCode::from(2);
    };
    let compiled = match acl::compile_documents(&docs, namespace, c) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let bytes = compiled.encode();
    for p in &compiled.policies {
        let state = if !p.selected {
            "not selected".to_string()
        } else if !p.errors.is_empty() {
            format!("rejected: {}", p.errors[0])
        } else {
            format!("{} subject(s)", p.matched_subjects)
        };
        println!("TopicPolicy/{}: {state}", p.name);
    }
    println!(
        "revision {}: {} subject(s), {} rule(s), format v{}, {} bytes",
        compiled.rules.revision(),
        compiled.rules.subjects().len(),
        compiled.rules.rule_count(),
        contract::acl::FORMAT_VERSION,
        bytes.len()
    );
    if let Some(path) = out {
        if let Err(e) = std::fs::write(path, &bytes) {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(2);
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
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

fn run_render(files: &[PathBuf], namespace: &str, format: RenderFormat) -> ExitCode {
    use operator::render::preview::{self, PreviewError};
    let docs = match load(files) {
        Ok(d) => d,
        Err(code) => return code,
    };
    match preview::preview(
        &docs,
        namespace,
        &mut operator::pki::OsRandomness,
        std::time::SystemTime::now(),
    ) {
        Ok(objects) => {
            print!(
                "{}",
                match format {
                    RenderFormat::Yaml => preview::to_yaml(&objects),
                    RenderFormat::Json => preview::to_json(&objects),
                }
            );
            ExitCode::SUCCESS
        }
        Err(PreviewError::Invalid { findings }) => {
            for f in &findings {
                eprintln!("{f}");
            }
            eprintln!("error: {} problem(s); nothing rendered", findings.len());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
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
