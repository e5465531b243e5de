//! Rotation decisions with a fixed clock: renewal inside its window, jitter spread over a
//! fleet, no rotation before due and exactly one after, and every other trigger.

mod pki_fixtures;

use std::io::Write;
use std::time::{Duration, SystemTime};

use operator::pki::rotation::{device_renewal_time, jitter, JITTER_DIVISOR};
use operator::pki::{
    decide_ca_renewal, decide_device_rotation, decide_server_rotation, issue_server_certificate,
    BundleMember, CaKind, CertificateAuthority, CertificateInfo, Credentials, DeviceDesired,
    DeviceIssued, DeviceRef, DropReason, KeyAlgorithm, RenewalPolicy, RotationDecision,
    RotationReason, SeededRandomness, ServerCertRequest, TrustBundle,
};
use pki_fixtures::*;

const SEED: &[u8] = b"cluster-uid-0f3c";

fn policy() -> RenewalPolicy {
    RenewalPolicy::new(days(90), None).unwrap()
}

fn desired<'a>(dev: &'a DeviceRef, ca: &'a CertificateInfo) -> DeviceDesired<'a> {
    DeviceDesired {
        device: dev,
        policy: policy(),
        key_algorithm: KeyAlgorithm::EcdsaP256,
        csr_sha256: None,
        rotate_token: None,
        clients_ca: ca,
        jitter_seed: SEED,
    }
}

fn issued(cert: &CertificateInfo) -> DeviceIssued<'_> {
    DeviceIssued {
        certificate: cert,
        rotate_token: None,
        csr_sha256: None,
    }
}

fn issue(
    ca: &CertificateAuthority,
    d: &DeviceDesired<'_>,
    rng: &mut SeededRandomness,
    now: SystemTime,
) -> Credentials {
    device_cert(
        ca,
        &d.device.device_id,
        d.key_algorithm,
        d.policy.validity,
        rng,
        now,
    )
}

#[test]
fn policy_defaults_and_limits() {
    let p = policy();
    assert_eq!(
        p.renew_before,
        days(30),
        "renewBefore defaults to a third of validity"
    );
    assert_eq!(p.max_jitter(), days(30) / JITTER_DIVISOR);
    assert!(RenewalPolicy::new(days(30), Some(days(30))).is_err());
    assert!(RenewalPolicy::new(Duration::from_secs(30), None).is_err());
}

#[test]
fn renewal_time_lies_inside_the_window() {
    let now = fixed_now();
    let mut rng = SeededRandomness::new(b"window");
    let ca = ca(CaKind::Clients, 1, &mut rng, now);
    for i in 0..200 {
        let dev = device(&format!("sensor-{i}"));
        let d = desired(&dev, ca.info());
        let creds = issue(&ca, &d, &mut rng, now);
        let cert = creds.certificate.info();
        let RotationDecision::Keep { renewal_time } =
            decide_device_rotation(&d, Some(&issued(cert)), now)
        else {
            panic!("fresh certificate must be kept");
        };
        let latest = cert.validity.not_after - d.policy.renew_before;
        let earliest = latest - d.policy.max_jitter();
        assert!(
            renewal_time <= latest && renewal_time >= earliest,
            "{i}: {renewal_time:?}"
        );
        assert!(renewal_time > cert.validity.not_before);
        assert_eq!(renewal_time, device_renewal_time(&d, cert));
    }
}

#[test]
fn jitter_spreads_ten_thousand_identities_over_the_window() {
    let max = policy().max_jitter();
    let window = max.as_secs();
    let jitters: Vec<u64> = (0..10_000)
        .map(|i| jitter(SEED, &format!("iot/edge/sensor-{i:05}"), max).as_secs())
        .collect();
    let again: Vec<u64> = (0..10_000)
        .map(|i| jitter(SEED, &format!("iot/edge/sensor-{i:05}"), max).as_secs())
        .collect();
    assert_eq!(jitters, again, "stable for a given identity");
    let other_seed = (0..10_000)
        .filter(|i| {
            jitter(b"another-cluster", &format!("iot/edge/sensor-{i:05}"), max).as_secs()
                != jitters[*i]
        })
        .count();
    assert!(
        other_seed > 9_900,
        "another cluster's seed gives other offsets ({other_seed})"
    );

    let (min, max_seen) = (
        *jitters.iter().min().unwrap(),
        *jitters.iter().max().unwrap(),
    );
    let mut buckets = [0usize; 10];
    for j in &jitters {
        buckets[((*j * 10) / window).min(9) as usize] += 1;
    }
    let mut report = format!(
        "jitter over 10,000 identities (window {window} s = renewBefore/{JITTER_DIVISOR} = {:.1} d): min {min} s, max {max_seen} s\n",
        window as f64 / 86_400.0
    );
    for (b, count) in buckets.iter().enumerate() {
        report.push_str(&format!(
            "  [{:>4.1} d, {:>4.1} d) {count:>5} {}\n",
            b as f64 * window as f64 / 864_000.0,
            (b + 1) as f64 * window as f64 / 864_000.0,
            "#".repeat(count / 20)
        ));
    }
    // Written straight to stderr so it shows in the normal test output.
    std::io::stderr().write_all(report.as_bytes()).unwrap();

    assert!(min < window / 100, "min {min}");
    assert!(max_seen > window - window / 100, "max {max_seen}");
    assert!(max_seen < window);
    for (b, count) in buckets.iter().enumerate() {
        assert!(
            (850..=1150).contains(count),
            "bucket {b} holds {count}: not uniform\n{report}"
        );
    }
}

#[test]
fn no_rotation_before_due_and_exactly_one_after() {
    let t0 = fixed_now();
    let mut rng = SeededRandomness::new(b"one-rotation");
    let ca = ca(CaKind::Clients, 1, &mut rng, t0);
    let dev = device("sensor-42");
    let d = desired(&dev, ca.info());
    let mut current = issue(&ca, &d, &mut rng, t0);
    let due = device_renewal_time(&d, current.certificate.info());
    let step = Duration::from_secs(3600);
    let mut rotations = Vec::new();
    let mut t = t0;
    while t <= t0 + days(90) {
        let info = current.certificate.info().clone();
        match decide_device_rotation(&d, Some(&issued(&info)), t) {
            RotationDecision::Keep { renewal_time } => assert!(t < renewal_time),
            RotationDecision::Rotate(reason) => {
                rotations.push((t, reason));
                current = issue(&ca, &d, &mut rng, t);
                // Right after, the new certificate is not due again.
                let after =
                    decide_device_rotation(&d, Some(&issued(current.certificate.info())), t);
                assert!(matches!(after, RotationDecision::Keep { .. }), "{after:?}");
            }
        }
        t += step;
    }
    assert_eq!(rotations.len(), 1, "{rotations:?}");
    let (at, reason) = rotations[0];
    assert_eq!(reason, RotationReason::RenewalDue);
    assert!(
        at >= due && at < due + step,
        "rotated at {at:?}, due {due:?}"
    );
}

#[test]
fn every_trigger_rotates_once_with_its_reason() {
    let now = fixed_now();
    let mut rng = SeededRandomness::new(b"triggers");
    let ca1 = ca(CaKind::Clients, 1, &mut rng, now);
    let dev = device("sensor-7");
    let base = desired(&dev, ca1.info());
    let creds = issue(&ca1, &base, &mut rng, now);
    let cert = creds.certificate.info();
    let later = now + days(1);
    let keep = |d: &DeviceDesired<'_>, i: &DeviceIssued<'_>| {
        matches!(
            decide_device_rotation(d, Some(i), later),
            RotationDecision::Keep { .. }
        )
    };
    assert!(keep(&base, &issued(cert)));
    assert_eq!(
        decide_device_rotation(&base, None, later),
        RotationDecision::Rotate(RotationReason::NotIssued)
    );

    // Annotation: a new value rotates; re-issued under that value, it is kept.
    let token = DeviceDesired {
        rotate_token: Some("2024-05-01"),
        ..base
    };
    assert_eq!(
        decide_device_rotation(&token, Some(&issued(cert)), later),
        RotationDecision::Rotate(RotationReason::RotateRequested)
    );
    let reissued = issue(&ca1, &token, &mut rng, later);
    let rec = DeviceIssued {
        rotate_token: Some("2024-05-01"),
        ..issued(reissued.certificate.info())
    };
    assert!(keep(&token, &rec));

    // Clients CA renewed.
    let ca2 = ca(CaKind::Clients, 2, &mut rng, now);
    let new_ca = DeviceDesired {
        clients_ca: ca2.info(),
        ..base
    };
    assert_eq!(
        decide_device_rotation(&new_ca, Some(&issued(cert)), later),
        RotationDecision::Rotate(RotationReason::IssuerChanged)
    );
    let under_ca2 = issue(&ca2, &new_ca, &mut rng, later);
    assert!(keep(&new_ca, &issued(under_ca2.certificate.info())));

    // Key algorithm.
    let ed = DeviceDesired {
        key_algorithm: KeyAlgorithm::Ed25519,
        ..base
    };
    assert_eq!(
        decide_device_rotation(&ed, Some(&issued(cert)), later),
        RotationDecision::Rotate(RotationReason::KeyAlgorithmChanged)
    );
    assert!(keep(
        &ed,
        &issued(issue(&ca1, &ed, &mut rng, later).certificate.info())
    ));

    // Validity.
    let longer = DeviceDesired {
        policy: RenewalPolicy::new(days(180), None).unwrap(),
        ..base
    };
    assert_eq!(
        decide_device_rotation(&longer, Some(&issued(cert)), later),
        RotationDecision::Rotate(RotationReason::ValidityChanged)
    );
    assert!(keep(
        &longer,
        &issued(issue(&ca1, &longer, &mut rng, later).certificate.info())
    ));

    // CSR added, then changed.
    let csr = DeviceDesired {
        csr_sha256: Some([1; 32]),
        ..base
    };
    assert_eq!(
        decide_device_rotation(&csr, Some(&issued(cert)), later),
        RotationDecision::Rotate(RotationReason::CsrChanged)
    );
    let from_csr = DeviceIssued {
        csr_sha256: Some([1; 32]),
        ..issued(cert)
    };
    assert!(keep(&csr, &from_csr));
    let csr2 = DeviceDesired {
        csr_sha256: Some([2; 32]),
        ..base
    };
    assert_eq!(
        decide_device_rotation(&csr2, Some(&from_csr), later),
        RotationDecision::Rotate(RotationReason::CsrChanged)
    );

    // The certificate names another device (deviceId edited).
    let renamed_dev = device("sensor-8");
    let renamed = DeviceDesired {
        device: &renamed_dev,
        ..base
    };
    assert_eq!(
        decide_device_rotation(&renamed, Some(&issued(cert)), later),
        RotationDecision::Rotate(RotationReason::NamesChanged)
    );
}

#[test]
fn a_leaf_capped_at_its_ca_expiry_does_not_loop() {
    let now = fixed_now();
    let mut rng = SeededRandomness::new(b"capped");
    let mut profile = operator::pki::CaProfile::new(CaKind::Clients, "iot", "edge");
    profile.validity = days(40);
    let short_ca = CertificateAuthority::generate(&profile, &mut rng, now).unwrap();
    let dev = device("sensor-1");
    let d = desired(&dev, short_ca.info());
    let creds = issue(&short_ca, &d, &mut rng, now);
    let cert = creds.certificate.info();
    assert_eq!(
        cert.validity.not_after,
        short_ca.info().validity.not_after,
        "capped"
    );
    assert!(matches!(
        decide_device_rotation(&d, Some(&issued(cert)), now + days(1)),
        RotationDecision::Keep { .. }
    ));
}

#[test]
fn server_certificate_rotates_on_scale_up_ca_change_and_due() {
    let now = fixed_now();
    let mut rng = SeededRandomness::new(b"server-rotation");
    let cluster_ca = ca(CaKind::Cluster, 1, &mut rng, now);
    let req = ServerCertRequest::new("iot", "edge", 3);
    let creds = issue_server_certificate(&cluster_ca, &req, &mut rng, now).unwrap();
    let cert = creds.certificate.info();
    let renew_before = days(30);
    let d = |r: &ServerCertRequest, ca: &CertificateInfo, t| {
        decide_server_rotation(r, renew_before, ca, Some(cert), t)
    };
    let RotationDecision::Keep { renewal_time } = d(&req, cluster_ca.info(), now) else {
        panic!()
    };
    assert_eq!(renewal_time, cert.validity.not_after - renew_before);
    assert_eq!(
        d(&req, cluster_ca.info(), renewal_time),
        RotationDecision::Rotate(RotationReason::RenewalDue)
    );
    let scaled = ServerCertRequest::new("iot", "edge", 5);
    assert_eq!(
        d(&scaled, cluster_ca.info(), now),
        RotationDecision::Rotate(RotationReason::NamesChanged)
    );
    let ca2 = ca(CaKind::Cluster, 2, &mut rng, now);
    assert_eq!(
        d(&req, ca2.info(), now),
        RotationDecision::Rotate(RotationReason::IssuerChanged)
    );
    assert_eq!(
        decide_server_rotation(&req, renew_before, cluster_ca.info(), None, now),
        RotationDecision::Rotate(RotationReason::NotIssued)
    );
}

#[test]
fn ca_renewal_is_due_at_not_after_minus_renew_before() {
    let now = fixed_now();
    let mut rng = SeededRandomness::new(b"ca-renewal");
    let ca = ca(CaKind::Clients, 1, &mut rng, now);
    let p =
        RenewalPolicy::new(operator::pki::CaProfile::DEFAULT_VALIDITY, Some(days(180))).unwrap();
    let info = ca.info();
    let due = info.validity.not_after - days(180);
    assert_eq!(
        decide_ca_renewal(Some(info), p, KeyAlgorithm::EcdsaP256, now),
        RotationDecision::Keep { renewal_time: due }
    );
    assert_eq!(
        decide_ca_renewal(
            Some(info),
            p,
            KeyAlgorithm::EcdsaP256,
            due - Duration::from_secs(1)
        ),
        RotationDecision::Keep { renewal_time: due }
    );
    assert_eq!(
        decide_ca_renewal(Some(info), p, KeyAlgorithm::EcdsaP256, due),
        RotationDecision::Rotate(RotationReason::RenewalDue)
    );
    assert_eq!(
        decide_ca_renewal(Some(info), p, KeyAlgorithm::Rsa2048, now),
        RotationDecision::Rotate(RotationReason::KeyAlgorithmChanged)
    );
    assert_eq!(
        decide_ca_renewal(None, p, KeyAlgorithm::EcdsaP256, now),
        RotationDecision::Rotate(RotationReason::NotIssued)
    );
}

#[test]
fn trust_bundle_keeps_the_old_ca_until_its_last_leaf_expires_or_is_reissued() {
    let t0 = fixed_now();
    let mut rng = SeededRandomness::new(b"bundle");
    let old = ca(CaKind::Clients, 1, &mut rng, t0 - days(300));
    let new = ca(CaKind::Clients, 2, &mut rng, t0);
    let member = |c: &CertificateAuthority| BundleMember::from_der(c.cert_der().to_vec()).unwrap();
    let (old_m, new_m) = (member(&old), member(&new));
    let old_leaf = device_cert(
        &old,
        "a",
        KeyAlgorithm::EcdsaP256,
        days(90),
        &mut rng,
        t0 - days(1),
    );
    let new_leaf = device_cert(&new, "b", KeyAlgorithm::EcdsaP256, days(90), &mut rng, t0);
    let leaves = [
        old_leaf.certificate.info().clone(),
        new_leaf.certificate.info().clone(),
    ];

    let plan = TrustBundle::plan(&new_m, &[old_m.clone(), new_m.clone()], leaves.iter(), t0);
    assert_eq!(
        plan.members,
        vec![new_m.clone(), old_m.clone()],
        "new first, old kept"
    );
    assert!(plan.dropped.is_empty());
    assert_eq!(TrustBundle::parse_pem(&plan.pem()).unwrap(), plan.members);

    // The old leaf expires: the old CA goes.
    let after_expiry = old_leaf.certificate.info().validity.not_after + Duration::from_secs(1);
    let plan = TrustBundle::plan(
        &new_m,
        std::slice::from_ref(&old_m),
        leaves.iter(),
        after_expiry,
    );
    assert_eq!(plan.members, vec![new_m.clone()]);
    assert_eq!(
        plan.dropped,
        vec![(old_m.clone(), DropReason::NoLiveLeaves)]
    );

    // Or the old CA itself expires first.
    let short_old = {
        let mut p = operator::pki::CaProfile::new(CaKind::Clients, "iot", "edge");
        p.validity = days(10);
        CertificateAuthority::generate(&p, &mut rng, t0 - days(5)).unwrap()
    };
    let short_leaf = device_cert(
        &short_old,
        "c",
        KeyAlgorithm::EcdsaP256,
        days(90),
        &mut rng,
        t0 - days(1),
    );
    let short_m = member(&short_old);
    let plan = TrustBundle::plan(
        &new_m,
        std::slice::from_ref(&short_m),
        [short_leaf.certificate.info()],
        t0 + days(6),
    );
    assert_eq!(plan.dropped, vec![(short_m, DropReason::CaExpired)]);
}
