use super::*;
use crate::manifest::{parse_files, SourceFile};

const CLUSTER: &str = "apiVersion: mqtt.operator.dev/v1alpha1
kind: MqttCluster
metadata: {name: c}
spec:
  core: {replicas: 2}
---
apiVersion: mqtt.operator.dev/v1alpha1
kind: Bridge
metadata: {name: up}
spec:
  clusterRef: {name: c}
  remote: {host: central.example.com, port: 8883}
  routes: [{direction: out, local: 'a/#', remote: 'b/#'}]
";

fn device(id: &str, extra: &str) -> String {
    format!(
        "---
apiVersion: mqtt.operator.dev/v1alpha1
kind: DeviceIdentity
metadata: {{name: {id}, labels: {{class: s}}}}
spec:
  clusterRef: {{name: c}}
  deviceId: {id}
{extra}"
    )
}

fn policy(topic: &str) -> String {
    format!(
        "---
apiVersion: mqtt.operator.dev/v1alpha1
kind: TopicPolicy
metadata: {{name: p}}
spec:
  clusterRef: {{name: c}}
  subjects: [{{deviceSelector: {{matchLabels: {{class: s}}}}}}]
  rules: [{{effect: allow, actions: [publish], topics: ['{topic}']}}]
"
    )
}

fn plan_of(text: &str) -> Plan {
    let docs = parse_files(&[SourceFile {
        path: "m.yaml".into(),
        text: text.into(),
    }])
    .unwrap();
    plan(&docs).unwrap()
}

#[test]
fn plan_reads_devices_key_algorithms_and_bridges() {
    let p = plan_of(&format!(
        "{CLUSTER}{}{}{}",
        device(
            "b",
            "  certificate: {keyAlgorithm: ed25519, validity: 30d}\n"
        ),
        device("a", ""),
        policy("d/${deviceId}/#")
    ));
    assert_eq!(p.name(), "c");
    assert_eq!(p.namespace, "default");
    assert_eq!(p.replicas(), 2);
    let ids: Vec<_> = p.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(
        p.devices[1].issuance,
        Issuance::GeneratedKey(DeviceCertProfile {
            key_algorithm: KeyAlgorithm::Ed25519,
            validity: Duration::from_secs(30 * 86_400),
        })
    );
    assert_eq!(
        p.devices[0].issuance,
        Issuance::GeneratedKey(DeviceCertProfile::default())
    );
    assert_eq!(
        p.bridges,
        [("up".to_string(), "central.example.com:8883".to_string())]
    );
}

#[test]
fn diff_reports_acl_revision_added_and_state_changes() {
    let before = plan_of(&format!("{CLUSTER}{}{}", device("a", ""), policy("x/#")));
    let after = plan_of(&format!(
        "{CLUSTER}{}{}{}",
        device("a", "  state: Revoked\n"),
        device("n", ""),
        policy("y/#")
    ));
    let c = diff(&before, &after);
    let (old, new) = c.acl.clone().unwrap();
    assert_eq!(old, before.acl.rules.revision());
    assert_eq!(new, after.acl.rules.revision());
    assert_ne!(old, new);
    assert_eq!(c.added, ["n"]);
    assert!(c.removed.is_empty());
    assert_eq!(c.state, [("a".to_string(), DeviceState::Revoked)]);
    assert!(!c.cluster);
    assert!(diff(&after, &after).is_empty());
}

#[test]
fn exactly_one_cluster_is_required() {
    let docs = parse_files(&[SourceFile {
        path: "m.yaml".into(),
        text: policy("x/#"),
    }])
    .unwrap();
    assert!(matches!(plan(&docs), Err(PlanError::ClusterCount(0))));
}
