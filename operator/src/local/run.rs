//! The `local up` loop and `local down`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use contract::config::{BrokerDirectory, DirectoryFiles, RevokedSet, CONFIG_VERSION};
use crds::device::DeviceState;
use sha2::{Digest, Sha256};

use super::commands::{self, Connection};
use super::plan::{self, Issuance, Plan, PlanError};
use super::state::{Authorities, StateDir, StateError};
use super::supervise::{self, Node, SuperviseError};
use crate::manifest::{self, LoadError};
use crate::render::broker::{broker_config, RenderError, Topology};

/// How long all nodes get to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How often the input files are compared with the running version.
const POLL: Duration = Duration::from_millis(300);
/// How long a broker gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Options of `local up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Manifest files or directories.
    pub files: Vec<PathBuf>,
    /// State directory.
    pub dir: PathBuf,
    /// First port; node n uses `base + 10 n` .. `base + 10 n + 5`.
    pub base_port: u16,
}

/// Why `local up` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// Unreadable manifests.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// `check` found errors (already printed).
    #[error("the manifests have {0} error(s); fix them (see `mqtt-operator check`)")]
    Check(usize),
    /// Not runnable locally.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// State directory / PKI.
    #[error(transparent)]
    State(#[from] StateError),
    /// Rendering a node's config.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// Broker processes.
    #[error(transparent)]
    Supervise(#[from] SuperviseError),
    /// Another instance uses the directory.
    #[error("local up is already running in {dir} (pid {pid}); stop it with `mqtt-operator local down -d {dir}`")]
    Running {
        /// The state directory.
        dir: String,
        /// Its pid.
        pid: u32,
    },
    /// The base port leaves no room for the nodes.
    #[error("--base-port {0} is too high for {1} node(s)")]
    Ports(u16, i32),
    /// A broker died while running.
    #[error("node core-{node} exited ({status}); log: {log}\n{tail}")]
    NodeExited {
        /// Node index.
        node: usize,
        /// Exit status.
        status: String,
        /// Log file.
        log: String,
        /// End of the log.
        tail: String,
    },
    /// Signal handling could not be set up.
    #[error("installing the signal handler: {0}")]
    Signals(std::io::Error),
}

/// The inputs as read: documents plus a fingerprint of the file contents.
struct Inputs {
    docs: Vec<manifest::Document>,
    fingerprint: [u8; 32],
}

fn fingerprint(files: &[manifest::SourceFile]) -> [u8; 32] {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.path.as_bytes());
        h.update([0]);
        h.update(f.text.as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

/// Reads and checks the manifests; prints the findings.
fn read_inputs(paths: &[PathBuf]) -> Result<Inputs, UpError> {
    let files = manifest::load_paths(paths)?;
    let docs = manifest::parse_files(&files)?;
    let report = crate::check::check(&docs);
    for f in &report.findings {
        println!("  {f}");
    }
    let errors = report
        .findings
        .iter()
        .filter(|f| f.severity == crate::check::Severity::Error)
        .count();
    if errors > 0 {
        return Err(UpError::Check(errors));
    }
    Ok(Inputs {
        docs,
        fingerprint: fingerprint(&files),
    })
}

fn revoked_set(serials: &BTreeSet<String>) -> RevokedSet {
    let mut h = Sha256::new();
    for s in serials {
        h.update(s.as_bytes());
        h.update([b'\n']);
    }
    RevokedSet {
        version: CONFIG_VERSION.into(),
        revision: hex::encode(&h.finalize()[..8]),
        serials: serials.iter().cloned().collect(),
    }
}

/// One node's rendered directory.
fn render_node(
    plan: &Plan,
    topology: &Topology,
    n: usize,
    server: &(String, String),
    auth: &Authorities,
    revoked: &RevokedSet,
) -> Result<DirectoryFiles, UpError> {
    let config = broker_config(plan.name(), &plan.cluster.spec, topology, n)?;
    Ok(contract::config::render(&BrokerDirectory {
        config,
        server_cert_pem: server.0.clone(),
        server_key_pem: server.1.clone(),
        clients_ca_pem: auth.clients_ca.cert_pem(),
        acl: plan.acl.rules.clone(),
        revoked: revoked.clone(),
        push_token: auth.push_token.clone(),
    }))
}

/// Installs SIGINT/SIGTERM handling: the returned flag turns true on either.
fn signals() -> Result<Arc<AtomicBool>, UpError> {
    let flag = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(UpError::Signals)?;
    let (mut int, mut term) = rt
        .block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            ))
        })
        .map_err(UpError::Signals)?;
    let set = flag.clone();
    std::thread::spawn(move || {
        rt.block_on(async {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        });
        set.store(true, Ordering::SeqCst);
    });
    Ok(flag)
}

/// A running local cluster.
struct Running {
    state: StateDir,
    topology: Topology,
    auth: Authorities,
    server: (String, String),
    plan: Plan,
    revoked: RevokedSet,
    nodes: Vec<Node>,
}

/// Runs `local up` until SIGINT/SIGTERM (or a broker dies).
pub fn up(opts: &UpOptions) -> Result<(), UpError> {
    let started = Instant::now();
    let stop = signals()?;
    println!("local up: reading {}", display_paths(&opts.files));
    let inputs = read_inputs(&opts.files)?;
    let plan = plan::plan(&inputs.docs)?;
    let replicas = plan.replicas();
    if u32::from(opts.base_port) + 10 * replicas as u32 + 10 > u32::from(u16::MAX) {
        return Err(UpError::Ports(opts.base_port, replicas));
    }
    let state = StateDir {
        root: opts.dir.clone(),
    };
    claim(&state)?;
    let result = (|| {
        let mut running = start(&state, plan, opts, started)?;
        let outcome = watch(&mut running, opts, inputs.fingerprint, &stop);
        println!("local up: stopping {} broker(s)", running.nodes.len());
        supervise::stop(&mut running.nodes, STOP_GRACE);
        println!("local up: stopped");
        outcome
    })();
    let _ = std::fs::remove_file(state.pid_file());
    result
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Refuses a directory another live `local up` uses; records our pid.
fn claim(state: &StateDir) -> Result<(), UpError> {
    if let Some(pid) = read_pid(&state.pid_file()) {
        if pid != std::process::id() && supervise::alive(pid) {
            return Err(UpError::Running {
                dir: state.root.display().to_string(),
                pid,
            });
        }
    }
    super::state::write_file(
        &state.pid_file(),
        format!("{}\n", std::process::id()).as_bytes(),
        false,
    )?;
    Ok(())
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn start(
    state: &StateDir,
    plan: Plan,
    opts: &UpOptions,
    started: Instant,
) -> Result<Running, UpError> {
    let replicas = plan.replicas();
    println!(
        "  MqttCluster/{}: {} core node(s), {} device(s), ACL revision {} ({} rules)",
        plan.name(),
        replicas,
        plan.devices.len(),
        plan.acl.rules.revision(),
        plan.acl.rules.rule_count()
    );
    let auth = state.authorities(&plan)?;
    println!("  CAs in {}", state.root.join("ca").display());
    let revoked = revoked_set(&state.devices(&plan, &auth)?);
    println!("  device certificates in {}", state.devices_dir().display());
    let server = state.server_cert(&plan, &auth)?;
    for (name, remote) in &plan.bridges {
        println!("  Bridge/{name} (to {remote}): bridges are not started in local mode");
    }
    let topology = Topology::single_host("127.0.0.1", opts.base_port, replicas);
    let binary = supervise::broker_binary()?;
    let mut nodes = Vec::new();
    for (n, (_, ports)) in topology.nodes.iter().enumerate() {
        let files = render_node(&plan, &topology, n, &server, &auth, &revoked)?;
        state.write_config(n, &files)?;
        let node = supervise::spawn(&binary, n, &state.node_dir(n), (ports.mqtts, ports.http));
        match node {
            Ok(node) => nodes.push(node),
            Err(e) => {
                supervise::stop(&mut nodes, STOP_GRACE);
                return Err(e.into());
            }
        }
        println!(
            "  [{}/{replicas}] core-{n} starting: mqtts 127.0.0.1:{}, http :{}",
            n + 1,
            ports.mqtts,
            ports.http
        );
    }
    let ready = supervise::wait_ready(&mut nodes, READY_TIMEOUT, |node, _| {
        println!(
            "  core-{} ready ({:.1} s)",
            node.index,
            started.elapsed().as_secs_f64()
        );
    });
    if let Err(e) = ready {
        supervise::stop(&mut nodes, STOP_GRACE);
        return Err(e.into());
    }
    let running = Running {
        state: state.clone(),
        topology,
        auth,
        server,
        plan,
        revoked,
        nodes,
    };
    println!(
        "local up: {} node(s) ready in {:.1} s",
        running.nodes.len(),
        started.elapsed().as_secs_f64()
    );
    print_usage(&running);
    Ok(running)
}

fn print_usage(r: &Running) {
    let devices_dir = r.state.devices_dir().display().to_string();
    println!();
    println!("Devices (certificate, key, CA bundle in {devices_dir}/<deviceId>/):");
    for d in &r.plan.devices {
        let note = match (&d.issuance, d.state) {
            (_, DeviceState::Revoked) => " (revoked: no certificate)".to_string(),
            (_, DeviceState::Suspended) => " (suspended: denied everything)".to_string(),
            (Issuance::Csr { .. }, _) => " (CSR: use the device's own key)".to_string(),
            (Issuance::GeneratedKey(p), _) => format!(" ({})", p.key_algorithm.as_str()),
        };
        println!("  {}{note}", d.id);
    }
    let usable: Vec<&str> = r
        .plan
        .devices
        .iter()
        .filter(|d| {
            d.state == DeviceState::Active && matches!(d.issuance, Issuance::GeneratedKey(_))
        })
        .map(|d| d.id.as_str())
        .collect();
    let Some(e) = commands::example(&r.plan.acl.rules, &usable) else {
        println!("(no subscribe/publish pair in the policies to show an example with)");
        return;
    };
    let c = Connection {
        port: r.topology.nodes[0].1.mqtts,
        devices_dir: &devices_dir,
    };
    println!();
    println!("Try it (Debian/Ubuntu: apt install mosquitto-clients):");
    println!("# 1. {} subscribes to {}:", e.subscriber, e.filter);
    println!("{}", commands::subscribe(&c, &e));
    println!("# 2. {} publishes to {} (delivered):", e.publisher, e.topic);
    println!(
        "{}",
        commands::publish(&c, &e, &e.topic, &format!("hello from {}", e.publisher))
    );
    println!(
        "# 3. {} publishes to {} (refused by the ACL: not delivered):",
        e.publisher, e.refused_topic
    );
    println!(
        "{}",
        commands::publish(&c, &e, &e.refused_topic, "not allowed")
    );
    println!();
    println!("Watching the manifests for changes; Ctrl-C stops the brokers.");
}

fn watch(
    r: &mut Running,
    opts: &UpOptions,
    mut fingerprint: [u8; 32],
    stop: &AtomicBool,
) -> Result<(), UpError> {
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(POLL);
        if let Some((node, status)) = supervise::exited(&mut r.nodes) {
            let log = r.nodes[node].log.clone();
            return Err(UpError::NodeExited {
                node,
                status,
                log: log.display().to_string(),
                tail: supervise::log_tail(&log, 20),
            });
        }
        let Ok(files) = manifest::load_paths(&opts.files) else {
            continue; // A file is being replaced; try again at the next poll.
        };
        let now = self::fingerprint(&files);
        if now == fingerprint {
            continue;
        }
        fingerprint = now;
        let applied = Instant::now();
        println!("change detected in the manifests");
        match read_inputs(&opts.files).and_then(|i| Ok(plan::plan(&i.docs)?)) {
            Ok(new) => {
                if let Err(e) = apply(r, new, applied) {
                    println!("  not applied: {e}");
                }
            }
            Err(e) => println!("  not applied, still running the previous version: {e}"),
        }
    }
    Ok(())
}

/// Applies a new plan to the running brokers: ACL and revoked set (files rewritten for restarts,
/// then pushed to every node), new device certificates.
fn apply(r: &mut Running, new: Plan, t0: Instant) -> Result<(), UpError> {
    let change = plan::diff(&r.plan, &new);
    if change.cluster {
        println!(
            "  MqttCluster changed: restart local up to apply it (ACL and devices are applied now)"
        );
    }
    let revoked = revoked_set(&r.state.devices(&new, &r.auth)?);
    let revoked_changed = revoked.revision != r.revoked.revision;
    for n in 0..r.nodes.len() {
        let files = render_node(&new, &r.topology, n, &r.server, &r.auth, &revoked)?;
        r.state.write_config(n, &files)?;
    }
    let token = r.auth.push_token.clone();
    let push = |path: &str, body: &[u8]| -> usize {
        r.nodes
            .iter()
            .filter(
                |n| match supervise::http(n.http, "PUT", path, Some(&token), body) {
                    Ok((200, _)) => true,
                    Ok((code, b)) => {
                        println!("  core-{}: {path} answered {code}: {}", n.index, b.trim());
                        false
                    }
                    Err(e) => {
                        println!("  core-{}: {e}", n.index);
                        false
                    }
                },
            )
            .count()
    };
    let total = r.nodes.len();
    if let Some((old, newrev)) = &change.acl {
        let ok = push("/v1/acl", &new.acl.encode());
        println!(
            "  ACL revision {old} -> {newrev} ({} rules): applied to {ok}/{total} node(s) in {} ms",
            new.acl.rules.rule_count(),
            t0.elapsed().as_millis()
        );
    }
    if revoked_changed {
        let body = serde_json::to_vec(&revoked).expect("revoked set serializes");
        let ok = push("/v1/revoked", &body);
        println!(
            "  revoked set: {} serial(s), applied to {ok}/{total} node(s) in {} ms",
            revoked.serials.len(),
            t0.elapsed().as_millis()
        );
    }
    for id in &change.added {
        println!(
            "  device added: {id} (files in {})",
            r.state.devices_dir().join(id).display()
        );
    }
    for id in &change.removed {
        println!("  device removed: {id} (its rules are gone; its certificate stays valid)");
    }
    for (id, state) in &change.state {
        println!("  device {id}: now {state:?}");
    }
    if change.is_empty() && !revoked_changed {
        println!("  no effective change (same ACL revision, same devices)");
    }
    r.plan = new;
    r.revoked = revoked;
    Ok(())
}

/// Why `local down` failed.
#[derive(Debug, thiserror::Error)]
pub enum DownError {
    /// The directory is not a `local up` state directory.
    #[error("{0} is not a local up state directory (no local.pid or ca/); not removing it")]
    NotState(String),
    /// The instance did not stop.
    #[error("local up (pid {pid}) still running after {secs} s")]
    StillRunning {
        /// Its pid.
        pid: u32,
        /// How long we waited.
        secs: u64,
    },
    /// Removing the directory failed.
    #[error("removing {path}: {source}")]
    Remove {
        /// The directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while supervise::alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// Stops a running `local up` of `dir` (SIGTERM to its pid, leftover brokers too) and removes
/// the directory.
pub fn down(dir: &Path) -> Result<(), DownError> {
    let state = StateDir {
        root: dir.to_owned(),
    };
    if !dir.exists() {
        println!(
            "local down: {} does not exist; nothing to stop",
            dir.display()
        );
        return Ok(());
    }
    if !state.pid_file().exists() && !dir.join("ca").exists() {
        return Err(DownError::NotState(dir.display().to_string()));
    }
    if let Some(pid) = read_pid(&state.pid_file()).filter(|p| supervise::alive(*p)) {
        println!("local down: stopping local up (pid {pid})");
        supervise::terminate(pid);
        if !wait_gone(pid, Duration::from_secs(20)) {
            return Err(DownError::StillRunning { pid, secs: 20 });
        }
    }
    // Brokers left behind by an instance that was killed without cleanup.
    let nodes = std::fs::read_dir(dir.join("nodes"))
        .into_iter()
        .flatten()
        .flatten();
    for node in nodes {
        if let Some(pid) =
            read_pid(&node.path().join("broker.pid")).filter(|p| supervise::alive(*p))
        {
            println!("local down: stopping leftover broker pid {pid}");
            supervise::terminate(pid);
            if !wait_gone(pid, STOP_GRACE) {
                return Err(DownError::StillRunning {
                    pid,
                    secs: STOP_GRACE.as_secs(),
                });
            }
        }
    }
    std::fs::remove_dir_all(dir).map_err(|source| DownError::Remove {
        path: dir.display().to_string(),
        source,
    })?;
    println!("local down: removed {}", dir.display());
    Ok(())
}
