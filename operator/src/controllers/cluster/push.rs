//! Pushing the hot-reloadable parts (ACL, revoked set, trust bundle) to the running core nodes
//! over their HTTP endpoint: `GET /readyz` for the revisions a node runs, `PUT /v1/<part>` with
//! the bearer token where a revision differs, `GET /readyz` again to confirm. Every request has
//! a timeout and a bounded number of attempts; an unreachable node is reported, not an error.
//! Which parts a node needs and what counts as acknowledged is decided in [`super::acknowledge`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use contract::config::{files, RevokedSet};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{header, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::Client;

use super::acknowledge::{parts_to_push, NodeState, Part, Revisions};
use super::build::{short_hash, Desired};
use crate::render::config_dir::{CLIENTS_CA_KEY, PUSH_TOKEN_KEY};
use crate::render::names::{Names, HTTP_PORT};

/// Why one request to a node failed. Never carries the token.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// TCP connect or the HTTP exchange failed.
    #[error("{method} {path} on {addr}: {message}")]
    Transport {
        /// The node's address.
        addr: SocketAddr,
        /// GET or PUT.
        method: &'static str,
        /// Request path.
        path: &'static str,
        /// What failed.
        message: String,
    },
    /// No answer within the timeout.
    #[error("{method} {path} on {addr}: no answer within {} ms", .after.as_millis())]
    Timeout {
        /// The node's address.
        addr: SocketAddr,
        /// GET or PUT.
        method: &'static str,
        /// Request path.
        path: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// The node answered with an unexpected status.
    #[error("{method} {path} on {addr}: HTTP {status}: {body}")]
    Status {
        /// The node's address.
        addr: SocketAddr,
        /// GET or PUT.
        method: &'static str,
        /// Request path.
        path: &'static str,
        /// The status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The node answers `/readyz` without revisions: its engine is still starting.
    #[error("{addr} is starting (no revisions in /readyz yet)")]
    Starting {
        /// The node's address.
        addr: SocketAddr,
    },
    /// `/readyz` did not answer JSON.
    #[error("GET /readyz on {addr}: not JSON: {message}")]
    NotJson {
        /// The node's address.
        addr: SocketAddr,
        /// The parse error.
        message: String,
    },
}

impl PushError {
    /// Low-cardinality label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            PushError::Transport { .. } => "transport",
            PushError::Timeout { .. } => "timeout",
            PushError::Status { .. } => "status",
            PushError::NotJson { .. } => "readyz",
            PushError::Starting { .. } => "starting",
        }
    }

    /// True when trying again may help (not a refused token or a rejected payload).
    fn retryable(&self) -> bool {
        match self {
            PushError::Status { status, .. } => *status >= 500,
            _ => true,
        }
    }
}

/// The push endpoint's bearer token. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct PushToken(String);

impl PushToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
}

impl fmt::Debug for PushToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PushToken(<redacted>)")
    }
}

/// Timeouts and retries of the push.
#[derive(Debug, Clone, Copy)]
pub struct PushOptions {
    /// Timeout of one request, connect included.
    pub timeout: Duration,
    /// Attempts per request (at least one).
    pub attempts: u32,
    /// Pause between attempts.
    pub retry_delay: Duration,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            attempts: 2,
            retry_delay: Duration::from_millis(200),
        }
    }
}

/// What is pushed: the three payloads and their revisions as the broker will report them.
#[derive(Clone)]
pub struct Payloads {
    /// `acl.bin` bytes.
    pub acl: Vec<u8>,
    /// `revoked.json` bytes.
    pub revoked: Vec<u8>,
    /// The clients CA trust bundle (PEM).
    pub trust: Vec<u8>,
    /// `bridges.json` (empty: not pushed).
    pub bridges: Vec<u8>,
    /// The revisions a node reports once it runs these payloads.
    pub revisions: Revisions,
    /// The bearer token.
    pub token: PushToken,
}

impl fmt::Debug for Payloads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payloads")
            .field("acl_bytes", &self.acl.len())
            .field("revoked_bytes", &self.revoked.len())
            .field("trust_bytes", &self.trust.len())
            .field("bridges_bytes", &self.bridges.len())
            .field("revisions", &self.revisions)
            .finish_non_exhaustive()
    }
}

impl Payloads {
    /// The payloads of a built cluster: the config ConfigMap's `acl.bin` and `revoked.json`, the
    /// CA bundle's clients CA and the push-token Secret, exactly what the pods mount. The ACL
    /// revision is `acl_revision` (the rule set's); the revoked set's is its `revision` field;
    /// the trust bundle's is its short SHA-256, as the broker computes it.
    pub fn from_desired(desired: &Desired) -> Self {
        let acl = desired
            .config
            .binary_data
            .as_ref()
            .and_then(|d| d.get(files::ACL))
            .map(|b| b.0.clone())
            .unwrap_or_default();
        let revoked = desired
            .config
            .data
            .as_ref()
            .and_then(|d| d.get(files::REVOKED))
            .map(|s| s.as_bytes().to_vec())
            .unwrap_or_default();
        let trust = desired
            .ca_bundle
            .data
            .as_ref()
            .and_then(|d| d.get(CLIENTS_CA_KEY))
            .map(|s| s.as_bytes().to_vec())
            .unwrap_or_default();
        let token = desired
            .push_token_secret
            .data
            .as_ref()
            .and_then(|d| d.get(PUSH_TOKEN_KEY))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default();
        let revoked_revision = serde_json::from_slice::<RevokedSet>(&revoked)
            .ok()
            .map(|s| s.revision);
        Payloads {
            revisions: Revisions {
                acl: Some(desired.summary.acl_revision.clone()),
                revoked: revoked_revision,
                trust: (!trust.is_empty()).then(|| short_hash(&trust)),
                bridges: None,
            },
            acl,
            revoked,
            trust,
            bridges: Vec::new(),
            token: PushToken::new(token),
        }
    }

    /// These payloads plus the cluster's rendered bridges (pushed, and their revision
    /// confirmed, like the other parts; they do not gate `AclApplied`).
    pub fn with_bridges(mut self, set: &contract::bridge::BridgeSet) -> Self {
        self.bridges = contract::bridge::render_bridges(set);
        self.revisions.bridges = Some(set.revision.clone());
        self
    }

    fn body(&self, part: Part) -> &[u8] {
        match part {
            Part::Acl => &self.acl,
            Part::Revoked => &self.revoked,
            Part::Trust => &self.trust,
            Part::Bridges => &self.bridges,
        }
    }
}

fn method_name(m: &Method) -> &'static str {
    if m == Method::PUT {
        "PUT"
    } else if m == Method::POST {
        "POST"
    } else {
        "GET"
    }
}

/// One HTTP/1.1 exchange on a fresh connection, bounded by `timeout`: (status, body).
pub(super) async fn exchange(
    addr: SocketAddr,
    method: Method,
    path: &'static str,
    token: Option<&PushToken>,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), PushError> {
    let m = method_name(&method);
    let transport = |message: String| PushError::Transport {
        addr,
        method: m,
        path,
        message,
    };
    let work = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| transport(format!("connect: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| transport(e.to_string()))?;
        // Drives the connection; ends when the sender is dropped or the peer closes.
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, addr.to_string())
            .header(header::CONTENT_TYPE, "application/octet-stream");
        if let Some(t) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {}", t.0));
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| transport(e.to_string()))?;
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| transport(e.to_string()))?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| transport(format!("reading the body: {e}")))?
                .to_bytes();
            Ok((status, bytes))
        }
        .await;
        drop(sender);
        driver.abort();
        result
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| PushError::Timeout {
            addr,
            method: m,
            path,
            after: timeout,
        })?
}

async fn with_retries<T, F, Fut>(options: &PushOptions, mut attempt: F) -> Result<T, PushError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PushError>>,
{
    let mut n = 1;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if n < options.attempts.max(1) && e.retryable() => {
                n += 1;
                tokio::time::sleep(options.retry_delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The revisions a node reports on `GET /readyz` (answered 200 when ready, 503 while it joins:
/// both carry the revisions of a started node).
pub async fn readyz(addr: SocketAddr, options: &PushOptions) -> Result<Revisions, PushError> {
    Ok(Revisions::from_readyz(&readyz_json(addr, options).await?))
}

/// The whole `/readyz` body of a node (200 or 503), e.g. for the per-bridge state.
pub async fn readyz_json(
    addr: SocketAddr,
    options: &PushOptions,
) -> Result<serde_json::Value, PushError> {
    with_retries(options, || async {
        let (status, body) = exchange(
            addr,
            Method::GET,
            "/readyz",
            None,
            Vec::new(),
            options.timeout,
        )
        .await?;
        if status != StatusCode::OK && status != StatusCode::SERVICE_UNAVAILABLE {
            return Err(PushError::Status {
                addr,
                method: "GET",
                path: "/readyz",
                status: status.as_u16(),
                body: snippet(&body),
            });
        }
        serde_json::from_slice(&body).map_err(|e| PushError::NotJson {
            addr,
            message: e.to_string(),
        })
    })
    .await
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.trim().chars().take(200).collect()
}

/// Pushes one part; returns the revision the node answers it now runs.
pub async fn put(
    addr: SocketAddr,
    part: Part,
    payloads: &Payloads,
    options: &PushOptions,
) -> Result<String, PushError> {
    let body = payloads.body(part);
    with_retries(options, || async {
        let (status, response) = exchange(
            addr,
            Method::PUT,
            part.path(),
            Some(&payloads.token),
            body.to_vec(),
            options.timeout,
        )
        .await?;
        if status != StatusCode::OK {
            return Err(PushError::Status {
                addr,
                method: "PUT",
                path: part.path(),
                status: status.as_u16(),
                body: snippet(&response),
            });
        }
        Ok(serde_json::from_slice::<serde_json::Value>(&response)
            .ok()
            .and_then(|v| v.get("revision")?.as_str().map(str::to_owned))
            .unwrap_or_default())
    })
    .await
}

/// Brings one node to the desired revisions: reads `/readyz`, pushes every part that differs,
/// reads `/readyz` again. Returns what the node reports at the end, or why it could not be
/// brought there.
pub async fn sync_node(addr: SocketAddr, payloads: &Payloads, options: &PushOptions) -> NodeState {
    let run = async {
        let before = readyz(addr, options).await?;
        if before == Revisions::default() {
            // Still starting (the early endpoint serves `/readyz` only): nothing to push to yet;
            // the node loads the directory copy and is pushed to once it serves.
            return Err(PushError::Starting { addr });
        }
        let parts = parts_to_push(&payloads.revisions, &before);
        if parts.is_empty() {
            return Ok(before);
        }
        for part in parts {
            match put(addr, part, payloads, options).await {
                // A refused bridges.json must not make the node look unreachable (it would
                // hold back AclApplied): the node keeps its bridges revision and the Bridge
                // status names it as behind.
                Err(e) if part == Part::Bridges => {
                    tracing::warn!(node = %addr, error = %e, "bridges push failed");
                }
                other => {
                    other?;
                }
            }
        }
        readyz(addr, options).await
    };
    match run.await {
        Ok(r) => NodeState::Reported(r),
        Err(e) => {
            tracing::info!(node = %addr, category = e.category(), error = %e, "push to a core node failed");
            NodeState::Unreachable(e.to_string())
        }
    }
}

/// Syncs every node concurrently; keyed like `nodes`.
pub async fn sync_nodes(
    nodes: &BTreeMap<String, SocketAddr>,
    payloads: &Payloads,
    options: &PushOptions,
) -> BTreeMap<String, NodeState> {
    let runs = nodes.iter().map(|(name, addr)| async move {
        (name.clone(), sync_node(*addr, payloads, options).await)
    });
    futures::future::join_all(runs).await.into_iter().collect()
}

/// The core pods that can be pushed to: phase `Running` with a pod IP, keyed by pod name, at
/// the broker's HTTP port.
pub async fn core_nodes(
    client: &Client,
    namespace: &str,
    names: &Names,
) -> Result<BTreeMap<String, SocketAddr>, kube::Error> {
    let selector = names
        .selector_labels()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&selector))
        .await?;
    let port = u16::try_from(HTTP_PORT).unwrap_or(9090);
    Ok(pods
        .items
        .into_iter()
        .filter_map(|p| {
            let name = p.metadata.name?;
            let status = p.status?;
            if status.phase.as_deref() != Some("Running") {
                return None;
            }
            let ip: IpAddr = status.pod_ip?.parse().ok()?;
            Some((name, SocketAddr::new(ip, port)))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let p = Payloads {
            acl: vec![1, 2],
            revoked: vec![],
            trust: vec![],
            bridges: vec![],
            revisions: Revisions::default(),
            token: PushToken::new("s3cr3t-token"),
        };
        let shown = format!("{p:?} {:?}", p.token);
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("acl_bytes: 2"), "{shown}");
    }
}
