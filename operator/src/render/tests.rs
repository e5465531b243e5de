use crds::MqttCluster;
use k8s_openapi::api::core::v1::Service;

use super::cluster::{core_objects, PdbApi};

fn cluster(yaml: &str) -> MqttCluster {
    let mut c: MqttCluster = serde_yaml::from_str(yaml).unwrap();
    c.metadata.namespace = Some("iot".into());
    c.metadata.uid = Some("0000-uid".into());
    c
}

const QS: &str =
    "apiVersion: mqtt.operator.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: qs}\nspec: {}\n";

fn ports(s: &Service) -> Vec<(String, i32)> {
    s.spec
        .as_ref()
        .unwrap()
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.name.clone().unwrap(), p.port))
        .collect()
}

#[test]
fn statefulset_follows_the_spec() {
    let c = cluster(QS);
    let o = core_objects(&c, "hash-1", PdbApi::V1);
    let sts = o.stateful_set.spec.as_ref().unwrap();
    assert_eq!(o.stateful_set.metadata.name.as_deref(), Some("qs-core"));
    assert_eq!(sts.replicas, Some(3));
    assert_eq!(sts.service_name.as_deref(), Some("qs-core"));
    assert_eq!(sts.pod_management_policy.as_deref(), Some("OrderedReady"));
    let tpl = &sts.template;
    assert_eq!(
        tpl.metadata.as_ref().unwrap().annotations.as_ref().unwrap()
            ["mqtt.operator.dev/config-hash"],
        "hash-1"
    );
    let pod = tpl.spec.as_ref().unwrap();
    let anti = pod
        .affinity
        .as_ref()
        .unwrap()
        .pod_anti_affinity
        .as_ref()
        .unwrap();
    assert!(
        anti.preferred_during_scheduling_ignored_during_execution
            .is_some(),
        "anti-affinity by default"
    );
    let ctr = &pod.containers[0];
    let ready = ctr
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(ready.path.as_deref(), Some("/readyz"));
    let sc = ctr.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sts.volume_claim_templates.as_ref().unwrap()[0]
            .spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "1Gi"
    );
    // Owner reference for garbage collection.
    let owner = &o.stateful_set.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("MqttCluster", "qs", Some(true))
    );
}

#[test]
fn user_affinity_replaces_the_default_and_scheduling_passes_through() {
    let c = cluster(
        "apiVersion: mqtt.operator.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: qs}\nspec:\n  core:\n    replicas: 5\n    scheduling:\n      nodeSelector: {pool: mqtt}\n      tolerations: [{key: dedicated, operator: Equal, value: mqtt, effect: NoSchedule}]\n      affinity: {nodeAffinity: {}}\n",
    );
    let o = core_objects(&c, "h", PdbApi::V1);
    let pod = o.stateful_set.spec.unwrap().template.spec.unwrap();
    assert!(pod.affinity.unwrap().pod_anti_affinity.is_none());
    assert_eq!(pod.node_selector.unwrap()["pool"], "mqtt");
    assert_eq!(
        pod.tolerations.unwrap()[0].key.as_deref(),
        Some("dedicated")
    );
}

#[test]
fn services_expose_enabled_listeners_only() {
    let c = cluster(
        "apiVersion: mqtt.operator.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: qs}\nspec:\n  listeners:\n    wss: {enabled: true, port: 8443}\n    mqtt: {enabled: false}\n    service: {type: LoadBalancer, loadBalancerSourceRanges: [10.0.0.0/8], annotations: {a: b}}\n",
    );
    let o = core_objects(&c, "h", PdbApi::V1);
    assert_eq!(
        ports(&o.client_service),
        [("mqtts".to_string(), 8883), ("wss".to_string(), 8443)]
    );
    let spec = o.client_service.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(
        spec.load_balancer_source_ranges.as_deref(),
        Some(&["10.0.0.0/8".to_string()][..])
    );
    assert_eq!(
        o.client_service.metadata.annotations.as_ref().unwrap()["a"],
        "b"
    );
    let headless = o.headless_service.spec.as_ref().unwrap();
    assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    assert_eq!(headless.publish_not_ready_addresses, Some(true));
    let names: Vec<_> = ports(&o.headless_service)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["mqtts", "wss", "http", "raft", "grpc"]);
}

#[test]
fn pdb_api_version_is_the_discovered_one() {
    let c = cluster(QS);
    assert_eq!(
        core_objects(&c, "h", PdbApi::V1).pod_disruption_budget["apiVersion"],
        "policy/v1"
    );
    let pdb = core_objects(&c, "h", PdbApi::V1Beta1).pod_disruption_budget;
    assert_eq!(pdb["apiVersion"], "policy/v1beta1");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(pdb["metadata"]["ownerReferences"][0]["kind"], "MqttCluster");
}

#[test]
fn network_policy_keeps_raft_inside_the_cluster() {
    let o = core_objects(&cluster(QS), "h", PdbApi::V1);
    let ingress = o.network_policy.spec.unwrap().ingress.unwrap();
    assert!(ingress[0].from.is_none());
    let raft_from = ingress[1].from.as_ref().unwrap();
    assert!(raft_from[0].pod_selector.is_some());
}
