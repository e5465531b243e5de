//! `MqttCluster`: a clustered, TLS-only, mTLS-authenticated MQTT broker.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::reference::SecretRef;
use crate::selector::LabelSelector;

mod monitoring;
pub use monitoring::*;

/// Desired state of an MQTT broker cluster.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "mqtt.operator.dev",
    version = "v1alpha1",
    kind = "MqttCluster",
    doc = "A clustered, TLS-only, mTLS-authenticated MQTT broker managed by mqtt-operator.",
    namespaced,
    status = "MqttClusterStatus",
    shortname = "mqc",
    category = "mqtt",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Core","type":"string","jsonPath":".status.core.readiness","description":"ready/desired core nodes"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.endpoint","description":"primary client endpoint (host:port)"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MqttClusterSpec {
    /// The core nodes: raft voters holding sessions and retained messages.
    #[serde(default)]
    pub core: CoreSpec,
    /// Broker container image. Defaults to the image matching the operator's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Image pull policy for the broker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,
    /// Client-facing listeners and the Service that exposes them.
    #[serde(default)]
    pub listeners: ListenersSpec,
    /// Certificate authorities and server certificates (issued by the operator, no cert-manager).
    #[serde(default)]
    pub pki: PkiSpec,
    /// How clients authenticate.
    #[serde(default)]
    pub auth: AuthSpec,
    /// Access control: the default decision and which TopicPolicies apply.
    #[serde(default)]
    pub acl: AclSpec,
    /// Broker limits. Alert thresholds are derived from these.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Generated ServiceMonitor, PrometheusRule and Grafana dashboard.
    #[serde(default)]
    pub monitoring: MonitoringSpec,
    /// Disruption budget for the core StatefulSet.
    #[serde(default)]
    pub pod_disruption_budget: PodDisruptionBudgetSpec,
}

/// Image pull policy (the Kubernetes container field).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    /// Always pull.
    Always,
    /// Pull only when the image is not on the node.
    IfNotPresent,
    /// Never pull.
    Never,
}

fn default_replicas() -> i32 {
    3
}

/// Core nodes (raft voters).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoreSpec {
    /// Number of core nodes: odd, 1 to 7 (raft needs a majority).
    #[serde(default = "default_replicas")]
    pub replicas: i32,
    /// CPU/memory requests and limits of each broker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Persistent storage for sessions and retained messages.
    #[serde(default)]
    pub storage: StorageSpec,
    /// Where core pods may run. Pod anti-affinity across nodes is the default when `affinity` is
    /// not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<SchedulingSpec>,
}

impl Default for CoreSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            resources: None,
            storage: StorageSpec::default(),
            scheduling: None,
        }
    }
}

fn default_storage_size() -> Quantity {
    Quantity("1Gi".to_string())
}

/// A PersistentVolumeClaim per core node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested volume size (a Kubernetes quantity, e.g. `1Gi`).
    #[serde(default = "default_storage_size")]
    pub size: Quantity,
    /// StorageClass of the claims; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

/// Scheduling constraints of the core pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Node labels a node must have to run a core pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints the core pods tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Affinity rules; replaces the default pod anti-affinity when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// How core pods spread across topology domains (zones, nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
}

/// Client-facing listeners. MQTTS is on by default; plain MQTT needs an explicit opt-in.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenersSpec {
    /// MQTT over TLS (default port 8883), on by default.
    #[serde(default)]
    pub mqtts: MqttsListener,
    /// MQTT over secure WebSockets; off unless set and enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wss: Option<WssListener>,
    /// Plain-text MQTT (no TLS). Off by default; enabling it is an explicit security opt-out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<PlainListener>,
    /// The client Service that exposes the listeners.
    #[serde(default)]
    pub service: ServiceSpec,
}

pub(crate) fn yes() -> bool {
    true
}
fn default_mqtts_port() -> i32 {
    8883
}
fn default_wss_port() -> i32 {
    8084
}
fn default_wss_path() -> String {
    "/mqtt".to_string()
}
fn default_mqtt_port() -> i32 {
    1883
}

/// The MQTTS listener.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MqttsListener {
    /// Whether the listener is enabled.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// TCP port (1-65535).
    #[serde(default = "default_mqtts_port")]
    pub port: i32,
    /// Whether clients must present a certificate from the clients CA.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

impl Default for MqttsListener {
    fn default() -> Self {
        Self {
            enabled: true,
            port: default_mqtts_port(),
            client_auth: ClientAuth::default(),
        }
    }
}

/// Client certificate requirement of a TLS listener.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ClientAuth {
    /// A certificate from the clients CA is required (mTLS).
    #[default]
    Required,
    /// A certificate is verified if presented; clients without one need other credentials.
    Optional,
    /// No client certificates are requested.
    None,
}

/// The secure WebSocket listener.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WssListener {
    /// Whether the listener is enabled.
    #[serde(default)]
    pub enabled: bool,
    /// TCP port (1-65535).
    #[serde(default = "default_wss_port")]
    pub port: i32,
    /// HTTP path of the WebSocket endpoint.
    #[serde(default = "default_wss_path")]
    pub path: String,
    /// Whether clients must present a certificate from the clients CA.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// The plain-text MQTT listener.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlainListener {
    /// Whether the listener is enabled (an explicit opt-out of TLS).
    #[serde(default)]
    pub enabled: bool,
    /// TCP port (1-65535).
    #[serde(default = "default_mqtt_port")]
    pub port: i32,
}

/// The client Service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service type.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Annotations added to the Service (e.g. for cloud load balancers).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// CIDRs allowed to reach a LoadBalancer Service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancer_source_ranges: Vec<String>,
}

/// Kubernetes Service type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    #[default]
    ClusterIP,
    /// Exposed on every node's port.
    NodePort,
    /// Exposed through a cloud load balancer.
    LoadBalancer,
}

/// The cluster's certificate authorities and server certificate.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PkiSpec {
    /// CA that signs broker server certificates and inter-node TLS.
    #[serde(default)]
    pub cluster_ca: CaSpec,
    /// CA that signs device (client) certificates.
    #[serde(default)]
    pub clients_ca: CaSpec,
    /// Broker server certificate.
    #[serde(default)]
    pub server_cert: ServerCertSpec,
}

fn default_ca_validity() -> String {
    "1825d".to_string()
}
fn default_ca_renew_before() -> String {
    "180d".to_string()
}

/// A certificate authority: generated by the operator, or brought by the user.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaSpec {
    /// Generate and renew the CA. When false, `secretRef` must name a Secret holding `tls.crt`
    /// and `tls.key` of your own CA.
    #[serde(default = "yes")]
    pub generate: bool,
    /// Lifetime of a generated CA certificate (e.g. `1825d`).
    #[serde(default = "default_ca_validity")]
    pub validity: String,
    /// Renew a generated CA this long before it expires; must be shorter than `validity`.
    #[serde(default = "default_ca_renew_before")]
    pub renew_before: String,
    /// Bring your own CA: a Secret with `tls.crt` and `tls.key` (required when
    /// `generate: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

impl Default for CaSpec {
    fn default() -> Self {
        Self {
            generate: true,
            validity: default_ca_validity(),
            renew_before: default_ca_renew_before(),
            secret_ref: None,
        }
    }
}

fn default_server_validity() -> String {
    "90d".to_string()
}
fn default_server_renew_before() -> String {
    "30d".to_string()
}

/// Broker server certificate (SANs: every core pod DNS name and the Services).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerCertSpec {
    /// Lifetime of the server certificate (e.g. `90d`).
    #[serde(default = "default_server_validity")]
    pub validity: String,
    /// Re-issue this long before expiry; must be shorter than `validity`.
    #[serde(default = "default_server_renew_before")]
    pub renew_before: String,
}

impl Default for ServerCertSpec {
    fn default() -> Self {
        Self {
            validity: default_server_validity(),
            renew_before: default_server_renew_before(),
        }
    }
}

/// Client authentication.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Allow clients without credentials. Off by default.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Use the client certificate's CN as the MQTT username (clients cannot claim another).
    #[serde(default = "yes")]
    pub username_from_cert_cn: bool,
}

impl Default for AuthSpec {
    fn default() -> Self {
        Self {
            allow_anonymous: false,
            username_from_cert_cn: true,
        }
    }
}

/// Access control.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AclSpec {
    /// Decision when no rule of any policy matches.
    #[serde(default)]
    pub default_action: DefaultAction,
    /// Which TopicPolicies (by label) apply; all that reference this cluster when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_selector: Option<LabelSelector>,
}

/// Decision when no ACL rule matches.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DefaultAction {
    /// Refuse (the secure default).
    #[default]
    Deny,
    /// Permit.
    Allow,
}

fn default_max_connections() -> i64 {
    100_000
}
fn default_max_inflight() -> i32 {
    32
}
fn default_max_queued() -> i32 {
    1_000
}
fn default_max_packet_size() -> i64 {
    1_048_576
}
fn default_session_expiry() -> String {
    "2h".to_string()
}
fn default_message_expiry() -> String {
    "24h".to_string()
}
fn default_max_topic_levels() -> i32 {
    16
}

/// Broker limits.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitsSpec {
    /// Maximum concurrent client connections per core node.
    #[serde(default = "default_max_connections")]
    pub max_connections: i64,
    /// Maximum unacknowledged QoS 1/2 messages in flight per client.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: i32,
    /// Maximum messages queued per offline or slow client before dropping.
    #[serde(default = "default_max_queued")]
    pub max_queued_messages: i32,
    /// Maximum MQTT packet size in bytes (1 KiB to 256 MiB).
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: i64,
    /// How long a disconnected persistent session is kept (e.g. `2h`).
    #[serde(default = "default_session_expiry")]
    pub session_expiry: String,
    /// How long a queued message is kept before it expires (e.g. `24h`).
    #[serde(default = "default_message_expiry")]
    pub message_expiry: String,
    /// Maximum number of levels in a topic.
    #[serde(default = "default_max_topic_levels")]
    pub max_topic_levels: i32,
    /// Whether retained messages are supported.
    #[serde(default = "yes")]
    pub retain_available: bool,
    /// Rate limits; unlimited when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateLimits>,
}

impl Default for LimitsSpec {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            max_inflight: default_max_inflight(),
            max_queued_messages: default_max_queued(),
            max_packet_size: default_max_packet_size(),
            session_expiry: default_session_expiry(),
            message_expiry: default_message_expiry(),
            max_topic_levels: default_max_topic_levels(),
            retain_available: true,
            rate: None,
        }
    }
}

/// Rate limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimits {
    /// New connections accepted per second per node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_per_second: Option<i64>,
    /// Messages a single client may publish per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_per_second_per_client: Option<i64>,
}

fn default_max_unavailable() -> i32 {
    1
}

/// PodDisruptionBudget of the core nodes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    /// Core pods that may be voluntarily disrupted at once; must keep a raft majority.
    #[serde(default = "default_max_unavailable")]
    pub max_unavailable: i32,
}

impl Default for PodDisruptionBudgetSpec {
    fn default() -> Self {
        Self {
            max_unavailable: default_max_unavailable(),
        }
    }
}

/// Observed state of an MqttCluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MqttClusterStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions: `Ready`, `Progressing`, `Degraded`, `CertificatesReady`, `AclApplied`,
    /// `MonitoringReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Core node counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core: Option<CoreStatus>,
    /// Primary client endpoint (`host:port` of the first enabled TLS listener).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Client endpoints, one per enabled listener.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointStatus>,
    /// Name of the ConfigMap holding the public CA bundle for clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// Hash of the compiled ACL rule set that every core node has acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl_revision: Option<String>,
    /// The TopicPolicies (name and generation) compiled into `aclRevision`, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acl_policies: Vec<AclPolicyStatus>,
}

/// A TopicPolicy generation compiled into the acknowledged ACL revision.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AclPolicyStatus {
    /// The TopicPolicy's name (same namespace).
    pub name: String,
    /// Its `metadata.generation` whose rules are in force.
    pub generation: i64,
}

/// Core node counts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoreStatus {
    /// Desired core nodes.
    pub desired: i32,
    /// Core nodes ready (joined the raft cluster and serving).
    pub ready: i32,
    /// `ready/desired`, for `kubectl get`.
    // No schema default: kube-apiserver 1.20 rejects `default: ''` on a string ("must be of type
    // string: null"), which made the whole CRD fail to install on the e2e test bed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub readiness: String,
}

/// One client endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    /// Listener name: `mqtts`, `wss` or `mqtt`.
    pub listener: String,
    /// `host:port` clients connect to.
    pub address: String,
}
