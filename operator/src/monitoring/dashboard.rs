//! The Grafana dashboard of one cluster: connections vs capacity, message rates, auth failures
//! and ACL denies, raft health per node, certificate expiry, bridge state.

use contract::metrics::{broker as b, operator as o, CLUSTER_LABEL};
use crds::cluster::MqttClusterSpec;
use serde_json::{json, Value};

use super::rules::thresholds;

/// One panel: title, Grafana panel type, unit, and its PromQL queries with legends.
struct Panel {
    title: &'static str,
    kind: &'static str,
    unit: &'static str,
    targets: Vec<(String, &'static str)>,
}

/// The panels of a cluster's dashboard (queries are exposed for tests through [`dashboard`]).
fn panels(namespace: &str, cluster: &str, spec: &MqttClusterSpec) -> Vec<Panel> {
    let sel = format!(r#"namespace="{namespace}",{CLUSTER_LABEL}="{cluster}""#);
    let osel = format!(
        r#"{}="{namespace}",{CLUSTER_LABEL}="{cluster}""#,
        o::CLUSTER_NAMESPACE_LABEL
    );
    let capacity = thresholds(spec).capacity;
    vec![
        Panel {
            title: "Connections vs capacity",
            kind: "timeseries",
            unit: "short",
            targets: vec![
                (
                    format!("sum({}{{{sel}}})", b::CONNECTIONS.name),
                    "connections",
                ),
                (
                    format!("sum({}{{{sel}}})", b::CONNECTIONS_MAX.name),
                    "capacity (nodes x maxConnections)",
                ),
                (format!("vector({capacity})"), "capacity from spec"),
            ],
        },
        Panel {
            title: "Messages per second",
            kind: "timeseries",
            unit: "ops",
            targets: vec![
                (
                    format!("sum(rate({}{{{sel}}}[5m]))", b::MESSAGES_RECEIVED.name),
                    "in",
                ),
                (
                    format!("sum(rate({}{{{sel}}}[5m]))", b::MESSAGES_SENT.name),
                    "out",
                ),
                (
                    format!("sum(rate({}{{{sel}}}[5m]))", b::MESSAGES_DROPPED.name),
                    "dropped",
                ),
            ],
        },
        Panel {
            title: "Auth failures and ACL denies",
            kind: "timeseries",
            unit: "ops",
            targets: vec![
                (
                    format!("sum(rate({}{{{sel}}}[5m]))", b::AUTH_FAILURES.name),
                    "auth failures",
                ),
                (
                    format!("sum(rate({}{{{sel}}}[5m]))", b::ACL_DENIES.name),
                    "ACL denies",
                ),
            ],
        },
        Panel {
            title: "In-flight and queued messages",
            kind: "timeseries",
            unit: "short",
            targets: vec![
                (format!("sum({}{{{sel}}})", b::INFLIGHT.name), "in flight"),
                (format!("sum({}{{{sel}}})", b::QUEUED.name), "queued"),
                (
                    format!("sum({}{{{sel}}})", b::RETAINED.name),
                    "retained (cluster)",
                ),
                (
                    format!("sum({}{{{sel}}})", b::SUBSCRIPTIONS.name),
                    "subscriptions",
                ),
            ],
        },
        Panel {
            title: "Raft health per node",
            kind: "timeseries",
            unit: "short",
            targets: vec![
                (
                    format!("{}{{{sel}}}", b::RAFT_PEERS_UP.name),
                    "{{pod}} peers up",
                ),
                (
                    format!("{}{{{sel}}}", b::RAFT_LEADER.name),
                    "{{pod}} leader",
                ),
                (format!("up{{{sel}}}"), "{{pod}} up"),
            ],
        },
        Panel {
            title: "Certificate expiry",
            kind: "table",
            unit: "dtdurations",
            targets: vec![(
                format!("{}{{{osel}}} - time()", o::CERT_NOT_AFTER.name),
                "{{certificate}} {{name}}",
            )],
        },
        Panel {
            title: "Bridges",
            kind: "timeseries",
            unit: "short",
            targets: vec![
                (
                    format!("{}{{{sel}}}", b::BRIDGE_CONNECTED.name),
                    "{{bridge}} connected",
                ),
                (
                    format!(
                        "sum by (bridge) (rate({}{{{sel}}}[5m]))",
                        b::BRIDGE_FORWARDED.name
                    ),
                    "{{bridge}} forwarded/s",
                ),
                (
                    format!(
                        "sum by (bridge) (rate({}{{{sel}}}[5m]))",
                        b::BRIDGE_FAILED.name
                    ),
                    "{{bridge}} failed/s",
                ),
                (
                    format!(
                        "sum by (bridge) (rate({}{{{sel}}}[5m]))",
                        b::BRIDGE_DROPPED.name
                    ),
                    "{{bridge}} dropped/s",
                ),
                (
                    format!("sum by (bridge) ({}{{{sel}}})", b::BRIDGE_BUFFER.name),
                    "{{bridge}} buffered",
                ),
            ],
        },
        Panel {
            title: "ACL and revocation",
            kind: "table",
            unit: "short",
            targets: vec![
                (
                    format!("{}{{{sel}}}", b::ACL_REVISION.name),
                    "{{pod}} {{revision}}",
                ),
                (
                    format!("{}{{{sel}}}", b::REVOKED_SET_SIZE.name),
                    "{{pod}} revoked serials",
                ),
            ],
        },
    ]
}

/// The dashboard JSON (Grafana schema 39) for one cluster.
pub fn dashboard(namespace: &str, cluster: &str, spec: &MqttClusterSpec) -> Value {
    let panels: Vec<Value> = panels(namespace, cluster, spec)
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let targets: Vec<Value> = p
                .targets
                .iter()
                .enumerate()
                .map(|(j, (expr, legend))| {
                    json!({
                        "refId": char::from(b'A' + j as u8).to_string(),
                        "expr": expr,
                        "legendFormat": legend,
                        "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    })
                })
                .collect();
            json!({
                "id": i + 1,
                "title": p.title,
                "type": p.kind,
                "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i / 2) * 8},
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
                "targets": targets,
            })
        })
        .collect();
    json!({
        "uid": format!("mqtt-{}", short_uid(namespace, cluster)),
        "title": format!("MQTT {namespace}/{cluster}"),
        "tags": ["mqtt", "mqtt-operator"],
        "schemaVersion": 39,
        "version": 1,
        "editable": true,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [{
            "name": "datasource",
            "type": "datasource",
            "query": "prometheus",
            "label": "Data source",
        }]},
        "panels": panels,
    })
}

/// Grafana uids are at most 40 characters: keep a readable prefix and a stable hash suffix.
fn short_uid(namespace: &str, cluster: &str) -> String {
    use sha2::{Digest, Sha256};
    let full = format!("{namespace}-{cluster}");
    if full.len() <= 30 {
        return full;
    }
    let hash = Sha256::digest(full.as_bytes());
    format!("{}-{}", &full[..20], hex::encode(&hash[..4]))
}
