//! [`TestBed`]: etcd + kube-apiserver + kube-controller-manager on 127.0.0.1, torn down on drop.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

use crate::binaries::{Binaries, MissingBinaries};
use crate::certs::{CertError, ControlPlanePki};
use crate::components::{self, ComponentError, Layout};
use crate::kubeconfig;
use crate::manifests::{self, ManifestError};
use crate::process::{self, ManagedProcess, ProcessError, ProcessGroup};
use crate::wait;

/// Controllers kube-controller-manager runs by default: the garbage collector (ownerReferences),
/// namespace deletion, the StatefulSet controller, and the service-account controllers without
/// which Pods are refused with "No API token found".
pub const DEFAULT_CONTROLLERS: [&str; 5] = [
    "garbagecollector",
    "namespace",
    "serviceaccount",
    "serviceaccount-token",
    "statefulset",
];

/// Start attempts when a reserved port was taken by someone else before a server bound it.
const START_ATTEMPTS: u32 = 3;

/// Errors starting or using a test bed.
#[derive(Debug, thiserror::Error)]
pub enum TestBedError {
    /// Binaries are not installed.
    #[error(transparent)]
    Missing(#[from] MissingBinaries),
    /// Certificates could not be generated.
    #[error(transparent)]
    Certs(#[from] CertError),
    /// A process could not be started.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A file of the bed could not be written or read.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A component exited or never became ready.
    #[error(transparent)]
    Component(#[from] ComponentError),
    /// The kubeconfig could not be turned into a client.
    #[error("building a client from {path}: {message}")]
    Client {
        /// The kubeconfig.
        path: PathBuf,
        /// The error.
        message: String,
    },
    /// A request to the bed failed.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// The client error.
        source: Box<kube::Error>,
    },
    /// Applying the CRDs failed.
    #[error("installing CRDs: {0}")]
    Crds(#[from] ManifestError),
    /// A wait timed out or gave up.
    #[error(transparent)]
    Wait(#[from] wait::WaitError),
}

/// How to start a [`TestBed`].
#[derive(Debug, Clone)]
pub struct TestBedOptions {
    /// Directory whose `*.yaml` CRDs are installed before the bed is handed out (`None`: none).
    pub crd_dir: Option<PathBuf>,
    /// kube-controller-manager `--controllers` (empty: do not start it).
    pub controllers: Vec<String>,
}

impl Default for TestBedOptions {
    fn default() -> Self {
        Self {
            crd_dir: Some(repo_root().join("crds/generated")),
            controllers: DEFAULT_CONTROLLERS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// The repository root (parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// How long each start phase took.
#[derive(Debug, Clone, Copy)]
pub struct StartupTimes {
    /// etcd accepting connections.
    pub etcd: Duration,
    /// kube-apiserver `/readyz` and namespace `default`.
    pub apiserver: Duration,
    /// CRDs applied and Established.
    pub crds: Duration,
    /// kube-controller-manager running its controllers (default ServiceAccount has a token).
    pub controller_manager: Duration,
    /// Total.
    pub total: Duration,
}

/// A running control plane on 127.0.0.1. Dropping it kills and reaps every process and removes
/// its directory (set `MQTT_OPERATOR_E2E_KEEP=1` to keep the directory and logs).
#[derive(Debug)]
pub struct TestBed {
    // Field order matters for Drop: processes die before the directory goes.
    controller_manager: Option<ManagedProcess>,
    apiserver: ManagedProcess,
    etcd: ManagedProcess,
    group: ProcessGroup,
    extra: std::sync::Mutex<Vec<u32>>,
    binaries: Binaries,
    server: String,
    kubeconfig: PathBuf,
    ca_cert: PathBuf,
    crds: Vec<String>,
    controllers: Vec<String>,
    startup: StartupTimes,
    namespaces: AtomicU32,
    dir: tempfile::TempDir,
}

impl TestBed {
    /// Starts a bed with [`TestBedOptions::default`]: the repository's CRDs and the default
    /// controllers.
    pub async fn start() -> Result<Self, TestBedError> {
        Self::start_with(TestBedOptions::default()).await
    }

    /// Starts a bed; retries (up to 3 attempts) only when a reserved port was taken meanwhile.
    pub async fn start_with(options: TestBedOptions) -> Result<Self, TestBedError> {
        let binaries = Binaries::locate()?;
        let mut attempt = 1;
        loop {
            match Self::start_once(&binaries, &options).await {
                Err(TestBedError::Component(ref c))
                    if attempt < START_ATTEMPTS && c.tail.contains("address already in use") =>
                {
                    eprintln!("testbed: port conflict on attempt {attempt}, retrying");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn start_once(
        binaries: &Binaries,
        options: &TestBedOptions,
    ) -> Result<Self, TestBedError> {
        let started = Instant::now();
        let keep = keep_dir();
        let dir = tempfile::Builder::new()
            .prefix("mqtt-e2e-")
            .disable_cleanup(keep)
            .tempdir()
            .map_err(|source| TestBedError::Io {
                action: "creating temp dir",
                path: std::env::temp_dir(),
                source,
            })?;
        let root = dir.path().to_path_buf();
        let layout = Layout::new(&root, ports3()?);
        let pki = ControlPlanePki::generate()?;
        let token = random_token()?;
        let server = layout.server_url();
        write(&layout.ca_cert, &pki.ca_cert_pem, false)?;
        write(&layout.serving_cert, &pki.serving_cert_pem, false)?;
        write(&layout.serving_key, &pki.serving_key_pem, true)?;
        write(&layout.sa_key, &pki.service_account_key_pem, true)?;
        write(&layout.sa_pub, &pki.service_account_public_pem, false)?;
        write(&layout.tokens, &kubeconfig::token_auth_file(&token), true)?;
        let kubeconfig_text = kubeconfig::render(&server, &layout.ca_cert, &token);
        write(&layout.kubeconfig, &kubeconfig_text, true)?;
        fs::create_dir_all(&layout.logs).map_err(|source| TestBedError::Io {
            action: "creating",
            path: layout.logs.clone(),
            source,
        })?;

        let group = ProcessGroup::start(if keep { None } else { Some(&root) })?;

        let phase = Instant::now();
        let etcd = group.spawn(
            "etcd",
            components::etcd_command(&binaries.etcd, &layout),
            &layout.logs.join("etcd.log"),
        )?;
        components::wait_port(&etcd, layout.etcd_port, Duration::from_secs(30)).await?;
        let etcd_time = phase.elapsed();

        let phase = Instant::now();
        let apiserver = group.spawn(
            "kube-apiserver",
            components::apiserver_command(&binaries.kube_apiserver, &layout),
            &layout.logs.join("kube-apiserver.log"),
        )?;
        let client = client_from(&layout.kubeconfig).await?;
        components::wait_ready(&apiserver, &client).await?;
        let apiserver_time = phase.elapsed();

        // CRDs
        let phase = Instant::now();
        let crds = match &options.crd_dir {
            Some(crd_dir) => {
                let docs = manifests::read_dir(crd_dir)?;
                let names = manifests::apply_crds(&client, &docs).await?;
                manifests::wait_established(&client, &names, Duration::from_secs(60)).await?;
                names
            }
            None => Vec::new(),
        };
        let crds_time = phase.elapsed();

        // kube-controller-manager, started after the CRDs so the garbage collector's first
        // discovery already sees them (it re-discovers only every 30 s).
        let phase = Instant::now();
        let controller_manager = if options.controllers.is_empty() {
            None
        } else {
            let kcm = group.spawn(
                "kube-controller-manager",
                components::controller_manager_command(
                    &binaries.kube_controller_manager,
                    &layout,
                    &options.controllers,
                ),
                &layout.logs.join("kube-controller-manager.log"),
            )?;
            if options
                .controllers
                .iter()
                .any(|c| c == "serviceaccount-token")
            {
                components::wait_service_account_token(&kcm, &client, "default").await?;
            }
            Some(kcm)
        };
        let kcm_time = phase.elapsed();

        let startup = StartupTimes {
            etcd: etcd_time,
            apiserver: apiserver_time,
            crds: crds_time,
            controller_manager: kcm_time,
            total: started.elapsed(),
        };
        eprintln!(
            "testbed: ready in {:.1} s (etcd {:.1} s, kube-apiserver {:.1} s, {} CRDs {:.1} s, \
             kube-controller-manager {:.1} s) at {server}, dir {}",
            startup.total.as_secs_f64(),
            startup.etcd.as_secs_f64(),
            startup.apiserver.as_secs_f64(),
            crds.len(),
            startup.crds.as_secs_f64(),
            startup.controller_manager.as_secs_f64(),
            root.display(),
        );
        Ok(Self {
            controller_manager,
            apiserver,
            etcd,
            group,
            extra: std::sync::Mutex::new(Vec::new()),
            binaries: binaries.clone(),
            server,
            kubeconfig: layout.kubeconfig.clone(),
            ca_cert: layout.ca_cert.clone(),
            crds,
            controllers: options.controllers.clone(),
            startup,
            namespaces: AtomicU32::new(0),
            dir,
        })
    }

    /// A new client for this bed, bound to the caller's tokio runtime (make one per test).
    pub async fn client(&self) -> Result<Client, TestBedError> {
        client_from(&self.kubeconfig).await
    }

    /// Path of a token kubeconfig for the bed (cluster-admin; for the operator, kubectl...).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The apiserver URL, `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// The CA certificate that signed the apiserver's serving certificate.
    pub fn ca_cert_path(&self) -> &Path {
        &self.ca_cert
    }

    /// The bed's private directory (certificates, etcd data, `logs/`). Later tests may put their
    /// own files here; it is removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The binaries the bed runs (e.g. `binaries().kubectl`).
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// Names of the CRDs installed at start.
    pub fn crds(&self) -> &[String] {
        &self.crds
    }

    /// How long start-up took, per phase.
    pub fn startup_times(&self) -> StartupTimes {
        self.startup
    }

    /// `(name, pid)` of every process the bed runs, including its watchdog and processes added
    /// with [`Self::spawn`].
    pub fn pids(&self) -> Vec<(String, u32)> {
        let mut out = vec![
            ("watchdog".to_string(), self.group.watchdog_pid()),
            (self.etcd.name().to_string(), self.etcd.pid()),
            (self.apiserver.name().to_string(), self.apiserver.pid()),
        ];
        if let Some(kcm) = &self.controller_manager {
            out.push((kcm.name().to_string(), kcm.pid()));
        }
        let extra = self.extra.lock().unwrap_or_else(|e| e.into_inner());
        out.extend(extra.iter().map(|pid| ("extra".to_string(), *pid)));
        out
    }

    /// Starts another process (the operator, a broker...) in the bed's process group, logging to
    /// `logs/<name>.log`. It dies with the handle, with the bed, or when the test process dies.
    pub fn spawn(&self, name: &str, command: Command) -> Result<ManagedProcess, TestBedError> {
        let log = self.dir.path().join("logs").join(format!("{name}.log"));
        let process = self.group.spawn(name, command, &log)?;
        self.extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(process.pid());
        Ok(process)
    }

    /// Creates a fresh namespace named `<prefix>-<n>` and, when the service-account controllers
    /// run, waits until its `default` ServiceAccount has a token (so Pods can be created).
    pub async fn namespace(&self, prefix: &str) -> Result<String, TestBedError> {
        let n = self.namespaces.fetch_add(1, Ordering::Relaxed);
        let mut base: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        base.truncate(50);
        let name = format!("{}-{n}", base.trim_matches('-'));
        let client = self.client().await?;
        let api: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        api.create(&PostParams::default(), &ns)
            .await
            .map_err(|source| TestBedError::Api {
                action: format!("creating namespace {name}"),
                source: Box::new(source),
            })?;
        if let Some(kcm) = &self.controller_manager {
            if self.controllers.iter().any(|c| c == "serviceaccount-token") {
                components::wait_service_account_token(kcm, &client, &name).await?;
            }
        }
        Ok(name)
    }

    /// Checks every bed process still runs; names the first that exited, with its log tail.
    pub fn check_alive(&self) -> Result<(), TestBedError> {
        let mut procs = vec![&self.etcd, &self.apiserver];
        procs.extend(self.controller_manager.as_ref());
        for p in procs {
            if let Some(status) = p.exited() {
                return Err(components::exited(p, &status).into());
            }
        }
        Ok(())
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        // One SIGKILL to the whole group (watchdog, servers, extra processes), then reap ours.
        self.group.kill_all();
        if let Some(kcm) = &self.controller_manager {
            kcm.kill();
        }
        self.apiserver.kill();
        self.etcd.kill();
        if keep_dir() {
            eprintln!("testbed: kept {}", self.dir.path().display());
        }
    }
}

/// `MQTT_OPERATOR_E2E_KEEP=1`: keep the bed's directory (logs, certificates) after teardown,
/// also when start-up fails.
fn keep_dir() -> bool {
    std::env::var_os("MQTT_OPERATOR_E2E_KEEP").is_some_and(|v| v == "1")
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), TestBedError> {
    fs::write(path, text).map_err(|source| TestBedError::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    })?;
    if private {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|source| {
            TestBedError::Io {
                action: "chmod 600",
                path: path.to_path_buf(),
                source,
            }
        })?;
    }
    Ok(())
}

fn random_token() -> Result<String, TestBedError> {
    let path = Path::new("/dev/urandom");
    let mut bytes = [0u8; 24];
    use std::io::Read;
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| TestBedError::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        })?;
    Ok(hex::encode(bytes))
}

fn ports3() -> Result<[u16; 3], TestBedError> {
    let p = process::free_ports(3)?;
    Ok([p[0], p[1], p[2]])
}

async fn client_from(kubeconfig: &Path) -> Result<Client, TestBedError> {
    // Pin the crypto provider: with several rustls backends enabled in one build (feature
    // unification across the workspace) rustls would refuse to pick one. Err = already set.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let err = |message: String| TestBedError::Client {
        path: kubeconfig.to_path_buf(),
        message,
    };
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| err(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    Client::try_from(config).map_err(|e| err(e.to_string()))
}
