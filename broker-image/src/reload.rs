//! Applying a new ACL rule set, revoked set or trust bundle, whether it came from a file change
//! or from the push endpoint. Invalid content is rejected and the running version stays.

use std::collections::HashSet;
use std::sync::Arc;

use crate::bridge::Bridges;
use crate::engine::{Engine, EngineError};
use crate::live::{trust_state, Counters, Live, RevokedIndex};

/// Which hot-reloadable part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// `acl.bin`
    Acl,
    /// `revoked.json`
    Revoked,
    /// `tls/clients-ca.crt`
    Trust,
    /// `bridges.json`
    Bridges,
}

/// Why a reload was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] contract::config::ConfigError),
    #[error("trust bundle is not UTF-8")]
    NotUtf8,
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Bridges(#[from] crate::bridge::BridgeApplyError),
}

/// Where new content came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The push endpoint (`PUT /v1/<part>`): the operator's current version.
    Push,
    /// A changed file in the configuration directory.
    File,
}

/// Applies reloads to the live state and the engine.
///
/// Push wins over files: once a part has been pushed, file changes of that part are ignored.
/// The directory copy bootstraps a starting node; in Kubernetes the kubelet refreshes mounted
/// ConfigMaps late (up to a minute or more), so a file change can carry a version older than
/// one already pushed, and applying it would silently roll the node back.
pub struct Reloader {
    live: Arc<Live>,
    engine: Arc<Engine>,
    bridges: Arc<Bridges>,
    /// Serialises reloads so two pushes never interleave a swap; holds the parts pushed so far.
    lock: tokio::sync::Mutex<HashSet<Part>>,
}

impl Reloader {
    /// A reloader over the running engine.
    pub fn new(live: Arc<Live>, engine: Arc<Engine>, bridges: Arc<Bridges>) -> Self {
        Self {
            live,
            engine,
            bridges,
            lock: tokio::sync::Mutex::new(HashSet::new()),
        }
    }

    /// Applies new content for `part` from `source`; returns the revision now in force, or
    /// `None` when a file change was ignored because the part has been pushed.
    pub async fn apply(
        &self,
        part: Part,
        bytes: &[u8],
        source: Source,
    ) -> Result<Option<String>, ReloadError> {
        let mut pushed = self.lock.lock().await;
        if source == Source::File && pushed.contains(&part) {
            log::info!("ignored a file change of {part:?}: the pushed version stays in force");
            return Ok(None);
        }
        let result = match part {
            Part::Acl => self.apply_acl(bytes),
            Part::Revoked => self.apply_revoked(bytes).await,
            Part::Trust => self.apply_trust(bytes).await,
            Part::Bridges => self.bridges.apply_bytes(bytes).await.map_err(Into::into),
        };
        match &result {
            Ok(rev) => {
                Counters::inc(&self.live.counters.reloads);
                if source == Source::Push {
                    pushed.insert(part);
                }
                log::info!("reloaded {part:?} from {source:?}, revision {rev}");
            }
            Err(e) => {
                Counters::inc(&self.live.counters.reload_errors);
                log::warn!("rejected {part:?} reload: {e}");
            }
        }
        result.map(Some)
    }

    fn apply_acl(&self, bytes: &[u8]) -> Result<String, ReloadError> {
        let set = contract::config::load_acl(bytes)?;
        let policy = crate::access::Policy::new(&set);
        let revision = policy.revision().to_owned();
        self.live.set_policy(policy);
        Ok(revision)
    }

    async fn apply_revoked(&self, bytes: &[u8]) -> Result<String, ReloadError> {
        let set = contract::config::load_revoked(bytes)?;
        let serials: HashSet<String> = set.normalized()?.into_iter().collect();
        let revision = set.revision.clone();
        let previous = self.live.set_revoked(RevokedIndex {
            revision: revision.clone(),
            serials: serials.clone(),
        });
        let added: HashSet<String> = serials.difference(&previous.serials).cloned().collect();
        self.engine.disconnect_serials(&added, &self.live).await;
        Ok(revision)
    }

    async fn apply_trust(&self, bytes: &[u8]) -> Result<String, ReloadError> {
        let pem = std::str::from_utf8(bytes).map_err(|_| ReloadError::NotUtf8)?;
        contract::config::check_trust_bundle(pem)?;
        let state = trust_state(pem);
        if state.revision == self.live.trust().revision {
            return Ok(state.revision);
        }
        self.engine.reload_trust(pem).await?;
        let revision = state.revision.clone();
        self.live.set_trust(state);
        Ok(revision)
    }
}
