//! Broker server certificates: serverAuth, signed by the cluster CA, with every core pod DNS
//! name and the service names as SANs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime};

use rcgen::SanType;

use super::issue::{sign_leaf, LeafRequest, LeafUsage};
use super::names::{check_dns_label, check_dns_name};
use super::{
    CaKind, CertificateAuthority, Credentials, KeyAlgorithm, PkiError, PrivateKey, Randomness,
};
use crate::render::names::Names;

/// What the broker server certificate must cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCertRequest {
    /// Namespace of the `MqttCluster`.
    pub namespace: String,
    /// Name of the `MqttCluster`.
    pub cluster: String,
    /// Number of core pods (`<cluster>-core-0` .. `<cluster>-core-<n-1>`).
    pub core_replicas: u32,
    /// Kubernetes cluster domain (`cluster.local`).
    pub cluster_domain: String,
    /// More DNS names (a LoadBalancer hostname, an ingress name...).
    pub extra_dns_names: Vec<String>,
    /// Add `localhost`, `127.0.0.1` and `::1` (local mode, tests).
    pub include_loopback: bool,
    /// Add EKU clientAuth so nodes can present the same certificate when dialling each other.
    pub inter_node_client_auth: bool,
    /// Key algorithm.
    pub key_algorithm: KeyAlgorithm,
    /// Certificate lifetime.
    pub validity: Duration,
}

impl ServerCertRequest {
    /// Default server certificate validity: one year.
    pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(365 * 86_400);

    /// A request with the defaults (`cluster.local`, ECDSA P-256, one year, no extras).
    pub fn new(namespace: &str, cluster: &str, core_replicas: u32) -> Self {
        ServerCertRequest {
            namespace: namespace.to_string(),
            cluster: cluster.to_string(),
            core_replicas,
            cluster_domain: "cluster.local".into(),
            extra_dns_names: Vec::new(),
            include_loopback: false,
            inter_node_client_auth: false,
            key_algorithm: KeyAlgorithm::EcdsaP256,
            validity: Self::DEFAULT_VALIDITY,
        }
    }

    fn names(&self) -> Names {
        Names::new(&self.cluster)
    }

    /// The client Service name (`<cluster>`, from [`crate::render::names`]).
    pub fn client_service(&self) -> String {
        self.names().client_service()
    }

    /// The headless Service of the core StatefulSet (`<cluster>-core`).
    pub fn headless_service(&self) -> String {
        self.names().core()
    }

    /// Every DNS SAN, in a stable order without duplicates: each core pod
    /// (`<cluster>-core-<n>.<cluster>-core.<ns>.svc` and `.svc.<domain>`), then each Service in
    /// all its forms (`<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc`, `<svc>.<ns>.svc.<domain>`), then
    /// the extras, then `localhost` when loopback is asked.
    pub fn dns_names(&self) -> Vec<String> {
        let (ns, domain, headless) = (
            &self.namespace,
            &self.cluster_domain,
            self.headless_service(),
        );
        let mut names = Vec::new();
        for n in 0..self.core_replicas {
            let pod = self.names().pod_dns(n as i32, ns);
            names.push(format!("{pod}.{domain}"));
            names.push(pod);
        }
        for svc in [self.client_service(), headless] {
            names.push(svc.clone());
            names.push(format!("{svc}.{ns}"));
            names.push(format!("{svc}.{ns}.svc"));
            names.push(format!("{svc}.{ns}.svc.{domain}"));
        }
        names.extend(self.extra_dns_names.iter().cloned());
        if self.include_loopback {
            names.push("localhost".into());
        }
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| seen.insert(n.clone()));
        names
    }

    /// IP SANs: loopback when asked, nothing otherwise.
    pub fn ip_addresses(&self) -> Vec<IpAddr> {
        if self.include_loopback {
            vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]
        } else {
            Vec::new()
        }
    }

    fn validate(&self) -> Result<(), PkiError> {
        if self.core_replicas > 1000 {
            return Err(PkiError::Name {
                name: self.cluster.clone(),
                reason: format!(
                    "{} core replicas is not a plausible cluster",
                    self.core_replicas
                ),
            });
        }
        check_dns_label("namespace", &self.namespace)?;
        check_dns_label("cluster", &self.cluster)?;
        if self.core_replicas == 0 {
            return Err(PkiError::Name {
                name: self.cluster.clone(),
                reason: "a server certificate needs at least one core replica".into(),
            });
        }
        for name in self.dns_names() {
            check_dns_name(&name)?;
        }
        Ok(())
    }
}

/// Generates a key and signs the broker server certificate with the cluster CA.
pub fn issue_server_certificate(
    cluster_ca: &CertificateAuthority,
    request: &ServerCertRequest,
    rng: &mut dyn Randomness,
    now: SystemTime,
) -> Result<Credentials, PkiError> {
    request.validate()?;
    if cluster_ca.kind() != CaKind::Cluster {
        return Err(PkiError::CaUnusable(
            "server certificates are signed by the cluster CA, not the clients CA".into(),
        ));
    }
    let key = PrivateKey::generate(request.key_algorithm, rng)?;
    let mut sans = Vec::new();
    for name in request.dns_names() {
        sans.push(SanType::DnsName(name.clone().try_into().map_err(|_| {
            PkiError::Name {
                name,
                reason: "not an IA5 string".into(),
            }
        })?));
    }
    sans.extend(request.ip_addresses().into_iter().map(SanType::IpAddress));
    let leaf = LeafRequest {
        what: format!("server certificate for {}", request.cluster),
        common_name: format!("{}.{}.svc", request.client_service(), request.namespace),
        sans,
        usage: LeafUsage::Server {
            also_client: request.inter_node_client_auth,
        },
        validity: request.validity,
    };
    let certificate = sign_leaf(cluster_ca, leaf, &key, rng, now)?;
    Ok(Credentials { certificate, key })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CaProfile, SeededRandomness};
    use std::time::UNIX_EPOCH;

    #[test]
    fn dns_names_cover_every_pod_and_service() {
        let names = ServerCertRequest::new("iot", "edge", 3).dns_names();
        for n in 0..3 {
            assert!(names.contains(&format!("edge-core-{n}.edge-core.iot.svc")));
            assert!(names.contains(&format!("edge-core-{n}.edge-core.iot.svc.cluster.local")));
        }
        for svc in ["edge", "edge-core"] {
            for form in ["", ".iot", ".iot.svc", ".iot.svc.cluster.local"] {
                assert!(names.contains(&format!("{svc}{form}")), "{svc}{form}");
            }
        }
        assert_eq!(names.len(), 3 * 2 + 2 * 4);
        assert!(!names.contains(&"localhost".to_string()));
    }

    #[test]
    fn server_certificate_carries_names_usage_and_loopback_on_request() {
        let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        let mut rng = SeededRandomness::new(b"srv");
        let ca = CertificateAuthority::generate(
            &CaProfile::new(CaKind::Cluster, "iot", "edge"),
            &mut rng,
            now,
        )
        .unwrap();
        let mut req = ServerCertRequest::new("iot", "edge", 3);
        req.include_loopback = true;
        req.extra_dns_names = vec!["mqtt.example.com".into()];
        let creds = issue_server_certificate(&ca, &req, &mut rng, now).unwrap();
        let info = creds.certificate.info();
        assert_eq!(info.dns_names, req.dns_names());
        assert!(info.dns_names.contains(&"mqtt.example.com".to_string()));
        assert_eq!(info.ip_addresses, req.ip_addresses());
        assert!(info.server_auth && !info.client_auth);
        assert!(info.issued_by(ca.info()));

        req.inter_node_client_auth = true;
        let both = issue_server_certificate(&ca, &req, &mut rng, now).unwrap();
        assert!(both.certificate.info().server_auth && both.certificate.info().client_auth);

        let bad = ServerCertRequest::new("iot", "edge", 0);
        assert!(issue_server_certificate(&ca, &bad, &mut rng, now).is_err());
    }
}
