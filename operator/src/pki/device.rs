//! Device certificates: clientAuth, `CN=<deviceId>`, one SAN URI naming cluster and device
//! (see [`super::names`]), signed by the clients CA.

use std::time::{Duration, SystemTime};

use rcgen::SanType;

use super::issue::{sign_leaf, LeafRequest, LeafUsage};
use super::{
    CaKind, CertificateAuthority, Credentials, DeviceRef, IssuedCertificate, KeyAlgorithm,
    PkiError, PrivateKey, Randomness,
};

/// How a device certificate is issued (the controller maps `spec.certificate` onto this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceCertProfile {
    /// Key algorithm for a generated key (ignored when signing a CSR: the device chose).
    pub key_algorithm: KeyAlgorithm,
    /// Certificate lifetime.
    pub validity: Duration,
}

impl DeviceCertProfile {
    /// `spec.certificate.validity` default: 90 days.
    pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(90 * 86_400);
}

impl Default for DeviceCertProfile {
    fn default() -> Self {
        DeviceCertProfile {
            key_algorithm: KeyAlgorithm::EcdsaP256,
            validity: Self::DEFAULT_VALIDITY,
        }
    }
}

/// Generates a key for the device and signs its certificate with the clients CA.
pub fn issue_device_certificate(
    clients_ca: &CertificateAuthority,
    device: &DeviceRef,
    profile: &DeviceCertProfile,
    rng: &mut dyn Randomness,
    now: SystemTime,
) -> Result<Credentials, PkiError> {
    let key = PrivateKey::generate(profile.key_algorithm, rng)?;
    let certificate = sign_device_key(clients_ca, device, profile.validity, &key, rng, now)?;
    Ok(Credentials { certificate, key })
}

/// Signs a device certificate for a public key we hold (generated key or verified CSR).
pub(crate) fn sign_device_key(
    clients_ca: &CertificateAuthority,
    device: &DeviceRef,
    validity: Duration,
    public_key: &impl rcgen::PublicKeyData,
    rng: &mut dyn Randomness,
    now: SystemTime,
) -> Result<IssuedCertificate, PkiError> {
    if clients_ca.kind() != CaKind::Clients {
        return Err(PkiError::CaUnusable(
            "device certificates are signed by the clients CA, not the cluster CA".into(),
        ));
    }
    let uri = device.uri();
    let request = LeafRequest {
        what: format!("device certificate for {}", device.device_id),
        common_name: device.device_id.clone(),
        sans: vec![SanType::URI(uri.clone().try_into().map_err(|_| {
            PkiError::Name {
                name: uri,
                reason: "not an IA5 string".into(),
            }
        })?)],
        usage: LeafUsage::Client,
        validity,
    };
    sign_leaf(clients_ca, request, public_key, rng, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CaProfile, SeededRandomness};
    use std::time::UNIX_EPOCH;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_750_000_000)
    }

    fn clients_ca(rng: &mut SeededRandomness) -> CertificateAuthority {
        CertificateAuthority::generate(&CaProfile::new(CaKind::Clients, "iot", "edge"), rng, now())
            .unwrap()
    }

    #[test]
    fn device_certificate_has_cn_uri_client_auth_and_matching_key() {
        let mut rng = SeededRandomness::new(b"dev");
        let ca = clients_ca(&mut rng);
        let device = DeviceRef::new("iot", "edge", "press-17").unwrap();
        for alg in KeyAlgorithm::ALL {
            let profile = DeviceCertProfile {
                key_algorithm: alg,
                ..Default::default()
            };
            let creds = issue_device_certificate(&ca, &device, &profile, &mut rng, now()).unwrap();
            let info = creds.certificate.info();
            assert_eq!(info.common_name.as_deref(), Some("press-17"));
            assert_eq!(
                info.uris,
                vec!["urn:mqtt-operator:iot/edge/device/press-17"]
            );
            assert!(info.dns_names.is_empty() && info.ip_addresses.is_empty());
            assert!(info.client_auth && !info.server_auth && !info.is_ca);
            assert_eq!(info.key_algorithm, Some(alg));
            assert!(info.issued_by(ca.info()));
            assert_eq!(info.validity.nominal_validity(), profile.validity);
            let cert = crate::pki::inspect::parse_der(creds.certificate.der()).unwrap();
            assert_eq!(cert.public_key().raw, creds.key.public_key_der().as_slice());
            assert!(
                cert.raw_serial().len() <= 17,
                "128-bit serial (+ sign octet)"
            );
            assert!(info.serial.to_u128().is_some());
        }
    }

    #[test]
    fn seeded_issuance_gives_the_same_serials_and_keys() {
        let issue = || {
            let mut rng = SeededRandomness::new(b"same");
            let mut ca_profile = CaProfile::new(CaKind::Clients, "iot", "edge");
            ca_profile.key_algorithm = KeyAlgorithm::Ed25519;
            let ca = CertificateAuthority::generate(&ca_profile, &mut rng, now()).unwrap();
            let device = DeviceRef::new("iot", "edge", "d1").unwrap();
            let p = DeviceCertProfile {
                key_algorithm: KeyAlgorithm::Ed25519,
                ..Default::default()
            };
            issue_device_certificate(&ca, &device, &p, &mut rng, now()).unwrap()
        };
        let (a, b) = (issue(), issue());
        assert_eq!(a.certificate.info().serial, b.certificate.info().serial);
        assert_eq!(a.key.public_key_der(), b.key.public_key_der());
        // With an Ed25519 CA (deterministic signatures) the whole certificate is byte-identical.
        assert_eq!(a.certificate.der(), b.certificate.der());
    }

    #[test]
    fn leaf_never_outlives_its_ca_and_expired_ca_refuses() {
        let mut rng = SeededRandomness::new(b"cap");
        let mut profile = CaProfile::new(CaKind::Clients, "iot", "edge");
        profile.validity = Duration::from_secs(10 * 86_400);
        let ca = CertificateAuthority::generate(&profile, &mut rng, now()).unwrap();
        let device = DeviceRef::new("iot", "edge", "d1").unwrap();
        let creds =
            issue_device_certificate(&ca, &device, &Default::default(), &mut rng, now()).unwrap();
        assert_eq!(
            creds.certificate.info().validity.not_after,
            ca.info().validity.not_after
        );
        let later = now() + Duration::from_secs(11 * 86_400);
        let err = issue_device_certificate(&ca, &device, &Default::default(), &mut rng, later)
            .unwrap_err();
        assert!(matches!(err, PkiError::CaUnusable(_)), "{err}");
    }

    #[test]
    fn cluster_ca_does_not_sign_devices() {
        let mut rng = SeededRandomness::new(b"kind");
        let ca = CertificateAuthority::generate(
            &CaProfile::new(CaKind::Cluster, "iot", "edge"),
            &mut rng,
            now(),
        )
        .unwrap();
        let device = DeviceRef::new("iot", "edge", "d1").unwrap();
        assert!(
            issue_device_certificate(&ca, &device, &Default::default(), &mut rng, now()).is_err()
        );
    }
}
