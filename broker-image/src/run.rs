//! Process start-up: load the directory, start the engine, listeners, watcher and HTTP endpoint.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::{Engine, EngineError};
use crate::http::HttpState;
use crate::live::{trust_state, Live, RevokedIndex};
use crate::reload::Reloader;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Directory(#[from] crate::directory::DirectoryError),
    #[error("configuration directory {dir}: {source}")]
    Config {
        dir: PathBuf,
        source: contract::config::ConfigError,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("configuration directory {dir}: {source}")]
    Bridges {
        dir: PathBuf,
        source: contract::bridge::BridgeError,
    },
    #[error("runtime directory {dir}: {source}")]
    RuntimeDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("HTTP endpoint on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Runs the broker until the process is stopped.
pub async fn run(config_dir: PathBuf, runtime_dir: PathBuf) -> Result<(), StartError> {
    let files = crate::directory::read(&config_dir)?;
    // In Kubernetes every pod mounts the same broker.json (`node.idFromPodName`); the id then
    // comes from the pod name the downward API puts in POD_NAME.
    let pod_name = std::env::var("POD_NAME").ok().filter(|p| !p.is_empty());
    let dir = contract::config::load_for(&files, pod_name.as_deref()).map_err(|source| {
        StartError::Config {
            dir: config_dir.clone(),
            source,
        }
    })?;
    let policy = crate::access::Policy::new(&dir.acl);
    let serials = dir
        .revoked
        .normalized()
        .map_err(|source| StartError::Config {
            dir: config_dir.clone(),
            source,
        })?;
    let live = Arc::new(Live::new(
        policy,
        RevokedIndex {
            revision: dir.revoked.revision.clone(),
            serials: serials.into_iter().collect(),
        },
        trust_state(&dir.clients_ca_pem),
    ));
    std::fs::create_dir_all(&runtime_dir).map_err(|source| StartError::RuntimeDir {
        dir: runtime_dir.clone(),
        source,
    })?;

    let config = dir.config.clone();
    let http_addr = SocketAddr::new(
        config
            .listeners
            .bind
            .parse()
            .map_err(|_| EngineError::Bind(config.listeners.bind.clone()))?,
        config.http.port,
    );
    // The HTTP endpoint comes up first so /healthz answers (and /readyz says 503) while the
    // node joins the cluster.
    let early = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|source| StartError::Http {
            addr: http_addr,
            source,
        })?;
    let early_task = tokio::spawn(crate::http::serve_early(early, live.clone()));

    let engine = Engine::start(
        config.clone(),
        config_dir.clone(),
        runtime_dir,
        live.clone(),
    )
    .await?;
    engine.start_listeners(&dir.clients_ca_pem, &live).await?;
    engine.spawn_raft_probe(live.clone());
    let bridges = crate::bridge::Bridges::new(
        engine.scx.clone(),
        &config.cluster_name,
        config.node.id,
        config.cluster.peers.len() > 1,
    );
    bridges.register_tap().await;
    if let Some(bytes) = files.get(contract::bridge::BRIDGES_FILE) {
        let set = contract::bridge::load_bridges(bytes).map_err(|source| StartError::Bridges {
            dir: config_dir.clone(),
            source,
        })?;
        bridges.apply(set).await;
    }
    let reloader = Arc::new(Reloader::new(live.clone(), engine.clone(), bridges.clone()));
    crate::directory::spawn_watcher(
        config_dir,
        &files,
        Duration::from_millis(config.watch_interval_ms.max(50)),
        reloader.clone(),
    );
    let state = Arc::new(HttpState {
        live: live.clone(),
        engine,
        reloader,
        bridges,
        token: dir.push_token.clone(),
        config: config.clone(),
    });
    early_task.abort();
    let _ = early_task.await;
    log::info!("node {} ready", config.node.id);
    crate::http::serve(http_addr, state)
        .await
        .map_err(|source| StartError::Http {
            addr: http_addr,
            source,
        })
}
