//! Prometheus text exposition with the stable `mqtt_` names of DESIGN section 8.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use contract::config::BrokerConfig;
use contract::metrics::{broker as b, Metric};
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
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// A metric from the shared list (`contract::metrics::broker`), without labels.
fn shared(out: &mut String, m: &Metric, value: impl std::fmt::Display) {
    metric(out, m.name, m.kind, m.help, value);
}

/// Escapes a label value for the text format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every metric. Names shared with the alert rules and dashboard come from
/// `contract::metrics::broker`; the extra ones are broker-specific detail.
pub fn render(live: &Live, engine: &EngineSample, config: &BrokerConfig) -> String {
    render_with(live, engine, config, "")
}

/// [`render`] plus `extra` families (the bridges' `mqtt_bridge_*`, rendered by
/// `crate::bridge::Bridges::render_metrics`) placed before the absent shared families are
/// declared, so no family is declared twice.
pub fn render_with(
    live: &Live,
    engine: &EngineSample,
    config: &BrokerConfig,
    extra: &str,
) -> String {
    let c = &live.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::with_capacity(4096);
    shared(&mut out, &b::CONNECTIONS, engine.connections);
    shared(&mut out, &b::CONNECTIONS_MAX, config.limits.max_connections);
    shared(&mut out, &b::MESSAGES_RECEIVED, engine.messages_in);
    shared(&mut out, &b::MESSAGES_SENT, engine.messages_out);
    shared(&mut out, &b::MESSAGES_DROPPED, engine.messages_dropped);
    shared(&mut out, &b::AUTH_FAILURES, load(&c.auth_failures));
    let denies =
        load(&c.acl_denies_publish) + load(&c.acl_denies_subscribe) + load(&c.acl_denies_will);
    shared(&mut out, &b::ACL_DENIES, denies);
    shared(&mut out, &b::INFLIGHT, engine.inflight);
    shared(&mut out, &b::QUEUED, engine.queued);
    shared(&mut out, &b::RETAINED, engine.retained);
    shared(&mut out, &b::SUBSCRIPTIONS, engine.subscriptions);
    let leader = load(&live.raft_leader);
    shared(
        &mut out,
        &b::RAFT_LEADER,
        u8::from(leader == config.node.id),
    );
    shared(&mut out, &b::RAFT_PEERS_UP, load(&live.raft_peers_up));
    shared(&mut out, &b::RAFT_PEERS, config.cluster.peers.len());
    // No raft term: rmqtt 0.24 keeps the raft status private to its plugin (so the contract has
    // no such name).
    let policy = live.policy();
    let revoked = live.revoked();
    let trust = live.trust();
    let _ = writeln!(
        out,
        "# HELP {n} {h}\n# TYPE {n} gauge\n{n}{{revision=\"{r}\"}} 1",
        n = b::ACL_REVISION.name,
        h = b::ACL_REVISION.help,
        r = label(policy.revision())
    );
    shared(&mut out, &b::REVOKED_SET_SIZE, revoked.serials.len());

    metric(
        &mut out,
        "mqtt_sessions",
        "gauge",
        "Sessions on this node, online and offline.",
        engine.sessions,
    );
    metric(
        &mut out,
        "mqtt_auth_failures_revoked_total",
        "counter",
        "CONNECTs refused because the certificate serial is revoked.",
        load(&c.auth_failures_revoked),
    );
    let _ = writeln!(
        out,
        "# HELP mqtt_acl_denies_by_action_total ACL denies by action.\n# TYPE mqtt_acl_denies_by_action_total counter\n\
         mqtt_acl_denies_by_action_total{{action=\"publish\"}} {}\nmqtt_acl_denies_by_action_total{{action=\"subscribe\"}} {}\n\
         mqtt_acl_denies_by_action_total{{action=\"will\"}} {}",
        load(&c.acl_denies_publish),
        load(&c.acl_denies_subscribe),
        load(&c.acl_denies_will)
    );
    metric(
        &mut out,
        "mqtt_raft_leader_id",
        "gauge",
        "Raft leader id as seen by this node (0 = none).",
        leader,
    );
    metric(
        &mut out,
        "mqtt_raft_joined",
        "gauge",
        "1 once this node joined the raft cluster.",
        u8::from(live.cluster_joined.load(Ordering::Relaxed)),
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
    metric(
        &mut out,
        "mqtt_revocation_disconnects_total",
        "counter",
        "Live sessions disconnected after their serial was revoked.",
        load(&c.revocation_disconnects),
    );
    metric(
        &mut out,
        "mqtt_config_reloads_total",
        "counter",
        "Hot reloads applied.",
        load(&c.reloads),
    );
    metric(
        &mut out,
        "mqtt_config_reload_errors_total",
        "counter",
        "Hot reloads rejected (invalid content).",
        load(&c.reload_errors),
    );
    out.push_str(extra);
    declare_absent_families(&mut out);
    out
}

/// Declares (HELP and TYPE, no sample) every shared family not rendered above, e.g. the bridge
/// families while no bridge runs: scrapes and rule checks see the name before its first series.
fn declare_absent_families(out: &mut String) {
    for m in b::ALL {
        if !out.contains(&format!("# TYPE {} ", m.name)) {
            let _ = writeln!(
                out,
                "# HELP {n} {h}\n# TYPE {n} {k}",
                n = m.name,
                h = m.help,
                k = m.kind
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::{trust_state, RevokedIndex};

    #[test]
    fn renders_every_shared_name() {
        let set = contract::acl::RuleSetBuilder::new(contract::acl::Effect::Deny)
            .build()
            .unwrap();
        let policy = crate::access::Policy::new(&set);
        let live = Live::new(policy, RevokedIndex::default(), trust_state("x"));
        let config: BrokerConfig = serde_json::from_value(serde_json::json!({
            "version": contract::config::CONFIG_VERSION, "clusterName": "c", "node": {"id": 1},
            "listeners": {"bind": "127.0.0.1", "mqtts": {"port": 8883}},
            "cluster": {"raftPort": 5363, "grpcPort": 5364, "peers": [{"id": 1, "host": "h"}]},
            "http": {"port": 9090},
            "limits": {"maxConnections": 100, "maxInflight": 1, "maxQueuedMessages": 1, "maxPacketSize": 1,
                       "sessionExpirySecs": 1, "messageExpirySecs": 1, "maxTopicLevels": 1, "retainAvailable": true}
        }))
        .unwrap();
        let text = render(
            &live,
            &EngineSample {
                connections: 3,
                ..Default::default()
            },
            &config,
        );
        assert!(text.contains("mqtt_connections 3\n"));
        assert!(text.contains("mqtt_connections_max 100\n"));
        assert!(
            text.contains(&format!(
                "mqtt_acl_revision{{revision=\"{}\"}} 1",
                set.revision()
            )),
            "{text}"
        );
        for m in b::ALL {
            assert!(
                text.contains(&format!("# TYPE {} {}\n", m.name, m.kind)),
                "missing {} in\n{text}",
                m.name
            );
        }
        // No bridge runs: its families are declared without a series.
        assert!(!text.contains(&format!("\n{}{{", b::BRIDGE_CONNECTED.name)));
    }
}
