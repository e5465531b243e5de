//! Bridges to remote brokers (`bridges.json`, contract `contract::bridge`), run inside the
//! broker process: one [`worker`] per bridge holds an MQTT 5 client to the remote with a
//! persistent session.
//!
//! - `out` routes: a hook on `MessagePublishCheckAcl` at the lowest priority ([`Tap`]) sees
//!   every PUBLISH the ACL allowed on this node (the enforcer stops the chain on a deny), maps
//!   its topic and appends it to the bridge's bounded [`buffer::Buffer`]; the worker publishes
//!   it to the remote (QoS 1) and drops it from the buffer only on PUBACK.
//! - `in` routes: the worker subscribes on the remote (MQTT 5 no-local) and injects each
//!   message into the local cluster with the mapped topic, acknowledging it to the remote only
//!   after the injection.
//! - Loop prevention: forwarded and injected messages carry the user property
//!   `mqtt-bridge: <cluster>/<bridge>`; the tap never forwards a message carrying one, and a
//!   worker ignores remote messages carrying its own marker.
//!
//! Hot reload: [`Bridges::apply`] starts, restarts (changed config) and stops workers; a
//! bridge that keeps its name keeps its buffer and counters.

pub mod buffer;
pub mod worker;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use contract::bridge::{BridgeConfig, BridgeSet, Mapping, RouteDirection, MARKER_PROPERTY};
use contract::metrics::broker as m;
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};
use rmqtt::types::Publish;
use tokio::task::JoinHandle;

use buffer::Buffer;

/// Counters and state of one bridge, exported as `mqtt_bridge_*{bridge}`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connected to the remote.
    pub connected: AtomicBool,
    /// Messages acknowledged by the remote (out) or injected locally (in).
    pub forwarded: AtomicU64,
    /// Messages the remote refused (PUBACK reason code ≥ 0x80) or that could not be injected.
    pub failed: AtomicU64,
    /// Messages dropped by the buffer (overflow or age).
    pub dropped: AtomicU64,
    /// Remote messages ignored because they carry this bridge's own marker.
    pub loops_blocked: AtomicU64,
    /// The last connection or forwarding error.
    pub last_error: Mutex<Option<String>>,
}

impl Stats {
    fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Records an error (kept until the next one).
    pub fn set_error(&self, e: String) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(e);
        }
    }

    fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|s| s.clone())
    }
}

/// What the tap and the worker of one bridge share.
pub struct Shared {
    /// Bridge name.
    pub name: String,
    /// `<cluster>/<bridge>`, the marker value.
    pub marker: String,
    /// Messages waiting for the remote.
    pub buffer: Mutex<Buffer>,
    /// Wakes the worker when the buffer grows.
    pub notify: tokio::sync::Notify,
    /// Counters.
    pub stats: Stats,
}

impl Shared {
    fn new(cluster: &str, config: &BridgeConfig) -> Self {
        Self {
            name: config.name.clone(),
            marker: format!("{cluster}/{}", config.name),
            buffer: Mutex::new(Buffer::new(
                config.buffer.max_messages,
                Duration::from_secs(config.buffer.max_age_secs),
            )),
            notify: tokio::sync::Notify::new(),
            stats: Stats::default(),
        }
    }

    fn enqueue(&self, topic: String, publish: &Publish, qos: u8, retain: bool) {
        let dropped = match self.buffer.lock() {
            Ok(mut b) => b.push(topic, publish.payload.clone(), qos, retain, Instant::now()),
            Err(_) => 1,
        };
        Stats::add(&self.stats.dropped, dropped);
        self.notify.notify_one();
    }
}

/// The out routes of one bridge, as the tap uses them.
struct OutBridge {
    shared: Arc<Shared>,
    routes: Vec<(Mapping, u8, bool)>,
}

struct Running {
    config: BridgeConfig,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

/// Why a bridge set was not applied.
#[derive(Debug, thiserror::Error)]
pub enum BridgeApplyError {
    #[error(transparent)]
    Invalid(#[from] contract::bridge::BridgeError),
}

/// All bridges of this node.
pub struct Bridges {
    scx: ServerContext,
    cluster: String,
    node_id: u64,
    /// More than one node: `in` routes use a remote shared subscription so each remote message
    /// enters the cluster once.
    clustered: bool,
    running: tokio::sync::Mutex<BTreeMap<String, Running>>,
    out: ArcSwap<Vec<OutBridge>>,
    all: ArcSwap<Vec<Arc<Shared>>>,
    revision: ArcSwap<String>,
}

impl Bridges {
    /// No bridges yet; call [`Bridges::register_tap`] once and [`Bridges::apply`] per set.
    pub fn new(scx: ServerContext, cluster: &str, node_id: u64, clustered: bool) -> Arc<Self> {
        // rumqttc builds its rustls config from the process default provider; several are
        // linked into this binary, so choose one.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        Arc::new(Self {
            scx,
            cluster: cluster.to_string(),
            node_id,
            clustered,
            running: tokio::sync::Mutex::new(BTreeMap::new()),
            out: ArcSwap::from_pointee(Vec::new()),
            all: ArcSwap::from_pointee(Vec::new()),
            revision: ArcSwap::from_pointee(String::new()),
        })
    }

    /// Registers the out-route tap after the enforcer (lowest priority).
    pub async fn register_tap(self: &Arc<Self>) {
        let register = self.scx.extends.hook_mgr().register();
        register
            .add_priority(
                Type::MessagePublishCheckAcl,
                0,
                Box::new(Tap {
                    bridges: self.clone(),
                }),
            )
            .await;
        register.start().await;
    }

    /// The revision of the set in force ("" before any).
    pub fn revision(&self) -> String {
        self.revision.load().as_ref().clone()
    }

    /// Applies `bytes` (`bridges.json`); returns the revision now in force.
    pub async fn apply_bytes(&self, bytes: &[u8]) -> Result<String, BridgeApplyError> {
        let set = contract::bridge::load_bridges(bytes)?;
        self.apply(set).await;
        Ok(self.revision())
    }

    /// Starts new bridges, restarts changed ones and stops removed ones.
    pub async fn apply(&self, set: BridgeSet) {
        let mut running = self.running.lock().await;
        let mut next = BTreeMap::new();
        for config in set.bridges {
            let name = config.name.clone();
            match running.remove(&name) {
                Some(r) if r.config == config => {
                    next.insert(name, r);
                }
                previous => {
                    let shared = match previous {
                        Some(r) => {
                            r.task.abort();
                            let _ = r.task.await;
                            let dropped = r.shared.buffer.lock().map_or(0, |mut b| {
                                b.set_limits(
                                    config.buffer.max_messages,
                                    Duration::from_secs(config.buffer.max_age_secs),
                                    Instant::now(),
                                )
                            });
                            Stats::add(&r.shared.stats.dropped, dropped);
                            r.shared.stats.connected.store(false, Ordering::Release);
                            r.shared
                        }
                        None => Arc::new(Shared::new(&self.cluster, &config)),
                    };
                    log::info!(
                        "bridge {name}: starting (remote {}:{})",
                        config.remote.host,
                        config.remote.port
                    );
                    let task = tokio::spawn(worker::run(worker::Worker {
                        scx: self.scx.clone(),
                        node_id: self.node_id,
                        share_group: self
                            .clustered
                            .then(|| format!("{}.{}", self.cluster, config.name)),
                        config: config.clone(),
                        shared: shared.clone(),
                    }));
                    next.insert(
                        name,
                        Running {
                            config,
                            shared,
                            task,
                        },
                    );
                }
            }
        }
        for (name, r) in std::mem::take(&mut *running) {
            log::info!("bridge {name}: removed");
            r.task.abort();
            let _ = r.task.await;
        }
        let out: Vec<OutBridge> = next
            .values()
            .map(|r| OutBridge {
                shared: r.shared.clone(),
                routes: r
                    .config
                    .routes
                    .iter()
                    .filter(|route| route.direction == RouteDirection::Out)
                    .filter_map(|route| {
                        Mapping::new(&route.local, &route.remote)
                            .ok()
                            .map(|mp| (mp, route.qos, route.retain))
                    })
                    .collect(),
            })
            .filter(|b| !b.routes.is_empty())
            .collect();
        self.out.store(Arc::new(out));
        self.all
            .store(Arc::new(next.values().map(|r| r.shared.clone()).collect()));
        *running = next;
        self.revision.store(Arc::new(set.revision));
    }

    /// Out-route tap: queue `publish` on every bridge with a matching out route (first
    /// matching route per bridge).
    fn offer(&self, publish: &Publish) {
        let out = self.out.load();
        if out.is_empty() || carries_marker(publish) {
            return;
        }
        for bridge in out.iter() {
            for (mapping, qos, retain) in &bridge.routes {
                if let Some(topic) = mapping.map(&publish.topic) {
                    bridge
                        .shared
                        .enqueue(topic, publish, *qos, *retain && publish.retain);
                    break;
                }
            }
        }
    }

    /// `{name: {connected, lastError, forwarded, failed, dropped, buffered}}` for `/readyz`.
    pub fn status(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for s in self.all.load().iter() {
            let buffered = s.buffer.lock().map_or(0, |b| b.len());
            map.insert(
                s.name.clone(),
                serde_json::json!({
                    "connected": s.stats.connected.load(Ordering::Acquire),
                    "lastError": s.stats.last_error(),
                    "forwarded": s.stats.forwarded.load(Ordering::Relaxed),
                    "failed": s.stats.failed.load(Ordering::Relaxed),
                    "dropped": s.stats.dropped.load(Ordering::Relaxed),
                    "buffered": buffered,
                }),
            );
        }
        serde_json::Value::Object(map)
    }

    /// Appends the `mqtt_bridge_*` metrics (one series per bridge).
    pub fn render_metrics(&self, out: &mut String) {
        let all = self.all.load();
        let series = |out: &mut String,
                      metric: &contract::metrics::Metric,
                      value: &dyn Fn(&Shared) -> u64| {
            let _ = writeln!(
                out,
                "# HELP {} {}\n# TYPE {} {}",
                metric.name, metric.help, metric.name, metric.kind
            );
            for s in all.iter() {
                let _ = writeln!(out, "{}{{bridge=\"{}\"}} {}", metric.name, s.name, value(s));
            }
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        series(out, &m::BRIDGE_CONNECTED, &|s| {
            u64::from(s.stats.connected.load(Ordering::Acquire))
        });
        series(out, &m::BRIDGE_FORWARDED, &|s| load(&s.stats.forwarded));
        series(out, &m::BRIDGE_FAILED, &|s| load(&s.stats.failed));
        series(out, &m::BRIDGE_DROPPED, &|s| load(&s.stats.dropped));
        series(out, &m::BRIDGE_BUFFER, &|s| {
            s.buffer.lock().map_or(0, |b| b.len() as u64)
        });
        series(out, &m::BRIDGE_BUFFER_MAX, &|s| {
            s.buffer.lock().map_or(0, |b| b.max_messages() as u64)
        });
        let _ = writeln!(
            out,
            "# HELP mqtt_bridge_loops_blocked_total Remote messages ignored because they carry this bridge's own marker.\n# TYPE mqtt_bridge_loops_blocked_total counter"
        );
        for s in all.iter() {
            let _ = writeln!(
                out,
                "mqtt_bridge_loops_blocked_total{{bridge=\"{}\"}} {}",
                s.name,
                load(&s.stats.loops_blocked)
            );
        }
    }
}

/// Whether a message already went through a bridge.
fn carries_marker(publish: &Publish) -> bool {
    publish.properties.as_ref().is_some_and(|p| {
        p.user_properties
            .iter()
            .any(|(k, _)| &**k == MARKER_PROPERTY)
    })
}

/// The out-route hook (see the module docs).
struct Tap {
    bridges: Arc<Bridges>,
}

#[async_trait]
impl Handler for Tap {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        if let Parameter::MessagePublishCheckAcl(_, publish) = param {
            self.bridges.offer(publish);
        }
        (true, acc)
    }
}
