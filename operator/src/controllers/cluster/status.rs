//! The pure status step of the MqttCluster pipeline: conditions, node counts, endpoints.

use crds::cluster::{CoreStatus, EndpointStatus, MqttClusterStatus};
use crds::condition::{
    condition, upsert, Time, ACL_APPLIED, CERTIFICATES_READY, DEGRADED, MONITORING_READY,
    PROGRESSING, READY, REASON_INVALID,
};
use crds::MqttCluster;

use super::build::Summary;
use crate::render::names::Names;

/// Status of a cluster whose spec is invalid: `Ready=False, reason=Invalid`, the rest kept.
pub fn invalid(cluster: &MqttCluster, message: &str, now: Time) -> MqttClusterStatus {
    let mut status = cluster.status.clone().unwrap_or_default();
    let generation = cluster.metadata.generation;
    status.observed_generation = generation;
    upsert(
        &mut status.conditions,
        condition(READY, false, REASON_INVALID, message, generation, now),
    );
    status
}

/// Client endpoints (`<service>.<namespace>.svc:<port>`), one per enabled listener.
pub fn endpoints(cluster: &MqttCluster) -> Vec<EndpointStatus> {
    let names = Names::new(cluster.metadata.name.as_deref().unwrap_or_default());
    let ns = cluster.metadata.namespace.as_deref().unwrap_or_default();
    let host = format!("{}.{ns}.svc", names.client_service());
    let l = &cluster.spec.listeners;
    let mut out = Vec::new();
    if l.mqtts.enabled {
        out.push(("mqtts", l.mqtts.port));
    }
    if let Some(w) = l.wss.as_ref().filter(|w| w.enabled) {
        out.push(("wss", w.port));
    }
    if let Some(m) = l.mqtt.as_ref().filter(|m| m.enabled) {
        out.push(("mqtt", m.port));
    }
    out.into_iter()
        .map(|(listener, port)| EndpointStatus {
            listener: listener.into(),
            address: format!("{host}:{port}"),
        })
        .collect()
}

/// Status of a valid cluster after apply. `ready` is the StatefulSet's ready replicas.
pub fn applied(
    cluster: &MqttCluster,
    summary: &Summary,
    ready: i32,
    now: Time,
) -> MqttClusterStatus {
    let mut status = cluster.status.clone().unwrap_or_default();
    let gen = cluster.metadata.generation;
    let desired = cluster.spec.core.replicas;
    let names = Names::new(cluster.metadata.name.as_deref().unwrap_or_default());
    status.observed_generation = gen;
    status.core = Some(CoreStatus {
        desired,
        ready,
        readiness: format!("{ready}/{desired}"),
    });
    status.endpoints = endpoints(cluster);
    status.endpoint = status.endpoints.first().map(|e| e.address.clone());
    status.ca_bundle = Some(names.ca_bundle());
    let c = &mut status.conditions;
    upsert(
        c,
        condition(
            CERTIFICATES_READY,
            true,
            "Issued",
            "cluster CA, clients CA and server certificate are valid",
            gen,
            now.clone(),
        ),
    );
    // Node acknowledgement (readyz revisions) is checked by the ACL push, not here yet.
    upsert(
        c,
        condition(
            ACL_APPLIED,
            false,
            "NotVerified",
            format!(
                "rule set revision {} written to the config ConfigMap; node acknowledgement not checked",
                summary.acl_revision
            ),
            gen,
            now.clone(),
        ),
    );
    let all_ready = ready >= desired;
    upsert(
        c,
        if all_ready {
            condition(
                PROGRESSING,
                false,
                "Stable",
                "all core nodes ready",
                gen,
                now.clone(),
            )
        } else {
            condition(
                PROGRESSING,
                true,
                "RollingOut",
                format!("{ready}/{desired} core nodes ready"),
                gen,
                now.clone(),
            )
        },
    );
    upsert(
        c,
        if ready > 0 && !all_ready {
            condition(
                DEGRADED,
                true,
                "NodesUnavailable",
                format!("{ready}/{desired} core nodes ready"),
                gen,
                now.clone(),
            )
        } else {
            condition(
                DEGRADED,
                false,
                "AsExpected",
                "no core node lost",
                gen,
                now.clone(),
            )
        },
    );
    upsert(
        c,
        if summary.monitoring_crd_missing {
            condition(
                MONITORING_READY,
                false,
                "CrdMissing",
                "monitoring.coreos.com/v1 ServiceMonitor/PrometheusRule CRDs are not installed",
                gen,
                now.clone(),
            )
        } else {
            condition(
                MONITORING_READY,
                true,
                "Applied",
                "monitoring objects applied (or none enabled)",
                gen,
                now.clone(),
            )
        },
    );
    upsert(
        c,
        if all_ready {
            condition(READY, true, "Ready", "all core nodes ready", gen, now)
        } else {
            condition(
                READY,
                false,
                "CoreNotReady",
                format!("{ready}/{desired} core nodes ready"),
                gen,
                now,
            )
        },
    );
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::condition::{find, is_true};

    fn t(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    fn summary() -> Summary {
        Summary {
            acl_revision: "abc".into(),
            monitoring_crd_missing: true,
            duplicate_device_ids: vec![],
            next_renewal: None,
        }
    }

    fn qs() -> MqttCluster {
        let mut c: MqttCluster = serde_yaml::from_str(
            "apiVersion: mqtt.operator.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: qs, namespace: iot, generation: 2}\nspec: {core: {replicas: 3}}\n",
        )
        .unwrap();
        c.status = None;
        c
    }

    #[test]
    fn status_is_stable_when_nothing_changed() {
        let mut c = qs();
        let first = applied(&c, &summary(), 1, t(10));
        c.status = Some(first.clone());
        let second = applied(&c, &summary(), 1, t(20));
        assert_eq!(first, second, "a later clock alone must not change status");
        assert_eq!(second.core.as_ref().unwrap().readiness, "1/3");
        assert!(is_true(&second.conditions, DEGRADED));
        assert_eq!(
            find(&second.conditions, MONITORING_READY).unwrap().reason,
            "CrdMissing"
        );
        assert_eq!(second.endpoint.as_deref(), Some("qs.iot.svc:8883"));
    }

    #[test]
    fn invalid_names_the_field() {
        let s = invalid(&qs(), "spec.core.replicas: must be odd", t(1));
        let r = find(&s.conditions, READY).unwrap();
        assert_eq!((r.status.as_str(), r.reason.as_str()), ("False", "Invalid"));
        assert!(r.message.contains("spec.core.replicas"));
        assert_eq!(s.observed_generation, Some(2));
    }
}
