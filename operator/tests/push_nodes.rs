//! The MqttCluster controller's push (`controllers::cluster::push`) against real broker
//! processes: three nodes started by `mqtt-operator local up` on loopback, then the controller's
//! node-level functions push a new ACL (enforced: a publish refused before is delivered), a
//! revoked set (enforced: the revoked device can no longer connect), report the revisions the
//! brokers compute themselves, are refused with a wrong token, and report an unreachable or
//! silent node within a bounded time. Prints the push-to-3-nodes acknowledgement time over 20
//! pushes.

#[path = "support/local_cluster.rs"]
mod local_cluster;
#[path = "support/tool.rs"]
mod tool;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use contract::config::{RevokedSet, CONFIG_VERSION};
use operator::controllers::cluster::acknowledge::{acknowledge, NodeState, Revisions};
use operator::controllers::cluster::build::short_hash;
use operator::controllers::cluster::push::{
    readyz, sync_node, sync_nodes, Payloads, PushOptions, PushToken,
};
use operator::pki::CertificateInfo;

use local_cluster::{lines_of, run_printed, wait_line, LocalUp};

/// The compiled plan of a manifests directory (what `local up` compiles).
fn plan_of(dir: &Path) -> operator::local::plan::Plan {
    let files = operator::manifest::load_paths(&[dir.to_path_buf()]).unwrap();
    let docs = operator::manifest::parse_files(&files).unwrap();
    operator::local::plan::plan(&docs).unwrap()
}

fn revoked(serials: &[String]) -> (Vec<u8>, String) {
    let serials: BTreeSet<String> = serials.iter().cloned().collect();
    let joined: Vec<&str> = serials.iter().map(String::as_str).collect();
    let set = RevokedSet {
        version: CONFIG_VERSION.into(),
        revision: short_hash(joined.join(",").as_bytes()),
        serials,
    };
    (serde_json::to_vec(&set).unwrap(), set.revision)
}

/// Payloads for `acl` with the given revoked serials, the node's own trust bundle and `token`.
fn payloads(
    plan: &operator::local::plan::Plan,
    serials: &[String],
    trust: &[u8],
    token: &str,
) -> Payloads {
    let (revoked, revoked_revision) = revoked(serials);
    Payloads {
        acl: plan.acl.encode(),
        revoked,
        trust: trust.to_vec(),
        bridges: Vec::new(),
        revisions: Revisions {
            acl: Some(plan.acl.rules.revision().to_owned()),
            revoked: Some(revoked_revision),
            trust: Some(short_hash(trust)),
            bridges: None,
        },
        token: PushToken::new(token),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_real_brokers() {
    if tool::require("mosquitto_sub", "mosquitto-clients").is_none()
        || tool::require("mosquitto_pub", "mosquitto-clients").is_none()
    {
        return;
    }
    let mut up = tokio::task::spawn_blocking(LocalUp::start).await.unwrap();
    let ports = up.http_ports();
    assert_eq!(ports.len(), 3, "{}", up.seen.join("\n"));
    let nodes: BTreeMap<String, SocketAddr> = ports
        .iter()
        .enumerate()
        .map(|(n, p)| (format!("core-{n}"), SocketAddr::from(([127, 0, 0, 1], *p))))
        .collect();
    let names: Vec<String> = nodes.keys().cloned().collect();
    let opts = PushOptions::default();
    let token = std::fs::read_to_string(up.state.join("push-token"))
        .unwrap()
        .trim()
        .to_owned();
    let trust = std::fs::read(up.state.join("nodes/core-0/config/tls/clients-ca.crt")).unwrap();

    // Revision identity: what local up deployed is reported as the rule set's own revision, and
    // the trust bundle's revision is its short SHA-256, exactly as the controller computes them.
    let original = plan_of(&up.manifests);
    for addr in nodes.values() {
        let r = readyz(*addr, &opts).await.unwrap();
        assert_eq!(r.acl.as_deref(), Some(original.acl.rules.revision()));
        assert_eq!(r.trust, Some(short_hash(&trust)));
    }

    // The gateway subscribes; sensor-01's own telemetry is delivered, sensor-02's is refused.
    let sub_cmd = up.printed("mosquitto_sub ")[0].clone();
    let pubs = up.printed("mosquitto_pub ");
    let (pub_ok, pub_refused) = (pubs[0].clone(), pubs[1].clone());
    let mut sub = Command::new("sh")
        .arg("-c")
        .arg(&sub_cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sub_out = lines_of(&mut sub);
    up.guard.children.push(sub);
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(run_printed(&pub_ok).status.success(), "{pub_ok}");
        if wait_line(&sub_out, &mut received, Duration::from_millis(500), |l| {
            l.ends_with("hello from sensor-01")
        })
        .is_some()
        {
            break;
        }
        assert!(Instant::now() < deadline, "allowed publish not delivered");
    }

    // The edited policy (sensors may publish any telemetry of their site), compiled like the
    // controller compiles it, in a directory local up does not watch.
    let edited_dir = up.state.parent().unwrap().join("edited");
    local_cluster::copy_dir(&up.manifests, &edited_dir);
    let policies = edited_dir.join("20-policies.yaml");
    let text = std::fs::read_to_string(&policies).unwrap();
    let edited_text = text.replacen(
        "      qos: [0, 1]\n",
        "      qos: [0, 1]\n    - effect: allow\n      actions: [publish]\n      topics: [\"sites/${label:site}/devices/+/telemetry/#\"]\n",
        1,
    );
    assert_ne!(edited_text, text);
    std::fs::write(&policies, edited_text).unwrap();
    let edited = plan_of(&edited_dir);
    assert_ne!(edited.acl.rules.revision(), original.acl.rules.revision());

    // Wrong token: refused with 401, reported (not a panic, not a hang), nothing changes.
    let wrong = payloads(&edited, &[], &trust, "not-the-token");
    let started = Instant::now();
    let state = sync_node(nodes["core-0"], &wrong, &opts).await;
    match &state {
        NodeState::Unreachable(why) => {
            assert!(why.contains("HTTP 401"), "{why}");
            assert!(!why.contains(&token), "the token leaked into: {why}");
        }
        other => panic!("a wrong token was accepted: {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a 401 is not retried"
    );
    let r = readyz(nodes["core-0"], &opts).await.unwrap();
    assert_eq!(r.acl.as_deref(), Some(original.acl.rules.revision()));

    // The right token: every node acknowledges the new revisions; the refused publish is now
    // delivered.
    let new = payloads(&edited, &[], &trust, &token);
    let reports = sync_nodes(&nodes, &new, &opts).await;
    for (node, state) in &reports {
        assert_eq!(
            state,
            &NodeState::Reported(new.revisions.clone()),
            "{node} after the push"
        );
    }
    assert!(acknowledge(&names, &new.revisions, &reports).complete);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let _ = run_printed(&pub_refused);
        if wait_line(&sub_out, &mut received, Duration::from_millis(300), |l| {
            l.ends_with("not allowed")
        })
        .is_some()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pushed ACL not enforced within 10 s: {received:?}"
        );
    }

    // Revocation: sensor-01's serial pushed in the revoked set; it can no longer connect.
    let cert = std::fs::read_to_string(up.state.join("devices/sensor-01/tls.crt")).unwrap();
    let serial = CertificateInfo::from_pem(&cert).unwrap().serial.to_string();
    let revoking = payloads(&edited, &[serial], &trust, &token);
    let reports = sync_nodes(&nodes, &revoking, &opts).await;
    assert!(
        acknowledge(&names, &revoking.revisions, &reports).complete,
        "{reports:?}"
    );
    let out = run_printed(&pub_ok);
    assert!(
        !out.status.success(),
        "a revoked device still publishes: {out:?}"
    );

    // Bridges: the cluster's rendered bridges.json goes with `PUT /v1/bridges`; every node
    // confirms its revision in /readyz and runs the bridge (not connected: nothing listens on
    // the remote port), without gating the ACL acknowledgement.
    let bridge: crds::Bridge = serde_yaml::from_str(
        "apiVersion: mqtt.operator.dev/v1alpha1\nkind: Bridge\nmetadata: {name: up, namespace: local}\n\
         spec: {clusterRef: {name: local}, remote: {host: 127.0.0.1, port: 1}, routes: [{direction: out, local: 'a/#', remote: 'b/#'}]}\n",
    )
    .unwrap();
    let material = operator::render::bridge::RemoteMaterial {
        host: "127.0.0.1".into(),
        port: 1,
        ca_pem: String::from_utf8(trust.clone()).unwrap(),
        client_cert_pem: None,
        client_key_pem: None,
        username: None,
        password: None,
    };
    let (set, skipped) =
        operator::render::bridge::render_bridges("local", "local", &[(bridge, material)]);
    assert!(skipped.is_empty(), "{skipped:?}");
    let bridging = payloads(&edited, &[], &trust, &token).with_bridges(&set);
    let reports = sync_nodes(&nodes, &bridging, &opts).await;
    for (node, state) in &reports {
        match state {
            NodeState::Reported(r) => {
                assert_eq!(r.bridges.as_deref(), Some(set.revision.as_str()), "{node}")
            }
            other => panic!("{node}: {other:?}"),
        }
    }
    assert!(acknowledge(&names, &bridging.revisions, &reports).complete);
    for addr in nodes.values() {
        let body = operator::controllers::cluster::push::readyz_json(*addr, &opts)
            .await
            .unwrap();
        assert_eq!(body["bridges"]["up"]["connected"], false, "{body}");
    }

    // A bridges.json the broker refuses (400) leaves the node reported, not unreachable: the
    // ACL acknowledgement stands and the node keeps its bridges revision.
    let mut refused = bridging.clone();
    refused.bridges = b"{not json".to_vec();
    refused.revisions.bridges = Some("never".into());
    let state = sync_node(nodes["core-0"], &refused, &opts).await;
    match &state {
        NodeState::Reported(r) => {
            assert_eq!(r.bridges.as_deref(), Some(set.revision.as_str()));
            assert_eq!(r.acl, refused.revisions.acl);
        }
        other => panic!("a refused bridges.json made the node {other:?}"),
    }

    // Unreachable nodes: a closed port fails fast; a silent one within the bounded retries.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let quick = PushOptions {
        timeout: Duration::from_millis(500),
        attempts: 2,
        retry_delay: Duration::from_millis(100),
    };
    let started = Instant::now();
    let NodeState::Unreachable(why) = sync_node(closed, &new, &quick).await else {
        panic!("a closed port was reported reachable");
    };
    assert!(why.contains("connect"), "{why}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let started = Instant::now();
    let NodeState::Unreachable(why) = sync_node(silent.local_addr().unwrap(), &new, &quick).await
    else {
        panic!("a silent node was reported reachable");
    };
    let took = started.elapsed();
    assert!(why.contains("no answer within 500 ms"), "{why}");
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_millis(2500),
        "two 500 ms attempts took {took:?}"
    );
    let mut with_silent = reports.clone();
    with_silent.insert("core-3".into(), NodeState::Unreachable(why));
    let mut four = names.clone();
    four.push("core-3".into());
    assert!(!acknowledge(&four, &revoking.revisions, &with_silent).complete);

    // Figures: 20 pushes of alternating rule sets to the 3 nodes, each until all acknowledge.
    let variants = [
        payloads(&original, &[], &trust, &token),
        payloads(&edited, &[], &trust, &token),
    ];
    let mut times = Vec::new();
    for i in 0..20 {
        let p = &variants[i % 2];
        let t0 = Instant::now();
        let reports = sync_nodes(&nodes, p, &opts).await;
        times.push(t0.elapsed());
        assert!(
            acknowledge(&names, &p.revisions, &reports).complete,
            "push {i}: {reports:?}"
        );
    }
    times.sort();
    eprintln!(
        "push ACL to 3 nodes until every node acknowledges (20 pushes): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 < 2 s)",
        percentile(&times, 0.5).as_secs_f64() * 1000.0,
        percentile(&times, 0.99).as_secs_f64() * 1000.0,
        times.last().unwrap().as_secs_f64() * 1000.0
    );
    drop(silent);
}
