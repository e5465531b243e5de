//! `mqtt-operator run` as the chart deploys it, against the real API server: leader election,
//! watched namespaces, and the operator working under exactly the RBAC of `operator::rbac`
//! (enforced by the API server: the operator runs with a ServiceAccount token).
//!
//! Operator instances run in-process, each on its own thread and runtime with its own client
//! (recording its requests, `e2e::traffic`) and identity, exactly as `mqtt-operator run` runs
//! them. "Killing" an instance shuts its runtime down mid-flight: no release of the Lease, as
//! when a Pod is OOM-killed, so the standby must wait out the Lease duration.
//!
//! The tests run one at a time (one of them watches every namespace): `election` (Lease),
//! `watch` (watched namespaces, undecodable objects), `rbac` (the API server enforcing
//! `operator::rbac`). This file holds the in-process instance and the shared waits.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crds::condition::{find, CERTIFICATES_READY};
use crds::MqttCluster;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::Client;

use e2e::manifests;
use e2e::traffic::{self, Log, Sent};
use e2e::wait::{self, Check};
use operator::controllers::election::LeaderElection;
use operator::controllers::{self, RunOptions};
use operator::render::names::CLUSTER_LABEL;

mod election;
mod rbac;
mod watch;

const CONVERGE: Duration = Duration::from_secs(60);
const LEASE_NAME: &str = "mqtt-operator";
/// Shorter than the 15 s default so the takeover test stays quick; same proportions.
const LEASE_DURATION: Duration = Duration::from_secs(6);
const RENEW_DEADLINE: Duration = Duration::from_secs(4);
const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// The tests of this binary run one at a time: the RBAC test's operator watches every
/// namespace, and would otherwise reconcile the other tests' clusters.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// One in-process operator.
struct Instance {
    identity: String,
    log: Log,
    /// How `controllers::run` ended, once it has.
    ended: std::sync::Arc<std::sync::Mutex<Option<Result<(), String>>>>,
    addr: SocketAddr,
    /// Dropping it (or sending) shuts the instance's runtime down.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr")
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

impl Instance {
    fn start(
        config: kube::Config,
        identity: &str,
        namespaces: &[&str],
        election: Option<&str>,
    ) -> Self {
        init_logs();
        let addr = free_port();
        let options = RunOptions {
            listen: addr,
            watch_namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            leader_election: election.map(|lease_ns| LeaderElection {
                lease_duration: LEASE_DURATION,
                renew_deadline: RENEW_DEADLINE,
                retry_period: RETRY_PERIOD,
                ..LeaderElection::new(LEASE_NAME, lease_ns, identity)
            }),
        };
        let (stop, stopped) = mpsc::channel::<()>();
        let (log_tx, log_rx) = mpsc::channel::<Log>();
        let ended = std::sync::Arc::new(std::sync::Mutex::new(None));
        let ended_in_thread = ended.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("operator runtime");
            let (client, log) = {
                let _guard = rt.enter();
                traffic::recording_client_from(config).expect("recording client")
            };
            log_tx.send(log).expect("send log");
            rt.spawn(async move {
                let result = controllers::run(client, options)
                    .await
                    .map_err(|e| e.to_string());
                *ended_in_thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
            });
            // Until told to stop, or until the Instance is dropped.
            let _ = stopped.recv();
            rt.shutdown_background();
        });
        let log = log_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("instance client built");
        Self {
            identity: identity.to_string(),
            log,
            ended,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops the instance abruptly (no Lease release).
    fn kill(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("instance thread");
        }
    }

    /// Writes other than to the leader-election Lease.
    fn object_writes(&self) -> Vec<Sent> {
        self.log.writes(|s| !s.path.contains("/leases"))
    }

    fn lease_writes(&self) -> Vec<Sent> {
        self.log.writes(|s| s.path.contains("/leases"))
    }

    /// GET `path` on the instance's HTTP server: (status line, body).
    fn http_get(&self, path: &str) -> Result<(String, String), std::io::Error> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        Ok((
            head.lines().next().unwrap_or_default().to_string(),
            body.to_string(),
        ))
    }

    /// Waits until `/metrics` reports `mqtt_operator_leader <value>` (and `/healthz` is ok).
    async fn wait_leader_metric(&self, value: u8) {
        let want = format!("mqtt_operator_leader {value}");
        wait::until(
            &format!("{} reports {want}", self.identity),
            Duration::from_secs(30),
            || async {
                match (self.http_get("/healthz"), self.http_get("/metrics")) {
                    (Ok((h, hb)), Ok((_, m)))
                        if h.contains("200") && hb == "ok" && m.contains(&want) =>
                    {
                        Check::Done(())
                    }
                    (h, m) => Check::NotYet(format!(
                        "healthz {:?}, leader line {:?}",
                        h.map(|x| x.0),
                        m.map(|x| x
                            .1
                            .lines()
                            .find(|l| l.starts_with("mqtt_operator_leader "))
                            .map(str::to_string))
                    )),
                }
            },
        )
        .await
        .expect("leader metric");
    }
}

/// Waits until the instance's `controllers::run` returned; returns how it ended.
async fn wait_ended(instance: &Instance, timeout: Duration) -> Result<(), String> {
    wait::until(
        &format!("{} to stop", instance.identity),
        timeout,
        || async {
            match instance
                .ended
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
            {
                Some(r) => Check::Done(r),
                None => Check::NotYet("still running".into()),
            }
        },
    )
    .await
    .expect("instance stopped")
}

/// The bed's admin client configuration.
async fn admin_config(bed: &e2e::TestBed) -> kube::Config {
    let kc = kube::config::Kubeconfig::read_from(bed.kubeconfig_path()).expect("kubeconfig");
    kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("config")
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn holder(client: &Client, ns: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(LEASE_NAME)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

async fn wait_holder(client: &Client, ns: &str, who: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    wait::until(&format!("Lease held by {who}"), timeout, || async {
        match holder(client, ns).await {
            Some(h) if h == who => Check::Done(start.elapsed()),
            other => Check::NotYet(format!("holder {other:?}")),
        }
    })
    .await
    .expect("Lease holder")
}

async fn apply_cluster(client: &Client, ns: &str) {
    let quickstart = manifests::quickstart().expect("read the quickstart");
    let cluster = manifests::first_of_kind(&quickstart, "MqttCluster").expect("MqttCluster");
    manifests::apply(client, cluster, ns)
        .await
        .expect("apply MqttCluster");
}

async fn wait_cluster(
    client: &Client,
    ns: &str,
    what: &str,
    ok: impl Fn(&MqttCluster) -> bool,
) -> MqttCluster {
    let api = Api::<MqttCluster>::namespaced(client.clone(), ns);
    wait::until(what, CONVERGE, || async {
        match api.get("quickstart").await {
            Ok(c) if ok(&c) => Check::Done(c),
            Ok(c) => Check::NotYet(format!("status: {:?}", c.status)),
            Err(e) => Check::NotYet(e.to_string()),
        }
    })
    .await
    .expect("cluster condition")
}

fn certificates_ready(c: &MqttCluster) -> bool {
    c.status.as_ref().is_some_and(|s| {
        find(&s.conditions, CERTIFICATES_READY).is_some_and(|c| c.status == "True")
    })
}
