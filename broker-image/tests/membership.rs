//! Raft membership over `POST /v1/raft/remove`: a 3-node cluster shrinks its voter set to one
//! node, which then serves alone with the two others killed (it could not with 3 voters).

mod fixture;

use std::time::{Duration, Instant};

use fixture::client::{connect, ConnectOpts};
use fixture::{http, Cluster, Options, TOKEN};
use rumqttc::QoS;

fn remove(cluster: &Cluster, via: usize, body: &str, token: Option<&str>) -> (u16, String) {
    http(
        cluster.nodes[via].http,
        "POST",
        "/v1/raft/remove",
        token,
        body.as_bytes(),
    )
    .unwrap()
}

fn voters(cluster: &Cluster, i: usize) -> Option<u64> {
    let (_, body) = cluster.get(i, "/readyz");
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()?
        .get("raftVoters")?
        .as_u64()
}

/// Waits (10 s at most) until node `i` reports `want` voters.
fn wait_voters(cluster: &Cluster, i: usize, want: u64) -> Duration {
    let start = Instant::now();
    loop {
        let seen = voters(cluster, i);
        if seen == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "node {i}: raftVoters {seen:?}, want {want}; log:\n{}",
            cluster.log_tail(i)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_voters_shrinks_the_quorum() {
    let mut cluster = Cluster::start(Options {
        nodes: 3,
        ..Options::default()
    });
    for i in 0..3 {
        wait_voters(&cluster, i, 3);
    }
    let id = |i: usize| cluster.nodes[i].id;

    // Refusals: token, body, own id.
    assert_eq!(remove(&cluster, 0, r#"{"id": 3}"#, None).0, 401);
    assert_eq!(remove(&cluster, 0, r#"{"id": 3}"#, Some("wrong")).0, 401);
    assert_eq!(remove(&cluster, 0, r#"{"nope": 3}"#, Some(TOKEN)).0, 400);
    assert_eq!(remove(&cluster, 0, r#"{"id": 0}"#, Some(TOKEN)).0, 400);
    let own = format!(r#"{{"id": {}}}"#, id(0));
    assert_eq!(remove(&cluster, 0, &own, Some(TOKEN)).0, 400);
    assert_eq!(voters(&cluster, 0), Some(3), "nothing removed by a refusal");

    // Remove the third node, through the first (which follows WrongLeader to the leader).
    let started = Instant::now();
    let third = format!(r#"{{"id": {}}}"#, id(2));
    let (code, body) = remove(&cluster, 0, &third, Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    let took = started.elapsed();
    let seen0 = wait_voters(&cluster, 0, 2);
    let seen1 = wait_voters(&cluster, 1, 2);
    eprintln!(
        "membership: remove answered in {:.0} ms; raftVoters=2 seen after {:.1} s / {:.1} s",
        took.as_secs_f64() * 1000.0,
        seen0.as_secs_f64(),
        seen1.as_secs_f64()
    );
    // Idempotent: again, and an id that never existed.
    assert_eq!(remove(&cluster, 1, &third, Some(TOKEN)).0, 200);
    assert_eq!(remove(&cluster, 0, r#"{"id": 42}"#, Some(TOKEN)).0, 200);
    assert_eq!(voters(&cluster, 0), Some(2));

    // Remove the second node too: node 0 alone is the whole voter set.
    let second = format!(r#"{{"id": {}}}"#, id(1));
    let (code, body) = remove(&cluster, 0, &second, Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    wait_voters(&cluster, 0, 1);

    // With both others gone, node 0 still commits: connecting, subscribing and routing go
    // through raft proposals, which need a quorum of the voter set.
    cluster.kill(1);
    cluster.kill(2);
    let ca = cluster.pki.cluster_ca.cert_pem.clone();
    let leaf = cluster.pki.clients_ca.device("solo");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sub = loop {
        match connect(ConnectOpts::new(
            cluster.nodes[0].mqtts,
            "solo-sub",
            &ca,
            Some(&leaf),
        ))
        .await
        {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "node 0 alone: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    assert_eq!(sub.subscribe("solo/#", QoS::AtLeastOnce).await, 1);
    let publisher = connect(ConnectOpts::new(
        cluster.nodes[0].mqtts,
        "solo-pub",
        &ca,
        Some(&leaf),
    ))
    .await
    .expect("publisher on node 0 alone");
    let mut got = None;
    while got.is_none() && Instant::now() < deadline {
        publisher
            .client
            .publish("solo/x", QoS::AtLeastOnce, false, "alone")
            .await
            .unwrap();
        got = sub
            .expect_publish("solo/x", Duration::from_millis(500))
            .await;
    }
    assert_eq!(got.as_deref(), Some(&b"alone"[..]), "node 0 alone delivers");
    let (code, ready) = cluster.get(0, "/readyz");
    assert_eq!(code, 200, "node 0 ready alone: {ready}");
}
