//! MqttCluster controller: dereference → validate → build → apply → update status.

pub mod acknowledge;
pub mod bridges;
pub mod build;
pub mod push;
pub mod relevance;
pub mod scale;
pub mod status;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crds::validate::validate_cluster;
use crds::{Bridge, DeviceIdentity, MqttCluster, TopicPolicy};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Client, Resource, ResourceExt};

use self::bridges::Referenced;
use self::build::{build, Desired, Observed};
use super::apply::{apply, apply_dynamic, apply_status};
use super::{Context, Error, Guarded};
use crate::pki::OsRandomness;
use crate::render::cluster::PdbApi;
use crate::render::names::Names;

const KIND: &str = "MqttCluster";

/// Longest wait between two reconciles of a healthy cluster (drift and certificate checks).
const RESYNC: Duration = Duration::from_secs(3600);

/// Wait between reconciles while monitoring is wanted but its CRDs are missing, so installing
/// the Prometheus Operator is noticed without a restart (discovery runs on every reconcile).
pub const MONITORING_CRD_RECHECK: Duration = Duration::from_secs(60);

fn now() -> crds::condition::Time {
    crds::condition::Time(k8s_openapi::jiff::Timestamp::now())
}

fn read(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Read { what, source }
}

/// Which PodDisruptionBudget API the server serves (`policy/v1` from 1.21, else v1beta1).
pub async fn discover_pdb_api(client: &Client) -> Result<PdbApi, Error> {
    match client.list_api_group_resources("policy/v1").await {
        Ok(list)
            if list
                .resources
                .iter()
                .any(|r| r.name == "poddisruptionbudgets") =>
        {
            Ok(PdbApi::V1)
        }
        Ok(_) => Ok(PdbApi::V1Beta1),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(PdbApi::V1Beta1),
        Err(e) => Err(read("discovering policy/v1")(e)),
    }
}

/// Whether the Prometheus Operator's ServiceMonitor and PrometheusRule CRDs are served.
pub async fn discover_monitoring(client: &Client) -> Result<bool, Error> {
    match client
        .list_api_group_resources("monitoring.coreos.com/v1")
        .await
    {
        Ok(list) => Ok(["servicemonitors", "prometheusrules"]
            .iter()
            .all(|n| list.resources.iter().any(|r| r.name == *n))),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(read("discovering monitoring.coreos.com/v1")(e)),
    }
}

/// Reads everything `build` needs.
async fn dereference(client: &Client, cluster: &MqttCluster, ns: &str) -> Result<Observed, Error> {
    let names = Names::new(&cluster.name_any());
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    let pki = &cluster.spec.pki;
    let secret = |name: String| {
        let secrets = secrets.clone();
        async move {
            secrets
                .get_opt(&name)
                .await
                .map(|s| s.and_then(|s| s.data))
                .map_err(read(format!("Secret {name}")))
        }
    };
    let cluster_ca_name = pki
        .cluster_ca
        .secret_ref
        .as_ref()
        .map_or_else(|| names.cluster_ca(), |r| r.name.clone());
    let clients_ca_name = pki
        .clients_ca
        .secret_ref
        .as_ref()
        .map_or_else(|| names.clients_ca(), |r| r.name.clone());
    Ok(Observed {
        cluster_ca: secret(cluster_ca_name).await?,
        clients_ca: secret(clients_ca_name).await?,
        server_tls: secret(names.server_tls()).await?,
        push_token: secret(names.push_token()).await?,
        policies: list_lean(&Api::namespaced(client.clone(), ns), "TopicPolicies").await?,
        devices: list_lean(&Api::namespaced(client.clone(), ns), "DeviceIdentities").await?,
        previous_acl: Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get_opt(&names.config())
            .await
            .map_err(read("the config ConfigMap"))?
            .and_then(|c| c.binary_data)
            .and_then(|mut d| d.remove(contract::config::files::ACL))
            .map(|b| b.0),
        pdb_api: Some(discover_pdb_api(client).await?),
        monitoring_crds: discover_monitoring(client).await?,
    })
}

/// Objects per page when listing policies and identities.
const LIST_PAGE: u32 = 500;
/// Most pages one list may take (5 million objects): a bound, never reached in practice.
const LIST_MAX_PAGES: usize = 10_000;

/// Lists every `K` of `api` page by page, dropping each object's managedFields as it arrives.
/// Why: one unpaginated list of 10,000 identities held the whole response body and every
/// object's managedFields (larger than the rest of it) at once, the operator's peak memory.
async fn list_lean<K>(api: &Api<K>, what: &str) -> Result<Vec<K>, Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut items = Vec::new();
    let mut params = ListParams::default().limit(LIST_PAGE);
    for _ in 0..LIST_MAX_PAGES {
        let page = api.list(&params).await.map_err(read(what))?;
        items.extend(page.items.into_iter().map(|mut o| {
            o.meta_mut().managed_fields = None;
            o
        }));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(items),
        }
    }
    Err(Error::ListTooLong {
        what: what.to_string(),
        pages: LIST_MAX_PAGES,
    })
}

fn dynamic_api(client: &Client, ns: &str, value: &serde_json::Value) -> Api<DynamicObject> {
    let (group, version) = value["apiVersion"]
        .as_str()
        .unwrap_or("v1")
        .rsplit_once('/')
        .map_or(
            ("", value["apiVersion"].as_str().unwrap_or("v1")),
            |(g, v)| (g, v),
        );
    let kind = value["kind"].as_str().unwrap_or_default();
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// Applies every child, Secrets and ConfigMaps before the StatefulSet that mounts them.
/// Returns how many writes were made. The StatefulSet is left as it is unless
/// `apply_stateful_set` (a scale-down waiting for the raft voter set, see [`scale`]).
async fn apply_all(
    client: &Client,
    ns: &str,
    desired: Desired,
    apply_stateful_set: bool,
) -> Result<usize, Error> {
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
    let crate::render::cluster::CoreObjects {
        stateful_set,
        headless_service,
        client_service,
        pod_disruption_budget,
        network_policy,
    } = core;
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), ns);
    let services = Api::<Service>::namespaced(client.clone(), ns);
    let mut writes = 0;
    for s in [cluster_ca_secret, clients_ca_secret]
        .into_iter()
        .flatten()
        .chain([server_tls_secret, push_token_secret])
    {
        writes += usize::from(apply(&secrets, &s).await?);
    }
    for c in [ca_bundle, config] {
        writes += usize::from(apply(&config_maps, &c).await?);
    }
    for s in [headless_service, client_service] {
        writes += usize::from(apply(&services, &s).await?);
    }
    if apply_stateful_set {
        writes += usize::from(
            apply(
                &Api::<StatefulSet>::namespaced(client.clone(), ns),
                &stateful_set,
            )
            .await?,
        );
    }
    for value in std::iter::once(pod_disruption_budget)
        .chain(monitoring)
        .chain(dashboard)
    {
        writes += usize::from(apply_dynamic(&dynamic_api(client, ns, &value), &value).await?);
    }
    writes += usize::from(
        apply(
            &Api::<NetworkPolicy>::namespaced(client.clone(), ns),
            &network_policy,
        )
        .await?,
    );
    Ok(writes)
}

/// One reconcile of an MqttCluster.
pub async fn reconcile(cluster: Arc<MqttCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(KIND);
    let ns = cluster.namespace().ok_or(Error::MissingKey("namespace"))?;
    let name = cluster.name_any();
    let api = Api::<MqttCluster>::namespaced(ctx.client.clone(), &ns);

    // Being deleted: the garbage collector removes the children; re-applying them would race it.
    if cluster.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }

    // validate
    let problems = validate_cluster(&cluster.spec);
    if !problems.is_empty() {
        let message = problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let status = status::invalid(&cluster, &message, now());
        if apply_status(&api, &name, cluster.status.as_ref(), &status).await? {
            ctx.warn(&cluster.object_ref(&()), "Invalid", message.clone())
                .await;
        }
        tracing::info!(%message, "invalid spec: nothing applied");
        return Ok(Action::await_change());
    }

    // dereference → build → apply
    let observed = dereference(&ctx.client, &cluster, &ns).await?;
    let desired = build(&cluster, &observed, &mut OsRandomness, SystemTime::now())?;
    let summary = desired.summary.clone();
    publish_certificate_times(&ctx, &ns, &name, &summary);
    let payloads = push::Payloads::from_desired(&desired);
    let names = Names::new(&name);
    let sts_api = Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns);

    // scale-down: the raft voter set shrinks before the StatefulSet does
    let running = sts_api
        .get_opt(&names.core())
        .await
        .map_err(read("StatefulSet"))?
        .and_then(|s| s.spec)
        .and_then(|s| s.replicas);
    let mut nodes = None;
    let mut scale_step = scale::ScaleStep::Apply;
    if running.is_some_and(|r| r > cluster.spec.core.replicas) {
        let found = push::core_nodes(&ctx.client, &ns, &names)
            .await
            .map_err(read("core Pods"))?;
        scale_step = scale::guard(
            running,
            cluster.spec.core.replicas,
            &found,
            &names,
            &payloads.token,
        )
        .await;
        nodes = Some(found);
    }
    let mut writes = apply_all(&ctx.client, &ns, desired, scale_step.may_apply()).await?;
    let bridges = bridges::reconcile(&ctx.client, &cluster, &ns).await?;
    writes += usize::from(bridges.written);
    let payloads = match &bridges.set {
        Some(set) => payloads.with_bridges(set),
        None => payloads,
    };

    // push the hot-reloadable parts to the running core nodes
    let nodes = match nodes {
        Some(n) => n,
        None => push::core_nodes(&ctx.client, &ns, &names)
            .await
            .map_err(read("core Pods"))?,
    };
    let reports = push::sync_nodes(&nodes, &payloads, &push::PushOptions::default()).await;
    let desired_nodes: Vec<String> = (0..cluster.spec.core.replicas)
        .map(|n| names.pod(n))
        .collect();
    let acl_push = status::AclPush {
        ack: acknowledge::acknowledge(&desired_nodes, &payloads.revisions, &reports),
        desired: payloads.revisions.clone(),
        desired_nodes: desired_nodes.len(),
    };

    // update status
    let sts = sts_api
        .get_opt(&names.core())
        .await
        .map_err(read("StatefulSet"))?;
    let ready = sts
        .and_then(|s| s.status)
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let mut status = status::applied(&cluster, &summary, ready, &acl_push, now());
    scale::mark_scaling_down(&mut status, &scale_step, cluster.metadata.generation, now());
    let status_written = apply_status(&api, &name, cluster.status.as_ref(), &status).await?;
    for (id, holders) in &summary.duplicate_device_ids {
        tracing::warn!(device_id = %id, holders = ?holders, "deviceId claimed twice");
    }
    tracing::info!(
        writes,
        status_written,
        acl_acknowledged = acl_push.ack.complete,
        "reconciled"
    );
    let mut next = requeue_after(&summary, SystemTime::now());
    if !scale_step.may_apply() {
        next = next.min(scale::SCALE_DOWN_RETRY);
    }
    if !acl_push.ack.complete && !nodes.is_empty() {
        // Pods that run but lag: look again soon, backing off while it lasts. Pods not yet
        // running bring the cluster back through the StatefulSet watch.
        next = next.min(acknowledge::retry_after(behind_for(&status), RESYNC));
    }
    if !bridges.skipped.is_empty() {
        next = next.min(BRIDGE_MATERIAL_RECHECK);
    }
    Ok(Action::requeue(next))
}

/// Publishes the expiry and renewal time of the cluster's CAs and server certificate.
fn publish_certificate_times(ctx: &Context, ns: &str, name: &str, summary: &build::Summary) {
    let unix = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    for (kind, not_after, renewal) in &summary.certificates {
        let key = super::telemetry::CertificateKey {
            namespace: ns,
            cluster: name,
            certificate: kind,
            name,
        };
        ctx.metrics
            .certificate_times(key, unix(*not_after), renewal.map(unix));
    }
}

/// Wait between reconciles while a Bridge of the cluster waits for material (a remote cluster's
/// CA bundle, an identity's certificate) that no watch of this controller reports.
pub const BRIDGE_MATERIAL_RECHECK: Duration = Duration::from_secs(10);

/// When to reconcile again without a watch event (pure): at the next certificate renewal, within
/// [`MONITORING_CRD_RECHECK`] while monitoring CRDs are missing, at most [`RESYNC`].
pub fn requeue_after(summary: &build::Summary, now: SystemTime) -> Duration {
    let next = summary
        .next_renewal
        .and_then(|t| t.duration_since(now).ok())
        .map_or(RESYNC, |d| d.min(RESYNC));
    if summary.monitoring_crd_missing {
        next.min(MONITORING_CRD_RECHECK)
    } else {
        next
    }
}

/// How long `AclApplied` has been false (zero when unknown).
fn behind_for(status: &crds::cluster::MqttClusterStatus) -> Duration {
    crds::condition::find(&status.conditions, crds::condition::ACL_APPLIED)
        .filter(|c| c.status == "False")
        .and_then(|c| {
            let since = std::time::UNIX_EPOCH
                + Duration::from_secs(u64::try_from(c.last_transition_time.0.as_second()).ok()?);
            SystemTime::now().duration_since(since).ok()
        })
        .unwrap_or_default()
}

fn policy_cluster(p: TopicPolicy) -> Option<ObjectRef<MqttCluster>> {
    Some(ObjectRef::new(&p.spec.cluster_ref.name).within(&p.namespace()?))
}

fn bridge_cluster(b: Bridge) -> Option<ObjectRef<MqttCluster>> {
    Some(ObjectRef::new(&b.spec.cluster_ref.name).within(&b.namespace()?))
}

fn device_cluster(d: DeviceIdentity) -> Option<ObjectRef<MqttCluster>> {
    Some(ObjectRef::new(&d.spec.cluster_ref.name).within(&d.namespace()?))
}

/// The DeviceIdentity events that change what a cluster reconcile reads ([`relevance`]).
fn relevant_device_events(
    ctx: &Context,
    wc: watcher::Config,
) -> impl futures::Stream<Item = Result<Guarded<DeviceIdentity>, watcher::Error>> + Send + 'static {
    use kube::runtime::WatchStreamExt;
    let mut filter = relevance::DeviceFilter::default();
    watcher(ctx.watched::<Guarded<DeviceIdentity>>(), wc)
        .filter(move |event| {
            futures::future::ready(event.as_ref().map_or(true, |e| filter.admit(e)))
        })
        .touched_objects()
}

/// Runs the MqttCluster controller until its watches end.
pub async fn run(ctx: Arc<Context>) {
    let wc = watcher::Config::default();
    // Bridges by reference, to map a changed Secret or CA bundle to the clusters bridging with it.
    let (bridge_store, writer) = reflector::store::<Guarded<Bridge>>();
    let bridge_reflector = reflector::reflector(
        writer,
        watcher::watcher(ctx.watched::<Guarded<Bridge>>(), wc.clone()),
    )
    .applied_objects()
    .for_each(|_| async {});
    let referencing = move |meta: &kube::api::ObjectMeta, kind: Referenced| {
        let state = bridge_store.state();
        bridges::referencing(state.iter().filter_map(|b| b.0.as_ref().ok()), meta, kind)
            .into_iter()
            .map(super::guarded_ref)
            .collect::<Vec<_>>()
    };
    let by_secret = referencing.clone();
    let controller = Controller::new(ctx.watched::<Guarded<MqttCluster>>(), wc.clone())
        .owns(ctx.watched::<StatefulSet>(), wc.clone())
        .owns(ctx.watched::<Service>(), wc.clone())
        .owns(ctx.watched::<ConfigMap>(), wc.clone())
        .owns(ctx.watched::<Secret>(), wc.clone())
        .watches(ctx.watched::<Guarded<TopicPolicy>>(), wc.clone(), |p| {
            super::decoded(p)
                .and_then(policy_cluster)
                .map(super::guarded_ref)
        })
        .watches_stream(relevant_device_events(&ctx, wc.clone()), |d| {
            super::decoded(d)
                .and_then(device_cluster)
                .map(super::guarded_ref)
        })
        .watches(ctx.watched::<Guarded<Bridge>>(), wc.clone(), |b| {
            super::decoded(b)
                .and_then(bridge_cluster)
                .map(super::guarded_ref)
        })
        .watches(ctx.watched::<Secret>(), wc.clone(), move |s: Secret| {
            by_secret(&s.metadata, Referenced::Secret)
        })
        .watches(ctx.watched::<ConfigMap>(), wc, move |c: ConfigMap| {
            referencing(&c.metadata, Referenced::ConfigMap)
        })
        .shutdown_on_signal()
        .run(
            |obj, ctx| super::traced_guarded(KIND, obj, ctx, reconcile),
            |obj, err, ctx| super::on_error(KIND, obj.as_ref(), err, &ctx),
            ctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "controller event");
            }
        });
    tokio::select! {
        () = controller => {}
        () = bridge_reflector => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_monitoring_crds_are_rechecked_within_a_minute() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut summary = build::Summary {
            acl_revision: String::new(),
            acl_policies: vec![],
            monitoring_crd_missing: false,
            duplicate_device_ids: vec![],
            next_renewal: None,
            certificates: Vec::new(),
        };
        assert_eq!(requeue_after(&summary, now), RESYNC);
        summary.monitoring_crd_missing = true;
        assert_eq!(requeue_after(&summary, now), MONITORING_CRD_RECHECK);
        summary.next_renewal = Some(now + Duration::from_secs(5));
        assert_eq!(requeue_after(&summary, now), Duration::from_secs(5));
    }
}
