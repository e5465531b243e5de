//! `DeviceIdentity`: one device's certificate, issued, rotated and revoked by the operator.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::reference::ClusterRef;

/// Annotation whose new value triggers an immediate certificate rotation.
pub const ROTATE_ANNOTATION: &str = "mqtt.operator.dev/rotate";

/// The identity of one device: a certificate with CN = `deviceId`, used as its MQTT username.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "mqtt.operator.dev",
    version = "v1alpha1",
    kind = "DeviceIdentity",
    doc = "A device certificate (CN = deviceId) issued, rotated and revoked by mqtt-operator.",
    namespaced,
    status = "DeviceIdentityStatus",
    shortname = "devid",
    category = "mqtt",
    printcolumn = r#"{"name":"Device","type":"string","jsonPath":".spec.deviceId"}"#,
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.clusterRef.name"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".spec.state"}"#,
    printcolumn = r#"{"name":"Not-After","type":"string","jsonPath":".status.notAfter"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DeviceIdentitySpec {
    /// The MqttCluster this device connects to (same namespace).
    pub cluster_ref: ClusterRef,
    /// Device id: the certificate CN and MQTT username. Unique per cluster; 1-64 characters of
    /// `A-Z a-z 0-9 . _ : -`, not starting with `-` or `.` (it is expanded into topics, so no
    /// `/`, `+`, `#`).
    pub device_id: String,
    /// Certificate options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateSpec>,
    /// A PEM certificate signing request made by the device. When set, the operator signs it and
    /// the private key never exists in the cluster; `certificate.keyAlgorithm` must then be unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<String>,
    /// `Active`, `Suspended` (temporarily denied) or `Revoked` (permanent).
    #[serde(default)]
    pub state: DeviceState,
}

/// Lifecycle state of a device.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeviceState {
    /// The device may connect.
    #[default]
    Active,
    /// The device is temporarily denied; its certificate is kept.
    Suspended,
    /// Permanently revoked: its serials join the revoked set and live sessions are closed.
    Revoked,
}

/// Device certificate options.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSpec {
    /// Certificate lifetime (default `90d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validity: Option<String>,
    /// Renew this long before expiry (default: a third of `validity`); shorter than `validity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_before: Option<String>,
    /// Key algorithm of operator-generated keys (default `ecdsa-p256`). Not allowed with `csr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_algorithm: Option<KeyAlgorithm>,
    /// Name of the Secret receiving `tls.crt`, `tls.key` and `ca.crt` (default
    /// `<metadata.name>-tls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

/// Key algorithm of a device certificate.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256.
    #[default]
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    /// Ed25519.
    #[serde(rename = "ed25519")]
    Ed25519,
    /// RSA 2048 with SHA-256.
    #[serde(rename = "rsa-2048")]
    Rsa2048,
}

/// Observed state of a DeviceIdentity.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceIdentityStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions: `Issued`, `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Serial number (hex) of the current certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// SHA-256 fingerprint (hex) of the current certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint_sha256: Option<String>,
    /// Start of the current certificate's validity (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// End of the current certificate's validity (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// When the operator will renew the certificate (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<String>,
    /// Earlier certificates still trusted until their own expiry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_serials: Vec<PreviousSerial>,
    /// The Secret holding the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

/// A superseded certificate.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviousSerial {
    /// Serial number (hex).
    pub serial: String,
    /// End of its validity (RFC 3339).
    pub not_after: String,
}
