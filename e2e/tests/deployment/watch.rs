//! What the operator watches: only the listed namespaces, and every decodable object even when
//! one is not.

use super::*;

#[tokio::test]
async fn a_cluster_in_an_unwatched_namespace_is_untouched() {
    let Some(bed) = e2e::shared() else { return };
    let _serial = serial().await;
    let client = bed.client().await.expect("client");
    let watched = bed.namespace("watched").await.expect("namespace");
    let unwatched = bed.namespace("unwatched").await.expect("namespace");
    let op = Instance::start(admin_config(bed).await, "op-w", &[&watched], None);
    // Applied to the unwatched namespace first: had the operator seen it, it would be
    // reconciled before the watched one.
    apply_cluster(&client, &unwatched).await;
    apply_cluster(&client, &watched).await;
    wait_cluster(&client, &watched, "CertificatesReady", certificates_ready).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let untouched = Api::<MqttCluster>::namespaced(client.clone(), &unwatched)
        .get("quickstart")
        .await
        .expect("get");
    assert!(untouched.status.is_none(), "{:?}", untouched.status);
    let lp = ListParams::default().labels(&format!("{CLUSTER_LABEL}=quickstart"));
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &unwatched)
        .list(&lp)
        .await
        .expect("list");
    let secrets = Api::<Secret>::namespaced(client.clone(), &unwatched)
        .list(&lp)
        .await
        .expect("list");
    assert!(cms.items.is_empty() && secrets.items.is_empty());

    // Nothing it asked for reaches beyond the watched namespace, except the cluster-scoped
    // CRD lookup (monitoring discovery) the chart's ClusterRole keeps.
    let outside: Vec<_> = op
        .log
        .sent()
        .into_iter()
        .filter_map(|s| s.attributes())
        .filter(|a| {
            a.namespace.as_deref() != Some(watched.as_str())
                && a.resource != "customresourcedefinitions"
        })
        .collect();
    assert!(
        outside.is_empty(),
        "requests outside {watched}: {outside:#?}"
    );
}

/// The API server (1.20, and current ones: `format: int32` is not range-checked) stores an
/// MqttCluster whose `spec.core.replicas` does not fit the i32 it decodes into. Without a guard
/// the controller's initial list fails on it, and no cluster in its namespaces is reconciled.
#[tokio::test]
async fn an_undecodable_object_does_not_stall_the_others() {
    let Some(bed) = e2e::shared() else { return };
    let _serial = serial().await;
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("undecodable").await.expect("namespace");

    let quickstart = manifests::quickstart().expect("read the quickstart");
    let mut broken = manifests::first_of_kind(&quickstart, "MqttCluster")
        .expect("MqttCluster")
        .clone();
    broken.value["metadata"]["name"] = "broken".into();
    broken.value["spec"]["core"]["replicas"] = 3_000_000_000u64.into();
    manifests::apply(&client, &broken, &ns)
        .await
        .expect("the API server stores the out-of-range replicas");
    let typed = Api::<MqttCluster>::namespaced(client.clone(), &ns)
        .get("broken")
        .await;
    assert!(
        typed.is_err(),
        "the stored object must not decode as MqttCluster for this test to mean anything"
    );

    // Started after the broken object exists: it is in the controller's initial list.
    let _op = Instance::start(admin_config(bed).await, "op-guard", &[&ns], None);
    apply_cluster(&client, &ns).await;
    wait_cluster(&client, &ns, "CertificatesReady", certificates_ready).await;

    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), &ns);
    wait::until("Event Undecodable for broken", CONVERGE, || async {
        match events.list(&ListParams::default()).await {
            Ok(list) => match list.items.iter().find(|e| {
                e.reason.as_deref() == Some("Undecodable")
                    && e.involved_object.name.as_deref() == Some("broken")
            }) {
                Some(e) => Check::Done(e.message.clone().unwrap_or_default()),
                None => Check::NotYet(format!("{} events", list.items.len())),
            },
            Err(e) => Check::NotYet(e.to_string()),
        }
    })
    .await
    .expect("Undecodable Event");
}
