//! Alert rules derived from an MqttCluster's own limits (DESIGN §8), as a `PrometheusRule`
//! (monitoring.coreos.com/v1) and as a plain rules file for `promtool`.
//!
//! Broker series are selected by `namespace` and `mqtt_cluster` (the ServiceMonitor relabels the
//! pod's cluster label into `mqtt_cluster`); operator series by `mqtt_cluster_namespace` and
//! `mqtt_cluster`. Every alert carries `severity`, the `mqtt_cluster` label, and the
//! annotations `summary`, `description` and `runbook_url` (a section of `docs/runbooks.md`).

use std::collections::BTreeMap;

use contract::metrics::{broker as b, operator as o, CLUSTER_LABEL};
use crds::cluster::MqttClusterSpec;
use serde::Serialize;

/// Where runbook links point: `<base>#<alert name in lowercase>`.
pub const DEFAULT_RUNBOOK_BASE: &str =
    "https://github.com/mqtt-operator/mqtt-operator/blob/main/docs/runbooks.md";

/// Rendering options that do not come from the cluster spec.
#[derive(Debug, Clone)]
pub struct RuleOptions {
    /// Base URL of `docs/runbooks.md`.
    pub runbook_base: String,
    /// The Prometheus `job` label of the operator's own scrape (the Helm chart's Service name).
    pub operator_job: String,
}

impl Default for RuleOptions {
    fn default() -> Self {
        Self {
            runbook_base: DEFAULT_RUNBOOK_BASE.to_string(),
            operator_job: "mqtt-operator".to_string(),
        }
    }
}

/// The numbers alerts use, derived from the spec, then overridden by
/// `spec.monitoring.prometheusRule.overrides`.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Core nodes.
    pub nodes: i64,
    /// Connection capacity: nodes × `limits.maxConnections`.
    pub capacity: i64,
    /// Warning level, percent of capacity.
    pub connections_warning_percent: i64,
    /// Critical level, percent of capacity.
    pub connections_critical_percent: i64,
    /// Auth failures per second counted as a spike.
    pub auth_failures_per_second: f64,
    /// ACL denies per second counted as a spike.
    pub acl_denies_per_second: f64,
    /// Average queued messages per connection that counts as deep (percent of maxQueued).
    pub queued_per_connection: f64,
    /// Average in-flight messages per connection that counts as deep.
    pub inflight_per_connection: f64,
    /// Certificates expiring within this many days alert regardless of renewal time.
    pub certificate_expiry_days: i64,
    /// How long a bridge may be down before alerting.
    pub bridge_down_for: String,
    /// Retained messages added per hour that count as runaway growth.
    pub retained_growth_per_hour: i64,
    /// Voters needed so one more failure keeps a majority: majority + 1 (capped at nodes).
    pub raft_safe_peers: i64,
}

/// Derives the thresholds for a spec.
pub fn thresholds(spec: &MqttClusterSpec) -> Thresholds {
    let over = spec
        .monitoring
        .prometheus_rule
        .overrides
        .clone()
        .unwrap_or_default();
    let nodes = i64::from(spec.core.replicas);
    let capacity = nodes * spec.limits.max_connections;
    let queue_percent = f64::from(over.queue_depth_percent.unwrap_or(80)) / 100.0;
    // Without an override, a spike is an auth failure for 1% of capacity per minute (at least
    // one per second), and an ACL deny rate ten times that.
    let base_rate = (capacity as f64 / 100.0 / 60.0).max(1.0).round();
    let majority = nodes / 2 + 1;
    Thresholds {
        nodes,
        capacity,
        connections_warning_percent: over.connections_warning_percent.unwrap_or(80).into(),
        connections_critical_percent: over.connections_critical_percent.unwrap_or(95).into(),
        auth_failures_per_second: over.auth_failures_per_second.unwrap_or(base_rate),
        acl_denies_per_second: over.acl_denies_per_second.unwrap_or(base_rate * 10.0),
        queued_per_connection: (f64::from(spec.limits.max_queued_messages) * queue_percent)
            .max(1.0),
        inflight_per_connection: (f64::from(spec.limits.max_inflight) * queue_percent).max(1.0),
        certificate_expiry_days: over.certificate_expiry_days.unwrap_or(7).into(),
        bridge_down_for: over.bridge_down_for.unwrap_or_else(|| "5m".to_string()),
        retained_growth_per_hour: over.retained_growth_per_hour.unwrap_or(100_000),
        raft_safe_peers: (majority + 1).min(nodes),
    }
}

/// A rule group in the Prometheus rules format.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleGroup {
    /// Group name.
    pub name: String,
    /// The alerting rules.
    pub rules: Vec<AlertRule>,
}

/// One alerting rule.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertRule {
    /// Alert name.
    pub alert: String,
    /// PromQL condition.
    pub expr: String,
    /// How long the condition must hold.
    #[serde(rename = "for")]
    pub for_: String,
    /// `severity` and `mqtt_cluster`.
    pub labels: BTreeMap<String, String>,
    /// `summary`, `description`, `runbook_url`.
    pub annotations: BTreeMap<String, String>,
}

/// Names of every alert, in rendering order (the runbook has one section per name).
pub const ALERT_NAMES: &[&str] = &[
    "MqttConnectionsHigh",
    "MqttConnectionsCritical",
    "MqttAuthFailureSpike",
    "MqttAclDenySpike",
    "MqttMessagesDropped",
    "MqttQueueDepthHigh",
    "MqttInflightHigh",
    "MqttBrokerNodeDown",
    "MqttRaftQuorumAtRisk",
    "MqttCertificateRenewalOverdue",
    "MqttCertificateExpiringSoon",
    "MqttBridgeDown",
    "MqttBridgeBufferFilling",
    "MqttRetainedGrowth",
    "MqttOperatorReconcileErrors",
    "MqttOperatorDown",
];

struct Builder<'a> {
    cluster: &'a str,
    opts: &'a RuleOptions,
    rules: Vec<AlertRule>,
}

impl Builder<'_> {
    fn add(
        &mut self,
        alert: &str,
        severity: &str,
        for_: &str,
        expr: String,
        summary: &str,
        description: String,
    ) {
        debug_assert!(
            ALERT_NAMES.contains(&alert),
            "{alert} missing from ALERT_NAMES"
        );
        let labels = BTreeMap::from([
            ("severity".to_string(), severity.to_string()),
            (CLUSTER_LABEL.to_string(), self.cluster.to_string()),
        ]);
        let annotations = BTreeMap::from([
            ("summary".to_string(), summary.to_string()),
            ("description".to_string(), description),
            (
                "runbook_url".to_string(),
                format!("{}#{}", self.opts.runbook_base, alert.to_lowercase()),
            ),
        ]);
        self.rules.push(AlertRule {
            alert: alert.to_string(),
            expr,
            for_: for_.to_string(),
            labels,
            annotations,
        });
    }
}

/// Formats a float for PromQL without needless decimals.
fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The alert rule groups for one cluster.
pub fn alert_groups(
    namespace: &str,
    cluster: &str,
    spec: &MqttClusterSpec,
    opts: &RuleOptions,
) -> Vec<RuleGroup> {
    let t = thresholds(spec);
    let sel = format!(r#"namespace="{namespace}",{CLUSTER_LABEL}="{cluster}""#);
    let osel = format!(
        r#"{}="{namespace}",{CLUSTER_LABEL}="{cluster}""#,
        o::CLUSTER_NAMESPACE_LABEL
    );
    let who = format!("MqttCluster {namespace}/{cluster}");
    let mut g = Builder {
        cluster,
        opts,
        rules: Vec::new(),
    };

    let conns = format!("sum({}{{{sel}}})", b::CONNECTIONS.name);
    for (alert, severity, pct) in [
        (
            "MqttConnectionsHigh",
            "warning",
            t.connections_warning_percent,
        ),
        (
            "MqttConnectionsCritical",
            "critical",
            t.connections_critical_percent,
        ),
    ] {
        let limit = t.capacity * pct / 100;
        g.add(
            alert,
            severity,
            "5m",
            format!("{conns} > {limit}"),
            "MQTT connections near capacity",
            format!(
                "{who} has {{{{ $value }}}} connections, above {pct}% of its capacity of {} ({} nodes x {} maxConnections).",
                t.capacity, t.nodes, spec.limits.max_connections
            ),
        );
    }
    g.add(
        "MqttAuthFailureSpike",
        "warning",
        "10m",
        format!("sum(rate({}{{{sel}}}[5m])) > {}", b::AUTH_FAILURES.name, num(t.auth_failures_per_second)),
        "Many refused MQTT connections",
        format!(
            "{who} refuses {{{{ $value }}}} CONNECTs per second (threshold {}/s): revoked or expired certificates, or a misconfigured fleet.",
            num(t.auth_failures_per_second)
        ),
    );
    g.add(
        "MqttAclDenySpike",
        "warning",
        "10m",
        format!(
            "sum(rate({}{{{sel}}}[5m])) > {}",
            b::ACL_DENIES.name,
            num(t.acl_denies_per_second)
        ),
        "Many MQTT requests denied by ACL",
        format!(
            "{who} denies {{{{ $value }}}} publishes/subscriptions per second (threshold {}/s).",
            num(t.acl_denies_per_second)
        ),
    );
    g.add(
        "MqttMessagesDropped",
        "warning",
        "5m",
        format!("sum(increase({}{{{sel}}}[5m])) > 0", b::MESSAGES_DROPPED.name),
        "MQTT messages are being dropped",
        format!("{who} dropped {{{{ $value }}}} messages in the last 5 minutes (full queues or expiry)."),
    );
    let per_conn = |metric: &str| format!("sum({metric}{{{sel}}}) / clamp_min({conns}, 1)");
    g.add(
        "MqttQueueDepthHigh",
        "warning",
        "15m",
        format!("{} > {}", per_conn(b::QUEUED.name), num(t.queued_per_connection)),
        "MQTT session queues are deep",
        format!(
            "{who} queues {{{{ $value }}}} messages per connection on average; sessions drop beyond {} (maxQueuedMessages).",
            spec.limits.max_queued_messages
        ),
    );
    g.add(
        "MqttInflightHigh",
        "warning",
        "15m",
        format!("{} > {}", per_conn(b::INFLIGHT.name), num(t.inflight_per_connection)),
        "MQTT in-flight windows are nearly full",
        format!(
            "{who} has {{{{ $value }}}} unacknowledged messages per connection on average (maxInflight {}): slow consumers.",
            spec.limits.max_inflight
        ),
    );
    g.add(
        "MqttBrokerNodeDown",
        "critical",
        "3m",
        format!("(sum(up{{{sel}}}) or vector(0)) < {}", t.nodes),
        "An MQTT core node is down",
        format!("{who} has {{{{ $value }}}} of {} core nodes up.", t.nodes),
    );
    if t.nodes > 1 {
        g.add(
            "MqttRaftQuorumAtRisk",
            "critical",
            "2m",
            format!("min({}{{{sel}}}) < {}", b::RAFT_PEERS_UP.name, t.raft_safe_peers),
            "MQTT raft quorum at risk",
            format!(
                "A node of {who} reaches only {{{{ $value }}}} of {} voters; one more failure loses the majority of {}.",
                t.nodes,
                t.nodes / 2 + 1
            ),
        );
    }
    g.add(
        "MqttCertificateRenewalOverdue",
        "warning",
        "30m",
        format!("{}{{{osel}}} < time()", o::CERT_RENEWAL.name),
        "A certificate is past its renewal time",
        format!(
            "The {{{{ $labels.certificate }}}} certificate {{{{ $labels.name }}}} of {who} should have been renewed and was not."
        ),
    );
    g.add(
        "MqttCertificateExpiringSoon",
        "critical",
        "10m",
        format!(
            "{}{{{osel}}} - time() < {}",
            o::CERT_NOT_AFTER.name,
            t.certificate_expiry_days * 86_400
        ),
        "A certificate expires soon",
        format!(
            "The {{{{ $labels.certificate }}}} certificate {{{{ $labels.name }}}} of {who} expires in less than {} days.",
            t.certificate_expiry_days
        ),
    );
    g.add(
        "MqttBridgeDown",
        "warning",
        &t.bridge_down_for,
        format!("max by (bridge) ({}{{{sel}}}) == 0", b::BRIDGE_CONNECTED.name),
        "An MQTT bridge is disconnected",
        format!(
            "Bridge {{{{ $labels.bridge }}}} of {who} has been disconnected for {}; messages are buffering.",
            t.bridge_down_for
        ),
    );
    g.add(
        "MqttBridgeBufferFilling",
        "warning",
        "5m",
        format!(
            "max by (bridge) ({}{{{sel}}} / {}{{{sel}}}) > 0.8",
            b::BRIDGE_BUFFER.name,
            b::BRIDGE_BUFFER_MAX.name
        ),
        "An MQTT bridge buffer is filling",
        format!("Bridge {{{{ $labels.bridge }}}} of {who} buffer is {{{{ $value | humanizePercentage }}}} full; beyond it messages are dropped."),
    );
    g.add(
        "MqttRetainedGrowth",
        "warning",
        "30m",
        format!(
            "max(delta({}{{{sel}}}[1h])) > {}",
            b::RETAINED.name,
            t.retained_growth_per_hour
        ),
        "Retained messages are growing fast",
        format!(
            "{who} gained {{{{ $value }}}} retained messages in an hour (threshold {}): a client may be retaining on unique topics.",
            t.retained_growth_per_hour
        ),
    );
    g.add(
        "MqttOperatorReconcileErrors",
        "warning",
        "15m",
        format!(
            r#"sum(rate({}{{job="{}"}}[10m])) > 0"#,
            o::RECONCILE_ERRORS.name,
            opts.operator_job
        ),
        "mqtt-operator reconciles are failing",
        "The operator managing this cluster fails {{ $value }} reconciles per second; changes to specs may not be applied.".to_string(),
    );
    g.add(
        "MqttOperatorDown",
        "critical",
        "5m",
        format!(r#"absent(up{{job="{}"}} == 1)"#, opts.operator_job),
        "mqtt-operator is down",
        format!("No mqtt-operator instance is up; certificates of {who} are not renewed and specs are not applied."),
    );
    vec![RuleGroup {
        name: format!("mqtt-operator.{namespace}.{cluster}"),
        rules: g.rules,
    }]
}

/// A Prometheus rules file (`groups:`), the form `promtool check rules` reads.
pub fn rules_file(groups: &[RuleGroup]) -> String {
    #[derive(Serialize)]
    struct File<'a> {
        groups: &'a [RuleGroup],
    }
    serde_yaml::to_string(&File { groups }).expect("rule groups serialize")
}
