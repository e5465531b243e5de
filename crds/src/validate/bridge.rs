//! Bridge validation, including the topic mapping rules.

use contract::topic::{self, TopicError};

use super::{Errors, FieldError};
use crate::bridge::BridgeSpec;

/// Validates a Bridge spec.
pub fn validate_bridge(spec: &BridgeSpec) -> Vec<FieldError> {
    let mut e = Errors::default();
    e.object_name("spec.clusterRef.name", &spec.cluster_ref.name);
    let r = &spec.remote;
    match (&r.host, &r.cluster_ref) {
        (None, None) => e.add("spec.remote", "set either host or clusterRef"),
        (Some(_), Some(_)) => e.add("spec.remote", "set host or clusterRef, not both"),
        (Some(host), None) => {
            if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
                e.add(
                    "spec.remote.host",
                    format!("'{host}' is not a host name or IP"),
                );
            }
        }
        (None, Some(cr)) => {
            e.object_name("spec.remote.clusterRef.name", &cr.name);
            if cr.name == spec.cluster_ref.name {
                e.add(
                    "spec.remote.clusterRef.name",
                    "a bridge cannot point at its own cluster",
                );
            }
            // The endpoint and CA are the remote cluster's; only the client identity (a
            // DeviceIdentity of the remote cluster) is chosen by the user.
            let ca = r.tls.as_ref().is_some_and(|t| t.ca_secret_ref.is_some());
            if r.port.is_some() || ca || r.credentials_secret_ref.is_some() {
                e.add(
                    "spec.remote",
                    "port, tls.caSecretRef and credentialsSecretRef are resolved by the operator with clusterRef; remove them (tls.clientIdentityRef stays)",
                );
            }
        }
    }
    if let Some(port) = r.port {
        if !(1..=65_535).contains(&port) {
            e.add("spec.remote.port", format!("must be 1-65535, got {port}"));
        }
    }
    if let Some(tls) = &r.tls {
        if let Some(ca) = &tls.ca_secret_ref {
            e.object_name("spec.remote.tls.caSecretRef.name", &ca.name);
        }
        if let Some(id) = &tls.client_identity_ref {
            e.object_name("spec.remote.tls.clientIdentityRef.name", &id.name);
        }
    }
    if let Some(c) = &r.credentials_secret_ref {
        e.object_name("spec.remote.credentialsSecretRef.name", &c.name);
    }
    if spec.routes.is_empty() {
        e.add("spec.routes", "must list at least one route");
    }
    for (i, route) in spec.routes.iter().enumerate() {
        let p = format!("spec.routes[{i}]");
        let local = check_filter(&mut e, &format!("{p}.local"), &route.local);
        let remote = check_filter(&mut e, &format!("{p}.remote"), &route.remote);
        if local && remote {
            if let Err(msg) = mapping(&route.local, &route.remote) {
                e.add(format!("{p}.remote"), msg);
            }
        }
        if route.qos > 1 {
            e.add(
                format!("{p}.qos"),
                format!("must be 0 or 1, got {}", route.qos),
            );
        }
    }
    if !(1..=10_000_000).contains(&spec.buffer.max_messages) {
        e.add("spec.buffer.maxMessages", "must be 1-10000000");
    }
    e.duration("spec.buffer.maxAge", &spec.buffer.max_age);
    e.into_vec()
}

fn check_filter(e: &mut Errors, path: &str, f: &str) -> bool {
    let res = topic::parse_filter(f).and_then(|pf| match pf.share_group {
        Some(_) => Err(TopicError::SharedMalformed),
        None => Ok(()),
    });
    match res {
        Ok(()) => true,
        Err(TopicError::SharedMalformed) if f.starts_with(topic::SHARE_PREFIX) => {
            e.add(path, "shared subscriptions cannot be bridged");
            false
        }
        Err(err) => {
            e.add(path, format!("'{f}': {err}"));
            false
        }
    }
}

/// The mapping rules are `contract::bridge::Mapping`'s, shared with the broker.
fn mapping(local: &str, remote: &str) -> Result<(), String> {
    contract::bridge::Mapping::new(local, remote)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings() {
        assert!(mapping("site/+/telemetry/#", "prod/acme/paris/+/telemetry/#").is_ok());
        assert!(mapping("a/b", "c/d/e").is_ok());
        assert!(mapping("site/+/telemetry/#", "prod/#").is_err());
        assert!(mapping("site/+/x", "prod/+/y").is_err());
        assert!(mapping("site/#", "prod/x").is_err());
        assert!(mapping("prod/#", "#").is_err());
    }
}
