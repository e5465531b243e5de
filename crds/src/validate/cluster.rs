//! MqttCluster validation.

use std::collections::BTreeMap;

use super::{Errors, FieldError};
use crate::cluster::{CaSpec, ClientAuth, MqttClusterSpec};

/// Largest MQTT packet the protocol can express (256 MiB - 1).
const MQTT_MAX_PACKET: i64 = 268_435_455;

/// Validates an MqttCluster spec.
pub fn validate_cluster(spec: &MqttClusterSpec) -> Vec<FieldError> {
    let mut e = Errors::default();
    let replicas = spec.core.replicas;
    if !(1..=7).contains(&replicas) || replicas % 2 == 0 {
        e.add(
            "spec.core.replicas",
            format!("must be odd and between 1 and 7 (raft needs a majority), got {replicas}"),
        );
    }
    if !is_quantity(&spec.core.storage.size.0) {
        e.add(
            "spec.core.storage.size",
            format!(
                "'{}' is not a Kubernetes quantity (e.g. 1Gi)",
                spec.core.storage.size.0
            ),
        );
    }
    if let Some(class) = &spec.core.storage.storage_class_name {
        e.object_name("spec.core.storage.storageClassName", class);
    }
    if let Some(image) = &spec.image {
        if image.trim().is_empty() || image.contains(char::is_whitespace) {
            e.add(
                "spec.image",
                "must be a non-empty image reference without spaces",
            );
        }
    }
    listeners(spec, &mut e);
    ca(&mut e, "spec.pki.clusterCa", &spec.pki.cluster_ca);
    ca(&mut e, "spec.pki.clientsCa", &spec.pki.clients_ca);
    validity_pair(
        &mut e,
        "spec.pki.serverCert",
        &spec.pki.server_cert.validity,
        &spec.pki.server_cert.renew_before,
    );
    if let Some(sel) = &spec.acl.policy_selector {
        e.selector("spec.acl.policySelector", sel);
    }
    limits(spec, &mut e);
    monitoring(spec, &mut e);
    let max_unavailable = spec.pod_disruption_budget.max_unavailable;
    let tolerable = ((replicas - 1) / 2).max(1);
    if max_unavailable < 0 || max_unavailable > tolerable {
        e.add(
            "spec.podDisruptionBudget.maxUnavailable",
            format!(
                "must be between 0 and {tolerable} for {replicas} core nodes (keep a raft majority), got {max_unavailable}"
            ),
        );
    }
    e.into_vec()
}

fn listeners(spec: &MqttClusterSpec, e: &mut Errors) {
    let l = &spec.listeners;
    let mut enabled: Vec<(&str, i32)> = Vec::new();
    let mut client_auths = Vec::new();
    if l.mqtts.enabled {
        enabled.push(("mqtts", l.mqtts.port));
        client_auths.push(l.mqtts.client_auth);
    }
    if let Some(w) = l.wss.as_ref().filter(|w| w.enabled) {
        enabled.push(("wss", w.port));
        client_auths.push(w.client_auth);
        if !w.path.starts_with('/') {
            e.add("spec.listeners.wss.path", "must start with '/'");
        }
    }
    let plain = l.mqtt.as_ref().filter(|m| m.enabled);
    if let Some(m) = plain {
        enabled.push(("mqtt", m.port));
        client_auths.push(ClientAuth::None);
    }
    if enabled.is_empty() {
        e.add(
            "spec.listeners",
            "at least one listener must be enabled (mqtts, wss or mqtt)",
        );
    }
    let mut seen: BTreeMap<i32, &str> = BTreeMap::new();
    for (name, port) in &enabled {
        if !(1..=65_535).contains(port) {
            e.add(
                format!("spec.listeners.{name}.port"),
                format!("must be 1-65535, got {port}"),
            );
        }
        if let Some(other) = seen.insert(*port, name) {
            e.add(
                format!("spec.listeners.{name}.port"),
                format!("port {port} is already used by listener {other}; ports must be distinct"),
            );
        }
    }
    // Ports the broker uses itself (metrics/health/push API and raft) are fixed.
    for (name, port) in &enabled {
        if let Some(reserved) = RESERVED_PORTS.iter().find(|(p, _)| p == port) {
            e.add(
                format!("spec.listeners.{name}.port"),
                format!("port {port} is reserved for the broker's {}", reserved.1),
            );
        }
    }
    let anyone_can_authenticate =
        spec.auth.allow_anonymous || client_auths.iter().any(|a| *a != ClientAuth::None);
    if !enabled.is_empty() && !anyone_can_authenticate {
        e.add(
            "spec.auth.allowAnonymous",
            "no client could authenticate: every enabled listener has clientAuth none (or is plain) and anonymous access is off",
        );
    }
    for cidr in &l.service.load_balancer_source_ranges {
        if !is_cidr(cidr) {
            e.add(
                "spec.listeners.service.loadBalancerSourceRanges",
                format!("'{cidr}' is not a CIDR (e.g. 10.0.0.0/8)"),
            );
        }
    }
}

/// Ports the broker binds for itself, never available to listeners.
pub const RESERVED_PORTS: [(i32, &str); 3] = [
    (9090, "HTTP API and metrics"),
    (5363, "raft"),
    (5364, "inter-node messages (gRPC)"),
];

fn ca(e: &mut Errors, path: &str, ca: &CaSpec) {
    if !ca.generate && ca.secret_ref.is_none() {
        e.add(
            format!("{path}.secretRef"),
            "required when generate is false (a Secret with tls.crt and tls.key of your CA)",
        );
    }
    if let Some(r) = &ca.secret_ref {
        e.object_name(&format!("{path}.secretRef.name"), &r.name);
    }
    validity_pair(e, path, &ca.validity, &ca.renew_before);
}

/// Checks `<path>.validity` and `<path>.renewBefore`: both durations, renewBefore < validity.
pub(super) fn validity_pair(e: &mut Errors, path: &str, validity: &str, renew_before: &str) {
    let v = e.duration(&format!("{path}.validity"), validity);
    let r = e.duration(&format!("{path}.renewBefore"), renew_before);
    if let Some(v) = v {
        if v.as_secs() < 3_600 {
            e.add(format!("{path}.validity"), "must be at least 1h");
        }
    }
    if let (Some(v), Some(r)) = (v, r) {
        if r >= v {
            e.add(
                format!("{path}.renewBefore"),
                format!("must be shorter than validity ({renew_before} >= {validity})"),
            );
        }
    }
}

fn limits(spec: &MqttClusterSpec, e: &mut Errors) {
    let l = &spec.limits;
    if l.max_connections < 1 {
        e.add("spec.limits.maxConnections", "must be at least 1");
    }
    if !(1..=65_535).contains(&l.max_inflight) {
        e.add("spec.limits.maxInflight", "must be 1-65535");
    }
    if l.max_queued_messages < 0 {
        e.add("spec.limits.maxQueuedMessages", "must not be negative");
    }
    if !(1_024..=MQTT_MAX_PACKET).contains(&l.max_packet_size) {
        e.add(
            "spec.limits.maxPacketSize",
            format!("must be between 1024 and {MQTT_MAX_PACKET} bytes"),
        );
    }
    e.duration("spec.limits.sessionExpiry", &l.session_expiry);
    e.duration("spec.limits.messageExpiry", &l.message_expiry);
    if !(1..=1_024).contains(&l.max_topic_levels) {
        e.add("spec.limits.maxTopicLevels", "must be 1-1024");
    }
    if let Some(rate) = &l.rate {
        if rate.connections_per_second.is_some_and(|r| r < 1) {
            e.add(
                "spec.limits.rate.connectionsPerSecond",
                "must be at least 1",
            );
        }
        if rate.messages_per_second_per_client.is_some_and(|r| r < 1) {
            e.add(
                "spec.limits.rate.messagesPerSecondPerClient",
                "must be at least 1",
            );
        }
    }
}

fn monitoring(spec: &MqttClusterSpec, e: &mut Errors) {
    let m = &spec.monitoring;
    if let Some(d) = e.duration(
        "spec.monitoring.serviceMonitor.interval",
        &m.service_monitor.interval,
    ) {
        if d.as_secs() == 0 {
            e.add(
                "spec.monitoring.serviceMonitor.interval",
                "must be positive",
            );
        }
    }
    let Some(o) = &m.prometheus_rule.overrides else {
        return;
    };
    let p = "spec.monitoring.prometheusRule.overrides";
    let warn = o.connections_warning_percent.unwrap_or(80);
    let crit = o.connections_critical_percent.unwrap_or(95);
    if !(1..=100).contains(&warn) {
        e.add(format!("{p}.connectionsWarningPercent"), "must be 1-100");
    }
    if !(1..=100).contains(&crit) {
        e.add(format!("{p}.connectionsCriticalPercent"), "must be 1-100");
    }
    if warn >= crit {
        e.add(
            format!("{p}.connectionsWarningPercent"),
            format!("must be below connectionsCriticalPercent ({warn} >= {crit})"),
        );
    }
    if o.queue_depth_percent
        .is_some_and(|q| !(1..=100).contains(&q))
    {
        e.add(format!("{p}.queueDepthPercent"), "must be 1-100");
    }
    if o.retained_growth_per_hour.is_some_and(|g| g < 1) {
        e.add(format!("{p}.retainedGrowthPerHour"), "must be at least 1");
    }
    if o.certificate_expiry_days.is_some_and(|d| d < 1) {
        e.add(format!("{p}.certificateExpiryDays"), "must be at least 1");
    }
    for (name, v) in [
        ("authFailuresPerSecond", o.auth_failures_per_second),
        ("aclDeniesPerSecond", o.acl_denies_per_second),
    ] {
        if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
            e.add(format!("{p}.{name}"), "must be a positive number");
        }
    }
    if let Some(d) = &o.bridge_down_for {
        e.duration(&format!("{p}.bridgeDownFor"), d);
    }
}

/// A Kubernetes quantity such as `1Gi`, `500M`, `1.5Gi`.
fn is_quantity(s: &str) -> bool {
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(digits_end);
    let num_ok = !num.is_empty()
        && num.matches('.').count() <= 1
        && !num.starts_with('.')
        && !num.ends_with('.');
    num_ok
        && [
            "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E",
        ]
        .contains(&suffix)
}

/// An IPv4 or IPv6 CIDR.
fn is_cidr(s: &str) -> bool {
    let Some((ip, len)) = s.split_once('/') else {
        return false;
    };
    let Ok(len) = len.parse::<u8>() else {
        return false;
    };
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => len <= 32,
        Ok(std::net::IpAddr::V6(_)) => len <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_cidrs() {
        assert!(is_quantity("1Gi"));
        assert!(is_quantity("1.5Gi"));
        assert!(is_quantity("500"));
        assert!(!is_quantity("Gi"));
        assert!(!is_quantity("1GB"));
        assert!(!is_quantity("1..5Gi"));
        assert!(is_cidr("10.0.0.0/8"));
        assert!(is_cidr("::1/128"));
        assert!(!is_cidr("10.0.0.0/33"));
        assert!(!is_cidr("10.0.0.0"));
    }

    #[test]
    fn default_spec_is_valid() {
        assert_eq!(validate_cluster(&MqttClusterSpec::default()), vec![]);
    }
}
