//! The flags of `mqtt-operator run`, shared by the binary and the test that parses the Helm
//! chart's container arguments with them (`e2e/tests/chart_args.rs`), so chart and binary
//! cannot drift apart.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::controllers::election::LeaderElection;
use crate::controllers::RunOptions;

/// Flags of `mqtt-operator run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Address of the `/healthz` and `/metrics` HTTP server (the Helm chart's flag).
    #[arg(
        long = "metrics-bind-address",
        alias = "listen",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: SocketAddr,
    /// Log format: JSON lines (the container default) or human-readable text.
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Elect a leader with a coordination.k8s.io/v1 Lease: only the holder runs the
    /// controllers; the others serve /healthz and wait.
    #[arg(long)]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "mqtt-operator")]
    pub lease_name: String,
    /// Namespace of the Lease (default: `$POD_NAMESPACE`).
    #[arg(long)]
    pub lease_namespace: Option<String>,
    /// Lease duration in seconds: a leader that stopped renewing is replaced after this long.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub lease_duration_seconds: u64,
    /// Namespaces to watch, comma-separated (default: all namespaces).
    #[arg(long, value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
}

/// Log format of `mqtt-operator run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, with the reconcile span's kind/namespace/name.
    Json,
    /// Human-readable.
    Text,
}

/// The flags do not make a runnable configuration.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    /// `--leader-elect` without a namespace for the Lease.
    #[error("--leader-elect needs --lease-namespace (or $POD_NAMESPACE)")]
    NoLeaseNamespace,
    /// A watched namespace is not a valid namespace name.
    #[error("--watch-namespaces: {0:?} is not a namespace name")]
    BadNamespace(String),
}

/// What `run` reads from its environment (the chart's downward-API variables).
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// `$POD_NAMESPACE`.
    pub pod_namespace: Option<String>,
    /// This replica's Lease identity (`$POD_NAME`, or hostname + pid).
    pub identity: String,
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl RunArgs {
    /// The namespaces to watch, trimmed, deduplicated and sorted; empty means all.
    pub fn namespaces(&self) -> Result<Vec<String>, FlagError> {
        let mut out: Vec<String> = Vec::new();
        for ns in self.watch_namespaces.iter().map(|n| n.trim()) {
            if ns.is_empty() {
                continue;
            }
            if !is_dns_label(ns) {
                return Err(FlagError::BadNamespace(ns.to_string()));
            }
            out.push(ns.to_string());
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The controllers' options from these flags and `env`.
    pub fn options(&self, env: &Environment) -> Result<RunOptions, FlagError> {
        let leader_election = if self.leader_elect {
            let namespace = self
                .lease_namespace
                .clone()
                .or_else(|| env.pod_namespace.clone())
                .filter(|n| !n.is_empty())
                .ok_or(FlagError::NoLeaseNamespace)?;
            let mut le = LeaderElection::new(&self.lease_name, &namespace, &env.identity);
            let duration = Duration::from_secs(self.lease_duration_seconds);
            // controller-runtime's proportions: renew every 1/3, give up after 2/3.
            le.lease_duration = duration;
            le.renew_deadline = duration * 2 / 3;
            le.retry_period = duration / 3;
            Some(le)
        } else {
            None
        };
        Ok(RunOptions {
            listen: self.listen,
            watch_namespaces: self.namespaces()?,
            leader_election,
        })
    }
}

#[derive(Parser)]
#[command(name = "mqtt-operator")]
struct RunOnly {
    #[command(subcommand)]
    command: RunOnlyCommand,
}

#[derive(Subcommand)]
enum RunOnlyCommand {
    Run(RunArgs),
}

/// Parses a container's `args` (`["run", "--flag", ...]`) the way `mqtt-operator` does.
pub fn parse_run(args: &[String]) -> Result<RunArgs, clap::Error> {
    let RunOnly {
        command: RunOnlyCommand::Run(run),
    } = RunOnly::try_parse_from(
        std::iter::once("mqtt-operator".to_string()).chain(args.iter().cloned()),
    )?;
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        parse_run(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn env() -> Environment {
        Environment {
            pod_namespace: Some("ops".into()),
            identity: "op-0".into(),
        }
    }

    #[test]
    fn defaults_watch_everything_without_election() {
        let o = parse(&["run"]).unwrap().options(&env()).unwrap();
        assert!(o.watch_namespaces.is_empty());
        assert!(o.leader_election.is_none());
        assert_eq!(o.listen.port(), 8080);
    }

    #[test]
    fn chart_style_flags() {
        let a = parse(&[
            "run",
            "--metrics-bind-address=0.0.0.0:9000",
            "--leader-elect",
            "--lease-name=rel-mqtt-operator",
            "--lease-namespace=ops",
            "--watch-namespaces=b,a, b",
        ])
        .unwrap();
        let o = a.options(&env()).unwrap();
        assert_eq!(o.listen.port(), 9000);
        assert_eq!(o.watch_namespaces, ["a", "b"]);
        let le = o.leader_election.unwrap();
        assert_eq!(
            (
                le.lease_name.as_str(),
                le.lease_namespace.as_str(),
                le.identity.as_str()
            ),
            ("rel-mqtt-operator", "ops", "op-0")
        );
        assert_eq!(le.lease_duration, Duration::from_secs(15));
        assert_eq!(le.retry_period, Duration::from_secs(5));
        assert_eq!(le.renew_deadline, Duration::from_secs(10));
    }

    #[test]
    fn lease_namespace_falls_back_to_the_pod_namespace_or_fails() {
        let a = parse(&["run", "--leader-elect"]).unwrap();
        assert_eq!(
            a.options(&env())
                .unwrap()
                .leader_election
                .unwrap()
                .lease_namespace,
            "ops"
        );
        let none = Environment::default();
        assert!(matches!(a.options(&none), Err(FlagError::NoLeaseNamespace)));
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(parse(&["run", "--leader-elect=yes"]).is_err());
        assert!(parse(&["run", "--unknown"]).is_err());
        assert!(parse(&["run", "--lease-duration-seconds=1"]).is_err());
        let a = parse(&["run", "--watch-namespaces=Bad_NS"]).unwrap();
        assert!(matches!(a.options(&env()), Err(FlagError::BadNamespace(_))));
    }
}
