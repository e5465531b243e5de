//! The ACL compiler and its tools: TopicPolicies → compiled rule set (`compile`), `acl explain`
//! (`explain`), and the `check` findings about rules that can never take effect (`audit`).
//!
//! The matcher itself lives in `contract::acl`, shared with the broker. Semantics: docs/acl.md.

pub mod audit;
pub mod compile;
pub mod explain;
pub mod last_good;

pub use compile::{compile, ClusterAcl, CompileError, Compiled, PolicyOutcome};

use crate::manifest::{Document, Resource};
use crds::MqttCluster;

/// The MqttClusters of a set of documents, with their namespace (`""` when unset).
pub fn clusters(docs: &[Document]) -> impl Iterator<Item = (&str, &MqttCluster)> {
    docs.iter().filter_map(|d| match d.resource() {
        Some(Resource::Cluster(c)) => Some((d.namespace.as_deref().unwrap_or(""), c.as_ref())),
        _ => None,
    })
}

/// Compiles the ACL of one cluster of a document set.
pub fn compile_documents(
    docs: &[Document],
    namespace: &str,
    cluster: &MqttCluster,
) -> Result<Compiled, CompileError> {
    let name = cluster.metadata.name.as_deref().unwrap_or("");
    let policies = docs.iter().filter_map(|d| match d.resource() {
        Some(Resource::Policy(p)) => Some(p),
        _ => None,
    });
    let devices = docs.iter().filter_map(|d| match d.resource() {
        Some(Resource::Device(dev)) => Some(dev),
        _ => None,
    });
    compile(
        ClusterAcl {
            namespace,
            name,
            acl: &cluster.spec.acl,
        },
        policies,
        devices,
    )
}
