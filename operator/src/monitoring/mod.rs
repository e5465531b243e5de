//! Monitoring objects generated per MqttCluster: a `ServiceMonitor` for the broker metrics, a
//! `PrometheusRule` with alerts derived from the spec, and a Grafana dashboard ConfigMap.
//! Pure builders; the controller applies them when the Prometheus Operator CRDs exist.

pub mod dashboard;
pub mod references;
pub mod rules;

use std::collections::BTreeMap;

use contract::metrics::CLUSTER_LABEL;
use crds::MqttCluster;
use serde_json::{json, Value};

pub use references::{metric_names, referenced_metrics};
pub use rules::{alert_groups, rules_file, thresholds, RuleOptions};

/// Name of the broker container/Service port that serves `/metrics`.
pub const METRICS_PORT_NAME: &str = "http";
/// Label on objects the operator creates for a cluster; its value is the cluster's name.
pub const CLUSTER_NAME_LABEL: &str = "mqtt.operator.dev/cluster";
/// The Prometheus Operator API version used for both kinds.
pub const MONITORING_API_VERSION: &str = "monitoring.coreos.com/v1";

fn name_ns(cluster: &MqttCluster) -> (&str, &str) {
    (
        cluster.metadata.name.as_deref().unwrap_or_default(),
        cluster.metadata.namespace.as_deref().unwrap_or("default"),
    )
}

fn labels(cluster: &str, extra: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_string(),
            "mqtt-operator".to_string(),
        ),
        (
            "app.kubernetes.io/part-of".to_string(),
            "mqtt-operator".to_string(),
        ),
        (CLUSTER_NAME_LABEL.to_string(), cluster.to_string()),
    ]);
    l.extend(extra.clone());
    l
}

/// The ServiceMonitor scraping every core node's `/metrics`, labelling series with
/// `mqtt_cluster`.
pub fn service_monitor(cluster: &MqttCluster) -> Value {
    let (name, ns) = name_ns(cluster);
    let sm = &cluster.spec.monitoring.service_monitor;
    json!({
        "apiVersion": MONITORING_API_VERSION,
        "kind": "ServiceMonitor",
        "metadata": {
            "name": format!("{name}-broker"),
            "namespace": ns,
            "labels": labels(name, &sm.labels),
        },
        "spec": {
            "selector": {"matchLabels": {
                CLUSTER_NAME_LABEL: name,
                "app.kubernetes.io/component": "core",
            }},
            "namespaceSelector": {"matchNames": [ns]},
            "endpoints": [{
                "port": METRICS_PORT_NAME,
                "path": "/metrics",
                "interval": sm.interval,
                "relabelings": [{
                    "action": "replace",
                    "targetLabel": CLUSTER_LABEL,
                    "replacement": name,
                }],
            }],
        },
    })
}

/// The PrometheusRule with this cluster's alerts.
pub fn prometheus_rule(cluster: &MqttCluster, opts: &RuleOptions) -> Value {
    let (name, ns) = name_ns(cluster);
    let groups = alert_groups(ns, name, &cluster.spec, opts);
    json!({
        "apiVersion": MONITORING_API_VERSION,
        "kind": "PrometheusRule",
        "metadata": {
            "name": format!("{name}-alerts"),
            "namespace": ns,
            "labels": labels(name, &cluster.spec.monitoring.prometheus_rule.labels),
        },
        "spec": {"groups": groups},
    })
}

/// The ConfigMap carrying the Grafana dashboard (picked up by Grafana's sidecar through the
/// `grafana_dashboard: "1"` label).
pub fn dashboard_config_map(cluster: &MqttCluster) -> Value {
    let (name, ns) = name_ns(cluster);
    let mut l = labels(name, &BTreeMap::new());
    l.insert("grafana_dashboard".into(), "1".into());
    let board = dashboard::dashboard(ns, name, &cluster.spec);
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": format!("{name}-dashboard"), "namespace": ns, "labels": l},
        "data": {
            format!("mqtt-{ns}-{name}.json"): serde_json::to_string_pretty(&board).expect("dashboard serializes"),
        },
    })
}
