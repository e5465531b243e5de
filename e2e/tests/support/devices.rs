//! Fixtures of tests/devices.rs: the in-process operator, a namespace with the quickstart
//! cluster, DeviceIdentity apply/patch/wait helpers, openssl, revoked.json, and a client that
//! counts writes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use crds::condition::{find, CERTIFICATES_READY, READY};
use crds::{DeviceIdentity, MqttCluster};
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

use e2e::manifests::{self, Manifest};
use e2e::wait::{self, Check};
use operator::render::names::Names;

use super::tool;

pub const CONVERGE: Duration = Duration::from_secs(90);

/// openssl on PATH, or `None` (skip, outside CI only).
pub fn openssl() -> Option<PathBuf> {
    tool::require("openssl", "openssl")
}

/// Runs openssl with `args` in `dir`; returns stdout, panics with stderr on failure.
pub fn run_openssl(bin: &Path, dir: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running openssl {args:?}: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Lowercase hex without leading zeros: how serials compare across spellings.
pub fn normalize_serial(s: &str) -> String {
    let hex: String = s
        .trim()
        .trim_start_matches("serial=")
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_lowercase();
    hex.trim_start_matches('0').to_string()
}

pub fn cluster_manifest() -> Manifest {
    let all = manifests::quickstart().expect("read the quickstart");
    manifests::first_of_kind(&all, "MqttCluster")
        .expect("quickstart MqttCluster")
        .clone()
}

/// A namespace with the quickstart MqttCluster whose CAs exist.
pub async fn cluster_namespace(bed: &'static e2e::TestBed, prefix: &str) -> (Client, String) {
    crate::in_process::operator_running(bed);
    let client = bed.client().await.expect("client");
    let ns = bed.namespace(prefix).await.expect("namespace");
    manifests::apply(&client, &cluster_manifest(), &ns)
        .await
        .expect("apply MqttCluster");
    let api = Api::<MqttCluster>::namespaced(client.clone(), &ns);
    wait::until("quickstart CertificatesReady", CONVERGE, || async {
        match api.get("quickstart").await {
            Ok(c)
                if c.status.as_ref().is_some_and(|s| {
                    find(&s.conditions, CERTIFICATES_READY).is_some_and(|c| c.status == "True")
                }) =>
            {
                Check::Done(())
            }
            Ok(c) => Check::NotYet(format!("status: {:?}", c.status)),
            Err(e) => Check::NotYet(e.to_string()),
        }
    })
    .await
    .expect("cluster CAs");
    (client, ns)
}

/// Server-side applies a DeviceIdentity of cluster `quickstart` (as a user would: own manager).
pub async fn apply_device(client: &Client, ns: &str, name: &str, spec: serde_json::Value) {
    let mut spec = spec;
    spec["clusterRef"] = serde_json::json!({"name": "quickstart"});
    let body = serde_json::json!({
        "apiVersion": "mqtt.operator.dev/v1alpha1",
        "kind": "DeviceIdentity",
        "metadata": {"name": name},
        "spec": spec,
    });
    Api::<DeviceIdentity>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply("e2e-user").force(),
            &Patch::Apply(&body),
        )
        .await
        .unwrap_or_else(|e| panic!("apply DeviceIdentity {name}: {e}"));
}

/// Merge-patches a DeviceIdentity (metadata or spec).
pub async fn patch_device(client: &Client, ns: &str, name: &str, patch: serde_json::Value) {
    Api::<DeviceIdentity>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("patch DeviceIdentity {name}: {e}"));
}

/// `(status, reason, message)` of the Ready condition.
pub fn ready(d: &DeviceIdentity) -> Option<(String, String, String)> {
    let c = find(&d.status.as_ref()?.conditions, READY)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

pub async fn wait_device(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    ok: impl Fn(&DeviceIdentity) -> bool,
) -> DeviceIdentity {
    let api = Api::<DeviceIdentity>::namespaced(client.clone(), ns);
    wait::until(&format!("{name}: {what}"), CONVERGE, || async {
        match api.get(name).await {
            Ok(d) if ok(&d) => Check::Done(d),
            Ok(d) => Check::NotYet(format!("status: {:?}", d.status)),
            Err(e) => Check::NotYet(e.to_string()),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

pub async fn wait_ready(client: &Client, ns: &str, name: &str) -> DeviceIdentity {
    wait_device(client, ns, name, "Ready=True", |d| {
        ready(d).is_some_and(|(s, _, _)| s == "True")
    })
    .await
}

pub async fn secret(client: &Client, ns: &str, name: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("get Secret")
}

pub fn key(secret: &Secret, k: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(k)
        .map(|b| String::from_utf8(b.0.clone()).expect("utf-8"))
}

/// Waits for an Event `reason` about DeviceIdentity `name` and returns its note.
pub async fn wait_event(client: &Client, ns: &str, name: &str, reason: &str) -> String {
    let events = Api::<CoreEvent>::namespaced(client.clone(), ns);
    wait::until(&format!("Event {reason} for {name}"), CONVERGE, || async {
        match events.list(&ListParams::default()).await {
            Ok(list) => match list.items.iter().find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.involved_object.kind.as_deref() == Some("DeviceIdentity")
                    && e.involved_object.name.as_deref() == Some(name)
            }) {
                Some(e) => Check::Done(e.message.clone().unwrap_or_default()),
                None => Check::NotYet(format!("{} events, none matching", list.items.len())),
            },
            Err(e) => Check::NotYet(e.to_string()),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The serials listed in the cluster's revoked.json.
pub async fn revoked_serials(client: &Client, ns: &str) -> Vec<String> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(&Names::new("quickstart").config())
        .await
        .expect("get config ConfigMap");
    let text = cm
        .and_then(|c| c.data)
        .and_then(|mut d| d.remove("revoked.json"))
        .unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    value["serials"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(normalize_serial))
        .collect()
}

pub async fn wait_revoked(client: &Client, ns: &str, serial: &str, present: bool) {
    let want = normalize_serial(serial);
    wait::until(
        &format!(
            "serial {want} {} revoked.json",
            if present { "in" } else { "out of" }
        ),
        CONVERGE,
        || async {
            let serials = revoked_serials(client, ns).await;
            if serials.contains(&want) == present {
                Check::Done(())
            } else {
                Check::NotYet(format!("revoked.json serials: {serials:?}"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Counts requests that write (anything but GET) on their way to the API server.
#[derive(Clone)]
pub struct CountWrites(Arc<AtomicUsize>);

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
pub struct Counted<S> {
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

pub async fn counting_client(bed: &e2e::TestBed) -> (Client, Arc<AtomicUsize>) {
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
