//! TopicPolicy edits reach the running brokers by push: the operator's controllers run
//! in-process, the pod stand-in runs the quickstart's three core pods as real `mqtt-broker`
//! processes, and each edit of the `sensors` TopicPolicy must be enforced on every node (a real
//! MQTT client sees it, and every node's `/readyz` reports the new rule set) and end in
//! `Applied=True` for the new generation and `AclApplied=True` on the cluster. Prints
//! apply → all nodes run it, and apply → `Applied=True`, p50/p99 over 20 edits.

#[path = "support/in_process.rs"]
mod in_process;
#[allow(dead_code)]
#[path = "support/mqtt.rs"]
mod mqtt;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crds::condition::{find, ACCEPTED, ACL_APPLIED, APPLIED, READY};
use crds::{MqttCluster, TopicPolicy};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::Client;

use e2e::manifests;
use e2e::standin::StandIn;
use e2e::wait::{self, Check};
use in_process::operator_running;
use mqtt::{connect, Creds, Mqtt};
use operator::controllers::cluster::push::{readyz, PushOptions};
use operator::render::names::{Names, HTTP_PORT};

const CLUSTER: &str = "quickstart";
const POLICY: &str = "sensors";
const CONVERGE: Duration = Duration::from_secs(180);
const EDITS: usize = 20;
/// The rule the edits add and remove: sensors may publish any telemetry of their site.
const SITE_TOPIC: &str = "sites/${label:site}/devices/+/telemetry/#";

/// How long a forged publish may trail its marker (different topics are not ordered).
const FORGED_GRACE_MS: u64 = 1000;

/// Publishes `forged` (sensor-02's topic) then a marker on sensor-01's own topic from every
/// publisher; true when the forged publishes arrive (allowed: with the marker or at most
/// [`FORGED_GRACE_MS`] after it), false when the markers arrive without them (refused).
async fn forged_delivered(sub: &mut Mqtt, publishers: &[Mqtt], round: usize) -> bool {
    let mut seen = Vec::new();
    let mut delivered = 0;
    for (n, p) in publishers.iter().enumerate() {
        let forged = format!("forged-{round}-{n}");
        let marker = format!("marker-{round}-{n}");
        p.publish("sites/lyon/devices/sensor-02/telemetry/t", &forged)
            .await;
        p.publish("sites/lyon/devices/sensor-01/telemetry/t", &marker)
            .await;
        assert!(
            sub.receive_noting(&marker, Duration::from_secs(10), &mut seen)
                .await
                .is_some(),
            "marker from node {n} not delivered"
        );
        // MQTT orders messages per topic only: forwarded between nodes, an allowed forged
        // publish may arrive just after the marker of another topic. Give it a short grace.
        let arrived = seen.contains(&forged)
            || sub
                .receive_noting(&forged, Duration::from_millis(FORGED_GRACE_MS), &mut seen)
                .await
                .is_some();
        delivered += usize::from(arrived);
    }
    assert!(
        delivered == 0 || delivered == publishers.len(),
        "round {round}: nodes disagree: forged delivered from {delivered}/{} nodes",
        publishers.len()
    );
    delivered == publishers.len()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn pod_addresses(client: &Client, ns: &str) -> BTreeMap<String, SocketAddr> {
    let selector = Names::new(CLUSTER)
        .selector_labels()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter_map(|p| {
            let ip = p.status?.pod_ip?.parse().ok()?;
            Some((p.metadata.name?, SocketAddr::new(ip, HTTP_PORT as u16)))
        })
        .collect()
}

/// The ACL revision every node reports, when they all report the same one.
async fn common_revision(nodes: &BTreeMap<String, SocketAddr>) -> Option<String> {
    let opts = PushOptions {
        timeout: Duration::from_millis(500),
        attempts: 1,
        retry_delay: Duration::ZERO,
    };
    let mut revs = Vec::new();
    for addr in nodes.values() {
        revs.push(readyz(*addr, &opts).await.ok()?.acl?);
    }
    revs.dedup();
    (revs.len() == 1).then(|| revs.remove(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_policy_edits_are_enforced_on_every_node_and_reported_applied() {
    let Some(bed) = e2e::shared() else { return };
    let Some(broker) = e2e::standin::broker_or_skip() else {
        return;
    };
    operator_running(bed);
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("acl-push").await.expect("namespace");
    let standin = StandIn::start(bed, &ns, broker).expect("stand-in");
    for m in manifests::quickstart().expect("quickstart") {
        manifests::apply(&client, &m, &ns).await.expect("apply");
    }
    let clusters = Api::<MqttCluster>::namespaced(client.clone(), &ns);
    let policies = Api::<TopicPolicy>::namespaced(client.clone(), &ns);

    // Ready, and the first rule set acknowledged by all three nodes.
    wait::until(
        "MqttCluster Ready=True and AclApplied=True with 3 nodes",
        CONVERGE,
        || async {
            if let Err(e) = bed.check_alive() {
                return Check::Fatal(e.to_string());
            }
            let Ok(c) = clusters.get(CLUSTER).await else {
                return Check::NotYet("no cluster".into());
            };
            let s = c.status.unwrap_or_default();
            let cond = |t| find(&s.conditions, t).map(|c| (c.status.clone(), c.message.clone()));
            match (cond(READY), cond(ACL_APPLIED)) {
                (Some((r, _)), Some((a, _))) if r == "True" && a == "True" => Check::Done(()),
                other => Check::NotYet(format!("{other:?}")),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let nodes = pod_addresses(&client, &ns).await;
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    let cluster = clusters.get(CLUSTER).await.expect("cluster");
    let acked = cluster.status.as_ref().and_then(|s| s.acl_revision.clone());
    assert_eq!(
        common_revision(&nodes).await,
        acked,
        "status.aclRevision is what every node runs"
    );

    // Clients: the gateway subscribes on node 1; sensor-01 publishes through every node.
    let gateway = Creds::issued(&client, &ns, "gateway-lyon").await;
    let sensor = Creds::issued(&client, &ns, "sensor-01").await;
    let names = Names::new(CLUSTER);
    let mut sub = connect(&names.pod_dns(1, &ns), &gateway, "gw")
        .await
        .expect("gateway connects");
    sub.subscribe("sites/lyon/devices/+/telemetry/#").await;
    let mut publishers = Vec::new();
    for n in 0..3 {
        publishers.push(
            connect(&names.pod_dns(n, &ns), &sensor, &format!("s1-{n}"))
                .await
                .expect("sensor-01 connects"),
        );
    }
    // The subscription reaches the other nodes asynchronously: wait for a first delivery.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut warmup = 0;
    'warm: loop {
        for (n, p) in publishers.iter().enumerate() {
            warmup += 1;
            let probe = format!("probe-{warmup}");
            p.publish("sites/lyon/devices/sensor-01/telemetry/t", &probe)
                .await;
            if sub
                .receive_noting(&probe, Duration::from_millis(500), &mut Vec::new())
                .await
                .is_none()
            {
                assert!(Instant::now() < deadline, "no delivery from node {n}");
                continue 'warm;
            }
        }
        break;
    }
    assert!(
        !forged_delivered(&mut sub, &publishers, 0).await,
        "the quickstart refuses sensor-01 publishing sensor-02's telemetry"
    );

    let original = policies.get(POLICY).await.expect("policy");
    let base_rules = serde_json::to_value(&original.spec.rules).expect("rules");
    let mut to_nodes = Vec::new();
    let mut to_applied = Vec::new();
    let mut previous = acked.clone();
    for edit in 1..=EDITS {
        let widen = edit % 2 == 1;
        let mut rules = base_rules.clone();
        if widen {
            rules
                .as_array_mut()
                .expect("rules array")
                .push(serde_json::json!({
                    "effect": "allow", "actions": ["publish"], "topics": [SITE_TOPIC]
                }));
        }
        let patch = serde_json::json!({"spec": {"rules": rules}});
        let t0 = Instant::now();
        let updated = policies
            .patch(POLICY, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch policy");
        let generation = updated.metadata.generation;
        // Every node runs a new rule set (polled every 20 ms: `wait::until` backs off to 1 s,
        // too coarse for the figure).
        let revision = loop {
            match common_revision(&nodes).await {
                Some(r) if Some(&r) != previous.as_ref() => break r,
                other => assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "edit {edit}: nodes not on a new ACL revision within 30 s: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        to_nodes.push(t0.elapsed());
        previous = Some(revision.clone());
        // Applied=True for this generation, and the cluster names the same revision.
        wait::until(
            &format!("edit {edit}: TopicPolicy Applied=True for generation {generation:?}"),
            Duration::from_secs(30),
            || async {
                let p = policies.get(POLICY).await.expect("policy");
                let s = p.status.unwrap_or_default();
                match find(&s.conditions, APPLIED) {
                    Some(c) if c.status == "True" && c.observed_generation == generation => {
                        Check::Done(())
                    }
                    other => Check::NotYet(format!("{other:?}")),
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        to_applied.push(t0.elapsed());
        let status = clusters.get(CLUSTER).await.expect("cluster").status;
        assert_eq!(
            status.and_then(|s| s.acl_revision),
            Some(revision),
            "edit {edit}"
        );
        // What the client sees on every node follows the edit.
        assert_eq!(
            forged_delivered(&mut sub, &publishers, edit).await,
            widen,
            "edit {edit} (widen={widen}) not enforced on every node"
        );
    }
    // An invalid edit: reported (Accepted=False, Applied=False/Invalid), and nothing changes on
    // the nodes: the policy's last good rules stay in force.
    let in_force = policies
        .get(POLICY)
        .await
        .expect("policy")
        .metadata
        .generation;
    let mut bad = base_rules.clone();
    bad[0]["topics"] = serde_json::json!(["sites/#/broken"]);
    let updated = policies
        .patch(
            POLICY,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"rules": bad}})),
        )
        .await
        .expect("patch policy");
    let generation = updated.metadata.generation;
    wait::until(
        "invalid edit: Accepted=False and Applied=False/Invalid",
        Duration::from_secs(30),
        || async {
            let s = policies
                .get(POLICY)
                .await
                .expect("policy")
                .status
                .unwrap_or_default();
            match (find(&s.conditions, ACCEPTED), find(&s.conditions, APPLIED)) {
                (Some(a), Some(p))
                    if a.status == "False"
                        && p.reason == "Invalid"
                        && p.observed_generation == generation =>
                {
                    Check::Done(())
                }
                other => Check::NotYet(format!("{other:?}")),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..10 {
        assert_eq!(
            common_revision(&nodes).await,
            previous,
            "an invalid edit changed what the nodes run"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = clusters
        .get(CLUSTER)
        .await
        .expect("cluster")
        .status
        .unwrap_or_default();
    assert!(
        status
            .acl_policies
            .iter()
            .any(|p| p.name == POLICY && Some(p.generation) == in_force),
        "the last good generation {in_force:?} stays listed: {:?}",
        status.acl_policies
    );
    // Enforcement unchanged: after an even number of edits the base rules are in force.
    assert!(!forged_delivered(&mut sub, &publishers, EDITS + 1).await);

    to_nodes.sort();
    to_applied.sort();
    eprintln!(
        "TopicPolicy edit -> every node runs it ({EDITS} edits, 3 nodes): p50 {:.0} ms, p99 {:.0} ms (target p99 < 2 s)",
        ms(percentile(&to_nodes, 0.5)),
        ms(percentile(&to_nodes, 0.99))
    );
    eprintln!(
        "TopicPolicy edit -> Applied=True: p50 {:.0} ms, p99 {:.0} ms",
        ms(percentile(&to_applied, 0.5)),
        ms(percentile(&to_applied, 0.99))
    );

    drop(publishers);
    drop(sub);
    clusters
        .delete(CLUSTER, &DeleteParams::default())
        .await
        .expect("delete cluster");
    drop(standin);
}
