//! The state directory of `local up`: the CAs (kept across runs, keys 0600), the push token,
//! the device certificates, and one broker configuration directory per node.
//!
//! ```text
//! <dir>/local.pid                      pid of the running `local up`
//! <dir>/ca/{cluster,clients}-ca.{crt,key}
//! <dir>/push-token
//! <dir>/devices/<deviceId>/{tls.crt,tls.key,ca.crt}
//! <dir>/nodes/core-<n>/{config/,run/,broker.log,broker.pid}
//! ```

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crds::device::DeviceState;

use super::plan::{Device, Issuance, Plan};
use crate::pki::{
    self, CaKind, CaProfile, CertificateAuthority, CertificateInfo, DeviceRef, OsRandomness,
    PkiError, ServerCertRequest,
};

/// Why the state directory could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Certificate work failed.
    #[error("{what}: {source}")]
    Pki {
        /// What was being done.
        what: String,
        /// The error.
        source: PkiError,
    },
    /// A device's CSR was refused.
    #[error("DeviceIdentity {device}: CSR refused: {reason}")]
    Csr {
        /// The deviceId.
        device: String,
        /// Why.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

fn pki_err(what: impl Into<String>) -> impl FnOnce(PkiError) -> StateError {
    let what = what.into();
    move |source| StateError::Pki { what, source }
}

/// Writes a file (creating its directory); `secret` files get mode 0600.
pub fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), StateError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    drop(f);
    // Rename: the broker's watcher never reads half a file.
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn read_opt(path: &Path) -> Result<Option<String>, StateError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    /// Its root.
    pub root: PathBuf,
}

/// The CAs and push token of a local cluster.
pub struct Authorities {
    /// Signs the server certificate.
    pub cluster_ca: CertificateAuthority,
    /// Signs device certificates.
    pub clients_ca: CertificateAuthority,
    /// The push endpoint token (secret).
    pub push_token: String,
}

impl StateDir {
    /// The pid file of a running `local up`.
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("local.pid")
    }

    /// `<dir>/devices`.
    pub fn devices_dir(&self) -> PathBuf {
        self.root.join("devices")
    }

    /// `<dir>/nodes/core-<n>`.
    pub fn node_dir(&self, n: usize) -> PathBuf {
        self.root.join("nodes").join(format!("core-{n}"))
    }

    /// Loads the CAs and token, or generates and stores them on first use.
    pub fn authorities(&self, plan: &Plan) -> Result<Authorities, StateError> {
        let ca_dir = self.root.join("ca");
        let ca = |kind: CaKind, file: &str| -> Result<CertificateAuthority, StateError> {
            let (crt, key) = (
                ca_dir.join(format!("{file}.crt")),
                ca_dir.join(format!("{file}.key")),
            );
            if let (Some(c), Some(k)) = (read_opt(&crt)?, read_opt(&key)?) {
                return CertificateAuthority::from_pem(kind, &c, &k)
                    .map_err(pki_err(format!("loading {}", crt.display())));
            }
            let profile = CaProfile::new(kind, &plan.namespace, plan.name());
            let ca = CertificateAuthority::generate(&profile, &mut OsRandomness, SystemTime::now())
                .map_err(pki_err(format!("generating the {file}")))?;
            write_file(&crt, ca.cert_pem().as_bytes(), false)?;
            write_file(&key, ca.key_pem().as_bytes(), true)?;
            Ok(ca)
        };
        let cluster_ca = ca(CaKind::Cluster, "cluster-ca")?;
        let clients_ca = ca(CaKind::Clients, "clients-ca")?;
        let token_path = self.root.join("push-token");
        let push_token = match read_opt(&token_path)? {
            Some(t) if !t.trim().is_empty() => t.trim().to_owned(),
            _ => {
                let mut bytes = [0u8; 24];
                pki::Randomness::fill(&mut OsRandomness, &mut bytes)
                    .map_err(pki_err("generating the push token"))?;
                let t = hex::encode(bytes);
                write_file(&token_path, t.as_bytes(), true)?;
                t
            }
        };
        Ok(Authorities {
            cluster_ca,
            clients_ca,
            push_token,
        })
    }

    /// Makes sure every device of the plan has a certificate from the current clients CA (reused
    /// while valid for at least another day; reissued otherwise). Revoked devices get none.
    /// Returns the revoked set: serials of certificates of Revoked devices found on disk.
    pub fn devices(&self, plan: &Plan, auth: &Authorities) -> Result<BTreeSet<String>, StateError> {
        let mut revoked = BTreeSet::new();
        for d in &plan.devices {
            let dir = self.devices_dir().join(&d.id);
            let existing = read_opt(&dir.join("tls.crt"))?
                .and_then(|pem| CertificateInfo::from_pem(&pem).ok())
                .filter(|info| info.issued_by(auth.clients_ca.info()));
            if d.state == DeviceState::Revoked {
                if let Some(info) = existing {
                    revoked.insert(info.serial.to_string());
                }
                continue;
            }
            let fresh = existing.as_ref().is_some_and(|info| {
                info.is_valid_at(SystemTime::now() + Duration::from_secs(86_400))
                    && match &d.issuance {
                        Issuance::GeneratedKey(p) => {
                            info.key_algorithm == Some(p.key_algorithm)
                                && dir.join("tls.key").exists()
                        }
                        Issuance::Csr { .. } => true,
                    }
            });
            if !fresh {
                self.issue(plan, auth, d, &dir)?;
            }
            write_file(
                &dir.join("ca.crt"),
                auth.cluster_ca.cert_pem().as_bytes(),
                false,
            )?;
        }
        Ok(revoked)
    }

    fn issue(
        &self,
        plan: &Plan,
        auth: &Authorities,
        d: &Device,
        dir: &Path,
    ) -> Result<(), StateError> {
        let device = DeviceRef::new(&plan.namespace, plan.name(), &d.id)
            .map_err(pki_err(format!("device {}", d.id)))?;
        let now = SystemTime::now();
        match &d.issuance {
            Issuance::GeneratedKey(profile) => {
                let creds = pki::issue_device_certificate(
                    &auth.clients_ca,
                    &device,
                    profile,
                    &mut OsRandomness,
                    now,
                )
                .map_err(pki_err(format!("issuing the certificate of {}", d.id)))?;
                write_file(
                    &dir.join("tls.key"),
                    creds.key.to_pkcs8_pem().as_bytes(),
                    true,
                )?;
                write_file(
                    &dir.join("tls.crt"),
                    creds.certificate.pem().as_bytes(),
                    false,
                )?;
            }
            Issuance::Csr { pem, validity } => {
                let csr = pki::verify_csr(pem, &device).map_err(|e| StateError::Csr {
                    device: d.id.clone(),
                    reason: e.to_string(),
                })?;
                let cert = pki::sign_device_csr(
                    &auth.clients_ca,
                    &device,
                    &csr,
                    *validity,
                    &mut OsRandomness,
                    now,
                )
                .map_err(pki_err(format!("signing the CSR of {}", d.id)))?;
                write_file(&dir.join("tls.crt"), cert.pem().as_bytes(), false)?;
            }
        }
        Ok(())
    }

    /// A new server certificate covering 127.0.0.1 / localhost, signed by the cluster CA:
    /// (chain PEM, key PEM).
    pub fn server_cert(
        &self,
        plan: &Plan,
        auth: &Authorities,
    ) -> Result<(String, String), StateError> {
        let mut req = ServerCertRequest::new(&plan.namespace, plan.name(), plan.replicas() as u32);
        req.include_loopback = true;
        req.inter_node_client_auth = true;
        let creds = pki::issue_server_certificate(
            &auth.cluster_ca,
            &req,
            &mut OsRandomness,
            SystemTime::now(),
        )
        .map_err(pki_err("issuing the server certificate"))?;
        Ok((
            format!("{}{}", creds.certificate.pem(), auth.cluster_ca.cert_pem()),
            creds.key.to_pkcs8_pem(),
        ))
    }

    /// Writes the files of one node's configuration directory (secrets 0600).
    pub fn write_config(
        &self,
        n: usize,
        files: &contract::config::DirectoryFiles,
    ) -> Result<PathBuf, StateError> {
        let dir = self.node_dir(n).join("config");
        for (name, bytes) in files {
            let secret = name == contract::config::files::SERVER_KEY
                || name == contract::config::files::PUSH_TOKEN;
            write_file(&dir.join(name), bytes, secret)?;
        }
        Ok(dir)
    }
}
