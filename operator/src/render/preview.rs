//! `mqtt-operator render`: every object the operator would create for a set of manifests, in a
//! stable order, for review in pull requests. Pure: documents in, objects out.
//!
//! Each valid MqttCluster goes through the controller's own `build` step with nothing observed
//! (a first apply) and the monitoring CRDs assumed present; each DeviceIdentity gets the Secret
//! its certificate would be written to. Secret values are never printed: every `data` entry reads
//! [`REDACTED`], and so does what is random per apply (the public CA certificates of the bundle),
//! which keeps the output byte-stable for the same input.

use std::time::SystemTime;

use crds::{DeviceIdentity, MqttCluster, TopicPolicy};
use serde_json::{json, Value};

use crate::check::{self, Finding};
use crate::controllers::cluster::build::{build, BuildError, Desired, Observed};
use crate::manifest::{Document, Resource};
use crate::pki::Randomness;
use crate::render::cluster::{CoreObjects, PdbApi};
use crate::render::names::Names;

/// What replaces every Secret value and every per-apply random value.
pub const REDACTED: &str = "REDACTED";

/// Why nothing could be rendered.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    /// The manifests do not pass `check`.
    #[error("{} problem(s) in the manifests", findings.len())]
    Invalid {
        /// The errors, as `check` reports them.
        findings: Vec<Finding>,
    },
    /// A cluster's children could not be built.
    #[error("MqttCluster {namespace}/{name}: {source}")]
    Build {
        /// Namespace of the cluster.
        namespace: String,
        /// Name of the cluster.
        name: String,
        /// The build error.
        source: Box<BuildError>,
    },
}

/// Renders every object for `docs`. Documents without a namespace are placed in
/// `default_namespace` (as `kubectl apply` would). `rng` and `now` only feed material that is
/// redacted from the output.
pub fn preview(
    docs: &[Document],
    default_namespace: &str,
    rng: &mut dyn Randomness,
    now: SystemTime,
) -> Result<Vec<Value>, PreviewError> {
    let report = check::check(docs);
    if report.has_errors() {
        return Err(PreviewError::Invalid {
            findings: report
                .findings
                .into_iter()
                .filter(|f| f.severity == check::Severity::Error)
                .collect(),
        });
    }
    let ns_of = |d: &Document| {
        d.namespace
            .clone()
            .unwrap_or_else(|| default_namespace.to_string())
    };
    let mut clusters: Vec<MqttCluster> = Vec::new();
    let mut policies: Vec<TopicPolicy> = Vec::new();
    let mut devices: Vec<DeviceIdentity> = Vec::new();
    for d in docs {
        let ns = Some(ns_of(d));
        match d.resource() {
            Some(Resource::Cluster(c)) => {
                let mut c = (**c).clone();
                c.metadata.namespace = ns;
                clusters.push(c);
            }
            Some(Resource::Policy(p)) => {
                let mut p = p.clone();
                p.metadata.namespace = ns;
                policies.push(p);
            }
            Some(Resource::Device(dev)) => {
                let mut dev = dev.clone();
                dev.metadata.namespace = ns;
                devices.push(dev);
            }
            Some(Resource::Bridge(_)) | None => {}
        }
    }
    let key = |m: &kube::api::ObjectMeta| (m.namespace.clone(), m.name.clone());
    clusters.sort_by_key(|c| key(&c.metadata));
    devices.sort_by_key(|d| key(&d.metadata));

    let mut out = Vec::new();
    for cluster in &clusters {
        let ns = cluster.metadata.namespace.clone().unwrap_or_default();
        let in_ns = |m: &kube::api::ObjectMeta| m.namespace.as_deref() == Some(ns.as_str());
        let observed = Observed {
            policies: policies
                .iter()
                .filter(|p| in_ns(&p.metadata))
                .cloned()
                .collect(),
            devices: devices
                .iter()
                .filter(|d| in_ns(&d.metadata))
                .cloned()
                .collect(),
            pdb_api: Some(PdbApi::V1),
            monitoring_crds: true,
            ..Observed::default()
        };
        let desired =
            build(cluster, &observed, rng, now).map_err(|source| PreviewError::Build {
                namespace: ns.clone(),
                name: cluster.metadata.name.clone().unwrap_or_default(),
                source: Box::new(source),
            })?;
        out.extend(cluster_objects(desired));
    }
    for device in &devices {
        out.push(device_secret(device));
    }
    Ok(out)
}

fn to_value<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).expect("Kubernetes objects serialize to JSON")
}

/// The cluster's children in the controller's apply order, Secrets redacted.
fn cluster_objects(desired: Desired) -> Vec<Value> {
    let Desired {
        cluster_ca_secret,
        clients_ca_secret,
        server_tls_secret,
        push_token_secret,
        ca_bundle,
        config,
        core,
        monitoring,
        dashboard,
        summary: _,
    } = desired;
    let CoreObjects {
        stateful_set,
        headless_service,
        client_service,
        pod_disruption_budget,
        network_policy,
    } = core;
    let mut out: Vec<Value> = [cluster_ca_secret, clients_ca_secret]
        .into_iter()
        .flatten()
        .chain([server_tls_secret, push_token_secret])
        .map(|s| redact_data(to_value(&s)))
        .collect();
    let mut bundle = to_value(&ca_bundle);
    redact_map(&mut bundle, "data");
    out.push(bundle);
    out.push(to_value(&config));
    out.push(to_value(&headless_service));
    out.push(to_value(&client_service));
    out.push(to_value(&stateful_set));
    out.push(pod_disruption_budget);
    out.extend(monitoring);
    out.extend(dashboard);
    out.push(to_value(&network_policy));
    out
}

/// Replaces every value of the object's `field` map (when present) by [`REDACTED`].
fn redact_map(object: &mut Value, field: &str) {
    if let Some(m) = object.get_mut(field).and_then(Value::as_object_mut) {
        for v in m.values_mut() {
            *v = Value::String(REDACTED.into());
        }
    }
}

fn redact_data(mut secret: Value) -> Value {
    redact_map(&mut secret, "data");
    redact_map(&mut secret, "stringData");
    secret
}

/// The Secret a DeviceIdentity's certificate is written to (`spec.certificate.secretName`,
/// default `<name>-tls`): `tls.crt` and `ca.crt`, plus `tls.key` unless the device brought a
/// CSR (then its private key never exists in the cluster).
fn device_secret(device: &DeviceIdentity) -> Value {
    let name = device.metadata.name.clone().unwrap_or_default();
    let secret_name = device
        .spec
        .certificate
        .as_ref()
        .and_then(|c| c.secret_name.clone())
        .unwrap_or_else(|| format!("{name}-tls"));
    let mut data = serde_json::Map::new();
    for k in ["ca.crt", "tls.crt"] {
        data.insert(k.into(), REDACTED.into());
    }
    if device.spec.csr.is_none() {
        data.insert("tls.key".into(), REDACTED.into());
    }
    let names = Names::new(&device.spec.cluster_ref.name);
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name,
            "namespace": device.metadata.namespace,
            "labels": names.labels(),
            "annotations": {"mqtt.operator.dev/device-identity": name},
        },
        "type": "Opaque",
        "data": data,
    })
}

/// The objects as a multi-document YAML stream (`---` before each document).
pub fn to_yaml(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|o| {
            format!(
                "---\n{}",
                serde_yaml::to_string(o).expect("JSON values are YAML")
            )
        })
        .collect()
}

/// The objects as one `v1/List`.
pub fn to_json(objects: &[Value]) -> String {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    serde_json::to_string_pretty(&list).expect("JSON values serialize") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{parse_file, SourceFile};
    use crate::pki::SeededRandomness;

    fn docs(text: &str) -> Vec<Document> {
        parse_file(&SourceFile {
            path: "t.yaml".into(),
            text: text.into(),
        })
        .unwrap()
    }

    const CLUSTER: &str = "apiVersion: mqtt.operator.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: qs}\nspec: {core: {replicas: 3}}\n";
    const DEVICE: &str = "apiVersion: mqtt.operator.dev/v1alpha1\nkind: DeviceIdentity\nmetadata: {name: d1}\nspec: {clusterRef: {name: qs}, deviceId: d1}\n";

    fn render(text: &str) -> Result<Vec<Value>, PreviewError> {
        preview(
            &docs(text),
            "iot",
            &mut SeededRandomness::new(b"t"),
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
        )
    }

    #[test]
    fn secrets_are_redacted_and_namespace_defaults() {
        let objects = render(&format!("{CLUSTER}---\n{DEVICE}")).unwrap();
        let secrets: Vec<_> = objects.iter().filter(|o| o["kind"] == "Secret").collect();
        // Two CAs, server TLS, push token, one device.
        assert_eq!(secrets.len(), 5);
        for s in &secrets {
            for v in s["data"].as_object().unwrap().values() {
                assert_eq!(v, REDACTED);
            }
        }
        assert!(objects.iter().all(|o| o["metadata"]["namespace"] == "iot"));
        assert!(objects.iter().all(|o| o.get("stringData").is_none()));
        let device = secrets.last().unwrap();
        assert_eq!(device["metadata"]["name"], "d1-tls");
        // Monitoring objects are rendered as if their CRDs existed.
        for kind in ["ServiceMonitor", "PrometheusRule"] {
            assert!(objects.iter().any(|o| o["kind"] == kind), "{kind}");
        }
    }

    #[test]
    fn invalid_manifests_are_refused_with_check_findings() {
        let err = render(&CLUSTER.replace("replicas: 3", "replicas: 4")).unwrap_err();
        let PreviewError::Invalid { findings } = err else {
            panic!("{err}")
        };
        assert_eq!(findings[0].field, "spec.core.replicas");
    }
}
