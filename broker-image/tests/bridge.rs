//! Bridges between real broker clusters on 127.0.0.1: an edge (1 node) and a central cluster
//! (3 nodes, or 1 where the scenario does not need raft): mapped topics at QoS 1 both ways, hot
//! reload by push, no loss across a 10 s outage of the whole central cluster, counted overflow,
//! and no loops or duplicates when clusters bridge both ways.

mod fixture;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use contract::bridge::{
    render_bridges, BridgeConfig, BridgeSet, BufferConfig, RemoteConfig, RouteConfig,
    RouteDirection,
};
use contract::config::CONFIG_VERSION;
use fixture::client::{connect, Client, ConnectOpts};
use fixture::{Cluster, Options};
use rumqttc::{Packet, QoS};

async fn device(cluster: &Cluster, node: usize, id: &str, clean: bool) -> Client {
    let leaf = cluster.pki.clients_ca.device(id);
    let mut o = ConnectOpts::new(
        cluster.nodes[node].mqtts,
        id,
        &cluster.pki.cluster_ca.cert_pem,
        Some(&leaf),
    );
    o.clean = clean;
    connect(o)
        .await
        .unwrap_or_else(|e| panic!("{id} on node {node}: {e}"))
}

fn route(direction: RouteDirection, local: &str, remote: &str) -> RouteConfig {
    RouteConfig {
        direction,
        local: local.into(),
        remote: remote.into(),
        qos: 1,
        retain: false,
    }
}

/// A bridge from any cluster to node `node` of `remote`, with a client certificate from the
/// remote's clients CA.
fn bridge_to(
    name: &str,
    remote: &Cluster,
    node: usize,
    routes: Vec<RouteConfig>,
    max_messages: u64,
) -> BridgeConfig {
    let identity = remote.pki.clients_ca.device(&format!("bridge-{name}"));
    BridgeConfig {
        name: name.into(),
        remote: RemoteConfig {
            host: "127.0.0.1".into(),
            port: remote.nodes[node].mqtts,
            ca_pem: remote.pki.cluster_ca.cert_pem.clone(),
            client_cert_pem: Some(identity.cert_pem),
            client_key_pem: Some(identity.key_pem),
            username: None,
            password: None,
            client_id: format!("bridge-{name}"),
            session_expiry_secs: 3600,
        },
        routes,
        buffer: BufferConfig {
            max_messages,
            max_age_secs: 3600,
        },
    }
}

fn set(revision: &str, bridges: Vec<BridgeConfig>) -> Vec<u8> {
    render_bridges(&BridgeSet {
        version: CONFIG_VERSION.into(),
        revision: revision.into(),
        bridges,
    })
}

fn push_bridges(cluster: &Cluster, body: &[u8]) {
    let (code, text) = cluster.push(0, "/v1/bridges", body);
    assert_eq!(code, 200, "{text}");
}

/// A labelled series value from node `i`'s `/metrics`, e.g. `mqtt_bridge_dropped_total`.
fn bridge_metric(cluster: &Cluster, i: usize, name: &str, bridge: &str) -> Option<f64> {
    let (_, text) = cluster.get(i, "/metrics");
    let prefix = format!("{name}{{bridge=\"{bridge}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
}

/// Waits (bounded) until `bridge` reports connected on node `i`.
fn wait_connected(cluster: &Cluster, i: usize, bridge: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while bridge_metric(cluster, i, "mqtt_bridge_connected", bridge) != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "bridge {bridge} not connected after {timeout:?}: {}",
            cluster.get(i, "/readyz").1
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Publishes `probe` on `topic` until `sub` receives `expect` (routes and subscriptions take a
/// moment to exist on every node), at most `timeout`.
async fn probe_until(
    publisher: &Client,
    topic: &str,
    sub: &mut Client,
    expect: &str,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        publisher
            .client
            .publish(topic, QoS::AtLeastOnce, false, "probe")
            .await
            .unwrap();
        if sub
            .expect_publish(expect, Duration::from_millis(500))
            .await
            .is_some()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{topic} never arrived as {expect} within {timeout:?}"
        );
    }
}

/// Collects PUBLISH payloads (topic, payload) for `window`, at most `limit` of them.
async fn collect(sub: &mut Client, window: Duration, limit: usize) -> Vec<(String, String, QoS)> {
    let deadline = tokio::time::Instant::now() + window;
    let mut out = Vec::new();
    while out.len() < limit {
        match tokio::time::timeout_at(deadline, sub.events.recv()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(Ok(Packet::Publish(p)))) => out.push((
                p.topic.clone(),
                String::from_utf8_lossy(&p.payload).into_owned(),
                p.qos,
            )),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => panic!("subscriber connection failed: {e}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_map_topics_at_qos1_both_ways_and_reload_by_push() {
    let central = Cluster::start(Options {
        nodes: 3,
        ..Options::default()
    });
    let edge = Cluster::start(Options::default());
    let routes = vec![
        route(
            RouteDirection::Out,
            "site/+/telemetry/#",
            "prod/acme/paris/+/telemetry/#",
        ),
        route(
            RouteDirection::In,
            "site/+/commands/#",
            "prod/acme/paris/+/commands/#",
        ),
    ];
    push_bridges(
        &edge,
        &set(
            "r1",
            vec![bridge_to("central", &central, 0, routes, 10_000)],
        ),
    );
    wait_connected(&edge, 0, "central", Duration::from_secs(20));

    // Out: edge device telemetry arrives mapped on another central node, at QoS 1.
    let mut central_sub = device(&central, 1, "central-app", true).await;
    assert_eq!(
        central_sub
            .subscribe("prod/acme/paris/+/telemetry/#", QoS::AtLeastOnce)
            .await,
        1
    );
    let sensor = device(&edge, 0, "sensor-1", true).await;
    probe_until(
        &sensor,
        "site/s1/telemetry/probe",
        &mut central_sub,
        "prod/acme/paris/s1/telemetry/probe",
        Duration::from_secs(20),
    )
    .await;
    sensor
        .client
        .publish("site/s1/telemetry/temp", QoS::AtLeastOnce, false, "21.5")
        .await
        .unwrap();
    sensor
        .client
        .publish("site/s1/other/temp", QoS::AtLeastOnce, false, "not bridged")
        .await
        .unwrap();
    let got = collect(&mut central_sub, Duration::from_secs(3), 100).await;
    let temp: Vec<_> = got
        .iter()
        .filter(|(t, _, _)| t == "prod/acme/paris/s1/telemetry/temp")
        .collect();
    assert_eq!(temp.len(), 1, "{got:?}");
    assert_eq!(temp[0].1, "21.5");
    assert_eq!(temp[0].2, QoS::AtLeastOnce);
    assert!(got.iter().all(|(t, _, _)| !t.contains("other")), "{got:?}");

    // In: a central command arrives mapped at the edge, at QoS 1.
    let mut gateway = device(&edge, 0, "gateway", true).await;
    assert_eq!(
        gateway
            .subscribe("site/+/commands/#", QoS::AtLeastOnce)
            .await,
        1
    );
    let operator = device(&central, 2, "operator", true).await;
    probe_until(
        &operator,
        "prod/acme/paris/s1/commands/reboot",
        &mut gateway,
        "site/s1/commands/reboot",
        Duration::from_secs(20),
    )
    .await;
    operator
        .client
        .publish(
            "prod/acme/paris/s2/commands/open",
            QoS::AtLeastOnce,
            false,
            "now",
        )
        .await
        .unwrap();
    let got = collect(&mut gateway, Duration::from_secs(3), 100).await;
    let open: Vec<_> = got
        .iter()
        .filter(|(t, _, _)| t == "site/s2/commands/open")
        .collect();
    assert_eq!(open.len(), 1, "{got:?}");
    assert_eq!(open[0].2, QoS::AtLeastOnce);

    // Hot reload by push: a new mapping applies without restarting the edge broker; an invalid
    // set is refused with 400 and the running one stays.
    let (code, text) = edge.push(0, "/v1/bridges", b"{\"version\":\"x\"}");
    assert_eq!(code, 400, "{text}");
    let lyon = vec![route(
        RouteDirection::Out,
        "site/+/telemetry/#",
        "prod/acme/lyon/+/telemetry/#",
    )];
    push_bridges(
        &edge,
        &set("r2", vec![bridge_to("central", &central, 0, lyon, 10_000)]),
    );
    assert!(edge
        .get(0, "/readyz")
        .1
        .contains("\"bridgesRevision\":\"r2\""));
    assert_eq!(
        central_sub
            .subscribe("prod/acme/lyon/+/telemetry/#", QoS::AtLeastOnce)
            .await,
        1
    );
    wait_connected(&edge, 0, "central", Duration::from_secs(20));
    probe_until(
        &sensor,
        "site/s9/telemetry/probe",
        &mut central_sub,
        "prod/acme/lyon/s9/telemetry/probe",
        Duration::from_secs(20),
    )
    .await;
    // Every family is declared once, with the bridge's series.
    let (_, text) = edge.get(0, "/metrics");
    for m in contract::metrics::broker::ALL {
        let declared = text.matches(&format!("# TYPE {} ", m.name)).count();
        assert_eq!(declared, 1, "{} declared {declared} times", m.name);
    }
    let forwarded = bridge_metric(&edge, 0, "mqtt_bridge_forwarded_total", "central").unwrap();
    assert!(forwarded >= 3.0, "forwarded {forwarded}");
    assert_eq!(
        bridge_metric(&edge, 0, "mqtt_bridge_dropped_total", "central"),
        Some(0.0)
    );
    // Removing the bridge stops it (its series disappear).
    push_bridges(&edge, &set("r3", vec![]));
    assert_eq!(
        bridge_metric(&edge, 0, "mqtt_bridge_connected", "central"),
        None
    );
}

/// Kills every central node, publishes `count` QoS 1 messages at the edge while it is down for
/// at least 10 s, restarts it and returns the distinct payloads received by a central
/// subscriber within `window`.
async fn outage(
    central: &mut Cluster,
    edge: &Cluster,
    bridge: &str,
    count: usize,
    expect: usize,
    window: Duration,
) -> std::collections::BTreeSet<String> {
    let sensor = device(edge, 0, "sensor-outage", true).await;
    let down_at = Instant::now();
    tokio::task::block_in_place(|| {
        for i in 0..central.nodes.len() {
            central.kill(i);
        }
    });
    for i in 0..count {
        sensor
            .client
            .publish(
                "site/s1/telemetry/seq",
                QoS::AtLeastOnce,
                false,
                format!("{i}"),
            )
            .await
            .unwrap();
    }
    // Every publish acknowledged by the edge (QoS 1) before the central cluster returns.
    let mut sensor = sensor;
    let mut acks = 0;
    while acks < count {
        match sensor
            .next_matching(Duration::from_secs(10), |p| matches!(p, Packet::PubAck(_)))
            .await
        {
            Some(Ok(_)) => acks += 1,
            other => panic!("edge acknowledged {acks}/{count} publishes: {other:?}"),
        }
    }
    let rest = Duration::from_secs(10).saturating_sub(down_at.elapsed());
    tokio::time::sleep(rest).await;
    // Restart: the subscriber's node first (with node 1, which bootstraps raft), subscribe, then
    // the node the bridge connects to, so nothing drains before the subscription exists.
    let last = central.nodes.len() - 1;
    tokio::task::block_in_place(|| {
        for i in 0..last {
            central.spawn(i);
        }
        for i in 0..last {
            central.wait_ready(i, Duration::from_secs(90));
        }
    });
    let mut sub = device(central, 0, "central-outage-app", true).await;
    assert_eq!(
        sub.subscribe("prod/+/telemetry/seq", QoS::AtLeastOnce)
            .await,
        1
    );
    tokio::task::block_in_place(|| {
        central.spawn(last);
        central.wait_ready(last, Duration::from_secs(90));
    });
    wait_connected(edge, 0, bridge, Duration::from_secs(30));
    // Until `expect` distinct messages arrived (then one more second for strays), or `window`.
    let deadline = Instant::now() + window;
    let mut distinct = std::collections::BTreeSet::new();
    let reconnected = Instant::now();
    while distinct.len() < expect && Instant::now() < deadline {
        let got = collect(&mut sub, Duration::from_millis(200), 10 * count).await;
        distinct.extend(
            got.into_iter()
                .filter(|(t, _, q)| t == "prod/s1/telemetry/seq" && *q == QoS::AtLeastOnce)
                .map(|(_, p, _)| p),
        );
    }
    println!(
        "bridge {bridge}: {} buffered messages delivered {:.2} s after the reconnection",
        distinct.len(),
        reconnected.elapsed().as_secs_f64()
    );
    let strays = collect(&mut sub, Duration::from_secs(1), 10 * count).await;
    distinct.extend(
        strays
            .into_iter()
            .filter(|(t, _, _)| t == "prod/s1/telemetry/seq")
            .map(|(_, p, _)| p),
    );
    distinct
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_outage_loses_nothing_and_overflow_is_counted() {
    let mut central = Cluster::start(Options {
        nodes: 3,
        ..Options::default()
    });
    let edge = Cluster::start(Options::default());
    let last = central.nodes.len() - 1;
    let routes = || {
        vec![route(
            RouteDirection::Out,
            "site/+/telemetry/#",
            "prod/+/telemetry/#",
        )]
    };
    push_bridges(
        &edge,
        &set(
            "big",
            vec![bridge_to("central", &central, last, routes(), 10_000)],
        ),
    );
    wait_connected(&edge, 0, "central", Duration::from_secs(20));

    let started = Instant::now();
    let got = outage(
        &mut central,
        &edge,
        "central",
        1000,
        1000,
        Duration::from_secs(60),
    )
    .await;
    let missing: Vec<usize> = (0..1000)
        .filter(|i| !got.contains(&i.to_string()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of 1000 missing after the outage, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(
        bridge_metric(&edge, 0, "mqtt_bridge_dropped_total", "central"),
        Some(0.0)
    );
    println!(
        "outage: 1000/1000 delivered after a {:.1} s central outage (whole scenario {:.1} s)",
        10.0,
        started.elapsed().as_secs_f64()
    );

    // Same outage with a 300-message buffer: 700 dropped (oldest first) and counted, the
    // newest 300 arrive.
    push_bridges(
        &edge,
        &set(
            "small",
            vec![bridge_to("central", &central, last, routes(), 300)],
        ),
    );
    wait_connected(&edge, 0, "central", Duration::from_secs(20));
    let got = outage(
        &mut central,
        &edge,
        "central",
        1000,
        300,
        Duration::from_secs(60),
    )
    .await;
    let dropped = bridge_metric(&edge, 0, "mqtt_bridge_dropped_total", "central").unwrap();
    assert_eq!(dropped, 700.0, "dropped counter");
    let missing: Vec<usize> = (700..1000)
        .filter(|i| !got.contains(&i.to_string()))
        .collect();
    assert!(
        missing.is_empty(),
        "newest 300 not all delivered: {missing:?}"
    );
    assert_eq!(got.len(), 300, "only the buffered messages arrive");
    assert_eq!(
        bridge_metric(&edge, 0, "mqtt_bridge_buffer_max", "central"),
        Some(300.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_bridges_deliver_exactly_once() {
    let central = Cluster::start(Options::default());
    let edge = Cluster::start(Options::default());
    // Namespace a/: one bridge on the edge, out and in on the same filter.
    // Namespace b/: each cluster pushes b/# to the other (two bridges, both directions).
    push_bridges(
        &edge,
        &set(
            "e1",
            vec![bridge_to(
                "to-central",
                &central,
                0,
                vec![
                    route(RouteDirection::Out, "a/#", "a/#"),
                    route(RouteDirection::In, "a/#", "a/#"),
                    route(RouteDirection::Out, "b/#", "b/#"),
                ],
                10_000,
            )],
        ),
    );
    push_bridges(
        &central,
        &set(
            "c1",
            vec![bridge_to(
                "to-edge",
                &edge,
                0,
                vec![route(RouteDirection::Out, "b/#", "b/#")],
                10_000,
            )],
        ),
    );
    wait_connected(&edge, 0, "to-central", Duration::from_secs(20));
    wait_connected(&central, 0, "to-edge", Duration::from_secs(20));

    let mut edge_sub = device(&edge, 0, "edge-sub", true).await;
    let mut central_sub = device(&central, 0, "central-sub", true).await;
    for s in [&mut edge_sub, &mut central_sub] {
        assert_eq!(s.subscribe("a/#", QoS::AtLeastOnce).await, 1);
        assert_eq!(s.subscribe("b/#", QoS::AtLeastOnce).await, 1);
    }
    let edge_pub = device(&edge, 0, "edge-pub", true).await;
    let central_pub = device(&central, 0, "central-pub", true).await;
    // Wait until every path works once (subscriptions on the remote exist).
    for (p, topic) in [
        (&edge_pub, "a/probe/e"),
        (&central_pub, "a/probe/c"),
        (&edge_pub, "b/probe/e"),
        (&central_pub, "b/probe/c"),
    ] {
        probe_until(p, topic, &mut edge_sub, topic, Duration::from_secs(20)).await;
        probe_until(p, topic, &mut central_sub, topic, Duration::from_secs(20)).await;
    }
    // Drain the probes (the counts below only look at the numbered topics).
    collect(&mut edge_sub, Duration::from_secs(2), usize::MAX).await;
    collect(&mut central_sub, Duration::from_secs(2), usize::MAX).await;

    let mut expected = Vec::new();
    for i in 0..50 {
        for (p, side) in [(&edge_pub, "e"), (&central_pub, "c")] {
            for ns in ["a", "b"] {
                let topic = format!("{ns}/{side}/{i}");
                p.client
                    .publish(topic.as_str(), QoS::AtLeastOnce, false, "x")
                    .await
                    .unwrap();
                expected.push(topic);
            }
        }
    }
    for (name, sub) in [("edge", &mut edge_sub), ("central", &mut central_sub)] {
        let got = collect(sub, Duration::from_secs(10), 100_000).await;
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for (t, _, _) in got.iter().filter(|(t, _, _)| !t.contains("probe")) {
            *counts.entry(t.clone()).or_default() += 1;
        }
        for topic in &expected {
            assert_eq!(
                counts.get(topic).copied().unwrap_or(0),
                1,
                "{name} subscriber got {topic} {:?} times",
                counts.get(topic)
            );
        }
        assert_eq!(counts.len(), expected.len(), "{name}: unexpected topics");
    }
    let blocked = bridge_metric(&edge, 0, "mqtt_bridge_loops_blocked_total", "to-central");
    println!("edge bridge loops blocked by the marker: {blocked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_of_a_clustered_edge_bridges_without_duplicates() {
    let central = Cluster::start(Options::default());
    let edge = Cluster::start(Options {
        nodes: 3,
        ..Options::default()
    });
    let routes = vec![
        route(RouteDirection::Out, "up/#", "edge/up/#"),
        route(RouteDirection::In, "down/#", "edge/down/#"),
    ];
    // Every node gets the same bridges.json (as from the config Secret); each has its own
    // remote session, `in` routes share one remote subscription group.
    let body = set(
        "m1",
        vec![bridge_to("central", &central, 0, routes, 10_000)],
    );
    for i in 0..edge.nodes.len() {
        let (code, text) = edge.push(i, "/v1/bridges", &body);
        assert_eq!(code, 200, "{text}");
    }
    for i in 0..edge.nodes.len() {
        wait_connected(&edge, i, "central", Duration::from_secs(20));
    }
    let mut edge_sub = device(&edge, 1, "edge-app", true).await;
    assert_eq!(edge_sub.subscribe("down/#", QoS::AtLeastOnce).await, 1);
    let mut central_sub = device(&central, 0, "central-app", true).await;
    assert_eq!(
        central_sub.subscribe("edge/up/#", QoS::AtLeastOnce).await,
        1
    );
    let central_pub = device(&central, 0, "central-pub", true).await;
    probe_until(
        &central_pub,
        "edge/down/probe",
        &mut edge_sub,
        "down/probe",
        Duration::from_secs(20),
    )
    .await;
    let mut publishers = Vec::new();
    for i in 0..edge.nodes.len() {
        publishers.push(device(&edge, i, &format!("edge-pub-{i}"), true).await);
    }
    probe_until(
        &publishers[2],
        "up/probe",
        &mut central_sub,
        "edge/up/probe",
        Duration::from_secs(20),
    )
    .await;
    collect(&mut edge_sub, Duration::from_secs(2), usize::MAX).await;
    collect(&mut central_sub, Duration::from_secs(2), usize::MAX).await;

    for i in 0..30 {
        central_pub
            .client
            .publish(format!("edge/down/{i}"), QoS::AtLeastOnce, false, "x")
            .await
            .unwrap();
        publishers[i % 3]
            .client
            .publish(format!("up/{i}"), QoS::AtLeastOnce, false, "x")
            .await
            .unwrap();
    }
    for (name, sub, prefix) in [
        ("edge", &mut edge_sub, "down/"),
        ("central", &mut central_sub, "edge/up/"),
    ] {
        let got = collect(sub, Duration::from_secs(10), 100_000).await;
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for (t, _, _) in got.iter().filter(|(t, _, _)| !t.contains("probe")) {
            *counts.entry(t.clone()).or_default() += 1;
        }
        for i in 0..30 {
            let topic = format!("{prefix}{i}");
            assert_eq!(
                counts.get(&topic).copied().unwrap_or(0),
                1,
                "{name} subscriber got {topic} {:?} times",
                counts.get(&topic)
            );
        }
        assert_eq!(counts.len(), 30, "{name}: unexpected topics {counts:?}");
    }
}
