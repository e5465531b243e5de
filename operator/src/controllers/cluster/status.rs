//! The pure status step of the MqttCluster pipeline: conditions, node counts, endpoints.

use crds::cluster::{CoreStatus, EndpointStatus, MqttClusterStatus};
use crds::condition::{
    condition, upsert, Time, ACL_APPLIED, CERTIFICATES_READY, DEGRADED, MONITORING_READY,
    PROGRESSING, READY, REASON_INVALID,
};
use crds::MqttCluster;

use super::acknowledge::{Acknowledgement, Revisions};
use super::build::Summary;
use crate::render::names::Names;
use crds::cluster::AclPolicyStatus;

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

/// What the push to the core nodes found, for the `AclApplied` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclPush {
    /// The revisions pushed.
    pub desired: Revisions,
    /// How many core nodes are desired.
    pub desired_nodes: usize,
    /// The verdict over those nodes.
    pub ack: Acknowledgement,
}

/// Status of a valid cluster after apply and push. `ready` is the StatefulSet's ready replicas.
/// `aclRevision` and `aclPolicies` move to the built rule set only once every desired node has
/// acknowledged it; until then they keep naming the last rule set every node ran.
pub fn applied(
    cluster: &MqttCluster,
    summary: &Summary,
    ready: i32,
    push: &AclPush,
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
    let message = push.ack.message(push.desired_nodes, &push.desired);
    upsert(
        c,
        if push.ack.complete {
            condition(ACL_APPLIED, true, "Acknowledged", message, gen, now.clone())
        } else {
            condition(ACL_APPLIED, false, "NodesBehind", message, gen, now.clone())
        },
    );
    if push.ack.complete {
        status.acl_revision = Some(summary.acl_revision.clone());
        status.acl_policies = summary
            .acl_policies
            .iter()
            .map(|(name, generation)| AclPolicyStatus {
                name: name.clone(),
                generation: *generation,
            })
            .collect();
    }
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
            acl_policies: vec![("p".into(), 4)],
            monitoring_crd_missing: true,
            duplicate_device_ids: vec![],
            next_renewal: None,
            certificates: Vec::new(),
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

    fn push(complete: bool) -> AclPush {
        AclPush {
            desired: Revisions {
                acl: Some("abc".into()),
                revoked: Some("r1".into()),
                trust: None,
                bridges: None,
            },
            desired_nodes: 3,
            ack: Acknowledgement {
                complete,
                behind: if complete {
                    vec![]
                } else {
                    vec![("qs-core-2".into(), "acl at old".into())]
                },
            },
        }
    }

    #[test]
    fn acl_revision_and_policies_move_only_when_every_node_acknowledged() {
        let mut c = qs();
        let behind = applied(&c, &summary(), 3, &push(false), t(10));
        let cond = find(&behind.conditions, ACL_APPLIED).unwrap();
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", "NodesBehind")
        );
        assert!(
            cond.message.contains("qs-core-2: acl at old"),
            "{}",
            cond.message
        );
        assert_eq!(behind.acl_revision, None);
        assert!(behind.acl_policies.is_empty());

        c.status = Some(behind);
        let done = applied(&c, &summary(), 3, &push(true), t(20));
        assert!(is_true(&done.conditions, ACL_APPLIED));
        assert_eq!(done.acl_revision.as_deref(), Some("abc"));
        assert_eq!(
            done.acl_policies,
            vec![AclPolicyStatus {
                name: "p".into(),
                generation: 4
            }]
        );

        // A newer rule set not yet everywhere: the acknowledged one stays reported.
        c.status = Some(done);
        let mut newer = summary();
        newer.acl_revision = "def".into();
        newer.acl_policies = vec![("p".into(), 5)];
        let lagging = applied(&c, &newer, 3, &push(false), t(30));
        assert_eq!(lagging.acl_revision.as_deref(), Some("abc"));
        assert_eq!(lagging.acl_policies[0].generation, 4);
    }

    #[test]
    fn status_is_stable_when_nothing_changed() {
        let mut c = qs();
        let first = applied(&c, &summary(), 1, &push(false), t(10));
        c.status = Some(first.clone());
        let second = applied(&c, &summary(), 1, &push(false), t(20));
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
