//! Leader election and watched namespaces against the real API server.
//!
//! Operator instances run in-process, each on its own thread and runtime with its own client
//! (recording its requests, `e2e::traffic`) and identity, exactly as `mqtt-operator run` runs
//! them. "Killing" an instance shuts its runtime down mid-flight: no release of the Lease, as
//! when a Pod is OOM-killed, so the standby must wait out the Lease duration.
//!
//! Every instance here watches only its test's namespaces, so the tests of this binary, which
//! run in parallel on one bed, do not reconcile each other's objects.

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

const CONVERGE: Duration = Duration::from_secs(60);
const LEASE_NAME: &str = "mqtt-operator";
/// Shorter than the 15 s default so the takeover test stays quick; same proportions.
const LEASE_DURATION: Duration = Duration::from_secs(6);
const RENEW_DEADLINE: Duration = Duration::from_secs(4);
const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// One in-process operator.
struct Instance {
    identity: String,
    log: Log,
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
        bed: &'static e2e::TestBed,
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
        let name = identity.to_string();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("operator runtime");
            let (client, log) = rt
                .block_on(traffic::recording_client(bed.kubeconfig_path()))
                .expect("recording client");
            log_tx.send(log).expect("send log");
            rt.spawn(async move {
                if let Err(e) = controllers::run(client, options).await {
                    eprintln!("operator {name} stopped: {e}");
                }
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

#[tokio::test]
async fn exactly_one_instance_writes_and_the_standby_takes_over() {
    let Some(bed) = e2e::shared() else { return };
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("elect").await.expect("namespace");

    let a = Instance::start(bed, "op-a", &[&ns], Some(&ns));
    wait_holder(&client, &ns, "op-a", Duration::from_secs(30)).await;
    let b = Instance::start(bed, "op-b", &[&ns], Some(&ns));
    a.wait_leader_metric(1).await;
    // The standby serves /healthz (so its Pod is Ready) and says it does not lead.
    b.wait_leader_metric(0).await;

    apply_cluster(&client, &ns).await;
    wait_cluster(&client, &ns, "CertificatesReady", certificates_ready).await;
    // A couple of standby retry periods during which the leader is busy reconciling.
    tokio::time::sleep(RETRY_PERIOD * 2).await;
    assert!(
        !a.object_writes().is_empty(),
        "the leader reconciled the cluster"
    );
    assert_eq!(
        b.object_writes(),
        Vec::<Sent>::new(),
        "the standby wrote while another replica held the Lease"
    );
    assert_eq!(
        b.lease_writes(),
        Vec::<Sent>::new(),
        "the standby only reads a live Lease"
    );
    assert!(
        b.log.sent().iter().any(|s| s.path.contains("/leases/")),
        "the standby looked at the Lease"
    );

    // Kill the leader without releasing: the standby takes over once the Lease expired.
    a.kill();
    let took = wait_holder(
        &client,
        &ns,
        "op-b",
        LEASE_DURATION + RETRY_PERIOD + Duration::from_secs(10),
    )
    .await;
    eprintln!(
        "takeover after the leader died: {took:.1?} (lease {LEASE_DURATION:?}, retry {RETRY_PERIOD:?})"
    );
    assert!(
        took <= LEASE_DURATION + RETRY_PERIOD + Duration::from_secs(2),
        "takeover took {took:?}"
    );
    b.wait_leader_metric(1).await;
    let lease = Api::<Lease>::namespaced(client.clone(), &ns)
        .get(LEASE_NAME)
        .await
        .expect("Lease");
    let spec = lease.spec.expect("spec");
    assert_eq!(
        spec.lease_transitions,
        Some(2),
        "created by a, taken over by b"
    );
    assert_eq!(spec.lease_duration_seconds, Some(6));

    // The new leader reconciles a change.
    let api = Api::<MqttCluster>::namespaced(client.clone(), &ns);
    let changed = api
        .patch(
            "quickstart",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"limits": {"maxConnections": 12345}}})),
        )
        .await
        .expect("patch the cluster");
    let generation = changed.metadata.generation.expect("generation");
    let before = b.object_writes().len();
    wait_cluster(&client, &ns, "observedGeneration of the change", |c| {
        c.status
            .as_ref()
            .and_then(|s| s.observed_generation)
            .is_some_and(|g| g >= generation)
    })
    .await;
    assert!(
        b.object_writes().len() > before,
        "the new leader wrote the change"
    );
}

#[tokio::test]
async fn a_clean_stop_releases_the_lease_at_once() {
    let Some(bed) = e2e::shared() else { return };
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("release").await.expect("namespace");
    let a = Instance::start(bed, "op-a", &[&ns], Some(&ns));
    wait_holder(&client, &ns, "op-a", Duration::from_secs(30)).await;
    // The elector's release, as run() calls it when the controllers stop on SIGTERM.
    let mut config = LeaderElection::new(LEASE_NAME, &ns, "op-a");
    config.lease_duration = LEASE_DURATION;
    a.kill();
    controllers::election::Elector::new(client.clone(), config)
        .release()
        .await;
    assert_eq!(holder(&client, &ns).await, None, "released");
    let b = Instance::start(bed, "op-b", &[&ns], Some(&ns));
    let took = wait_holder(&client, &ns, "op-b", Duration::from_secs(30)).await;
    assert!(
        took < LEASE_DURATION,
        "a released Lease is taken at once, not after its duration: {took:?}"
    );
    drop(b);
}

#[tokio::test]
async fn a_cluster_in_an_unwatched_namespace_is_untouched() {
    let Some(bed) = e2e::shared() else { return };
    let client = bed.client().await.expect("client");
    let watched = bed.namespace("watched").await.expect("namespace");
    let unwatched = bed.namespace("unwatched").await.expect("namespace");
    let op = Instance::start(bed, "op-w", &[&watched], None);
    // Applied to the unwatched namespace first: had the operator seen it, it would be
    // reconciled before the watched one.
    apply_cluster(&client, &unwatched).await;
    apply_cluster(&client, &watched).await;
    wait_cluster(&client, &watched, "CertificatesReady", certificates_ready).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let untouched = Api::<MqttCluster>::namespaced(client.clone(), &unwatched)
        .get("quickstart")
        .await
        .expect("get");
    assert!(untouched.status.is_none(), "{:?}", untouched.status);
    let lp = ListParams::default().labels(&format!("{CLUSTER_LABEL}=quickstart"));
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &unwatched)
        .list(&lp)
        .await
        .expect("list");
    let secrets = Api::<Secret>::namespaced(client.clone(), &unwatched)
        .list(&lp)
        .await
        .expect("list");
    assert!(cms.items.is_empty() && secrets.items.is_empty());

    // Nothing it asked for reaches beyond the watched namespace, except the cluster-scoped
    // CRD lookup (monitoring discovery) the chart's ClusterRole keeps.
    let outside: Vec<_> = op
        .log
        .sent()
        .into_iter()
        .filter_map(|s| s.attributes())
        .filter(|a| {
            a.namespace.as_deref() != Some(watched.as_str())
                && a.resource != "customresourcedefinitions"
        })
        .collect();
    assert!(
        outside.is_empty(),
        "requests outside {watched}: {outside:#?}"
    );
}
