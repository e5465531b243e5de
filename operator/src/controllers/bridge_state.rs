//! What the brokers report about one Bridge: each core node of the local cluster answers
//! `GET /readyz` with `bridgesRevision` and per bridge `{connected, lastError, forwarded, failed,
//! dropped}` (broker-image/README.md, "Bridges"). [`summarize`] (pure) turns those reports and
//! the revision rendered into `<cluster>-bridges` into the `Ready` and `Connected` conditions
//! and the summed counters; [`observe`] reads them with the push step's HTTP client (one
//! bounded attempt per node; a node that does not answer is reported, not an error).
//!
//! Semantics: `Ready=True` when the bridge is in the rendered `bridges.json` and every running
//! core node runs that revision. Every node runs the bridge worker (out routes leave from the
//! node the publisher is on), so `Connected=True` only when every node that reports the bridge
//! is connected; the message names the nodes either way.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use super::cluster::push::{self, PushOptions};

/// Timeout of one `/readyz` request, connect included.
pub const READYZ_TIMEOUT: Duration = Duration::from_millis(1500);

/// One node's view of the bridge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeBridge {
    /// Connected to the remote.
    pub connected: bool,
    /// Last connection or forwarding error.
    pub last_error: Option<String>,
    /// Messages forwarded.
    pub forwarded: u64,
    /// Messages refused by the remote.
    pub failed: u64,
    /// Messages dropped (overflow or age).
    pub dropped: u64,
}

/// What one node answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeReport {
    /// The node answered `/readyz`.
    Reported {
        /// Its `bridgesRevision` (empty: none loaded).
        revision: String,
        /// The bridge's entry, if the node runs it.
        bridge: Option<NodeBridge>,
    },
    /// The node did not answer (why).
    Unreachable(String),
}

/// Parses one node's `/readyz` JSON for bridge `name` (pure).
pub fn parse_readyz(json: &Value, name: &str) -> NodeReport {
    let revision = json["bridgesRevision"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let bridge = json["bridges"].get(name).map(|b| NodeBridge {
        connected: b["connected"].as_bool().unwrap_or(false),
        last_error: b["lastError"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        forwarded: b["forwarded"].as_u64().unwrap_or(0),
        failed: b["failed"].as_u64().unwrap_or(0),
        dropped: b["dropped"].as_u64().unwrap_or(0),
    });
    NodeReport::Reported { revision, bridge }
}

/// A condition's (status, reason, message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable message naming the nodes.
    pub message: String,
}

/// The bridge's live state for its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `Ready`.
    pub ready: Verdict,
    /// `Connected`.
    pub connected: Verdict,
    /// A node's last error (`node: error`), if any node reports one.
    pub last_error: Option<String>,
    /// Forwarded, summed over nodes.
    pub forwarded: u64,
    /// Failed, summed over nodes.
    pub failed: u64,
    /// Dropped, summed over nodes.
    pub dropped: u64,
}

impl Summary {
    /// True when nothing is pending: acknowledged everywhere and connected everywhere.
    pub fn settled(&self) -> bool {
        self.ready.status == "True" && self.connected.status == "True"
    }
}

fn verdict(status: &'static str, reason: &'static str, message: String) -> Verdict {
    Verdict {
        status,
        reason,
        message,
    }
}

/// Summarizes the nodes' reports (pure). `rendered`: the revision of the cluster's
/// `bridges.json` when the bridge is in it, else why it is not.
pub fn summarize(
    cluster: &str,
    rendered: Result<&str, &str>,
    nodes: &BTreeMap<String, NodeReport>,
) -> Summary {
    let mut pending = Vec::new();
    let mut up = Vec::new();
    let mut down = Vec::new();
    let mut last_error = None;
    let (mut forwarded, mut failed, mut dropped) = (0, 0, 0);
    for (node, report) in nodes {
        match report {
            NodeReport::Unreachable(e) => pending.push(format!("{node}: {e}")),
            NodeReport::Reported { revision, bridge } => {
                if let Ok(want) = rendered {
                    if revision != want || bridge.is_none() {
                        pending.push(format!(
                            "{node} runs bridges revision {revision:?}, want {want:?}"
                        ));
                    }
                }
                if let Some(b) = bridge {
                    forwarded += b.forwarded;
                    failed += b.failed;
                    dropped += b.dropped;
                    if let (None, Some(e)) = (&last_error, &b.last_error) {
                        last_error = Some(format!("{node}: {e}"));
                    }
                    if b.connected {
                        up.push(node.clone());
                    } else {
                        down.push(match &b.last_error {
                            Some(e) => format!("{node} ({e})"),
                            None => node.clone(),
                        });
                    }
                }
            }
        }
    }
    let ready = match rendered {
        Err(why) => verdict("False", "NotRendered", why.to_string()),
        Ok(_) if nodes.is_empty() => verdict(
            "False",
            "NoNodes",
            format!("no running core pod of MqttCluster {cluster:?}"),
        ),
        Ok(want) if pending.is_empty() => verdict(
            "True",
            "Acknowledged",
            format!(
                "bridges revision {want} runs on {} of {} nodes",
                nodes.len(),
                nodes.len()
            ),
        ),
        Ok(_) => verdict("False", "Pending", pending.join("; ")),
    };
    let connected = if up.is_empty() && down.is_empty() {
        verdict(
            "Unknown",
            "NotObserved",
            "no node of the cluster reports this bridge yet".into(),
        )
    } else if down.is_empty() {
        verdict(
            "True",
            "Connected",
            format!("connected from {}", up.join(", ")),
        )
    } else {
        let mut message = format!("not connected from {}", down.join(", "));
        if !up.is_empty() {
            message.push_str(&format!("; connected from {}", up.join(", ")));
        }
        verdict("False", "Disconnected", message)
    };
    Summary {
        ready,
        connected,
        last_error,
        forwarded,
        failed,
        dropped,
    }
}

/// Reads every node's report on bridge `name` concurrently.
pub async fn observe(
    nodes: &BTreeMap<String, SocketAddr>,
    name: &str,
) -> BTreeMap<String, NodeReport> {
    let options = PushOptions {
        timeout: READYZ_TIMEOUT,
        attempts: 1,
        retry_delay: Duration::ZERO,
    };
    let runs = nodes.iter().map(|(node, addr)| async move {
        let report = match push::readyz_json(*addr, &options).await {
            Ok(json) => parse_readyz(&json, name),
            Err(e) => NodeReport::Unreachable(e.to_string()),
        };
        (node.clone(), report)
    });
    futures::future::join_all(runs).await.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(revision: &str, connected: Option<bool>, forwarded: u64) -> NodeReport {
        parse_readyz(
            &json!({
                "bridgesRevision": revision,
                "bridges": connected.map_or(json!({}), |c| json!({"up": {
                    "connected": c, "lastError": if c { "" } else { "connection refused" },
                    "forwarded": forwarded, "failed": 1, "dropped": 2, "buffered": 0}})),
            }),
            "up",
        )
    }

    #[test]
    fn every_node_acknowledged_and_connected_is_ready_and_connected_with_sums() {
        let nodes = BTreeMap::from([
            ("c-0".to_string(), node("r1", Some(true), 5)),
            ("c-1".to_string(), node("r1", Some(true), 7)),
        ]);
        let s = summarize("edge", Ok("r1"), &nodes);
        assert_eq!((s.ready.status, s.ready.reason), ("True", "Acknowledged"));
        assert_eq!(s.connected.status, "True");
        assert_eq!(s.connected.message, "connected from c-0, c-1");
        assert_eq!((s.forwarded, s.failed, s.dropped), (12, 2, 4));
        assert!(s.settled());
        assert_eq!(s.last_error, None);
    }

    #[test]
    fn an_old_revision_or_a_silent_node_is_pending_and_a_down_node_disconnects() {
        let nodes = BTreeMap::from([
            ("c-0".to_string(), node("r0", Some(false), 0)),
            ("c-1".to_string(), NodeReport::Unreachable("timeout".into())),
            ("c-2".to_string(), node("r1", Some(true), 0)),
        ]);
        let s = summarize("edge", Ok("r1"), &nodes);
        assert_eq!((s.ready.status, s.ready.reason), ("False", "Pending"));
        assert!(
            s.ready.message.contains("c-0 runs bridges revision \"r0\""),
            "{}",
            s.ready.message
        );
        assert!(s.ready.message.contains("c-1: timeout"));
        assert_eq!(s.connected.status, "False");
        assert_eq!(
            s.connected.message,
            "not connected from c-0 (connection refused); connected from c-2"
        );
        assert_eq!(s.last_error.as_deref(), Some("c-0: connection refused"));
        assert!(!s.settled());
    }

    #[test]
    fn not_rendered_or_no_nodes_is_not_ready_and_connection_unknown() {
        let s = summarize("edge", Err("material missing"), &BTreeMap::new());
        assert_eq!(
            (s.ready.reason, s.ready.message.as_str()),
            ("NotRendered", "material missing")
        );
        assert_eq!(s.connected.status, "Unknown");
        let s = summarize("edge", Ok("r1"), &BTreeMap::new());
        assert_eq!(s.ready.reason, "NoNodes");
        let only_other = BTreeMap::from([("c-0".to_string(), node("r1", None, 0))]);
        let s = summarize("edge", Ok("r1"), &only_other);
        assert_eq!(s.ready.reason, "Pending");
        assert_eq!(s.connected.status, "Unknown");
    }
}
