//! Embedding of the rmqtt engine: server context, plugins (raft cluster, retainer), our hooks,
//! client listeners, trust-bundle swaps and revocation disconnects.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use contract::config::{files, BrokerConfig};
use rmqtt::context::ServerContext;
use rmqtt::hook::Type;
use rmqtt::net::{Builder, Listener};
use rmqtt::server::MqttServer;
use rmqtt::types::ListenerId;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::enforcement::Enforcer;
use crate::live::{Counters, Live};

/// Listener ids (rmqtt keys listener configs by these).
const LID_MQTTS: ListenerId = 1;
const LID_WSS: ListenerId = 2;
const LID_MQTT: ListenerId = 3;

/// Plugin names as registered with the engine.
const PLUGIN_CLUSTER: &str = "rmqtt-cluster-raft";
const PLUGIN_RETAINER: &str = "rmqtt-retainer";

/// Errors while starting or reconfiguring the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid bind address {0:?}")]
    Bind(String),
    #[error("starting plugin {plugin}: {source}")]
    Plugin {
        plugin: &'static str,
        source: anyhow::Error,
    },
    #[error("binding listener {name} on {addr}: {source}")]
    Listener {
        name: &'static str,
        addr: SocketAddr,
        source: anyhow::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The running engine: what reloads need to reach.
pub struct Engine {
    /// The rmqtt server context.
    pub scx: ServerContext,
    config: BrokerConfig,
    config_dir: PathBuf,
    runtime_dir: PathBuf,
    tls_servers: Mutex<Vec<(ListenerId, JoinHandle<()>)>>,
    trust_generation: std::sync::atomic::AtomicU64,
}

/// The raft-cluster plugin's TOML, rendered from our contract types.
pub fn cluster_plugin_toml(config: &BrokerConfig) -> String {
    let peer_list = |grpc: bool| {
        config
            .cluster
            .peers
            .iter()
            .map(|p| {
                let (raft, grpc_port) = config.cluster.ports_of(p.id);
                let port = if grpc { grpc_port } else { raft };
                format!("\"{}@{}:{}\"", p.id, p.host, port)
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (raft_port, _) = config.cluster.ports_of(config.node.id);
    // The lowest id bootstraps the cluster when no leader exists yet; every other node (and
    // that one after a restart) joins the existing leader. This avoids split brain when all
    // pods start at once.
    let bootstrap = config
        .cluster
        .peers
        .iter()
        .map(|p| p.id)
        .min()
        .unwrap_or(config.node.id);
    format!(
        "node_grpc_addrs = [{grpc}]\n\
         raft_peer_addrs = [{raft}]\n\
         leader_id = {bootstrap}\n\
         laddr = \"{bind}:{raft_port}\"\n\
         worker_threads = 2\n\
         [health]\n\
         exit_on_node_unavailable = false\n\
         [raft]\n\
         grpc_reuseaddr = true\n\
         grpc_reuseport = false\n",
        grpc = peer_list(true),
        raft = peer_list(false),
        bind = config.listeners.bind,
    )
}

/// The voter set size from the raft plugin's attributes (`raft_status.peers`, keyed by id; this
/// node counted whether or not it lists itself). `None` when the status is absent.
pub fn voters_from_attrs(attrs: &serde_json::Value, own_id: u64) -> Option<u64> {
    let peers = attrs.get("raft_status")?.get("peers")?.as_object()?;
    let mut ids: std::collections::BTreeSet<u64> =
        peers.keys().filter_map(|k| k.parse().ok()).collect();
    ids.insert(own_id);
    u64::try_from(ids.len()).ok()
}

async fn raft_voters(scx: &ServerContext, own_id: u64) -> Option<u64> {
    let info = {
        let entry = scx.plugins.get(PLUGIN_CLUSTER)?;
        entry.to_info(PLUGIN_CLUSTER).await.ok()?
    };
    let attrs: serde_json::Value = serde_json::from_slice(&info.attrs).ok()?;
    voters_from_attrs(&attrs, own_id)
}

fn bind_ip(config: &BrokerConfig) -> Result<IpAddr, EngineError> {
    config
        .listeners
        .bind
        .parse()
        .map_err(|_| EngineError::Bind(config.listeners.bind.clone()))
}

impl Engine {
    /// Builds the server context, starts the inter-node gRPC server and the plugins (joining
    /// the raft cluster: this returns once the node is part of it), and registers our hooks.
    pub async fn start(
        config: BrokerConfig,
        config_dir: PathBuf,
        runtime_dir: PathBuf,
        live: Arc<Live>,
    ) -> Result<Arc<Engine>, EngineError> {
        let ip = bind_ip(&config)?;
        // rmqtt's "busy" check refuses every CONNECT (ServerUnavailable) while the *host's*
        // 1-minute CPU load is above 90 %: in a pod that is the node's load, not ours, and on a
        // small shared machine it refuses clients at random. Admission is `maxConnections` and
        // the pod's CPU limits instead.
        let mut builder = ServerContext::new()
            .node_id(config.node.id)
            .busy_check_enable(false)
            .mqtt_max_sessions(config.limits.max_connections as isize);
        // A single node runs without the raft plugin: rmqtt's raft bootstrap needs at least one
        // peer to probe (it panics on an empty peer list).
        let clustered = config.cluster.peers.len() > 1;
        if clustered {
            builder = builder.plugins_config_map_add(PLUGIN_CLUSTER, cluster_plugin_toml(&config));
        }
        if config.limits.retain_available {
            builder =
                builder.plugins_config_map_add(PLUGIN_RETAINER, "max_retained_messages = 0\n");
        }
        let scx = builder.build().await;
        *scx.extends.shared_subscription_mut().await =
            Box::new(crate::shared_subscription::RoundRobin::default());

        if clustered {
            let (_, grpc_port) = config.cluster.ports_of(config.node.id);
            scx.node
                .start_grpc_server(scx.clone(), SocketAddr::new(ip, grpc_port), true, false);
        }

        let enforcer = || {
            Box::new(Enforcer::new(
                live.clone(),
                config.listeners.mqtt.map(|_| LID_MQTT),
                config.listeners.allow_anonymous,
            ))
        };
        let register = scx.extends.hook_mgr().register();
        for typ in [
            Type::ClientAuthenticate,
            Type::ClientSubscribeCheckAcl,
            Type::MessagePublishCheckAcl,
        ] {
            // Highest priority: our decision is final.
            register.add_priority(typ, u32::MAX, enforcer()).await;
        }
        register.start().await;

        if config.limits.retain_available {
            rmqtt_retainer::register_named(&scx, PLUGIN_RETAINER, true, false)
                .await
                .map_err(|source| EngineError::Plugin {
                    plugin: PLUGIN_RETAINER,
                    source,
                })?;
        }
        if clustered {
            // A node that led before its restart is still named leader by its peers until they
            // elect another one; joining then means joining itself, which fails (exit 255).
            let others: Vec<String> = config
                .cluster
                .peers
                .iter()
                .filter(|p| p.id != config.node.id)
                .map(|p| format!("{}:{}", p.host, config.cluster.ports_of(p.id).0))
                .collect();
            let waited = crate::raft_admin::wait_until_not_named_leader(
                config.node.id,
                &others,
                Duration::from_secs(1),
                Duration::from_secs(15),
            )
            .await;
            if waited >= Duration::from_millis(300) {
                log::info!(
                    "waited {} ms for the peers to elect another raft leader",
                    waited.as_millis()
                );
            }
            rmqtt_cluster_raft::register_named(&scx, PLUGIN_CLUSTER, true, true)
                .await
                .map_err(|source| EngineError::Plugin {
                    plugin: PLUGIN_CLUSTER,
                    source,
                })?;
        }
        live.cluster_joined.store(true, Ordering::Release);

        Ok(Arc::new(Engine {
            scx,
            config,
            config_dir,
            runtime_dir,
            tls_servers: Mutex::new(Vec::new()),
            trust_generation: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    fn listener_builder(&self, name: &'static str, port: u16) -> Result<Builder, EngineError> {
        let limits = &self.config.limits;
        let ip = bind_ip(&self.config)?;
        Ok(Builder::new()
            .name(name)
            .laddr(SocketAddr::new(ip, port))
            .reuseaddr(Some(true))
            .reuseport(Some(true))
            .max_connections(limits.max_connections as usize)
            .max_packet_size(limits.max_packet_size)
            .max_inflight(NonZeroU16::new(limits.max_inflight).unwrap_or(NonZeroU16::MIN))
            .max_mqueue_len(limits.max_queued_messages as usize)
            .max_session_expiry_interval(Duration::from_secs(u64::from(limits.session_expiry_secs)))
            .message_expiry_interval(Duration::from_secs(u64::from(limits.message_expiry_secs)))
            .max_topic_levels(usize::from(limits.max_topic_levels))
            .allow_anonymous(false))
    }

    fn tls_listener(
        &self,
        name: &'static str,
        port: u16,
        clients_ca: &Path,
        ws: bool,
    ) -> Result<Listener, EngineError> {
        let cert = self.config_dir.join(files::SERVER_CERT);
        let key = self.config_dir.join(files::SERVER_KEY);
        let builder = self
            .listener_builder(name, port)?
            .tls_cross_certificate(true)
            .tls_cert(Some(cert.to_string_lossy().into_owned()))
            .tls_key(Some(key.to_string_lossy().into_owned()))
            .tls_client_ca_certs(Some(clients_ca.to_string_lossy().into_owned()))
            .cert_cn_as_username(true)
            .collect_cert_info(true);
        let addr = builder.laddr;
        let err = |source| EngineError::Listener { name, addr, source };
        let listener = builder.bind().map_err(err)?;
        if ws { listener.wss() } else { listener.tls() }.map_err(err)
    }

    /// Writes a trust bundle to the runtime directory (the engine reads CA files by path).
    fn write_trust_file(&self, pem: &str) -> Result<PathBuf, EngineError> {
        let generation = self.trust_generation.fetch_add(1, Ordering::Relaxed);
        let path = self
            .runtime_dir
            .join(format!("clients-ca-{generation}.pem"));
        std::fs::write(&path, pem).map_err(|source| EngineError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    fn tls_listeners(
        &self,
        clients_ca_pem: &str,
    ) -> Result<Vec<(ListenerId, Listener)>, EngineError> {
        let ca = self.write_trust_file(clients_ca_pem)?;
        let mut out = vec![(
            LID_MQTTS,
            self.tls_listener("mqtts", self.config.listeners.mqtts.port, &ca, false)?,
        )];
        if let Some(wss) = self.config.listeners.wss {
            out.push((LID_WSS, self.tls_listener("wss", wss.port, &ca, true)?));
        }
        Ok(out)
    }

    fn spawn_server(&self, lid: ListenerId, listener: Listener) -> JoinHandle<()> {
        self.scx.listen_cfgs.remove(&lid);
        let server = MqttServer::new(self.scx.clone())
            .listener_by_id(listener, lid)
            .build();
        tokio::spawn(async move {
            if let Err(e) = server.run().await {
                log::error!("listener {lid} stopped: {e}");
            }
        })
    }

    /// Binds and starts every client listener.
    pub async fn start_listeners(
        &self,
        clients_ca_pem: &str,
        live: &Live,
    ) -> Result<(), EngineError> {
        let tls = self.tls_listeners(clients_ca_pem)?;
        let mut servers = self.tls_servers.lock().await;
        for (lid, listener) in tls {
            servers.push((lid, self.spawn_server(lid, listener)));
        }
        if let Some(plain) = self.config.listeners.mqtt {
            let builder = self.listener_builder("mqtt", plain.port)?;
            let addr = builder.laddr;
            let listener =
                builder
                    .bind()
                    .and_then(|l| l.tcp())
                    .map_err(|source| EngineError::Listener {
                        name: "mqtt",
                        addr,
                        source,
                    })?;
            // The plain listener never changes; its task runs for the life of the process.
            drop(self.spawn_server(LID_MQTT, listener));
        }
        live.listeners_up.store(true, Ordering::Release);
        Ok(())
    }

    /// Swaps the client trust bundle without dropping connections: new TLS listeners are bound
    /// on the same ports (SO_REUSEPORT) with the new bundle, then the old accept loops stop.
    /// Established connections are separate tasks and are not touched. A connection that sits
    /// in the old socket's accept queue at the instant it closes is reset (the client retries).
    pub async fn reload_trust(&self, clients_ca_pem: &str) -> Result<(), EngineError> {
        let fresh = self.tls_listeners(clients_ca_pem)?;
        let mut servers = self.tls_servers.lock().await;
        let old = std::mem::take(&mut *servers);
        for (lid, listener) in fresh {
            servers.push((lid, self.spawn_server(lid, listener)));
        }
        for (_, handle) in old {
            handle.abort();
            // Wait until the old accept loop is gone (its socket closed), so that once this
            // returns every new connection uses the new bundle.
            let _ = handle.await;
        }
        Ok(())
    }

    /// Disconnects every local session whose certificate serial is in `serials` (canonical).
    /// Returns how many were disconnected.
    pub async fn disconnect_serials(
        &self,
        serials: &std::collections::HashSet<String>,
        live: &Live,
    ) -> usize {
        if serials.is_empty() {
            return 0;
        }
        let shared = self.scx.extends.shared().await;
        let mut victims = Vec::new();
        for entry in shared.iter() {
            let Some(session) = entry.session() else {
                continue;
            };
            let Ok(ci) = session.connect_info().await else {
                continue;
            };
            let serial = ci
                .cert()
                .and_then(|c| c.serial.as_deref())
                .and_then(contract::config::normalize_serial);
            if serial.is_some_and(|s| serials.contains(&s)) {
                victims.push(session.id.clone());
            }
        }
        let mut kicked = 0;
        for id in victims {
            let mut entry = shared.entry(id.clone());
            match entry.kick(true, true, true).await {
                Ok(_) => {
                    kicked += 1;
                    Counters::inc(&live.counters.revocation_disconnects);
                    log::info!("disconnected {:?}: certificate revoked", id.client_id);
                }
                Err(e) => log::warn!("disconnecting {:?} failed: {e}", id.client_id),
            }
        }
        kicked
    }

    /// Raft addresses (`host:raftPort`) of every configured peer, this node first.
    pub fn raft_addresses(&self) -> Vec<String> {
        let own = self.config.node.id;
        let mut peers: Vec<_> = self.config.cluster.peers.iter().collect();
        peers.sort_by_key(|p| (p.id != own, p.id));
        peers
            .into_iter()
            .map(|p| format!("{}:{}", p.host, self.config.cluster.ports_of(p.id).0))
            .collect()
    }

    /// This node's raft id.
    pub fn node_id(&self) -> u64 {
        self.config.node.id
    }

    /// Whether the node runs the raft plugin (more than one configured peer).
    pub fn clustered(&self) -> bool {
        self.config.cluster.peers.len() > 1
    }

    /// Polls raft health into `live` until the process ends: the leader id this node sees, and
    /// how many voters are up (this node plus peers whose inter-node port accepts connections;
    /// rmqtt 0.24's cluster-wide health call does not answer reliably, see README).
    pub fn spawn_raft_probe(self: &Arc<Self>, live: Arc<Live>) {
        let engine = self.clone();
        let own_id = self.config.node.id;
        let peers: Vec<(String, u16)> = self
            .config
            .cluster
            .peers
            .iter()
            .filter(|p| p.id != self.config.node.id)
            .map(|p| (p.host.clone(), self.config.cluster.ports_of(p.id).1))
            .collect();
        if peers.is_empty() {
            // Standalone: one voter, no raft plugin to ask.
            live.raft_voters.store(1, Ordering::Relaxed);
        }
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let shared = engine.scx.extends.shared().await;
                if let Ok(status) = shared.health_status().await {
                    live.raft_leader
                        .store(status.leader_id.unwrap_or(0), Ordering::Relaxed);
                }
                let mut up = 1;
                for (host, port) in &peers {
                    let probe = tokio::net::TcpStream::connect((host.as_str(), *port));
                    if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), probe).await
                    {
                        up += 1;
                    }
                }
                live.raft_peers_up.store(up, Ordering::Relaxed);
                if let Some(voters) = raft_voters(&engine.scx, own_id).await {
                    live.raft_voters.store(voters, Ordering::Relaxed);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_are_the_status_peers_plus_this_node() {
        let attrs = serde_json::json!({"raft_status": {"peers": {"1": null, "2": {}, "3": {}}}});
        assert_eq!(voters_from_attrs(&attrs, 1), Some(3));
        assert_eq!(voters_from_attrs(&attrs, 4), Some(4));
        let without = serde_json::json!({"raft_status": null});
        assert_eq!(voters_from_attrs(&without, 1), None);
    }
}
