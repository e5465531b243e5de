//! DeviceIdentity controller: dereference → validate → build → apply → update status.
//!
//! For every DeviceIdentity whose MqttCluster exists and has its clients CA, the operator issues
//! a certificate (`CN=<deviceId>`, SAN URI `urn:mqtt-operator:<namespace>/<cluster>/device/<id>`,
//! clientAuth; see [`crate::pki`]) and server-side applies a Secret owned by the identity, named
//! `spec.certificate.secretName` or `<metadata.name>-tls`:
//!
//! | key | content |
//! |---|---|
//! | `tls.crt` | the device certificate (PEM) |
//! | `tls.key` | its private key (PKCS#8 PEM); **absent in CSR mode** (`spec.csr`) |
//! | `ca.crt` | the cluster CA bundle: what the *device* needs to verify the *broker* |
//!
//! so the three files work as they are (the same layout `mqtt-operator local up` writes under
//! `devices/<deviceId>/`):
//!
//! ```text
//! mosquitto_pub -h <broker> -p 8883 --cafile ca.crt --cert tls.crt --key tls.key -t ... -m ...
//! ```
//!
//! The Secret type is `kubernetes.io/tls`, or `Opaque` in CSR mode (the API server requires
//! `tls.key` in a TLS Secret). Secret annotations record what the certificate was issued for
//! (the `mqtt.operator.dev/rotate` value, the CSR's SHA-256).
//!
//! Rotation ([`crate::pki::rotation`]): at `status.renewalTime` (with the per-identity jitter),
//! when the rotate annotation gets a new value, when the clients CA changed (the certificate is
//! not issued by the current one), when the Secret is missing or unreadable, or when the CSR,
//! key algorithm or validity changed. The superseded serial moves to `status.previousSerials`
//! until its own expiry. A reconcile with nothing changed writes nothing.
//!
//! Not ready (no certificate issued): `ClusterNotFound`, `WaitingForCa`, `DuplicateDeviceId` (a
//! newer identity claiming the deviceId of an older one in the same cluster), `Invalid` (spec,
//! including a CSR failing the checks: nothing is written), `Revoked` (serials stay in status and
//! go to the cluster's revoked set; never re-issued), `Suspended` (serials are refused by the
//! brokers while suspended).

pub mod build;
pub mod status;

use std::sync::Arc;
use std::time::SystemTime;

use crds::device::{DeviceIdentityStatus, DeviceState};
use crds::{DeviceIdentity, MqttCluster};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};

use self::build::{build, older_holder, secret_name, ClusterFacts, Observed, DEVICE_LABEL};
use super::apply::{apply, apply_status, ApplyError};
use super::telemetry::CertificateKey;
use super::{Context, Error};
use crate::pki::{OsRandomness, RotationReason};
use crate::render::config_dir::CLUSTER_CA_KEY;
use crate::render::names::{Names, CLUSTER_LABEL};

const KIND: &str = "DeviceIdentity";

/// How many identities are reconciled at once.
const CONCURRENCY: u16 = 16;

fn read(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Read { what, source }
}

/// Reads everything `build` needs. `peers`: the controller's cache of identities (the duplicate
/// check); without it the namespace's identities are listed.
async fn dereference(
    ctx: &Context,
    device: &DeviceIdentity,
    ns: &str,
    peers: Option<&Store<super::Guarded<DeviceIdentity>>>,
) -> Result<Observed, Error> {
    let client = &ctx.client;
    let cluster_name = &device.spec.cluster_ref.name;
    let cluster = Api::<MqttCluster>::namespaced(client.clone(), ns)
        .get_opt(cluster_name)
        .await
        .map_err(read(format!("MqttCluster {cluster_name}")))?;
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    let cluster = match cluster {
        None => None,
        Some(c) => {
            let names = Names::new(cluster_name);
            let clients_ca_secret = c
                .spec
                .pki
                .clients_ca
                .secret_ref
                .as_ref()
                .map_or_else(|| names.clients_ca(), |r| r.name.clone());
            let ca = secrets
                .get_opt(&clients_ca_secret)
                .await
                .map_err(read(format!("Secret {clients_ca_secret}")))?;
            let text = |s: &Secret, k: &str| {
                s.data
                    .as_ref()
                    .and_then(|d| d.get(k))
                    .and_then(|b| String::from_utf8(b.0.clone()).ok())
            };
            let clients_ca = ca.and_then(|s| Some((text(&s, "tls.crt")?, text(&s, "tls.key")?)));
            let bundle = Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get_opt(&names.ca_bundle())
                .await
                .map_err(read(format!("ConfigMap {}", names.ca_bundle())))?;
            Some(ClusterFacts {
                uid: c.uid().unwrap_or_default(),
                clients_ca_secret,
                clients_ca,
                trust_bundle: bundle
                    .and_then(|b| b.data)
                    .and_then(|mut d| d.remove(CLUSTER_CA_KEY))
                    .filter(|p| !p.trim().is_empty()),
            })
        }
    };
    let secret = secrets
        .get_opt(&secret_name(device))
        .await
        .map_err(read(format!("Secret {}", secret_name(device))))?;
    let older = match peers {
        Some(store) => {
            let state = store.state();
            older_holder(device, state.iter().filter_map(|g| g.0.as_ref().ok()))
        }
        None => {
            let list = Api::<DeviceIdentity>::namespaced(client.clone(), ns)
                .list(&ListParams::default())
                .await
                .map_err(read("DeviceIdentities"))?;
            older_holder(device, list.items.iter())
        }
    };
    Ok(Observed {
        cluster,
        secret,
        older_holder: older,
    })
}

/// Publishes an Event about `device` (best effort: failures are logged).
async fn publish(ctx: &Context, device: &DeviceIdentity, note: &status::Note) {
    let event = Event {
        type_: if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: note.reason.into(),
        note: Some(note.message.clone()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &device.object_ref(&())).await {
        tracing::warn!(error = %e, "publishing an Event failed");
    }
}

/// One reconcile of a DeviceIdentity. `peers` is the controller's cache of identities (used for
/// the duplicate deviceId check); `None` lists them from the API server.
pub async fn reconcile(
    device: Arc<DeviceIdentity>,
    ctx: Arc<Context>,
    peers: Option<Store<super::Guarded<DeviceIdentity>>>,
) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(KIND);
    let ns = device.namespace().ok_or(Error::MissingKey("namespace"))?;
    let name = device.name_any();
    if device.metadata.deletion_timestamp.is_some() {
        ctx.metrics
            .forget_certificate(certificate_key(&device, &ns));
        return Ok(Action::await_change());
    }
    let observed = dereference(&ctx, &device, &ns, peers.as_ref()).await?;
    let desired = build(&device, &observed, &mut OsRandomness, SystemTime::now())?;
    let build::Desired {
        secret,
        status,
        notes,
        requeue,
        issued,
    } = desired;
    let mut writes = 0;
    if let Some(secret) = secret {
        let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &ns);
        // A Secret's type is immutable: switching between key and CSR mode replaces it.
        let observed_type = observed.secret.as_ref().and_then(|s| s.type_.as_deref());
        if observed_type.is_some_and(|t| Some(t) != secret.type_.as_deref()) {
            let secret_name = secret.metadata.name.clone().unwrap_or_default();
            secrets
                .delete(&secret_name, &DeleteParams::default())
                .await
                .map_err(|source| ApplyError {
                    verb: "delete",
                    kind: "Secret".into(),
                    name: secret_name,
                    source,
                })?;
            writes += 1;
        }
        writes += usize::from(apply(&secrets, &secret).await?);
    }
    let api = Api::<DeviceIdentity>::namespaced(ctx.client.clone(), &ns);
    let status_written = apply_status(&api, &name, device.status.as_ref(), &status).await?;
    if status_written {
        for note in &notes {
            publish(&ctx, &device, note).await;
        }
    }
    if let Some(reason) = issued {
        tracing::info!(reason = reason.as_str(), serial = ?status.serial, "certificate issued");
        ctx.metrics.certificate(match reason {
            RotationReason::NotIssued => "issued",
            _ => "rotated",
        });
    }
    if status_written
        && device.spec.state == DeviceState::Revoked
        && notes.iter().any(|n| n.reason == status::REASON_REVOKED)
    {
        ctx.metrics.certificate("revoked");
    }
    publish_times(&ctx, &device, &ns, &status);
    tracing::debug!(writes, status_written, "reconciled");
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// The metric key of `device`'s certificate.
fn certificate_key<'a>(device: &'a DeviceIdentity, ns: &'a str) -> CertificateKey<'a> {
    CertificateKey {
        namespace: ns,
        cluster: &device.spec.cluster_ref.name,
        certificate: "device",
        name: device.metadata.name.as_deref().unwrap_or_default(),
    }
}

/// Unix seconds of an RFC 3339 status time.
fn unix_seconds(time: Option<&str>) -> Option<f64> {
    let t: k8s_openapi::jiff::Timestamp = time?.parse().ok()?;
    Some(t.as_second() as f64)
}

/// Publishes the expiry and renewal time of an Active identity's certificate; a Suspended or
/// Revoked identity's certificate is out of use and its series are dropped (no expiry alert).
fn publish_times(ctx: &Context, device: &DeviceIdentity, ns: &str, status: &DeviceIdentityStatus) {
    let key = certificate_key(device, ns);
    match unix_seconds(status.not_after.as_deref()) {
        Some(not_after) if device.spec.state == DeviceState::Active => {
            let renewal = unix_seconds(status.renewal_time.as_deref());
            ctx.metrics.certificate_times(key, not_after, renewal);
        }
        _ => ctx.metrics.forget_certificate(key),
    }
}

/// The identities of the cluster named `cluster` in `ns`, from the controller's cache.
fn devices_of(
    store: &Store<super::Guarded<DeviceIdentity>>,
    ns: &str,
    cluster: &str,
) -> Vec<ObjectRef<super::Guarded<DeviceIdentity>>> {
    store
        .state()
        .iter()
        .filter(|g| {
            g.0.as_ref().is_ok_and(|d| {
                d.namespace().as_deref() == Some(ns) && d.spec.cluster_ref.name == cluster
            })
        })
        .map(|g| ObjectRef::from_obj(g.as_ref()))
        .collect()
}

/// Runs the DeviceIdentity controller until its watch ends. Besides the identities it watches
/// their Secrets (label [`DEVICE_LABEL`]) and the clusters' CA bundle ConfigMaps, which the
/// cluster controller writes when a cluster's CAs are created or change: that requeues the
/// cluster's identities. (Not the MqttCluster itself: its status changes with every identity,
/// and requeueing the whole fleet on each would be quadratic.)
pub async fn run(ctx: Arc<Context>) {
    let wc = watcher::Config::default();
    // The cache keeps every identity for the controller's lifetime; managedFields, never read,
    // were about half of each cached object (10,000 identities: tens of MiB).
    let (store, writer) = kube::runtime::reflector::store();
    let identities = watcher(ctx.watched::<super::Guarded<DeviceIdentity>>(), wc.clone())
        .modify(|d| d.meta_mut().managed_fields = None)
        .reflect(writer)
        .applied_objects();
    let controller = Controller::for_stream(identities, store.clone())
        .with_config(controller::Config::default().concurrency(CONCURRENCY));
    let for_bundles = store.clone();
    controller
        .owns(ctx.watched::<Secret>(), wc.clone().labels(DEVICE_LABEL))
        .watches(
            ctx.watched::<ConfigMap>(),
            wc.labels(CLUSTER_LABEL),
            move |cm: ConfigMap| {
                let cluster = cm.labels().get(CLUSTER_LABEL).cloned().unwrap_or_default();
                match cm.namespace() {
                    Some(ns) if cm.name_any() == Names::new(&cluster).ca_bundle() => {
                        devices_of(&for_bundles, &ns, &cluster)
                    }
                    _ => Vec::new(),
                }
            },
        )
        .shutdown_on_signal()
        .run(
            move |obj, ctx| {
                let peers = store.clone();
                super::traced_guarded(KIND, obj, ctx, move |o, c| reconcile(o, c, Some(peers)))
            },
            |obj, err, ctx| super::on_error(KIND, obj.as_ref(), err, &ctx),
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests;
