//! Bridges on the test bed: two MqttClusters in one namespace, `central` (3 nodes) and `edge`
//! (1 node), run as real broker processes by the pod stand-in; a Bridge on edge with
//! `remote.clusterRef: central`, presenting the certificate of a DeviceIdentity of central. The
//! operator's controllers run in this process (the MqttCluster controller in its own task, so the
//! test can stop it to take central down without the operator scaling it back).
//!
//! Checked: out-route telemetry and in-route commands arrive mapped at QoS 1; Bridge
//! `Ready=True`/`Connected=True`; editing the Bridge's mapping takes effect with no broker
//! restart (same pod uids, same pids, restartCount 0); central down → `Connected=False`, central
//! back → `Connected=True`, each within 5 s (measured times printed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crds::condition::{find, CONNECTED, READY};
use crds::{Bridge, MqttCluster};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use rumqttc::QoS;

#[path = "support/bridge_mqtt.rs"]
mod bridge_mqtt;

use bridge_mqtt::{connect, crosses, Device};
use e2e::standin::StandIn;
use e2e::wait::{self, Check};
use operator::controllers::{self, Context};
use operator::pki::{
    self, CaKind, CertificateAuthority, DeviceCertProfile, DeviceRef, OsRandomness,
};
use operator::render::names::Names;

const CENTRAL: &str = "central";
const EDGE: &str = "edge";
const BRIDGE: &str = "uplink";
const IDENTITY: &str = "edge-uplink";
/// Brokers start in order, each joining raft: generous on a loaded 2-core box.
const CONVERGE: Duration = Duration::from_secs(240);
/// The status bound of the issue: connect/disconnect visible within 5 s.
const STATUS_BOUND: Duration = Duration::from_secs(5);

fn cluster_yaml(name: &str, replicas: i32) -> MqttCluster {
    serde_yaml::from_str(&format!(
        "apiVersion: mqtt.operator.dev/v1alpha1\nkind: MqttCluster\nmetadata: {{name: {name}}}\n\
         spec: {{core: {{replicas: {replicas}, storage: {{size: 1Gi}}}}, listeners: {{mqtts: {{port: 8883, clientAuth: required}}}}, acl: {{defaultAction: allow}}}}\n"
    ))
    .expect("cluster yaml")
}

fn bridge_yaml(telemetry_prefix: &str) -> Bridge {
    serde_yaml::from_str(&format!(
        "apiVersion: mqtt.operator.dev/v1alpha1\nkind: Bridge\nmetadata: {{name: {BRIDGE}}}\n\
         spec:\n  clusterRef: {{name: {EDGE}}}\n  remote:\n    clusterRef: {{name: {CENTRAL}}}\n    tls: {{clientIdentityRef: {{name: {IDENTITY}}}}}\n\
         \x20 routes:\n  - {{direction: out, local: 'site/+/telemetry/#', remote: '{telemetry_prefix}/+/telemetry/#', qos: 1}}\n\
         \x20 - {{direction: in, local: 'site/+/cmd/#', remote: 'prod/acme/paris/+/cmd/#', qos: 1}}\n\
         \x20 buffer: {{maxMessages: 1000, maxAge: 10m}}\n"
    ))
    .expect("bridge yaml")
}

/// The controllers, in this process: the MqttCluster controller in a task of its own.
struct Operator {
    ctx: Arc<Context>,
    cluster: Option<tokio::task::JoinHandle<()>>,
    others: Vec<tokio::task::JoinHandle<()>>,
}

impl Operator {
    async fn start(client: Client) -> Self {
        let metrics = Arc::new(controllers::telemetry::Metrics::new());
        let ctx = Arc::new(Context::new(client, metrics));
        let others = vec![
            tokio::spawn(controllers::bridge::run(ctx.clone())),
            tokio::spawn(controllers::device::run(ctx.clone())),
            tokio::spawn(controllers::policy::run(ctx.clone())),
        ];
        let mut op = Operator {
            ctx,
            cluster: None,
            others,
        };
        op.start_cluster_controller();
        op
    }

    fn start_cluster_controller(&mut self) {
        self.cluster = Some(tokio::spawn(controllers::cluster::run(self.ctx.clone())));
    }

    fn stop_cluster_controller(&mut self) {
        if let Some(t) = self.cluster.take() {
            t.abort();
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop_cluster_controller();
        for t in &self.others {
            t.abort();
        }
    }
}

struct Bed {
    bed: &'static e2e::TestBed,
    standin: StandIn,
    client: Client,
    ns: String,
}

impl Bed {
    async fn wait_cluster_ready(&self, name: &str, replicas: i32) {
        let api = Api::<MqttCluster>::namespaced(self.client.clone(), &self.ns);
        let what = format!("MqttCluster {name} Ready=True with core.ready={replicas}");
        let started = Instant::now();
        wait::until(&what, CONVERGE, || async {
            if let Err(e) = self.bed.check_alive() {
                return Check::Fatal(e.to_string());
            }
            match api.get(name).await {
                Ok(c) => {
                    let s = c.status.clone().unwrap_or_default();
                    let ready = find(&s.conditions, READY).is_some_and(|r| r.status == "True");
                    let core = s.core.as_ref().map(|c| (c.ready, c.desired));
                    if ready && core == Some((replicas, replicas)) {
                        Check::Done(())
                    } else {
                        Check::NotYet(format!(
                            "core {core:?}, Ready {:?}",
                            find(&s.conditions, READY).map(|r| (&r.status, &r.message)),
                        ))
                    }
                }
                Err(e) => Check::NotYet(e.to_string()),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "bridges: {what} after {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    async fn secret_text(&self, name: &str, key: &str) -> String {
        let s = Api::<Secret>::namespaced(self.client.clone(), &self.ns)
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("Secret {name}: {e}"));
        let data = s.data.unwrap_or_default();
        String::from_utf8(
            data.get(key)
                .unwrap_or_else(|| panic!("{name}/{key}"))
                .0
                .clone(),
        )
        .expect("PEM")
    }

    /// A device certificate of `cluster` issued from its clients CA Secret with the operator's
    /// PKI code, and the cluster CA to verify the servers.
    async fn device(&self, cluster: &str, device_id: &str) -> Device {
        let names = Names::new(cluster);
        let ca = CertificateAuthority::from_pem(
            CaKind::Clients,
            &self.secret_text(&names.clients_ca(), "tls.crt").await,
            &self.secret_text(&names.clients_ca(), "tls.key").await,
        )
        .expect("clients CA");
        let device = DeviceRef::new(&self.ns, cluster, device_id).expect("device ref");
        let creds = pki::issue_device_certificate(
            &ca,
            &device,
            &DeviceCertProfile::default(),
            &mut OsRandomness,
            SystemTime::now(),
        )
        .expect("device certificate");
        Device {
            cert_pem: creds.certificate.pem(),
            key_pem: creds.key.to_pkcs8_pem(),
            ca_pem: self.secret_text(&names.cluster_ca(), "tls.crt").await,
        }
    }

    fn pod_host(&self, cluster: &str, n: i32) -> String {
        Names::new(cluster).pod_dns(n, &self.ns)
    }

    async fn bridge_status(&self) -> (String, String, String, Option<i64>) {
        let b = Api::<Bridge>::namespaced(self.client.clone(), &self.ns)
            .get(BRIDGE)
            .await
            .expect("Bridge");
        let s = b.status.unwrap_or_default();
        let cond = |t: &str| {
            find(&s.conditions, t).map_or_else(
                || "absent".to_string(),
                |c| format!("{} {} ({})", c.status, c.reason, c.message),
            )
        };
        (
            cond(READY),
            cond(CONNECTED),
            s.last_error.unwrap_or_default(),
            s.forwarded,
        )
    }

    /// Waits until the Bridge's `type_` condition has `status` (for generation `generation` when
    /// given); returns the time it took.
    async fn wait_condition(
        &self,
        type_: &str,
        status: &str,
        generation: Option<i64>,
        timeout: Duration,
    ) -> Duration {
        let api = Api::<Bridge>::namespaced(self.client.clone(), &self.ns);
        let started = Instant::now();
        let what = format!("Bridge {BRIDGE} {type_}={status}");
        wait::until(&what, timeout, || async {
            match api.get(BRIDGE).await {
                Ok(b) => {
                    let s = b.status.unwrap_or_default();
                    let c = find(&s.conditions, type_);
                    let gen_ok = generation.is_none_or(|g| s.observed_generation == Some(g));
                    match c {
                        Some(c) if c.status == status && gen_ok => Check::Done(()),
                        other => Check::NotYet(format!(
                            "{type_}: {:?}, observedGeneration {:?}",
                            other.map(|c| (&c.status, &c.reason, &c.message)),
                            s.observed_generation
                        )),
                    }
                }
                Err(e) => Check::NotYet(e.to_string()),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        started.elapsed()
    }

    /// When the Bridge's `Connected` condition becomes `status` (polled every 100 ms, 30 s max).
    async fn connected_becomes(&self, status: &str) -> Instant {
        let api = Api::<Bridge>::namespaced(self.client.clone(), &self.ns);
        poll_until(
            &format!("Bridge {BRIDGE} Connected={status}"),
            Duration::from_secs(30),
            || async {
                let b = api.get(BRIDGE).await.ok()?;
                let s = b.status?;
                find(&s.conditions, CONNECTED)
                    .filter(|c| c.status == status)
                    .map(|_| ())
            },
        )
        .await
    }

    /// (pod name → (uid, restartCount)) of every pod, and the broker pids.
    async fn pods(&self) -> (BTreeMap<String, (String, i32)>, Vec<u32>) {
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default())
            .await
            .expect("pods");
        let by_name = pods
            .items
            .into_iter()
            .map(|p| {
                let restarts = p
                    .status
                    .and_then(|s| s.container_statuses)
                    .unwrap_or_default()
                    .iter()
                    .map(|c| c.restart_count)
                    .sum();
                (
                    p.metadata.name.unwrap_or_default(),
                    (p.metadata.uid.unwrap_or_default(), restarts),
                )
            })
            .collect();
        let mut pids: Vec<u32> = self.standin.processes().iter().map(|p| p.pid).collect();
        pids.sort_unstable();
        (by_name, pids)
    }
}

/// The DeviceIdentity of central the bridge presents; the DeviceIdentity controller issues its
/// `<name>-tls` Secret from central's clients CA.
async fn bridge_identity(bed: &Bed) {
    let id: serde_json::Value = serde_yaml::from_str(&format!(
        "apiVersion: mqtt.operator.dev/v1alpha1\nkind: DeviceIdentity\nmetadata: {{name: {IDENTITY}}}\n\
         spec: {{clusterRef: {{name: {CENTRAL}}}, deviceId: {IDENTITY}}}\n"
    ))
    .expect("identity yaml");
    e2e::manifests::apply(
        &bed.client,
        &e2e::manifests::Manifest {
            path: "identity.yaml".into(),
            value: id,
        },
        &bed.ns,
    )
    .await
    .expect("apply DeviceIdentity");
    let secrets = Api::<Secret>::namespaced(bed.client.clone(), &bed.ns);
    let name = format!("{IDENTITY}-tls");
    let started = Instant::now();
    wait::until(
        "the DeviceIdentity controller issues the bridge's Secret",
        Duration::from_secs(60),
        || async {
            match secrets.get_opt(&name).await {
                Ok(Some(s)) if s.data.as_ref().is_some_and(|d| d.contains_key("tls.key")) => {
                    Check::Done(())
                }
                other => Check::NotYet(format!("{:?}", other.map(|s| s.is_some()))),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "bridges: {name} issued by the operator after {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

async fn scale_central(bed: &Bed, replicas: i32) {
    Api::<StatefulSet>::namespaced(bed.client.clone(), &bed.ns)
        .patch(
            &Names::new(CENTRAL).core(),
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
        )
        .await
        .expect("scale central");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_between_two_clusters_maps_both_ways_reconfigures_without_restart_and_reports_connection(
) {
    let Some(bed) = e2e::shared() else {
        return;
    };
    let Some(broker) = e2e::standin::broker_or_skip() else {
        return;
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let client = bed.client().await.expect("client");
    let mut operator = Operator::start(client.clone()).await;
    let ns = bed.namespace("bridges").await.expect("namespace");
    let standin = StandIn::start(bed, &ns, broker).expect("stand-in");
    let b = Bed {
        bed,
        standin,
        client: client.clone(),
        ns: ns.clone(),
    };
    let clusters = Api::<MqttCluster>::namespaced(client.clone(), &ns);
    for (name, replicas) in [(CENTRAL, 3), (EDGE, 1)] {
        clusters
            .create(&PostParams::default(), &cluster_yaml(name, replicas))
            .await
            .expect("create cluster");
    }
    b.wait_cluster_ready(EDGE, 1).await;
    b.wait_cluster_ready(CENTRAL, 3).await;
    bridge_identity(&b).await;

    // Apply the Bridge: rendered, pushed/reloaded, acknowledged and connected.
    let bridges = Api::<Bridge>::namespaced(client.clone(), &ns);
    let applied = Instant::now();
    bridges
        .create(&PostParams::default(), &bridge_yaml("prod/acme/paris"))
        .await
        .expect("create Bridge");
    b.wait_condition(READY, "True", Some(1), Duration::from_secs(60))
        .await;
    b.wait_condition(CONNECTED, "True", None, Duration::from_secs(60))
        .await;
    let apply_to_connected = applied.elapsed();
    eprintln!(
        "bridges: Bridge applied -> Ready=True, Connected=True in {:.2} s; status {:?}",
        apply_to_connected.as_secs_f64(),
        b.bridge_status().await
    );

    // Out route: edge device telemetry → central subscriber, mapped, QoS 1.
    let edge_dev = b.device(EDGE, "sensor-s1").await;
    let central_dev = b.device(CENTRAL, "dashboard").await;
    let edge_pub = connect(&b.pod_host(EDGE, 0), &edge_dev, "edge-pub").await;
    let mut central_sub = connect(&b.pod_host(CENTRAL, 1), &central_dev, "central-sub").await;
    central_sub.subscribe("prod/acme/paris/+/telemetry/#").await;
    let (topic, qos, took) = crosses(
        &mut central_sub,
        &edge_pub,
        "site/s1/telemetry/temp",
        "t",
        Duration::from_secs(30),
    )
    .await
    .expect("edge telemetry reaches central through the bridge");
    assert_eq!(topic, "prod/acme/paris/s1/telemetry/temp");
    assert_eq!(qos, QoS::AtLeastOnce, "delivered at QoS 1");
    eprintln!(
        "bridges: out route delivered mapped in {:.2} s",
        took.as_secs_f64()
    );

    // In route: central command → edge subscriber, mapped, QoS 1.
    let mut edge_sub = connect(&b.pod_host(EDGE, 0), &edge_dev, "edge-sub").await;
    edge_sub.subscribe("site/+/cmd/#").await;
    let central_pub = connect(&b.pod_host(CENTRAL, 2), &central_dev, "central-pub").await;
    let (topic, qos, took) = crosses(
        &mut edge_sub,
        &central_pub,
        "prod/acme/paris/s1/cmd/reboot",
        "c",
        Duration::from_secs(30),
    )
    .await
    .expect("central command reaches edge through the bridge");
    assert_eq!(topic, "site/s1/cmd/reboot");
    assert_eq!(qos, QoS::AtLeastOnce, "delivered at QoS 1");
    eprintln!(
        "bridges: in route delivered mapped in {:.2} s",
        took.as_secs_f64()
    );

    // Counters from the nodes reach the status.
    let counted = Instant::now();
    wait::until(
        "Bridge status.forwarded > 0",
        Duration::from_secs(15),
        || async {
            let (_, _, _, forwarded) = b.bridge_status().await;
            if forwarded.unwrap_or(0) > 0 {
                Check::Done(())
            } else {
                Check::NotYet(format!("forwarded {forwarded:?}"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "bridges: counters in status after {:.2} s",
        counted.elapsed().as_secs_f64()
    );

    // Edit the mapping: new prefix in effect, no broker restarted.
    let (pods_before, pids_before) = b.pods().await;
    assert_eq!(
        pids_before.len(),
        4,
        "3 central + 1 edge brokers: {pids_before:?}"
    );
    let edited = Instant::now();
    let mut new = bridge_yaml("prod/acme/lyon");
    let current = bridges.get(BRIDGE).await.expect("Bridge");
    new.metadata.resource_version = current.metadata.resource_version;
    bridges
        .replace(BRIDGE, &PostParams::default(), &new)
        .await
        .expect("edit Bridge");
    central_sub
        .unsubscribe("prod/acme/paris/+/telemetry/#")
        .await;
    central_sub.subscribe("prod/acme/lyon/+/telemetry/#").await;
    let acknowledged = b
        .wait_condition(READY, "True", Some(2), Duration::from_secs(60))
        .await;
    let (topic, qos, _) = crosses(
        &mut central_sub,
        &edge_pub,
        "site/s1/telemetry/temp",
        "e",
        Duration::from_secs(30),
    )
    .await
    .expect("edge telemetry arrives with the new prefix");
    assert_eq!(topic, "prod/acme/lyon/s1/telemetry/temp");
    assert_eq!(qos, QoS::AtLeastOnce);
    eprintln!(
        "bridges: edit -> Ready=True (acknowledged by every node) {:.2} s, -> new mapping delivered {:.2} s",
        acknowledged.as_secs_f64(),
        edited.elapsed().as_secs_f64()
    );
    let (pods_after, pids_after) = b.pods().await;
    assert_eq!(
        pods_after, pods_before,
        "same pods (uids), same restart counts"
    );
    assert!(
        pods_after.values().all(|(_, restarts)| *restarts == 0),
        "{pods_after:?}"
    );
    assert_eq!(pids_after, pids_before, "no broker process restarted");

    // Central down: stop the operator's MqttCluster controller (it would scale central back),
    // scale central's StatefulSet to 0; the stand-in stops its brokers.
    operator.stop_cluster_controller();
    scale_central(&b, 0).await;
    let central_pids: Vec<u32> = b
        .standin
        .processes()
        .iter()
        .filter(|p| p.pod.starts_with(&Names::new(CENTRAL).core()))
        .map(|p| p.pid)
        .collect();
    assert_eq!(central_pids.len(), 3);
    let gone = e2e::process::wait_gone(&central_pids, Duration::from_secs(60));
    assert!(gone.is_empty(), "central brokers still running: {gone:?}");
    let gone_at = Instant::now();
    let edge_node = b
        .standin
        .processes()
        .iter()
        .find(|p| p.pod == Names::new(EDGE).pod(0))
        .map(|p| std::net::SocketAddr::from((p.ip, 9090)))
        .expect("edge broker");
    let node_down = node_connected(edge_node, false).await;
    let status_down = b.connected_becomes("False").await;
    eprintln!(
        "bridges: central brokers gone -> edge node reports disconnected {:.2} s -> Connected=False {:.2} s (operator lag {:.2} s); status {:?}",
        (node_down - gone_at).as_secs_f64(),
        (status_down - gone_at).as_secs_f64(),
        (status_down - node_down).as_secs_f64(),
        b.bridge_status().await
    );

    // Central back: from the first central broker Ready (the bridge's remote endpoint is the
    // client Service, which resolves to the ready pods) to the edge node reconnecting (its
    // backoff, at most 5 s) and to Connected=True.
    scale_central(&b, 3).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let selector = format!("app.kubernetes.io/instance={CENTRAL}");
    let first_ready = poll_until("a central broker Ready again", CONVERGE, || async {
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .ok()?;
        list.items
            .iter()
            .any(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .then_some(())
    })
    .await;
    let node_up = node_connected(edge_node, true).await;
    let status_up = b.connected_becomes("True").await;
    eprintln!(
        "bridges: central back: first broker Ready -> edge node reconnected {:.2} s -> Connected=True {:.2} s (operator lag {:.2} s); status {:?}",
        (node_up - first_ready).as_secs_f64(),
        (status_up - first_ready).as_secs_f64(),
        (status_up - node_up).as_secs_f64(),
        b.bridge_status().await
    );
    operator.start_cluster_controller();

    // The operator's share of the 5 s: from the brokers' own state to the status.
    let lag_down = status_down - node_down;
    let lag_up = status_up - node_up;
    assert!(
        status_down - gone_at <= STATUS_BOUND,
        "Connected=False {:?} after central went away (bound {STATUS_BOUND:?})",
        status_down - gone_at
    );
    assert!(
        lag_down <= STATUS_BOUND && lag_up <= STATUS_BOUND,
        "status lag behind the brokers: down {lag_down:?}, up {lag_up:?} (bound {STATUS_BOUND:?})"
    );
}

/// Polls `probe` every 100 ms until it yields, at most `timeout`; returns when it did.
async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Instant
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    while started.elapsed() < timeout {
        if probe().await.is_some() {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// When the edge node's `/readyz` reports the bridge `connected == want` (polled every 100 ms).
async fn node_connected(addr: std::net::SocketAddr, want: bool) -> Instant {
    let opts = operator::controllers::cluster::push::PushOptions {
        timeout: Duration::from_secs(1),
        attempts: 1,
        retry_delay: Duration::ZERO,
    };
    poll_until(
        &format!("edge node {addr} reporting connected={want}"),
        Duration::from_secs(30),
        || async {
            let body = operator::controllers::cluster::push::readyz_json(addr, &opts)
                .await
                .ok()?;
            (body["bridges"][BRIDGE]["connected"].as_bool() == Some(want)).then_some(())
        },
    )
    .await
}
