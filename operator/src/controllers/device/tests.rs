//! Unit tests of the pure DeviceIdentity build: no IO, seeded randomness, a fixed clock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crds::condition::{find, ISSUED, READY, REASON_INVALID};
use crds::device::ROTATE_ANNOTATION;
use crds::DeviceIdentity;
use k8s_openapi::api::core::v1::Secret;

use super::build::{
    build, older_holder, ClusterFacts, Desired, Observed, CA_KEY, CERT_KEY, KEY_KEY,
};
use super::status;
use crate::pki::{
    CaKind, CaProfile, CertificateAuthority, CertificateInfo, KeyAlgorithm, PrivateKey,
    RotationReason, SeededRandomness,
};

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

const DAY: Duration = Duration::from_secs(86_400);

fn device(extra_spec: &str) -> DeviceIdentity {
    serde_yaml::from_str(&format!(
        "apiVersion: mqtt.operator.dev/v1alpha1\nkind: DeviceIdentity\n\
         metadata: {{name: press, namespace: iot, uid: u-press, generation: 1, creationTimestamp: '2025-01-01T00:00:00Z'}}\n\
         spec: {{clusterRef: {{name: edge}}, deviceId: press-17{extra_spec}}}\n"
    ))
    .expect("device yaml")
}

fn clients_ca(seed: &[u8]) -> CertificateAuthority {
    CertificateAuthority::generate(
        &CaProfile::new(CaKind::Clients, "iot", "edge"),
        &mut SeededRandomness::new(seed),
        now() - DAY,
    )
    .expect("clients CA")
}

const BUNDLE: &str = "-----BEGIN CERTIFICATE-----\nY2x1c3Rlci1jYQ==\n-----END CERTIFICATE-----\n";

fn cluster(ca: &CertificateAuthority) -> ClusterFacts {
    ClusterFacts {
        uid: "cluster-uid".into(),
        clients_ca_secret: "edge-clients-ca".into(),
        clients_ca: Some((ca.cert_pem(), ca.key_pem())),
        trust_bundle: Some(BUNDLE.into()),
    }
}

fn observed(ca: &CertificateAuthority) -> Observed {
    Observed {
        cluster: Some(cluster(ca)),
        ..Observed::default()
    }
}

/// Builds with a fresh seed per call (reproducible across runs, distinct between calls, as
/// real serials are).
fn run(d: &DeviceIdentity, o: &Observed, at: SystemTime) -> Desired {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let seed = CALLS.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    build(d, o, &mut SeededRandomness::new(&seed), at).expect("build")
}

fn data(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|b| String::from_utf8(b.0.clone()).expect("utf-8"))
}

fn cert_of(secret: &Secret) -> CertificateInfo {
    CertificateInfo::from_pem(&data(secret, CERT_KEY).expect("tls.crt")).expect("certificate")
}

/// The identity as the API server holds it after `desired` was applied: status written.
fn after(mut d: DeviceIdentity, desired: &Desired) -> DeviceIdentity {
    d.status = Some(desired.status.clone());
    d
}

/// First issuance, then the state the next reconcile observes.
fn issued_once(d: &DeviceIdentity, ca: &CertificateAuthority) -> (DeviceIdentity, Observed) {
    let first = run(d, &observed(ca), now());
    let o = Observed {
        secret: first.secret.clone(),
        ..observed(ca)
    };
    (after(d.clone(), &first), o)
}

fn ready(desired: &Desired) -> (String, String, String) {
    let c = find(&desired.status.conditions, READY).expect("Ready");
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[test]
fn first_issuance_writes_a_tls_secret_chaining_to_the_clients_ca() {
    let ca = clients_ca(b"ca");
    let d = device("");
    let out = run(&d, &observed(&ca), now());
    let secret = out.secret.as_ref().expect("secret");
    assert_eq!(secret.metadata.name.as_deref(), Some("press-tls"));
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let owner = &secret.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("DeviceIdentity", "u-press", Some(true))
    );
    assert_eq!(data(secret, CA_KEY).as_deref(), Some(BUNDLE));
    let info = cert_of(secret);
    assert_eq!(info.common_name.as_deref(), Some("press-17"));
    assert_eq!(
        info.uris,
        vec!["urn:mqtt-operator:iot/edge/device/press-17"]
    );
    assert!(info.issued_by(ca.info()) && info.client_auth);
    let key = PrivateKey::from_pem(&data(secret, KEY_KEY).expect("tls.key")).expect("key");
    let cert = crate::pki::inspect::parse_der(
        &crate::pki::inspect::pem_certificates(&data(secret, CERT_KEY).unwrap()).unwrap()[0],
    )
    .unwrap()
    .public_key()
    .raw
    .to_vec();
    assert_eq!(cert, key.public_key_der(), "tls.key matches tls.crt");

    let s = &out.status;
    assert_eq!(s.serial.as_deref(), Some(info.serial.to_string().as_str()));
    assert_eq!(
        s.fingerprint_sha256.as_ref(),
        Some(&info.fingerprint_sha256)
    );
    assert_eq!(s.secret_name.as_deref(), Some("press-tls"));
    let renewal = status::parse_rfc3339(s.renewal_time.as_deref().unwrap()).unwrap();
    let not_after = status::parse_rfc3339(s.not_after.as_deref().unwrap()).unwrap();
    // 90d validity, renewBefore 30d, jitter up to 6d.
    assert!(renewal <= not_after - 30 * DAY && renewal >= not_after - 36 * DAY);
    assert_eq!(ready(&out).0, "True");
    assert_eq!(find(&s.conditions, ISSUED).unwrap().status, "True");
    assert_eq!(out.issued, Some(RotationReason::NotIssued));
    assert_eq!(out.notes.len(), 1);
    assert_eq!(out.notes[0].reason, "Issued");
    assert!(out.requeue.is_some_and(|r| r <= super::build::RESYNC));
}

#[test]
fn a_valid_certificate_is_kept_so_nothing_changes() {
    let ca = clients_ca(b"ca");
    let (d, o) = issued_once(&device(""), &ca);
    let again = run(&d, &o, now() + DAY);
    assert_eq!(again.secret, o.secret, "same Secret: no re-apply");
    assert_eq!(
        Some(&again.status),
        d.status.as_ref(),
        "same status: no write"
    );
    assert!(again.notes.is_empty() && again.issued.is_none());
}

#[test]
fn a_new_rotate_annotation_value_rotates_and_keeps_the_old_serial() {
    let ca = clients_ca(b"ca");
    let (mut d, o) = issued_once(&device(""), &ca);
    let old = d.status.clone().unwrap();
    d.metadata.annotations = Some(BTreeMap::from([(ROTATE_ANNOTATION.into(), "1".into())]));
    let out = run(&d, &o, now() + DAY);
    assert_eq!(out.issued, Some(RotationReason::RotateRequested));
    assert_ne!(out.status.serial, old.serial);
    assert_eq!(out.status.previous_serials.len(), 1);
    assert_eq!(
        Some(&out.status.previous_serials[0].serial),
        old.serial.as_ref()
    );
    assert_eq!(
        Some(&out.status.previous_serials[0].not_after),
        old.not_after.as_ref()
    );
    assert_eq!(out.notes[0].reason, "Rotated");
    // The handled value is remembered: the next reconcile keeps the new certificate.
    let o2 = Observed {
        secret: out.secret.clone(),
        ..o
    };
    let d2 = after(d, &out);
    let again = run(&d2, &o2, now() + DAY);
    assert!(again.issued.is_none() && again.secret == o2.secret);
}

#[test]
fn past_the_renewal_time_it_rotates() {
    let ca = clients_ca(b"ca");
    let (d, o) = issued_once(&device(""), &ca);
    let renewal =
        status::parse_rfc3339(d.status.as_ref().unwrap().renewal_time.as_deref().unwrap()).unwrap();
    let before = run(&d, &o, renewal - Duration::from_secs(1));
    assert!(before.issued.is_none());
    let out = run(&d, &o, renewal);
    assert_eq!(out.issued, Some(RotationReason::RenewalDue));
    assert_eq!(out.status.previous_serials.len(), 1);
}

#[test]
fn a_new_clients_ca_rotates() {
    let ca = clients_ca(b"ca");
    let (d, o) = issued_once(&device(""), &ca);
    let other = clients_ca(b"another ca");
    let o2 = Observed {
        cluster: Some(cluster(&other)),
        ..o
    };
    let out = run(&d, &o2, now() + DAY);
    assert_eq!(out.issued, Some(RotationReason::IssuerChanged));
    assert!(cert_of(out.secret.as_ref().unwrap()).issued_by(other.info()));
}

#[test]
fn a_missing_or_corrupt_secret_is_reissued() {
    let ca = clients_ca(b"ca");
    let (d, o) = issued_once(&device(""), &ca);
    let missing = run(&d, &observed(&ca), now() + DAY);
    assert_eq!(missing.issued, Some(RotationReason::NotIssued));
    assert_eq!(missing.notes[0].reason, "Rotated");
    let mut corrupt = o.secret.clone().unwrap();
    let other_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256, &mut SeededRandomness::new(b"x"))
        .unwrap()
        .to_pkcs8_pem();
    corrupt.data.as_mut().unwrap().insert(
        KEY_KEY.into(),
        k8s_openapi::ByteString(other_key.into_bytes()),
    );
    let o2 = Observed {
        secret: Some(corrupt),
        ..o
    };
    assert_eq!(
        run(&d, &o2, now() + DAY).issued,
        Some(RotationReason::NotIssued),
        "a key not matching the certificate is re-issued"
    );
}

#[test]
fn expired_previous_serials_are_pruned() {
    let ca = clients_ca(b"ca");
    let (mut d, o) = issued_once(&device(""), &ca);
    d.status.as_mut().unwrap().previous_serials = vec![
        crds::device::PreviousSerial {
            serial: "aa".into(),
            not_after: status::rfc3339(now() - DAY),
        },
        crds::device::PreviousSerial {
            serial: "bb".into(),
            not_after: status::rfc3339(now() + DAY),
        },
    ];
    let out = run(&d, &o, now() + Duration::from_secs(60));
    let kept: Vec<_> = out
        .status
        .previous_serials
        .iter()
        .map(|p| p.serial.as_str())
        .collect();
    assert_eq!(kept, ["bb"]);
}

fn csr_for(cn: &str) -> (String, PrivateKey) {
    let key =
        PrivateKey::generate(KeyAlgorithm::EcdsaP256, &mut SeededRandomness::new(b"dev")).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let csr = params.serialize_request(&key).unwrap();
    (csr.pem().unwrap(), key)
}

fn with_csr(pem: &str) -> DeviceIdentity {
    let mut d = device("");
    d.spec.csr = Some(pem.to_string());
    d
}

#[test]
fn csr_mode_signs_the_device_key_and_writes_no_private_key() {
    let ca = clients_ca(b"ca");
    let (pem, key) = csr_for("press-17");
    let d = with_csr(&pem);
    let out = run(&d, &observed(&ca), now());
    let secret = out.secret.as_ref().expect("secret");
    assert_eq!(data(secret, KEY_KEY), None);
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    let der = crate::pki::inspect::pem_certificates(&data(secret, CERT_KEY).unwrap()).unwrap();
    let cert = crate::pki::inspect::parse_der(&der[0]).unwrap();
    assert_eq!(cert.public_key().raw, key.public_key_der().as_slice());
    // Kept on the next reconcile; a changed CSR rotates.
    let o = Observed {
        secret: out.secret.clone(),
        ..observed(&ca)
    };
    let d2 = after(d, &out);
    assert!(run(&d2, &o, now() + DAY).issued.is_none());
    let other =
        PrivateKey::generate(KeyAlgorithm::Ed25519, &mut SeededRandomness::new(b"k2")).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "press-17");
    let mut d3 = d2.clone();
    d3.spec.csr = Some(params.serialize_request(&other).unwrap().pem().unwrap());
    assert_eq!(
        run(&d3, &o, now() + DAY).issued,
        Some(RotationReason::CsrChanged)
    );
}

#[test]
fn a_csr_with_another_cn_is_refused_naming_spec_csr() {
    let ca = clients_ca(b"ca");
    let (pem, _) = csr_for("someone-else");
    let out = run(&with_csr(&pem), &observed(&ca), now());
    assert!(out.secret.is_none(), "nothing written");
    let (status, reason, message) = ready(&out);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", REASON_INVALID)
    );
    assert!(message.starts_with("spec.csr"), "{message}");
    assert!(message.contains("someone-else"), "{message}");
    assert_eq!(out.notes.len(), 1);
    assert!(out.notes[0].warning && out.notes[0].reason == REASON_INVALID);
    assert_eq!(out.requeue, None, "no requeue loop on an invalid spec");
    // The same refusal again: no second Event.
    let again = run(&after(with_csr(&pem), &out), &observed(&ca), now());
    assert!(again.notes.is_empty());
}

#[test]
fn the_older_identity_keeps_a_duplicate_device_id() {
    let older = device("");
    let mut newer = device("");
    newer.metadata.name = Some("press-copy".into());
    newer.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2025-06-01T00:00:00Z".parse().unwrap(),
    ));
    let mut other_cluster = newer.clone();
    other_cluster.metadata.name = Some("elsewhere".into());
    other_cluster.spec.cluster_ref.name = "other".into();
    let all = [older.clone(), newer.clone(), other_cluster.clone()];
    assert_eq!(older_holder(&newer, &all), Some("press".into()));
    assert_eq!(older_holder(&older, &all), None);
    assert_eq!(older_holder(&other_cluster, &all), None);
    // Same creation time: the name decides.
    let mut twin = device("");
    twin.metadata.name = Some("a-press".into());
    assert_eq!(older_holder(&older, [&twin]), Some("a-press".into()));

    let ca = clients_ca(b"ca");
    let o = Observed {
        older_holder: older_holder(&newer, &all),
        ..observed(&ca)
    };
    let out = run(&newer, &o, now());
    assert!(out.secret.is_none());
    let (status, reason, message) = ready(&out);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", status::REASON_DUPLICATE)
    );
    assert!(message.contains("DeviceIdentity press "), "{message}");
}

#[test]
fn revoked_and_suspended_keep_their_serials_and_issue_nothing() {
    let ca = clients_ca(b"ca");
    let (d, o) = issued_once(&device(""), &ca);
    for (state, reason) in [
        (crds::device::DeviceState::Revoked, status::REASON_REVOKED),
        (
            crds::device::DeviceState::Suspended,
            status::REASON_SUSPENDED,
        ),
    ] {
        let mut s = d.clone();
        s.spec.state = state;
        // Even when its Secret is gone: never re-issued.
        let out = run(
            &s,
            &Observed {
                secret: None,
                ..o.clone()
            },
            now() + DAY,
        );
        assert!(out.secret.is_none() && out.issued.is_none());
        assert_eq!(out.status.serial, d.status.as_ref().unwrap().serial);
        assert_eq!(ready(&out).1, reason);
        assert_eq!(out.notes.len(), 1, "one Event on the transition");
        assert_eq!(out.notes[0].reason, reason);
        let again = run(&after(s, &out), &o, now() + DAY);
        assert!(again.notes.is_empty());
    }
}

#[test]
fn missing_cluster_or_ca_waits_with_a_bounded_requeue() {
    let d = device("");
    let out = run(&d, &Observed::default(), now());
    assert_eq!(ready(&out).1, status::REASON_CLUSTER_NOT_FOUND);
    assert!(ready(&out).2.contains("spec.clusterRef"));
    assert_eq!(
        find(&out.status.conditions, ISSUED).unwrap().status,
        "False"
    );
    assert!(out.notes[0].warning);
    assert_eq!(out.requeue, Some(super::build::WAIT_FOR_CLUSTER));

    let ca = clients_ca(b"ca");
    let mut c = cluster(&ca);
    c.clients_ca = None;
    let out = run(
        &d,
        &Observed {
            cluster: Some(c),
            ..Observed::default()
        },
        now(),
    );
    assert_eq!(ready(&out).1, status::REASON_WAITING_FOR_CA);
    assert_eq!(out.requeue, Some(super::build::WAIT_FOR_CA));
    let mut c = cluster(&ca);
    c.trust_bundle = None;
    let out = run(
        &d,
        &Observed {
            cluster: Some(c),
            ..Observed::default()
        },
        now(),
    );
    assert_eq!(ready(&out).1, status::REASON_WAITING_FOR_CA);
}

#[test]
fn custom_secret_name_and_key_algorithm_are_used() {
    let ca = clients_ca(b"ca");
    let d = device(", certificate: {secretName: press-cert, keyAlgorithm: ed25519, validity: 30d}");
    let out = run(&d, &observed(&ca), now());
    let secret = out.secret.unwrap();
    assert_eq!(secret.metadata.name.as_deref(), Some("press-cert"));
    let info = cert_of(&secret);
    assert_eq!(info.key_algorithm, Some(KeyAlgorithm::Ed25519));
    assert_eq!(info.validity.nominal_validity(), 30 * DAY);
}
