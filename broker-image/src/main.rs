//! `mqtt-broker --config-dir DIR [--runtime-dir DIR]`: the broker node.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::Parser;

/// The MQTT broker node, configured from the operator-rendered directory.
#[derive(Debug, Parser)]
#[command(name = "mqtt-broker", version)]
struct Args {
    /// The configuration directory (broker.json, tls/, acl.json, revoked.json, push-token).
    #[arg(long, env = "MQTT_BROKER_CONFIG_DIR")]
    config_dir: PathBuf,
    /// Writable scratch directory (trust bundle copies the engine reads by path).
    #[arg(long, env = "MQTT_BROKER_RUNTIME_DIR")]
    runtime_dir: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // JSON logs on stdout; the engine's `log` records are bridged into `tracing`.
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime_dir = args.runtime_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("mqtt-broker-{}", std::process::id()))
    });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mqtt-broker: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(broker::run::run(args.config_dir, runtime_dir)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("mqtt-broker: {e}");
            eprintln!("mqtt-broker: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
