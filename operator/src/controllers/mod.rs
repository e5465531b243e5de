//! The controllers: thin IO shells around the pure modules. One module per kind, each a
//! pipeline **dereference → validate → build → apply → update status** (STYLE.md).
//!
//! [`run`] starts the MqttCluster, DeviceIdentity and TopicPolicy controllers plus the
//! `/healthz` + `/metrics` HTTP server ([`telemetry`]).

pub mod apply;
pub mod bridge;
pub mod bridge_state;
pub mod cluster;
pub mod device;
pub mod election;
pub mod policy;
pub mod telemetry;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;

use self::apply::ApplyError;
use self::cluster::build::BuildError;
use self::telemetry::Metrics;

/// A reconcile failed (transient: requeued with bounded backoff). Invalid specs are not errors:
/// they end in a condition and an Event.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading from the API server failed.
    #[error("{what}: {source}")]
    Read {
        /// What was read.
        what: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A paginated list did not end within its page bound.
    #[error("{what}: more than {pages} pages")]
    ListTooLong {
        /// What was listed.
        what: String,
        /// The bound.
        pages: usize,
    },
    /// Writing a child or status failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The desired state could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A device certificate could not be issued.
    #[error(transparent)]
    Device(#[from] device::build::BuildError),
    /// The object lacks namespace or name (never from a watch).
    #[error("object without {0}")]
    MissingKey(&'static str),
}

impl Error {
    /// Low-cardinality label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Read { .. } | Error::ListTooLong { .. } => "read",
            Error::Apply(_) => "apply",
            Error::Build(b) => b.category(),
            Error::Device(d) => d.category(),
            Error::MissingKey(_) => "object",
        }
    }
}

/// Shared state of every controller.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per object (kind/namespace/name), for the backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The one namespace the controllers of this context watch (`None`: all namespaces).
    namespace: Option<String>,
}

impl Context {
    /// A context for `client`.
    pub fn new(client: Client, metrics: Arc<Metrics>) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: crate::render::names::FIELD_MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        Self {
            client,
            recorder,
            metrics,
            failures: Mutex::new(HashMap::new()),
            namespace: None,
        }
    }

    /// The same context with its controllers watching only `namespace`.
    pub fn in_namespace(client: Client, metrics: Arc<Metrics>, namespace: &str) -> Self {
        Self {
            namespace: Some(namespace.to_string()),
            ..Self::new(client, metrics)
        }
    }

    /// The Api the controllers watch `K` on: the context's namespace, or all namespaces.
    pub fn watched<K>(&self) -> kube::Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => kube::Api::namespaced(self.client.clone(), ns),
            None => kube::Api::all(self.client.clone()),
        }
    }

    /// Records a success: the next failure starts the backoff from the beginning.
    pub fn succeeded(&self, key: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(key);
        }
    }

    /// Records a failure and returns how long to wait: 1 s doubling to at most 5 min.
    pub fn failed(&self, key: &str) -> Duration {
        let n = self
            .failures
            .lock()
            .map(|mut f| {
                let n = f.entry(key.to_string()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            })
            .unwrap_or(1);
        backoff(n)
    }

    /// Publishes a Warning Event `reason` with `note` about `reference`; failures are logged
    /// (an Event is best effort).
    pub async fn warn(&self, reference: &ObjectReference, reason: &str, note: String) {
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, reference).await {
            tracing::warn!(error = %e, "publishing an Event failed");
        }
    }
}

/// Backoff after `n` consecutive failures: `2^(n-1)` seconds, capped at 300 s.
pub fn backoff(n: u32) -> Duration {
    let secs = 1u64 << n.saturating_sub(1).min(9);
    Duration::from_secs(secs.min(300))
}

/// The error policy shared by all controllers: log, count, bounded exponential backoff.
pub fn error_policy(kind: &'static str, key: &str, error: &Error, ctx: &Context) -> Action {
    ctx.metrics.error(kind, error.category());
    let wait = ctx.failed(key);
    tracing::warn!(kind, object = key, error = %error, retry_in_s = wait.as_secs(), "reconcile failed");
    Action::requeue(wait)
}

/// `Kind/namespace/name`: the key of an object in backoff bookkeeping and logs.
fn object_key<K: kube::ResourceExt>(kind: &str, obj: &K) -> String {
    format!(
        "{kind}/{}/{}",
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// Runs one reconcile inside a `reconcile` span carrying kind/namespace/name, and resets the
/// object's backoff when it succeeds. Every controller's reconcile goes through this.
pub async fn traced<K, Fut>(
    kind: &'static str,
    obj: Arc<K>,
    ctx: Arc<Context>,
    reconcile: impl FnOnce(Arc<K>, Arc<Context>) -> Fut,
) -> Result<Action, Error>
where
    K: kube::ResourceExt,
    Fut: std::future::Future<Output = Result<Action, Error>>,
{
    use tracing::Instrument;
    let key = object_key(kind, obj.as_ref());
    let span = tracing::info_span!(
        "reconcile",
        kind,
        namespace = obj.namespace().unwrap_or_default(),
        name = obj.name_any()
    );
    let result = reconcile(obj, ctx.clone()).instrument(span).await;
    if result.is_ok() {
        ctx.succeeded(&key);
    }
    result
}

/// A watched object as the controllers receive it: decoded, or the error and metadata of an
/// object that does not decode (e.g. an int32 field above 2^31, which the API server accepts).
/// Watching through this guard keeps one malformed object from failing the list for all others.
pub type Guarded<K> = kube::core::DeserializeGuard<K>;

/// The decoded object, if it decoded (for `watches` mappers).
pub fn decoded<K>(guarded: Guarded<K>) -> Option<K> {
    guarded.0.ok()
}

/// The same reference for the guarded kind (for `watches` mappers).
pub fn guarded_ref<K>(
    r: kube::runtime::reflector::ObjectRef<K>,
) -> kube::runtime::reflector::ObjectRef<Guarded<K>>
where
    K: kube::Resource<DynamicType = ()>,
{
    let named = kube::runtime::reflector::ObjectRef::new(&r.name);
    match &r.namespace {
        Some(ns) => named.within(ns),
        None => named,
    }
}

/// [`traced`] for a guarded object: a decoded object is reconciled by `reconcile`; an object
/// that does not decode gets a Warning Event `Undecodable` naming the error (best effort) and
/// waits for a change.
pub async fn traced_guarded<K, Fut>(
    kind: &'static str,
    obj: Arc<Guarded<K>>,
    ctx: Arc<Context>,
    reconcile: impl FnOnce(Arc<K>, Arc<Context>) -> Fut,
) -> Result<Action, Error>
where
    K: kube::Resource<DynamicType = ()> + Clone,
    Fut: std::future::Future<Output = Result<Action, Error>>,
{
    match &obj.0 {
        Ok(k) => traced(kind, Arc::new(k.clone()), ctx, reconcile).await,
        Err(invalid) => {
            let m = &invalid.metadata;
            tracing::warn!(
                kind,
                namespace = m.namespace.as_deref().unwrap_or_default(),
                name = m.name.as_deref().unwrap_or_default(),
                error = %invalid.error,
                "object does not decode; skipped until it changes"
            );
            let reference = ObjectReference {
                api_version: Some(K::api_version(&()).into_owned()),
                kind: Some(K::kind(&()).into_owned()),
                name: m.name.clone(),
                namespace: m.namespace.clone(),
                uid: m.uid.clone(),
                resource_version: m.resource_version.clone(),
                ..ObjectReference::default()
            };
            ctx.warn(&reference, "Undecodable", invalid.error.clone())
                .await;
            Ok(Action::await_change())
        }
    }
}

/// [`error_policy`] for an object, as the controllers' error callback.
pub fn on_error<K: kube::ResourceExt>(
    kind: &'static str,
    obj: &K,
    error: &Error,
    ctx: &Context,
) -> Action {
    error_policy(kind, &object_key(kind, obj), error, ctx)
}

/// The reconcile of a kind whose controller only validates and reports: write the status
/// computed from the validation `problems` (skipped when unchanged) and, when the status changed
/// and the spec is invalid, publish an `Invalid` Event. Used by DeviceIdentity and TopicPolicy.
pub async fn report_status<K, S>(
    kind: &'static str,
    obj: &K,
    ctx: &Context,
    current: Option<&S>,
    problems: &[String],
    status: &S,
) -> Result<Action, Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
    S: serde::Serialize + PartialEq,
{
    let _timer = ctx.metrics.reconcile(kind);
    let ns = obj
        .meta()
        .namespace
        .as_deref()
        .ok_or(Error::MissingKey("namespace"))?;
    let name = obj.meta().name.as_deref().unwrap_or_default();
    let api = kube::Api::<K>::namespaced(ctx.client.clone(), ns);
    let written = apply::apply_status(&api, name, current, status).await?;
    if written && !problems.is_empty() {
        let reference = obj.object_ref(&K::DynamicType::default());
        ctx.warn(&reference, "Invalid", problems.join("; ")).await;
    }
    Ok(Action::await_change())
}

/// Options of `mqtt-operator run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Address of the `/healthz` and `/metrics` server.
    pub listen: SocketAddr,
    /// Namespaces to watch; empty: all namespaces.
    pub watch_namespaces: Vec<String>,
    /// Run the controllers only while holding this Lease (`None`: always).
    pub leader_election: Option<election::LeaderElection>,
}

impl RunOptions {
    /// Every namespace, no leader election (one replica, or tests), serving on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            watch_namespaces: Vec::new(),
            leader_election: None,
        }
    }
}

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The HTTP server could not start.
    #[error("serving /healthz and /metrics on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The IO error.
        source: std::io::Error,
    },
    /// This replica lost the leader-election Lease while running the controllers.
    #[error("lost leadership: {0}")]
    LostLease(#[from] election::ElectionError),
}

/// Runs the controllers of every kind, once per watched namespace (or once for all), until one
/// stops (on SIGTERM/Ctrl-C they all do).
async fn controllers(client: Client, metrics: Arc<Metrics>, namespaces: &[String]) {
    let contexts: Vec<Arc<Context>> = if namespaces.is_empty() {
        vec![Arc::new(Context::new(client, metrics))]
    } else {
        namespaces
            .iter()
            .map(|ns| Arc::new(Context::in_namespace(client.clone(), metrics.clone(), ns)))
            .collect()
    };
    let mut all: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> = Vec::new();
    for ctx in contexts {
        all.push(Box::pin(cluster::run(ctx.clone())));
        all.push(Box::pin(device::run(ctx.clone())));
        all.push(Box::pin(bridge::run(ctx.clone())));
        all.push(Box::pin(policy::run(ctx)));
    }
    futures::future::select_all(all).await;
}

/// How long the controllers get after SIGTERM/Ctrl-C to finish in-flight reconciles. kube-runtime's
/// graceful shutdown can wait for ever when the signal arrives before a controller's caches are
/// ready (its runner is held until the store is ready, and the stopped watch never readies it),
/// so the stop is bounded here.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Resolves on SIGTERM or Ctrl-C (never, when the handler cannot be installed).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// [`controllers`], stopped at the latest [`SHUTDOWN_GRACE`] after a shutdown signal.
async fn controllers_until_stopped(client: Client, metrics: Arc<Metrics>, namespaces: &[String]) {
    let deadline = async {
        shutdown_signal().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        tracing::warn!(
            grace_s = SHUTDOWN_GRACE.as_secs(),
            "controllers still busy after the shutdown grace; stopping anyway"
        );
    };
    tokio::select! {
        () = controllers(client, metrics, namespaces) => {}
        () = deadline => {}
    }
}

/// Runs the HTTP server and, while this replica leads (always, without leader election), every
/// controller, until they stop. Until elected, `/healthz` answers and nothing is written but
/// the Lease. Losing the Lease returns [`RunError::LostLease`] (the process should exit non-zero
/// and be restarted, as controller-runtime does); a clean stop releases the Lease.
pub async fn run(client: Client, options: RunOptions) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new());
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: options.listen,
            source,
        })?;
    tracing::info!(addr = %options.listen, "serving /healthz and /metrics");
    let serve = telemetry::serve(listener, metrics.clone());
    let work = async {
        let Some(config) = options.leader_election.clone() else {
            metrics.set_leader(true);
            controllers_until_stopped(client, metrics.clone(), &options.watch_namespaces).await;
            return Ok(());
        };
        let mut elector = election::Elector::new(client.clone(), config);
        // A standby stops on the signal too (it holds nothing to release).
        tokio::select! {
            () = elector.acquire() => {}
            () = shutdown_signal() => return Ok(()),
        }
        metrics.set_leader(true);
        let outcome = tokio::select! {
            () = controllers_until_stopped(client, metrics.clone(), &options.watch_namespaces) => {
                elector.release().await;
                Ok(())
            }
            lost = elector.keep() => Err(RunError::LostLease(lost)),
        };
        metrics.set_leader(false);
        outcome
    };
    tokio::select! {
        r = serve => r.map_err(|source| RunError::Listen { addr: options.listen, source }),
        r = work => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_bounded() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(50), Duration::from_secs(300));
    }
}
