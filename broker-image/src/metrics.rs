//! Prometheus text exposition with the stable `mqtt_` names of DESIGN section 8.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use rmqtt::context::ServerContext;

use crate::live::Live;

/// Values from the engine, sampled for one scrape.
#[derive(Debug, Default, Clone, Copy)]
pub struct EngineSample {
    /// Active connections on this node.
    pub connections: i64,
    /// Sessions (including offline persistent ones).
    pub sessions: i64,
    /// Subscriptions on this node.
    pub subscriptions: i64,
    /// Retained messages.
    pub retained: i64,
    /// Outbound QoS 1/2 messages awaiting acknowledgement.
    pub inflight: i64,
    /// Messages queued for slow or offline clients.
    pub queued: i64,
    /// PUBLISH packets received.
    pub messages_in: u64,
    /// Messages delivered to subscribers.
    pub messages_out: u64,
    /// Messages dropped (queue full, expired, no route...).
    pub messages_dropped: u64,
}

/// Samples the engine's statistics.
pub async fn sample(scx: &ServerContext) -> EngineSample {
    let stats = scx.stats.clone(scx).await;
    EngineSample {
        connections: stats.connections.count() as i64,
        sessions: stats.sessions.count() as i64,
        subscriptions: stats.subscriptions.count() as i64,
        retained: stats.retaineds.count() as i64,
        inflight: stats.out_inflights.count() as i64,
        queued: stats.message_queues.count() as i64,
        messages_in: scx.metrics.messages_publish() as u64,
        messages_out: scx.metrics.messages_delivered() as u64,
        messages_dropped: scx.metrics.messages_dropped() as u64,
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
}

/// Escapes a label value for the text format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Renders every metric.
pub fn render(live: &Live, engine: &EngineSample, max_connections: u32, node_id: u64) -> String {
    let c = &live.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::with_capacity(4096);
    metric(&mut out, "mqtt_connections", "gauge", "Client connections on this node.", engine.connections);
    metric(&mut out, "mqtt_connections_max", "gauge", "Connection capacity of this node (limits.maxConnections).", max_connections);
    metric(&mut out, "mqtt_sessions", "gauge", "Sessions on this node, online and offline.", engine.sessions);
    metric(&mut out, "mqtt_messages_in_total", "counter", "PUBLISH packets received from clients.", engine.messages_in);
    metric(&mut out, "mqtt_messages_out_total", "counter", "Messages delivered to subscribers.", engine.messages_out);
    metric(&mut out, "mqtt_messages_dropped_total", "counter", "Messages dropped by the engine.", engine.messages_dropped);
    metric(&mut out, "mqtt_auth_failures_total", "counter", "CONNECTs refused (identity, revocation, will ACL).", load(&c.auth_failures));
    metric(&mut out, "mqtt_auth_failures_revoked_total", "counter", "CONNECTs refused because the certificate serial is revoked.", load(&c.auth_failures_revoked));
    let _ = writeln!(
        out,
        "# HELP mqtt_acl_denies_total Operations refused by the ACL.\n# TYPE mqtt_acl_denies_total counter\n\
         mqtt_acl_denies_total{{action=\"publish\"}} {}\nmqtt_acl_denies_total{{action=\"subscribe\"}} {}\n\
         mqtt_acl_denies_total{{action=\"will\"}} {}",
        load(&c.acl_denies_publish),
        load(&c.acl_denies_subscribe),
        load(&c.acl_denies_will)
    );
    metric(&mut out, "mqtt_inflight", "gauge", "Outbound QoS 1/2 messages awaiting acknowledgement.", engine.inflight);
    metric(&mut out, "mqtt_queued", "gauge", "Messages queued for slow or offline clients.", engine.queued);
    metric(&mut out, "mqtt_retained_messages", "gauge", "Retained messages stored.", engine.retained);
    metric(&mut out, "mqtt_subscriptions", "gauge", "Subscriptions on this node.", engine.subscriptions);
    let leader = load(&live.raft_leader);
    metric(&mut out, "mqtt_raft_leader_id", "gauge", "Raft leader id as seen by this node (0 = none).", leader);
    metric(&mut out, "mqtt_raft_leader", "gauge", "1 if this node is the raft leader.", u8::from(leader == node_id));
    metric(&mut out, "mqtt_raft_peers_up", "gauge", "Raft voters reporting healthy, this node included.", load(&live.raft_peers_up));
    metric(&mut out, "mqtt_raft_joined", "gauge", "1 once this node joined the raft cluster.", u8::from(live.cluster_joined.load(Ordering::Relaxed)));
    let policy = live.policy();
    let revoked = live.revoked();
    let trust = live.trust();
    let _ = writeln!(
        out,
        "# HELP mqtt_acl_revision The ACL rule set revision in force (value is always 1).\n# TYPE mqtt_acl_revision gauge\nmqtt_acl_revision{{revision=\"{}\"}} 1",
        label(policy.0.revision())
    );
    let _ = writeln!(
        out,
        "# HELP mqtt_revoked_set_revision The revoked set revision in force (value is always 1).\n# TYPE mqtt_revoked_set_revision gauge\nmqtt_revoked_set_revision{{revision=\"{}\"}} 1",
        label(&revoked.revision)
    );
    let _ = writeln!(
        out,
        "# HELP mqtt_trust_bundle_revision The client trust bundle revision in force (value is always 1).\n# TYPE mqtt_trust_bundle_revision gauge\nmqtt_trust_bundle_revision{{revision=\"{}\"}} 1",
        label(&trust.revision)
    );
    metric(&mut out, "mqtt_revoked_set_size", "gauge", "Serials in the revoked set.", revoked.serials.len());
    metric(&mut out, "mqtt_revocation_disconnects_total", "counter", "Live sessions disconnected after their serial was revoked.", load(&c.revocation_disconnects));
    metric(&mut out, "mqtt_config_reloads_total", "counter", "Hot reloads applied.", load(&c.reloads));
    metric(&mut out, "mqtt_config_reload_errors_total", "counter", "Hot reloads rejected (invalid content).", load(&c.reload_errors));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::{trust_state, RevokedIndex};

    #[test]
    fn renders_stable_names_and_escapes_labels() {
        let policy = crate::access::parse_policy(
            br#"{"revision":"r\"1","defaultAction":"deny","rules":[]}"#,
        )
        .unwrap();
        let live = Live::new(policy, RevokedIndex::default(), trust_state("x"));
        let text = render(&live, &EngineSample { connections: 3, ..Default::default() }, 100, 1);
        for name in [
            "mqtt_connections 3",
            "mqtt_connections_max 100",
            "mqtt_messages_in_total 0",
            "mqtt_messages_dropped_total 0",
            "mqtt_auth_failures_total 0",
            "mqtt_acl_denies_total{action=\"publish\"} 0",
            "mqtt_inflight 0",
            "mqtt_queued 0",
            "mqtt_retained_messages 0",
            "mqtt_subscriptions 0",
            "mqtt_raft_peers_up 0",
            "mqtt_acl_revision{revision=\"r\\\"1\"} 1",
            "mqtt_revoked_set_size 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
