//! Certificate authorities: the per-cluster **cluster CA** (broker server certificates,
//! inter-node TLS) and **clients CA** (device certificates, the CRL).

use std::fmt;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;

use super::clock::{to_offset, ValidityWindow};
use super::inspect::{pem_certificates, pem_encode, CertificateInfo};
use super::names::{check_dns_label, ORGANIZATION};
use super::{KeyAlgorithm, PkiError, PrivateKey, Randomness, Serial};

/// Which of a cluster's two CAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CaKind {
    /// Signs broker server certificates (and inter-node TLS).
    Cluster,
    /// Signs device (client) certificates and the CRL.
    Clients,
}

impl CaKind {
    /// `cluster` or `clients`.
    pub fn as_str(self) -> &'static str {
        match self {
            CaKind::Cluster => "cluster",
            CaKind::Clients => "clients",
        }
    }
}

/// What a generated CA looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaProfile {
    /// Which CA.
    pub kind: CaKind,
    /// Namespace of the `MqttCluster`.
    pub namespace: String,
    /// Name of the `MqttCluster`.
    pub cluster: String,
    /// Key algorithm of the CA key.
    pub key_algorithm: KeyAlgorithm,
    /// Lifetime of the CA certificate.
    pub validity: Duration,
    /// Generation number, incremented at every renewal. It is part of the subject name
    /// (`CN=<cluster> <kind> CA v<generation>`), so old and new CAs never share a name and
    /// verifiers never confuse them while both are in the trust bundle.
    pub generation: u32,
}

impl CaProfile {
    /// Default CA validity: five years.
    pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(5 * 365 * 86_400);

    /// A profile with the defaults (ECDSA P-256, five years, generation 1).
    pub fn new(kind: CaKind, namespace: &str, cluster: &str) -> Self {
        CaProfile {
            kind,
            namespace: namespace.to_string(),
            cluster: cluster.to_string(),
            key_algorithm: KeyAlgorithm::EcdsaP256,
            validity: Self::DEFAULT_VALIDITY,
            generation: 1,
        }
    }

    fn common_name(&self) -> String {
        format!(
            "{} {} CA v{}",
            self.cluster,
            self.kind.as_str(),
            self.generation
        )
    }
}

/// A CA certificate with its private key, ready to sign.
pub struct CertificateAuthority {
    kind: CaKind,
    cert_der: Vec<u8>,
    info: CertificateInfo,
    issuer: Issuer<'static, PrivateKey>,
}

impl CertificateAuthority {
    /// Generates a new self-signed CA (path length 0: it signs leaves only).
    pub fn generate(
        profile: &CaProfile,
        rng: &mut dyn Randomness,
        now: SystemTime,
    ) -> Result<Self, PkiError> {
        check_dns_label("namespace", &profile.namespace)?;
        check_dns_label("cluster", &profile.cluster)?;
        let key = PrivateKey::generate(profile.key_algorithm, rng)?;
        let window = ValidityWindow::starting_at(now, profile.validity)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, ORGANIZATION);
        dn.push(DnType::OrganizationalUnitName, profile.namespace.as_str());
        dn.push(DnType::CommonName, profile.common_name());
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(Serial::random(rng)?.to_rcgen());
        params.not_before = to_offset(window.not_before)?;
        params.not_after = to_offset(window.not_after)?;
        let cert = params.self_signed(&key).map_err(|source| PkiError::Sign {
            what: format!("{} CA certificate", profile.kind.as_str()),
            source,
        })?;
        Self::assemble(profile.kind, cert.der().to_vec(), key)
    }

    /// Loads a CA from PEM (our own Secret, or a bring-your-own CA). Refuses certificates that
    /// are not CAs, cannot sign certificates, or do not match the key.
    pub fn from_pem(kind: CaKind, cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let ders = pem_certificates(cert_pem)?;
        let der = ders.into_iter().next().ok_or_else(|| PkiError::Parse {
            what: format!("{} CA certificate", kind.as_str()),
            reason: "no CERTIFICATE block".into(),
        })?;
        let key = PrivateKey::from_pem(key_pem)?;
        Self::assemble(kind, der, key)
    }

    fn assemble(kind: CaKind, cert_der: Vec<u8>, key: PrivateKey) -> Result<Self, PkiError> {
        let info = CertificateInfo::from_der(&cert_der)?;
        if !info.is_ca {
            return Err(PkiError::CaUnusable(format!(
                "{} CA certificate lacks basicConstraints CA:TRUE",
                kind.as_str()
            )));
        }
        let cert = super::inspect::parse_der(&cert_der)?;
        if cert.public_key().raw != key.public_key_der().as_slice() {
            return Err(PkiError::CaUnusable(format!(
                "{} CA private key does not match the certificate",
                kind.as_str()
            )));
        }
        if let Ok(Some(ku)) = cert.key_usage() {
            if !ku.value.key_cert_sign() {
                return Err(PkiError::CaUnusable(format!(
                    "{} CA certificate key usage lacks keyCertSign",
                    kind.as_str()
                )));
            }
        }
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(cert_der.as_slice()), key)
            .map_err(|source| PkiError::Sign {
                what: format!("{} CA issuer", kind.as_str()),
                source,
            })?;
        Ok(CertificateAuthority {
            kind,
            cert_der,
            info,
            issuer,
        })
    }

    /// Which CA this is.
    pub fn kind(&self) -> CaKind {
        self.kind
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA certificate, PEM (public; goes into the CA bundle ConfigMap).
    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.cert_der)
    }

    /// Parsed facts about the CA certificate.
    pub fn info(&self) -> &CertificateInfo {
        &self.info
    }

    /// The CA private key as PKCS#8 PEM, for the CA Secret. Never log it.
    pub fn key_pem(&self) -> String {
        self.issuer.key().to_pkcs8_pem()
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, PrivateKey> {
        &self.issuer
    }
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("kind", &self.kind)
            .field("common_name", &self.info.common_name)
            .field("serial", &self.info.serial)
            .field("key", &"[redacted]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::clock::unix_seconds;
    use crate::pki::SeededRandomness;
    use std::time::UNIX_EPOCH;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_750_000_000)
    }

    #[test]
    fn generated_ca_is_a_ca_with_its_generation_in_the_name() {
        let mut rng = SeededRandomness::new(b"ca");
        let mut profile = CaProfile::new(CaKind::Clients, "iot", "edge");
        profile.generation = 3;
        let ca = CertificateAuthority::generate(&profile, &mut rng, now()).unwrap();
        let info = ca.info();
        assert!(info.is_ca);
        assert_eq!(info.common_name.as_deref(), Some("edge clients CA v3"));
        assert!(info.subject_key_id.is_some());
        assert_eq!(
            unix_seconds(info.validity.not_after),
            1_750_000_000 + CaProfile::DEFAULT_VALIDITY.as_secs() as i64
        );
        assert!(info.issued_by(info), "self-signed");
    }

    #[test]
    fn ca_round_trips_through_pem_and_refuses_mismatched_keys() {
        let mut rng = SeededRandomness::new(b"ca2");
        for alg in KeyAlgorithm::ALL {
            let mut profile = CaProfile::new(CaKind::Cluster, "iot", "edge");
            profile.key_algorithm = alg;
            let ca = CertificateAuthority::generate(&profile, &mut rng, now()).unwrap();
            let back =
                CertificateAuthority::from_pem(CaKind::Cluster, &ca.cert_pem(), &ca.key_pem())
                    .unwrap();
            assert_eq!(back.info(), ca.info());
            let other = PrivateKey::generate(alg, &mut rng).unwrap();
            let err = CertificateAuthority::from_pem(
                CaKind::Cluster,
                &ca.cert_pem(),
                &other.to_pkcs8_pem(),
            )
            .unwrap_err();
            assert!(matches!(err, PkiError::CaUnusable(_)), "{err}");
        }
    }

    #[test]
    fn debug_of_a_ca_hides_its_key() {
        let mut rng = SeededRandomness::new(b"ca3");
        let ca = CertificateAuthority::generate(
            &CaProfile::new(CaKind::Clients, "iot", "edge"),
            &mut rng,
            now(),
        )
        .unwrap();
        let key_pem = ca.key_pem();
        let body: String = key_pem.lines().filter(|l| !l.starts_with("---")).collect();
        let shown = format!("{ca:?}");
        assert!(shown.contains("[redacted]"));
        assert!(!shown.contains(&body[..20]));
    }
}
