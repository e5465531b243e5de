//! The bridges step of the MqttCluster controller: read the cluster's Bridges and the material
//! each references (client DeviceIdentity's Secret, CA Secret or the remote cluster's CA bundle,
//! credentials Secret, remote endpoint), render `bridges.json` with [`crate::render::bridge`]
//! into the `<cluster>-bridges` Secret (owned by the cluster, server-side applied, no write when
//! unchanged). The brokers hot-reload the file (it is not part of the config hash: no restart).
//!
//! [`resolve`] is pure: it turns what was read ([`Material`]) into a [`RemoteMaterial`] or the
//! reason the Bridge cannot be rendered yet, which the Bridge controller reports too.

use std::collections::BTreeMap;

use contract::bridge::{BridgeSet, BRIDGES_FILE};
use crds::{Bridge, DeviceIdentity, MqttCluster};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};

use super::super::apply::apply;
use super::super::Error;
use crate::render::bridge::{render_bridges, secret_name, RemoteMaterial, Skipped};
use crate::render::cluster::child_meta;
use crate::render::config_dir::CLUSTER_CA_KEY;
use crate::render::names::Names;

/// Default key of the CA in `caSecretRef`.
pub const CA_KEY: &str = "ca.crt";
/// Keys of a DeviceIdentity's Secret used by a bridge.
pub const TLS_CERT_KEY: &str = "tls.crt";
/// Private key of a DeviceIdentity's Secret.
pub const TLS_KEY_KEY: &str = "tls.key";

/// Name of a DeviceIdentity's certificate Secret (`certificate.secretName`, else `<name>-tls`).
pub fn identity_secret_name(identity: &DeviceIdentity) -> String {
    identity
        .spec
        .certificate
        .as_ref()
        .and_then(|c| c.secret_name.clone())
        .unwrap_or_else(|| format!("{}-tls", identity.name_any()))
}

/// What was read for one Bridge (`None`: absent or not referenced). Secret values never appear
/// in `Debug`.
#[derive(Clone, Default)]
pub struct Material {
    /// The remote MqttCluster (`remote.clusterRef`).
    pub remote_cluster: Option<MqttCluster>,
    /// The remote cluster's CA bundle ConfigMap data.
    pub remote_ca_bundle: Option<BTreeMap<String, String>>,
    /// The client DeviceIdentity.
    pub identity: Option<DeviceIdentity>,
    /// Its certificate Secret's data.
    pub identity_secret: Option<BTreeMap<String, ByteString>>,
    /// The `caSecretRef` Secret's data.
    pub ca_secret: Option<BTreeMap<String, ByteString>>,
    /// The `credentialsSecretRef` Secret's data.
    pub credentials: Option<BTreeMap<String, ByteString>>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field(
                "remote_cluster",
                &self.remote_cluster.as_ref().map(|c| c.name_any()),
            )
            .field("identity", &self.identity.as_ref().map(|c| c.name_any()))
            .field("identity_secret", &self.identity_secret.is_some())
            .field("ca_secret", &self.ca_secret.is_some())
            .field("credentials", &self.credentials.is_some())
            .finish_non_exhaustive()
    }
}

fn text(data: Option<&BTreeMap<String, ByteString>>, key: &str) -> Option<String> {
    data?
        .get(key)
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .filter(|s| !s.trim().is_empty())
}

/// The material of `bridge` in `namespace`, or why it cannot be rendered yet (field paths
/// included). Pure.
pub fn resolve(bridge: &Bridge, namespace: &str, m: &Material) -> Result<RemoteMaterial, String> {
    let remote = &bridge.spec.remote;
    let tls = remote.tls.as_ref();
    let (host, port) = match (&remote.host, &remote.cluster_ref) {
        (Some(host), _) => (host.clone(), remote.port.unwrap_or(8883)),
        (None, Some(r)) => {
            let c = m.remote_cluster.as_ref().ok_or_else(|| {
                format!(
                    "spec.remote.clusterRef.name: MqttCluster {:?} not found",
                    r.name
                )
            })?;
            (
                format!(
                    "{}.{namespace}.svc",
                    Names::new(&c.name_any()).client_service()
                ),
                c.spec.listeners.mqtts.port,
            )
        }
        (None, None) => return Err("spec.remote: neither host nor clusterRef".into()),
    };
    let port = u16::try_from(port).map_err(|_| format!("spec.remote.port: {port} out of range"))?;
    let ca_pem = match tls.and_then(|t| t.ca_secret_ref.as_ref()) {
        Some(r) => {
            let key = r.key.as_deref().unwrap_or(CA_KEY);
            text(m.ca_secret.as_ref(), key).ok_or_else(|| {
                format!(
                    "spec.remote.tls.caSecretRef: Secret {:?} has no key {key:?}",
                    r.name
                )
            })?
        }
        None => match &remote.cluster_ref {
            Some(r) => m
                .remote_ca_bundle
                .as_ref()
                .and_then(|d| d.get(CLUSTER_CA_KEY))
                .filter(|s| !s.trim().is_empty())
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "spec.remote.clusterRef: ConfigMap {:?} has no {CLUSTER_CA_KEY} yet",
                        Names::new(&r.name).ca_bundle()
                    )
                })?,
            None => {
                return Err(
                    "spec.remote.tls.caSecretRef: required with spec.remote.host".to_string(),
                )
            }
        },
    };
    let (client_cert_pem, client_key_pem) = match tls.and_then(|t| t.client_identity_ref.as_ref()) {
        Some(r) => {
            let id = m.identity.as_ref().ok_or_else(|| {
                format!(
                    "spec.remote.tls.clientIdentityRef.name: DeviceIdentity {:?} not found",
                    r.name
                )
            })?;
            if let Some(remote_ref) = &remote.cluster_ref {
                if id.spec.cluster_ref.name != remote_ref.name {
                    return Err(format!(
                        "spec.remote.tls.clientIdentityRef.name: DeviceIdentity {:?} belongs to \
                         cluster {:?}, the remote {:?} would not accept its certificate",
                        r.name, id.spec.cluster_ref.name, remote_ref.name
                    ));
                }
            }
            let secret = identity_secret_name(id);
            let cert = text(m.identity_secret.as_ref(), TLS_CERT_KEY);
            let key = text(m.identity_secret.as_ref(), TLS_KEY_KEY);
            match (cert, key) {
                (Some(c), Some(k)) => (Some(c), Some(k)),
                _ => {
                    return Err(format!(
                        "spec.remote.tls.clientIdentityRef.name: Secret {secret:?} of \
                         DeviceIdentity {:?} has no {TLS_CERT_KEY}/{TLS_KEY_KEY} yet",
                        r.name
                    ))
                }
            }
        }
        None => (None, None),
    };
    let (username, password) = match &remote.credentials_secret_ref {
        Some(r) => {
            let user = text(m.credentials.as_ref(), "username");
            let pass = text(m.credentials.as_ref(), "password");
            if user.is_none() {
                return Err(format!(
                    "spec.remote.credentialsSecretRef: Secret {:?} has no username",
                    r.name
                ));
            }
            (user, pass)
        }
        None => (None, None),
    };
    Ok(RemoteMaterial {
        host,
        port,
        ca_pem,
        client_cert_pem,
        client_key_pem,
        username,
        password,
    })
}

fn read(what: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Read { what, source }
}

async fn secret_data(
    secrets: &Api<Secret>,
    name: &str,
) -> Result<Option<BTreeMap<String, ByteString>>, Error> {
    Ok(secrets
        .get_opt(name)
        .await
        .map_err(read(format!("Secret {name}")))?
        .and_then(|s| s.data))
}

/// Reads the material `bridge` references.
pub async fn fetch(client: &Client, namespace: &str, bridge: &Bridge) -> Result<Material, Error> {
    let remote = &bridge.spec.remote;
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let mut m = Material::default();
    if let Some(r) = &remote.cluster_ref {
        m.remote_cluster = Api::<MqttCluster>::namespaced(client.clone(), namespace)
            .get_opt(&r.name)
            .await
            .map_err(read(format!("MqttCluster {}", r.name)))?;
        let bundle = Names::new(&r.name).ca_bundle();
        m.remote_ca_bundle = Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .get_opt(&bundle)
            .await
            .map_err(read(format!("ConfigMap {bundle}")))?
            .and_then(|c| c.data);
    }
    let tls = remote.tls.as_ref();
    if let Some(r) = tls.and_then(|t| t.client_identity_ref.as_ref()) {
        m.identity = Api::<DeviceIdentity>::namespaced(client.clone(), namespace)
            .get_opt(&r.name)
            .await
            .map_err(read(format!("DeviceIdentity {}", r.name)))?;
        if let Some(id) = &m.identity {
            m.identity_secret = secret_data(&secrets, &identity_secret_name(id)).await?;
        }
    }
    if let Some(r) = tls.and_then(|t| t.ca_secret_ref.as_ref()) {
        m.ca_secret = secret_data(&secrets, &r.name).await?;
    }
    if let Some(r) = &remote.credentials_secret_ref {
        m.credentials = secret_data(&secrets, &r.name).await?;
    }
    Ok(m)
}

/// The `<cluster>-bridges` Secret holding `set` (pure).
pub fn desired_secret(cluster: &MqttCluster, set: &BridgeSet) -> Secret {
    Secret {
        metadata: child_meta(cluster, secret_name(&cluster.name_any())),
        data: Some(BTreeMap::from([(
            BRIDGES_FILE.to_string(),
            ByteString(contract::bridge::render_bridges(set)),
        )])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// What the bridges step did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The rendered set (`None`: the cluster has no Bridges and no Secret).
    pub set: Option<BridgeSet>,
    /// Bridges left out and why.
    pub skipped: Vec<Skipped>,
    /// Whether the Secret was written.
    pub written: bool,
}

/// The Bridges whose `clusterRef` names `cluster` in `namespace`.
pub async fn bridges_of(
    client: &Client,
    namespace: &str,
    cluster: &str,
) -> Result<Vec<Bridge>, Error> {
    Ok(Api::<Bridge>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(read("Bridges".into()))?
        .items
        .into_iter()
        .filter(|b| b.spec.cluster_ref.name == cluster && b.metadata.deletion_timestamp.is_none())
        .collect())
}

/// Renders and applies the cluster's `bridges.json` Secret. A cluster without Bridges gets no
/// Secret; once it has one, the Secret stays (emptied when the last Bridge goes, so the brokers
/// stop bridging).
pub async fn reconcile(
    client: &Client,
    cluster: &MqttCluster,
    namespace: &str,
) -> Result<Outcome, Error> {
    let name = cluster.name_any();
    let bridges = bridges_of(client, namespace, &name).await?;
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let secret = secret_name(&name);
    if bridges.is_empty()
        && secrets
            .get_opt(&secret)
            .await
            .map_err(read(format!("Secret {secret}")))?
            .is_none()
    {
        return Ok(Outcome::default());
    }
    let mut inputs = Vec::new();
    let mut skipped = Vec::new();
    for bridge in bridges {
        let material = fetch(client, namespace, &bridge).await?;
        match resolve(&bridge, namespace, &material) {
            Ok(m) => inputs.push((bridge, m)),
            Err(problem) => skipped.push(Skipped {
                name: bridge.name_any(),
                problems: vec![problem],
            }),
        }
    }
    let (set, invalid) = render_bridges(namespace, &name, &inputs);
    skipped.extend(invalid);
    let written = apply(&secrets, &desired_secret(cluster, &set)).await?;
    for s in &skipped {
        tracing::info!(bridge = %s.name, problems = ?s.problems, "bridge not rendered");
    }
    Ok(Outcome {
        set: Some(set),
        skipped,
        written,
    })
}

/// The kind of a changed object a Bridge may reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Referenced {
    /// A Secret: `caSecretRef`, `credentialsSecretRef` or a client identity's certificate
    /// Secret (`<identity>...`, matched by prefix since the store holds Bridges only).
    Secret,
    /// A ConfigMap: the remote cluster's `<remote>-ca-bundle`.
    ConfigMap,
}

/// The clusters to reconcile when the object with `meta` changed: those with a Bridge in its
/// namespace referencing it (pure; `bridges` is the watch store's content).
pub fn referencing<'a>(
    bridges: impl IntoIterator<Item = &'a Bridge>,
    meta: &ObjectMeta,
    kind: Referenced,
) -> Vec<ObjectRef<MqttCluster>> {
    let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
        return Vec::new();
    };
    let mut out: Vec<ObjectRef<MqttCluster>> = bridges
        .into_iter()
        .filter(|b| b.namespace().as_deref() == Some(ns))
        .filter(|b| {
            let r = &b.spec.remote;
            let tls = r.tls.as_ref();
            match kind {
                Referenced::Secret => {
                    tls.and_then(|t| t.ca_secret_ref.as_ref())
                        .is_some_and(|c| c.name == name)
                        || r.credentials_secret_ref
                            .as_ref()
                            .is_some_and(|c| c.name == name)
                        || tls
                            .and_then(|t| t.client_identity_ref.as_ref())
                            .is_some_and(|i| name.starts_with(&i.name))
                }
                Referenced::ConfigMap => r
                    .cluster_ref
                    .as_ref()
                    .is_some_and(|c| Names::new(&c.name).ca_bundle() == name),
            }
        })
        .map(|b| ObjectRef::new(&b.spec.cluster_ref.name).within(ns))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n";

    fn edge_bridge() -> Bridge {
        serde_yaml::from_str(
            "apiVersion: mqtt.operator.dev/v1alpha1\nkind: Bridge\nmetadata: {name: up, namespace: iot}\n\
             spec: {clusterRef: {name: edge}, remote: {clusterRef: {name: central}, tls: {clientIdentityRef: {name: gw}}}, \
             routes: [{direction: out, local: 'site/+/telemetry/#', remote: 'prod/acme/paris/+/telemetry/#'}]}\n",
        )
        .unwrap()
    }

    fn central() -> MqttCluster {
        serde_yaml::from_str(
            "apiVersion: mqtt.operator.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: central, namespace: iot}\nspec: {core: {replicas: 3}}\n",
        )
        .unwrap()
    }

    fn identity(cluster: &str) -> DeviceIdentity {
        serde_yaml::from_str(&format!(
            "apiVersion: mqtt.operator.dev/v1alpha1\nkind: DeviceIdentity\nmetadata: {{name: gw, namespace: iot}}\nspec: {{clusterRef: {{name: {cluster}}}, deviceId: edge-gw}}\n"
        ))
        .unwrap()
    }

    fn full() -> Material {
        Material {
            remote_cluster: Some(central()),
            remote_ca_bundle: Some(BTreeMap::from([(CLUSTER_CA_KEY.into(), PEM.into())])),
            identity: Some(identity("central")),
            identity_secret: Some(BTreeMap::from([
                (TLS_CERT_KEY.into(), ByteString(PEM.into())),
                (TLS_KEY_KEY.into(), ByteString(b"KEY".to_vec())),
            ])),
            ..Material::default()
        }
    }

    #[test]
    fn changed_secrets_and_ca_bundles_map_to_the_bridging_cluster() {
        let store = [edge_bridge()];
        let meta = |name: &str, ns: &str| ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..ObjectMeta::default()
        };
        let edge = vec![ObjectRef::<MqttCluster>::new("edge").within("iot")];
        assert_eq!(
            referencing(&store, &meta("gw-tls", "iot"), Referenced::Secret),
            edge
        );
        assert_eq!(
            referencing(
                &store,
                &meta("central-ca-bundle", "iot"),
                Referenced::ConfigMap
            ),
            edge
        );
        assert!(referencing(&store, &meta("other", "iot"), Referenced::Secret).is_empty());
        assert!(referencing(&store, &meta("gw-tls", "elsewhere"), Referenced::Secret).is_empty());
        assert!(referencing(
            &store,
            &meta("edge-ca-bundle", "iot"),
            Referenced::ConfigMap
        )
        .is_empty());
    }

    #[test]
    fn cluster_ref_resolves_endpoint_ca_and_identity() {
        let m = resolve(&edge_bridge(), "iot", &full()).unwrap();
        assert_eq!((m.host.as_str(), m.port), ("central.iot.svc", 8883));
        assert_eq!(m.ca_pem, PEM);
        assert_eq!(m.client_cert_pem.as_deref(), Some(PEM));
        assert_eq!(m.client_key_pem.as_deref(), Some("KEY"));
        assert!(m.username.is_none());
    }

    #[test]
    fn missing_material_names_the_field() {
        let b = edge_bridge();
        let mut m = full();
        m.identity_secret = None;
        let e = resolve(&b, "iot", &m).unwrap_err();
        assert!(
            e.contains("clientIdentityRef") && e.contains("gw-tls"),
            "{e}"
        );
        let mut m = full();
        m.remote_ca_bundle = None;
        let e = resolve(&b, "iot", &m).unwrap_err();
        assert!(e.contains("central-ca-bundle"), "{e}");
        let mut m = full();
        m.remote_cluster = None;
        assert!(resolve(&b, "iot", &m)
            .unwrap_err()
            .contains("MqttCluster \"central\""));
    }

    #[test]
    fn an_identity_of_another_cluster_is_refused() {
        let mut m = full();
        m.identity = Some(identity("edge"));
        let e = resolve(&edge_bridge(), "iot", &m).unwrap_err();
        assert!(e.contains("belongs to cluster \"edge\""), "{e}");
    }

    #[test]
    fn the_secret_is_owned_and_carries_the_file_and_debug_hides_keys() {
        let mut c: MqttCluster = serde_yaml::from_str(
            "apiVersion: mqtt.operator.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: edge, namespace: iot, uid: u1}\nspec: {core: {replicas: 1}}\n",
        )
        .unwrap();
        c.metadata.uid = Some("u1".into());
        let (set, _) = render_bridges("iot", "edge", &[]);
        let s = desired_secret(&c, &set);
        assert_eq!(s.metadata.name.as_deref(), Some("edge-bridges"));
        assert_eq!(s.metadata.owner_references.unwrap()[0].uid, "u1");
        let bytes = &s.data.unwrap()[BRIDGES_FILE].0;
        assert_eq!(contract::bridge::load_bridges(bytes).unwrap(), set);
        let shown = format!("{:?}", full());
        assert!(
            !shown.contains("KEY") && !shown.contains("BEGIN"),
            "{shown}"
        );
    }
}
