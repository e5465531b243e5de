//! The `local up` state directory: CAs persist across runs (keys 0600), device certificates are
//! reused while valid and chain to the persisted clients CA, a Revoked device's serial joins the
//! revoked set, the server certificate covers 127.0.0.1.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use operator::local::plan::{plan, Plan};
use operator::local::state::StateDir;
use operator::manifest::{load_paths, parse_files};
use operator::pki::CertificateInfo;

fn quickstart(edit: impl Fn(String) -> String) -> Plan {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples/quickstart");
    let mut files = load_paths(&[dir]).unwrap();
    for f in &mut files {
        f.text = edit(f.text.clone());
    }
    plan(&parse_files(&files).unwrap()).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn cas_persist_and_device_certificates_are_reused_and_revoked() {
    let tmp = tempfile::tempdir().unwrap();
    let state = StateDir {
        root: tmp.path().to_owned(),
    };
    let p = quickstart(|t| t);
    let first = state.authorities(&p).unwrap();
    assert!(state.devices(&p, &first).unwrap().is_empty());
    let crt = state.devices_dir().join("sensor-02/tls.crt");
    let issued = std::fs::read_to_string(&crt).unwrap();
    let info = CertificateInfo::from_pem(&issued).unwrap();
    assert!(info.issued_by(first.clients_ca.info()));
    assert_eq!(info.common_name.as_deref(), Some("sensor-02"));
    assert_eq!(
        info.key_algorithm,
        Some(operator::pki::KeyAlgorithm::Ed25519),
        "keyAlgorithm from the spec"
    );
    for key in [
        "ca/cluster-ca.key",
        "ca/clients-ca.key",
        "push-token",
        "devices/sensor-02/tls.key",
    ] {
        assert_eq!(mode(&tmp.path().join(key)), 0o600, "{key}");
    }

    // A second run loads the same CAs and keeps the still-valid device certificates.
    let second = state.authorities(&p).unwrap();
    assert_eq!(second.clients_ca.cert_pem(), first.clients_ca.cert_pem());
    assert_eq!(second.cluster_ca.cert_pem(), first.cluster_ca.cert_pem());
    assert_eq!(second.push_token, first.push_token);
    state.devices(&p, &second).unwrap();
    assert_eq!(std::fs::read_to_string(&crt).unwrap(), issued);

    // Revoking sensor-02: its serial is in the revoked set.
    let revoked_plan = quickstart(|t| {
        t.replace(
            "  deviceId: sensor-02\n",
            "  deviceId: sensor-02\n  state: Revoked\n",
        )
    });
    let revoked = state.devices(&revoked_plan, &second).unwrap();
    assert_eq!(
        revoked.into_iter().collect::<Vec<_>>(),
        [info.serial.to_string()]
    );

    // The server certificate chains to the cluster CA and covers loopback.
    let (chain, _key) = state.server_cert(&p, &second).unwrap();
    let server = CertificateInfo::from_pem(&chain).unwrap();
    assert!(server.issued_by(second.cluster_ca.info()));
    assert!(server
        .ip_addresses
        .contains(&"127.0.0.1".parse::<std::net::IpAddr>().unwrap()));
    assert!(server.dns_names.iter().any(|d| d == "localhost"));
}
