//! The DeviceIdentity status: the certificate facts and the `Issued` / `Ready` conditions, and
//! the Events a status transition deserves. Pure.

use std::time::SystemTime;

use crds::condition::{condition, find, upsert, Time, ISSUED, READY, REASON_INVALID};
use crds::device::{DeviceIdentityStatus, PreviousSerial};
use crds::DeviceIdentity;

use crate::pki::CertificateInfo;

/// `Ready=False`: the referenced MqttCluster does not exist.
pub const REASON_CLUSTER_NOT_FOUND: &str = "ClusterNotFound";
/// `Ready=False`: the cluster's clients CA (or its published trust bundle) does not exist yet.
pub const REASON_WAITING_FOR_CA: &str = "WaitingForCa";
/// `Ready=False`: the clients CA Secret exists but cannot be used to sign.
pub const REASON_CA_UNUSABLE: &str = "CaUnusable";
/// `Ready=False`: an older DeviceIdentity of the same cluster holds this deviceId.
pub const REASON_DUPLICATE: &str = "DuplicateDeviceId";
/// `Ready=False`: `spec.state: Revoked`.
pub const REASON_REVOKED: &str = "Revoked";
/// `Ready=False`: `spec.state: Suspended`.
pub const REASON_SUSPENDED: &str = "Suspended";
/// `Ready=True` / `Issued=True`: a valid certificate is in the Secret.
pub const REASON_ISSUED: &str = "Issued";

/// An Event to publish about the DeviceIdentity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Warning (true) or Normal.
    pub warning: bool,
    /// CamelCase reason (`Issued`, `Rotated`, `Revoked`, `Invalid`...).
    pub reason: &'static str,
    /// Human-readable text.
    pub message: String,
}

/// RFC 3339 (UTC, whole seconds) of `t`, as status fields carry it.
pub fn rfc3339(t: SystemTime) -> String {
    k8s_openapi::jiff::Timestamp::try_from(t)
        .map(|ts| ts.to_string())
        .unwrap_or_default()
}

/// Parses an RFC 3339 status field back.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    s.parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(SystemTime::from)
}

fn now_time(now: SystemTime) -> Time {
    Time(k8s_openapi::jiff::Timestamp::try_from(now).unwrap_or_default())
}

/// The previous status (or an empty one) with `observedGeneration` updated.
pub fn base(device: &DeviceIdentity) -> DeviceIdentityStatus {
    let mut s = device.status.clone().unwrap_or_default();
    s.observed_generation = device.metadata.generation;
    s
}

/// `Ready=False` with `reason`; `Issued=False` too while no certificate was ever issued (an
/// issued one stays reported as issued: its serial is still in the status).
pub fn not_ready(
    device: &DeviceIdentity,
    reason: &str,
    message: &str,
    now: SystemTime,
) -> DeviceIdentityStatus {
    let mut s = base(device);
    let gen = s.observed_generation;
    if s.serial.is_none() {
        upsert(
            &mut s.conditions,
            condition(ISSUED, false, reason, message, gen, now_time(now)),
        );
    }
    upsert(
        &mut s.conditions,
        condition(READY, false, reason, message, gen, now_time(now)),
    );
    s
}

/// The status after a certificate is (still) in the Secret: its facts, `Issued=True`,
/// `Ready=True`, and the previous serials with the expired ones pruned.
pub fn issued(
    device: &DeviceIdentity,
    cert: &CertificateInfo,
    renewal_time: SystemTime,
    secret_name: &str,
    previous: Vec<PreviousSerial>,
    now: SystemTime,
) -> DeviceIdentityStatus {
    let mut s = base(device);
    let gen = s.observed_generation;
    s.serial = Some(cert.serial.to_string());
    s.fingerprint_sha256 = Some(cert.fingerprint_sha256.clone());
    s.not_before = Some(rfc3339(cert.validity.not_before));
    s.not_after = Some(rfc3339(cert.validity.not_after));
    s.renewal_time = Some(rfc3339(renewal_time));
    s.secret_name = Some(secret_name.to_string());
    s.previous_serials = prune(previous, now);
    let message = format!(
        "certificate {} in Secret {secret_name}, valid until {}",
        cert.serial,
        rfc3339(cert.validity.not_after)
    );
    upsert(
        &mut s.conditions,
        condition(ISSUED, true, REASON_ISSUED, &message, gen, now_time(now)),
    );
    upsert(
        &mut s.conditions,
        condition(READY, true, REASON_ISSUED, message, gen, now_time(now)),
    );
    s
}

/// Drops previous serials whose certificate has expired (an expired certificate is refused
/// anyway); unparseable dates are kept so nothing still valid is forgotten.
pub fn prune(previous: Vec<PreviousSerial>, now: SystemTime) -> Vec<PreviousSerial> {
    let mut kept: Vec<PreviousSerial> = previous
        .into_iter()
        .filter(|p| parse_rfc3339(&p.not_after).is_none_or(|t| t >= now))
        .collect();
    kept.sort_by(|a, b| (&a.not_after, &a.serial).cmp(&(&b.not_after, &b.serial)));
    kept.dedup();
    kept
}

/// The previous serials once the current certificate (from the old status) is superseded.
pub fn superseded(old: &DeviceIdentityStatus, new_serial: &str) -> Vec<PreviousSerial> {
    let mut previous = old.previous_serials.clone();
    if let (Some(serial), Some(not_after)) = (&old.serial, &old.not_after) {
        if serial != new_serial && !previous.iter().any(|p| &p.serial == serial) {
            previous.push(PreviousSerial {
                serial: serial.clone(),
                not_after: not_after.clone(),
            });
        }
    }
    previous
}

/// The Ready reason of the old status, if any.
pub fn old_ready_reason(device: &DeviceIdentity) -> Option<&str> {
    device
        .status
        .as_ref()
        .and_then(|s| find(&s.conditions, READY))
        .map(|c| c.reason.as_str())
}

/// An Event for a `Ready=False` transition: only when the reason (or, for `Invalid`, the
/// message) changed, so a requeue does not repeat it.
pub fn transition_note(
    device: &DeviceIdentity,
    reason: &'static str,
    message: &str,
) -> Option<Note> {
    let old = device
        .status
        .as_ref()
        .and_then(|s| find(&s.conditions, READY));
    let same = old.is_some_and(|c| {
        c.status == "False"
            && c.reason == reason
            && (reason != REASON_INVALID || c.message == message)
    });
    (!same).then(|| Note {
        warning: !matches!(reason, REASON_SUSPENDED | REASON_REVOKED),
        reason,
        message: message.to_string(),
    })
}
