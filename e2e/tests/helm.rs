//! The Helm chart (`helm/mqtt-operator`) and `manifests/install.yaml`: helm 4 lints and renders
//! the chart, its values schema rejects bad values, its RBAC is exactly `operator::rbac`, the
//! generated files are current, and the rendered chart applies to the real test bed (Kubernetes
//! 1.20) with a current kubectl (1.33), granting the operator's ServiceAccount what it needs and
//! nothing it does not.
//!
//! helm and kubectl come from `scripts/install-helm.sh`; without them these tests skip (printing
//! why) when run by hand and fail under CI.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::{Api, PostParams};
use serde::Deserialize;
use serde_json::Value;

use e2e::bed::repo_root;
use e2e::Tools;

/// Upper bound for one helm/kubectl invocation.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// What a finished command printed.
struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Output {
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs `command` to completion, killing it after [`COMMAND_TIMEOUT`].
fn run(mut command: Command) -> Output {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {shown}: {e}"));
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{shown} did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        success: status.success(),
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// Runs `command` and panics with its output unless it succeeds.
fn run_ok(command: Command) -> Output {
    let shown = format!("{command:?}");
    let output = run(command);
    assert!(output.success, "{shown} failed:\n{}", output.all());
    output
}

fn chart_dir() -> PathBuf {
    repo_root().join("helm/mqtt-operator")
}

fn helm(tools: &Tools, args: &[&str]) -> Command {
    let mut command = Command::new(&tools.helm);
    // Keep helm away from the user's config and caches.
    let home = std::env::temp_dir().join("mqtt-operator-helm-home");
    command
        .args(args)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"));
    command
}

fn kubectl(tools: &Tools, kubeconfig: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(&tools.kubectl);
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--request-timeout=60s")
        .args(args);
    command
}

/// `helm template <release> <chart> --namespace <namespace> <extra>` as YAML text.
fn template_text(tools: &Tools, release: &str, namespace: &str, extra: &[&str]) -> String {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        release,
        chart.to_str().expect("utf-8 path"),
        "--namespace",
        namespace,
    ];
    args.extend_from_slice(extra);
    run_ok(helm(tools, &args)).stdout
}

/// The rendered documents (empty documents dropped) as JSON values.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| {
            let value = serde_yaml::Value::deserialize(doc).expect("helm renders valid YAML");
            serde_json::to_value(value).expect("YAML converts to JSON")
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str, namespace: Option<&str>) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"] == name
                && d["metadata"]["namespace"].as_str() == namespace
        })
        .unwrap_or_else(|| panic!("no {kind} {name} (namespace {namespace:?}) in the chart"))
}

fn kinds(docs: &[Value]) -> Vec<(String, String, Option<String>)> {
    docs.iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or_default().to_string(),
                d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                d["metadata"]["namespace"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// Compares a rendered object's rules with `operator::rbac`, printing the YAML to paste on drift.
fn assert_rules(rendered: &Value, expected: &[PolicyRule], what: &str) {
    let expected = serde_json::to_value(expected).expect("rules serialize");
    assert_eq!(
        rendered["rules"],
        expected,
        "{what}: helm/mqtt-operator/templates/rbac.yaml disagrees with operator/src/rbac.rs; \
         expected rules:\n{}",
        serde_yaml::to_string(&expected).unwrap_or_default()
    );
}

#[test]
fn chart_lints_strictly() {
    let Some(tools) = e2e::tools_or_skip() else {
        return;
    };
    let chart = chart_dir();
    let out = run_ok(helm(&tools, &["lint", "--strict", chart.to_str().unwrap()]));
    assert!(out.stdout.contains("0 chart(s) failed"), "{}", out.all());
    // The same with watchNamespaces, ServiceMonitor and a NetworkPolicy peer set.
    run_ok(helm(
        &tools,
        &[
            "lint",
            "--strict",
            chart.to_str().unwrap(),
            "--set",
            "watchNamespaces={team-a,team-b},metrics.serviceMonitor.enabled=true",
            "--set",
            "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring",
        ],
    ));
}

#[test]
fn values_schema_rejects_bad_values() {
    let Some(tools) = e2e::tools_or_skip() else {
        return;
    };
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    // (--set value, text the error must contain)
    let cases = [
        ("replicas=zero", "/replicas"),
        ("replicas=0", "/replicas"),
        ("replicaz=3", "replicaz"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("metrics.port=70000", "/metrics/port"),
        ("watchNamespaces={Bad_NS}", "/watchNamespaces/0"),
        ("leaderElection.enabled=maybe", "/leaderElection/enabled"),
        (
            "metrics.serviceMonitor.interval=often",
            "/metrics/serviceMonitor/interval",
        ),
        (
            "networkPolicy.apiServerPorts={}",
            "/networkPolicy/apiServerPorts",
        ),
    ];
    for (set, needle) in cases {
        for verb in ["lint", "template"] {
            let out = run(helm(&tools, &[verb, chart, "--set", set]));
            assert!(
                !out.success,
                "helm {verb} --set {set} passed:\n{}",
                out.all()
            );
            assert!(
                out.all().contains(needle),
                "helm {verb} --set {set} failed without naming {needle}:\n{}",
                out.all()
            );
        }
    }
    // Valid overrides of the same fields pass, so the failures above are the schema's doing.
    for set in [
        "replicas=3",
        "image.pullPolicy=Always",
        "metrics.port=9000",
        "watchNamespaces={team-a}",
        "metrics.serviceMonitor.interval=1m30s",
    ] {
        run_ok(helm(&tools, &["template", chart, "--set", set]));
    }
    // A template-level rule: more than one replica needs leader election.
    let out = run(helm(
        &tools,
        &[
            "template",
            chart,
            "--set",
            "replicas=2,leaderElection.enabled=false",
        ],
    ));
    assert!(
        !out.success && out.all().contains("leaderElection.enabled"),
        "{}",
        out.all()
    );
}

#[test]
fn rbac_is_exactly_operator_rbac_rs_watching_all_namespaces() {
    let Some(tools) = e2e::tools_or_skip() else {
        return;
    };
    let docs = documents(&template_text(
        &tools,
        "mqtt-operator",
        "mqtt-operator",
        &[],
    ));
    let name = "mqtt-operator";
    let cluster_role = find(&docs, "ClusterRole", name, None);
    assert_rules(
        cluster_role,
        cluster_role_rules(name, true).as_slice(),
        "ClusterRole",
    );
    let lease = find(&docs, "Role", "mqtt-operator-leader-election", Some(name));
    assert_rules(
        lease,
        operator::rbac::operator_namespace_role("x", name)
            .rules
            .unwrap()
            .as_slice(),
        "leader-election Role",
    );
    let rbac_kinds: Vec<_> = kinds(&docs)
        .into_iter()
        .filter(|(k, _, _)| k.contains("Role"))
        .collect();
    assert_eq!(
        rbac_kinds,
        [
            ("ClusterRole".to_string(), name.to_string(), None),
            ("ClusterRoleBinding".to_string(), name.to_string(), None),
            (
                "Role".to_string(),
                "mqtt-operator-leader-election".to_string(),
                Some(name.to_string())
            ),
            (
                "RoleBinding".to_string(),
                "mqtt-operator-leader-election".to_string(),
                Some(name.to_string())
            ),
        ]
    );
    // Every binding names the chart's ServiceAccount in the release namespace.
    for (kind, binding) in [
        ("ClusterRoleBinding", name),
        ("RoleBinding", "mqtt-operator-leader-election"),
    ] {
        let ns = (kind == "RoleBinding").then_some(name);
        let b = find(&docs, kind, binding, ns);
        assert_eq!(
            b["subjects"],
            serde_json::json!([{"kind": "ServiceAccount", "name": name, "namespace": name}])
        );
    }
}

fn cluster_role_rules(name: &str, all_namespaces: bool) -> Vec<PolicyRule> {
    operator::rbac::cluster_role(name, all_namespaces)
        .rules
        .unwrap_or_default()
}

#[test]
fn rbac_is_exactly_operator_rbac_rs_watching_listed_namespaces() {
    let Some(tools) = e2e::tools_or_skip() else {
        return;
    };
    let docs = documents(&template_text(
        &tools,
        "edge",
        "ops",
        &["--set", "watchNamespaces={team-a,team-b}"],
    ));
    let name = "edge-mqtt-operator";
    assert_rules(
        find(&docs, "ClusterRole", name, None),
        &cluster_role_rules(name, false),
        "ClusterRole (watchNamespaces set)",
    );
    let watched = operator::rbac::watched_namespace_role("x", "y")
        .rules
        .unwrap();
    for ns in ["team-a", "team-b"] {
        assert_rules(find(&docs, "Role", name, Some(ns)), &watched, ns);
        let binding = find(&docs, "RoleBinding", name, Some(ns));
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert_eq!(
            binding["subjects"][0]["namespace"], "ops",
            "the ServiceAccount lives in the release namespace"
        );
    }
    let args = &find(&docs, "Deployment", name, Some("ops"))["spec"]["template"]["spec"]
        ["containers"][0]["args"];
    assert!(
        args.as_array()
            .unwrap()
            .contains(&Value::from("--watch-namespaces=team-a,team-b")),
        "{args}"
    );
}

#[test]
fn deployment_is_hardened_and_leader_elected() {
    let Some(tools) = e2e::tools_or_skip() else {
        return;
    };
    let docs = documents(&template_text(
        &tools,
        "mqtt-operator",
        "mqtt-operator",
        &[],
    ));
    let deployment = find(&docs, "Deployment", "mqtt-operator", Some("mqtt-operator"));
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 2);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "mqtt-operator");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args[0], "run");
    for arg in [
        "--leader-elect",
        "--lease-name=mqtt-operator",
        "--lease-namespace=$(POD_NAMESPACE)",
        "--metrics-bind-address=0.0.0.0:8080",
    ] {
        assert!(args.contains(&arg), "missing {arg} in {args:?}");
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--watch-namespaces")),
        "default watches all namespaces"
    );
    // The metrics Service selects the Deployment's pods; the NetworkPolicy covers them.
    let selector = &spec["selector"]["matchLabels"];
    let service = find(
        &docs,
        "Service",
        "mqtt-operator-metrics",
        Some("mqtt-operator"),
    );
    assert_eq!(&service["spec"]["selector"], selector);
    let policy = find(
        &docs,
        "NetworkPolicy",
        "mqtt-operator",
        Some("mqtt-operator"),
    );
    assert_eq!(&policy["spec"]["podSelector"]["matchLabels"], selector);
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    // No ServiceMonitor unless asked for; one that selects the metrics Service when asked.
    assert!(!docs.iter().any(|d| d["kind"] == "ServiceMonitor"));
    let with_monitor = documents(&template_text(
        &tools,
        "mqtt-operator",
        "mqtt-operator",
        &["--set", "metrics.serviceMonitor.enabled=true"],
    ));
    let monitor = find(
        &with_monitor,
        "ServiceMonitor",
        "mqtt-operator",
        Some("mqtt-operator"),
    );
    let service_labels = service["metadata"]["labels"].as_object().unwrap();
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            service_labels.get(k),
            Some(v),
            "ServiceMonitor selects {k}={v}"
        );
    }
}

#[test]
fn generated_files_are_current() {
    let Some(tools) = e2e::tools_or_skip() else {
        return;
    };
    let mut command = Command::new("bash");
    command
        .arg(repo_root().join("scripts/gen-install.sh"))
        .arg("--check")
        .env("MQTT_OPERATOR_HELM", &tools.helm);
    run_ok(command);
    // And install.yaml is the chart with defaults plus the namespace, CRDs first.
    let text = std::fs::read_to_string(repo_root().join("manifests/install.yaml")).unwrap();
    let docs = documents(&text);
    let listed = kinds(&docs);
    assert_eq!(listed[0].0, "Namespace");
    assert_eq!(listed[0].1, "mqtt-operator");
    let crds: Vec<_> = listed
        .iter()
        .skip(1)
        .take_while(|(k, _, _)| k == "CustomResourceDefinition")
        .map(|(_, n, _)| n.clone())
        .collect();
    let mut generated: Vec<String> = operator::crd::files()
        .into_iter()
        .map(|(f, _)| f.trim_end_matches(".yaml").to_string())
        .collect();
    generated.sort();
    let mut crds_sorted = crds.clone();
    crds_sorted.sort();
    assert_eq!(crds_sorted, generated, "install.yaml carries every CRD");
}

/// What to ask the API server's authorizer about.
#[derive(Debug, Clone, Copy)]
struct Access<'a> {
    verb: &'a str,
    group: &'a str,
    /// `resource` or `resource/subresource`.
    resource: &'a str,
    /// `None`: cluster-wide (all namespaces, or a cluster-scoped resource).
    namespace: Option<&'a str>,
}

/// Whether the ServiceAccount `namespace/name` may do `access`, by a SubjectAccessReview (the
/// apiserver's own RBAC authorizer; no discovery, so CRDs that are absent can be asked about).
async fn allowed(
    client: &kube::Client,
    sa_namespace: &str,
    sa_name: &str,
    access: Access<'_>,
) -> bool {
    let (resource, subresource) = match access.resource.split_once('/') {
        Some((r, sub)) => (r, Some(sub.to_string())),
        None => (access.resource, None),
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{sa_namespace}:{sa_name}")),
            groups: Some(vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{sa_namespace}"),
                "system:authenticated".to_string(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(access.verb.to_string()),
                group: Some(access.group.to_string()),
                resource: Some(resource.to_string()),
                subresource,
                namespace: access.namespace.map(str::to_string),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .unwrap_or_else(|e| panic!("SubjectAccessReview for {access:?}: {e}"));
    answer.status.expect("a review has a status").allowed
}

/// Waits (bounded) until the authorizer's RBAC cache allows `access`: bindings just applied reach
/// it through an informer, a few milliseconds later.
async fn wait_allowed(
    client: &kube::Client,
    sa_namespace: &str,
    sa_name: &str,
    access: Access<'_>,
) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !allowed(client, sa_namespace, sa_name, access).await {
        assert!(
            Instant::now() < deadline,
            "{sa_namespace}/{sa_name} still denied {access:?} 15 s after the chart was applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    run_ok(kubectl(
        &tools,
        kubeconfig,
        &["create", "namespace", "mqtt-operator"],
    ));
    let dry = run_ok(kubectl(
        &tools,
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

    let applied = run_ok(kubectl(
        &tools,
        kubeconfig,
        &["apply", "--server-side", "-f", install],
    ));
    let applied_lines = applied.stdout.lines().count();
    assert_eq!(
        applied_lines,
        documents(&std::fs::read_to_string(install).unwrap()).len(),
        "one line per object:\n{}",
        applied.all()
    );
    // Applying again is a no-op that still succeeds.
    run_ok(kubectl(
        &tools,
        kubeconfig,
        &["apply", "--server-side", "-f", install],
    ));

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
        wait_allowed(&client, sa_ns, sa, access).await;
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
                        allowed(&client, sa_ns, sa, access).await,
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
            !allowed(&client, sa_ns, sa, access).await,
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
    let rendered = template_text(
        &tools,
        "scoped",
        &release_ns,
        &["--set", &format!("watchNamespaces={{{watched}}}")],
    );
    let file = bed.dir().join(format!("{release_ns}-chart.yaml"));
    std::fs::write(&file, &rendered).expect("write the rendered chart");
    let file = file.to_str().unwrap();
    run_ok(kubectl(
        &tools,
        kubeconfig,
        &["apply", "--server-side", "--dry-run=server", "-f", file],
    ));
    run_ok(kubectl(
        &tools,
        kubeconfig,
        &["apply", "--server-side", "-f", file],
    ));

    let client = bed.client().await.expect("client");
    let sa = "scoped-mqtt-operator";
    let may =
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
                allowed(&client, &release_ns, sa, access).await
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
        wait_allowed(&client, &release_ns, sa, access).await;
    }
    assert!(
        may("get", "", "secrets", Some(watched.clone())).await,
        "secrets in the watched namespace"
    );
    assert!(
        !may("get", "", "secrets", Some(other.clone())).await,
        "secrets outside the watched namespaces"
    );
    assert!(
        !may("get", "", "secrets", Some(release_ns.clone())).await,
        "secrets in its own unwatched namespace"
    );
    assert!(
        !may("list", "mqtt.operator.dev", "mqttclusters", None).await,
        "cluster-wide list"
    );
    assert!(
        may(
            "list",
            "mqtt.operator.dev",
            "mqttclusters",
            Some(watched.clone())
        )
        .await
    );
    assert!(
        may(
            "patch",
            "mqtt.operator.dev",
            "mqttclusters/status",
            Some(watched.clone())
        )
        .await
    );
    assert!(
        may(
            "watch",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None
        )
        .await
    );
    assert!(
        may(
            "update",
            "coordination.k8s.io",
            "leases",
            Some(release_ns.clone())
        )
        .await
    );
    assert!(
        !may(
            "update",
            "coordination.k8s.io",
            "leases",
            Some(watched.clone())
        )
        .await
    );
}

/// Every key of values.yaml is documented: it, or a map it sits in, has a `# --` comment right
/// above it (the chart's values reference).
#[test]
fn every_value_is_documented() {
    let text = std::fs::read_to_string(chart_dir().join("values.yaml")).expect("values.yaml");
    // (indent, documented) of the enclosing maps.
    let mut parents: Vec<(usize, bool)> = Vec::new();
    let mut comment_block: Vec<&str> = Vec::new();
    let mut undocumented = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() {
            comment_block.clear();
            continue;
        }
        if trimmed.starts_with('#') {
            comment_block.push(trimmed);
            continue;
        }
        let Some((key, value)) = trimmed.split_once(':') else {
            panic!("values.yaml: unexpected line {line:?}");
        };
        while parents.last().is_some_and(|(i, _)| *i >= indent) {
            parents.pop();
        }
        let own = comment_block.iter().any(|c| c.starts_with("# --"));
        let documented = own || parents.iter().any(|(_, d)| *d);
        if value.trim().is_empty() {
            parents.push((indent, documented));
        } else if !documented {
            undocumented.push(key.trim().to_string());
        }
        comment_block.clear();
    }
    assert!(
        undocumented.is_empty(),
        "values without a `# --` comment: {undocumented:?}"
    );
}
