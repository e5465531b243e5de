//! `TopicPolicy`: topic ACL rules for a set of subjects.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::reference::ClusterRef;
use crate::selector::LabelSelector;

/// Topic access rules. Rules of all policies of a cluster are merged: deny beats allow; anything
/// not allowed falls to the cluster's `acl.defaultAction`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "mqtt.operator.dev",
    version = "v1alpha1",
    kind = "TopicPolicy",
    doc = "Topic ACL rules for devices and users of an MqttCluster; deny beats allow.",
    namespaced,
    status = "TopicPolicyStatus",
    shortname = "tpol",
    category = "mqtt",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.clusterRef.name"}"#,
    printcolumn = r#"{"name":"Subjects","type":"integer","jsonPath":".status.matchedSubjects"}"#,
    printcolumn = r#"{"name":"Applied","type":"string","jsonPath":".status.conditions[?(@.type==\"Applied\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TopicPolicySpec {
    /// The MqttCluster these rules apply to (same namespace).
    pub cluster_ref: ClusterRef,
    /// Who the rules apply to. Each entry sets exactly one of `device`, `deviceSelector`,
    /// `user`, `all`.
    pub subjects: Vec<Subject>,
    /// The rules, in any order (the decision does not depend on order).
    pub rules: Vec<PolicyRule>,
}

/// One subject: exactly one field is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    /// A device by its `deviceId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Devices whose DeviceIdentity `metadata.labels` match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_selector: Option<LabelSelector>,
    /// A non-device user (e.g. a backend service) by MQTT username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Every authenticated client (must be `true` when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
}

/// A subject with exactly one field set, as an enum (see `Subject::kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubjectKind<'a> {
    /// `{device: <id>}`
    Device(&'a str),
    /// `{deviceSelector: ...}`
    DeviceSelector(&'a LabelSelector),
    /// `{user: <name>}`
    User(&'a str),
    /// `{all: true}`
    All,
}

impl Subject {
    /// The subject as an enum, or `None` unless exactly one field is set (and `all` is true).
    pub fn kind(&self) -> Option<SubjectKind<'_>> {
        let mut kinds = [
            self.device.as_deref().map(SubjectKind::Device),
            self.device_selector
                .as_ref()
                .map(SubjectKind::DeviceSelector),
            self.user.as_deref().map(SubjectKind::User),
            self.all.map(|_| SubjectKind::All),
        ]
        .into_iter()
        .flatten();
        let first = kinds.next()?;
        if kinds.next().is_some() || self.all == Some(false) {
            return None;
        }
        Some(first)
    }
}

/// One ACL rule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// `allow` or `deny`. Deny beats allow.
    pub effect: Effect,
    /// Actions the rule applies to.
    pub actions: Vec<Action>,
    /// Topic patterns (MQTT filters; may use `${deviceId}` and `${label:<key>}`).
    pub topics: Vec<String>,
    /// QoS levels the rule applies to (0, 1, 2); all when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "qos_list_schema")]
    pub qos: Option<Vec<u8>>,
    /// Applies only to publishes whose retain flag equals this; any when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain: Option<bool>,
}

/// Rule effect.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Effect {
    /// Permit the action.
    #[default]
    Allow,
    /// Refuse the action; beats any allow.
    Deny,
}

/// An MQTT action.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// PUBLISH (and will messages).
    Publish,
    /// SUBSCRIBE.
    Subscribe,
}

/// Observed state of a TopicPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicPolicyStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions: `Accepted`, `Applied`, `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Number of subjects (devices and users) the policy matched at the last compile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_subjects: Option<i32>,
    /// Non-fatal findings (e.g. a selector subscribing to `#`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn qos_list_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "nullable": true,
        "description": "QoS levels the rule applies to (0, 1, 2); all when unset.",
        "items": { "type": "integer", "enum": [0, 1, 2] }
    })
}
