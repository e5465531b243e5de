//! The pod stand-in: the test bed has no kubelet, so StatefulSet pods of a namespace are run
//! here as real `mqtt-broker` processes, each on its own loopback address with its pod DNS
//! names in `/etc/hosts`, its volumes materialised from the API (and kept in sync), and its
//! status (Running, podIP, Ready from the readiness probe) written back so the StatefulSet
//! controller proceeds as in a cluster. Deleting a pod stops its process (SIGTERM, then SIGKILL)
//! and finalises the deletion, as kubelet does. Nothing of this ships in the operator.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let Some(bed) = e2e::shared() else { return Ok(()) };
//! let Some(broker) = e2e::standin::broker_or_skip() else { return Ok(()) };
//! let ns = bed.namespace("brokers").await?;
//! let standin = e2e::standin::StandIn::start(bed, &ns, broker)?;
//! # let _ = standin; Ok(()) }
//! ```

pub mod address;
mod container;
pub mod hosts;
mod kubelet;
pub mod podspec;
pub mod volumes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::bed::TestBed;
use crate::shared::in_ci;

/// Errors starting the stand-in.
#[derive(Debug, thiserror::Error)]
pub enum StandInError {
    /// `/etc/hosts` cannot be edited.
    #[error("{0}")]
    Hosts(String),
    /// The stand-in's thread or runtime could not be started.
    #[error("starting the stand-in: {0}")]
    Start(String),
}

/// The `mqtt-broker` binary run in place of the broker image: `$MQTT_BROKER_BIN`, else
/// `target/<profile>/mqtt-broker` next to the running test's `deps/` directory, built with
/// `cargo build -p broker --bin mqtt-broker` when missing.
pub fn broker_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("MQTT_BROKER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("locating the test binary: {e}"))?;
    let profile_dir = exe
        .parent()
        .filter(|d| d.ends_with("deps"))
        .and_then(Path::parent)
        .ok_or_else(|| {
            format!(
                "{} is not in a target/<profile>/deps directory",
                exe.display()
            )
        })?;
    let broker = profile_dir.join("mqtt-broker");
    if !broker.exists() || older_than_sources(&broker) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        eprintln!("standin: building the broker: {cargo} build -p broker --bin mqtt-broker");
        let status = Command::new(&cargo)
            .args(["build", "-p", "broker", "--bin", "mqtt-broker"])
            .status()
            .map_err(|e| format!("running {cargo}: {e}"))?;
        if !status.success() {
            return Err(format!("cargo build -p broker --bin mqtt-broker: {status}"));
        }
    }
    Ok(broker)
}

/// Whether `binary` is older than a source file of the broker or the contract it embeds (a
/// `cargo test -p e2e` by hand does not rebuild other packages' binaries; an old broker would
/// make the tests chase fixed bugs).
fn older_than_sources(binary: &Path) -> bool {
    fn newest(dir: &Path, depth: usize) -> Option<std::time::SystemTime> {
        let mut best = None;
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let path = entry.path();
            let time = if path.is_dir() && depth > 0 {
                newest(&path, depth - 1)
            } else if path.extension().is_some_and(|e| e == "rs" || e == "toml") {
                entry.metadata().and_then(|m| m.modified()).ok()
            } else {
                None
            };
            best = best.max(time);
        }
        best
    }
    let Ok(built) = binary.metadata().and_then(|m| m.modified()) else {
        return true;
    };
    let root = crate::bed::repo_root();
    ["broker-image/src", "contract/src"]
        .iter()
        .filter_map(|d| newest(&root.join(d), 6))
        .any(|t| t > built)
}

/// The broker binary, when the stand-in can run here: `/etc/hosts` writable. Outside CI a
/// missing prerequisite skips (returns `None`, printing why); under `CI=true` it panics.
pub fn broker_or_skip() -> Option<PathBuf> {
    let ready = hosts::check_writable().and_then(|()| broker_binary());
    match ready {
        Ok(bin) => Some(bin),
        Err(why) if in_ci() => panic!("CI=true and the pod stand-in cannot run: {why}"),
        Err(why) => {
            eprintln!("SKIPPED (not CI): the pod stand-in cannot run: {why}");
            None
        }
    }
}

/// One broker process the stand-in runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodProcess {
    /// Pod name.
    pub pod: String,
    /// Pod uid.
    pub uid: String,
    /// Its loopback address.
    pub ip: std::net::Ipv4Addr,
    /// The process id.
    pub pid: u32,
    /// The pod's directory: `volumes/<volume>/` holds its materialised volumes.
    pub dir: PathBuf,
}

/// A running stand-in for one namespace. Dropping it stops its loop, kills every process it
/// started (SIGTERM, then SIGKILL) and removes its `/etc/hosts` lines.
pub struct StandIn {
    namespace: String,
    owner: String,
    root: PathBuf,
    pods: Arc<Mutex<BTreeMap<String, container::RunningPod>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIn")
            .field("namespace", &self.namespace)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl StandIn {
    /// Starts running the StatefulSet pods of `namespace` with `broker` (see [`broker_or_skip`]).
    pub fn start(
        bed: &'static TestBed,
        namespace: &str,
        broker: PathBuf,
    ) -> Result<Self, StandInError> {
        hosts::check_writable().map_err(StandInError::Hosts)?;
        let owner = hosts::owner(std::process::id(), namespace);
        // Drop lines of test processes that died without cleaning up (and none of ours).
        hosts::update(&owner, &[]).map_err(|e| StandInError::Hosts(e.to_string()))?;
        let root = bed.dir().join("standin").join(namespace);
        let pods = Arc::new(Mutex::new(BTreeMap::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let ctx = kubelet::Ctx {
            bed,
            namespace: namespace.to_string(),
            owner: owner.clone(),
            root: root.clone(),
            broker,
            pods: pods.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("standin-{namespace}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("standin: cannot build a runtime: {e}");
                        return;
                    }
                };
                rt.block_on(kubelet::run(ctx, stopped));
            })
            .map_err(|e| StandInError::Start(e.to_string()))?;
        Ok(Self {
            namespace: namespace.to_string(),
            owner,
            root,
            pods,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The namespace whose pods this stand-in runs.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The tag ending every `/etc/hosts` line of this stand-in (after [`hosts::MARK`]).
    pub fn hosts_owner(&self) -> &str {
        &self.owner
    }

    /// Directory holding the pods' directories and claims (every process's config is below it).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The broker processes running now.
    pub fn processes(&self) -> Vec<PodProcess> {
        let pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        pods.values().map(container::RunningPod::describe).collect()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let pods = std::mem::take(&mut *self.pods.lock().unwrap_or_else(|e| e.into_inner()));
        for pod in pods.into_values() {
            pod.terminate(kubelet::TEARDOWN_GRACE);
        }
        if let Err(e) = hosts::update(&self.owner, &[]) {
            eprintln!("standin: removing /etc/hosts lines: {e}");
        }
    }
}
