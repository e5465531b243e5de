//! The CRL, signed by the clients CA, for clients that want one. Lists every revoked
//! certificate that has not expired yet.

use std::time::{Duration, SystemTime};

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};

use super::clock::{from_unix_seconds, to_offset};
use super::inspect::pem_encode;
use super::{CaKind, CertificateAuthority, PkiError, RevokedSet};

/// A signed CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crl {
    der: Vec<u8>,
}

impl Crl {
    /// DER (`ca.crl` for tools that want DER).
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// PEM (`X509 CRL`).
    pub fn pem(&self) -> String {
        pem_encode("X509 CRL", &self.der)
    }
}

/// Signs a CRL with the clients CA. `crl_number` must grow with every CRL the CA issues (the
/// controller keeps it in the CA Secret); `next_update_in` is how long clients may cache it.
pub fn build_crl(
    clients_ca: &CertificateAuthority,
    revoked: &RevokedSet,
    crl_number: u64,
    next_update_in: Duration,
    now: SystemTime,
) -> Result<Crl, PkiError> {
    if clients_ca.kind() != CaKind::Clients {
        return Err(PkiError::CaUnusable(
            "the CRL is signed by the clients CA".into(),
        ));
    }
    let mut revoked_certs = Vec::with_capacity(revoked.len());
    for (serial, entry) in revoked.live_at(now) {
        revoked_certs.push(RevokedCertParams {
            serial_number: serial.to_rcgen(),
            revocation_time: to_offset(from_unix_seconds(entry.revoked_at))?,
            reason_code: None,
            invalidity_date: None,
        });
    }
    let params = CertificateRevocationListParams {
        this_update: to_offset(now)?,
        next_update: to_offset(now + next_update_in)?,
        crl_number: SerialNumber::from_slice(&crl_number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: match &clients_ca.info().subject_key_id {
            Some(ski) => KeyIdMethod::PreSpecified(ski.clone()),
            None => KeyIdMethod::Sha256,
        },
    };
    let crl = params
        .signed_by(clients_ca.issuer())
        .map_err(|source| PkiError::Sign {
            what: "clients CA CRL".into(),
            source,
        })?;
    Ok(Crl {
        der: crl.der().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CaProfile, SeededRandomness, Serial};
    use std::time::UNIX_EPOCH;
    use x509_parser::prelude::FromDer;
    use x509_parser::revocation_list::CertificateRevocationList;

    #[test]
    fn crl_lists_live_revocations_and_verifies_with_the_ca_key() {
        let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        let mut rng = SeededRandomness::new(b"crl");
        let ca = CertificateAuthority::generate(
            &CaProfile::new(CaKind::Clients, "iot", "edge"),
            &mut rng,
            now,
        )
        .unwrap();
        let mut set = RevokedSet::new();
        set.revoke(
            Serial::from_u128(u128::MAX),
            now + Duration::from_secs(100),
            now,
            None,
        );
        set.revoke(
            Serial::from_u128(7),
            now + Duration::from_secs(100),
            now,
            None,
        );
        set.revoke(
            Serial::from_u128(9),
            now - Duration::from_secs(1),
            now,
            None,
        );
        let crl = build_crl(&ca, &set, 42, Duration::from_secs(86_400), now).unwrap();
        let (_, parsed) = CertificateRevocationList::from_der(crl.der()).unwrap();
        let ca_cert = crate::pki::inspect::parse_der(ca.cert_der()).unwrap();
        parsed.verify_signature(ca_cert.public_key()).unwrap();
        let serials: Vec<u128> = parsed
            .iter_revoked_certificates()
            .map(|r| {
                Serial::from_der_bytes(&r.serial().to_bytes_be())
                    .unwrap()
                    .to_u128()
                    .unwrap()
            })
            .collect();
        assert_eq!(serials, vec![7, u128::MAX]);
        assert_eq!(parsed.crl_number().unwrap().to_string(), "42");
        assert!(crl.pem().starts_with("-----BEGIN X509 CRL-----\n"));
    }
}
