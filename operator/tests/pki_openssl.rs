//! Independent verification of our PKI with the openssl CLI: chains and purposes
//! (`openssl verify`), the CRL (`openssl crl`), CSR signatures (`openssl req -verify`).

mod pki_fixtures;

use std::collections::BTreeSet;
use std::time::Duration;

use operator::pki::clock::unix_seconds;
use operator::pki::inspect::pem_encode;
use operator::pki::{
    build_crl, check_csr_signature, csr::csr_der_from_pem, issue_server_certificate,
    sign_device_csr, verify_csr, CaKind, CsrRejection, KeyAlgorithm, RevokedSet, SeededRandomness,
    Serial, ServerCertRequest,
};
use pki_fixtures::*;

#[test]
fn openssl_verify_accepts_every_leaf_for_its_purpose_only() {
    let Some(bin) = openssl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let now = fixed_now();
    let at = unix_seconds(now).to_string();
    let mut rng = SeededRandomness::new(b"openssl-verify");
    let cluster_ca = ca(CaKind::Cluster, 1, &mut rng, now);
    let clients_ca = ca(CaKind::Clients, 1, &mut rng, now);
    let other_ca = ca(
        CaKind::Clients,
        1,
        &mut SeededRandomness::new(b"other"),
        now,
    );
    write(d, "cluster-ca.pem", cluster_ca.cert_pem());
    write(d, "clients-ca.pem", clients_ca.cert_pem());
    write(d, "other-ca.pem", other_ca.cert_pem());

    for alg in KeyAlgorithm::ALL {
        let creds = device_cert(&clients_ca, "press-17", alg, days(90), &mut rng, now);
        let cert = write(d, &format!("dev-{alg}.pem"), creds.certificate.pem());
        let key = write(d, &format!("dev-{alg}.key"), creds.key.to_pkcs8_pem());
        let verify = |ca: &str, purpose: &str| {
            run_openssl(
                &bin,
                d,
                &[
                    "verify", "-attime", &at, "-CAfile", ca, "-purpose", purpose, &cert,
                ],
            )
        };
        let ok = verify("clients-ca.pem", "sslclient");
        assert!(
            ok.status.success(),
            "{alg}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        assert!(String::from_utf8_lossy(&ok.stdout).contains(": OK"));
        assert!(
            !verify("clients-ca.pem", "sslserver").status.success(),
            "{alg}: device cert passed as server"
        );
        assert!(
            !verify("other-ca.pem", "sslclient").status.success(),
            "{alg}: other CA accepted"
        );
        // The key we hand out is the certificate's key, readable by openssl.
        let from_cert = openssl_ok(&bin, d, &["x509", "-in", &cert, "-noout", "-pubkey"]);
        let from_key = openssl_ok(&bin, d, &["pkey", "-in", &key, "-pubout"]);
        assert_eq!(from_cert, from_key, "{alg}");
        // The text form shows our names and usage.
        let text = openssl_ok(&bin, d, &["x509", "-in", &cert, "-noout", "-text"]);
        assert!(text.contains("CN = press-17"), "{text}");
        assert!(
            text.contains("URI:urn:mqtt-operator:iot/edge/device/press-17"),
            "{text}"
        );
        assert!(text.contains("TLS Web Client Authentication"), "{text}");
        assert!(
            text.contains("CA:FALSE") || !text.contains("CA:TRUE"),
            "{text}"
        );
    }

    let mut req = ServerCertRequest::new("iot", "edge", 3);
    req.include_loopback = true;
    let server = issue_server_certificate(&cluster_ca, &req, &mut rng, now).unwrap();
    let cert = write(d, "server.pem", server.certificate.pem());
    let ok = run_openssl(
        &bin,
        d,
        &[
            "verify",
            "-attime",
            &at,
            "-CAfile",
            "cluster-ca.pem",
            "-purpose",
            "sslserver",
            &cert,
        ],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let as_client = run_openssl(
        &bin,
        d,
        &[
            "verify",
            "-attime",
            &at,
            "-CAfile",
            "cluster-ca.pem",
            "-purpose",
            "sslclient",
            &cert,
        ],
    );
    assert!(!as_client.status.success(), "server cert passed as client");
    for host in [
        "edge-core-2.edge-core.iot.svc",
        "edge.iot.svc.cluster.local",
        "localhost",
    ] {
        let out = run_openssl(
            &bin,
            d,
            &[
                "verify",
                "-attime",
                &at,
                "-CAfile",
                "cluster-ca.pem",
                "-verify_hostname",
                host,
                &cert,
            ],
        );
        assert!(out.status.success(), "hostname {host}");
    }
    let out = run_openssl(
        &bin,
        d,
        &[
            "verify",
            "-attime",
            &at,
            "-CAfile",
            "cluster-ca.pem",
            "-verify_ip",
            "127.0.0.1",
            &cert,
        ],
    );
    assert!(out.status.success(), "127.0.0.1");
    let out = run_openssl(
        &bin,
        d,
        &[
            "verify",
            "-attime",
            &at,
            "-CAfile",
            "cluster-ca.pem",
            "-verify_hostname",
            "edge-core-3.edge-core.iot.svc",
            &cert,
        ],
    );
    assert!(
        !out.status.success(),
        "a pod that does not exist must not match"
    );

    // Time: valid at issuance, not after notAfter.
    let creds = device_cert(
        &clients_ca,
        "short",
        KeyAlgorithm::EcdsaP256,
        days(1),
        &mut rng,
        now,
    );
    let cert = write(d, "short.pem", creds.certificate.pem());
    let later = (unix_seconds(now) + 2 * 86_400).to_string();
    let out = run_openssl(
        &bin,
        d,
        &[
            "verify",
            "-attime",
            &later,
            "-CAfile",
            "clients-ca.pem",
            &cert,
        ],
    );
    assert!(!out.status.success(), "expired cert accepted");
}

#[test]
fn openssl_parses_our_crl_and_lists_exactly_the_revoked_serials() {
    let Some(bin) = openssl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let now = fixed_now();
    let at = unix_seconds(now).to_string();
    let mut rng = SeededRandomness::new(b"openssl-crl");
    let clients_ca = ca(CaKind::Clients, 1, &mut rng, now);
    write(d, "ca.pem", clients_ca.cert_pem());

    let certs: Vec<_> = (0..6)
        .map(|i| {
            device_cert(
                &clients_ca,
                &format!("d{i}"),
                KeyAlgorithm::EcdsaP256,
                days(90),
                &mut rng,
                now,
            )
        })
        .collect();
    let mut set = RevokedSet::new();
    for c in &certs[..3] {
        let info = c.certificate.info();
        set.revoke(
            info.serial,
            info.validity.not_after,
            now,
            info.common_name.as_deref(),
        );
    }
    // An already expired revocation is not listed.
    set.revoke(
        Serial::from_u128(0xdead),
        now - Duration::from_secs(10),
        now - days(30),
        None,
    );
    let crl = build_crl(&clients_ca, &set, 7, days(7), now).unwrap();
    write(d, "crl.pem", crl.pem());
    write(d, "crl.der", crl.der());

    let text = openssl_ok(&bin, d, &["crl", "-in", "crl.pem", "-noout", "-text"]);
    let listed: BTreeSet<u128> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Serial Number: "))
        .map(|hex| u128::from_str_radix(hex.trim(), 16).unwrap())
        .collect();
    let expected: BTreeSet<u128> = certs[..3]
        .iter()
        .map(|c| c.certificate.info().serial.to_u128().unwrap())
        .collect();
    assert_eq!(listed, expected, "openssl crl -text:\n{text}");
    assert!(text.contains("X509v3 CRL Number"), "{text}");
    assert!(text.contains("edge clients CA v1"), "{text}");

    // DER form parses and its signature verifies with the clients CA.
    let out = run_openssl(
        &bin,
        d,
        &[
            "crl", "-inform", "DER", "-in", "crl.der", "-CAfile", "ca.pem", "-noout",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("verify OK")
            || String::from_utf8_lossy(&out.stdout).contains("verify OK")
    );

    // And openssl's own revocation check agrees: revoked leaves fail, others pass.
    for (i, c) in certs.iter().enumerate() {
        let cert = write(d, &format!("c{i}.pem"), c.certificate.pem());
        let out = run_openssl(
            &bin,
            d,
            &[
                "verify",
                "-attime",
                &at,
                "-crl_check",
                "-CAfile",
                "ca.pem",
                "-CRLfile",
                "crl.pem",
                &cert,
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        if i < 3 {
            assert!(
                !out.status.success()
                    && (stderr.contains("revoked")
                        || String::from_utf8_lossy(&out.stdout).contains("revoked")),
                "cert {i}: {stderr}"
            );
        } else {
            assert!(out.status.success(), "cert {i}: {stderr}");
        }
    }
}

/// The CSR cases: (name, how openssl makes the key, extra req args).
fn openssl_csrs(bin: &std::path::Path, d: &std::path::Path) -> Vec<(String, String)> {
    let cases: [(&str, &[&str], &[&str]); 8] = [
        (
            "ec",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ],
            &[],
        ),
        (
            "p384",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-384",
            ],
            &[],
        ),
        ("ed25519", &["genpkey", "-algorithm", "ED25519"], &[]),
        (
            "rsa2048",
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
            &[],
        ),
        (
            "rsa1024",
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:1024",
            ],
            &[],
        ),
        (
            "k256",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:secp256k1",
            ],
            &[],
        ),
        (
            "ca",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ],
            &["-addext", "basicConstraints=critical,CA:TRUE"],
        ),
        (
            "san",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ],
            &["-addext", "subjectAltName=DNS:broker.example.com"],
        ),
    ];
    let mut out = Vec::new();
    for (name, genkey, extra) in cases {
        let key = format!("{name}.key");
        let mut args: Vec<&str> = genkey.to_vec();
        args.extend(["-out", &key]);
        openssl_ok(bin, d, &args);
        let csr = format!("{name}.csr");
        let mut args = vec![
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            "/O=acme/CN=press-17",
            "-out",
            &csr,
        ];
        args.extend(extra);
        openssl_ok(bin, d, &args);
        out.push((
            name.to_string(),
            std::fs::read_to_string(d.join(&csr)).unwrap(),
        ));
    }
    let wrong_cn = "wrongcn.csr";
    openssl_ok(
        bin,
        d,
        &[
            "req",
            "-new",
            "-key",
            "ec.key",
            "-subj",
            "/CN=someone-else",
            "-out",
            wrong_cn,
        ],
    );
    out.push((
        "wrongcn".into(),
        std::fs::read_to_string(d.join(wrong_cn)).unwrap(),
    ));
    out
}

#[test]
fn csr_policy_on_openssl_made_requests() {
    let Some(bin) = openssl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let now = fixed_now();
    let at = unix_seconds(now).to_string();
    let mut rng = SeededRandomness::new(b"openssl-csr");
    let clients_ca = ca(CaKind::Clients, 1, &mut rng, now);
    write(d, "ca.pem", clients_ca.cert_pem());
    let dev = device("press-17");
    for (name, pem) in openssl_csrs(&bin, d) {
        let verdict = verify_csr(&pem, &dev);
        match name.as_str() {
            "ec" | "p384" | "ed25519" | "rsa2048" => {
                let verified = verdict.unwrap_or_else(|e| panic!("{name}: {e}"));
                let cert =
                    sign_device_csr(&clients_ca, &dev, &verified, days(30), &mut rng, now).unwrap();
                let file = write(d, &format!("{name}-cert.pem"), cert.pem());
                openssl_ok(
                    &bin,
                    d,
                    &[
                        "verify",
                        "-attime",
                        &at,
                        "-CAfile",
                        "ca.pem",
                        "-purpose",
                        "sslclient",
                        &file,
                    ],
                );
                // The certificate carries the device's own key, and our subject, not the CSR's.
                let cert_key = openssl_ok(&bin, d, &["x509", "-in", &file, "-noout", "-pubkey"]);
                let csr_key = openssl_ok(
                    &bin,
                    d,
                    &["req", "-in", &format!("{name}.csr"), "-noout", "-pubkey"],
                );
                assert_eq!(cert_key, csr_key, "{name}");
                assert_eq!(cert.info().common_name.as_deref(), Some("press-17"));
                let subject = openssl_ok(&bin, d, &["x509", "-in", &file, "-noout", "-subject"]);
                assert!(!subject.contains("acme"), "{name}: {subject}");
            }
            "rsa1024" | "k256" => assert!(
                matches!(verdict, Err(CsrRejection::WeakKey(_))),
                "{name}: {verdict:?}"
            ),
            "ca" => assert_eq!(verdict, Err(CsrRejection::RequestsCa), "{name}"),
            "san" => assert!(
                matches!(verdict, Err(CsrRejection::ExtraSubjectAltNames(_))),
                "{name}: {verdict:?}"
            ),
            "wrongcn" => assert!(
                matches!(verdict, Err(CsrRejection::CommonNameMismatch { .. })),
                "{name}: {verdict:?}"
            ),
            other => panic!("unplanned case {other}"),
        }
    }
}

#[test]
fn openssl_req_verify_agrees_with_our_signature_check() {
    let Some(bin) = openssl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut cases = Vec::new();
    for (name, pem) in openssl_csrs(&bin, d) {
        if name == "rsa1024" || name == "k256" {
            // Weak keys are refused before any signature check (see check_csr_signature).
            continue;
        }
        let der = csr_der_from_pem(&pem).unwrap();
        cases.push((format!("{name}/good"), der.clone(), true));
        // Tamper with the signed part: change one character of the CN.
        let mut subject = der.clone();
        let at = subject
            .windows(8)
            .position(|w| w == b"press-17" || w == b"someone-")
            .unwrap();
        subject[at] ^= 0x01;
        cases.push((format!("{name}/subject"), subject, false));
        // Tamper with the signature: flip a bit in its last octet.
        let mut sig = der.clone();
        *sig.last_mut().unwrap() ^= 0x01;
        cases.push((format!("{name}/signature"), sig, false));
    }
    let mut agreed = 0;
    for (name, der, expect_ok) in &cases {
        let file = write(d, "case.csr", pem_encode("CERTIFICATE REQUEST", der));
        let theirs = run_openssl(&bin, d, &["req", "-verify", "-noout", "-in", &file]);
        // openssl 3.0 exits 0 even when the self-signature fails; read its verdict.
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&theirs.stdout),
            String::from_utf8_lossy(&theirs.stderr)
        );
        let theirs_ok = theirs.status.success() && said.contains("verify OK");
        assert!(
            theirs_ok || said.contains("verify failure") || !theirs.status.success(),
            "openssl said neither OK nor failure on {name}: {said}"
        );
        let ours = check_csr_signature(der);
        assert_eq!(
            theirs_ok,
            *expect_ok,
            "openssl on {name}: {}",
            String::from_utf8_lossy(&theirs.stderr)
        );
        assert_eq!(ours.is_ok(), *expect_ok, "ours on {name}: {ours:?}");
        agreed += 1;
    }
    assert_eq!(agreed, 21);
    println!(
        "openssl req -verify and check_csr_signature agree on {agreed} CSRs (7 good, 14 tampered)"
    );
}
