//! `mqtt-operator run` as the chart deploys it, against the real API server: leader election,
//! watched namespaces, and the operator working under exactly the RBAC of `operator::rbac`
//! (enforced by the API server: the operator runs with a ServiceAccount token).
//!
//! Operator instances run in-process, each on its own thread and runtime with its own client
//! (recording its requests, `e2e::traffic`) and identity, exactly as `mqtt-operator run` runs
//! them. "Killing" an instance shuts its runtime down mid-flight: no release of the Lease, as
//! when a Pod is OOM-killed, so the standby must wait out the Lease duration.
//!
//! The tests run one at a time (one of them watches every namespace).

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

#[tokio::test]
async fn exactly_one_instance_writes_and_the_standby_takes_over() {
    let Some(bed) = e2e::shared() else { return };
    let _serial = serial().await;
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("elect").await.expect("namespace");

    let a = Instance::start(admin_config(bed).await, "op-a", &[&ns], Some(&ns));
    wait_holder(&client, &ns, "op-a", Duration::from_secs(30)).await;
    let b = Instance::start(admin_config(bed).await, "op-b", &[&ns], Some(&ns));
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
async fn a_leader_that_loses_the_lease_stops_with_an_error() {
    let Some(bed) = e2e::shared() else { return };
    let _serial = serial().await;
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("lost").await.expect("namespace");
    let a = Instance::start(admin_config(bed).await, "op-a", &[&ns], Some(&ns));
    wait_holder(&client, &ns, "op-a", Duration::from_secs(30)).await;
    a.wait_leader_metric(1).await;

    // Someone else (e.g. a replica that saw the Lease expire during a network partition)
    // writes itself in as the holder, with a fresh renewal.
    let leases = Api::<Lease>::namespaced(client.clone(), &ns);
    leases
        .patch(
            LEASE_NAME,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {
                "holderIdentity": "intruder",
                "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                    k8s_openapi::jiff::Timestamp::now()
                ),
            }})),
        )
        .await
        .expect("steal the Lease");
    let result = wait_ended(&a, RETRY_PERIOD * 2 + Duration::from_secs(10)).await;
    let error = result.expect_err("run() must fail when leadership is lost");
    assert!(
        error.contains("lost leadership") && error.contains("intruder"),
        "{error}"
    );
    assert_eq!(
        holder(&client, &ns).await.as_deref(),
        Some("intruder"),
        "the stopped leader did not write the Lease back"
    );
}

#[tokio::test]
async fn a_clean_stop_releases_the_lease_at_once() {
    let Some(bed) = e2e::shared() else { return };
    let _serial = serial().await;
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("release").await.expect("namespace");
    let a = Instance::start(admin_config(bed).await, "op-a", &[&ns], Some(&ns));
    wait_holder(&client, &ns, "op-a", Duration::from_secs(30)).await;
    // The elector's release, as run() calls it when the controllers stop on SIGTERM.
    let mut config = LeaderElection::new(LEASE_NAME, &ns, "op-a");
    config.lease_duration = LEASE_DURATION;
    a.kill();
    controllers::election::Elector::new(client.clone(), config)
        .release()
        .await;
    assert_eq!(holder(&client, &ns).await, None, "released");
    let b = Instance::start(admin_config(bed).await, "op-b", &[&ns], Some(&ns));
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
    let _serial = serial().await;
    let client = bed.client().await.expect("client");
    let watched = bed.namespace("watched").await.expect("namespace");
    let unwatched = bed.namespace("unwatched").await.expect("namespace");
    let op = Instance::start(admin_config(bed).await, "op-w", &[&watched], None);
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

/// Rules of `operator::rbac::RULES` (as `group resource verb`) that the quickstart run below
/// does not exercise, each with why the operator still needs it. The test fails when one of
/// these gets used (remove it here) or when a rule is neither used nor listed.
const NOT_EXERCISED: &[(&str, &str)] = &[
    // Bridges: the Bridge controller does not exist yet (README status).
    (
        "mqtt.operator.dev bridges get",
        "Bridge controller (not started)",
    ),
    (
        "mqtt.operator.dev bridges list",
        "Bridge controller (not started)",
    ),
    (
        "mqtt.operator.dev bridges watch",
        "Bridge controller (not started)",
    ),
    (
        "mqtt.operator.dev bridges patch",
        "Bridge controller (not started)",
    ),
    (
        "mqtt.operator.dev bridges/status get",
        "Bridge controller (not started)",
    ),
    (
        "mqtt.operator.dev bridges/status patch",
        "Bridge controller (not started)",
    ),
    // Objects are read through the watch caches and written by server-side apply (PATCH).
    (
        "mqtt.operator.dev mqttclusters get",
        "kubectl-style reads; the controllers use their caches",
    ),
    (
        "mqtt.operator.dev mqttclusters patch",
        "finalizers/annotations (revocation cleanup, rotate annotation)",
    ),
    (
        "mqtt.operator.dev deviceidentities get",
        "reads outside the watch cache",
    ),
    (
        "mqtt.operator.dev deviceidentities patch",
        "finalizers/annotations (revocation cleanup, rotate annotation)",
    ),
    (
        "mqtt.operator.dev topicpolicies get",
        "reads outside the watch cache",
    ),
    (
        "mqtt.operator.dev topicpolicies patch",
        "finalizers/annotations",
    ),
    (
        "mqtt.operator.dev mqttclusters/status get",
        "status reads outside the cache",
    ),
    (
        "mqtt.operator.dev deviceidentities/status get",
        "status reads outside the cache",
    ),
    (
        "mqtt.operator.dev topicpolicies/status get",
        "status reads outside the cache",
    ),
    // Checked by the OwnerReferencesPermissionEnforcement admission plugin (not on the bed),
    // never sent as a request.
    (
        "mqtt.operator.dev mqttclusters/finalizers update",
        "owner references with blockOwnerDeletion (admission plugin)",
    ),
    (
        "mqtt.operator.dev deviceidentities/finalizers update",
        "owner references with blockOwnerDeletion (admission plugin)",
    ),
    (
        "mqtt.operator.dev topicpolicies/finalizers update",
        "owner references with blockOwnerDeletion (admission plugin)",
    ),
    (
        "mqtt.operator.dev bridges/finalizers update",
        "owner references with blockOwnerDeletion (admission plugin)",
    ),
    // Children: create is an apply of a new object (PATCH); delete removes orphans.
    (
        " secrets create",
        "server-side apply creates through PATCH; kept for plain creates",
    ),
    (" secrets delete", "orphan cleanup after a spec change"),
    (
        " configmaps create",
        "server-side apply creates through PATCH",
    ),
    (
        " configmaps delete",
        "orphan cleanup (e.g. dashboard disabled)",
    ),
    (
        " services create",
        "server-side apply creates through PATCH",
    ),
    (" services delete", "orphan cleanup (listener removed)"),
    (
        "apps statefulsets create",
        "server-side apply creates through PATCH",
    ),
    ("apps statefulsets delete", "orphan cleanup"),
    (
        "policy poddisruptionbudgets create",
        "server-side apply creates through PATCH",
    ),
    ("policy poddisruptionbudgets delete", "orphan cleanup"),
    (
        "networking.k8s.io networkpolicies create",
        "server-side apply creates through PATCH",
    ),
    ("networking.k8s.io networkpolicies delete", "orphan cleanup"),
    (
        "policy poddisruptionbudgets list",
        "no PDB watch yet (policy/v1 vs v1beta1 by server version)",
    ),
    ("policy poddisruptionbudgets watch", "no PDB watch yet"),
    (
        "networking.k8s.io networkpolicies list",
        "no NetworkPolicy watch yet",
    ),
    (
        "networking.k8s.io networkpolicies watch",
        "no NetworkPolicy watch yet",
    ),
    // Pods: broker readiness during rolling restarts (no kubelet on the bed, not implemented).
    (" pods get", "rolling restarts wait for the restarted node"),
    (" pods list", "rolling restarts wait for the restarted node"),
    (
        " pods watch",
        "rolling restarts wait for the restarted node",
    ),
    // Events: a valid quickstart produces none.
    (
        " events create",
        "Invalid/Warning Events (core group, older servers)",
    ),
    (" events patch", "Event series (core group, older servers)"),
    (
        "events.k8s.io events create",
        "Invalid/Warning Events; the valid quickstart has none",
    ),
    ("events.k8s.io events patch", "Event series"),
    // The Prometheus Operator CRDs are absent on the bed (MonitoringReady=False, CrdMissing).
    (
        "monitoring.coreos.com servicemonitors get",
        "when the CRDs exist",
    ),
    (
        "monitoring.coreos.com servicemonitors list",
        "when the CRDs exist",
    ),
    (
        "monitoring.coreos.com servicemonitors watch",
        "when the CRDs exist",
    ),
    (
        "monitoring.coreos.com servicemonitors create",
        "when the CRDs exist",
    ),
    (
        "monitoring.coreos.com servicemonitors patch",
        "when the CRDs exist",
    ),
    (
        "monitoring.coreos.com servicemonitors delete",
        "when the CRDs exist",
    ),
    (
        "monitoring.coreos.com prometheusrules get",
        "when the CRDs exist",
    ),
    (
        "monitoring.coreos.com prometheusrules list",
        "when the CRDs exist",
    ),
    (
        "monitoring.coreos.com prometheusrules watch",
        "when the CRDs exist",
    ),
    (
        "monitoring.coreos.com prometheusrules create",
        "when the CRDs exist",
    ),
    (
        "monitoring.coreos.com prometheusrules patch",
        "when the CRDs exist",
    ),
    (
        "monitoring.coreos.com prometheusrules delete",
        "when the CRDs exist",
    ),
    // UNUSED: the monitoring CRDs are discovered through API discovery
    // (`/apis/monitoring.coreos.com/v1`, open to every authenticated user via system:discovery),
    // never by reading CustomResourceDefinitions. Candidates for removal from rbac.rs (and the
    // chart's ClusterRole, which then holds nothing when watchNamespaces is set).
    (
        "apiextensions.k8s.io customresourcedefinitions get",
        "unused (API discovery instead)",
    ),
    (
        "apiextensions.k8s.io customresourcedefinitions list",
        "unused (API discovery instead)",
    ),
    (
        "apiextensions.k8s.io customresourcedefinitions watch",
        "unused (API discovery instead)",
    ),
    // Leader election: the Lease is replaced (PUT), never patched.
    (
        "coordination.k8s.io leases patch",
        "kept for compatibility with controller-runtime-style tools",
    ),
];

/// Whether `operator::rbac`, as the chart grants it, allows `a` to an operator whose own
/// namespace is `operator_ns`, watching `watched` namespaces (all when empty).
fn granted(a: &traffic::Attributes, operator_ns: &str, watched: &[&str]) -> bool {
    use operator::rbac::{Scope, RULES};
    RULES.iter().any(|r| {
        let scope_ok = match r.scope {
            Scope::Watched if watched.is_empty() => true,
            Scope::Watched => a.namespace.as_deref().is_some_and(|n| watched.contains(&n)),
            Scope::Cluster => a.namespace.is_none(),
            Scope::OperatorNamespace => a.namespace.as_deref() == Some(operator_ns),
        };
        scope_ok
            && r.api_groups.contains(&a.group.as_str())
            && r.resources.contains(&a.resource.as_str())
            && r.verbs.contains(&a.verb.as_str())
    })
}

/// `default` ServiceAccount of `ns` bound to the chart's roles (for `watched` namespaces, or all
/// when empty); returns the operator's config authenticating with that ServiceAccount's token.
async fn service_account_config(
    bed: &e2e::TestBed,
    client: &Client,
    ns: &str,
    watched: &[&str],
) -> kube::Config {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{
        ClusterRole, ClusterRoleBinding, Role, RoleBinding, RoleRef, Subject,
    };
    use kube::api::PostParams;
    let name = format!("mqtt-operator-{ns}");
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: "default".into(),
        namespace: Some(ns.to_string()),
        ..Subject::default()
    };
    let pp = PostParams::default();
    Api::<ClusterRole>::all(client.clone())
        .create(
            &pp,
            &operator::rbac::cluster_role(&name, watched.is_empty()),
        )
        .await
        .expect("ClusterRole");
    let mut crb = ClusterRoleBinding {
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: name.clone(),
        },
        subjects: Some(vec![subject.clone()]),
        ..ClusterRoleBinding::default()
    };
    crb.metadata.name = Some(name.clone());
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&pp, &crb)
        .await
        .expect("ClusterRoleBinding");
    let mut roles = vec![operator::rbac::operator_namespace_role(&name, ns)];
    for w in watched {
        roles.push(operator::rbac::watched_namespace_role(&name, w));
    }
    for role in roles {
        let role_ns = role.metadata.namespace.clone().expect("namespace");
        Api::<Role>::namespaced(client.clone(), &role_ns)
            .create(&pp, &role)
            .await
            .expect("Role");
        let mut rb = RoleBinding {
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: name.clone(),
            },
            subjects: Some(vec![subject.clone()]),
            ..RoleBinding::default()
        };
        rb.metadata.name = Some(name.clone());
        rb.metadata.namespace = Some(role_ns.clone());
        Api::<RoleBinding>::namespaced(client.clone(), &role_ns)
            .create(&pp, &rb)
            .await
            .expect("RoleBinding");
    }

    let sa = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .get("default")
        .await
        .expect("ServiceAccount default");
    let secret_name = sa
        .secrets
        .and_then(|s| s.into_iter().next())
        .and_then(|r| r.name)
        .expect("ServiceAccount token Secret (bed.namespace waits for it)");
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(&secret_name)
        .await
        .expect("token Secret");
    let token = secret
        .data
        .and_then(|d| d.get("token").cloned())
        .expect("token");
    let token = String::from_utf8(token.0).expect("utf-8 token");
    // RBAC objects reach the authorizer through an informer: wait until they apply.
    for access in [
        e2e::access::Access {
            verb: "watch",
            group: "mqtt.operator.dev",
            resource: "mqttclusters",
            namespace: watched.last().copied(),
        },
        e2e::access::Access {
            verb: "update",
            group: "coordination.k8s.io",
            resource: "leases",
            namespace: Some(ns),
        },
    ] {
        e2e::access::wait_allowed(client, ns, "default", access, Duration::from_secs(30))
            .await
            .expect("RBAC in effect");
    }
    let mut config = admin_config(bed).await;
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..kube::config::AuthInfo::default()
    };
    config
}

/// Runs the operator with a ServiceAccount holding only the chart's RBAC (watching all
/// namespaces, or only the quickstart's), reconciles the quickstart, and checks every request
/// against `operator::rbac`.
async fn quickstart_under_rbac(bed: &'static e2e::TestBed, all_namespaces: bool) {
    let client = bed.client().await.expect("client");
    let op_ns = bed.namespace("rbac-operator").await.expect("namespace");
    let app_ns = bed.namespace("rbac-app").await.expect("namespace");
    let watched: Vec<&str> = if all_namespaces {
        Vec::new()
    } else {
        vec![app_ns.as_str()]
    };
    let config = service_account_config(bed, &client, &op_ns, &watched).await;
    let op = Instance::start(config, "op-rbac", &watched, Some(&op_ns));
    op.wait_leader_metric(1).await;
    for m in manifests::quickstart().expect("quickstart") {
        manifests::apply(&client, &m, &app_ns)
            .await
            .expect("apply the quickstart");
    }
    wait_cluster(&client, &app_ns, "CertificatesReady", certificates_ready).await;
    let lp = ListParams::default().labels(&format!("{CLUSTER_LABEL}=quickstart"));
    wait::until("the quickstart's StatefulSet", CONVERGE, || async {
        let sts =
            Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(client.clone(), &app_ns);
        match sts.list(&lp).await {
            Ok(l) if !l.items.is_empty() => Check::Done(()),
            Ok(_) => Check::NotYet("no StatefulSet".into()),
            Err(e) => Check::NotYet(e.to_string()),
        }
    })
    .await
    .expect("children");
    tokio::time::sleep(RETRY_PERIOD * 2).await;

    let sent = op.log.sent();
    let forbidden: Vec<_> = sent.iter().filter(|s| s.status == Some(403)).collect();
    assert!(
        forbidden.is_empty(),
        "the API server refused: {forbidden:#?}"
    );
    let used: std::collections::BTreeSet<traffic::Attributes> =
        sent.iter().filter_map(Sent::attributes).collect();
    let ungranted: Vec<_> = used
        .iter()
        .filter(|a| !granted(a, &op_ns, &watched))
        .collect();
    assert!(
        ungranted.is_empty(),
        "not granted by rbac.rs: {ungranted:#?}"
    );
    if !all_namespaces {
        // The weaker direction only for the default mode, which the list documents.
        return;
    }

    // Which rules the quickstart needs: requests cluster-wide or in this test's namespaces (this
    // instance also reconciles objects other tests of the binary left behind).
    let used_keys: std::collections::BTreeSet<String> = used
        .iter()
        .filter(|a| {
            a.namespace
                .as_deref()
                .is_none_or(|n| n == op_ns || n == app_ns)
        })
        .map(|a| format!("{} {} {}", a.group, a.resource, a.verb))
        .collect();
    let mut unexplained = Vec::new();
    let mut listed_but_used = Vec::new();
    for rule in operator::rbac::RULES {
        for group in rule.api_groups {
            for resource in rule.resources {
                for verb in rule.verbs {
                    let key = format!("{group} {resource} {verb}");
                    let listed = NOT_EXERCISED.iter().any(|(k, _)| *k == key);
                    match (used_keys.contains(&key), listed) {
                        (false, false) => unexplained.push(key),
                        (true, true) => listed_but_used.push(key),
                        _ => {}
                    }
                }
            }
        }
    }
    eprintln!("used: {used_keys:#?}");
    assert!(
        unexplained.is_empty(),
        "rules in rbac.rs neither used nor listed in NOT_EXERCISED: {unexplained:#?}"
    );
    assert!(
        listed_but_used.is_empty(),
        "used now, remove from NOT_EXERCISED: {listed_but_used:#?}"
    );
}

#[tokio::test]
async fn the_quickstart_reconciles_under_exactly_the_rbac_of_rbac_rs() {
    let Some(bed) = e2e::shared() else { return };
    let _serial = serial().await;
    quickstart_under_rbac(bed, true).await;
}

#[tokio::test]
async fn namespaced_rbac_suffices_when_watching_listed_namespaces() {
    let Some(bed) = e2e::shared() else { return };
    let _serial = serial().await;
    quickstart_under_rbac(bed, false).await;
}

/// The API server (1.20, and current ones: `format: int32` is not range-checked) stores an
/// MqttCluster whose `spec.core.replicas` does not fit the i32 it decodes into. Without a guard
/// the controller's initial list fails on it, and no cluster in its namespaces is reconciled.
#[tokio::test]
async fn an_undecodable_object_does_not_stall_the_others() {
    let Some(bed) = e2e::shared() else { return };
    let _serial = serial().await;
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("undecodable").await.expect("namespace");

    let quickstart = manifests::quickstart().expect("read the quickstart");
    let mut broken = manifests::first_of_kind(&quickstart, "MqttCluster")
        .expect("MqttCluster")
        .clone();
    broken.value["metadata"]["name"] = "broken".into();
    broken.value["spec"]["core"]["replicas"] = 3_000_000_000u64.into();
    manifests::apply(&client, &broken, &ns)
        .await
        .expect("the API server stores the out-of-range replicas");
    let typed = Api::<MqttCluster>::namespaced(client.clone(), &ns)
        .get("broken")
        .await;
    assert!(
        typed.is_err(),
        "the stored object must not decode as MqttCluster for this test to mean anything"
    );

    // Started after the broken object exists: it is in the controller's initial list.
    let _op = Instance::start(admin_config(bed).await, "op-guard", &[&ns], None);
    apply_cluster(&client, &ns).await;
    wait_cluster(&client, &ns, "CertificatesReady", certificates_ready).await;

    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), &ns);
    wait::until("Event Undecodable for broken", CONVERGE, || async {
        match events.list(&ListParams::default()).await {
            Ok(list) => match list.items.iter().find(|e| {
                e.reason.as_deref() == Some("Undecodable")
                    && e.involved_object.name.as_deref() == Some("broken")
            }) {
                Some(e) => Check::Done(e.message.clone().unwrap_or_default()),
                None => Check::NotYet(format!("{} events", list.items.len())),
            },
            Err(e) => Check::NotYet(e.to_string()),
        }
    })
    .await
    .expect("Undecodable Event");
}

/// The `mqtt-operator` binary of this build (built on demand, like `operator/tests/local_up.rs`
/// builds the broker): next to the test executable's `deps/` directory.
fn operator_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target profile directory");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(&cargo)
        .args(["build", "-p", "operator", "--bin", "mqtt-operator"])
        .current_dir(e2e::bed::repo_root())
        .status()
        .expect("run cargo build -p operator");
    assert!(status.success(), "cargo build -p operator failed");
    dir.join("mqtt-operator")
}

/// `mqtt-operator run --leader-elect ...` as the chart runs it, as a real process.
fn spawn_operator(
    bed: &e2e::TestBed,
    binary: &std::path::Path,
    ns: &str,
    port: u16,
) -> e2e::process::ManagedProcess {
    let mut command = std::process::Command::new(binary);
    command
        .args([
            "run".to_string(),
            format!("--metrics-bind-address=127.0.0.1:{port}"),
            "--log-format=text".to_string(),
            "--leader-elect".to_string(),
            format!("--lease-name={LEASE_NAME}"),
            format!("--lease-namespace={ns}"),
            "--lease-duration-seconds=6".to_string(),
            format!("--watch-namespaces={ns}"),
        ])
        .env("KUBECONFIG", bed.kubeconfig_path())
        .env("POD_NAME", "op-process")
        .env("POD_NAMESPACE", ns)
        .env("RUST_LOG", "info");
    bed.spawn("mqtt-operator", command)
        .expect("spawn mqtt-operator")
}

async fn wait_exit(p: &e2e::process::ManagedProcess, timeout: Duration) -> String {
    wait::until("mqtt-operator to exit", timeout, || async {
        match p.exited() {
            Some(status) => Check::Done(status),
            None => Check::NotYet("running".into()),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", p.log_tail(30)))
}

#[tokio::test]
async fn the_binary_releases_on_sigterm_and_exits_non_zero_when_the_lease_is_lost() {
    let Some(bed) = e2e::shared() else { return };
    let _serial = serial().await;
    let binary = operator_binary();
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("process").await.expect("namespace");

    let p = spawn_operator(bed, &binary, &ns, free_port().port());
    wait_holder(&client, &ns, "op-process", Duration::from_secs(30)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(p.pid()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = wait_exit(&p, Duration::from_secs(20)).await;
    assert_eq!(status, "exit status: 0", "{}", p.log_tail(30));
    assert_eq!(holder(&client, &ns).await, None, "released on SIGTERM");

    let p = spawn_operator(bed, &binary, &ns, free_port().port());
    wait_holder(&client, &ns, "op-process", Duration::from_secs(30)).await;
    Api::<Lease>::namespaced(client.clone(), &ns)
        .patch(
            LEASE_NAME,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {
                "holderIdentity": "intruder",
                "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                    k8s_openapi::jiff::Timestamp::now()
                ),
            }})),
        )
        .await
        .expect("steal the Lease");
    let status = wait_exit(&p, Duration::from_secs(20)).await;
    assert_ne!(
        status, "exit status: 0",
        "losing the Lease exits non-zero so the Deployment restarts the Pod"
    );
    assert!(
        p.log_tail(30).contains("lost leadership"),
        "{}",
        p.log_tail(30)
    );
}
