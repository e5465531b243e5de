//! The control-plane components: how each is started (flags, from the bed's [`Layout`]) and how
//! the bed knows it is ready. Command builders are pure; the waits poll with deadlines.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::Api;
use kube::Client;

use crate::process::ManagedProcess;
use crate::wait::{self, Check};

/// The Service CIDR given to the apiserver.
pub const SERVICE_CIDR: &str = "10.0.0.0/24";

/// How long the apiserver may take to serve `/readyz` (normally ~5 s on 2 cores).
const APISERVER_READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A component exited or never became ready; carries the end of its log.
#[derive(Debug, thiserror::Error)]
#[error("{component} {problem}\n--- last lines of {} ---\n{tail}", .log.display())]
pub struct ComponentError {
    /// etcd, kube-apiserver, kube-controller-manager.
    pub component: String,
    /// What went wrong.
    pub problem: String,
    /// Its log file.
    pub log: PathBuf,
    /// The end of its log.
    pub tail: String,
}

/// A [`ComponentError`] for `p` with `problem`, quoting the last 25 lines of its log.
pub fn component_error(p: &ManagedProcess, problem: String) -> ComponentError {
    ComponentError {
        component: p.name().to_string(),
        problem,
        log: p.log_path().to_path_buf(),
        tail: p.log_tail(25),
    }
}

/// `p` exited with `status`.
pub fn exited(p: &ManagedProcess, status: &str) -> ComponentError {
    component_error(p, format!("exited: {status}"))
}

/// Files and ports of one bed, all under its directory.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The bed's directory.
    pub root: PathBuf,
    /// CA certificate.
    pub ca_cert: PathBuf,
    /// Apiserver serving certificate.
    pub serving_cert: PathBuf,
    /// Its key.
    pub serving_key: PathBuf,
    /// Service-account signing key.
    pub sa_key: PathBuf,
    /// Its public half.
    pub sa_pub: PathBuf,
    /// `--token-auth-file`.
    pub tokens: PathBuf,
    /// Token kubeconfig.
    pub kubeconfig: PathBuf,
    /// Directory of the components' logs.
    pub logs: PathBuf,
    /// etcd client port.
    pub etcd_port: u16,
    /// etcd peer port.
    pub etcd_peer_port: u16,
    /// Apiserver secure port.
    pub api_port: u16,
}

impl Layout {
    /// The layout under `root` with ports `[etcd client, etcd peer, apiserver]`.
    pub fn new(root: &Path, [etcd_port, etcd_peer_port, api_port]: [u16; 3]) -> Self {
        Self {
            root: root.to_path_buf(),
            ca_cert: root.join("ca.crt"),
            serving_cert: root.join("apiserver.crt"),
            serving_key: root.join("apiserver.key"),
            sa_key: root.join("service-account.key"),
            sa_pub: root.join("service-account.pub"),
            tokens: root.join("tokens.csv"),
            kubeconfig: root.join("kubeconfig"),
            logs: root.join("logs"),
            etcd_port,
            etcd_peer_port,
            api_port,
        }
    }

    /// `https://127.0.0.1:<apiserver port>`.
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }
}

/// etcd on loopback, data in `<root>/etcd`.
pub fn etcd_command(bin: &Path, l: &Layout) -> Command {
    let client = format!("http://127.0.0.1:{}", l.etcd_port);
    let peer = format!("http://127.0.0.1:{}", l.etcd_peer_port);
    let mut cmd = Command::new(bin);
    cmd.arg("--name=e2e")
        .arg(format!("--data-dir={}", l.root.join("etcd").display()))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=e2e={peer}"))
        .arg("--log-level=warn");
    cmd
}

/// kube-apiserver on loopback: RBAC, token auth, our serving certificate, no insecure port.
pub fn apiserver_command(bin: &Path, l: &Layout) -> Command {
    let path = |flag: &str, p: &Path| format!("--{flag}={}", p.display());
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--etcd-servers=http://127.0.0.1:{}", l.etcd_port))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        .arg(format!("--secure-port={}", l.api_port))
        .arg("--insecure-port=0")
        .arg(path("cert-dir", &l.root.join("apiserver-certs")))
        .arg(path("tls-cert-file", &l.serving_cert))
        .arg(path("tls-private-key-file", &l.serving_key))
        .arg(path("client-ca-file", &l.ca_cert))
        .arg(path("token-auth-file", &l.tokens))
        .arg("--authorization-mode=RBAC")
        .arg("--service-account-issuer=https://kubernetes.default.svc")
        .arg(path("service-account-key-file", &l.sa_pub))
        .arg(path("service-account-signing-key-file", &l.sa_key))
        .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
        // On loopback the default reconciler cannot publish an Endpoints for 127.0.0.1.
        .arg("--endpoint-reconciler-type=none")
        .arg("--allow-privileged=true")
        .arg("--profiling=false");
    cmd
}

/// kube-controller-manager running `controllers`, serving nothing (no ports to collide).
pub fn controller_manager_command(bin: &Path, l: &Layout, controllers: &[String]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--kubeconfig={}", l.kubeconfig.display()))
        .arg(format!("--controllers={}", controllers.join(",")))
        .arg(format!(
            "--service-account-private-key-file={}",
            l.sa_key.display()
        ))
        .arg(format!("--root-ca-file={}", l.ca_cert.display()))
        .arg("--use-service-account-credentials=false")
        .arg("--leader-elect=false")
        .arg("--port=0")
        .arg("--secure-port=0")
        .arg("--profiling=false");
    cmd
}

pub async fn wait_port(
    p: &ManagedProcess,
    port: u16,
    timeout: Duration,
) -> Result<(), ComponentError> {
    wait::until(
        &format!("{} to accept connections on 127.0.0.1:{port}", p.name()),
        timeout,
        || async move {
            if let Some(status) = p.exited() {
                return Check::Fatal(format!("exited: {status}"));
            }
            wait::check(
                "connect",
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map(|_| ()),
            )
        },
    )
    .await
    .map_err(|t| component_error(p, t.to_string()))?;
    match p.exited() {
        Some(status) => Err(exited(p, &status)),
        None => Ok(()),
    }
}

/// `/readyz` can pass before namespace `default` exists, so wait for both.
pub async fn wait_ready(apiserver: &ManagedProcess, client: &Client) -> Result<(), ComponentError> {
    wait::until(
        "kube-apiserver /readyz and namespace default",
        APISERVER_READY_TIMEOUT,
        || async move {
            if let Some(status) = apiserver.exited() {
                return Check::Fatal(format!("exited: {status}"));
            }
            let req = match http::Request::get("/readyz").body(Vec::new()) {
                Ok(req) => req,
                Err(e) => return Check::Fatal(format!("building /readyz request: {e}")),
            };
            match client.request_text(req).await {
                Ok(body) if body.trim() == "ok" => {}
                Ok(body) => return Check::NotYet(format!("/readyz said {body:?}")),
                Err(e) => return Check::NotYet(format!("/readyz: {e}")),
            }
            let namespaces: Api<Namespace> = Api::all(client.clone());
            wait::check(
                "namespace default",
                namespaces.get("default").await.map(|_| ()),
            )
        },
    )
    .await
    .map_err(|t| component_error(apiserver, t.to_string()))
}

/// Waits until the `default` ServiceAccount of `namespace` has a token Secret, i.e. the
/// controller-manager's serviceaccount and serviceaccount-token controllers are working.
pub async fn wait_service_account_token(
    kcm: &ManagedProcess,
    client: &Client,
    namespace: &str,
) -> Result<(), ComponentError> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let what =
        format!("ServiceAccount {namespace}/default to get a token from kube-controller-manager");
    wait::until(&what, Duration::from_secs(60), || {
        let api = api.clone();
        async move {
            if let Some(status) = kcm.exited() {
                return Check::Fatal(format!("kube-controller-manager exited: {status}"));
            }
            match api.get_opt("default").await {
                Err(e) => Check::NotYet(e.to_string()),
                Ok(None) => Check::NotYet("no ServiceAccount default yet".to_string()),
                Ok(Some(sa)) if sa.secrets.as_ref().is_some_and(|s| !s.is_empty()) => {
                    Check::Done(())
                }
                Ok(Some(_)) => {
                    Check::NotYet("ServiceAccount default has no token Secret yet".to_string())
                }
            }
        }
    })
    .await
    .map_err(|t| component_error(kcm, t.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn every_component_listens_on_loopback_only() {
        let l = Layout::new(Path::new("/tmp/bed"), [2379, 2380, 6443]);
        let etcd = args(&etcd_command(Path::new("etcd"), &l));
        for a in etcd.iter().filter(|a| a.contains("://")) {
            assert!(a.contains("://127.0.0.1:"), "etcd {a}");
        }
        let api = args(&apiserver_command(Path::new("kube-apiserver"), &l));
        for wanted in [
            "--bind-address=127.0.0.1",
            "--insecure-port=0",
            "--secure-port=6443",
            "--etcd-servers=http://127.0.0.1:2379",
            "--endpoint-reconciler-type=none",
        ] {
            assert!(
                api.iter().any(|a| a == wanted),
                "apiserver lacks {wanted}: {api:?}"
            );
        }
        let kcm = args(&controller_manager_command(
            Path::new("kcm"),
            &l,
            &["garbagecollector".to_string(), "statefulset".to_string()],
        ));
        for wanted in [
            "--port=0",
            "--secure-port=0",
            "--controllers=garbagecollector,statefulset",
        ] {
            assert!(
                kcm.iter().any(|a| a == wanted),
                "controller-manager lacks {wanted}: {kcm:?}"
            );
        }
        assert_eq!(l.server_url(), "https://127.0.0.1:6443");
    }
}
