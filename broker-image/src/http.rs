//! The node's HTTP endpoint: `/healthz`, `/readyz`, `/metrics`, and the authenticated push
//! endpoints `PUT /v1/acl`, `PUT /v1/revoked`, `PUT /v1/trust`, `PUT /v1/bridges` and
//! `POST /v1/raft/remove` (bearer token from `push-token`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::json;

use crate::engine::Engine;
use crate::live::Live;
use crate::reload::{Part, Reloader, Source};

/// What the handlers share.
pub struct HttpState {
    /// Live state.
    pub live: Arc<Live>,
    /// The engine (metrics sampling).
    pub engine: Arc<Engine>,
    /// Applies pushes.
    pub reloader: Arc<Reloader>,
    /// Bridges (status, metrics).
    pub bridges: Arc<crate::bridge::Bridges>,
    /// The bearer token (secret).
    pub token: String,
    /// The node configuration (limits, node id, peers) for metrics.
    pub config: contract::config::BrokerConfig,
}

/// Binds the endpoint; the returned future serves until the process ends.
pub async fn serve(addr: SocketAddr, state: Arc<HttpState>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/acl", put(push_acl))
        .route("/v1/revoked", put(push_revoked))
        .route("/v1/trust", put(push_trust))
        .route("/v1/bridges", put(push_bridges))
        .route("/v1/raft/remove", post(raft_remove))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}

/// Serves `/healthz` and a not-ready `/readyz` while the engine starts (joining raft can take
/// seconds); replaced by [`serve`] once everything is up.
pub async fn serve_early(listener: tokio::net::TcpListener, live: Arc<Live>) {
    let app = Router::new().route("/healthz", get(|| async { "ok\n" })).route(
        "/readyz",
        get(move || {
            let live = live.clone();
            async move {
                let body = json!({
                    "ready": false,
                    "listeners": live.listeners_up.load(std::sync::atomic::Ordering::Acquire),
                    "clusterJoined": live.cluster_joined.load(std::sync::atomic::Ordering::Acquire),
                    "configLoaded": true,
                });
                (StatusCode::SERVICE_UNAVAILABLE, Json(body))
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        log::warn!("early HTTP endpoint stopped: {e}");
    }
}

async fn readyz(State(s): State<Arc<HttpState>>) -> Response {
    let live = &s.live;
    let body = json!({
        "ready": live.ready(),
        "listeners": live.listeners_up.load(std::sync::atomic::Ordering::Acquire),
        "clusterJoined": live.cluster_joined.load(std::sync::atomic::Ordering::Acquire),
        "configLoaded": true,
        "aclRevision": live.policy().revision(),
        "revokedRevision": live.revoked().revision,
        "trustRevision": live.trust().revision,
        "bridgesRevision": s.bridges.revision(),
        "bridges": s.bridges.status(),
        "raftLeader": live.raft_leader.load(std::sync::atomic::Ordering::Relaxed),
        "raftVoters": live.raft_voters.load(std::sync::atomic::Ordering::Relaxed),
    });
    let code = if live.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn metrics(State(s): State<Arc<HttpState>>) -> Response {
    let sample = crate::metrics::sample(&s.engine.scx).await;
    let mut bridges = String::new();
    s.bridges.render_metrics(&mut bridges);
    let text = crate::metrics::render_with(&s.live, &sample, &s.config, &bridges);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Constant-time comparison of the presented bearer token.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(presented) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (presented.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": "missing or wrong bearer token"})),
    )
        .into_response()
}

/// `POST /v1/raft/remove` `{"id": N}`: removes raft voter N (a departing pod) through the
/// current leader. Idempotent: removing an absent member answers 200 too.
async fn raft_remove(State(s): State<Arc<HttpState>>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&headers, &s.token) {
        return unauthorized();
    }
    let bad = |message: String| (StatusCode::BAD_REQUEST, Json(json!({"error": message})));
    let id = match serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("id")?.as_u64())
    {
        Some(id) if id > 0 => id,
        _ => return bad("body must be {\"id\": <raft id > 0>}".into()).into_response(),
    };
    if !s.engine.clustered() {
        return bad("this node runs without raft (single node)".into()).into_response();
    }
    if id == s.engine.node_id() {
        return bad(format!("node {id} cannot remove itself")).into_response();
    }
    let candidates = s.engine.raft_addresses();
    match crate::raft_admin::remove_member(
        id,
        crate::raft_admin::RemoveNodeType::Normal,
        &candidates,
        std::time::Duration::from_secs(3),
        std::time::Duration::from_secs(10),
    )
    .await
    {
        Ok(()) => (StatusCode::OK, Json(json!({"removed": id}))).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn push(s: &HttpState, headers: &HeaderMap, part: Part, body: &[u8]) -> Response {
    if !authorized(headers, &s.token) {
        return unauthorized();
    }
    match s.reloader.apply(part, body, Source::Push).await {
        Ok(revision) => (StatusCode::OK, Json(json!({"revision": revision}))).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn push_acl(State(s): State<Arc<HttpState>>, headers: HeaderMap, body: Bytes) -> Response {
    push(&s, &headers, Part::Acl, &body).await
}

async fn push_revoked(
    State(s): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    push(&s, &headers, Part::Revoked, &body).await
}

async fn push_bridges(
    State(s): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    push(&s, &headers, Part::Bridges, &body).await
}

async fn push_trust(State(s): State<Arc<HttpState>>, headers: HeaderMap, body: Bytes) -> Response {
    push(&s, &headers, Part::Trust, &body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_must_match_exactly() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "tok"));
        h.insert(header::AUTHORIZATION, "Bearer tok".parse().unwrap());
        assert!(authorized(&h, "tok"));
        assert!(!authorized(&h, "tok2"));
        h.insert(header::AUTHORIZATION, "Basic tok".parse().unwrap());
        assert!(!authorized(&h, "tok"));
    }
}
