//! Device certificate issuance, side by side with the openssl CLI, in one run, one thread.
//!
//! `cargo bench -p operator --bench pki`
//!
//! * ours, new key + sign: ECDSA P-256 key generation and a signed device certificate
//!   (`issue_device_certificate`), N times;
//! * ours, CSR: `verify_csr` + `sign_device_csr` on N pre-made P-256 CSRs;
//! * openssl, new key + sign: `openssl ecparam -genkey` + `openssl req -new` + `openssl x509 -req`
//!   per certificate, M times (what a shell-script CA does);
//! * openssl, CSR: `openssl x509 -req` on M pre-made CSRs.
//!
//! N and M default to 5,000 and 50; override with PKI_BENCH_OURS / PKI_BENCH_OPENSSL.

use std::path::Path;
use std::process::Command;
use std::time::{Instant, SystemTime};

use operator::pki::{
    issue_device_certificate, sign_device_csr, verify_csr, CaKind, CaProfile, CertificateAuthority,
    DeviceCertProfile, DeviceRef, KeyAlgorithm, OsRandomness, PrivateKey,
};

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rate(n: usize, secs: f64) -> f64 {
    n as f64 / secs
}

fn main() {
    let n = count("PKI_BENCH_OURS", 5_000);
    let m = count("PKI_BENCH_OPENSSL", 50);
    let now = SystemTime::now();
    let mut rng = OsRandomness;
    let ca = CertificateAuthority::generate(
        &CaProfile::new(CaKind::Clients, "bench", "edge"),
        &mut rng,
        now,
    )
    .expect("clients CA");
    let profile = DeviceCertProfile::default();
    let devices: Vec<DeviceRef> = (0..n)
        .map(|i| DeviceRef::new("bench", "edge", &format!("sensor-{i:06}")).unwrap())
        .collect();

    // Warm up (page in code, aws-lc tables).
    for d in devices.iter().take(50) {
        issue_device_certificate(&ca, d, &profile, &mut rng, now).unwrap();
    }

    let start = Instant::now();
    let mut bytes = 0usize;
    for d in &devices {
        let creds = issue_device_certificate(&ca, d, &profile, &mut rng, now).unwrap();
        bytes += creds.certificate.der().len();
    }
    let ours_issue = start.elapsed().as_secs_f64();
    assert!(bytes > 0);

    let csrs: Vec<String> = devices
        .iter()
        .map(|d| {
            let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256, &mut rng).unwrap();
            let mut params = rcgen::CertificateParams::default();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, d.device_id.as_str());
            params.serialize_request(&key).unwrap().pem().unwrap()
        })
        .collect();
    let start = Instant::now();
    for (d, csr) in devices.iter().zip(&csrs) {
        let verified = verify_csr(csr, d).unwrap();
        sign_device_csr(&ca, d, &verified, profile.validity, &mut rng, now).unwrap();
    }
    let ours_csr = start.elapsed().as_secs_f64();

    println!("PKI benchmark: device certificates, ECDSA P-256, one thread");
    println!(
        "  ours     new key + sign : {:>10.0} certs/s  ({n} in {ours_issue:.3} s)",
        rate(n, ours_issue)
    );
    println!(
        "  ours     CSR verify+sign: {:>10.0} certs/s  ({n} in {ours_csr:.3} s)",
        rate(n, ours_csr)
    );

    let Some(anchor) = openssl_anchor(&ca, m) else {
        println!("  openssl  (not found: install it with scripts/install-deps.sh for the anchor)");
        return;
    };
    let (cli_issue, cli_csr) = anchor;
    println!(
        "  openssl  new key + sign : {:>10.1} certs/s  ({m} in {cli_issue:.3} s; ecparam + req + x509 per cert)",
        rate(m, cli_issue)
    );
    println!(
        "  openssl  CSR sign       : {:>10.1} certs/s  ({m} in {cli_csr:.3} s; x509 -req per cert)",
        rate(m, cli_csr)
    );
    let ratio_issue = rate(n, ours_issue) / rate(m, cli_issue);
    let ratio_csr = rate(n, ours_csr) / rate(m, cli_csr);
    println!("  ratio    new key + sign : {ratio_issue:>10.0}x  (target >= 100x)");
    println!("  ratio    CSR            : {ratio_csr:>10.0}x");
    println!(
        "  target   >= 5,000 certs/s/core: {}",
        if rate(n, ours_issue) >= 5_000.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}

/// Times the openssl CLI doing the same per certificate; `None` when openssl is absent.
fn openssl_anchor(ca: &CertificateAuthority, m: usize) -> Option<(f64, f64)> {
    if !Command::new("openssl")
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
    {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(d.join("ca.key"), ca.key_pem()).unwrap();
    std::fs::write(
        d.join("ext.cnf"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nsubjectAltName=${ENV::SAN}\nauthorityKeyIdentifier=keyid\n",
    )
    .unwrap();
    let run = |args: &[&str], san: &str| {
        let out = Command::new("openssl")
            .args(args)
            .env("SAN", san)
            .current_dir(d)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let sign = |i: usize, csr: &str, cert: &str| {
        let serial = format!("0x{:032x}", rand_serial(i));
        let san = format!("URI:urn:mqtt-operator:bench/edge/device/cli-{i}");
        run(
            &[
                "x509",
                "-req",
                "-in",
                csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-days",
                "90",
                "-set_serial",
                &serial,
                "-extfile",
                "ext.cnf",
                "-sha256",
                "-out",
                cert,
            ],
            &san,
        );
    };

    let start = Instant::now();
    for i in 0..m {
        let (key, csr, cert) = (
            format!("k{i}.pem"),
            format!("r{i}.csr"),
            format!("c{i}.pem"),
        );
        run(
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &key,
            ],
            "",
        );
        run(
            &[
                "req",
                "-new",
                "-key",
                &key,
                "-subj",
                &format!("/O=mqtt-operator/CN=cli-{i}"),
                "-out",
                &csr,
            ],
            "",
        );
        sign(i, &csr, &cert);
    }
    let issue = start.elapsed().as_secs_f64();

    let start = Instant::now();
    for i in 0..m {
        sign(i, &format!("r{i}.csr"), &format!("s{i}.pem"));
    }
    let csr = start.elapsed().as_secs_f64();
    check_cli_output(d, m);
    Some((issue, csr))
}

/// The CLI certificates are real device certificates our parser reads back.
fn check_cli_output(d: &Path, m: usize) {
    let pem = std::fs::read_to_string(d.join(format!("c{}.pem", m - 1))).unwrap();
    let info = operator::pki::CertificateInfo::from_pem(&pem).expect("parse openssl output");
    assert!(info.client_auth && info.uris.len() == 1);
}

fn rand_serial(i: usize) -> u128 {
    let mut b = [0u8; 16];
    operator::pki::Randomness::fill(&mut OsRandomness, &mut b).unwrap();
    u128::from_be_bytes(b) ^ i as u128
}
