//! Signing a device's own CSR, so the device key never exists in the cluster.
//!
//! Policy: the CSR's signature must verify with its own key; its subject CN must equal the
//! device id; it must not ask for `CA:TRUE`; it may carry no subject alternative name other than
//! the device's own SAN URI; the key must be ECDSA P-256/P-384, Ed25519, or RSA of 2048 to 8192
//! bits with an odd public exponent ≥ 65537. Only the public key is taken from the CSR: subject,
//! SANs, key usages and validity of the certificate are ours.

use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::device::sign_device_key;
use super::inspect::key_algorithm;
use super::{
    CertificateAuthority, DeviceRef, IssuedCertificate, KeyAlgorithm, PkiError, Randomness,
};

/// Why a CSR was refused. Messages are shown in the `DeviceIdentity` status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrRejection {
    /// Not a `CERTIFICATE REQUEST` PEM block.
    #[error("csr: not a PEM CERTIFICATE REQUEST: {0}")]
    NotPem(String),
    /// The DER does not parse as a PKCS#10 request.
    #[error("csr: malformed PKCS#10 request: {0}")]
    Malformed(String),
    /// The self-signature does not verify (tampered, or signed with another key).
    #[error("csr: signature does not verify with the request's own public key")]
    BadSignature,
    /// The subject CN is not the device id.
    #[error("csr: subject CN {found:?} must equal deviceId {expected:?}")]
    CommonNameMismatch {
        /// The device id.
        expected: String,
        /// What the CSR asked for.
        found: Option<String>,
    },
    /// The CSR asks for a CA certificate.
    #[error("csr: requests basicConstraints CA:TRUE")]
    RequestsCa,
    /// The CSR asks for subject alternative names besides the device's own URI.
    #[error("csr: requests subject alternative names we do not grant: {0:?}")]
    ExtraSubjectAltNames(Vec<String>),
    /// The key is too weak (short RSA, small curve, exponent 3...).
    #[error("csr: weak key: {0}")]
    WeakKey(String),
    /// The key type is not one we sign.
    #[error("csr: unsupported key type: {0}")]
    UnsupportedKey(String),
}

/// A CSR that passed every check, reduced to what we sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCsr {
    public_key: rcgen::SubjectPublicKeyInfo,
    key_algorithm: Option<KeyAlgorithm>,
    sha256: [u8; 32],
}

impl VerifiedCsr {
    /// The key algorithm, when one we also generate (P-384 and larger RSA keys are `None`).
    pub fn key_algorithm(&self) -> Option<KeyAlgorithm> {
        self.key_algorithm
    }

    /// SHA-256 of the CSR DER: recorded at issuance so a changed `spec.csr` triggers rotation.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }
}

/// Decodes a PEM `CERTIFICATE REQUEST` (or `NEW CERTIFICATE REQUEST`) to DER.
pub fn csr_der_from_pem(pem_text: &str) -> Result<Vec<u8>, CsrRejection> {
    let block = pem::parse(pem_text).map_err(|e| CsrRejection::NotPem(e.to_string()))?;
    match block.tag() {
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => Ok(block.into_contents()),
        other => Err(CsrRejection::NotPem(format!("block is {other:?}"))),
    }
}

/// Checks only the CSR's self-signature (what `openssl req -verify` checks). Signatures by keys
/// the policy refuses as weak (RSA below 2048 bits, secp256k1...) do not verify here.
pub fn check_csr_signature(der: &[u8]) -> Result<(), CsrRejection> {
    let csr = parse(der)?;
    csr.verify_signature()
        .map_err(|_| CsrRejection::BadSignature)
}

/// Runs every check of the module policy on a PEM CSR for `device`.
pub fn verify_csr(pem_text: &str, device: &DeviceRef) -> Result<VerifiedCsr, CsrRejection> {
    let der = csr_der_from_pem(pem_text)?;
    verify_csr_der(&der, device)
}

/// [`verify_csr`] on DER.
pub fn verify_csr_der(der: &[u8], device: &DeviceRef) -> Result<VerifiedCsr, CsrRejection> {
    let csr = parse(der)?;
    let info = &csr.certification_request_info;
    // Key strength first: the verifier cannot check signatures of keys we refuse anyway
    // (aws-lc verifies RSA from 2048 bits only), and "weak key" is the more useful message.
    check_key_strength(&info.subject_pki)?;
    csr.verify_signature()
        .map_err(|_| CsrRejection::BadSignature)?;

    let cns: Vec<_> = info.subject.iter_common_name().collect();
    let found = match cns.as_slice() {
        [one] => one.as_str().ok().map(str::to_string),
        _ => None,
    };
    if found.as_deref() != Some(device.device_id.as_str()) {
        return Err(CsrRejection::CommonNameMismatch {
            expected: device.device_id.clone(),
            found: cns
                .first()
                .and_then(|c| c.as_str().ok())
                .map(str::to_string),
        });
    }

    let own_uri = device.uri();
    let mut extra = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        match ext {
            ParsedExtension::BasicConstraints(bc) if bc.ca => return Err(CsrRejection::RequestsCa),
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::URI(u) if *u == own_uri => {}
                        other => extra.push(other.to_string()),
                    }
                }
            }
            _ => {}
        }
    }
    if !extra.is_empty() {
        return Err(CsrRejection::ExtraSubjectAltNames(extra));
    }

    let public_key = rcgen::SubjectPublicKeyInfo::from_der(info.subject_pki.raw)
        .map_err(|e| CsrRejection::UnsupportedKey(e.to_string()))?;
    Ok(VerifiedCsr {
        public_key,
        key_algorithm: key_algorithm(&info.subject_pki),
        sha256: Sha256::digest(der).into(),
    })
}

/// Signs a verified CSR into a device certificate (clientAuth, `CN=<deviceId>`, SAN URI).
pub fn sign_device_csr(
    clients_ca: &CertificateAuthority,
    device: &DeviceRef,
    csr: &VerifiedCsr,
    validity: Duration,
    rng: &mut dyn Randomness,
    now: SystemTime,
) -> Result<IssuedCertificate, PkiError> {
    sign_device_key(clients_ca, device, validity, &csr.public_key, rng, now)
}

fn parse(der: &[u8]) -> Result<X509CertificationRequest<'_>, CsrRejection> {
    let (rest, csr) = X509CertificationRequest::from_der(der)
        .map_err(|e| CsrRejection::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrRejection::Malformed(format!(
            "{} trailing octets",
            rest.len()
        )));
    }
    Ok(csr)
}

fn check_key_strength(spki: &SubjectPublicKeyInfo<'_>) -> Result<(), CsrRejection> {
    let alg = &spki.algorithm;
    if alg.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = alg
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or_else(|| CsrRejection::UnsupportedKey("EC key without a named curve".into()))?;
        if curve == OID_EC_P256 || curve == OID_NIST_EC_P384 {
            Ok(())
        } else {
            Err(CsrRejection::WeakKey(format!(
                "EC curve {curve} (only P-256 and P-384 are accepted)"
            )))
        }
    } else if alg.algorithm == OID_SIG_ED25519 {
        Ok(())
    } else if alg.algorithm == OID_PKCS1_RSAENCRYPTION {
        let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
            return Err(CsrRejection::UnsupportedKey("unparsable RSA key".into()));
        };
        let bits = rsa.key_size();
        if bits < 2048 {
            return Err(CsrRejection::WeakKey(format!(
                "RSA {bits} bits (minimum 2048)"
            )));
        }
        if bits > 8192 {
            return Err(CsrRejection::UnsupportedKey(format!(
                "RSA {bits} bits (maximum 8192)"
            )));
        }
        match rsa.try_exponent() {
            Ok(e) if e >= 65_537 && e % 2 == 1 => Ok(()),
            Ok(e) => Err(CsrRejection::WeakKey(format!("RSA public exponent {e}"))),
            Err(_) => Err(CsrRejection::UnsupportedKey(
                "RSA exponent wider than 64 bits".into(),
            )),
        }
    } else {
        Err(CsrRejection::UnsupportedKey(format!(
            "algorithm {}",
            alg.algorithm
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CaKind, CaProfile, PrivateKey, SeededRandomness};
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, SanType};
    use std::time::UNIX_EPOCH;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_750_000_000)
    }

    fn device() -> DeviceRef {
        DeviceRef::new("iot", "edge", "press-17").unwrap()
    }

    fn csr_pem(
        alg: KeyAlgorithm,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> (String, PrivateKey) {
        let key = PrivateKey::generate(alg, &mut SeededRandomness::new(b"csr-key")).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "press-17");
        edit(&mut params);
        let csr = params.serialize_request(&key).unwrap();
        (csr.pem().unwrap(), key)
    }

    #[test]
    fn good_csr_is_signed_with_our_names_and_its_key() {
        let mut rng = SeededRandomness::new(b"csr");
        let ca = CertificateAuthority::generate(
            &CaProfile::new(CaKind::Clients, "iot", "edge"),
            &mut rng,
            now(),
        )
        .unwrap();
        for alg in KeyAlgorithm::ALL {
            let (pem, key) = csr_pem(alg, |p| {
                p.subject_alt_names = vec![SanType::URI(device().uri().try_into().unwrap())];
            });
            let verified = verify_csr(&pem, &device()).unwrap();
            assert_eq!(verified.key_algorithm(), Some(alg));
            let cert = sign_device_csr(
                &ca,
                &device(),
                &verified,
                Duration::from_secs(86_400),
                &mut rng,
                now(),
            )
            .unwrap();
            let parsed = crate::pki::inspect::parse_der(cert.der()).unwrap();
            assert_eq!(parsed.public_key().raw, key.public_key_der().as_slice());
            assert_eq!(cert.info().common_name.as_deref(), Some("press-17"));
            assert_eq!(cert.info().uris, vec![device().uri()]);
            assert!(cert.info().client_auth && !cert.info().is_ca);
        }
    }

    #[test]
    fn policy_violations_are_named() {
        let (pem, _) = csr_pem(KeyAlgorithm::EcdsaP256, |p| {
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name
                .push(DnType::CommonName, "someone-else");
        });
        assert!(matches!(
            verify_csr(&pem, &device()),
            Err(CsrRejection::CommonNameMismatch { found: Some(f), .. }) if f == "someone-else"
        ));

        let (pem, _) = csr_pem(KeyAlgorithm::EcdsaP256, |p| {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        });
        assert_eq!(verify_csr(&pem, &device()), Err(CsrRejection::RequestsCa));

        let (pem, _) = csr_pem(KeyAlgorithm::EcdsaP256, |p| {
            p.subject_alt_names = vec![SanType::DnsName("evil.example.com".try_into().unwrap())];
        });
        assert!(
            matches!(verify_csr(&pem, &device()), Err(CsrRejection::ExtraSubjectAltNames(v)) if v.len() == 1)
        );

        let other = DeviceRef::new("other-ns", "edge", "press-17").unwrap();
        let (pem, _) = csr_pem(KeyAlgorithm::EcdsaP256, |p| {
            p.subject_alt_names = vec![SanType::URI(other.uri().try_into().unwrap())];
        });
        assert!(matches!(
            verify_csr(&pem, &device()),
            Err(CsrRejection::ExtraSubjectAltNames(_))
        ));

        assert!(matches!(
            verify_csr("garbage", &device()),
            Err(CsrRejection::NotPem(_))
        ));
    }

    #[test]
    fn tampered_csr_fails_the_signature_check() {
        let (pem, _) = csr_pem(KeyAlgorithm::EcdsaP256, |_| {});
        let mut der = csr_der_from_pem(&pem).unwrap();
        check_csr_signature(&der).unwrap();
        // Flip a byte of the CN ("press-17" -> "press-18").
        let at = der.windows(8).position(|w| w == b"press-17").unwrap();
        der[at + 7] = b'8';
        assert_eq!(check_csr_signature(&der), Err(CsrRejection::BadSignature));
        let other = DeviceRef::new("iot", "edge", "press-18").unwrap();
        assert_eq!(
            verify_csr_der(&der, &other),
            Err(CsrRejection::BadSignature)
        );
    }
}
