//! Bridges: the `bridges.json` file of the configuration directory (what each broker node
//! forwards to and from remote brokers) and the pure topic mapping between a local and a remote
//! filter. No IO.
//!
//! Secrets: `bridges.json` carries each bridge's client private key (and password, if any), so
//! in Kubernetes the whole file is a key of the cluster's config **Secret** (mounted next to
//! `tls/server.key`), never of the ConfigMap. `Debug` of these types redacts the key and password.
//!
//! Topic mapping (one definition for the operator's validation and the broker): the literal
//! prefix of the local filter (its levels before the first wildcard) is replaced by the literal
//! prefix of the remote filter; the levels from the first wildcard on must be identical on both
//! sides, so every wildcard position corresponds. `site/+/telemetry/#` ↔
//! `prod/acme/paris/+/telemetry/#` maps `site/s1/telemetry/t` to
//! `prod/acme/paris/s1/telemetry/t` and back.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, CONFIG_VERSION};
use crate::topic;

/// File name inside the configuration directory (optional: absent means no bridges).
pub const BRIDGES_FILE: &str = "bridges.json";

/// The user property a bridge adds to every message it forwards (value `<cluster>/<bridge>`).
/// A message carrying it is never forwarded by a bridge again (one hop), which together with
/// MQTT 5 no-local on the remote subscriptions prevents loops between clusters that bridge
/// both ways.
pub const MARKER_PROPERTY: &str = "mqtt-bridge";

/// `bridges.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BridgeSet {
    /// Must equal [`CONFIG_VERSION`].
    pub version: String,
    /// Opaque revision (the operator's hash of the set), reported in `/readyz`.
    pub revision: String,
    /// Every bridge this node runs.
    #[serde(default)]
    pub bridges: Vec<BridgeConfig>,
}

/// One bridge: a remote broker and the routes to and from it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BridgeConfig {
    /// Bridge name (the `Bridge` object's name): metrics label, marker, remote client id part.
    pub name: String,
    /// The remote broker.
    pub remote: RemoteConfig,
    /// What is forwarded.
    pub routes: Vec<RouteConfig>,
    /// The local buffer used while the remote is unreachable.
    pub buffer: BufferConfig,
}

/// The remote broker and how to authenticate to it (TLS is mandatory).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoteConfig {
    /// Host name or IP; also the name the remote's server certificate must carry.
    pub host: String,
    /// TCP port (MQTT over TLS).
    pub port: u16,
    /// CA bundle (PEM) that signs the remote's server certificate.
    pub ca_pem: String,
    /// Client certificate chain (PEM) presented to the remote, if it requires one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_pem: Option<String>,
    /// Key of `clientCertPem` (PEM; secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_pem: Option<String>,
    /// Username, for remotes that use passwords.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password (secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// MQTT client id on the remote; the node id is appended (`<clientId>-<node>`) so every node
    /// of the local cluster has its own persistent remote session.
    pub client_id: String,
    /// Session expiry asked from the remote, seconds (> 0: the session survives reconnects).
    #[serde(default = "default_session_expiry")]
    pub session_expiry_secs: u32,
}

fn default_session_expiry() -> u32 {
    3600
}

/// Direction of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RouteDirection {
    /// Local → remote.
    Out,
    /// Remote → local.
    In,
}

/// One route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteConfig {
    /// `out` or `in`.
    pub direction: RouteDirection,
    /// Local filter (`site/+/telemetry/#`).
    pub local: String,
    /// Remote filter (`prod/acme/paris/+/telemetry/#`); see [`Mapping`].
    pub remote: String,
    /// QoS of forwarded messages (0 or 1).
    pub qos: u8,
    /// Forward the retain flag (otherwise forwarded messages are never retained).
    #[serde(default)]
    pub retain: bool,
}

/// Bounded buffer of messages waiting for the remote (out routes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BufferConfig {
    /// At most this many messages; beyond it the oldest is dropped and counted.
    pub max_messages: u64,
    /// A message older than this is dropped and counted, seconds.
    pub max_age_secs: u64,
}

impl std::fmt::Debug for BridgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeConfig")
            .field("name", &self.name)
            .field("remote", &self.remote)
            .field("routes", &self.routes)
            .field("buffer", &self.buffer)
            .finish()
    }
}

impl std::fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("RemoteConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("ca_pem", &format_args!("<{} bytes>", self.ca_pem.len()))
            .field(
                "client_cert_pem",
                &self.client_cert_pem.as_ref().map(|c| c.len()),
            )
            .field("client_key_pem", &redacted(&self.client_key_pem))
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("client_id", &self.client_id)
            .field("session_expiry_secs", &self.session_expiry_secs)
            .finish()
    }
}

/// Why a topic mapping is impossible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("'{filter}': {source}")]
    Filter {
        filter: String,
        source: topic::TopicError,
    },
    #[error("'{0}': shared subscriptions cannot be bridged")]
    Shared(String),
    #[error(
        "cannot map '{local}' to '{remote}': both must have the same levels from the first wildcard on (only the literal prefix is rewritten)"
    )]
    Shape { local: String, remote: String },
    #[error("cannot map '{local}' to '{remote}': a bare '#' on one side only would map a topic to an empty one")]
    EmptyPrefix { local: String, remote: String },
}

/// A prefix rewrite from one filter to another (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    from: String,
    from_prefix: Vec<String>,
    to_prefix: Vec<String>,
}

fn levels_before_wildcard(filter: &str) -> (Vec<String>, Vec<String>) {
    let levels: Vec<&str> = filter.split('/').collect();
    let first = levels
        .iter()
        .position(|l| *l == "+" || *l == "#")
        .unwrap_or(levels.len());
    (
        levels[..first].iter().map(|s| s.to_string()).collect(),
        levels[first..].iter().map(|s| s.to_string()).collect(),
    )
}

fn check_filter(filter: &str) -> Result<(), MappingError> {
    let parsed = topic::parse_filter(filter).map_err(|source| {
        if filter.starts_with(topic::SHARE_PREFIX) {
            MappingError::Shared(filter.to_string())
        } else {
            MappingError::Filter {
                filter: filter.to_string(),
                source,
            }
        }
    })?;
    if parsed.share_group.is_some() {
        return Err(MappingError::Shared(filter.to_string()));
    }
    Ok(())
}

impl Mapping {
    /// The mapping from topics matching `from` to topics matching `to`. Both must be valid,
    /// non-shared filters with identical levels from the first wildcard on; when that suffix
    /// is `#`, both literal prefixes must be empty or both non-empty (`a/#` matches `a`, which
    /// `#` alone could only map to an empty topic).
    pub fn new(from: &str, to: &str) -> Result<Mapping, MappingError> {
        check_filter(from)?;
        check_filter(to)?;
        let (from_prefix, from_rest) = levels_before_wildcard(from);
        let (to_prefix, to_rest) = levels_before_wildcard(to);
        if from_rest != to_rest {
            return Err(MappingError::Shape {
                local: from.to_string(),
                remote: to.to_string(),
            });
        }
        // `a/#` also matches `a`: its image is the other prefix alone, which must not be empty.
        if from_rest.first().is_some_and(|l| l == "#")
            && from_prefix.join("/").is_empty() != to_prefix.join("/").is_empty()
        {
            return Err(MappingError::EmptyPrefix {
                local: from.to_string(),
                remote: to.to_string(),
            });
        }
        Ok(Mapping {
            from: from.to_string(),
            from_prefix,
            to_prefix,
        })
    }

    /// The mapping in the other direction.
    pub fn reverse(&self) -> Mapping {
        let (_, rest) = levels_before_wildcard(&self.from);
        let mut to = self.to_prefix.clone();
        to.extend(rest);
        Mapping {
            from: to.join("/"),
            from_prefix: self.to_prefix.clone(),
            to_prefix: self.from_prefix.clone(),
        }
    }

    /// The filter topics are mapped from.
    pub fn from_filter(&self) -> &str {
        &self.from
    }

    /// `topic` rewritten, or `None` when it does not match the `from` filter.
    pub fn map(&self, topic: &str) -> Option<String> {
        if !topic::filter_matches(&self.from, topic) {
            return None;
        }
        let levels: Vec<&str> = topic.split('/').collect();
        let rest = levels.get(self.from_prefix.len()..)?;
        let mapped: Vec<&str> = self
            .to_prefix
            .iter()
            .map(String::as_str)
            .chain(rest.iter().copied())
            .collect();
        let out = mapped.join("/");
        (!out.is_empty()).then_some(out)
    }
}

/// Why `bridges.json` was rejected. Every variant names the bridge (and route) concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BridgeError {
    #[error("bridges.json is not valid: {0}")]
    Parse(String),
    #[error("bridges.json: unsupported version {0:?}, this broker reads {CONFIG_VERSION:?}")]
    UnsupportedVersion(String),
    #[error("bridges.json: bridge name {0:?} must be 1-63 characters [a-z0-9.-]")]
    BadName(String),
    #[error("bridges.json: bridge {0:?} is listed twice")]
    Duplicate(String),
    #[error("bridges.json: bridge {bridge:?}: {field} {problem}")]
    Field {
        bridge: String,
        field: &'static str,
        problem: &'static str,
    },
    #[error("bridges.json: bridge {bridge:?} routes[{route}]: {source}")]
    Route {
        bridge: String,
        route: usize,
        source: MappingError,
    },
    #[error("bridges.json: bridge {bridge:?} routes[{route}].qos must be 0 or 1, got {qos}")]
    Qos {
        bridge: String,
        route: usize,
        qos: u8,
    },
}

impl From<BridgeError> for ConfigError {
    fn from(e: BridgeError) -> Self {
        ConfigError::Parse {
            file: BRIDGES_FILE,
            message: e.to_string(),
        }
    }
}

fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

fn has_pem(pem: &str, label: &str) -> bool {
    let begin = format!("-----BEGIN {label}");
    pem.contains(&begin)
}

fn check_bridge(b: &BridgeConfig) -> Result<(), BridgeError> {
    let field = |field: &'static str, problem: &'static str| BridgeError::Field {
        bridge: b.name.clone(),
        field,
        problem,
    };
    let r = &b.remote;
    if r.host.trim().is_empty() || r.host.contains(char::is_whitespace) {
        return Err(field("remote.host", "must be a host name or IP"));
    }
    if r.port == 0 {
        return Err(field("remote.port", "must not be 0"));
    }
    if !has_pem(&r.ca_pem, "CERTIFICATE") {
        return Err(field("remote.caPem", "holds no CERTIFICATE"));
    }
    match (&r.client_cert_pem, &r.client_key_pem) {
        (Some(c), Some(k)) => {
            if !has_pem(c, "CERTIFICATE") {
                return Err(field("remote.clientCertPem", "holds no CERTIFICATE"));
            }
            if !has_pem(k, "PRIVATE KEY") && !has_pem(k, "EC PRIVATE KEY") {
                return Err(field("remote.clientKeyPem", "holds no PRIVATE KEY"));
            }
        }
        (None, None) => {}
        _ => {
            return Err(field(
                "remote.clientCertPem",
                "and clientKeyPem must be set together",
            ))
        }
    }
    if r.password.is_some() && r.username.is_none() {
        return Err(field("remote.password", "needs remote.username"));
    }
    if r.client_id.is_empty() || r.client_id.len() > 200 {
        return Err(field("remote.clientId", "must be 1-200 characters"));
    }
    if r.session_expiry_secs == 0 {
        return Err(field(
            "remote.sessionExpirySecs",
            "must be > 0 (persistent remote session)",
        ));
    }
    if b.routes.is_empty() {
        return Err(field("routes", "must list at least one route"));
    }
    for (i, route) in b.routes.iter().enumerate() {
        Mapping::new(&route.local, &route.remote).map_err(|source| BridgeError::Route {
            bridge: b.name.clone(),
            route: i,
            source,
        })?;
        if route.qos > 1 {
            return Err(BridgeError::Qos {
                bridge: b.name.clone(),
                route: i,
                qos: route.qos,
            });
        }
    }
    if b.buffer.max_messages == 0 {
        return Err(field("buffer.maxMessages", "must be > 0"));
    }
    if b.buffer.max_age_secs == 0 {
        return Err(field("buffer.maxAgeSecs", "must be > 0"));
    }
    Ok(())
}

/// Parses and checks `bridges.json`: version, unique names, remotes, every route's mapping.
pub fn load_bridges(bytes: &[u8]) -> Result<BridgeSet, BridgeError> {
    let set: BridgeSet =
        serde_json::from_slice(bytes).map_err(|e| BridgeError::Parse(e.to_string()))?;
    if set.version != CONFIG_VERSION {
        return Err(BridgeError::UnsupportedVersion(set.version));
    }
    let mut names = BTreeSet::new();
    for b in &set.bridges {
        if !valid_name(&b.name) {
            return Err(BridgeError::BadName(b.name.clone()));
        }
        if !names.insert(b.name.as_str()) {
            return Err(BridgeError::Duplicate(b.name.clone()));
        }
        check_bridge(b)?;
    }
    Ok(set)
}

/// Renders `bridges.json` (the inverse of [`load_bridges`]).
pub fn render_bridges(set: &BridgeSet) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(set).expect("bridge types always serialize");
    v.push(b'\n');
    v
}

#[cfg(test)]
#[path = "bridge_tests.rs"]
mod tests;
