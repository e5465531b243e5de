//! Bridge controller: dereference (local cluster, remote cluster, client identity, CA Secret) →
//! validate → observe → status. An invalid spec (unmappable route, self-referencing bridge, ...)
//! gets `Ready=False, reason=Invalid` naming the field plus an Event; a reference to an object
//! that does not exist gets `Ready=False, reason=ReferenceNotFound` naming the field plus an
//! Event and is re-checked every 30 s; the resolved remote endpoint is reported in
//! `status.remote`. A valid bridge is rendered by the MqttCluster controller into the
//! `<cluster>-bridges` Secret (`cluster::bridges`); this controller then reads every core node's
//! `/readyz` ([`super::bridge_state`]): `Ready=True` once every node runs the rendered revision,
//! `Connected` from the nodes' connection state, `lastError` and the counters summed over nodes.
//!
//! Polling: every [`PENDING_POLL`] while not acknowledged or not connected, every
//! [`STEADY_POLL`] otherwise. The steady poll is short on purpose: a remote going away is only
//! seen by the brokers, and the status must show it within 5 s; one `/readyz` per node every 3 s
//! is a few hundred bytes on the cluster network. The status is written only when it changes.

use std::sync::Arc;
use std::time::Duration;

use crds::bridge::BridgeStatus;
use crds::condition::{condition, upsert, Condition, Time, CONNECTED, READY, REASON_INVALID};
use crds::validate::validate_bridge;
use crds::{Bridge, DeviceIdentity, MqttCluster};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::bridge_state::{self, Summary, Verdict};
use super::{Context, Error};
use crate::render::bridge::secret_name;
use crate::render::names::Names;
use contract::bridge::{BridgeSet, BRIDGES_FILE};

const KIND: &str = "Bridge";
/// Condition reason when a referenced object does not exist.
pub const REASON_REFERENCE_NOT_FOUND: &str = "ReferenceNotFound";
/// How often a bridge with a missing reference is re-checked.
const RECHECK: Duration = Duration::from_secs(30);
/// Poll interval while the bridge is not acknowledged by every node or not connected.
pub const PENDING_POLL: Duration = Duration::from_secs(2);
/// Poll interval once acknowledged and connected (see the module doc).
pub const STEADY_POLL: Duration = Duration::from_secs(3);

/// What the dereference step found (`None`: not referenced).
#[derive(Debug, Clone, Default)]
pub struct Refs {
    /// The local MqttCluster exists.
    pub local_cluster: bool,
    /// The remote MqttCluster (`remote.clusterRef`), if referenced: `Some(None)` = missing.
    pub remote_cluster: Option<Option<MqttCluster>>,
    /// The client DeviceIdentity exists, if referenced.
    pub client_identity: Option<bool>,
    /// The CA Secret exists, if referenced.
    pub ca_secret: Option<bool>,
}

/// Missing references, each naming its field (pure).
pub fn missing_references(bridge: &Bridge, refs: &Refs) -> Vec<String> {
    let spec = &bridge.spec;
    let mut out = Vec::new();
    if !refs.local_cluster {
        out.push(format!(
            "spec.clusterRef.name: MqttCluster {:?} not found",
            spec.cluster_ref.name
        ));
    }
    if let (Some(None), Some(r)) = (&refs.remote_cluster, &spec.remote.cluster_ref) {
        out.push(format!(
            "spec.remote.clusterRef.name: MqttCluster {:?} not found",
            r.name
        ));
    }
    let tls = spec.remote.tls.as_ref();
    if let (Some(false), Some(id)) = (
        refs.client_identity,
        tls.and_then(|t| t.client_identity_ref.as_ref()),
    ) {
        out.push(format!(
            "spec.remote.tls.clientIdentityRef.name: DeviceIdentity {:?} not found",
            id.name
        ));
    }
    if let (Some(false), Some(ca)) = (refs.ca_secret, tls.and_then(|t| t.ca_secret_ref.as_ref())) {
        out.push(format!(
            "spec.remote.tls.caSecretRef.name: Secret {:?} not found",
            ca.name
        ));
    }
    out
}

/// The endpoint the brokers will connect to: `host:port` (default 8883), or the remote
/// cluster's client Service and MQTTS port (pure).
pub fn remote_endpoint(bridge: &Bridge, namespace: &str, refs: &Refs) -> Option<String> {
    let remote = &bridge.spec.remote;
    match (&remote.host, &refs.remote_cluster) {
        (Some(host), _) => Some(format!("{host}:{}", remote.port.unwrap_or(8883))),
        (None, Some(Some(cluster))) => Some(format!(
            "{}.{namespace}.svc:{}",
            Names::new(&cluster.name_any()).client_service(),
            cluster.spec.listeners.mqtts.port
        )),
        _ => None,
    }
}

fn unknown(type_: &str, reason: &str, message: &str, gen: Option<i64>, now: Time) -> Condition {
    let mut c = condition(type_, false, reason, message, gen, now);
    c.status = "Unknown".into();
    c
}

/// The status of `bridge` (pure): `invalid` problems win over `missing` references.
pub fn desired_status(
    bridge: &Bridge,
    invalid: &[String],
    missing: &[String],
    endpoint: Option<String>,
    live: Option<&Summary>,
    now: Time,
) -> BridgeStatus {
    let mut s = bridge.status.clone().unwrap_or_default();
    let gen = bridge.metadata.generation;
    s.observed_generation = gen;
    s.remote = endpoint;
    let c = &mut s.conditions;
    let (reason, message) = if !invalid.is_empty() {
        (REASON_INVALID, invalid.join("; "))
    } else if !missing.is_empty() {
        (REASON_REFERENCE_NOT_FOUND, missing.join("; "))
    } else if let Some(live) = live {
        upsert(c, verdict_condition(READY, &live.ready, gen, now.clone()));
        upsert(c, verdict_condition(CONNECTED, &live.connected, gen, now));
        s.last_error.clone_from(&live.last_error);
        s.forwarded = Some(i64::try_from(live.forwarded).unwrap_or(i64::MAX));
        s.failed = Some(i64::try_from(live.failed).unwrap_or(i64::MAX));
        s.dropped = Some(i64::try_from(live.dropped).unwrap_or(i64::MAX));
        return s;
    } else {
        (
            "NotRendered",
            "the bridge is valid and waits for the MqttCluster controller to render it".to_string(),
        )
    };
    upsert(
        c,
        condition(READY, false, reason, message, gen, now.clone()),
    );
    upsert(
        c,
        unknown(
            CONNECTED,
            "NotObserved",
            "no broker node reports this bridge",
            gen,
            now,
        ),
    );
    s
}

fn verdict_condition(type_: &str, v: &Verdict, gen: Option<i64>, now: Time) -> Condition {
    let mut c = condition(
        type_,
        v.status == "True",
        v.reason,
        v.message.clone(),
        gen,
        now,
    );
    c.status = v.status.into();
    c
}

/// Whether the rendered `bridges.json` holds this spec of `bridge` (pure): its routes as the
/// spec says (an edit not rendered yet is not acknowledged).
pub fn rendered_revision<'a>(bridge: &Bridge, set: &'a BridgeSet) -> Result<&'a str, String> {
    let name = bridge.name_any();
    let Some(config) = set.bridges.iter().find(|b| b.name == name) else {
        return Err(format!(
            "not in {} yet",
            secret_name(&bridge.spec.cluster_ref.name)
        ));
    };
    let same = config.routes.len() == bridge.spec.routes.len()
        && config.routes.iter().zip(&bridge.spec.routes).all(|(r, s)| {
            r.local == s.local && r.remote == s.remote && r.qos == s.qos && r.retain == s.retain
        });
    if same {
        Ok(&set.revision)
    } else {
        Err(format!(
            "{} holds an earlier version of this bridge",
            secret_name(&bridge.spec.cluster_ref.name)
        ))
    }
}

/// The observe step: the rendered revision (or why the bridge is not rendered) and every core
/// node's report.
async fn observe(bridge: &Bridge, ns: &str, ctx: &Context) -> Result<Summary, Error> {
    let cluster = &bridge.spec.cluster_ref.name;
    let secret_name = secret_name(cluster);
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(&secret_name)
        .await
        .map_err(|source| Error::Read {
            what: format!("Secret {secret_name}"),
            source,
        })?;
    let set = secret
        .and_then(|s| s.data)
        .and_then(|d| d.get(BRIDGES_FILE).cloned())
        .and_then(|b| contract::bridge::load_bridges(&b.0).ok());
    let rendered = match set.as_ref().map(|set| rendered_revision(bridge, set)) {
        Some(Ok(r)) => Ok(r.to_string()),
        other => {
            // Say why: the material the cluster controller waits for, if that is the reason.
            let material = super::cluster::bridges::fetch(&ctx.client, ns, bridge).await?;
            Err(
                match super::cluster::bridges::resolve(bridge, ns, &material) {
                    Err(problem) => problem,
                    Ok(_) => match other {
                        Some(Err(why)) => why,
                        _ => format!("{secret_name} not rendered yet"),
                    },
                },
            )
        }
    };
    let nodes = super::cluster::push::core_nodes(&ctx.client, ns, &Names::new(cluster))
        .await
        .map_err(|source| Error::Read {
            what: format!("core pods of {cluster}"),
            source,
        })?;
    let reports = bridge_state::observe(&nodes, &bridge.name_any()).await;
    Ok(bridge_state::summarize(
        cluster,
        rendered.as_deref().map_err(String::as_str),
        &reports,
    ))
}

async fn exists<K>(api: Api<K>, name: &str) -> Result<bool, Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .map(|o| o.is_some())
        .map_err(|source| Error::Read {
            what: format!("{} {name}", std::any::type_name::<K>()),
            source,
        })
}

/// The dereference step.
async fn dereference(bridge: &Bridge, ns: &str, ctx: &Context) -> Result<Refs, Error> {
    let spec = &bridge.spec;
    let clusters = Api::<MqttCluster>::namespaced(ctx.client.clone(), ns);
    let local_cluster = exists(clusters.clone(), &spec.cluster_ref.name).await?;
    let remote_cluster = match &spec.remote.cluster_ref {
        Some(r) => Some(
            clusters
                .get_opt(&r.name)
                .await
                .map_err(|source| Error::Read {
                    what: format!("MqttCluster {}", r.name),
                    source,
                })?,
        ),
        None => None,
    };
    let tls = spec.remote.tls.as_ref();
    let client_identity = match tls.and_then(|t| t.client_identity_ref.as_ref()) {
        Some(id) => Some(
            exists(
                Api::<DeviceIdentity>::namespaced(ctx.client.clone(), ns),
                &id.name,
            )
            .await?,
        ),
        None => None,
    };
    let ca_secret = match tls.and_then(|t| t.ca_secret_ref.as_ref()) {
        Some(ca) => {
            Some(exists(Api::<Secret>::namespaced(ctx.client.clone(), ns), &ca.name).await?)
        }
        None => None,
    };
    Ok(Refs {
        local_cluster,
        remote_cluster,
        client_identity,
        ca_secret,
    })
}

/// One reconcile of a Bridge.
pub async fn reconcile(bridge: Arc<Bridge>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(KIND);
    let ns = bridge.namespace().ok_or(Error::MissingKey("namespace"))?;
    let invalid: Vec<String> = validate_bridge(&bridge.spec)
        .iter()
        .map(ToString::to_string)
        .collect();
    // An invalid spec is reported without reading anything else.
    let (missing, endpoint) = if invalid.is_empty() {
        let refs = dereference(&bridge, &ns, &ctx).await?;
        (
            missing_references(&bridge, &refs),
            remote_endpoint(&bridge, &ns, &refs),
        )
    } else {
        (Vec::new(), None)
    };
    let live = if invalid.is_empty() && missing.is_empty() {
        Some(observe(&bridge, &ns, &ctx).await?)
    } else {
        None
    };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = desired_status(&bridge, &invalid, &missing, endpoint, live.as_ref(), now);
    let api = Api::<Bridge>::namespaced(ctx.client.clone(), &ns);
    let written =
        super::apply::apply_status(&api, &bridge.name_any(), bridge.status.as_ref(), &status)
            .await?;
    let reference = bridge.object_ref(&());
    if written && !invalid.is_empty() {
        ctx.warn(&reference, REASON_INVALID, invalid.join("; "))
            .await;
    }
    if written && !missing.is_empty() {
        ctx.warn(&reference, REASON_REFERENCE_NOT_FOUND, missing.join("; "))
            .await;
    }
    Ok(match &live {
        Some(l) if l.settled() => Action::requeue(STEADY_POLL),
        Some(_) => Action::requeue(PENDING_POLL),
        None if missing.is_empty() => Action::await_change(),
        None => Action::requeue(RECHECK),
    })
}

/// Runs the Bridge controller until its watch ends.
pub async fn run(ctx: Arc<Context>) {
    let api: Api<super::Guarded<Bridge>> = ctx.watched();
    Controller::new(api, watcher::Config::default())
        .shutdown_on_signal()
        .run(
            |obj, ctx| super::traced_guarded(KIND, obj, ctx, reconcile),
            |obj, err, ctx| super::on_error(KIND, obj.as_ref(), err, &ctx),
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::condition::find;

    fn bridge(yaml_spec: &str) -> Bridge {
        serde_yaml::from_str(&format!(
            "apiVersion: mqtt.operator.dev/v1alpha1\nkind: Bridge\nmetadata: {{name: b, namespace: iot, generation: 2}}\nspec: {yaml_spec}\n"
        ))
        .unwrap()
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap())
    }

    #[test]
    fn unmappable_route_is_invalid_naming_the_field() {
        let b = bridge("{clusterRef: {name: edge}, remote: {host: h}, routes: [{direction: out, local: 'site/+/t/#', remote: 'prod/#'}]}");
        let invalid: Vec<String> = validate_bridge(&b.spec)
            .iter()
            .map(ToString::to_string)
            .collect();
        let s = desired_status(&b, &invalid, &[], None, None, now());
        let ready = find(&s.conditions, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Invalid")
        );
        assert!(
            ready.message.contains("spec.routes[0].remote"),
            "{}",
            ready.message
        );
        assert_eq!(s.observed_generation, Some(2));
    }

    #[test]
    fn missing_references_name_their_fields() {
        let b = bridge("{clusterRef: {name: edge}, remote: {host: h, tls: {caSecretRef: {name: ca}, clientIdentityRef: {name: gw}}}, routes: [{direction: out, local: 'a/#', remote: 'b/#'}]}");
        let refs = Refs {
            local_cluster: false,
            remote_cluster: None,
            client_identity: Some(false),
            ca_secret: Some(true),
        };
        let missing = missing_references(&b, &refs);
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert!(missing[0].starts_with("spec.clusterRef.name"));
        assert!(missing[1].starts_with("spec.remote.tls.clientIdentityRef.name"));
        let s = desired_status(
            &b,
            &[],
            &missing,
            remote_endpoint(&b, "iot", &refs),
            None,
            now(),
        );
        assert_eq!(s.remote.as_deref(), Some("h:8883"));
        let ready = find(&s.conditions, READY).unwrap();
        assert_eq!(ready.reason, REASON_REFERENCE_NOT_FOUND);
        assert_eq!(find(&s.conditions, CONNECTED).unwrap().status, "Unknown");
    }

    #[test]
    fn cluster_ref_resolves_to_the_remote_client_service() {
        let b = bridge("{clusterRef: {name: edge}, remote: {clusterRef: {name: central}}, routes: [{direction: in, local: 'cmd/#', remote: 'edge/cmd/#'}]}");
        let central: MqttCluster = serde_yaml::from_str(
            "apiVersion: mqtt.operator.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: central, namespace: iot}\nspec: {core: {replicas: 3}}\n",
        )
        .unwrap();
        let refs = Refs {
            local_cluster: true,
            remote_cluster: Some(Some(central)),
            ..Refs::default()
        };
        assert!(missing_references(&b, &refs).is_empty());
        assert_eq!(
            remote_endpoint(&b, "iot", &refs).as_deref(),
            Some("central.iot.svc:8883")
        );
        let s = desired_status(&b, &[], &[], remote_endpoint(&b, "iot", &refs), None, now());
        assert_eq!(find(&s.conditions, READY).unwrap().reason, "NotRendered");
        // A second computation from the written status changes nothing (no write).
        let mut again = b.clone();
        again.status = Some(s.clone());
        let later = Time(k8s_openapi::jiff::Timestamp::from_second(99).unwrap());
        assert_eq!(
            desired_status(&again, &[], &[], s.remote.clone(), None, later),
            s
        );
    }

    #[test]
    fn only_the_rendered_spec_counts_and_live_state_fills_the_status() {
        let routes = "[{direction: out, local: 'site/+/t/#', remote: 'prod/a/+/t/#'}]";
        let b = bridge(&format!(
            "{{clusterRef: {{name: edge}}, remote: {{host: h, tls: {{caSecretRef: {{name: ca}}}}}}, routes: {routes}}}"
        ));
        let material = crate::render::bridge::RemoteMaterial {
            host: "h".into(),
            port: 8883,
            ca_pem: "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n".into(),
            client_cert_pem: None,
            client_key_pem: None,
            username: None,
            password: None,
        };
        let (set, skipped) =
            crate::render::bridge::render_bridges("iot", "edge", &[(b.clone(), material)]);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(rendered_revision(&b, &set), Ok(set.revision.as_str()));
        // Edited, not rendered yet: not acknowledged.
        let mut edited = b.clone();
        edited.spec.routes[0].remote = "prod/b/+/t/#".into();
        assert!(rendered_revision(&edited, &set)
            .unwrap_err()
            .contains("earlier version"));
        let mut other = b.clone();
        other.metadata.name = Some("other".into());
        assert!(rendered_revision(&other, &set)
            .unwrap_err()
            .contains("not in edge-bridges"));
        // The nodes' summary becomes the conditions and counters.
        let nodes = std::collections::BTreeMap::from([(
            "edge-core-0".to_string(),
            bridge_state::parse_readyz(
                &serde_json::json!({"bridgesRevision": set.revision, "bridges": {"b": {"connected": true, "forwarded": 3}}}),
                "b",
            ),
        )]);
        let live = bridge_state::summarize("edge", Ok(&set.revision), &nodes);
        let s = desired_status(&b, &[], &[], Some("h:8883".into()), Some(&live), now());
        assert_eq!(find(&s.conditions, READY).unwrap().status, "True");
        let connected = find(&s.conditions, CONNECTED).unwrap();
        assert_eq!(
            (connected.status.as_str(), connected.message.as_str()),
            ("True", "connected from edge-core-0")
        );
        assert_eq!(s.forwarded, Some(3));
    }
}
