//! The broker configuration directory: what the operator renders (one directory per core node,
//! mounted from a ConfigMap and Secrets) and the broker reads. Versioned; pure (no IO).
//!
//! The broker reads the files named in [`files`] into a [`DirectoryFiles`] map and calls
//! [`load`], which either returns a complete, cross-checked [`BrokerDirectory`] or a
//! [`ConfigError`] naming the file and the problem. The hot-reloadable parts (ACL rule set,
//! revoked set, client trust bundle) can be re-validated on their own with [`load_acl`], [`load_revoked`],
//! [`check_trust_bundle`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The only `version` this crate reads and writes in `broker.json`.
pub const CONFIG_VERSION: &str = "broker.mqtt.operator.dev/v1";

/// File names inside the configuration directory (relative paths, `/`-separated).
pub mod files {
    /// The static node configuration ([`super::BrokerConfig`]), JSON. Changing it needs a restart.
    pub const BROKER: &str = "broker.json";
    /// Server certificate chain (PEM, leaf first), from the cluster CA.
    pub const SERVER_CERT: &str = "tls/server.crt";
    /// Server private key (PEM, PKCS#8 or SEC1).
    pub const SERVER_KEY: &str = "tls/server.key";
    /// Trust bundle for client certificates (PEM, one or more CA certificates). Hot-reloaded.
    pub const CLIENTS_CA: &str = "tls/clients-ca.crt";
    /// The compiled ACL rule set (binary, [`crate::acl::codec`]). Hot-reloaded.
    ///
    /// Size limit: in Kubernetes this file is a key of the config ConfigMap, and a ConfigMap
    /// (all keys together, plus metadata) cannot exceed 1 MiB (etcd's request limit). A large
    /// fleet's rule set will not fit. Plan: the push endpoint (`PUT /v1/acl`) is the primary
    /// path for rule sets and the ConfigMap copy only bootstraps a starting pod; past the limit
    /// the operator will ship a bootstrap rule set (default action only) in the ConfigMap and
    /// push the full set to every node, reporting `AclApplied` from `/readyz` revisions.
    pub const ACL: &str = "acl.bin";
    /// The revoked certificate serials ([`super::RevokedSet`]), JSON. Hot-reloaded.
    pub const REVOKED: &str = "revoked.json";
    /// Bearer token the operator presents to the push endpoint (one line).
    pub const PUSH_TOKEN: &str = "push-token";

    /// Every file [`super::load`] needs.
    pub const ALL: [&str; 7] = [
        BROKER,
        SERVER_CERT,
        SERVER_KEY,
        CLIENTS_CA,
        ACL,
        REVOKED,
        PUSH_TOKEN,
    ];
}

/// Raw directory contents: relative file name -> bytes. What the broker hands to [`load`].
pub type DirectoryFiles = BTreeMap<String, Vec<u8>>;

/// `broker.json`: the node's static configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BrokerConfig {
    /// Must equal [`CONFIG_VERSION`].
    pub version: String,
    /// Name of the MqttCluster this node belongs to (labels, logs).
    pub cluster_name: String,
    /// This node.
    pub node: NodeConfig,
    /// Client-facing listeners.
    pub listeners: ListenersConfig,
    /// Raft core cluster membership and ports.
    pub cluster: ClusterConfig,
    /// Health, metrics and push endpoint.
    pub http: HttpConfig,
    /// Connection and message limits.
    pub limits: LimitsConfig,
    /// How often (milliseconds) the broker re-reads the hot-reloadable files.
    #[serde(default = "default_watch_interval_ms")]
    pub watch_interval_ms: u64,
}

fn default_watch_interval_ms() -> u64 {
    250
}

/// This node's identity in the raft cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeConfig {
    /// Raft node id, `StatefulSet ordinal + 1` (raft reserves 0). Must appear in `cluster.peers`.
    ///
    /// Exactly one source: either this field (local mode, tests: one file per node), or
    /// [`NodeConfig::id_from_pod_name`] (Kubernetes: every pod mounts the same ConfigMap). After
    /// [`load_for`] / [`load_broker_config_for`] it always holds the resolved id.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub id: u64,
    /// Take the id from the pod name the broker is started with (env `POD_NAME`, set from the
    /// downward API): `<clusterName>-core-<ordinal>` gives id `ordinal + 1`. Added in the same
    /// `broker.mqtt.operator.dev/v1` (an additive field; brokers that predate it refuse it
    /// loudly, as `deny_unknown_fields` makes them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub id_from_pod_name: bool,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl NodeConfig {
    /// A fixed node id.
    pub fn with_id(id: u64) -> Self {
        Self {
            id,
            id_from_pod_name: false,
        }
    }

    /// The id comes from the pod name at start.
    pub fn from_pod_name() -> Self {
        Self {
            id: 0,
            id_from_pod_name: true,
        }
    }
}

/// The raft id of pod `pod_name` of cluster `cluster_name` (`<cluster>-core-<ordinal>` →
/// `ordinal + 1`), or `None` when the name does not have that shape.
pub fn node_id_from_pod_name(cluster_name: &str, pod_name: &str) -> Option<u64> {
    let ordinal = pod_name
        .strip_prefix(cluster_name)?
        .strip_prefix("-core-")?;
    if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ordinal.parse::<u64>().ok()?.checked_add(1)
}

/// Client-facing listeners. MQTTS is always on; the others are opt-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenersConfig {
    /// Address all listeners bind to (`0.0.0.0` in a pod, `127.0.0.1` in tests).
    pub bind: String,
    /// MQTT over TLS with client certificates required from the clients CA.
    pub mqtts: PortConfig,
    /// MQTT over TLS WebSocket (client certificates required too), if enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wss: Option<PortConfig>,
    /// Plain MQTT without TLS, only when explicitly enabled. Clients on it have no certificate
    /// identity and are refused unless `allowAnonymous` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<PortConfig>,
    /// Accept plain-listener clients without an identity (they get the ACL `all` subjects only).
    #[serde(default)]
    pub allow_anonymous: bool,
}

/// One TCP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortConfig {
    /// TCP port (0 is not allowed: ports are part of the rendered contract).
    pub port: u16,
}

/// Raft core cluster: every voter with its stable address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfig {
    /// Raft port on every node.
    pub raft_port: u16,
    /// Inter-node message (gRPC) port on every node.
    pub grpc_port: u16,
    /// All voters including this node, e.g. `{id: 1, host: "c-core-0.c-core.ns.svc"}`.
    pub peers: Vec<PeerConfig>,
    /// Port overrides per node id (tests run several nodes on one host); absent in pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_overrides: BTreeMap<u64, PeerPorts>,
}

/// One raft voter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerConfig {
    /// Raft node id (`ordinal + 1`).
    pub id: u64,
    /// Stable DNS name or IP of the node.
    pub host: String,
}

/// Raft and gRPC ports of one node, when they differ from the cluster-wide ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerPorts {
    /// Raft port of that node.
    pub raft_port: u16,
    /// gRPC port of that node.
    pub grpc_port: u16,
}

impl ClusterConfig {
    /// `(raft, grpc)` ports of node `id`.
    pub fn ports_of(&self, id: u64) -> (u16, u16) {
        match self.port_overrides.get(&id) {
            Some(p) => (p.raft_port, p.grpc_port),
            None => (self.raft_port, self.grpc_port),
        }
    }
}

/// The HTTP endpoint: `/healthz`, `/readyz`, `/metrics`, `/v1/push/*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpConfig {
    /// TCP port (default 9090 in pods).
    pub port: u16,
}

/// Limits applied per node (mirrors `crds::cluster::LimitsSpec`, durations in seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsConfig {
    /// Maximum concurrent client connections on this node.
    pub max_connections: u32,
    /// Maximum QoS 1/2 messages in flight per client (MQTT 5 receive maximum).
    pub max_inflight: u16,
    /// Maximum messages queued per client while it is slow or offline.
    pub max_queued_messages: u32,
    /// Maximum MQTT packet size in bytes.
    pub max_packet_size: u32,
    /// Upper bound of the session expiry interval clients may ask for, seconds.
    pub session_expiry_secs: u32,
    /// Message expiry for queued messages, seconds.
    pub message_expiry_secs: u32,
    /// Maximum levels in a topic name or filter.
    pub max_topic_levels: u16,
    /// Whether retained messages are stored.
    pub retain_available: bool,
}

/// `revoked.json`: serials of revoked client certificates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevokedSet {
    /// Must equal [`CONFIG_VERSION`].
    pub version: String,
    /// Opaque revision (the operator's hash of the set), reported in `/readyz` and metrics.
    pub revision: String,
    /// Serials in any common hex spelling; normalise with [`normalize_serial`] before comparing.
    pub serials: BTreeSet<String>,
}

impl RevokedSet {
    /// The serials in canonical form (see [`normalize_serial`]).
    pub fn normalized(&self) -> Result<BTreeSet<String>, ConfigError> {
        self.serials
            .iter()
            .map(|s| normalize_serial(s).ok_or_else(|| ConfigError::InvalidSerial(s.clone())))
            .collect()
    }
}

/// Canonical certificate serial: lowercase hex, no separators, no leading zeros (`"0"` for zero).
/// Accepts `0A:1b:...`, `0x0a1b`, `0A1B`. Returns `None` for anything that is not hex.
pub fn normalize_serial(s: &str) -> Option<String> {
    let s = s.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let trimmed = hex.trim_start_matches('0').to_ascii_lowercase();
    Some(if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed
    })
}

/// A complete, validated configuration directory.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerDirectory {
    /// `broker.json`.
    pub config: BrokerConfig,
    /// Server certificate chain PEM.
    pub server_cert_pem: String,
    /// Server key PEM (secret: never logged; `Debug` redacts it).
    pub server_key_pem: String,
    /// Client trust bundle PEM.
    pub clients_ca_pem: String,
    /// `acl.bin`: the compiled ACL rule set.
    pub acl: crate::acl::RuleSet,
    /// `revoked.json`.
    pub revoked: RevokedSet,
    /// Push endpoint bearer token (secret: never logged).
    pub push_token: String,
}

impl std::fmt::Debug for BrokerDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerDirectory")
            .field("config", &self.config)
            .field(
                "server_cert_pem",
                &format_args!("<{} bytes>", self.server_cert_pem.len()),
            )
            .field("server_key_pem", &"<redacted>")
            .field(
                "clients_ca_pem",
                &format_args!("<{} bytes>", self.clients_ca_pem.len()),
            )
            .field(
                "acl",
                &format_args!(
                    "<{} rules, revision {}>",
                    self.acl.rule_count(),
                    self.acl.revision()
                ),
            )
            .field("revoked", &self.revoked)
            .field("push_token", &"<redacted>")
            .finish()
    }
}

/// Why a configuration directory (or one of its files) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("file {0} is missing from the configuration directory")]
    MissingFile(&'static str),
    #[error("file {0} is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("file {file} is not valid: {message}")]
    Parse { file: &'static str, message: String },
    #[error("{file}: unsupported version {found:?}, this broker reads {CONFIG_VERSION:?}")]
    UnsupportedVersion { file: &'static str, found: String },
    #[error("broker.json: node.id must be >= 1 (raft reserves 0)")]
    ZeroNodeId,
    #[error(
        "broker.json: node.id is fixed, yet a pod name ({0:?}) was given too: one source only"
    )]
    NodeIdTwice(String),
    #[error("broker.json: node.idFromPodName is set but no pod name (env POD_NAME) was given")]
    NoPodName,
    #[error("pod name {pod:?} is not <clusterName>-core-<ordinal> for cluster {cluster:?}")]
    BadPodName { pod: String, cluster: String },
    #[error("broker.json: node.id {0} is not listed in cluster.peers")]
    NodeNotInPeers(u64),
    #[error("broker.json: cluster.peers lists node id {0} twice")]
    DuplicatePeer(u64),
    #[error("broker.json: cluster.peers entry {0} has an empty host")]
    EmptyPeerHost(u64),
    #[error("broker.json: {0} port must not be 0")]
    ZeroPort(&'static str),
    #[error("broker.json: {first} and {second} both use port {port}")]
    PortClash {
        first: &'static str,
        second: &'static str,
        port: u16,
    },
    #[error("broker.json: limits.{0} must be greater than 0")]
    ZeroLimit(&'static str),
    #[error("broker.json: listeners.bind {0:?} is not an IP address")]
    InvalidBind(String),
    #[error("file {file} contains no PEM block of type {expected}")]
    NoPem {
        file: &'static str,
        expected: &'static str,
    },
    #[error("file push-token is empty")]
    EmptyPushToken,
    #[error("revoked.json: serial {0:?} is not a hexadecimal certificate serial")]
    InvalidSerial(String),
    #[error("acl.bin is not a valid rule set: {0}")]
    Acl(#[from] crate::acl::codec::DecodeError),
}

fn text<'a>(dir: &'a DirectoryFiles, file: &'static str) -> Result<&'a str, ConfigError> {
    let bytes = dir.get(file).ok_or(ConfigError::MissingFile(file))?;
    std::str::from_utf8(bytes).map_err(|_| ConfigError::NotUtf8(file))
}

fn json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    file: &'static str,
) -> Result<T, ConfigError> {
    serde_json::from_slice(bytes).map_err(|e| ConfigError::Parse {
        file,
        message: e.to_string(),
    })
}

fn check_version(found: &str, file: &'static str) -> Result<(), ConfigError> {
    if found == CONFIG_VERSION {
        Ok(())
    } else {
        Err(ConfigError::UnsupportedVersion {
            file,
            found: found.to_owned(),
        })
    }
}

/// Whether `pem` holds at least one block whose label is one of `labels`.
fn has_pem_block(pem: &str, labels: &[&str]) -> bool {
    labels.iter().any(|label| {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        pem.find(&begin).is_some_and(|at| pem[at..].contains(&end))
    })
}

/// Decodes `acl.bin` (also used for a pushed or reloaded rule set).
pub fn load_acl(bytes: &[u8]) -> Result<crate::acl::RuleSet, ConfigError> {
    Ok(crate::acl::codec::decode(bytes)?)
}

/// Parses and cross-checks `broker.json` whose node id is fixed ([`load_broker_config_for`]
/// without a pod name).
pub fn load_broker_config(bytes: &[u8]) -> Result<BrokerConfig, ConfigError> {
    load_broker_config_for(bytes, None)
}

/// Parses and cross-checks `broker.json`, resolving the node id from exactly one source: the
/// fixed `node.id`, or `pod_name` when `node.idFromPodName` is set. Anything else (both, neither,
/// a flag without a pod name) is an error.
pub fn load_broker_config_for(
    bytes: &[u8],
    pod_name: Option<&str>,
) -> Result<BrokerConfig, ConfigError> {
    let mut config: BrokerConfig = json(bytes, files::BROKER)?;
    check_version(&config.version, files::BROKER)?;
    match (config.node.id, config.node.id_from_pod_name, pod_name) {
        (0, true, Some(pod)) => {
            config.node =
                NodeConfig::with_id(node_id_from_pod_name(&config.cluster_name, pod).ok_or_else(
                    || ConfigError::BadPodName {
                        pod: pod.to_string(),
                        cluster: config.cluster_name.clone(),
                    },
                )?);
        }
        (0, true, None) => return Err(ConfigError::NoPodName),
        (_, true, _) => return Err(ConfigError::NodeIdTwice(String::from("node.idFromPodName"))),
        (id, false, Some(pod)) if id != 0 => return Err(ConfigError::NodeIdTwice(pod.to_string())),
        _ => {}
    }
    if config.node.id == 0 {
        return Err(ConfigError::ZeroNodeId);
    }
    if config.listeners.bind.parse::<std::net::IpAddr>().is_err() {
        return Err(ConfigError::InvalidBind(config.listeners.bind.clone()));
    }
    let mut ids = BTreeSet::new();
    for peer in &config.cluster.peers {
        if peer.id == 0 {
            return Err(ConfigError::ZeroNodeId);
        }
        if !ids.insert(peer.id) {
            return Err(ConfigError::DuplicatePeer(peer.id));
        }
        if peer.host.trim().is_empty() {
            return Err(ConfigError::EmptyPeerHost(peer.id));
        }
    }
    if !ids.contains(&config.node.id) {
        return Err(ConfigError::NodeNotInPeers(config.node.id));
    }
    let (raft_port, grpc_port) = config.cluster.ports_of(config.node.id);
    let mut ports: Vec<(&'static str, u16)> = vec![
        ("listeners.mqtts", config.listeners.mqtts.port),
        ("http", config.http.port),
        ("cluster.raftPort", raft_port),
        ("cluster.grpcPort", grpc_port),
    ];
    if let Some(wss) = config.listeners.wss {
        ports.push(("listeners.wss", wss.port));
    }
    if let Some(mqtt) = config.listeners.mqtt {
        ports.push(("listeners.mqtt", mqtt.port));
    }
    for (i, (name, port)) in ports.iter().enumerate() {
        if *port == 0 {
            return Err(ConfigError::ZeroPort(name));
        }
        if let Some((first, _)) = ports[..i].iter().find(|(_, p)| p == port) {
            return Err(ConfigError::PortClash {
                first,
                second: name,
                port: *port,
            });
        }
    }
    let limits = &config.limits;
    for (name, value) in [
        ("maxConnections", u64::from(limits.max_connections)),
        ("maxInflight", u64::from(limits.max_inflight)),
        ("maxQueuedMessages", u64::from(limits.max_queued_messages)),
        ("maxPacketSize", u64::from(limits.max_packet_size)),
        ("maxTopicLevels", u64::from(limits.max_topic_levels)),
    ] {
        if value == 0 {
            return Err(ConfigError::ZeroLimit(name));
        }
    }
    Ok(config)
}

/// Parses `revoked.json` and checks every serial.
pub fn load_revoked(bytes: &[u8]) -> Result<RevokedSet, ConfigError> {
    let revoked: RevokedSet = json(bytes, files::REVOKED)?;
    check_version(&revoked.version, files::REVOKED)?;
    revoked.normalized()?;
    Ok(revoked)
}

/// Checks that a client trust bundle holds at least one certificate.
pub fn check_trust_bundle(pem: &str) -> Result<(), ConfigError> {
    if has_pem_block(pem, &["CERTIFICATE"]) {
        Ok(())
    } else {
        Err(ConfigError::NoPem {
            file: files::CLIENTS_CA,
            expected: "CERTIFICATE",
        })
    }
}

/// Loads a whole configuration directory: every file present, parsed and cross-checked.
pub fn load(dir: &DirectoryFiles) -> Result<BrokerDirectory, ConfigError> {
    load_for(dir, None)
}

/// [`load`] for a broker started as pod `pod_name` (env `POD_NAME`); see
/// [`load_broker_config_for`] for how the node id is resolved.
pub fn load_for(
    dir: &DirectoryFiles,
    pod_name: Option<&str>,
) -> Result<BrokerDirectory, ConfigError> {
    for file in files::ALL {
        if !dir.contains_key(file) {
            return Err(ConfigError::MissingFile(file));
        }
    }
    let config = load_broker_config_for(&dir[files::BROKER], pod_name)?;
    let server_cert_pem = text(dir, files::SERVER_CERT)?.to_owned();
    if !has_pem_block(&server_cert_pem, &["CERTIFICATE"]) {
        return Err(ConfigError::NoPem {
            file: files::SERVER_CERT,
            expected: "CERTIFICATE",
        });
    }
    let server_key_pem = text(dir, files::SERVER_KEY)?.to_owned();
    if !has_pem_block(
        &server_key_pem,
        &["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"],
    ) {
        return Err(ConfigError::NoPem {
            file: files::SERVER_KEY,
            expected: "PRIVATE KEY",
        });
    }
    let clients_ca_pem = text(dir, files::CLIENTS_CA)?.to_owned();
    check_trust_bundle(&clients_ca_pem)?;
    let revoked = load_revoked(&dir[files::REVOKED])?;
    let push_token = text(dir, files::PUSH_TOKEN)?.trim().to_owned();
    if push_token.is_empty() {
        return Err(ConfigError::EmptyPushToken);
    }
    Ok(BrokerDirectory {
        config,
        server_cert_pem,
        server_key_pem,
        clients_ca_pem,
        acl: load_acl(&dir[files::ACL])?,
        revoked,
        push_token,
    })
}

/// Renders a directory back to files (the inverse of [`load`]); used by the operator's render
/// step and by tests.
pub fn render(dir: &BrokerDirectory) -> DirectoryFiles {
    let mut out = DirectoryFiles::new();
    let pretty = |v: &dyn erased::Json| v.to_pretty();
    out.insert(files::BROKER.into(), pretty(&dir.config));
    out.insert(
        files::SERVER_CERT.into(),
        dir.server_cert_pem.clone().into_bytes(),
    );
    out.insert(
        files::SERVER_KEY.into(),
        dir.server_key_pem.clone().into_bytes(),
    );
    out.insert(
        files::CLIENTS_CA.into(),
        dir.clients_ca_pem.clone().into_bytes(),
    );
    out.insert(files::ACL.into(), crate::acl::codec::encode(&dir.acl));
    out.insert(files::REVOKED.into(), pretty(&dir.revoked));
    out.insert(
        files::PUSH_TOKEN.into(),
        format!("{}\n", dir.push_token).into_bytes(),
    );
    out
}

mod erased {
    /// Object-safe pretty JSON for the two rendered JSON files.
    pub trait Json {
        fn to_pretty(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_pretty(&self) -> Vec<u8> {
            let mut v = serde_json::to_vec_pretty(self).expect("config types always serialize");
            v.push(b'\n');
            v
        }
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
