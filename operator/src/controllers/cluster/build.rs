//! The pure `build` step of the MqttCluster pipeline: from the validated cluster and what
//! `dereference` observed, every child object the cluster should have. No IO; the clock and the
//! randomness come in as arguments.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use contract::config::{files, RevokedSet, CONFIG_VERSION};
use crds::device::DeviceState;
use crds::duration::parse_duration;
use crds::{DeviceIdentity, MqttCluster, TopicPolicy};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::acl::compile::{compile, ClusterAcl, CompileError, Compiled};
use crate::acl::last_good::carry_over;
use crate::monitoring::{self, RuleOptions};
use crate::pki::{
    decide_server_rotation, issue_server_certificate, CaKind, CaProfile, CertificateAuthority,
    CertificateInfo, PkiError, Randomness, RotationDecision, ServerCertRequest,
};
use crate::render::broker::{shared_broker_config, RenderError, Topology};
use crate::render::cluster::{child_meta, core_objects, owner_reference, CoreObjects, PdbApi};
use crate::render::config_dir::{CLIENTS_CA_KEY, CLUSTER_CA_KEY, PUSH_TOKEN_KEY};
use crate::render::names::Names;

/// Why the desired state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Certificate work failed.
    #[error("{what}: {source}")]
    Pki {
        /// Which certificate.
        what: &'static str,
        /// The PKI error.
        source: PkiError,
    },
    /// An existing Secret is unusable (missing key, not PEM).
    #[error("Secret {name}: {message}")]
    Secret {
        /// Secret name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// `broker.json` could not be rendered.
    #[error("rendering broker.json: {0}")]
    Render(#[from] RenderError),
    /// The ACL could not be compiled.
    #[error("compiling the ACL: {0}")]
    Acl(#[from] CompileError),
}

impl BuildError {
    /// Low-cardinality label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            BuildError::Pki { .. } => "pki",
            BuildError::Secret { .. } => "secret",
            BuildError::Render(_) => "render",
            BuildError::Acl(_) => "acl",
        }
    }
}

/// What `dereference` read for the build step.
#[derive(Debug, Default)]
pub struct Observed {
    /// The cluster CA Secret's data (ours or the bring-your-own one), when it exists.
    pub cluster_ca: Option<BTreeMap<String, ByteString>>,
    /// The clients CA Secret's data, when it exists.
    pub clients_ca: Option<BTreeMap<String, ByteString>>,
    /// The server TLS Secret's data, when it exists.
    pub server_tls: Option<BTreeMap<String, ByteString>>,
    /// The push token Secret's data, when it exists.
    pub push_token: Option<BTreeMap<String, ByteString>>,
    /// TopicPolicies of the namespace.
    pub policies: Vec<TopicPolicy>,
    /// DeviceIdentities of the namespace.
    pub devices: Vec<DeviceIdentity>,
    /// The `acl.bin` of the config ConfigMap as it is now (what the nodes were given last):
    /// the rules of a policy that became invalid are carried over from it.
    pub previous_acl: Option<Vec<u8>>,
    /// The PodDisruptionBudget API the server offers.
    pub pdb_api: Option<PdbApi>,
    /// Whether the Prometheus Operator CRDs (ServiceMonitor, PrometheusRule) exist.
    pub monitoring_crds: bool,
}

/// Every child of one MqttCluster. The apply step destructures it without `..`.
#[derive(Debug)]
pub struct Desired {
    /// Cluster CA Secret; `None` when the CA is brought by the user (`secretRef`).
    pub cluster_ca_secret: Option<Secret>,
    /// Clients CA Secret; `None` when brought by the user.
    pub clients_ca_secret: Option<Secret>,
    /// Server certificate Secret.
    pub server_tls_secret: Secret,
    /// Push endpoint bearer token Secret.
    pub push_token_secret: Secret,
    /// Public CA bundle ConfigMap.
    pub ca_bundle: ConfigMap,
    /// Broker configuration ConfigMap (broker.json, ACL, revoked set).
    pub config: ConfigMap,
    /// StatefulSet, Services, PDB, NetworkPolicy.
    pub core: CoreObjects,
    /// ServiceMonitor and PrometheusRule (JSON), applied only when their CRDs exist.
    pub monitoring: Vec<Value>,
    /// Dashboard ConfigMap (JSON), when enabled.
    pub dashboard: Option<Value>,
    /// Facts for the status step.
    pub summary: Summary,
}

/// Facts from the build the status step reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Revision of the compiled ACL rule set in the config ConfigMap: the rule set's own
    /// revision, which the broker reports as `aclRevision` in `/readyz`.
    pub acl_revision: String,
    /// The TopicPolicies whose rules are in that rule set: (name, generation), sorted by name.
    pub acl_policies: Vec<(String, i64)>,
    /// Monitoring objects were asked for but their CRDs are missing.
    pub monitoring_crd_missing: bool,
    /// Duplicate device ids (deviceId, names).
    pub duplicate_device_ids: Vec<(String, Vec<String>)>,
    /// Earliest instant a certificate of the cluster needs renewing (requeue then).
    pub next_renewal: Option<SystemTime>,
    /// The cluster's own certificates for the expiry metrics: (kind, not after, renewal time).
    /// CAs are not renewed by this operator version: their renewal time is when they should be.
    pub certificates: Vec<(&'static str, SystemTime, Option<SystemTime>)>,
}

fn secret(cluster: &MqttCluster, name: String, data: BTreeMap<String, ByteString>) -> Secret {
    Secret {
        metadata: child_meta(cluster, name),
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> Option<String> {
    data.get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
}

fn bytes(s: impl Into<String>) -> ByteString {
    ByteString(s.into().into_bytes())
}

fn duration(value: &str, fallback: Duration) -> Duration {
    parse_duration(value).unwrap_or(fallback)
}

/// Loads the CA from its Secret when it exists and is usable, else generates one. An existing
/// CA is never regenerated: a broken one is an error, not a reason to replace it.
fn ensure_ca(
    kind: CaKind,
    existing: Option<&BTreeMap<String, ByteString>>,
    secret_name: &str,
    profile: &CaProfile,
    rng: &mut dyn Randomness,
    now: SystemTime,
) -> Result<CertificateAuthority, BuildError> {
    match existing {
        Some(data) => {
            let (Some(cert), Some(key)) = (text(data, "tls.crt"), text(data, "tls.key")) else {
                return Err(BuildError::Secret {
                    name: secret_name.into(),
                    message: "needs tls.crt and tls.key (PEM)".into(),
                });
            };
            CertificateAuthority::from_pem(kind, &cert, &key).map_err(|source| BuildError::Pki {
                what: "loading the CA",
                source,
            })
        }
        None => {
            CertificateAuthority::generate(profile, rng, now).map_err(|source| BuildError::Pki {
                what: "generating the CA",
                source,
            })
        }
    }
}

fn ca_data(ca: &CertificateAuthority) -> BTreeMap<String, ByteString> {
    BTreeMap::from([
        ("tls.crt".to_string(), bytes(ca.cert_pem())),
        ("tls.key".to_string(), bytes(ca.key_pem())),
    ])
}

/// Hex SHA-256 of `data`, shortened: revisions and config hashes.
pub fn short_hash(data: &[u8]) -> String {
    hex::encode(&Sha256::digest(data)[..8])
}

/// The revoked set of the cluster: current and previous serials (from status) of Revoked
/// identities, and of Suspended ones while they are suspended (they leave the set when Active
/// again).
pub fn revoked_set(cluster: &str, devices: &[DeviceIdentity]) -> RevokedSet {
    let mut serials = BTreeSet::new();
    for d in devices.iter().filter(|d| {
        d.spec.cluster_ref.name == cluster
            && matches!(d.spec.state, DeviceState::Revoked | DeviceState::Suspended)
    }) {
        if let Some(status) = &d.status {
            serials.extend(status.serial.clone());
            serials.extend(status.previous_serials.iter().map(|p| p.serial.clone()));
        }
    }
    let joined: Vec<&str> = serials.iter().map(String::as_str).collect();
    RevokedSet {
        version: CONFIG_VERSION.into(),
        revision: short_hash(joined.join(",").as_bytes()),
        serials,
    }
}

/// Compiles the cluster's ACL from the namespace's policies and identities.
pub fn compile_acl(cluster: &MqttCluster, observed: &Observed) -> Result<Compiled, CompileError> {
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    compile(
        ClusterAcl {
            namespace: cluster.metadata.namespace.as_deref().unwrap_or_default(),
            name,
            acl: &cluster.spec.acl,
        },
        observed
            .policies
            .iter()
            .filter(|p| p.spec.cluster_ref.name == name),
        observed
            .devices
            .iter()
            .filter(|d| d.spec.cluster_ref.name == name),
    )
}

/// Compiles the cluster's ACL; the rules of a selected policy that is now invalid are carried
/// over from the rule set the nodes were given last (`observed.previous_acl`), so an invalid
/// edit changes nothing. Returns the compile and the names of the carried policies.
pub fn compile_keeping_last_good(
    cluster: &MqttCluster,
    observed: &Observed,
) -> Result<(Compiled, BTreeSet<String>), CompileError> {
    let mut compiled = compile_acl(cluster, observed)?;
    let invalid: BTreeSet<String> = compiled
        .policies
        .iter()
        .filter(|o| o.selected && !o.errors.is_empty())
        .map(|o| o.name.clone())
        .collect();
    let previous = observed
        .previous_acl
        .as_deref()
        .and_then(|b| contract::acl::codec::decode(b).ok());
    let Some(previous) = previous.filter(|_| !invalid.is_empty()) else {
        return Ok((compiled, BTreeSet::new()));
    };
    let carried: BTreeSet<String> = invalid
        .into_iter()
        .filter(|p| previous.origins().iter().any(|o| &o.policy == p))
        .collect();
    compiled.rules = carry_over(&compiled.rules, &previous, &carried).map_err(|source| {
        CompileError::RuleSet {
            cluster: cluster.metadata.name.clone().unwrap_or_default(),
            source,
        }
    })?;
    Ok((compiled, carried))
}

/// The policies whose rules `compiled` holds, with the generation in force: the compiled one,
/// or for a carried (now invalid) policy the generation the cluster last reported in force.
fn compiled_policies(
    cluster: &MqttCluster,
    compiled: &Compiled,
    carried: &BTreeSet<String>,
    policies: &[TopicPolicy],
) -> Vec<(String, i64)> {
    let reported = cluster
        .status
        .as_ref()
        .map(|s| s.acl_policies.as_slice())
        .unwrap_or_default();
    let mut out: Vec<(String, i64)> = compiled
        .policies
        .iter()
        .filter_map(|o| {
            if o.applied() {
                let p = policies
                    .iter()
                    .find(|p| p.metadata.name.as_deref() == Some(o.name.as_str()))?;
                Some((o.name.clone(), p.metadata.generation.unwrap_or(0)))
            } else if carried.contains(&o.name) {
                let r = reported.iter().find(|r| r.name == o.name)?;
                Some((o.name.clone(), r.generation))
            } else {
                None
            }
        })
        .collect();
    out.sort();
    out
}

/// Sets the cluster's owner reference on a child built as JSON.
fn owned_by(value: &mut Value, cluster: &MqttCluster) {
    if let (Some(meta), Some(owner)) = (
        value.get_mut("metadata").and_then(Value::as_object_mut),
        owner_reference(cluster),
    ) {
        meta.insert(
            "ownerReferences".into(),
            serde_json::to_value(vec![owner]).unwrap_or(Value::Null),
        );
    }
}

/// Builds the desired children of a validated cluster.
pub fn build(
    cluster: &MqttCluster,
    observed: &Observed,
    rng: &mut dyn Randomness,
    now: SystemTime,
) -> Result<Desired, BuildError> {
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    let namespace = cluster.metadata.namespace.as_deref().unwrap_or_default();
    let names = Names::new(name);
    let spec = &cluster.spec;
    let pki = &spec.pki;

    // CAs: reuse what exists, generate what does not.
    let mut cluster_profile = CaProfile::new(CaKind::Cluster, namespace, name);
    cluster_profile.validity = duration(&pki.cluster_ca.validity, cluster_profile.validity);
    let cluster_ca = ensure_ca(
        CaKind::Cluster,
        observed.cluster_ca.as_ref(),
        &names.cluster_ca(),
        &cluster_profile,
        rng,
        now,
    )?;
    let mut clients_profile = CaProfile::new(CaKind::Clients, namespace, name);
    clients_profile.validity = duration(&pki.clients_ca.validity, clients_profile.validity);
    let clients_ca = ensure_ca(
        CaKind::Clients,
        observed.clients_ca.as_ref(),
        &names.clients_ca(),
        &clients_profile,
        rng,
        now,
    )?;

    // Server certificate: keep the current one unless the rotation rule says otherwise.
    let mut request = ServerCertRequest::new(
        namespace,
        name,
        u32::try_from(spec.core.replicas).unwrap_or(1),
    );
    request.inter_node_client_auth = true;
    request.validity = duration(&pki.server_cert.validity, request.validity);
    let renew_before = duration(&pki.server_cert.renew_before, request.validity / 3);
    let current = observed.server_tls.as_ref().and_then(|d| {
        let cert = text(d, "tls.crt")?;
        let key = text(d, "tls.key")?;
        Some((CertificateInfo::from_pem(&cert).ok()?, cert, key))
    });
    let decision = decide_server_rotation(
        &request,
        renew_before,
        cluster_ca.info(),
        current.as_ref().map(|(info, _, _)| info),
        now,
    );
    let (server_cert, server_key, next_renewal, server_not_after) = match (decision, current) {
        (RotationDecision::Keep { renewal_time }, Some((info, cert, key))) => {
            (cert, key, Some(renewal_time), info.validity.not_after)
        }
        _ => {
            let creds =
                issue_server_certificate(&cluster_ca, &request, rng, now).map_err(|source| {
                    BuildError::Pki {
                        what: "issuing the server certificate",
                        source,
                    }
                })?;
            let not_after = creds.certificate.info().validity.not_after;
            (
                creds.certificate.pem() + &cluster_ca.cert_pem(),
                creds.key.to_pkcs8_pem(),
                not_after.checked_sub(renew_before),
                not_after,
            )
        }
    };

    // Push token: reuse, else 32 random bytes.
    let token = match observed
        .push_token
        .as_ref()
        .and_then(|d| text(d, PUSH_TOKEN_KEY))
        .filter(|t| !t.is_empty())
    {
        Some(t) => t,
        None => {
            let mut raw = [0u8; 32];
            rng.fill(&mut raw).map_err(|source| BuildError::Pki {
                what: "generating the push token",
                source,
            })?;
            hex::encode(raw)
        }
    };

    // Configuration ConfigMap: broker.json, the compiled ACL, the revoked set.
    let topology = Topology::kubernetes(name, namespace, spec)?;
    let broker = shared_broker_config(name, spec, &topology)?;
    let broker_json = serde_json::to_string_pretty(&broker).unwrap_or_default();
    let (compiled, carried) = compile_keeping_last_good(cluster, observed)?;
    let acl_bytes = compiled.encode();
    let acl_revision = compiled.rules.revision().to_owned();
    let acl_policies = compiled_policies(cluster, &compiled, &carried, &observed.policies);
    let revoked = revoked_set(name, &observed.devices);
    let revoked_json = serde_json::to_string_pretty(&revoked).unwrap_or_default();
    let config = ConfigMap {
        metadata: child_meta(cluster, names.config()),
        data: Some(BTreeMap::from([
            (files::BROKER.to_string(), broker_json.clone()),
            (files::REVOKED.to_string(), revoked_json),
        ])),
        binary_data: Some(BTreeMap::from([(
            files::ACL.to_string(),
            ByteString(acl_bytes),
        )])),
        ..ConfigMap::default()
    };
    let ca_bundle = ConfigMap {
        metadata: child_meta(cluster, names.ca_bundle()),
        data: Some(BTreeMap::from([
            (CLIENTS_CA_KEY.to_string(), clients_ca.cert_pem()),
            (CLUSTER_CA_KEY.to_string(), cluster_ca.cert_pem()),
        ])),
        ..ConfigMap::default()
    };

    // Only restart-requiring configuration goes into the pod template hash.
    let config_hash = short_hash(broker_json.as_bytes());
    let core = core_objects(
        cluster,
        &config_hash,
        observed.pdb_api.unwrap_or(PdbApi::V1),
    );

    let m = &spec.monitoring;
    let wanted: Vec<Value> = [
        m.service_monitor
            .enabled
            .then(|| monitoring::service_monitor(cluster)),
        m.prometheus_rule
            .enabled
            .then(|| monitoring::prometheus_rule(cluster, &RuleOptions::default())),
    ]
    .into_iter()
    .flatten()
    .collect();
    let monitoring_crd_missing = !wanted.is_empty() && !observed.monitoring_crds;
    let monitoring = if observed.monitoring_crds {
        wanted
    } else {
        Vec::new()
    };
    let mut dashboard = m
        .dashboard
        .enabled
        .then(|| monitoring::dashboard_config_map(cluster));
    let mut monitoring = monitoring;
    for value in monitoring.iter_mut().chain(dashboard.iter_mut()) {
        owned_by(value, cluster);
    }

    Ok(Desired {
        cluster_ca_secret: pki
            .cluster_ca
            .secret_ref
            .is_none()
            .then(|| secret(cluster, names.cluster_ca(), ca_data(&cluster_ca))),
        clients_ca_secret: pki
            .clients_ca
            .secret_ref
            .is_none()
            .then(|| secret(cluster, names.clients_ca(), ca_data(&clients_ca))),
        server_tls_secret: secret(
            cluster,
            names.server_tls(),
            BTreeMap::from([
                ("tls.crt".to_string(), bytes(server_cert)),
                ("tls.key".to_string(), bytes(server_key)),
                ("ca.crt".to_string(), bytes(cluster_ca.cert_pem())),
            ]),
        ),
        push_token_secret: secret(
            cluster,
            names.push_token(),
            BTreeMap::from([(PUSH_TOKEN_KEY.to_string(), bytes(token))]),
        ),
        ca_bundle,
        config,
        core,
        monitoring,
        dashboard,
        summary: Summary {
            acl_revision,
            acl_policies,
            monitoring_crd_missing,
            duplicate_device_ids: compiled.duplicate_device_ids,
            next_renewal,
            certificates: vec![
                (
                    "cluster-ca",
                    cluster_ca.info().validity.not_after,
                    cluster_ca
                        .info()
                        .validity
                        .not_after
                        .checked_sub(duration(&pki.cluster_ca.renew_before, Duration::ZERO)),
                ),
                (
                    "clients-ca",
                    clients_ca.info().validity.not_after,
                    clients_ca
                        .info()
                        .validity
                        .not_after
                        .checked_sub(duration(&pki.clients_ca.renew_before, Duration::ZERO)),
                ),
                ("server", server_not_after, next_renewal),
            ],
        },
    })
}

#[cfg(test)]
#[path = "build_tests.rs"]
mod tests;
