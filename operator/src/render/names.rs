//! Names, labels and ports of everything rendered for an MqttCluster: one place, so the
//! controller, `render`, the monitoring objects and the tests agree.

use std::collections::BTreeMap;

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "mqtt-operator";

/// Label carrying the owning MqttCluster's name on every child.
pub const CLUSTER_LABEL: &str = crate::monitoring::CLUSTER_NAME_LABEL;
/// Pod template annotation holding the hash of the restart-requiring configuration.
pub const CONFIG_HASH_ANNOTATION: &str = "mqtt.operator.dev/config-hash";

/// Broker HTTP port: `/healthz`, `/readyz`, `/metrics`, push endpoint.
pub const HTTP_PORT: i32 = 9090;
/// Raft port between core nodes.
pub const RAFT_PORT: i32 = 5363;
/// Inter-node message (gRPC) port between core nodes.
pub const GRPC_PORT: i32 = 5364;

/// Where the broker's configuration directory is mounted.
pub const CONFIG_DIR: &str = "/etc/mqtt";
/// Where the persistent volume is mounted.
pub const DATA_DIR: &str = "/var/lib/mqtt";
/// The broker's writable scratch directory (the root filesystem is read-only), on the volume.
pub const RUNTIME_DIR: &str = "/var/lib/mqtt/run";

/// Object names derived from the cluster's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The MqttCluster's name.
    pub cluster: String,
}

impl Names {
    /// Names for cluster `cluster`.
    pub fn new(cluster: &str) -> Self {
        Self {
            cluster: cluster.to_string(),
        }
    }
    /// StatefulSet, headless Service, PodDisruptionBudget and NetworkPolicy of the core nodes.
    pub fn core(&self) -> String {
        format!("{}-core", self.cluster)
    }
    /// Client Service.
    pub fn client_service(&self) -> String {
        self.cluster.clone()
    }
    /// ConfigMap with the broker configuration directory's non-secret files.
    pub fn config(&self) -> String {
        format!("{}-config", self.cluster)
    }
    /// ConfigMap with the public CA bundle for clients.
    pub fn ca_bundle(&self) -> String {
        format!("{}-ca-bundle", self.cluster)
    }
    /// Secret of the cluster CA (signs server certificates).
    pub fn cluster_ca(&self) -> String {
        format!("{}-cluster-ca", self.cluster)
    }
    /// Secret of the clients CA (signs device certificates).
    pub fn clients_ca(&self) -> String {
        format!("{}-clients-ca", self.cluster)
    }
    /// Secret of the broker server certificate.
    pub fn server_tls(&self) -> String {
        format!("{}-server-tls", self.cluster)
    }
    /// Secret of the push endpoint's bearer token.
    pub fn push_token(&self) -> String {
        format!("{}-push-token", self.cluster)
    }
    /// Pod `n` of the core StatefulSet.
    pub fn pod(&self, n: i32) -> String {
        format!("{}-core-{n}", self.cluster)
    }
    /// Stable DNS name of core pod `n` in `namespace`.
    pub fn pod_dns(&self, n: i32, namespace: &str) -> String {
        format!("{}.{}.{namespace}.svc", self.pod(n), self.core())
    }

    /// Labels selecting the core pods (stable: used in the StatefulSet selector).
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "app.kubernetes.io/name".to_string(),
                "mqtt-broker".to_string(),
            ),
            (
                "app.kubernetes.io/instance".to_string(),
                self.cluster.clone(),
            ),
            (
                "app.kubernetes.io/component".to_string(),
                "core".to_string(),
            ),
        ])
    }

    /// Labels on every child object.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut l = self.selector_labels();
        l.insert("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into());
        l.insert("app.kubernetes.io/part-of".into(), "mqtt-operator".into());
        l.insert(CLUSTER_LABEL.into(), self.cluster.clone());
        l
    }
}
