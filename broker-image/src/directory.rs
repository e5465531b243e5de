//! Reading the configuration directory from disk and watching its hot-reloadable files.
//!
//! Watching is by polling content hashes: it works the same for plain files and for Kubernetes
//! ConfigMap/Secret mounts (where an update swaps a `..data` symlink), and a file is applied only
//! when its content changes, so a push that is newer than the file is not undone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use contract::config::{files, DirectoryFiles};
use sha2::{Digest, Sha256};

use crate::reload::{Part, Reloader, Source};

/// Errors reading the directory.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads every file the contract names; absent files are simply not in the map (the loader
/// reports them).
pub fn read(dir: &Path) -> Result<DirectoryFiles, DirectoryError> {
    let mut out = DirectoryFiles::new();
    for name in files::ALL {
        let path = dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => {
                out.insert(name.to_owned(), bytes);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(DirectoryError::Read { path, source }),
        }
    }
    // Optional: absent means no bridges.
    let path = dir.join(contract::bridge::BRIDGES_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            out.insert(contract::bridge::BRIDGES_FILE.to_owned(), bytes);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(DirectoryError::Read { path, source }),
    }
    Ok(out)
}

const WATCHED: [(&str, Part); 4] = [
    (files::ACL, Part::Acl),
    (files::REVOKED, Part::Revoked),
    (files::CLIENTS_CA, Part::Trust),
    (contract::bridge::BRIDGES_FILE, Part::Bridges),
];

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Polls the hot-reloadable files every `interval` and applies changed ones.
pub fn spawn_watcher(
    dir: PathBuf,
    initial: &DirectoryFiles,
    interval: Duration,
    reloader: Arc<Reloader>,
) {
    let mut seen: HashMap<&'static str, [u8; 32]> = WATCHED
        .iter()
        .filter_map(|(name, _)| initial.get(*name).map(|b| (*name, digest(b))))
        .collect();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for (name, part) in WATCHED {
                let Ok(bytes) = tokio::fs::read(dir.join(name)).await else {
                    continue;
                };
                let hash = digest(&bytes);
                if seen.get(name) == Some(&hash) {
                    continue;
                }
                seen.insert(name, hash);
                // Errors are counted and logged by the reloader; the old version stays.
                let _ = reloader.apply(part, &bytes, Source::File).await;
            }
        }
    });
}
