//! Names that go into certificates: namespaces, clusters, device ids and the device SAN URI.
//!
//! **Device SAN URI.** Every device certificate carries exactly one URI subject alternative
//! name, `urn:mqtt-operator:<namespace>/<cluster>/device/<deviceId>`, e.g.
//! `urn:mqtt-operator:factory/edge/device/press-17`. It names the cluster the certificate was
//! issued for, so a certificate for the same device id in another namespace or cluster is
//! distinguishable even when both clusters trust one bring-your-own clients CA. The subject is
//! `CN=<deviceId>` (the MQTT username), with `O=mqtt-operator`.

use super::PkiError;

/// The organization (`O=`) of every certificate we issue.
pub const ORGANIZATION: &str = "mqtt-operator";

/// The URN prefix of device SAN URIs.
pub const DEVICE_URI_PREFIX: &str = "urn:mqtt-operator:";

/// One device of one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceRef {
    /// Namespace of the `DeviceIdentity` and its `MqttCluster`.
    pub namespace: String,
    /// Name of the `MqttCluster`.
    pub cluster: String,
    /// `spec.deviceId`: certificate CN and MQTT username.
    pub device_id: String,
}

impl DeviceRef {
    /// Builds a reference after checking every part.
    pub fn new(namespace: &str, cluster: &str, device_id: &str) -> Result<Self, PkiError> {
        check_dns_label("namespace", namespace)?;
        check_dns_label("cluster", cluster)?;
        check_device_id(device_id)?;
        Ok(DeviceRef {
            namespace: namespace.to_string(),
            cluster: cluster.to_string(),
            device_id: device_id.to_string(),
        })
    }

    /// `urn:mqtt-operator:<namespace>/<cluster>/device/<deviceId>`.
    pub fn uri(&self) -> String {
        format!(
            "{DEVICE_URI_PREFIX}{}/{}/device/{}",
            self.namespace, self.cluster, self.device_id
        )
    }

    /// `<namespace>/<cluster>/<deviceId>`: the stable key that seeds renewal jitter.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.cluster, self.device_id)
    }
}

/// Checks a device id with the API's rule (`crds::validate::device_id_problem`): it is also an
/// MQTT username, a URN segment and a topic level in ACL placeholders.
pub fn check_device_id(id: &str) -> Result<(), PkiError> {
    match crds::validate::device_id_problem(id) {
        None => Ok(()),
        Some(reason) => Err(PkiError::Name {
            name: id.to_string(),
            reason: format!("device id {reason}"),
        }),
    }
}

/// An RFC 1123 label (Kubernetes namespace and object names used in DNS): 1 to 63 characters
/// of `a-z 0-9 -`, starting and ending with an alphanumeric.
pub fn check_dns_label(what: &str, label: &str) -> Result<(), PkiError> {
    let ok = !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(PkiError::Name {
            name: label.to_string(),
            reason: format!("{what} must be an RFC 1123 label (a-z 0-9 -, at most 63)"),
        })
    }
}

/// A DNS name for a SAN: dot-separated labels (letters, digits, `-`; a leading `*.` allowed),
/// at most 253 characters.
pub fn check_dns_name(name: &str) -> Result<(), PkiError> {
    let rest = name.strip_prefix("*.").unwrap_or(name);
    let ok = !rest.is_empty()
        && name.len() <= 253
        && rest.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(PkiError::Name {
            name: name.to_string(),
            reason: "not a valid DNS name".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_uri_names_namespace_cluster_and_device() {
        let d = DeviceRef::new("factory", "edge", "press-17").unwrap();
        assert_eq!(d.uri(), "urn:mqtt-operator:factory/edge/device/press-17");
        assert_eq!(d.key(), "factory/edge/press-17");
    }

    #[test]
    fn device_ids_are_checked() {
        for ok in [
            "a",
            "press-17",
            "AA:BB:CC:00:11:22",
            "x.y_z",
            &"d".repeat(64),
        ] {
            check_device_id(ok).unwrap();
        }
        for bad in [
            "",
            "-x",
            ".x",
            "a/b",
            "a b",
            "é",
            "a+b",
            "#",
            &"d".repeat(65),
        ] {
            assert!(check_device_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn labels_and_dns_names_are_checked() {
        check_dns_label("cluster", "edge-1").unwrap();
        for bad in ["", "Edge", "-a", "a-", "a.b", &"a".repeat(64)] {
            assert!(check_dns_label("cluster", bad).is_err(), "{bad:?}");
        }
        check_dns_name("edge-core-0.edge-core.iot.svc.cluster.local").unwrap();
        check_dns_name("*.example.com").unwrap();
        for bad in ["", "a..b", "a_b.c", "-a.b", "*", "a.*.b"] {
            assert!(check_dns_name(bad).is_err(), "{bad:?}");
        }
    }
}
