//! The pure `build` step of the DeviceIdentity pipeline: from the identity and what
//! `dereference` observed (cluster, clients CA, trust bundle, existing Secret, older holders of
//! the same deviceId), the desired Secret, status, Events and next requeue. No IO; the clock and
//! randomness are arguments.
//!
//! The existing certificate is kept while the rotation rule ([`decide_device_rotation`]) says so,
//! so a reconcile with nothing changed builds exactly what is already stored.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crds::device::{DeviceIdentityStatus, DeviceState, ROTATE_ANNOTATION};
use crds::duration::parse_duration;
use crds::validate::validate_device;
use crds::DeviceIdentity;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;
use kube::Resource;
use sha2::Digest as _;

use super::status::{self, Note};
use crate::pki::csr::verify_csr;
use crate::pki::{
    decide_device_rotation, issue_device_certificate, sign_device_csr, CaKind,
    CertificateAuthority, CertificateInfo, DeviceCertProfile, DeviceDesired, DeviceIssued,
    DeviceRef, IssuedCertificate, KeyAlgorithm, PkiError, PrivateKey, Randomness, RenewalPolicy,
    RotationDecision, RotationReason,
};
use crate::render::names::{CLUSTER_LABEL, FIELD_MANAGER};

/// Label on every device Secret naming its DeviceIdentity (the controller watches only these).
pub const DEVICE_LABEL: &str = "mqtt.operator.dev/device-identity";
/// Secret annotation: the value of the rotate annotation the certificate was issued under.
pub const ISSUED_FOR_ROTATE_ANNOTATION: &str = "mqtt.operator.dev/issued-for-rotate";
/// Secret annotation: SHA-256 (hex) of the CSR the certificate was signed from.
pub const CSR_SHA256_ANNOTATION: &str = "mqtt.operator.dev/csr-sha256";
/// Secret key of the device certificate (PEM).
pub const CERT_KEY: &str = "tls.crt";
/// Secret key of the device private key (PKCS#8 PEM; absent in CSR mode).
pub const KEY_KEY: &str = "tls.key";
/// Secret key of the trust bundle the device verifies the broker with (the cluster CA).
pub const CA_KEY: &str = "ca.crt";

/// Longest wait between two reconciles of an issued identity.
pub const RESYNC: Duration = Duration::from_secs(3600);
/// Requeue while the cluster's CA is being created.
pub const WAIT_FOR_CA: Duration = Duration::from_secs(10);
/// Requeue while the referenced cluster does not exist or another identity holds the id.
pub const WAIT_FOR_CLUSTER: Duration = Duration::from_secs(60);

/// Why the desired state could not be built (transient: retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Signing failed.
    #[error("{what}: {source}")]
    Pki {
        /// What was being done.
        what: &'static str,
        /// The PKI error.
        source: PkiError,
    },
}

impl BuildError {
    /// Low-cardinality label for metrics.
    pub fn category(&self) -> &'static str {
        "pki"
    }
}

/// What `dereference` found about the referenced MqttCluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterFacts {
    /// The cluster's UID: the seed of the renewal jitter.
    pub uid: String,
    /// Name of the clients CA Secret (generated or `secretRef`), for messages.
    pub clients_ca_secret: String,
    /// The clients CA Secret's `tls.crt` and `tls.key` (PEM), when the Secret exists.
    pub clients_ca: Option<(String, String)>,
    /// The cluster CA bundle (PEM) the device trusts the broker with, from the cluster's CA
    /// bundle ConfigMap, when it exists.
    pub trust_bundle: Option<String>,
}

/// Everything `build` reads.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The referenced cluster; `None` when it does not exist.
    pub cluster: Option<ClusterFacts>,
    /// The device's Secret, when it exists.
    pub secret: Option<Secret>,
    /// The older DeviceIdentity holding the same deviceId in the same cluster, if any.
    pub older_holder: Option<String>,
}

/// What the identity should look like after this reconcile.
#[derive(Debug)]
pub struct Desired {
    /// The Secret to apply (`None`: leave the Secret as it is).
    pub secret: Option<Secret>,
    /// The status to write.
    pub status: DeviceIdentityStatus,
    /// Events to publish when the status is written.
    pub notes: Vec<Note>,
    /// When to reconcile again without a change (`None`: wait for a change).
    pub requeue: Option<Duration>,
    /// Why a certificate was issued in this reconcile, if one was.
    pub issued: Option<RotationReason>,
}

/// The Secret name: `spec.certificate.secretName` or `<metadata.name>-tls`.
pub fn secret_name(device: &DeviceIdentity) -> String {
    device
        .spec
        .certificate
        .as_ref()
        .and_then(|c| c.secret_name.clone())
        .unwrap_or_else(|| {
            format!(
                "{}-tls",
                device.metadata.name.as_deref().unwrap_or_default()
            )
        })
}

/// The older identity (by `creationTimestamp`, then name) among `peers` that claims the same
/// deviceId in the same namespace and cluster as `device`, if any. The oldest holder keeps the
/// id; every newer one is refused.
pub fn older_holder<'a>(
    device: &DeviceIdentity,
    peers: impl IntoIterator<Item = &'a DeviceIdentity>,
) -> Option<String> {
    let key = |d: &DeviceIdentity| {
        (
            d.metadata.creation_timestamp.as_ref().map(|t| t.0),
            d.metadata.name.clone().unwrap_or_default(),
        )
    };
    let mine = key(device);
    peers
        .into_iter()
        .filter(|p| {
            p.metadata.namespace == device.metadata.namespace
                && p.metadata.name != device.metadata.name
                && p.spec.cluster_ref.name == device.spec.cluster_ref.name
                && p.spec.device_id == device.spec.device_id
                && key(p) < mine
        })
        .min_by_key(|p| key(p))
        .and_then(|p| p.metadata.name.clone())
}

fn not_ready(
    device: &DeviceIdentity,
    reason: &'static str,
    message: String,
    requeue: Option<Duration>,
    now: SystemTime,
) -> Desired {
    Desired {
        secret: None,
        status: status::not_ready(device, reason, &message, now),
        notes: status::transition_note(device, reason, &message)
            .into_iter()
            .collect(),
        requeue,
        issued: None,
    }
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
}

fn annotation<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret
        .metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// The certificate (and key, outside CSR mode) in the existing Secret, when both are readable
/// and belong together. Anything else counts as "no certificate": it is re-issued.
fn current_material(
    secret: &Secret,
    csr_mode: bool,
) -> Option<(IssuedCertificate, Option<String>)> {
    let pem = text(secret, CERT_KEY)?;
    let der = crate::pki::inspect::pem_certificates(&pem)
        .ok()?
        .into_iter()
        .next()?;
    let cert = IssuedCertificate::from_der(der).ok()?;
    if csr_mode {
        return Some((cert, None));
    }
    let key_pem = text(secret, KEY_KEY)?;
    let key = PrivateKey::from_pem(&key_pem).ok()?;
    let spki = <[u8; 32]>::from(sha2::Sha256::digest(key.public_key_der()));
    (spki == cert.info().spki_sha256).then_some((cert, Some(key_pem)))
}

fn owner_reference(device: &DeviceIdentity) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: DeviceIdentity::api_version(&()).into_owned(),
        kind: DeviceIdentity::kind(&()).into_owned(),
        name: device.metadata.name.clone()?,
        uid: device.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// The device Secret: `tls.crt`, `tls.key` (not in CSR mode), `ca.crt`; type
/// `kubernetes.io/tls`, or `Opaque` in CSR mode (the API server requires `tls.key` in a TLS
/// Secret).
fn device_secret(
    device: &DeviceIdentity,
    name: String,
    cert_pem: String,
    key_pem: Option<String>,
    trust_bundle: &str,
    annotations: BTreeMap<String, String>,
) -> Secret {
    let labels = BTreeMap::from([
        (
            DEVICE_LABEL.to_string(),
            device.metadata.name.clone().unwrap_or_default(),
        ),
        (
            CLUSTER_LABEL.to_string(),
            device.spec.cluster_ref.name.clone(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            FIELD_MANAGER.to_string(),
        ),
    ]);
    let csr_mode = key_pem.is_none();
    let mut data = BTreeMap::from([
        (CERT_KEY.to_string(), ByteString(cert_pem.into_bytes())),
        (
            CA_KEY.to_string(),
            ByteString(trust_bundle.as_bytes().to_vec()),
        ),
    ]);
    if let Some(key) = key_pem {
        data.insert(KEY_KEY.to_string(), ByteString(key.into_bytes()));
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: device.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: owner_reference(device).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some(
            if csr_mode {
                "Opaque"
            } else {
                "kubernetes.io/tls"
            }
            .to_string(),
        ),
        data: Some(data),
        ..Secret::default()
    }
}

fn duration(value: Option<&str>) -> Option<Duration> {
    value.and_then(|v| parse_duration(v).ok())
}

/// Builds the desired state of one DeviceIdentity.
pub fn build(
    device: &DeviceIdentity,
    observed: &Observed,
    rng: &mut dyn Randomness,
    now: SystemTime,
) -> Result<Desired, BuildError> {
    // validate
    let problems: Vec<String> = validate_device(&device.spec)
        .iter()
        .map(ToString::to_string)
        .collect();
    if !problems.is_empty() {
        return Ok(not_ready(
            device,
            crds::condition::REASON_INVALID,
            problems.join("; "),
            None,
            now,
        ));
    }
    let spec = &device.spec;
    let cluster_name = &spec.cluster_ref.name;

    // states that never issue
    match spec.state {
        DeviceState::Revoked => {
            return Ok(not_ready(
                device,
                status::REASON_REVOKED,
                format!(
                    "revoked: the serials in this status are in the revoked set of MqttCluster {cluster_name}; never re-issued"
                ),
                None,
                now,
            ));
        }
        DeviceState::Suspended => {
            return Ok(not_ready(
                device,
                status::REASON_SUSPENDED,
                format!(
                    "suspended: the brokers of MqttCluster {cluster_name} refuse this identity's serials until it is Active again"
                ),
                None,
                now,
            ));
        }
        DeviceState::Active => {}
    }

    // dereferenced prerequisites
    let Some(cluster) = &observed.cluster else {
        return Ok(not_ready(
            device,
            status::REASON_CLUSTER_NOT_FOUND,
            format!("spec.clusterRef.name: MqttCluster {cluster_name} not found in this namespace"),
            Some(WAIT_FOR_CLUSTER),
            now,
        ));
    };
    if let Some(older) = &observed.older_holder {
        return Ok(not_ready(
            device,
            status::REASON_DUPLICATE,
            format!(
                "spec.deviceId: {} is already used by DeviceIdentity {older} in MqttCluster {cluster_name}",
                spec.device_id
            ),
            Some(WAIT_FOR_CLUSTER),
            now,
        ));
    }
    let (Some((ca_cert, ca_key)), Some(trust_bundle)) =
        (&cluster.clients_ca, &cluster.trust_bundle)
    else {
        return Ok(not_ready(
            device,
            status::REASON_WAITING_FOR_CA,
            format!(
                "waiting for the clients CA (Secret {}) and CA bundle of MqttCluster {cluster_name}",
                cluster.clients_ca_secret
            ),
            Some(WAIT_FOR_CA),
            now,
        ));
    };
    let clients_ca = match CertificateAuthority::from_pem(CaKind::Clients, ca_cert, ca_key) {
        Ok(ca) => ca,
        Err(e) => {
            return Ok(not_ready(
                device,
                status::REASON_CA_UNUSABLE,
                format!("clients CA Secret {}: {e}", cluster.clients_ca_secret),
                Some(WAIT_FOR_CLUSTER),
                now,
            ));
        }
    };
    let namespace = device.metadata.namespace.as_deref().unwrap_or_default();
    let device_ref = match DeviceRef::new(namespace, cluster_name, &spec.device_id) {
        Ok(d) => d,
        Err(e) => {
            return Ok(not_ready(
                device,
                crds::condition::REASON_INVALID,
                format!("spec.deviceId: {e}"),
                None,
                now,
            ));
        }
    };
    let cert_spec = spec.certificate.clone().unwrap_or_default();
    let validity =
        duration(cert_spec.validity.as_deref()).unwrap_or(DeviceCertProfile::DEFAULT_VALIDITY);
    let policy = match RenewalPolicy::new(validity, duration(cert_spec.renew_before.as_deref())) {
        Ok(p) => p,
        Err(e) => {
            return Ok(not_ready(
                device,
                crds::condition::REASON_INVALID,
                format!("spec.certificate: {e}"),
                None,
                now,
            ));
        }
    };
    let key_algorithm: KeyAlgorithm = cert_spec.key_algorithm.unwrap_or_default().into();

    // CSR mode: the CSR must pass every check before anything is signed or written.
    let csr = match &spec.csr {
        Some(pem) => match verify_csr(pem, &device_ref) {
            Ok(v) => Some(v),
            Err(e) => {
                return Ok(not_ready(
                    device,
                    crds::condition::REASON_INVALID,
                    format!("spec.{e}"),
                    None,
                    now,
                ));
            }
        },
        None => None,
    };
    let csr_sha256 = csr.as_ref().map(|c| c.sha256());

    // keep or rotate
    let rotate_token = device
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ROTATE_ANNOTATION))
        .map(String::as_str);
    let secret_name = secret_name(device);
    let current = observed
        .secret
        .as_ref()
        .and_then(|s| current_material(s, csr.is_some()).map(|m| (s, m)));
    let issued_record = current.as_ref().map(|(s, (cert, _))| DeviceIssued {
        certificate: cert.info(),
        rotate_token: annotation(s, ISSUED_FOR_ROTATE_ANNOTATION),
        csr_sha256: annotation(s, CSR_SHA256_ANNOTATION)
            .and_then(|h| hex::decode(h).ok())
            .and_then(|h| <[u8; 32]>::try_from(h).ok()),
    });
    let desired_spec = DeviceDesired {
        device: &device_ref,
        policy,
        key_algorithm,
        csr_sha256,
        rotate_token,
        clients_ca: clients_ca.info(),
        jitter_seed: cluster.uid.as_bytes(),
    };
    let decision = decide_device_rotation(&desired_spec, issued_record.as_ref(), now);

    let mut annotations = BTreeMap::new();
    if let Some(token) = rotate_token {
        annotations.insert(ISSUED_FOR_ROTATE_ANNOTATION.to_string(), token.to_string());
    }
    if let Some(h) = csr_sha256 {
        annotations.insert(CSR_SHA256_ANNOTATION.to_string(), hex::encode(h));
    }
    let old_status = device.status.clone().unwrap_or_default();

    let (cert, key_pem, renewal_time, issued) = match (decision, current) {
        (RotationDecision::Keep { renewal_time }, Some((_, (cert, key_pem)))) => {
            (cert, key_pem, renewal_time, None)
        }
        (decision, _) => {
            let reason = match decision {
                RotationDecision::Rotate(r) => r,
                RotationDecision::Keep { .. } => RotationReason::NotIssued,
            };
            let (cert, key_pem) = match &csr {
                Some(csr) => {
                    let cert = sign_device_csr(&clients_ca, &device_ref, csr, validity, rng, now)
                        .map_err(|source| BuildError::Pki {
                        what: "signing the device CSR",
                        source,
                    })?;
                    (cert, None)
                }
                None => {
                    let profile = DeviceCertProfile {
                        key_algorithm,
                        validity,
                    };
                    let creds =
                        issue_device_certificate(&clients_ca, &device_ref, &profile, rng, now)
                            .map_err(|source| BuildError::Pki {
                                what: "issuing the device certificate",
                                source,
                            })?;
                    (creds.certificate, Some(creds.key.to_pkcs8_pem()))
                }
            };
            let renewal = crate::pki::rotation::device_renewal_time(&desired_spec, cert.info());
            (cert, key_pem, renewal, Some(reason))
        }
    };
    let info: &CertificateInfo = cert.info();
    let serial = info.serial.to_string();
    let previous = status::superseded(&old_status, &serial);
    let status = status::issued(device, info, renewal_time, &secret_name, previous, now);
    let notes = match issued {
        None => Vec::new(),
        Some(reason) => {
            let rotated = old_status.serial.as_ref().is_some_and(|s| s != &serial);
            vec![Note {
                warning: false,
                reason: if rotated { "Rotated" } else { "Issued" },
                message: format!(
                    "certificate {serial} issued ({}) into Secret {secret_name}, valid until {}",
                    reason.as_str(),
                    status::rfc3339(info.validity.not_after)
                ),
            }]
        }
    };
    let secret = device_secret(
        device,
        secret_name,
        cert.pem(),
        key_pem,
        trust_bundle,
        annotations,
    );
    let requeue = renewal_time
        .duration_since(now)
        .map_or(Duration::from_secs(1), |d| {
            d.min(RESYNC).max(Duration::from_secs(1))
        });
    Ok(Desired {
        secret: Some(secret),
        status,
        notes,
        requeue: Some(requeue),
        issued,
    })
}
