//! What the controller-manager does for us (garbage collection, StatefulSet Pods) and the known
//! gaps of Kubernetes 1.20, asserted so nobody mistakes them for our bugs.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ObjectMeta, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{json, Value};

use e2e::manifests::{self, Manifest};
use e2e::wait::{self, Check};

fn quickstart_cluster() -> Manifest {
    let examples = manifests::quickstart().expect("read the quickstart");
    manifests::first_of_kind(&examples, "MqttCluster")
        .expect("quickstart MqttCluster")
        .clone()
}

fn config_map(name: &str, owner: Option<OwnerReference>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..ConfigMap::default()
    }
}

#[tokio::test]
async fn garbage_collector_deletes_a_configmap_owned_by_a_custom_resource() {
    let Some(bed) = e2e::shared() else { return };
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("gc").await.expect("namespace");
    let example = quickstart_cluster();
    let owner = manifests::apply(&client, &example, &ns)
        .await
        .expect("apply MqttCluster");
    let owner_ref = OwnerReference {
        api_version: example.value["apiVersion"].as_str().unwrap().to_string(),
        kind: "MqttCluster".to_string(),
        name: owner.metadata.name.clone().unwrap(),
        uid: owner.metadata.uid.clone().expect("uid"),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let pp = PostParams::default();
    config_maps
        .create(&pp, &config_map("owned", Some(owner_ref)))
        .await
        .expect("owned ConfigMap");
    config_maps
        .create(&pp, &config_map("unowned", None))
        .await
        .expect("control ConfigMap");

    let owners = manifests::api_for(&client, &example, &ns)
        .await
        .expect("api");
    owners
        .delete(
            owner.metadata.name.as_deref().unwrap(),
            &DeleteParams::background(),
        )
        .await
        .expect("delete the MqttCluster");
    wait::until(
        "the garbage collector to delete ConfigMap owned",
        Duration::from_secs(90),
        || {
            let config_maps = config_maps.clone();
            async move {
                match config_maps.get_opt("owned").await {
                    Ok(None) => Check::Done(()),
                    Ok(Some(cm)) => Check::NotYet(format!(
                        "still there (deletionTimestamp {:?})",
                        cm.metadata.deletion_timestamp
                    )),
                    Err(e) => Check::NotYet(e.to_string()),
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        config_maps.get_opt("unowned").await.expect("get").is_some(),
        "the ConfigMap without owner must survive"
    );
}

#[tokio::test]
async fn statefulset_controller_creates_pods_without_a_kubelet() {
    let Some(bed) = e2e::shared() else { return };
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("sts").await.expect("namespace");
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "core"},
        "spec": {
            "replicas": 1,
            "serviceName": "core",
            "selector": {"matchLabels": {"app": "core"}},
            "template": {
                "metadata": {"labels": {"app": "core"}},
                "spec": {"containers": [{"name": "broker", "image": "registry.invalid/broker:0"}]},
            },
        },
    }))
    .unwrap();
    Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &sts)
        .await
        .expect("create StatefulSet");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = wait::until(
        "the StatefulSet controller to create Pod core-0",
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            async move {
                match pods.get_opt("core-0").await {
                    Ok(Some(pod)) => Check::Done(pod),
                    Ok(None) => Check::NotYet("no Pod core-0 yet".to_string()),
                    Err(e) => Check::NotYet(e.to_string()),
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let owners = pod.metadata.owner_references.unwrap_or_default();
    assert!(
        owners
            .iter()
            .any(|o| o.kind == "StatefulSet" && o.name == "core"),
        "{owners:?}"
    );
    // No kubelet: the Pod is never scheduled or run.
    assert_eq!(pod.spec.and_then(|s| s.node_name), None);
}

#[tokio::test]
async fn the_server_is_1_20_and_serves_pdbs_only_as_policy_v1beta1() {
    let Some(bed) = e2e::shared() else { return };
    let client = bed.client().await.expect("client");
    let version = client.apiserver_version().await.expect("/version");
    assert_eq!(version.git_version, format!("v{}", e2e::KUBERNETES_VERSION));

    let req = http::Request::get("/apis/policy").body(Vec::new()).unwrap();
    let group: Value = client
        .request(req)
        .await
        .expect("discovery of group policy");
    let versions: Vec<&str> = group["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter_map(|v| v["version"].as_str())
        .collect();
    assert!(
        versions.contains(&"v1beta1"),
        "policy versions: {versions:?}"
    );
    assert!(
        !versions.contains(&"v1"),
        "1.20 has no policy/v1 (PDB v1 is 1.21+): {versions:?}"
    );

    // A v1beta1 PodDisruptionBudget is accepted.
    let ns = bed.namespace("pdb").await.expect("namespace");
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy", "v1beta1", "PodDisruptionBudget"),
        "poddisruptionbudgets",
    );
    let pdbs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
    let pdb: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "policy/v1beta1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "core"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "core"}}},
    }))
    .unwrap();
    pdbs.create(&PostParams::default(), &pdb)
        .await
        .expect("create a policy/v1beta1 PDB");
}

/// 1.20 knows nothing of `x-kubernetes-validations` (CEL, 1.25+): server-side apply of a CRD
/// carrying rules fails outright, a plain create silently drops the rules, and objects breaking
/// them are stored. So the operator's pure validators are the only enforcement on 1.20.
#[tokio::test]
async fn cel_validation_rules_are_not_supported_by_1_20() {
    let Some(bed) = e2e::shared() else { return };
    let client = bed.client().await.expect("client");
    let crd_value = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "celprobes.e2e.mqtt.operator.dev"},
        "spec": {
            "group": "e2e.mqtt.operator.dev",
            "scope": "Namespaced",
            "names": {"kind": "CelProbe", "plural": "celprobes", "singular": "celprobe", "listKind": "CelProbeList"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "x-kubernetes-validations": [{"rule": "self.replicas <= 3", "message": "at most 3"}],
                        "properties": {"replicas": {"type": "integer"}},
                    }},
                }},
            }],
        },
    });
    let crd = Manifest {
        path: "inline CelProbe CRD".into(),
        value: crd_value.clone(),
    };

    // Server-side apply: the 1.20 schema of CRDs has no such field.
    let err = manifests::apply_crds(&client, std::slice::from_ref(&crd))
        .await
        .expect_err("1.20 server-side apply should refuse x-kubernetes-validations");
    let message = err
        .server_status()
        .map(|s| s.message.clone())
        .unwrap_or_else(|| err.to_string());
    assert!(
        message.contains("x-kubernetes-validations"),
        "unexpected refusal: {message}"
    );

    // Plain create: accepted, rules dropped.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let typed: CustomResourceDefinition = serde_json::from_value(crd_value).unwrap();
    crds.create(&PostParams::default(), &typed)
        .await
        .expect("create CRD");
    let name = "celprobes.e2e.mqtt.operator.dev".to_string();
    manifests::wait_established(
        &client,
        std::slice::from_ref(&name),
        Duration::from_secs(30),
    )
    .await
    .expect("established");
    let stored = crds.get(&name).await.expect("get CRD");
    let spec_schema = stored.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| s.properties.as_ref())
        .and_then(|p| p.get("spec"))
        .expect("stored spec schema");
    assert_eq!(
        spec_schema.x_kubernetes_validations, None,
        "1.20 should drop the rules"
    );

    let ns = bed.namespace("cel").await.expect("namespace");
    let object = Manifest {
        path: "inline CelProbe".into(),
        value: json!({
            "apiVersion": "e2e.mqtt.operator.dev/v1",
            "kind": "CelProbe",
            "metadata": {"name": "too-many"},
            "spec": {"replicas": 5},
        }),
    };
    // Discovery of a just-established group can lag a moment; bounded retry.
    let created = wait::until(
        "a CelProbe breaking its CEL rule to be stored",
        Duration::from_secs(30),
        || {
            let (client, object, ns) = (client.clone(), object.clone(), ns.clone());
            async move { wait::check("apply", manifests::apply(&client, &object, &ns).await) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        created.data["spec"]["replicas"], 5,
        "1.20 does not enforce CEL rules"
    );
}
