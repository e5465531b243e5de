//! Synthetic series for each generated alert, used by `tests/monitoring.rs` with
//! `promtool test rules`.

use contract::metrics;

/// One alert's synthetic scenario: series under which it fires, series under which it stays
/// silent, and the labels the firing alert carries beyond `severity` and `mqtt_cluster`.
pub struct Scenario {
    pub alert: &'static str,
    pub firing: Vec<(String, &'static str)>,
    pub silent: Vec<(String, &'static str)>,
    pub extra_labels: Vec<(&'static str, &'static str)>,
    /// Minutes at which the alert must not fire yet (condition holds, `for:` not elapsed).
    pub pending_at: u32,
    /// Minutes at which it must fire.
    pub firing_at: u32,
}

const B: &str = r#"namespace="default",mqtt_cluster="quickstart""#;

fn pods(metric: &str, values: [&'static str; 3]) -> Vec<(String, &'static str)> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| (format!(r#"{metric}{{{B},pod="quickstart-core-{i}"}}"#), *v))
        .collect()
}

fn one(metric: &str, labels: &str, v: &'static str) -> Vec<(String, &'static str)> {
    vec![(format!("{metric}{{{labels}}}"), v)]
}

/// Scenarios for the quickstart cluster: 3 nodes × 10000 connections, maxQueued 1000,
/// maxInflight 32 → thresholds 24000/28500 connections, 800 queued and 25.6 in-flight per
/// connection, 5 auth failures/s, 50 ACL denies/s.
pub fn scenarios() -> Vec<Scenario> {
    use metrics::broker as b;
    use metrics::operator as o;
    let conns100 = pods(b::CONNECTIONS.name, ["40x60", "30x60", "30x60"]);
    let with = |mut a: Vec<(String, &'static str)>, b: Vec<(String, &'static str)>| {
        a.extend(b);
        a
    };
    let bridge = r#"namespace="default",mqtt_cluster="quickstart",bridge="to-central""#;
    let cert = r#"mqtt_cluster_namespace="default",mqtt_cluster="quickstart",certificate="device",name="sensor-01""#;
    vec![
        Scenario {
            alert: "MqttConnectionsHigh",
            firing: pods(b::CONNECTIONS.name, ["9000x30", "9000x30", "9000x30"]),
            silent: pods(b::CONNECTIONS.name, ["7000x30", "7000x30", "7000x30"]),
            extra_labels: vec![],
            pending_at: 3,
            firing_at: 10,
        },
        Scenario {
            alert: "MqttConnectionsCritical",
            firing: pods(b::CONNECTIONS.name, ["9800x30", "9800x30", "9800x30"]),
            silent: pods(b::CONNECTIONS.name, ["9000x30", "9000x30", "9000x30"]),
            extra_labels: vec![],
            pending_at: 3,
            firing_at: 10,
        },
        Scenario {
            alert: "MqttAuthFailureSpike",
            firing: pods(b::AUTH_FAILURES.name, ["0+300x40", "0+300x40", "0+0x40"]),
            silent: pods(b::AUTH_FAILURES.name, ["0+60x40", "0+60x40", "0+60x40"]),
            extra_labels: vec![],
            pending_at: 8,
            firing_at: 20,
        },
        Scenario {
            alert: "MqttAclDenySpike",
            firing: pods(b::ACL_DENIES.name, ["0+6000x40", "0x40", "0x40"]),
            silent: pods(b::ACL_DENIES.name, ["0+600x40", "0+600x40", "0+600x40"]),
            extra_labels: vec![],
            pending_at: 8,
            firing_at: 20,
        },
        Scenario {
            alert: "MqttMessagesDropped",
            firing: pods(b::MESSAGES_DROPPED.name, ["0+1x30", "0x30", "0x30"]),
            silent: pods(b::MESSAGES_DROPPED.name, ["5x30", "5x30", "5x30"]),
            extra_labels: vec![],
            pending_at: 3,
            firing_at: 10,
        },
        Scenario {
            alert: "MqttQueueDepthHigh",
            firing: with(conns100.clone(), one(b::QUEUED.name, B, "90000x60")),
            silent: with(conns100.clone(), one(b::QUEUED.name, B, "50000x60")),
            extra_labels: vec![],
            pending_at: 10,
            firing_at: 20,
        },
        Scenario {
            alert: "MqttInflightHigh",
            firing: with(conns100.clone(), one(b::INFLIGHT.name, B, "3000x60")),
            silent: with(conns100, one(b::INFLIGHT.name, B, "1000x60")),
            extra_labels: vec![],
            pending_at: 10,
            firing_at: 20,
        },
        Scenario {
            alert: "MqttBrokerNodeDown",
            firing: pods("up", ["1x20", "1x20", "0x20"]),
            silent: pods("up", ["1x20", "1x20", "1x20"]),
            extra_labels: vec![],
            pending_at: 2,
            firing_at: 10,
        },
        Scenario {
            alert: "MqttRaftQuorumAtRisk",
            firing: pods(b::RAFT_PEERS_UP.name, ["3x20", "3x20", "2x20"]),
            silent: pods(b::RAFT_PEERS_UP.name, ["3x20", "3x20", "3x20"]),
            extra_labels: vec![],
            pending_at: 1,
            firing_at: 10,
        },
        Scenario {
            // promtool's clock starts at the Unix epoch: renewal at t=600s is overdue from 10m.
            alert: "MqttCertificateRenewalOverdue",
            firing: one(o::CERT_RENEWAL.name, cert, "600x90"),
            silent: one(o::CERT_RENEWAL.name, cert, "1000000000x90"),
            extra_labels: vec![
                ("mqtt_cluster_namespace", "default"),
                ("certificate", "device"),
                ("name", "sensor-01"),
            ],
            pending_at: 20,
            firing_at: 60,
        },
        Scenario {
            alert: "MqttCertificateExpiringSoon",
            firing: one(o::CERT_NOT_AFTER.name, cert, "100000x30"),
            silent: one(o::CERT_NOT_AFTER.name, cert, "1000000000x30"),
            extra_labels: vec![
                ("mqtt_cluster_namespace", "default"),
                ("certificate", "device"),
                ("name", "sensor-01"),
            ],
            pending_at: 5,
            firing_at: 20,
        },
        Scenario {
            alert: "MqttBridgeDown",
            firing: one(b::BRIDGE_CONNECTED.name, bridge, "0x20"),
            silent: one(b::BRIDGE_CONNECTED.name, bridge, "1x20"),
            extra_labels: vec![("bridge", "to-central")],
            pending_at: 3,
            firing_at: 10,
        },
        Scenario {
            alert: "MqttBridgeBufferFilling",
            firing: with(
                one(b::BRIDGE_BUFFER.name, bridge, "9000x20"),
                one(b::BRIDGE_BUFFER_MAX.name, bridge, "10000x20"),
            ),
            silent: with(
                one(b::BRIDGE_BUFFER.name, bridge, "1000x20"),
                one(b::BRIDGE_BUFFER_MAX.name, bridge, "10000x20"),
            ),
            extra_labels: vec![("bridge", "to-central")],
            pending_at: 3,
            firing_at: 10,
        },
        Scenario {
            alert: "MqttRetainedGrowth",
            firing: pods(b::RETAINED.name, ["0+5000x120", "0+5000x120", "0+5000x120"]),
            silent: pods(b::RETAINED.name, ["0+10x120", "0+10x120", "0+10x120"]),
            extra_labels: vec![],
            pending_at: 20,
            firing_at: 90,
        },
        Scenario {
            alert: "MqttOperatorReconcileErrors",
            firing: one(
                o::RECONCILE_ERRORS.name,
                r#"job="mqtt-operator",kind="MqttCluster",category="apply""#,
                "0+1x60",
            ),
            silent: one(
                o::RECONCILE_ERRORS.name,
                r#"job="mqtt-operator",kind="MqttCluster",category="apply""#,
                "3x60",
            ),
            extra_labels: vec![],
            pending_at: 10,
            firing_at: 30,
        },
        Scenario {
            alert: "MqttOperatorDown",
            firing: one("up", r#"job="mqtt-operator",instance="op-0""#, "0x20"),
            silent: one("up", r#"job="mqtt-operator",instance="op-0""#, "1x20"),
            extra_labels: vec![],
            pending_at: 3,
            firing_at: 10,
        },
    ]
}
