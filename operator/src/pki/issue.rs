//! Signing a leaf certificate: the part shared by server certificates, device certificates
//! with a generated key, and device certificates from a CSR.

use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose,
    PublicKeyData, SanType,
};

use super::clock::{to_offset, ValidityWindow};
use super::inspect::{pem_encode, CertificateInfo};
use super::names::ORGANIZATION;
use super::{CertificateAuthority, PkiError, PrivateKey, Randomness, Serial};

/// A signed leaf certificate and what was read back from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    der: Vec<u8>,
    info: CertificateInfo,
}

impl IssuedCertificate {
    /// Reads back a certificate (e.g. `tls.crt` of an existing Secret).
    pub fn from_der(der: Vec<u8>) -> Result<Self, PkiError> {
        let info = CertificateInfo::from_der(&der)?;
        Ok(IssuedCertificate { der, info })
    }

    /// The certificate, DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The certificate, PEM (`tls.crt`).
    pub fn pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.der)
    }

    /// Serial, validity, names, fingerprint.
    pub fn info(&self) -> &CertificateInfo {
        &self.info
    }
}

/// A certificate with the private key generated for it (the Secret's `tls.crt` + `tls.key`).
/// `Debug` shows the certificate facts, never the key.
#[derive(Debug)]
pub struct Credentials {
    /// The certificate.
    pub certificate: IssuedCertificate,
    /// Its private key.
    pub key: PrivateKey,
}

/// What the certificate may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeafUsage {
    /// TLS client (devices): EKU clientAuth.
    Client,
    /// TLS server (brokers): EKU serverAuth, plus clientAuth when nodes also dial each other.
    Server {
        /// Add clientAuth too.
        also_client: bool,
    },
}

/// Everything about a leaf except its key.
#[derive(Debug)]
pub(crate) struct LeafRequest {
    /// For error messages: `device certificate for press-17`.
    pub what: String,
    /// Subject CN.
    pub common_name: String,
    /// Subject alternative names.
    pub sans: Vec<SanType>,
    /// Extended key usage.
    pub usage: LeafUsage,
    /// Requested lifetime (capped at the CA's own `notAfter`).
    pub validity: Duration,
}

/// Signs a leaf for `public_key` with `ca`. The serial is 128 random bits from `rng`;
/// `notAfter` never exceeds the CA's, so no leaf outlives its issuer.
pub(crate) fn sign_leaf(
    ca: &CertificateAuthority,
    request: LeafRequest,
    public_key: &impl PublicKeyData,
    rng: &mut dyn Randomness,
    now: SystemTime,
) -> Result<IssuedCertificate, PkiError> {
    let ca_window = ca.info().validity;
    if !ca_window.contains(now) {
        return Err(PkiError::CaUnusable(format!(
            "{} CA is not valid now (valid {:?} to {:?})",
            ca.kind().as_str(),
            ca_window.not_before,
            ca_window.not_after
        )));
    }
    let mut window = ValidityWindow::starting_at(now, request.validity)?;
    window.not_after = window.not_after.min(ca_window.not_after);
    window.not_before = window.not_before.max(ca_window.not_before);

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn.push(DnType::CommonName, request.common_name.as_str());
    params.distinguished_name = dn;
    params.subject_alt_names = request.sans;
    params.serial_number = Some(Serial::random(rng)?.to_rcgen());
    params.not_before = to_offset(window.not_before)?;
    params.not_after = to_offset(window.not_after)?;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let rsa = [
        &rcgen::PKCS_RSA_SHA256,
        &rcgen::PKCS_RSA_SHA384,
        &rcgen::PKCS_RSA_SHA512,
    ];
    if rsa.contains(&public_key.algorithm()) {
        params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    params.extended_key_usages = match request.usage {
        LeafUsage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        LeafUsage::Server { also_client: false } => vec![ExtendedKeyUsagePurpose::ServerAuth],
        LeafUsage::Server { also_client: true } => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    let cert = params
        .signed_by(public_key, ca.issuer())
        .map_err(|source| PkiError::Sign {
            what: request.what,
            source,
        })?;
    let der = cert.der().to_vec();
    let info = CertificateInfo::from_der(&der)?;
    Ok(IssuedCertificate { der, info })
}
