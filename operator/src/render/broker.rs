//! `broker.json` for each core node, from the MqttCluster spec and where the nodes run: in
//! Kubernetes (stable pod DNS names, fixed ports, bind 0.0.0.0) or on one host for local mode
//! and tests (127.0.0.1, distinct ports per node). Pure.

use contract::config::{
    BrokerConfig, ClusterConfig, HttpConfig, LimitsConfig, ListenersConfig, NodeConfig, PeerConfig,
    PeerPorts, PortConfig, CONFIG_VERSION,
};
use crds::duration::parse_duration;
use crds::MqttClusterSpec;

use super::names::{self, Names};

/// Why a spec cannot be rendered (a spec that passed validation always renders).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("{field}: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
}

/// Ports of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePorts {
    /// MQTTS listener.
    pub mqtts: u16,
    /// WSS listener (used when enabled in the spec).
    pub wss: u16,
    /// Plain MQTT listener (used when enabled in the spec).
    pub mqtt: u16,
    /// HTTP (health, metrics, push).
    pub http: u16,
    /// Raft.
    pub raft: u16,
    /// Inter-node gRPC.
    pub grpc: u16,
}

/// Where the core nodes of a cluster run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Address listeners bind to.
    pub bind: String,
    /// Host (DNS name or IP) and ports of node `i` (raft id `i + 1`).
    pub nodes: Vec<(String, NodePorts)>,
}

fn port(field: &'static str, p: i32) -> Result<u16, RenderError> {
    u16::try_from(p)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| RenderError::Field {
            field,
            message: format!("{p} is not a TCP port"),
        })
}

impl Topology {
    /// Kubernetes: one pod per node with a stable DNS name, the same ports everywhere.
    pub fn kubernetes(
        cluster: &str,
        namespace: &str,
        spec: &MqttClusterSpec,
    ) -> Result<Self, RenderError> {
        let l = &spec.listeners;
        let ports = NodePorts {
            mqtts: port("spec.listeners.mqtts.port", l.mqtts.port)?,
            wss: port(
                "spec.listeners.wss.port",
                l.wss.as_ref().map_or(8084, |w| w.port),
            )?,
            mqtt: port(
                "spec.listeners.mqtt.port",
                l.mqtt.as_ref().map_or(1883, |m| m.port),
            )?,
            http: names::HTTP_PORT as u16,
            raft: names::RAFT_PORT as u16,
            grpc: names::GRPC_PORT as u16,
        };
        let n = Names::new(cluster);
        Ok(Self {
            bind: "0.0.0.0".into(),
            nodes: (0..spec.core.replicas)
                .map(|i| (n.pod_dns(i, namespace), ports))
                .collect(),
        })
    }

    /// One host: every node on `ip`, node `i` using `base + 10 * i + k` for its k-th port
    /// (mqtts, wss, mqtt, http, raft, grpc).
    pub fn single_host(ip: &str, base: u16, replicas: i32) -> Self {
        Self {
            bind: ip.into(),
            nodes: (0..replicas.max(0) as u16)
                .map(|i| {
                    let b = base + 10 * i;
                    (
                        ip.to_string(),
                        NodePorts {
                            mqtts: b,
                            wss: b + 1,
                            mqtt: b + 2,
                            http: b + 3,
                            raft: b + 4,
                            grpc: b + 5,
                        },
                    )
                })
                .collect(),
        }
    }
}

fn secs(field: &'static str, value: &str) -> Result<u32, RenderError> {
    let d = parse_duration(value).map_err(|e| RenderError::Field {
        field,
        message: e.to_string(),
    })?;
    Ok(u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

fn clamp<T: TryFrom<i64>>(field: &'static str, v: i64) -> Result<T, RenderError> {
    T::try_from(v).map_err(|_| RenderError::Field {
        field,
        message: format!("{v} is out of range"),
    })
}

/// The one `broker.json` every pod of a Kubernetes cluster mounts: the node id comes from the
/// pod name at start (`node.idFromPodName`), so one ConfigMap serves every pod.
pub fn shared_broker_config(
    cluster: &str,
    spec: &MqttClusterSpec,
    topology: &Topology,
) -> Result<BrokerConfig, RenderError> {
    let mut config = broker_config(cluster, spec, topology, 0)?;
    config.node = NodeConfig::from_pod_name();
    Ok(config)
}

/// `broker.json` of node `index` (0-based; raft id `index + 1`).
pub fn broker_config(
    cluster: &str,
    spec: &MqttClusterSpec,
    topology: &Topology,
    index: usize,
) -> Result<BrokerConfig, RenderError> {
    let (_, ports) = topology.nodes.get(index).ok_or(RenderError::Field {
        field: "spec.core.replicas",
        message: format!("node {index} is not part of the topology"),
    })?;
    let first = topology.nodes[0].1;
    let l = &spec.listeners;
    let limits = &spec.limits;
    let peers = topology
        .nodes
        .iter()
        .enumerate()
        .map(|(i, (host, _))| PeerConfig {
            id: i as u64 + 1,
            host: host.clone(),
        })
        .collect();
    let port_overrides = topology
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, (_, p))| (p.raft, p.grpc) != (first.raft, first.grpc))
        .map(|(i, (_, p))| {
            (
                i as u64 + 1,
                PeerPorts {
                    raft_port: p.raft,
                    grpc_port: p.grpc,
                },
            )
        })
        .collect();
    Ok(BrokerConfig {
        version: CONFIG_VERSION.into(),
        cluster_name: cluster.into(),
        node: NodeConfig::with_id(index as u64 + 1),
        listeners: ListenersConfig {
            bind: topology.bind.clone(),
            mqtts: PortConfig { port: ports.mqtts },
            wss: l
                .wss
                .as_ref()
                .filter(|w| w.enabled)
                .map(|_| PortConfig { port: ports.wss }),
            mqtt: l
                .mqtt
                .as_ref()
                .filter(|m| m.enabled)
                .map(|_| PortConfig { port: ports.mqtt }),
            allow_anonymous: spec.auth.allow_anonymous,
        },
        cluster: ClusterConfig {
            raft_port: first.raft,
            grpc_port: first.grpc,
            peers,
            port_overrides,
        },
        http: HttpConfig { port: ports.http },
        limits: LimitsConfig {
            max_connections: clamp("spec.limits.maxConnections", limits.max_connections)?,
            max_inflight: clamp("spec.limits.maxInflight", limits.max_inflight.into())?,
            max_queued_messages: clamp(
                "spec.limits.maxQueuedMessages",
                limits.max_queued_messages.into(),
            )?,
            max_packet_size: clamp("spec.limits.maxPacketSize", limits.max_packet_size)?,
            session_expiry_secs: secs("spec.limits.sessionExpiry", &limits.session_expiry)?,
            message_expiry_secs: secs("spec.limits.messageExpiry", &limits.message_expiry)?,
            max_topic_levels: clamp("spec.limits.maxTopicLevels", limits.max_topic_levels.into())?,
            retain_available: limits.retain_available,
        },
        watch_interval_ms: 250,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> MqttClusterSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn kubernetes_nodes_use_pod_dns_names_and_fixed_ports() {
        let s = spec("{core: {replicas: 3}, limits: {maxConnections: 5000, sessionExpiry: 1h}}");
        let t = Topology::kubernetes("qs", "iot", &s).unwrap();
        let c = broker_config("qs", &s, &t, 2).unwrap();
        assert_eq!(c.node.id, 3);
        assert_eq!(c.listeners.bind, "0.0.0.0");
        assert_eq!(c.listeners.mqtts.port, 8883);
        assert_eq!(c.listeners.wss, None);
        assert_eq!(c.cluster.peers.len(), 3);
        assert_eq!(c.cluster.peers[0].host, "qs-core-0.qs-core.iot.svc");
        assert!(c.cluster.port_overrides.is_empty());
        assert_eq!(
            (c.cluster.raft_port, c.cluster.grpc_port, c.http.port),
            (5363, 5364, 9090)
        );
        assert_eq!(c.limits.max_connections, 5000);
        assert_eq!(c.limits.session_expiry_secs, 3600);
        // The contract's own loader accepts what we render.
        let json = serde_json::to_vec(&c).unwrap();
        assert_eq!(contract::config::load_broker_config(&json).unwrap(), c);
    }

    #[test]
    fn single_host_nodes_get_distinct_ports() {
        let s = spec("{core: {replicas: 3}, listeners: {wss: {enabled: true}}}");
        let t = Topology::single_host("127.0.0.1", 18800, 3);
        let configs: Vec<_> = (0..3)
            .map(|i| broker_config("qs", &s, &t, i).unwrap())
            .collect();
        assert_eq!(configs[1].listeners.mqtts.port, 18810);
        assert_eq!(configs[1].listeners.wss, Some(PortConfig { port: 18811 }));
        assert_eq!(configs[2].http.port, 18823);
        assert_eq!(configs[0].cluster.port_overrides.len(), 2);
        assert_eq!(configs[0].cluster.ports_of(3), (18824, 18825));
        for c in &configs {
            let json = serde_json::to_vec(c).unwrap();
            contract::config::load_broker_config(&json).expect("loadable");
        }
    }

    #[test]
    fn the_shared_config_takes_the_id_from_the_pod_name() {
        let s = spec("{core: {replicas: 3}}");
        let t = Topology::kubernetes("qs", "iot", &s).unwrap();
        let c = shared_broker_config("qs", &s, &t).unwrap();
        let json = serde_json::to_vec(&c).unwrap();
        assert!(
            contract::config::load_broker_config(&json).is_err(),
            "needs a pod name"
        );
        let loaded = contract::config::load_broker_config_for(&json, Some("qs-core-1")).unwrap();
        assert_eq!(loaded, broker_config("qs", &s, &t, 1).unwrap());
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let s = spec("{limits: {maxConnections: 99999999999}}");
        let t = Topology::single_host("127.0.0.1", 18800, 3);
        let err = broker_config("qs", &s, &t, 0).unwrap_err();
        assert!(
            err.to_string().starts_with("spec.limits.maxConnections"),
            "{err}"
        );
        assert!(broker_config("qs", &s, &t, 5).is_err());
    }
}
