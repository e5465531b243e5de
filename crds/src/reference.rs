//! References between objects. Every reference is to an object in the same namespace.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to an `MqttCluster` in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRef {
    /// Name of the MqttCluster (same namespace).
    pub name: String,
}

/// A reference to another object of a known kind in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectRef {
    /// Name of the referenced object (same namespace).
    pub name: String,
}

/// A reference to a Secret (and optionally one key of it) in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret (same namespace).
    pub name: String,
    /// Key inside the Secret; each use documents its default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}
