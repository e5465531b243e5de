//! The test bed's PKI: a CA, the apiserver's serving certificate and the service-account signing
//! key. Pure: generates PEM text, writes nothing.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Errors generating the test bed's certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen failed for the named item.
    #[error("generating {what}: {source}")]
    Generate {
        /// Which certificate or key.
        what: &'static str,
        /// The rcgen error.
        source: rcgen::Error,
    },
}

/// The first address of the bed's service CIDR (`10.0.0.0/24`), the in-cluster
/// `kubernetes.default` Service IP; it is on the serving certificate so in-cluster style clients
/// could verify it too.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// DNS names on the apiserver's serving certificate.
const SERVING_DNS_NAMES: [&str; 5] = [
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// PEM material for the control plane. `Debug` shows only the certificates, never keys.
pub struct ControlPlanePki {
    /// The CA certificate (trusted by clients, `--client-ca-file`, `--root-ca-file`).
    pub ca_cert_pem: String,
    /// The apiserver's serving certificate, signed by the CA, valid for 127.0.0.1.
    pub serving_cert_pem: String,
    /// The serving certificate's private key (PKCS#8).
    pub serving_key_pem: String,
    /// ECDSA P-256 key (PKCS#8) that signs service-account tokens.
    pub service_account_key_pem: String,
    /// Its public half (SPKI), which the apiserver verifies tokens with.
    pub service_account_public_pem: String,
}

impl fmt::Debug for ControlPlanePki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlanePki")
            .field("ca_cert_pem", &self.ca_cert_pem)
            .field("serving_cert_pem", &self.serving_cert_pem)
            .field("serving_key_pem", &"<redacted>")
            .field("service_account_key_pem", &"<redacted>")
            .field(
                "service_account_public_pem",
                &self.service_account_public_pem,
            )
            .finish()
    }
}

fn gen<T>(what: &'static str, r: Result<T, rcgen::Error>) -> Result<T, CertError> {
    r.map_err(|source| CertError::Generate { what, source })
}

impl ControlPlanePki {
    /// Generates a fresh CA, serving certificate and service-account key (ECDSA P-256).
    pub fn generate() -> Result<Self, CertError> {
        let ca_key = gen("CA key", KeyPair::generate())?;
        let mut ca_params = gen("CA params", CertificateParams::new(Vec::<String>::new()))?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "mqtt-operator e2e CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = gen("CA certificate", ca_params.self_signed(&ca_key))?;
        let issuer = Issuer::new(ca_params, ca_key);

        let serving_key = gen("serving key", KeyPair::generate())?;
        let mut serving = gen(
            "serving params",
            CertificateParams::new(
                SERVING_DNS_NAMES
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            ),
        )?;
        serving
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        serving
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(KUBERNETES_SERVICE_IP)));
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        serving.use_authority_key_identifier_extension = true;
        let serving_cert = gen(
            "serving certificate",
            serving.signed_by(&serving_key, &issuer),
        )?;

        let sa_key = gen("service-account key", KeyPair::generate())?;

        Ok(Self {
            ca_cert_pem: ca_cert.pem(),
            serving_cert_pem: serving_cert.pem(),
            serving_key_pem: serving_key.serialize_pem(),
            service_account_key_pem: sa_key.serialize_pem(),
            service_account_public_pem: sa_key.public_key_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_distinct_pem_material_and_hides_keys_in_debug() {
        let pki = ControlPlanePki::generate().expect("generate");
        assert!(pki.ca_cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pki
            .serving_cert_pem
            .starts_with("-----BEGIN CERTIFICATE-----"));
        assert_ne!(pki.ca_cert_pem, pki.serving_cert_pem);
        assert!(pki.serving_key_pem.contains("PRIVATE KEY"));
        assert_ne!(pki.serving_key_pem, pki.service_account_key_pem);
        let debug = format!("{pki:?}");
        assert!(
            !debug.contains("PRIVATE KEY"),
            "keys leaked into Debug: {debug}"
        );
    }
}
