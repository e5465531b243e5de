//! The hot-reloadable state every hook reads: ACL policy, revoked serials, trust bundle revision,
//! plus readiness flags and the broker's own counters. Each part is swapped whole (`ArcSwap`),
//! so a reader sees either the old or the new version, never a mix.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use crate::access::Policy;

/// The revoked set currently enforced (serials normalised with `contract::config::normalize_serial`).
#[derive(Debug, Default)]
pub struct RevokedIndex {
    /// Revision from `revoked.json`.
    pub revision: String,
    /// Canonical serials.
    pub serials: HashSet<String>,
}

/// The client trust bundle currently used for new TLS handshakes.
#[derive(Debug, Clone, Default)]
pub struct TrustState {
    /// First 16 hex digits of the bundle's SHA-256.
    pub revision: String,
    /// How many certificates the bundle holds.
    pub certificates: usize,
}

/// Counters the broker adds on top of the engine's (section 8 of DESIGN).
#[derive(Debug, Default)]
pub struct Counters {
    /// CONNECTs refused by our authentication (bad/absent identity, revoked, will denied).
    pub auth_failures: AtomicU64,
    /// Of those, refused because the serial is revoked.
    pub auth_failures_revoked: AtomicU64,
    /// PUBLISH refused by the ACL.
    pub acl_denies_publish: AtomicU64,
    /// SUBSCRIBE filters refused by the ACL.
    pub acl_denies_subscribe: AtomicU64,
    /// CONNECTs refused because the will message is not allowed.
    pub acl_denies_will: AtomicU64,
    /// Live sessions disconnected because their serial was revoked.
    pub revocation_disconnects: AtomicU64,
    /// Successful reloads (any kind).
    pub reloads: AtomicU64,
    /// Rejected reloads (invalid content); the previous version stays.
    pub reload_errors: AtomicU64,
}

impl Counters {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything hooks and endpoints share.
pub struct Live {
    policy: ArcSwap<Policy>,
    revoked: ArcSwap<RevokedIndex>,
    trust: ArcSwap<TrustState>,
    /// Broker counters.
    pub counters: Counters,
    /// All client listeners are bound and accepting.
    pub listeners_up: AtomicBool,
    /// The raft cluster plugin started (joined or formed the cluster).
    pub cluster_joined: AtomicBool,
    /// Last observed raft leader id (0 = none).
    pub raft_leader: AtomicU64,
    /// Raft voters (this node included) reporting healthy at the last probe.
    pub raft_peers_up: AtomicU64,
    /// Raft voter set size as this node's raft sees it (this node included; 0 = unknown).
    pub raft_voters: AtomicU64,
}

impl Live {
    /// State from the initially loaded directory.
    pub fn new(policy: Policy, revoked: RevokedIndex, trust: TrustState) -> Self {
        Self {
            policy: ArcSwap::from_pointee(policy),
            revoked: ArcSwap::from_pointee(revoked),
            trust: ArcSwap::from_pointee(trust),
            counters: Counters::default(),
            listeners_up: AtomicBool::new(false),
            cluster_joined: AtomicBool::new(false),
            raft_leader: AtomicU64::new(0),
            raft_peers_up: AtomicU64::new(0),
            raft_voters: AtomicU64::new(0),
        }
    }

    /// The policy to check against (one consistent version).
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Swaps in a new policy.
    pub fn set_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    /// The revoked set.
    pub fn revoked(&self) -> Arc<RevokedIndex> {
        self.revoked.load_full()
    }

    /// Swaps in a new revoked set; returns the previous one.
    pub fn set_revoked(&self, revoked: RevokedIndex) -> Arc<RevokedIndex> {
        self.revoked.swap(Arc::new(revoked))
    }

    /// The trust bundle state.
    pub fn trust(&self) -> Arc<TrustState> {
        self.trust.load_full()
    }

    /// Records a new trust bundle.
    pub fn set_trust(&self, trust: TrustState) {
        self.trust.store(Arc::new(trust));
    }

    /// Ready = listeners up, cluster joined (config is loaded before `Live` exists).
    pub fn ready(&self) -> bool {
        self.listeners_up.load(Ordering::Acquire) && self.cluster_joined.load(Ordering::Acquire)
    }
}

/// Revision of a trust bundle: a short content hash.
pub fn trust_state(pem: &str) -> TrustState {
    let digest = Sha256::digest(pem.as_bytes());
    TrustState {
        revision: hex::encode(&digest[..8]),
        certificates: pem.matches("-----BEGIN CERTIFICATE-----").count(),
    }
}
