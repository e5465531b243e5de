//! API types of mqtt-operator (group `mqtt.operator.dev`, version `v1alpha1`) and their pure
//! validation. No IO: the operator, `check` and the broker share these.
#![forbid(unsafe_code)]

pub mod bridge;
pub mod cluster;
pub mod condition;
pub mod device;
pub mod duration;
pub mod pattern;
pub mod policy;
pub mod reference;
pub mod selector;
pub mod validate;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use bridge::{Bridge, BridgeSpec};
pub use cluster::{MqttCluster, MqttClusterSpec};
pub use device::{DeviceIdentity, DeviceIdentitySpec, KeyAlgorithm};
pub use policy::{TopicPolicy, TopicPolicySpec};

/// API group of every kind.
pub const GROUP: &str = "mqtt.operator.dev";
/// API version of every kind.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of every kind.
pub const API_VERSION: &str = "mqtt.operator.dev/v1alpha1";

/// The four CustomResourceDefinitions, in a fixed order.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![
        MqttCluster::crd(),
        DeviceIdentity::crd(),
        TopicPolicy::crd(),
        Bridge::crd(),
    ]
}
