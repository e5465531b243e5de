//! Tests of the pure build step.

use super::*;
use crate::pki::SeededRandomness;

fn cluster(yaml: &str) -> MqttCluster {
    let mut c: MqttCluster = serde_yaml::from_str(yaml).unwrap();
    c.metadata.uid = Some("uid-1".into());
    c
}

const QS: &str = "apiVersion: mqtt.operator.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: qs, namespace: iot}\nspec: {core: {replicas: 3}}\n";

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

#[test]
fn fresh_cluster_gets_every_child_with_owner_reference() {
    let c = cluster(QS);
    let d = build(
        &c,
        &Observed::default(),
        &mut SeededRandomness::new(b"t"),
        now(),
    )
    .unwrap();
    let secret = d.cluster_ca_secret.as_ref().unwrap();
    assert_eq!(secret.metadata.name.as_deref(), Some("qs-cluster-ca"));
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.uid.as_str(), owner.controller),
        ("uid-1", Some(true))
    );
    let cfg = d.config.data.as_ref().unwrap();
    assert!(cfg.contains_key(files::BROKER));
    assert!(d
        .config
        .binary_data
        .as_ref()
        .unwrap()
        .contains_key(files::ACL));
    assert_eq!(
        d.core.stateful_set.metadata.name.as_deref(),
        Some("qs-core")
    );
    // Monitoring is on by default; no CRDs observed -> condition, nothing to apply.
    assert!(d.summary.monitoring_crd_missing);
    assert!(d.monitoring.is_empty());
    let dashboard = d.dashboard.as_ref().unwrap();
    assert_eq!(dashboard["metadata"]["ownerReferences"][0]["uid"], "uid-1");
}

#[test]
fn existing_material_is_reused_so_a_second_build_is_identical() {
    let c = cluster(QS);
    let first = build(
        &c,
        &Observed::default(),
        &mut SeededRandomness::new(b"a"),
        now(),
    )
    .unwrap();
    let observed = Observed {
        cluster_ca: first.cluster_ca_secret.as_ref().unwrap().data.clone(),
        clients_ca: first.clients_ca_secret.as_ref().unwrap().data.clone(),
        server_tls: first.server_tls_secret.data.clone(),
        push_token: first.push_token_secret.data.clone(),
        ..Observed::default()
    };
    // Different randomness: anything regenerated would differ.
    let second = build(&c, &observed, &mut SeededRandomness::new(b"b"), now()).unwrap();
    assert_eq!(first.cluster_ca_secret, second.cluster_ca_secret);
    assert_eq!(first.clients_ca_secret, second.clients_ca_secret);
    assert_eq!(first.server_tls_secret, second.server_tls_secret);
    assert_eq!(first.push_token_secret, second.push_token_secret);
    assert_eq!(first.ca_bundle, second.ca_bundle);
    assert_eq!(first.config, second.config);
}

#[test]
fn a_broken_existing_ca_is_an_error_not_a_regeneration() {
    let c = cluster(QS);
    let observed = Observed {
        cluster_ca: Some(BTreeMap::from([("tls.crt".into(), bytes("junk"))])),
        ..Observed::default()
    };
    let err = build(&c, &observed, &mut SeededRandomness::new(b"a"), now()).unwrap_err();
    assert!(err.to_string().contains("qs-cluster-ca"), "{err}");
}

#[test]
fn an_invalid_policy_edit_leaves_the_pushed_rule_set_as_it_was() {
    let mut c = cluster(QS);
    let tele = |topic: &str, generation: i64| -> TopicPolicy {
        serde_yaml::from_str(&format!(
            "apiVersion: mqtt.operator.dev/v1alpha1\nkind: TopicPolicy\nmetadata: {{name: tele, namespace: iot, generation: {generation}}}\nspec: {{clusterRef: {{name: qs}}, subjects: [{{all: true}}], rules: [{{effect: allow, actions: [publish], topics: ['{topic}']}}]}}\n"
        ))
        .unwrap()
    };
    let acl_of = |d: &Desired| d.config.binary_data.as_ref().unwrap()[files::ACL].0.clone();
    let good = build(
        &c,
        &Observed {
            policies: vec![tele("t/#", 1)],
            ..Observed::default()
        },
        &mut SeededRandomness::new(b"a"),
        now(),
    )
    .unwrap();
    assert_eq!(good.summary.acl_policies, vec![("tele".into(), 1)]);
    // The nodes acknowledged generation 1.
    c.status = Some(crds::cluster::MqttClusterStatus {
        acl_revision: Some(good.summary.acl_revision.clone()),
        acl_policies: vec![crds::cluster::AclPolicyStatus {
            name: "tele".into(),
            generation: 1,
        }],
        ..Default::default()
    });

    // Generation 2 is invalid: the ACL pushed stays byte for byte the same, and the status
    // keeps naming generation 1 as the one in force.
    let observed = Observed {
        policies: vec![tele("t/#/x", 2)],
        previous_acl: Some(acl_of(&good)),
        ..Observed::default()
    };
    let after = build(&c, &observed, &mut SeededRandomness::new(b"a"), now()).unwrap();
    assert_eq!(acl_of(&after), acl_of(&good));
    assert_eq!(after.summary.acl_revision, good.summary.acl_revision);
    assert_eq!(after.summary.acl_policies, vec![("tele".into(), 1)]);

    // Without the previous rule set (first build), nothing of the invalid policy exists.
    let fresh = build(
        &c,
        &Observed {
            policies: vec![tele("t/#/x", 2)],
            ..Observed::default()
        },
        &mut SeededRandomness::new(b"a"),
        now(),
    )
    .unwrap();
    assert_ne!(fresh.summary.acl_revision, good.summary.acl_revision);
    assert!(fresh.summary.acl_policies.is_empty());
}

#[test]
fn revoked_identities_serials_are_in_the_revoked_set() {
    let d: DeviceIdentity = serde_yaml::from_str(
        "apiVersion: mqtt.operator.dev/v1alpha1\nkind: DeviceIdentity\nmetadata: {name: d, namespace: iot}\nspec: {clusterRef: {name: qs}, deviceId: d1, state: Revoked}\nstatus: {serial: 'ab01', previousSerials: [{serial: 'cd02', notAfter: '2030-01-01T00:00:00Z'}]}\n",
    )
    .unwrap();
    let set = revoked_set("qs", std::slice::from_ref(&d));
    assert_eq!(set.serials.len(), 2);
    assert!(revoked_set("other", std::slice::from_ref(&d))
        .serials
        .is_empty());
    let mut suspended = d.clone();
    suspended.spec.state = DeviceState::Suspended;
    assert_eq!(
        revoked_set("qs", std::slice::from_ref(&suspended)).serials,
        set.serials,
        "a suspended identity's serials are refused too"
    );
    let mut active = d;
    active.spec.state = DeviceState::Active;
    assert!(
        revoked_set("qs", &[active]).serials.is_empty(),
        "an Active identity's serials leave the set"
    );
}

#[test]
fn the_cluster_certificates_are_summarised_for_the_expiry_metrics() {
    let d = build(
        &cluster(QS),
        &Observed::default(),
        &mut SeededRandomness::new(b"m"),
        now(),
    )
    .unwrap();
    let kinds: Vec<&str> = d.summary.certificates.iter().map(|c| c.0).collect();
    assert_eq!(kinds, ["cluster-ca", "clients-ca", "server"]);
    for (kind, not_after, renewal) in &d.summary.certificates {
        let renewal = renewal.unwrap_or_else(|| panic!("{kind}: no renewal time"));
        assert!(now() < renewal && renewal < *not_after, "{kind}");
    }
    // Defaults: CAs 1825 d renewed 180 d before; the server 90 d renewed 30 d before.
    let day = Duration::from_secs(86_400);
    let (_, ca_end, ca_renew) = d.summary.certificates[0];
    assert_eq!(ca_end.duration_since(ca_renew.unwrap()).unwrap(), 180 * day);
    let (_, server_end, server_renew) = d.summary.certificates[2];
    assert_eq!(server_renew, d.summary.next_renewal);
    assert_eq!(
        server_end.duration_since(server_renew.unwrap()).unwrap(),
        30 * day
    );
}
