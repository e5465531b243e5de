//! The CA trust bundle across a CA renewal: the new CA plus every older CA that still has a
//! live leaf (one not yet expired and not yet re-issued by the new CA).

use std::time::SystemTime;

use super::inspect::{pem_certificates, CertificateInfo};
use super::PkiError;

/// One CA certificate in a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleMember {
    /// The CA certificate, DER.
    pub der: Vec<u8>,
    /// What was read from it.
    pub info: CertificateInfo,
}

impl BundleMember {
    /// Reads one CA certificate.
    pub fn from_der(der: Vec<u8>) -> Result<Self, PkiError> {
        let info = CertificateInfo::from_der(&der)?;
        Ok(BundleMember { der, info })
    }
}

/// Why an older CA left the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The old CA itself expired.
    CaExpired,
    /// No live leaf is signed by it any more (all expired or re-issued).
    NoLiveLeaves,
}

/// The bundle to publish and what was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustBundle {
    /// Current CA first, then retained older CAs newest first.
    pub members: Vec<BundleMember>,
    /// Older CAs no longer trusted, with the reason.
    pub dropped: Vec<(BundleMember, DropReason)>,
}

impl TrustBundle {
    /// Plans the bundle. `previous` are the CAs of the last published bundle (the current one
    /// may be among them and is ignored there); `live_leaves` are the certificates still in
    /// use (current device and server certificates, plus previous ones kept trusted until their
    /// own expiry).
    pub fn plan<'a>(
        current: &BundleMember,
        previous: &[BundleMember],
        live_leaves: impl IntoIterator<Item = &'a CertificateInfo>,
        now: SystemTime,
    ) -> TrustBundle {
        let mut candidates: Vec<&BundleMember> = previous
            .iter()
            .filter(|m| m.info.fingerprint_sha256 != current.info.fingerprint_sha256)
            .collect();
        candidates.sort_by(|a, b| {
            b.info
                .validity
                .not_before
                .cmp(&a.info.validity.not_before)
                .then_with(|| a.info.fingerprint_sha256.cmp(&b.info.fingerprint_sha256))
        });
        candidates.dedup_by(|a, b| a.info.fingerprint_sha256 == b.info.fingerprint_sha256);

        let mut needed = vec![false; candidates.len()];
        for leaf in live_leaves {
            if leaf.validity.not_after < now || leaf.issued_by(&current.info) {
                continue;
            }
            if let Some(i) = candidates.iter().position(|ca| leaf.issued_by(&ca.info)) {
                needed[i] = true;
            }
        }

        let mut members = vec![current.clone()];
        let mut dropped = Vec::new();
        for (ca, needed) in candidates.into_iter().zip(needed) {
            if ca.info.validity.not_after < now {
                dropped.push((ca.clone(), DropReason::CaExpired));
            } else if needed {
                members.push(ca.clone());
            } else {
                dropped.push((ca.clone(), DropReason::NoLiveLeaves));
            }
        }
        TrustBundle { members, dropped }
    }

    /// Reads a published bundle (concatenated PEM) back.
    pub fn parse_pem(pem: &str) -> Result<Vec<BundleMember>, PkiError> {
        pem_certificates(pem)?
            .into_iter()
            .map(BundleMember::from_der)
            .collect()
    }

    /// The bundle as concatenated PEM (`ca.crt` in the bundle ConfigMap).
    pub fn pem(&self) -> String {
        self.members
            .iter()
            .map(|m| super::inspect::pem_encode("CERTIFICATE", &m.der))
            .collect()
    }
}
