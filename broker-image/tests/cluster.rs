//! Three-node raft cluster from rendered config directories: cross-node delivery at QoS 0/1/2,
//! hot reload of the ACL on all nodes (propagation measured), failover with zero loss.

mod fixture;

use std::time::{Duration, Instant};

use fixture::client::{connect, Client, ConnectOpts};
use fixture::{acl_bin, acl_revision, user_policy, Cluster, Options};
use rumqttc::{Packet, QoS};

async fn device(cluster: &Cluster, node: usize, id: &str, client_id: &str, clean: bool) -> Client {
    let leaf = cluster.pki.clients_ca.device(id);
    let mut o = ConnectOpts::new(
        cluster.nodes[node].mqtts,
        client_id,
        &cluster.pki.cluster_ca.cert_pem,
        Some(&leaf),
    );
    o.clean = clean;
    connect(o)
        .await
        .unwrap_or_else(|e| panic!("{client_id} on node {node}: {e}"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_cluster() {
    let mut cluster = Cluster::start(Options {
        nodes: 3,
        ..Options::default()
    });

    // --- cross-node publish -> subscribe at QoS 0, 1, 2 ---
    let mut sub = device(&cluster, 1, "sub", "sub-1", true).await;
    assert_eq!(sub.subscribe("x/#", QoS::ExactlyOnce).await, 2);
    let publisher = device(&cluster, 0, "pub", "pub-0", true).await;
    // Routes propagate through raft; wait until a probe message arrives.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        publisher
            .client
            .publish("x/probe", QoS::AtMostOnce, false, "p")
            .await
            .unwrap();
        if sub
            .expect_publish("x/probe", Duration::from_millis(300))
            .await
            .is_some()
        {
            break;
        }
        assert!(Instant::now() < deadline, "no cross-node route after 10 s");
    }
    for (qos, name) in [
        (QoS::AtMostOnce, "q0"),
        (QoS::AtLeastOnce, "q1"),
        (QoS::ExactlyOnce, "q2"),
    ] {
        publisher
            .client
            .publish(format!("x/{name}"), qos, false, name)
            .await
            .unwrap();
        let got = sub
            .expect_publish(&format!("x/{name}"), Duration::from_secs(5))
            .await;
        assert_eq!(
            got.as_deref(),
            Some(name.as_bytes()),
            "QoS {qos:?} across nodes"
        );
    }
    // And from node 2 to a subscriber on node 0.
    let mut sub0 = device(&cluster, 0, "sub", "sub-0", true).await;
    assert_eq!(sub0.subscribe("y/#", QoS::AtLeastOnce).await, 1);
    let pub2 = device(&cluster, 2, "pub", "pub-2", true).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        pub2.client
            .publish("y/1", QoS::AtLeastOnce, false, "v")
            .await
            .unwrap();
        if sub0
            .expect_publish("y/1", Duration::from_millis(300))
            .await
            .is_some()
        {
            break;
        }
        assert!(Instant::now() < deadline, "node 2 -> node 0 route missing");
    }

    // --- hot reload: 100 ACL changes pushed to all nodes; a client observes each ---
    // Change k allows publishing to `reload/<k>` only; the observer (connected to node 2) checks
    // that its MQTT 3.1.1 publish to reload/<k> reaches a watcher subscribed to `reload/#`
    // through node 1... Observed per change: the time from the start of the push until a probe
    // publish is delivered.
    let mut watcher = device(&cluster, 1, "watcher", "watcher", true).await;
    let rules = |k: usize| {
        let probe = format!("{{effect: allow, actions: [publish], topics: [\"reload/{k}\"]}}");
        let docs = [
            user_policy(
                "watcher",
                &["watcher"],
                &["{effect: allow, actions: [subscribe], topics: [\"reload/#\"]}"],
            ),
            user_policy("prober", &["prober"], &[&probe]),
            user_policy(
                "pubsub",
                &["pub", "sub"],
                &["{effect: allow, actions: [publish, subscribe], topics: [\"#\"]}"],
            ),
        ];
        acl_bin(false, &docs.concat())
    };
    for i in 0..3 {
        assert_eq!(cluster.push(i, "/v1/acl", &rules(0)).0, 200);
    }
    assert_eq!(watcher.subscribe("reload/#", QoS::AtMostOnce).await, 0);
    let prober = device(&cluster, 2, "prober", "prober", true).await;
    let connections_before: Vec<f64> = (0..3)
        .map(|i| cluster.metric(i, "mqtt_connections").unwrap())
        .collect();
    let mut latencies = Vec::new();
    for k in 1..=100 {
        let body = rules(k);
        let started = Instant::now();
        for i in 0..3 {
            let (code, text) = cluster.push(i, "/v1/acl", &body);
            assert_eq!(code, 200, "{text}");
        }
        // Enforcement observed: reload/<k> now passes, reload/<k-1> is now denied.
        let topic = format!("reload/{k}");
        let deadline = started + Duration::from_secs(5);
        loop {
            prober
                .client
                .publish(topic.clone(), QoS::AtMostOnce, false, "k")
                .await
                .unwrap();
            if watcher
                .expect_publish(&topic, Duration::from_millis(50))
                .await
                .is_some()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "change {k} not enforced after 5 s"
            );
        }
        latencies.push(started.elapsed());
        prober
            .client
            .publish(format!("reload/{}", k - 1), QoS::AtMostOnce, false, "old")
            .await
            .unwrap();
        let stale = watcher
            .expect_publish(&format!("reload/{}", k - 1), Duration::from_millis(30))
            .await;
        assert!(stale.is_none(), "change {k}: old topic still allowed");
    }
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    eprintln!("ACL propagation over 100 changes x 3 nodes: p50 {p50:?}, p99 {p99:?}");
    assert!(p99 < Duration::from_secs(2), "p99 {p99:?}");
    for i in 0..3 {
        let (_, ready) = cluster.get(i, "/readyz");
        assert!(
            ready.contains(&format!(
                "\"aclRevision\":\"{}\"",
                acl_revision(&rules(100))
            )),
            "node {i}: {ready}"
        );
    }
    // No connection dropped during reloads.
    let connections_after: Vec<f64> = (0..3)
        .map(|i| cluster.metric(i, "mqtt_connections").unwrap())
        .collect();
    assert_eq!(connections_before, connections_after);
    assert!(
        watcher.events.try_recv().map(|e| e.is_ok()).unwrap_or(true),
        "watcher connection dropped"
    );

    // --- failover: persistent QoS 1 sessions, kill node 0 while publishing 1000 messages ---
    let allow_all = acl_bin(true, "");
    for i in 0..3 {
        assert_eq!(cluster.push(i, "/v1/acl", &allow_all).0, 200);
    }
    let mut survivor = device(&cluster, 1, "sub", "survivor", false).await;
    assert_eq!(survivor.subscribe("fail/#", QoS::AtLeastOnce).await, 1);
    let mut survivor2 = device(&cluster, 2, "sub", "survivor2", false).await;
    assert_eq!(survivor2.subscribe("fail/#", QoS::AtLeastOnce).await, 1);
    let sender = device(&cluster, 2, "pub", "sender", false).await;
    // Warm the route.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        sender
            .client
            .publish("fail/warm", QoS::AtLeastOnce, false, "w")
            .await
            .unwrap();
        if survivor
            .expect_publish("fail/warm", Duration::from_millis(300))
            .await
            .is_some()
        {
            break;
        }
        assert!(Instant::now() < deadline, "failover route missing");
    }
    let total = 1000usize;
    let send = {
        let client = sender.client.clone();
        tokio::spawn(async move {
            for n in 0..total {
                client
                    .publish("fail/m", QoS::AtLeastOnce, false, n.to_string())
                    .await
                    .unwrap();
                if n % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    cluster.kill(0);
    send.await.unwrap();
    for (name, sub) in [("survivor", &mut survivor), ("survivor2", &mut survivor2)] {
        let mut seen = std::collections::BTreeSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while seen.len() < total && tokio::time::Instant::now() < deadline {
            if let Some(Ok(Packet::Publish(p))) = sub
                .next_matching(
                    Duration::from_secs(1),
                    |p| matches!(p, Packet::Publish(p) if p.topic == "fail/m"),
                )
                .await
            {
                seen.insert(
                    String::from_utf8_lossy(&p.payload)
                        .parse::<usize>()
                        .unwrap(),
                );
            }
        }
        assert_eq!(
            seen.len(),
            total,
            "{name} lost {} messages",
            total - seen.len()
        );
    }
    // The killed node rejoins and serves again, once the survivors elected a new leader (a node
    // restarted while its peers still name it leader exits and is restarted by the kubelet).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader = cluster.metric(1, "mqtt_raft_leader_id").unwrap_or(0.0);
        if leader != 0.0 && leader != 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new raft leader after 30 s (sees {leader})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.spawn(0);
    cluster.wait_ready(0, Duration::from_secs(90));
    let mut back = device(&cluster, 0, "sub", "back", true).await;
    assert_eq!(back.subscribe("again/#", QoS::AtLeastOnce).await, 1);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        sender
            .client
            .publish("again/1", QoS::AtLeastOnce, false, "b")
            .await
            .unwrap();
        if back
            .expect_publish("again/1", Duration::from_millis(300))
            .await
            .is_some()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rejoined node does not receive cross-node messages"
        );
    }
    assert_eq!(cluster.metric(0, "mqtt_raft_joined"), Some(1.0));
}
