//! The operator's controllers against the real API server: the quickstart's children with owner
//! references, invalid specs reported (condition + Event) with nothing created, a no-op reconcile
//! making zero writes (counted at the HTTP layer), and garbage collection of every child.
//!
//! The controllers run in-process on their own thread and runtime (one per test binary), exactly
//! as `mqtt-operator run` runs them, against the shared bed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use crds::condition::{find, CERTIFICATES_READY, MONITORING_READY, READY};
use crds::MqttCluster;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Resource, ResourceExt};

use e2e::manifests::{self, Manifest};
use e2e::wait::{self, Check};
use operator::controllers::{self, cluster, Context};
use operator::render::names::{Names, CLUSTER_LABEL, FIELD_MANAGER};

#[path = "support/in_process.rs"]
mod in_process;
use in_process::operator_running;

const CONVERGE: Duration = Duration::from_secs(60);

fn quickstart() -> Vec<Manifest> {
    manifests::quickstart().expect("read the quickstart")
}

fn cluster_manifest() -> Manifest {
    manifests::first_of_kind(&quickstart(), "MqttCluster")
        .expect("quickstart MqttCluster")
        .clone()
}

fn pdb_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    // The bed is 1.20: policy/v1beta1 only (tests/cluster.rs asserts that gap).
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "policy",
        "v1beta1",
        "PodDisruptionBudget",
    ));
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// Owner uid and managers of `name` if it exists.
fn ownership<K: Resource>(obj: &K) -> (Vec<String>, Vec<String>) {
    let m = obj.meta();
    (
        m.owner_references
            .iter()
            .flatten()
            .filter(|o| o.kind == "MqttCluster" && o.controller == Some(true))
            .map(|o| o.uid.clone())
            .collect(),
        m.managed_fields
            .iter()
            .flatten()
            .filter_map(|f| f.manager.clone())
            .collect(),
    )
}

async fn wait_cluster(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    ok: impl Fn(&MqttCluster) -> bool,
) -> MqttCluster {
    let api = Api::<MqttCluster>::namespaced(client.clone(), ns);
    wait::until(what, CONVERGE, || async {
        match api.get(name).await {
            Ok(c) if ok(&c) => Check::Done(c),
            Ok(c) => Check::NotYet(format!("status: {:?}", c.status)),
            Err(e) => Check::NotYet(e.to_string()),
        }
    })
    .await
    .expect("cluster condition")
}

/// Applies the quickstart cluster into `ns` and waits until the operator reported status.
async fn converged_quickstart(client: &Client, ns: &str) -> MqttCluster {
    manifests::apply(client, &cluster_manifest(), ns)
        .await
        .expect("apply MqttCluster");
    wait_cluster(
        client,
        ns,
        "quickstart",
        "CertificatesReady on quickstart",
        |c| {
            c.status.as_ref().is_some_and(|s| {
                find(&s.conditions, CERTIFICATES_READY).is_some_and(|c| c.status == "True")
            })
        },
    )
    .await
}

#[tokio::test]
async fn quickstart_children_exist_with_owner_references_and_field_manager() {
    let Some(bed) = e2e::shared() else { return };
    operator_running(bed);
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("op-children").await.expect("namespace");
    for m in quickstart() {
        manifests::apply(&client, &m, &ns)
            .await
            .expect("apply quickstart");
    }
    let cluster = converged_quickstart(&client, &ns).await;
    let uid = cluster.uid().expect("uid");
    let names = Names::new("quickstart");

    let mut seen = Vec::new();
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    for n in [
        names.cluster_ca(),
        names.clients_ca(),
        names.server_tls(),
        names.push_token(),
    ] {
        let s = secrets
            .get(&n)
            .await
            .unwrap_or_else(|e| panic!("Secret {n}: {e}"));
        seen.push((format!("Secret/{n}"), ownership(&s)));
        let data = s.data.unwrap_or_default();
        assert!(!data.is_empty(), "Secret {n} has data");
    }
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    for n in [
        names.config(),
        names.ca_bundle(),
        "quickstart-dashboard".to_string(),
    ] {
        let c = cms
            .get(&n)
            .await
            .unwrap_or_else(|e| panic!("ConfigMap {n}: {e}"));
        seen.push((format!("ConfigMap/{n}"), ownership(&c)));
    }
    let svcs = Api::<Service>::namespaced(client.clone(), &ns);
    for n in [names.core(), names.client_service()] {
        let s = svcs
            .get(&n)
            .await
            .unwrap_or_else(|e| panic!("Service {n}: {e}"));
        seen.push((format!("Service/{n}"), ownership(&s)));
    }
    let sts = Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .get(&names.core())
        .await
        .expect("StatefulSet");
    assert_eq!(sts.spec.as_ref().and_then(|s| s.replicas), Some(3));
    seen.push(("StatefulSet".into(), ownership(&sts)));
    let pdb = pdb_api(&client, &ns)
        .get(&names.core())
        .await
        .expect("PDB (policy/v1beta1)");
    seen.push(("PodDisruptionBudget".into(), ownership(&pdb)));
    let np = Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
        .get(&names.core())
        .await
        .expect("NetworkPolicy");
    seen.push(("NetworkPolicy".into(), ownership(&np)));

    for (what, (owners, managers)) in &seen {
        assert_eq!(
            owners,
            &vec![uid.clone()],
            "{what} is controlled by the MqttCluster"
        );
        assert!(
            managers.iter().any(|m| m == FIELD_MANAGER),
            "{what} is applied by {FIELD_MANAGER}: {managers:?}"
        );
    }

    // Status: the bed has no kubelet (no Pods run) and no Prometheus Operator CRDs.
    let status = cluster.status.expect("status");
    let core = status.core.expect("core status");
    assert_eq!((core.desired, core.ready), (3, 0));
    let mon = find(&status.conditions, MONITORING_READY).expect("MonitoringReady");
    assert_eq!(
        (mon.status.as_str(), mon.reason.as_str()),
        ("False", "CrdMissing")
    );
    let ready = find(&status.conditions, READY).expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "CoreNotReady")
    );
    assert_eq!(status.ca_bundle.as_deref(), Some("quickstart-ca-bundle"));
    assert_eq!(
        status.endpoint.as_deref(),
        Some(format!("quickstart.{ns}.svc:8883").as_str())
    );
}

/// Counts requests that write (anything but GET) on their way to the API server.
#[derive(Clone)]
struct CountWrites(Arc<AtomicUsize>);

impl<S> tower::Layer<S> for CountWrites {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Counted {
            inner,
            writes: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct Counted<S> {
    inner: S,
    writes: Arc<AtomicUsize>,
}

impl<S, B> tower::Service<http::Request<B>> for Counted<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.method() != http::Method::GET {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.call(req)
    }
}

async fn counting_client(bed: &e2e::TestBed) -> (Client, Arc<AtomicUsize>) {
    let kc = Kubeconfig::read_from(bed.kubeconfig_path()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    let writes = Arc::new(AtomicUsize::new(0));
    let client = kube::client::ClientBuilder::try_from(config)
        .expect("client builder")
        .with_layer(&CountWrites(writes.clone()))
        .build();
    (client, writes)
}

#[tokio::test]
async fn a_no_op_reconcile_makes_zero_writes() {
    let Some(bed) = e2e::shared() else { return };
    operator_running(bed);
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("op-noop").await.expect("namespace");
    let cluster = converged_quickstart(&client, &ns).await;

    let (counting, writes) = counting_client(bed).await;
    let ctx = Arc::new(Context::new(
        counting,
        Arc::new(controllers::telemetry::Metrics::new()),
    ));
    // The running operator converged; the status it wrote is what this reconcile computes too.
    let fresh = Api::<MqttCluster>::namespaced(client.clone(), &ns)
        .get("quickstart")
        .await
        .expect("get");
    cluster::reconcile(Arc::new(fresh.clone()), ctx.clone())
        .await
        .expect("no-op reconcile");
    assert_eq!(
        writes.load(Ordering::SeqCst),
        0,
        "a reconcile with nothing to change wrote"
    );

    // Control: the counter does see writes. A spec change (in memory only) must be applied.
    let mut changed = fresh;
    changed.spec.limits.max_connections += 1;
    cluster::reconcile(Arc::new(changed), ctx)
        .await
        .expect("changed reconcile");
    assert!(
        writes.load(Ordering::SeqCst) >= 1,
        "the changed spec was written"
    );
    drop(cluster);
}

fn expectation(path: &std::path::Path) -> (String, String) {
    let text = std::fs::read_to_string(path).expect("read example");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("# expect: "))
        .unwrap_or_else(|| panic!("{} has no '# expect:' header", path.display()));
    let (object, field) = line.split_once(' ').expect("'<Kind>/<name> <field>'");
    (object.to_string(), field.trim().to_string())
}

/// Invalid examples the per-object validators (not the schema) catch. The others are rejected
/// by the API server's schema (tests/crds.rs) or need cross-object checks (dangling references,
/// duplicate device ids), which these controllers do not report yet.
const OPERATOR_CAUGHT: &[&str] = &[
    "bridge-self-reference.yaml",
    "bridge-unmappable-route.yaml",
    "cluster-byo-ca-without-secret.yaml",
    "cluster-duplicate-ports.yaml",
    "cluster-even-replicas.yaml",
    "cluster-no-listener.yaml",
    "cluster-renew-before-exceeds-validity.yaml",
    "device-bad-duration.yaml",
    "device-invalid-id.yaml",
    "policy-hash-not-last.yaml",
    "policy-plus-not-alone.yaml",
    "policy-unknown-placeholder.yaml",
];

#[tokio::test]
async fn invalid_examples_get_ready_false_naming_the_field_an_event_and_no_children() {
    let Some(bed) = e2e::shared() else { return };
    operator_running(bed);
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("op-invalid").await.expect("namespace");
    let dir = e2e::bed::repo_root().join("manifests/examples/invalid");
    for file in OPERATOR_CAUGHT {
        let path = dir.join(file);
        let (object, field) = expectation(&path);
        let docs = manifests::read_file(&path).expect("read");
        let doc = docs
            .iter()
            .find(|d| {
                let (_, k, n) = d.identity().expect("identity");
                format!("{k}/{n}") == object
            })
            .unwrap_or_else(|| panic!("{file}: no document {object}"));
        manifests::apply(&client, doc, &ns)
            .await
            .unwrap_or_else(|e| panic!("{file}: the API server refused {object}: {e}"));
        let (_, kind, name) = doc.identity().expect("identity");
        let api = manifests::api_for(&client, doc, &ns).await.expect("api");
        let message = wait::until(
            &format!("{object} Ready=False Invalid"),
            CONVERGE,
            || async {
                let obj = match api.get(&name).await {
                    Ok(o) => o,
                    Err(e) => return Check::NotYet(e.to_string()),
                };
                let ready = obj.data["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["type"] == READY)
                    .cloned();
                match ready {
                    Some(c) if c["status"] == "False" && c["reason"] == "Invalid" => {
                        Check::Done(c["message"].as_str().unwrap_or_default().to_string())
                    }
                    other => Check::NotYet(format!("Ready: {other:?}")),
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            message.contains(&field),
            "{file}: message {message:?} names {field}"
        );

        let events = Api::<CoreEvent>::namespaced(client.clone(), &ns);
        wait::until(&format!("Event Invalid for {object}"), CONVERGE, || async {
            match events.list(&ListParams::default()).await {
                Ok(list)
                    if list.items.iter().any(|e| {
                        e.reason.as_deref() == Some("Invalid")
                            && e.involved_object.name.as_deref() == Some(name.as_str())
                            && e.involved_object.kind.as_deref() == Some(kind.as_str())
                    }) =>
                {
                    Check::Done(())
                }
                Ok(list) => {
                    Check::NotYet(format!("{} events, none for {object}", list.items.len()))
                }
                Err(e) => Check::NotYet(e.to_string()),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{file}: {e}"));

        if kind == "MqttCluster" {
            let lp = ListParams::default().labels(&format!("{CLUSTER_LABEL}={name}"));
            let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns)
                .list(&lp)
                .await
                .expect("list");
            let secrets = Api::<Secret>::namespaced(client.clone(), &ns)
                .list(&lp)
                .await
                .expect("list");
            let sts = Api::<StatefulSet>::namespaced(client.clone(), &ns)
                .list(&lp)
                .await
                .expect("list");
            assert!(
                cms.items.is_empty() && secrets.items.is_empty() && sts.items.is_empty(),
                "{file}: nothing is created from an invalid spec"
            );
        }
    }
}

#[tokio::test]
async fn deleting_the_cluster_garbage_collects_every_child() {
    let Some(bed) = e2e::shared() else { return };
    operator_running(bed);
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("op-gc").await.expect("namespace");
    converged_quickstart(&client, &ns).await;
    let lp = ListParams::default().labels(&format!("{CLUSTER_LABEL}=quickstart"));
    let count = || async {
        let n = Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .list(&lp)
            .await
            .map(|l| l.items.len())
            .unwrap_or(99)
            + Api::<Secret>::namespaced(client.clone(), &ns)
                .list(&lp)
                .await
                .map(|l| l.items.len())
                .unwrap_or(99)
            + Api::<Service>::namespaced(client.clone(), &ns)
                .list(&lp)
                .await
                .map(|l| l.items.len())
                .unwrap_or(99)
            + Api::<StatefulSet>::namespaced(client.clone(), &ns)
                .list(&lp)
                .await
                .map(|l| l.items.len())
                .unwrap_or(99)
            + Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
                .list(&lp)
                .await
                .map(|l| l.items.len())
                .unwrap_or(99)
            + pdb_api(&client, &ns)
                .list(&lp)
                .await
                .map(|l| l.items.len())
                .unwrap_or(99);
        n
    };
    // 4 Secrets + 3 ConfigMaps + 2 Services + StatefulSet + NetworkPolicy + PDB.
    assert_eq!(count().await, 12, "every child exists before the delete");
    Api::<MqttCluster>::namespaced(client.clone(), &ns)
        .delete("quickstart", &DeleteParams::foreground())
        .await
        .expect("delete");
    wait::until(
        "children garbage-collected",
        Duration::from_secs(90),
        || async {
            match count().await {
                0 => Check::Done(()),
                n => Check::NotYet(format!("{n} children left")),
            }
        },
    )
    .await
    .expect("garbage collection");
}

/// A Bridge whose client identity does not exist: `Ready=False, reason=ReferenceNotFound`
/// naming the field, an Event, and the resolved remote endpoint in the status.
#[tokio::test]
async fn bridge_with_a_missing_reference_names_the_field() {
    let Some(bed) = e2e::shared() else { return };
    operator_running(bed);
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("op-bridge").await.expect("namespace");
    let path = e2e::bed::repo_root()
        .join("manifests/examples/invalid/bridge-dangling-client-identity.yaml");
    let (object, field) = expectation(&path);
    let docs = manifests::read_file(&path).expect("read");
    for doc in &docs {
        manifests::apply(&client, doc, &ns).await.expect("apply");
    }
    let name = object.split_once('/').expect("Kind/name").1.to_string();
    let api = Api::<crds::Bridge>::namespaced(client.clone(), &ns);
    let (message, remote) =
        wait::until(&format!("{object} ReferenceNotFound"), CONVERGE, || async {
            match api.get(&name).await {
                Ok(b) => {
                    let status = b.status.unwrap_or_default();
                    match find(&status.conditions, READY) {
                        Some(c) if c.status == "False" && c.reason == "ReferenceNotFound" => {
                            Check::Done((c.message.clone(), status.remote.clone()))
                        }
                        other => Check::NotYet(format!("Ready: {other:?}")),
                    }
                }
                Err(e) => Check::NotYet(e.to_string()),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(message.contains(&field), "{message:?} names {field}");
    assert_eq!(remote.as_deref(), Some("mqtt.central.example.com:8883"));
    let events = Api::<CoreEvent>::namespaced(client.clone(), &ns);
    wait::until("Event ReferenceNotFound", CONVERGE, || async {
        match events.list(&ListParams::default()).await {
            Ok(list)
                if list.items.iter().any(|e| {
                    e.reason.as_deref() == Some("ReferenceNotFound")
                        && e.involved_object.name.as_deref() == Some(name.as_str())
                }) =>
            {
                Check::Done(())
            }
            Ok(list) => Check::NotYet(format!("{} events", list.items.len())),
            Err(e) => Check::NotYet(e.to_string()),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}
