//! The rendered chart on the real test bed (Kubernetes 1.20.2) with a current kubectl (1.33):
//! `manifests/install.yaml` and a `watchNamespaces` release apply server-side (dry run, then for
//! real), the Deployment is stored as written, and the API server's own authorizer grants the
//! operator's ServiceAccount every rule of `operator::rbac`, where it should, and nothing more.
//!
//! helm/kubectl come from `scripts/install-helm.sh`, the bed from `e2e/testbed/install.sh`;
//! without them these tests skip (printing why) when run by hand and fail under CI.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;

use e2e::access::{allowed, wait_allowed, Access};
use e2e::bed::repo_root;
use e2e::tools::{run_ok, yaml_documents, CommandOutput};

/// How long RBAC objects just applied may take to reach the authorizer.
const RBAC_PROPAGATION: Duration = Duration::from_secs(15);

fn ok(command: std::process::Command) -> CommandOutput {
    run_ok(command).unwrap_or_else(|e| panic!("{e}"))
}

async fn may(client: &kube::Client, sa_ns: &str, sa: &str, access: Access<'_>) -> bool {
    allowed(client, sa_ns, sa, access)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn install_yaml_applies_to_the_test_bed_and_grants_exactly_the_rules() {
    let Some(tools) = e2e::tools_or_skip() else {
        return;
    };
    let Some(bed) = e2e::shared() else { return };
    let kubeconfig = bed.kubeconfig_path();
    let install = repo_root().join("manifests/install.yaml");
    let install = install.to_str().unwrap();

    // Server-side dry run first: the server validates everything and stores nothing. A dry run
    // cannot create the namespace the namespaced objects go to, so that one is created first.
    ok(tools.kubectl(kubeconfig, &["create", "namespace", "mqtt-operator"]));
    let dry = ok(tools.kubectl(
        kubeconfig,
        &["apply", "--server-side", "--dry-run=server", "-f", install],
    ));
    assert!(
        dry.stdout
            .contains("deployment.apps/mqtt-operator serverside-applied (server dry run)"),
        "{}",
        dry.all()
    );
    let client = bed.client().await.expect("client");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "mqtt-operator");
    assert!(
        deployments
            .get_opt("mqtt-operator")
            .await
            .expect("get")
            .is_none(),
        "a dry run stored the Deployment"
    );

    let applied = ok(tools.kubectl(kubeconfig, &["apply", "--server-side", "-f", install]));
    let applied_lines = applied.stdout.lines().count();
    assert_eq!(
        applied_lines,
        yaml_documents(&std::fs::read_to_string(install).unwrap())
            .unwrap()
            .len(),
        "one line per object:\n{}",
        applied.all()
    );
    // Applying again is a no-op that still succeeds.
    ok(tools.kubectl(kubeconfig, &["apply", "--server-side", "-f", install]));

    // The Deployment is stored as written (1.20 keeps every hardening field).
    let stored = deployments
        .get("mqtt-operator")
        .await
        .expect("the Deployment was stored");
    let stored = serde_json::to_value(&stored).unwrap();
    let pod = &stored["spec"]["template"]["spec"];
    assert_eq!(stored["spec"]["replicas"], 2);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let sc = &pod["containers"][0]["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        pod["containers"][0]["readinessProbe"]["httpGet"]["path"],
        "/healthz"
    );

    // The API server's authorizer grants the ServiceAccount every rule, where it should ...
    let (sa_ns, sa) = ("mqtt-operator", "mqtt-operator");
    for (group, resource, namespace) in [
        ("apps", "statefulsets", None),
        ("coordination.k8s.io", "leases", Some("mqtt-operator")),
    ] {
        let access = Access {
            verb: "get",
            group,
            resource,
            namespace,
        };
        wait_allowed(&client, sa_ns, sa, access, RBAC_PROPAGATION)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    for rule in operator::rbac::RULES {
        let namespace = match rule.scope {
            operator::rbac::Scope::Watched => Some("some-team"),
            operator::rbac::Scope::Cluster => None,
            operator::rbac::Scope::OperatorNamespace => Some("mqtt-operator"),
        };
        for group in rule.api_groups {
            for resource in rule.resources {
                for verb in rule.verbs {
                    let access = Access {
                        verb,
                        group,
                        resource,
                        namespace,
                    };
                    assert!(
                        may(&client, sa_ns, sa, access).await,
                        "{sa} denied {access:?}"
                    );
                }
            }
        }
    }
    // ... and nothing beyond: no pod writes, no RBAC, no Lease outside its namespace, no
    // deletecollection, no cluster-scoped writes, no creating or deleting the custom resources.
    let team = Some("some-team");
    for (verb, group, resource, namespace) in [
        ("delete", "", "pods", team),
        ("create", "", "pods", team),
        ("create", "", "pods/exec", team),
        ("update", "", "secrets", team),
        ("deletecollection", "", "secrets", team),
        ("create", "rbac.authorization.k8s.io", "clusterroles", None),
        ("create", "rbac.authorization.k8s.io", "rolebindings", team),
        ("create", "coordination.k8s.io", "leases", team),
        (
            "delete",
            "coordination.k8s.io",
            "leases",
            Some("mqtt-operator"),
        ),
        (
            "create",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
        ),
        ("create", "apps", "deployments", team),
        ("create", "mqtt.operator.dev", "mqttclusters", team),
        ("delete", "mqtt.operator.dev", "mqttclusters", team),
        ("update", "mqtt.operator.dev", "mqttclusters/status", team),
        ("get", "", "nodes", None),
    ] {
        let access = Access {
            verb,
            group,
            resource,
            namespace,
        };
        assert!(
            !may(&client, sa_ns, sa, access).await,
            "{sa} allowed {access:?}"
        );
    }
}

#[tokio::test]
async fn chart_with_watch_namespaces_applies_and_scopes_permissions() {
    let Some(tools) = e2e::tools_or_skip() else {
        return;
    };
    let Some(bed) = e2e::shared() else { return };
    let kubeconfig = bed.kubeconfig_path();
    let release_ns = bed.namespace("helm-release").await.expect("namespace");
    let watched = bed.namespace("helm-watched").await.expect("namespace");
    let other = bed.namespace("helm-other").await.expect("namespace");
    let chart = repo_root().join("helm/mqtt-operator");
    let watch = format!("watchNamespaces={{{watched}}}");
    let rendered = ok(tools.helm(&[
        "template",
        "scoped",
        chart.to_str().unwrap(),
        "--namespace",
        &release_ns,
        "--set",
        &watch,
    ]))
    .stdout;
    let file = bed.dir().join(format!("{release_ns}-chart.yaml"));
    std::fs::write(&file, &rendered).expect("write the rendered chart");
    let file = file.to_str().unwrap();
    ok(tools.kubectl(
        kubeconfig,
        &["apply", "--server-side", "--dry-run=server", "-f", file],
    ));
    ok(tools.kubectl(kubeconfig, &["apply", "--server-side", "-f", file]));

    let client = bed.client().await.expect("client");
    let sa = "scoped-mqtt-operator";
    let can =
        |verb: &'static str, group: &'static str, resource: &'static str, ns: Option<String>| {
            let client = client.clone();
            let release_ns = release_ns.clone();
            async move {
                let access = Access {
                    verb,
                    group,
                    resource,
                    namespace: ns.as_deref(),
                };
                may(&client, &release_ns, sa, access).await
            }
        };
    for (group, resource, namespace) in [
        ("", "secrets", Some(watched.as_str())),
        ("apiextensions.k8s.io", "customresourcedefinitions", None),
        ("coordination.k8s.io", "leases", Some(release_ns.as_str())),
    ] {
        let access = Access {
            verb: "get",
            group,
            resource,
            namespace,
        };
        wait_allowed(&client, &release_ns, sa, access, RBAC_PROPAGATION)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(
        can("get", "", "secrets", Some(watched.clone())).await,
        "secrets in the watched namespace"
    );
    assert!(
        !can("get", "", "secrets", Some(other.clone())).await,
        "secrets outside the watched namespaces"
    );
    assert!(
        !can("get", "", "secrets", Some(release_ns.clone())).await,
        "secrets in its own unwatched namespace"
    );
    assert!(
        !can("list", "mqtt.operator.dev", "mqttclusters", None).await,
        "cluster-wide list"
    );
    assert!(
        can(
            "list",
            "mqtt.operator.dev",
            "mqttclusters",
            Some(watched.clone())
        )
        .await
    );
    assert!(
        can(
            "patch",
            "mqtt.operator.dev",
            "mqttclusters/status",
            Some(watched.clone())
        )
        .await
    );
    assert!(
        can(
            "watch",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None
        )
        .await
    );
    assert!(
        can(
            "update",
            "coordination.k8s.io",
            "leases",
            Some(release_ns.clone())
        )
        .await
    );
    assert!(
        !can(
            "update",
            "coordination.k8s.io",
            "leases",
            Some(watched.clone())
        )
        .await
    );
}

/// `helm install` / `upgrade` / `uninstall` (helm 4, server-side apply) against the 1.20 bed: the
/// README's install command works, an upgrade changes the Deployment, and uninstalling removes
/// everything but the CRDs (Helm never deletes `crds/`).
#[tokio::test]
async fn helm_install_upgrade_uninstall_on_the_test_bed() {
    let Some(tools) = e2e::tools_or_skip() else {
        return;
    };
    let Some(bed) = e2e::shared() else { return };
    let kubeconfig = bed.kubeconfig_path().to_str().unwrap().to_string();
    let ns = bed.namespace("helm-lifecycle").await.expect("namespace");
    let chart = repo_root().join("helm/mqtt-operator");
    let chart = chart.to_str().unwrap();
    let helm = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", &kubeconfig, "--namespace", &ns];
        all.extend_from_slice(args);
        ok(tools.helm(&all))
    };
    let client = bed.client().await.expect("client");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let cluster_roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(client.clone());
    let name = "lifecycle-mqtt-operator";
    let replicas = |d: Deployment| d.spec.and_then(|s| s.replicas);

    let installed = helm(&[
        "install",
        "lifecycle",
        chart,
        "--wait=hookOnly",
        "--timeout=60s",
    ]);
    assert!(
        installed.stdout.contains("STATUS: deployed"),
        "{}",
        installed.all()
    );
    let deployment = deployments.get(name).await.expect("installed Deployment");
    assert_eq!(replicas(deployment), Some(2));
    assert!(cluster_roles.get_opt(name).await.expect("get").is_some());

    helm(&[
        "upgrade",
        "lifecycle",
        chart,
        "--set",
        "replicas=3",
        "--wait=hookOnly",
        "--timeout=60s",
    ]);
    let deployment = deployments.get(name).await.expect("upgraded Deployment");
    assert_eq!(replicas(deployment), Some(3));

    helm(&["uninstall", "lifecycle", "--wait=hookOnly", "--timeout=60s"]);
    assert!(deployments.get_opt(name).await.expect("get").is_none());
    assert!(cluster_roles.get_opt(name).await.expect("get").is_none());
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client);
    assert!(crds
        .get_opt("mqttclusters.mqtt.operator.dev")
        .await
        .expect("get")
        .is_some());
}
