//! Reading certificates back (x509-parser): what rotation, status and the trust bundle need.

use std::net::IpAddr;
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::clock::{from_unix_seconds, ValidityWindow};
use super::{KeyAlgorithm, PkiError, Serial};

/// The facts about one certificate that the operator acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The serial number.
    pub serial: Serial,
    /// Subject common name, if any.
    pub common_name: Option<String>,
    /// Issuer common name, if any.
    pub issuer_common_name: Option<String>,
    /// DER of the subject name (compared byte for byte when key identifiers are missing).
    pub subject_raw: Vec<u8>,
    /// DER of the issuer name.
    pub issuer_raw: Vec<u8>,
    /// `notBefore` / `notAfter`.
    pub validity: ValidityWindow,
    /// Basic constraints `CA:TRUE`.
    pub is_ca: bool,
    /// The subject key's algorithm, when it is one we issue.
    pub key_algorithm: Option<KeyAlgorithm>,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// URI subject alternative names.
    pub uris: Vec<String>,
    /// Extended key usage includes `clientAuth`.
    pub client_auth: bool,
    /// Extended key usage includes `serverAuth`.
    pub server_auth: bool,
    /// Subject key identifier extension.
    pub subject_key_id: Option<Vec<u8>>,
    /// Authority key identifier (the key id part).
    pub authority_key_id: Option<Vec<u8>>,
    /// SHA-256 of the whole DER certificate, lowercase hex (status `fingerprintSha256`).
    pub fingerprint_sha256: String,
    /// SHA-256 of the DER SubjectPublicKeyInfo (identifies the key across re-signed certificates).
    pub spki_sha256: [u8; 32],
}

impl CertificateInfo {
    /// Parses one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, PkiError> {
        let cert = parse_der(der)?;
        let bad = |reason: String| PkiError::Parse {
            what: "certificate".into(),
            reason,
        };
        let mut info = CertificateInfo {
            serial: Serial::from_der_bytes(cert.raw_serial())?,
            common_name: first_cn(cert.subject()),
            issuer_common_name: first_cn(cert.issuer()),
            subject_raw: cert.subject().as_raw().to_vec(),
            issuer_raw: cert.issuer().as_raw().to_vec(),
            validity: ValidityWindow {
                not_before: from_unix_seconds(cert.validity().not_before.timestamp()),
                not_after: from_unix_seconds(cert.validity().not_after.timestamp()),
            },
            is_ca: cert.is_ca(),
            key_algorithm: key_algorithm(cert.public_key()),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            uris: Vec::new(),
            client_auth: false,
            server_auth: false,
            subject_key_id: None,
            authority_key_id: None,
            fingerprint_sha256: hex::encode(Sha256::digest(der)),
            spki_sha256: Sha256::digest(cert.public_key().raw).into(),
        };
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        match name {
                            GeneralName::DNSName(d) => info.dns_names.push(d.to_string()),
                            GeneralName::URI(u) => info.uris.push(u.to_string()),
                            GeneralName::IPAddress(ip) => info
                                .ip_addresses
                                .push(ip_from_bytes(ip).ok_or_else(|| {
                                    bad(format!("IP SAN of {} octets", ip.len()))
                                })?),
                            _ => {}
                        }
                    }
                }
                ParsedExtension::ExtendedKeyUsage(eku) => {
                    info.client_auth = eku.client_auth;
                    info.server_auth = eku.server_auth;
                }
                ParsedExtension::SubjectKeyIdentifier(id) => {
                    info.subject_key_id = Some(id.0.to_vec())
                }
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    info.authority_key_id = aki.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => {}
            }
        }
        Ok(info)
    }

    /// Parses the first certificate of a PEM text.
    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        let ders = pem_certificates(pem)?;
        let first = ders.first().ok_or_else(|| PkiError::Parse {
            what: "certificate PEM".into(),
            reason: "no CERTIFICATE block".into(),
        })?;
        CertificateInfo::from_der(first)
    }

    /// True when this certificate names `ca` as its issuer: the authority key identifier equals
    /// the CA's subject key identifier, or, when either is missing, the issuer name equals the
    /// CA's subject name. (Our CAs carry the generation in their name, so a renewed CA with a new
    /// key never matches an older one's leaves.)
    pub fn issued_by(&self, ca: &CertificateInfo) -> bool {
        match (&self.authority_key_id, &ca.subject_key_id) {
            (Some(aki), Some(ski)) => aki == ski && self.issuer_raw == ca.subject_raw,
            _ => self.issuer_raw == ca.subject_raw,
        }
    }

    /// True when `now` is within the validity window.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.validity.contains(now)
    }
}

/// Every `CERTIFICATE` block of a PEM text, as DER, in order (other blocks are skipped).
pub fn pem_certificates(text: &str) -> Result<Vec<Vec<u8>>, PkiError> {
    let blocks = pem::parse_many(text).map_err(|e| PkiError::Parse {
        what: "PEM".into(),
        reason: e.to_string(),
    })?;
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect())
}

/// PEM-encodes DER under `label` (64-column base64, `\n` line endings).
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der), config)
}

pub(crate) fn parse_der(der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::Parse {
        what: "certificate".into(),
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(PkiError::Parse {
            what: "certificate".into(),
            reason: format!("{} trailing octets", rest.len()),
        });
    }
    Ok(cert)
}

fn first_cn(name: &x509_parser::x509::X509Name<'_>) -> Option<String> {
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// Classifies a public key as one of the algorithms we issue, or `None`.
pub(crate) fn key_algorithm(spki: &SubjectPublicKeyInfo<'_>) -> Option<KeyAlgorithm> {
    let alg = &spki.algorithm;
    if alg.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = alg.parameters.as_ref()?.as_oid().ok()?;
        (curve == OID_EC_P256).then_some(KeyAlgorithm::EcdsaP256)
    } else if alg.algorithm == OID_SIG_ED25519 {
        Some(KeyAlgorithm::Ed25519)
    } else if alg.algorithm == OID_PKCS1_RSAENCRYPTION {
        match spki.parsed().ok()? {
            PublicKey::RSA(rsa) if rsa.key_size() == 2048 => Some(KeyAlgorithm::Rsa2048),
            _ => None,
        }
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_through_the_parser() {
        let der: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let pem = pem_encode("CERTIFICATE", &der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert_eq!(pem_certificates(&pem).unwrap(), vec![der]);
        assert!(pem_certificates("no pem here").unwrap().is_empty());
    }
}
