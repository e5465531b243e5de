//! Where the control-plane binaries live: `e2e/testbed/install.sh` builds kube-apiserver,
//! kube-controller-manager and kubectl into a cache directory; etcd comes from Debian's
//! `etcd-server`.

use std::path::{Path, PathBuf};

/// The Kubernetes version the test bed runs.
pub const KUBERNETES_VERSION: &str = "1.20.2";

/// Some binaries are not installed.
#[derive(Debug, thiserror::Error)]
#[error("test bed binaries missing: {}; build them with `bash e2e/testbed/install.sh` (or `bash scripts/install-deps.sh`)", .missing.join(", "))]
pub struct MissingBinaries {
    /// Each missing binary with the place it was looked for.
    pub missing: Vec<String>,
}

/// Paths of the binaries a [`crate::TestBed`] runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// etcd (Debian `etcd-server`).
    pub etcd: PathBuf,
    /// kube-apiserver 1.20.2.
    pub kube_apiserver: PathBuf,
    /// kube-controller-manager 1.20.2.
    pub kube_controller_manager: PathBuf,
    /// kubectl 1.20.2 (rebuilt; Debian's faults on Go 1.19).
    pub kubectl: PathBuf,
}

/// The cache directory install.sh fills: `$MQTT_OPERATOR_K8S_DIR`, else
/// `$HOME/.cache/mqtt-operator/k8s-1.20.2`.
pub fn k8s_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MQTT_OPERATOR_K8S_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache/mqtt-operator")
        .join(format!("k8s-{KUBERNETES_VERSION}"))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

impl Binaries {
    /// Finds every binary or reports all that are missing. `$MQTT_OPERATOR_ETCD` overrides etcd.
    pub fn locate() -> Result<Self, MissingBinaries> {
        let mut missing = Vec::new();
        let etcd = match std::env::var_os("MQTT_OPERATOR_ETCD") {
            Some(p) => PathBuf::from(p),
            None => find_on_path("etcd").unwrap_or_else(|| PathBuf::from("/usr/bin/etcd")),
        };
        if !is_executable(&etcd) {
            missing.push(format!("etcd ({})", etcd.display()));
        }
        let bin = k8s_dir().join("bin");
        let mut cached = |name: &str| {
            let path = bin.join(name);
            if !is_executable(&path) {
                missing.push(format!("{name} ({})", path.display()));
            }
            path
        };
        let kube_apiserver = cached("kube-apiserver");
        let kube_controller_manager = cached("kube-controller-manager");
        let kubectl = cached("kubectl");
        if missing.is_empty() {
            Ok(Self {
                etcd,
                kube_apiserver,
                kube_controller_manager,
                kubectl,
            })
        } else {
            Err(MissingBinaries { missing })
        }
    }
}
