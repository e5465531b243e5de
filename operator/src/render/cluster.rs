//! The Kubernetes objects that run an MqttCluster's core nodes: StatefulSet, headless and
//! client Services, PodDisruptionBudget and NetworkPolicy. Pure: spec in, objects out.

use std::collections::BTreeMap;

use crds::cluster::{ImagePullPolicy, ServiceType};
use crds::MqttCluster;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm,
    PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecurityContext, Service, ServicePort, ServiceSpec, VolumeMount, VolumeResourceRequirements,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use serde_json::{json, Value};

use super::names::{self, Names};

/// Image used when `spec.image` is unset.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/mqtt-operator/broker:", env!("CARGO_PKG_VERSION"));

/// Which PodDisruptionBudget API the server offers (discovered by the controller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PdbApi {
    /// `policy/v1` (Kubernetes 1.21+).
    V1,
    /// `policy/v1beta1` (Kubernetes ≤ 1.24; the test bed's 1.20).
    V1Beta1,
}

/// The core objects of one cluster.
#[derive(Debug, Clone)]
pub struct CoreObjects {
    /// The core StatefulSet.
    pub stateful_set: StatefulSet,
    /// Headless Service giving each pod a stable DNS name (raft peers).
    pub headless_service: Service,
    /// Client Service exposing the enabled listeners.
    pub client_service: Service,
    /// PodDisruptionBudget, as JSON because its API version is chosen at runtime.
    pub pod_disruption_budget: Value,
    /// NetworkPolicy: listeners and HTTP from anywhere, raft/gRPC only between core pods.
    pub network_policy: NetworkPolicy,
}

/// The owner reference every child carries (controller = true, so deleting the cluster
/// garbage-collects it).
pub fn owner_reference(cluster: &MqttCluster) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: MqttCluster::api_version(&()).into_owned(),
        kind: MqttCluster::kind(&()).into_owned(),
        name: cluster.metadata.name.clone()?,
        uid: cluster.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// Metadata for a child named `name`, with the cluster's labels and owner reference.
pub fn child_meta(cluster: &MqttCluster, name: String) -> ObjectMeta {
    let names = Names::new(cluster.metadata.name.as_deref().unwrap_or_default());
    ObjectMeta {
        name: Some(name),
        namespace: cluster.metadata.namespace.clone(),
        labels: Some(names.labels()),
        owner_references: owner_reference(cluster).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// Enabled client listeners: (port name, port).
fn listener_ports(cluster: &MqttCluster) -> Vec<(&'static str, i32)> {
    let l = &cluster.spec.listeners;
    let mut ports = Vec::new();
    if l.mqtts.enabled {
        ports.push(("mqtts", l.mqtts.port));
    }
    if let Some(w) = l.wss.as_ref().filter(|w| w.enabled) {
        ports.push(("wss", w.port));
    }
    if let Some(m) = l.mqtt.as_ref().filter(|m| m.enabled) {
        ports.push(("mqtt", m.port));
    }
    ports
}

fn internal_ports() -> [(&'static str, i32); 3] {
    [
        ("http", names::HTTP_PORT),
        ("raft", names::RAFT_PORT),
        ("grpc", names::GRPC_PORT),
    ]
}

fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port,
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

/// Renders the core objects. `config_hash` is the hash of the restart-requiring configuration
/// (changing it rolls the pods one at a time); `pdb_api` is what the server serves.
pub fn core_objects(cluster: &MqttCluster, config_hash: &str, pdb_api: PdbApi) -> CoreObjects {
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    let names = Names::new(name);
    let spec = &cluster.spec;
    let selector = LabelSelector {
        match_labels: Some(names.selector_labels()),
        ..LabelSelector::default()
    };

    let mut all_ports = listener_ports(cluster);
    all_ports.extend(internal_ports());

    let headless_service = Service {
        metadata: child_meta(cluster, names.core()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // Raft peers must resolve each other before they are ready.
            publish_not_ready_addresses: Some(true),
            selector: Some(names.selector_labels()),
            ports: Some(all_ports.iter().map(|(n, p)| service_port(n, *p)).collect()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };

    let mut client_meta = child_meta(cluster, names.client_service());
    if let Some(labels) = client_meta.labels.as_mut() {
        labels.insert("app.kubernetes.io/component".into(), "client".into());
    }
    if !spec.listeners.service.annotations.is_empty() {
        client_meta.annotations = Some(spec.listeners.service.annotations.clone());
    }
    let service_type = spec.listeners.service.type_;
    let client_service = Service {
        metadata: client_meta,
        spec: Some(ServiceSpec {
            type_: Some(
                match service_type {
                    ServiceType::ClusterIP => "ClusterIP",
                    ServiceType::NodePort => "NodePort",
                    ServiceType::LoadBalancer => "LoadBalancer",
                }
                .into(),
            ),
            selector: Some(names.selector_labels()),
            ports: Some(
                listener_ports(cluster)
                    .iter()
                    .map(|(n, p)| service_port(n, *p))
                    .collect(),
            ),
            load_balancer_source_ranges: (service_type == ServiceType::LoadBalancer
                && !spec
                    .listeners
                    .service
                    .load_balancer_source_ranges
                    .is_empty())
            .then(|| spec.listeners.service.load_balancer_source_ranges.clone()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };

    let http_probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Probe::default()
    };

    let container = Container {
        name: "broker".into(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| DEFAULT_IMAGE.to_string()),
        ),
        image_pull_policy: spec.image_pull_policy.map(|p| {
            match p {
                ImagePullPolicy::Always => "Always",
                ImagePullPolicy::IfNotPresent => "IfNotPresent",
                ImagePullPolicy::Never => "Never",
            }
            .to_string()
        }),
        args: Some(vec![
            "--config-dir".into(),
            names::CONFIG_DIR.into(),
            "--runtime-dir".into(),
            names::RUNTIME_DIR.into(),
        ]),
        env: Some(vec![EnvVar {
            name: "POD_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }]),
        ports: Some(
            all_ports
                .iter()
                .map(|(n, p)| ContainerPort {
                    name: Some(n.to_string()),
                    container_port: *p,
                    protocol: Some("TCP".into()),
                    ..ContainerPort::default()
                })
                .collect(),
        ),
        readiness_probe: Some(http_probe("/readyz", 5)),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(10),
            ..http_probe("/healthz", 10)
        }),
        resources: spec.core.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: names::CONFIG_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "data".into(),
                mount_path: names::DATA_DIR.into(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };

    let scheduling = spec.core.scheduling.clone().unwrap_or_default();
    let affinity = scheduling.affinity.clone().or_else(|| {
        Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 100,
                        pod_affinity_term: PodAffinityTerm {
                            label_selector: Some(selector.clone()),
                            topology_key: "kubernetes.io/hostname".into(),
                            ..PodAffinityTerm::default()
                        },
                    },
                ]),
                ..PodAntiAffinity::default()
            }),
            ..Affinity::default()
        })
    });

    let mut template_labels = names.labels();
    template_labels.retain(|k, _| k != "app.kubernetes.io/managed-by");
    let pod = PodSpec {
        containers: vec![container],
        volumes: Some(vec![super::config_dir::volume(&names)]),
        affinity,
        node_selector: scheduling.node_selector.clone(),
        tolerations: scheduling.tolerations.clone(),
        topology_spread_constraints: scheduling.topology_spread_constraints.clone(),
        termination_grace_period_seconds: Some(60),
        automount_service_account_token: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65_532),
            run_as_group: Some(65_532),
            fs_group: Some(65_532),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        ..PodSpec::default()
    };

    let storage = &spec.core.storage;
    let pvc = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(names.selector_labels()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".into(), storage.size.clone())])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };

    let stateful_set = StatefulSet {
        metadata: child_meta(cluster, names.core()),
        spec: Some(StatefulSetSpec {
            replicas: Some(spec.core.replicas),
            service_name: Some(names.core()),
            selector: selector.clone(),
            // Pods start in order and each waits for the previous to be ready (joined raft);
            // rolling updates replace one pod at a time, waiting for readiness.
            pod_management_policy: Some("OrderedReady".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(template_labels),
                    annotations: Some(BTreeMap::from([(
                        names::CONFIG_HASH_ANNOTATION.to_string(),
                        config_hash.to_string(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            volume_claim_templates: Some(vec![pvc]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    };

    let pdb_meta = child_meta(cluster, names.core());
    let pod_disruption_budget = json!({
        "apiVersion": match pdb_api { PdbApi::V1 => "policy/v1", PdbApi::V1Beta1 => "policy/v1beta1" },
        "kind": "PodDisruptionBudget",
        "metadata": pdb_meta,
        "spec": {
            "maxUnavailable": spec.pod_disruption_budget.max_unavailable,
            "selector": selector,
        },
    });

    let tcp = |p: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(p)),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    };
    let mut open_ports: Vec<_> = listener_ports(cluster)
        .iter()
        .map(|(_, p)| tcp(*p))
        .collect();
    open_ports.push(tcp(names::HTTP_PORT));
    let network_policy = NetworkPolicy {
        metadata: child_meta(cluster, names.core()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector.clone()),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                // Clients, Prometheus and the operator's push (token-authenticated).
                NetworkPolicyIngressRule {
                    ports: Some(open_ports),
                    from: None,
                },
                // Raft and inter-node traffic only between this cluster's core pods.
                NetworkPolicyIngressRule {
                    ports: Some(vec![tcp(names::RAFT_PORT), tcp(names::GRPC_PORT)]),
                    from: Some(vec![NetworkPolicyPeer {
                        pod_selector: Some(selector),
                        ..NetworkPolicyPeer::default()
                    }]),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    };

    CoreObjects {
        stateful_set,
        headless_service,
        client_service,
        pod_disruption_budget,
        network_policy,
    }
}
