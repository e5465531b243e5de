//! Names of the Prometheus metrics the broker and the operator export (DESIGN §8).
//!
//! One list shared by the broker (which exports them), the generated alert rules and the
//! dashboard (which query them), so a rename breaks the build or a test rather than an alert.
//! Names are stable API: SREs' own dashboards use them too.

/// A metric's name, type and help text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// Full metric name (counters end in `_total`).
    pub name: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    /// HELP text.
    pub help: &'static str,
    /// Label names (besides the scrape target's own labels).
    pub labels: &'static [&'static str],
}

const fn gauge(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: "gauge",
        help,
        labels: &[],
    }
}

const fn counter(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: "counter",
        help,
        labels: &[],
    }
}

/// Broker metrics, exported by every broker node on `/metrics`.
pub mod broker {
    use super::{counter, gauge, Metric};

    /// Connected clients on this node.
    pub const CONNECTIONS: Metric = gauge("mqtt_connections", "Clients connected to this node.");
    /// Configured connection limit of this node (`limits.maxConnections`).
    pub const CONNECTIONS_MAX: Metric = gauge(
        "mqtt_connections_max",
        "Maximum concurrent connections this node accepts.",
    );
    /// PUBLISH packets received from clients.
    pub const MESSAGES_RECEIVED: Metric = counter(
        "mqtt_messages_received_total",
        "PUBLISH messages received from clients.",
    );
    /// PUBLISH packets delivered to subscribers.
    pub const MESSAGES_SENT: Metric = counter(
        "mqtt_messages_sent_total",
        "PUBLISH messages delivered to subscribers.",
    );
    /// Messages dropped (queue full, expired, no route under QoS 0 overload).
    pub const MESSAGES_DROPPED: Metric = counter(
        "mqtt_messages_dropped_total",
        "Messages dropped (queue full, expired).",
    );
    /// Refused CONNECTs (bad/absent certificate, revoked, suspended, bad credentials).
    pub const AUTH_FAILURES: Metric = counter(
        "mqtt_auth_failures_total",
        "CONNECT attempts refused by authentication.",
    );
    /// PUBLISH/SUBSCRIBE refused by the ACL.
    pub const ACL_DENIES: Metric = counter(
        "mqtt_acl_denies_total",
        "PUBLISH and SUBSCRIBE requests denied by the ACL.",
    );
    /// Unacknowledged QoS 1/2 messages in flight, summed over sessions.
    pub const INFLIGHT: Metric = gauge(
        "mqtt_inflight_messages",
        "QoS 1/2 messages in flight (unacknowledged), all sessions.",
    );
    /// Messages queued for offline or slow sessions, summed over sessions.
    pub const QUEUED: Metric = gauge(
        "mqtt_queued_messages",
        "Messages queued for offline or slow sessions, all sessions.",
    );
    /// Retained messages stored.
    pub const RETAINED: Metric = gauge("mqtt_retained_messages", "Retained messages stored.");
    /// Active subscriptions on this node.
    pub const SUBSCRIPTIONS: Metric = gauge("mqtt_subscriptions", "Active subscriptions.");
    // No raft term: rmqtt 0.24 exposes neither the term nor the raft status outside its
    // cluster plugin (broker-image/README.md), and a name nobody exports would be a dead query.
    /// 1 when this node is the raft leader.
    pub const RAFT_LEADER: Metric = gauge(
        "mqtt_raft_leader",
        "1 when this node is the raft leader, else 0.",
    );
    /// Voters (this node included) this node currently reaches.
    pub const RAFT_PEERS_UP: Metric = gauge(
        "mqtt_raft_peers_up",
        "Raft voters reachable from this node, itself included.",
    );
    /// Configured voters.
    pub const RAFT_PEERS: Metric = gauge("mqtt_raft_peers", "Configured raft voters.");
    /// 1 per bridge while connected to its remote.
    pub const BRIDGE_CONNECTED: Metric = Metric {
        name: "mqtt_bridge_connected",
        kind: "gauge",
        help: "1 while the bridge is connected to its remote, else 0.",
        labels: &["bridge"],
    };
    /// Messages forwarded by a bridge.
    pub const BRIDGE_FORWARDED: Metric = Metric {
        name: "mqtt_bridge_forwarded_total",
        kind: "counter",
        help: "Messages forwarded by the bridge.",
        labels: &["bridge"],
    };
    /// Messages a bridge failed to forward.
    pub const BRIDGE_FAILED: Metric = Metric {
        name: "mqtt_bridge_failed_total",
        kind: "counter",
        help: "Messages the bridge failed to forward (refused by the remote).",
        labels: &["bridge"],
    };
    /// Messages a bridge dropped (buffer overflow or expiry).
    pub const BRIDGE_DROPPED: Metric = Metric {
        name: "mqtt_bridge_dropped_total",
        kind: "counter",
        help: "Messages dropped by the bridge buffer (overflow or expiry).",
        labels: &["bridge"],
    };
    /// Messages waiting in a bridge's buffer.
    pub const BRIDGE_BUFFER: Metric = Metric {
        name: "mqtt_bridge_buffer_messages",
        kind: "gauge",
        help: "Messages buffered while the remote is unreachable.",
        labels: &["bridge"],
    };
    /// A bridge's buffer capacity.
    pub const BRIDGE_BUFFER_MAX: Metric = Metric {
        name: "mqtt_bridge_buffer_max",
        kind: "gauge",
        help: "Capacity of the bridge buffer.",
        labels: &["bridge"],
    };
    /// Info metric carrying the ACL revision in force.
    pub const ACL_REVISION: Metric = Metric {
        name: "mqtt_acl_revision",
        kind: "gauge",
        help: "Always 1; the revision label is the ACL rule set in force.",
        labels: &["revision"],
    };
    /// Serials in the revoked set.
    pub const REVOKED_SET_SIZE: Metric = gauge(
        "mqtt_revoked_set_size",
        "Certificate serials in the revoked set.",
    );

    /// Every broker metric.
    pub const ALL: &[Metric] = &[
        CONNECTIONS,
        CONNECTIONS_MAX,
        MESSAGES_RECEIVED,
        MESSAGES_SENT,
        MESSAGES_DROPPED,
        AUTH_FAILURES,
        ACL_DENIES,
        INFLIGHT,
        QUEUED,
        RETAINED,
        SUBSCRIPTIONS,
        RAFT_LEADER,
        RAFT_PEERS_UP,
        RAFT_PEERS,
        BRIDGE_CONNECTED,
        BRIDGE_FORWARDED,
        BRIDGE_FAILED,
        BRIDGE_DROPPED,
        BRIDGE_BUFFER,
        BRIDGE_BUFFER_MAX,
        ACL_REVISION,
        REVOKED_SET_SIZE,
    ];
}

/// Operator metrics, exported by the operator on its own `/metrics`.
pub mod operator {
    use super::Metric;

    /// Label naming the MqttCluster's namespace on operator metrics (not `namespace`, which
    /// Prometheus sets to the operator's own).
    pub const CLUSTER_NAMESPACE_LABEL: &str = "mqtt_cluster_namespace";

    /// Reconciles per kind.
    pub const RECONCILE: Metric = Metric {
        name: "mqtt_operator_reconcile_total",
        kind: "counter",
        help: "Reconciles run, per kind.",
        labels: &["kind"],
    };
    /// Failed reconciles per kind and error category.
    pub const RECONCILE_ERRORS: Metric = Metric {
        name: "mqtt_operator_reconcile_errors_total",
        kind: "counter",
        help: "Reconciles that failed, per kind and error category.",
        labels: &["kind", "category"],
    };
    /// Reconcile duration per kind.
    pub const RECONCILE_DURATION: Metric = Metric {
        name: "mqtt_operator_reconcile_duration_seconds",
        kind: "histogram",
        help: "Reconcile duration, per kind.",
        labels: &["kind"],
    };
    /// Certificates issued, rotated, revoked.
    pub const CERTIFICATES: Metric = Metric {
        name: "mqtt_operator_certificates_total",
        kind: "counter",
        help: "Certificate operations, per operation (issued, rotated, revoked).",
        labels: &["operation"],
    };
    /// End of validity of each certificate the operator manages.
    pub const CERT_NOT_AFTER: Metric = Metric {
        name: "mqtt_operator_certificate_not_after_timestamp_seconds",
        kind: "gauge",
        help: "Unix time at which the certificate expires.",
        labels: &[
            "mqtt_cluster_namespace",
            "mqtt_cluster",
            "certificate",
            "name",
        ],
    };
    /// When the operator plans to renew each certificate.
    pub const CERT_RENEWAL: Metric = Metric {
        name: "mqtt_operator_certificate_renewal_timestamp_seconds",
        kind: "gauge",
        help: "Unix time at which the operator renews the certificate.",
        labels: &[
            "mqtt_cluster_namespace",
            "mqtt_cluster",
            "certificate",
            "name",
        ],
    };
    /// ACL compile duration.
    pub const ACL_COMPILE_DURATION: Metric = Metric {
        name: "mqtt_operator_acl_compile_duration_seconds",
        kind: "histogram",
        help: "Time to compile a cluster's TopicPolicies into a rule set.",
        labels: &[],
    };
    /// Rules in the last compiled set, per cluster.
    pub const ACL_RULES: Metric = Metric {
        name: "mqtt_operator_acl_rules",
        kind: "gauge",
        help: "Expanded rules in the cluster's current rule set.",
        labels: &["mqtt_cluster_namespace", "mqtt_cluster"],
    };
    /// Time from a policy change to every node acknowledging it.
    pub const ACL_PROPAGATION: Metric = Metric {
        name: "mqtt_operator_acl_propagation_seconds",
        kind: "histogram",
        help: "Time from a rule-set change to every core node enforcing it.",
        labels: &[],
    };

    /// 1 while this operator replica holds the leader-election Lease (and runs the controllers).
    pub const LEADER: Metric = Metric {
        name: "mqtt_operator_leader",
        kind: "gauge",
        help:
            "1 when this replica holds the leader-election Lease and runs the controllers, else 0.",
        labels: &[],
    };

    /// Every operator metric.
    pub const ALL: &[Metric] = &[
        RECONCILE,
        RECONCILE_ERRORS,
        RECONCILE_DURATION,
        CERTIFICATES,
        CERT_NOT_AFTER,
        CERT_RENEWAL,
        ACL_COMPILE_DURATION,
        ACL_RULES,
        ACL_PROPAGATION,
        LEADER,
    ];
}

/// Label the ServiceMonitor attaches to every broker series: the MqttCluster's name.
pub const CLUSTER_LABEL: &str = "mqtt_cluster";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_unique_and_counters_end_in_total() {
        let mut seen = std::collections::BTreeSet::new();
        for m in broker::ALL.iter().chain(operator::ALL) {
            assert!(m.name.starts_with("mqtt_"), "{}", m.name);
            assert!(seen.insert(m.name), "duplicate {}", m.name);
            assert_eq!(
                m.kind == "counter",
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
        }
        for m in operator::ALL {
            assert!(m.name.starts_with("mqtt_operator_"), "{}", m.name);
        }
    }
}
