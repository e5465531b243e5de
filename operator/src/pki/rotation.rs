//! When to (re-)issue: pure functions of (desired spec, current certificate, now).
//!
//! * Renewal time of a leaf = `notAfter - renewBefore - jitter`, where the jitter is a
//!   deterministic fraction (from SHA-256 of a per-cluster seed and the identity key) of
//!   `renewBefore / JITTER_DIVISOR`. One identity always gets the same offset; a fleet enrolled in
//!   the same second spreads its renewals over that window instead of renewing together.
//!   The renewal time is never before `notBefore`.
//! * A device certificate is also re-issued when the `mqtt.operator.dev/rotate` annotation
//!   changes, when the clients CA changes, when the desired key algorithm or validity changes,
//!   when `spec.csr` changes, or when the certificate does not name the device.
//! * A CA is renewed at `notAfter - renewBefore` (no jitter: there is one per cluster).

use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::clock::ValidityWindow;
use super::{CertificateInfo, DeviceRef, KeyAlgorithm, PkiError, ServerCertRequest};

/// The annotation whose every new value forces a re-issue.
pub const ROTATE_ANNOTATION: &str = "mqtt.operator.dev/rotate";

/// The jitter window is `renewBefore / JITTER_DIVISOR` (a fifth: 6 days for the 90d/30d default).
pub const JITTER_DIVISOR: u32 = 5;

/// Lifetime and renewal lead time of a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewalPolicy {
    /// Certificate lifetime.
    pub validity: Duration,
    /// How long before `notAfter` renewal starts.
    pub renew_before: Duration,
}

impl RenewalPolicy {
    /// `renew_before` defaults to a third of `validity` and must be shorter than it.
    pub fn new(validity: Duration, renew_before: Option<Duration>) -> Result<Self, PkiError> {
        let renew_before = renew_before.unwrap_or(validity / 3);
        if validity < Duration::from_secs(60) {
            return Err(PkiError::Validity(format!(
                "validity {validity:?} is shorter than one minute"
            )));
        }
        if renew_before >= validity {
            return Err(PkiError::Validity(format!(
                "renewBefore {renew_before:?} must be shorter than validity {validity:?}"
            )));
        }
        Ok(RenewalPolicy {
            validity,
            renew_before,
        })
    }

    /// The largest jitter this policy allows.
    pub fn max_jitter(&self) -> Duration {
        self.renew_before / JITTER_DIVISOR
    }
}

/// The deterministic jitter of one identity: `max * h / 2^64` with `h` the first 8 bytes of
/// SHA-256(seed ‖ 0x00 ‖ identity), rounded down to whole seconds.
pub fn jitter(seed: &[u8], identity: &str, max: Duration) -> Duration {
    let mut h = Sha256::new();
    h.update(seed);
    h.update([0u8]);
    h.update(identity.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let fraction = u64::from_be_bytes(first) as u128;
    let secs = (max.as_secs() as u128 * fraction) >> 64;
    Duration::from_secs(secs as u64)
}

/// `notAfter - renewBefore - jitter`, never before `notBefore`.
pub fn renewal_time(
    window: &ValidityWindow,
    renew_before: Duration,
    jitter: Duration,
) -> SystemTime {
    window
        .not_after
        .checked_sub(renew_before + jitter)
        .unwrap_or(window.not_before)
        .max(window.not_before)
}

/// Why a certificate is (re-)issued. `as_str` is the metric label and event reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RotationReason {
    /// There is no certificate yet (or it cannot be read).
    NotIssued,
    /// The renewal time has come.
    RenewalDue,
    /// The rotate annotation has a new value.
    RotateRequested,
    /// The certificate was signed by another (older) CA.
    IssuerChanged,
    /// The desired key algorithm changed.
    KeyAlgorithmChanged,
    /// The desired validity changed.
    ValidityChanged,
    /// `spec.csr` changed.
    CsrChanged,
    /// The certificate does not carry the names it should (device id, DNS names).
    NamesChanged,
}

impl RotationReason {
    /// CamelCase, for events and condition reasons; also a bounded metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RotationReason::NotIssued => "NotIssued",
            RotationReason::RenewalDue => "RenewalDue",
            RotationReason::RotateRequested => "RotateRequested",
            RotationReason::IssuerChanged => "IssuerChanged",
            RotationReason::KeyAlgorithmChanged => "KeyAlgorithmChanged",
            RotationReason::ValidityChanged => "ValidityChanged",
            RotationReason::CsrChanged => "CsrChanged",
            RotationReason::NamesChanged => "NamesChanged",
        }
    }
}

/// The outcome of a rotation check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationDecision {
    /// Keep the current certificate; look again at `renewal_time` (requeue then).
    Keep {
        /// When the certificate becomes due (status `renewalTime`).
        renewal_time: SystemTime,
    },
    /// Issue a new certificate now.
    Rotate(RotationReason),
}

/// What the spec wants for one device.
#[derive(Debug, Clone, Copy)]
pub struct DeviceDesired<'a> {
    /// The device.
    pub device: &'a DeviceRef,
    /// Validity and renewBefore.
    pub policy: RenewalPolicy,
    /// Key algorithm for generated keys (ignored when `csr_sha256` is set).
    pub key_algorithm: KeyAlgorithm,
    /// SHA-256 of `spec.csr` when the device brings its own key.
    pub csr_sha256: Option<[u8; 32]>,
    /// Current value of the rotate annotation.
    pub rotate_token: Option<&'a str>,
    /// The clients CA that signs today.
    pub clients_ca: &'a CertificateInfo,
    /// Per-cluster jitter seed (e.g. the MqttCluster UID).
    pub jitter_seed: &'a [u8],
}

/// What was issued last time, as recorded next to the certificate (Secret annotations).
#[derive(Debug, Clone, Copy)]
pub struct DeviceIssued<'a> {
    /// The current certificate.
    pub certificate: &'a CertificateInfo,
    /// The rotate annotation value it was issued under.
    pub rotate_token: Option<&'a str>,
    /// SHA-256 of the CSR it was signed from, if any.
    pub csr_sha256: Option<[u8; 32]>,
}

/// The renewal time of a device certificate (status `renewalTime`).
pub fn device_renewal_time(desired: &DeviceDesired<'_>, cert: &CertificateInfo) -> SystemTime {
    let j = jitter(
        desired.jitter_seed,
        &desired.device.key(),
        desired.policy.max_jitter(),
    );
    renewal_time(&cert.validity, desired.policy.renew_before, j)
}

/// Decides whether the device's certificate must be (re-)issued now. The checks run in a fixed
/// order so the reported reason is stable: identity, CSR, CA, algorithm, validity, annotation,
/// due time.
pub fn decide_device_rotation(
    desired: &DeviceDesired<'_>,
    current: Option<&DeviceIssued<'_>>,
    now: SystemTime,
) -> RotationDecision {
    let Some(current) = current else {
        return RotationDecision::Rotate(RotationReason::NotIssued);
    };
    let cert = current.certificate;
    let names_ok = cert.common_name.as_deref() == Some(desired.device.device_id.as_str())
        && cert.uris == [desired.device.uri()];
    let reason = if !names_ok {
        Some(RotationReason::NamesChanged)
    } else if desired.csr_sha256 != current.csr_sha256 {
        Some(RotationReason::CsrChanged)
    } else if !cert.issued_by(desired.clients_ca) {
        Some(RotationReason::IssuerChanged)
    } else if desired.csr_sha256.is_none() && cert.key_algorithm != Some(desired.key_algorithm) {
        Some(RotationReason::KeyAlgorithmChanged)
    } else if validity_changed(cert, desired.policy.validity, desired.clients_ca) {
        Some(RotationReason::ValidityChanged)
    } else if desired.rotate_token != current.rotate_token {
        Some(RotationReason::RotateRequested)
    } else {
        None
    };
    if let Some(reason) = reason {
        return RotationDecision::Rotate(reason);
    }
    due_or_keep(device_renewal_time(desired, cert), now)
}

/// Decides whether the broker server certificate must be re-issued: new DNS/IP names (a
/// scale-up), another cluster CA, another key algorithm or validity, or due.
pub fn decide_server_rotation(
    request: &ServerCertRequest,
    renew_before: Duration,
    cluster_ca: &CertificateInfo,
    current: Option<&CertificateInfo>,
    now: SystemTime,
) -> RotationDecision {
    let Some(cert) = current else {
        return RotationDecision::Rotate(RotationReason::NotIssued);
    };
    let reason =
        if cert.dns_names != request.dns_names() || cert.ip_addresses != request.ip_addresses() {
            Some(RotationReason::NamesChanged)
        } else if !cert.issued_by(cluster_ca) {
            Some(RotationReason::IssuerChanged)
        } else if cert.key_algorithm != Some(request.key_algorithm) {
            Some(RotationReason::KeyAlgorithmChanged)
        } else if validity_changed(cert, request.validity, cluster_ca) {
            Some(RotationReason::ValidityChanged)
        } else {
            None
        };
    if let Some(reason) = reason {
        return RotationDecision::Rotate(reason);
    }
    due_or_keep(
        renewal_time(&cert.validity, renew_before, Duration::ZERO),
        now,
    )
}

/// Decides whether a CA must be renewed: due at `notAfter - renewBefore`, or the desired key
/// algorithm or validity changed. (A bring-your-own CA is never renewed by us; the controller
/// only reports it.)
pub fn decide_ca_renewal(
    ca: Option<&CertificateInfo>,
    policy: RenewalPolicy,
    key_algorithm: KeyAlgorithm,
    now: SystemTime,
) -> RotationDecision {
    let Some(ca) = ca else {
        return RotationDecision::Rotate(RotationReason::NotIssued);
    };
    if ca.key_algorithm != Some(key_algorithm) {
        return RotationDecision::Rotate(RotationReason::KeyAlgorithmChanged);
    }
    if ca.validity.nominal_validity().abs_diff(policy.validity) > Duration::from_secs(1) {
        return RotationDecision::Rotate(RotationReason::ValidityChanged);
    }
    due_or_keep(
        renewal_time(&ca.validity, policy.renew_before, Duration::ZERO),
        now,
    )
}

fn due_or_keep(renewal_time: SystemTime, now: SystemTime) -> RotationDecision {
    if now >= renewal_time {
        RotationDecision::Rotate(RotationReason::RenewalDue)
    } else {
        RotationDecision::Keep { renewal_time }
    }
}

/// A leaf whose `notAfter` was capped at its CA's `notAfter` is not "changed".
fn validity_changed(cert: &CertificateInfo, desired: Duration, ca: &CertificateInfo) -> bool {
    let capped = cert.validity.not_after == ca.validity.not_after;
    !capped && cert.validity.nominal_validity().abs_diff(desired) > Duration::from_secs(1)
}
