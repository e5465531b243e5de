//! What `local up` runs, derived from the manifests (pure): the one MqttCluster, its devices and
//! how their certificates are issued, the bridges it cannot run, and what changed between two
//! versions of the inputs.

use std::collections::BTreeMap;
use std::time::Duration;

use crds::device::DeviceState;
use crds::duration::parse_duration;
use crds::MqttCluster;

use crate::acl;
use crate::manifest::{Document, Resource};
use crate::pki::{DeviceCertProfile, KeyAlgorithm};

/// Why the manifests cannot be run locally.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// No MqttCluster, or several.
    #[error("local mode runs exactly one MqttCluster; the files define {0}")]
    ClusterCount(usize),
    /// The cluster has no core node.
    #[error("MqttCluster/{0}: spec.core.replicas must be at least 1")]
    NoNodes(String),
    /// A device's certificate options are invalid.
    #[error("DeviceIdentity/{name}: {message}")]
    Device {
        /// The DeviceIdentity.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The ACL does not compile.
    #[error(transparent)]
    Acl(#[from] acl::CompileError),
}

/// How a device gets its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issuance {
    /// We generate the key (algorithm from `spec.certificate.keyAlgorithm`).
    GeneratedKey(DeviceCertProfile),
    /// We sign the device's CSR (the key stays with the device).
    Csr {
        /// The PEM CSR.
        pem: String,
        /// Certificate lifetime.
        validity: Duration,
    },
}

/// One device of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// `metadata.name` of the DeviceIdentity.
    pub name: String,
    /// `spec.deviceId` (certificate CN, MQTT username).
    pub id: String,
    /// Lifecycle state.
    pub state: DeviceState,
    /// How its certificate is issued.
    pub issuance: Issuance,
}

/// Everything `local up` runs, from one version of the inputs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Namespace of the cluster (`default` when unset).
    pub namespace: String,
    /// The cluster.
    pub cluster: MqttCluster,
    /// Its devices, sorted by deviceId.
    pub devices: Vec<Device>,
    /// The compiled ACL.
    pub acl: acl::Compiled,
    /// Bridges of the cluster: (name, remote), not started in local mode.
    pub bridges: Vec<(String, String)>,
}

impl Plan {
    /// The cluster's name.
    pub fn name(&self) -> &str {
        self.cluster.metadata.name.as_deref().unwrap_or("")
    }

    /// Number of core nodes.
    pub fn replicas(&self) -> i32 {
        self.cluster.spec.core.replicas
    }
}

/// Builds the plan from parsed (and already checked) documents.
pub fn plan(docs: &[Document]) -> Result<Plan, PlanError> {
    let clusters: Vec<_> = acl::clusters(docs).collect();
    let [(ns, cluster)] = clusters.as_slice() else {
        return Err(PlanError::ClusterCount(clusters.len()));
    };
    let name = cluster.metadata.name.clone().unwrap_or_default();
    if cluster.spec.core.replicas < 1 {
        return Err(PlanError::NoNodes(name));
    }
    let compiled = acl::compile_documents(docs, ns, cluster)?;
    let mut devices = Vec::new();
    let mut bridges = Vec::new();
    for d in docs {
        let same_ns = d.namespace.as_deref().unwrap_or("") == *ns;
        match d.resource() {
            Some(Resource::Device(dev)) if same_ns && dev.spec.cluster_ref.name == name => {
                devices.push(device(dev)?);
            }
            Some(Resource::Bridge(b)) if same_ns && b.spec.cluster_ref.name == name => {
                let remote = match (&b.spec.remote.host, &b.spec.remote.port) {
                    (Some(h), Some(p)) => format!("{h}:{p}"),
                    (Some(h), None) => h.clone(),
                    _ => "another MqttCluster".into(),
                };
                bridges.push((d.name.clone(), remote));
            }
            _ => {}
        }
    }
    devices.sort_by(|a, b| a.id.cmp(&b.id));
    devices.dedup_by(|a, b| a.id == b.id);
    Ok(Plan {
        namespace: if ns.is_empty() {
            "default".into()
        } else {
            (*ns).to_owned()
        },
        cluster: (*cluster).clone(),
        devices,
        acl: compiled,
        bridges,
    })
}

fn device(dev: &crds::DeviceIdentity) -> Result<Device, PlanError> {
    let name = dev.metadata.name.clone().unwrap_or_default();
    let cert = dev.spec.certificate.as_ref();
    let validity = match cert.and_then(|c| c.validity.as_deref()) {
        Some(v) => parse_duration(v).map_err(|e| PlanError::Device {
            name: name.clone(),
            message: format!("spec.certificate.validity: {e}"),
        })?,
        None => DeviceCertProfile::DEFAULT_VALIDITY,
    };
    let issuance = match &dev.spec.csr {
        Some(pem) => Issuance::Csr {
            pem: pem.clone(),
            validity,
        },
        None => Issuance::GeneratedKey(DeviceCertProfile {
            key_algorithm: cert
                .and_then(|c| c.key_algorithm)
                .map(KeyAlgorithm::from)
                .unwrap_or_default(),
            validity,
        }),
    };
    Ok(Device {
        name,
        id: dev.spec.device_id.clone(),
        state: dev.spec.state,
        issuance,
    })
}

/// What changed between two plans, as `local up` reports and applies it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// ACL revision before and after, when it changed.
    pub acl: Option<(String, String)>,
    /// deviceIds that appeared.
    pub added: Vec<String>,
    /// deviceIds that disappeared.
    pub removed: Vec<String>,
    /// deviceIds whose state changed: (id, new state).
    pub state: Vec<(String, DeviceState)>,
    /// The MqttCluster spec changed (needs a restart in local mode).
    pub cluster: bool,
}

impl Change {
    /// Nothing to apply or report.
    pub fn is_empty(&self) -> bool {
        *self == Change::default()
    }
}

/// Compares two plans.
pub fn diff(old: &Plan, new: &Plan) -> Change {
    let before: BTreeMap<&str, &Device> = old.devices.iter().map(|d| (d.id.as_str(), d)).collect();
    let after: BTreeMap<&str, &Device> = new.devices.iter().map(|d| (d.id.as_str(), d)).collect();
    let (ra, rb) = (old.acl.rules.revision(), new.acl.rules.revision());
    Change {
        acl: (ra != rb).then(|| (ra.to_owned(), rb.to_owned())),
        added: after
            .keys()
            .filter(|k| !before.contains_key(*k))
            .map(|k| k.to_string())
            .collect(),
        removed: before
            .keys()
            .filter(|k| !after.contains_key(*k))
            .map(|k| k.to_string())
            .collect(),
        state: after
            .iter()
            .filter_map(|(k, d)| {
                before
                    .get(k)
                    .filter(|b| b.state != d.state)
                    .map(|_| (k.to_string(), d.state))
            })
            .collect(),
        cluster: old.cluster.spec != new.cluster.spec || old.name() != new.name(),
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
