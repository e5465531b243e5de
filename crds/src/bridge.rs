//! `Bridge`: forwards selected topics between this cluster and a remote broker.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::reference::{ClusterRef, LocalObjectRef, SecretRef};

/// A bridge from a local MqttCluster to a remote broker (or another MqttCluster).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "mqtt.operator.dev",
    version = "v1alpha1",
    kind = "Bridge",
    doc = "Forwards selected topics between an MqttCluster and a remote broker.",
    namespaced,
    status = "BridgeStatus",
    shortname = "mqbr",
    category = "mqtt",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.clusterRef.name"}"#,
    printcolumn = r#"{"name":"Remote","type":"string","jsonPath":".status.remote"}"#,
    printcolumn = r#"{"name":"Connected","type":"string","jsonPath":".status.conditions[?(@.type==\"Connected\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BridgeSpec {
    /// The local MqttCluster whose brokers run the bridge (same namespace).
    pub cluster_ref: ClusterRef,
    /// The remote end: `host`/`port` with TLS settings, or `clusterRef` to another MqttCluster.
    pub remote: BridgeRemote,
    /// What is forwarded, in which direction, and how topics are mapped.
    pub routes: Vec<BridgeRoute>,
    /// Local buffer used while the remote is unreachable.
    #[serde(default)]
    pub buffer: BridgeBuffer,
}

/// The remote end of a bridge. Set either `host` (with `port`, `tls`, `credentialsSecretRef`) or
/// `clusterRef` (endpoint and CA resolved by the operator; `tls.clientIdentityRef` then names a
/// DeviceIdentity of the remote cluster, whose certificate the remote accepts).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BridgeRemote {
    /// Remote broker host name or IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Remote broker port (default 8883).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// TLS to the remote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BridgeTls>,
    /// Secret with `username` and `password` keys, for remotes that use passwords.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
    /// Another MqttCluster in this namespace; the operator resolves its endpoint and CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<ClusterRef>,
}

/// TLS settings for a bridge connection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BridgeTls {
    /// Secret holding the CA that signs the remote's server certificate (key default `ca.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretRef>,
    /// A DeviceIdentity whose certificate the bridge presents to the remote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_identity_ref: Option<LocalObjectRef>,
}

/// One forwarding route.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BridgeRoute {
    /// `out` (local → remote) or `in` (remote → local).
    pub direction: Direction,
    /// Local topic filter, e.g. `site/+/telemetry/#`.
    pub local: String,
    /// Remote topic filter; the literal prefix before the first wildcard replaces the local
    /// one, wildcard levels map one to one (e.g. `prod/acme/paris/+/telemetry/#`).
    pub remote: String,
    /// QoS of forwarded messages (0 or 1; default 1).
    #[serde(default = "default_route_qos")]
    pub qos: u8,
    /// Forward retained messages as retained.
    #[serde(default)]
    pub retain: bool,
}

fn default_route_qos() -> u8 {
    1
}

/// Route direction.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// Local → remote.
    #[default]
    Out,
    /// Remote → local.
    In,
}

fn default_buffer_messages() -> i64 {
    10_000
}
fn default_buffer_age() -> String {
    "1h".to_string()
}

/// Bounded buffer for messages awaiting the remote.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BridgeBuffer {
    /// Maximum buffered messages; the oldest are dropped (and counted) beyond it.
    #[serde(default = "default_buffer_messages")]
    pub max_messages: i64,
    /// Maximum age of a buffered message (e.g. `1h`).
    #[serde(default = "default_buffer_age")]
    pub max_age: String,
}

impl Default for BridgeBuffer {
    fn default() -> Self {
        Self {
            max_messages: default_buffer_messages(),
            max_age: default_buffer_age(),
        }
    }
}

/// Observed state of a Bridge.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BridgeStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions: `Connected`, `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The resolved remote endpoint (`host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// Last connection or forwarding error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Messages forwarded since the bridge started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded: Option<i64>,
    /// Messages that failed to forward (rejected by the remote) since the bridge started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<i64>,
    /// Messages dropped (buffer overflow or expiry) since the bridge started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<i64>,
}
