//! DeviceIdentity validation.

use super::cluster::validity_pair;
use super::{Errors, FieldError};
use crate::device::DeviceIdentitySpec;

/// Largest CSR accepted (PEM text). Real CSRs are well under 4 KiB.
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// Default device certificate lifetime.
pub const DEFAULT_VALIDITY: &str = "90d";

/// The longest device id: X.520 `ub-common-name` (the certificate CN) is 64 characters.
pub const MAX_DEVICE_ID_LEN: usize = 64;

/// What is wrong with a device id, if anything. A device id is 1-64 characters of
/// `A-Z a-z 0-9 . _ : -`, not starting with `-` or `.`: it becomes a certificate CN, an MQTT
/// username, a URN segment and a topic level, so it must be safe in all four.
pub fn device_id_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() || s.len() > MAX_DEVICE_ID_LEN {
        return Some("must be 1-64 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    {
        return Some("may only contain A-Z a-z 0-9 . _ : -");
    }
    if s.starts_with(['-', '.']) {
        return Some("must not start with '-' or '.'");
    }
    None
}

/// True when [`device_id_problem`] finds nothing.
pub fn is_device_id(s: &str) -> bool {
    device_id_problem(s).is_none()
}

/// Validates a DeviceIdentity spec.
pub fn validate_device(spec: &DeviceIdentitySpec) -> Vec<FieldError> {
    let mut e = Errors::default();
    e.object_name("spec.clusterRef.name", &spec.cluster_ref.name);
    if let Some(problem) = device_id_problem(&spec.device_id) {
        e.add(
            "spec.deviceId",
            format!("'{}' is not a valid device id: {problem}", spec.device_id),
        );
    }
    let cert = spec.certificate.clone().unwrap_or_default();
    let validity = cert.validity.as_deref().unwrap_or(DEFAULT_VALIDITY);
    match cert.renew_before.as_deref() {
        Some(renew) => validity_pair(&mut e, "spec.certificate", validity, renew),
        None => {
            if let Some(v) = e.duration("spec.certificate.validity", validity) {
                if v.as_secs() < 3_600 {
                    e.add("spec.certificate.validity", "must be at least 1h");
                }
            }
        }
    }
    if let Some(name) = &cert.secret_name {
        e.object_name("spec.certificate.secretName", name);
    }
    if let Some(csr) = &spec.csr {
        if cert.key_algorithm.is_some() {
            e.add(
                "spec.certificate.keyAlgorithm",
                "must not be set together with spec.csr: the device's CSR determines the key",
            );
        }
        if csr.len() > MAX_CSR_BYTES {
            e.add(
                "spec.csr",
                format!(
                    "is {} bytes, larger than the {MAX_CSR_BYTES}-byte limit",
                    csr.len()
                ),
            );
        } else if !csr.contains("-----BEGIN CERTIFICATE REQUEST-----")
            || !csr.contains("-----END CERTIFICATE REQUEST-----")
        {
            e.add("spec.csr", "must be a PEM 'CERTIFICATE REQUEST' block");
        }
    }
    e.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids() {
        assert!(is_device_id("sensor-01"));
        assert!(is_device_id("a.b_c:d"));
        assert!(!is_device_id(""));
        assert!(!is_device_id("a/b"));
        assert!(!is_device_id("a+b"));
        assert!(!is_device_id("a b"));
        assert!(!is_device_id(&"x".repeat(65)));
        assert!(is_device_id(&"x".repeat(64)));
        assert!(!is_device_id("-a"));
        assert!(!is_device_id(".a"));
    }
}
