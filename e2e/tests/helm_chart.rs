//! The Helm chart (`helm/mqtt-operator`) offline: helm 4 lints and renders it, its values schema
//! rejects bad values, its RBAC is exactly `operator::rbac`, the Deployment is hardened and
//! leader-elected, every value is documented, and the generated files (the chart's CRD copies,
//! `manifests/install.yaml`) are current. `helm_install.rs` applies it to the test bed.
//!
//! helm comes from `scripts/install-helm.sh`; without it these tests skip (printing why) when run
//! by hand and fail under CI.

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::Value;

use e2e::bed::repo_root;
use e2e::tools::{run, run_ok, yaml_documents};
use e2e::Tools;

fn chart_dir() -> PathBuf {
    repo_root().join("helm/mqtt-operator")
}

/// The chart rendered with `extra` values; panics with helm's output on failure.
fn render(tools: &Tools, release: &str, namespace: &str, extra: &[&str]) -> Vec<Value> {
    tools
        .template(release, &chart_dir(), namespace, extra)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn helm_ok(tools: &Tools, args: &[&str]) -> e2e::tools::CommandOutput {
    run_ok(tools.helm(args)).unwrap_or_else(|e| panic!("{e}"))
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
    let out = helm_ok(&tools, &["lint", "--strict", chart.to_str().unwrap()]);
    assert!(out.stdout.contains("0 chart(s) failed"), "{}", out.all());
    // The same with watchNamespaces, ServiceMonitor and a NetworkPolicy peer set.
    helm_ok(
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
    );
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
            let out = run(tools.helm(&[verb, chart, "--set", set])).expect("helm runs");
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
        helm_ok(&tools, &["template", chart, "--set", set]);
    }
    // A template-level rule: more than one replica needs leader election.
    let out = run(tools.helm(&[
        "template",
        chart,
        "--set",
        "replicas=2,leaderElection.enabled=false",
    ]))
    .expect("helm runs");
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
    let docs = render(&tools, "mqtt-operator", "mqtt-operator", &[]);
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
    let docs = render(
        &tools,
        "edge",
        "ops",
        &["--set", "watchNamespaces={team-a,team-b}"],
    );
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
    let docs = render(&tools, "mqtt-operator", "mqtt-operator", &[]);
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
    let with_monitor = render(
        &tools,
        "mqtt-operator",
        "mqtt-operator",
        &["--set", "metrics.serviceMonitor.enabled=true"],
    );
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
    assert_service_monitor_scrapes_metrics_port(&with_monitor);
    // Interval and extra labels (e.g. the `release` label a Prometheus selects on) pass through.
    let tuned = render(
        &tools,
        "mqtt-operator",
        "mqtt-operator",
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true,metrics.serviceMonitor.interval=15s",
            "--set",
            "metrics.serviceMonitor.labels.release=kube-prometheus",
        ],
    );
    let monitor = find(
        &tuned,
        "ServiceMonitor",
        "mqtt-operator",
        Some("mqtt-operator"),
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["interval"], "15s");
    assert_eq!(monitor["metadata"]["labels"]["release"], "kube-prometheus");
}

/// The enabled ServiceMonitor selects exactly the metrics Service, in the release namespace, and
/// scrapes `/metrics` on the Service port that targets the container's `metrics` port.
fn assert_service_monitor_scrapes_metrics_port(docs: &[Value]) {
    let monitor = find(
        docs,
        "ServiceMonitor",
        "mqtt-operator",
        Some("mqtt-operator"),
    );
    let spec = &monitor["spec"];
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(
        spec["namespaceSelector"]["matchNames"],
        serde_json::json!(["mqtt-operator"])
    );
    let selector = spec["selector"]["matchLabels"].as_object().unwrap();
    assert!(
        !selector.is_empty(),
        "an empty selector would scrape every Service"
    );
    let selected: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "Service")
        .filter(|d| {
            selector
                .iter()
                .all(|(k, v)| d["metadata"]["labels"].get(k) == Some(v))
        })
        .collect();
    assert_eq!(
        selected.len(),
        1,
        "selects exactly one Service: {selected:?}"
    );
    let service = selected[0];
    assert_eq!(service["metadata"]["name"], "mqtt-operator-metrics");
    let endpoints = spec["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["path"], "/metrics");
    let port_name = endpoints[0]["port"].as_str().unwrap();
    let port = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port_name)
        .unwrap_or_else(|| panic!("the Service has no port named {port_name}"));
    let deployment = find(docs, "Deployment", "mqtt-operator", Some("mqtt-operator"));
    let container_ports = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .unwrap();
    let target = &port["targetPort"];
    assert!(
        container_ports
            .iter()
            .any(|p| &p["name"] == target || &p["containerPort"] == target),
        "Service port {port_name} targets {target}, which the container does not expose"
    );
    let metrics = container_ports
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("container port named metrics");
    // The operator serves /metrics on the port its --metrics-bind-address names.
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap();
    let bind = format!(
        "--metrics-bind-address=0.0.0.0:{}",
        metrics["containerPort"]
    );
    assert!(
        args.iter().any(|a| a.as_str() == Some(bind.as_str())),
        "{bind} in {args:?}"
    );
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
    run_ok(command).unwrap_or_else(|e| panic!("{e}"));
    // And install.yaml is the chart with defaults plus the namespace, CRDs first.
    let text = std::fs::read_to_string(repo_root().join("manifests/install.yaml")).unwrap();
    let docs = yaml_documents(&text).expect("install.yaml is YAML");
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
