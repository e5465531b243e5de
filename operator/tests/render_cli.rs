//! `mqtt-operator render` as a reviewer runs it, on the quickstart and an invalid example.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples")
}

/// Runs the binary; returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mqtt-operator"))
        .args(args)
        .output()
        .expect("runs mqtt-operator");
    (
        out.status.code().expect("exited"),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn render_quickstart(extra: &[&str]) -> String {
    let dir = examples().join("quickstart");
    let mut args = vec!["render", "-f", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "render failed:\n{err}");
    out
}

fn documents(yaml: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde_yaml::Value::deserialize(d).expect("each document parses as YAML"))
        .collect()
}

fn str_at<'a>(v: &'a serde_yaml::Value, keys: &[&str]) -> &'a str {
    keys.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(serde_yaml::Value::as_str)
        .unwrap_or_else(|| panic!("{keys:?} missing in {v:?}"))
}

#[test]
fn quickstart_renders_every_child_kind_without_private_keys() {
    let out = render_quickstart(&[]);
    let docs = documents(&out);
    let objects: Vec<(String, String)> = docs
        .iter()
        .map(|d| {
            (
                str_at(d, &["kind"]).to_string(),
                str_at(d, &["metadata", "name"]).to_string(),
            )
        })
        .collect();
    let kinds: BTreeSet<&str> = objects.iter().map(|(k, _)| k.as_str()).collect();
    for kind in [
        "Secret",
        "ConfigMap",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
    ] {
        assert!(kinds.contains(kind), "no {kind} in {objects:?}");
    }
    for name in [
        "quickstart-cluster-ca",
        "quickstart-clients-ca",
        "quickstart-config",
        "quickstart-ca-bundle",
        "quickstart-dashboard",
        "quickstart-core",
        "quickstart-alerts",
        "sensor-01-tls",
        "sensor-02-tls",
        "gateway-lyon-tls",
    ] {
        assert!(
            objects.iter().any(|(_, n)| n == name),
            "no object {name} in {objects:?}"
        );
    }
    // No duplicates: each (kind, name) once.
    let unique: BTreeSet<_> = objects.iter().collect();
    assert_eq!(unique.len(), objects.len(), "{objects:?}");
    // Namespace defaulted like kubectl apply.
    for d in &docs {
        assert_eq!(str_at(d, &["metadata", "namespace"]), "default");
    }
    // Secrets: every value redacted; nothing PEM anywhere.
    for d in docs.iter().filter(|d| str_at(d, &["kind"]) == "Secret") {
        let data = d.get("data").and_then(|v| v.as_mapping()).unwrap();
        assert!(!data.is_empty());
        for v in data.values() {
            assert_eq!(v.as_str(), Some("REDACTED"), "{d:?}");
        }
    }
    assert!(!out.contains("PRIVATE KEY"), "a private key was printed");
    assert!(!out.contains("-----BEGIN"), "PEM material was printed");
    // The PrometheusRule carries the cluster's own capacity (3 × 10000 at 80%).
    let rule = docs
        .iter()
        .find(|d| str_at(d, &["kind"]) == "PrometheusRule")
        .unwrap();
    assert!(serde_yaml::to_string(rule).unwrap().contains("> 24000"));
}

#[test]
fn output_is_byte_stable_across_runs() {
    let first = render_quickstart(&[]);
    let second = render_quickstart(&[]);
    assert!(first == second, "two renders of the same input differ");
    let json = render_quickstart(&["-o", "json", "-n", "iot"]);
    let list: serde_json::Value = serde_json::from_str(&json).expect("JSON output parses");
    assert_eq!(list["kind"], "List");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), documents(&first).len());
    assert!(items.iter().all(|i| i["metadata"]["namespace"] == "iot"));
}

#[test]
fn invalid_example_exits_non_zero_naming_the_field() {
    let file = examples().join("invalid/cluster-even-replicas.yaml");
    let (code, out, err) = run(&["render", "-f", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        out.is_empty(),
        "nothing is rendered from invalid input: {out}"
    );
    assert!(
        err.contains("MqttCluster/even-replicas: spec.core.replicas"),
        "{err}"
    );
    let (code, _, err) = run(&["render", "-f", "/nonexistent/path"]);
    assert_eq!(code, 2, "{err}");
}

/// Every invalid example (with the quickstart it references) is refused by `render` with the
/// problem its `# expect: Kind/name field.path` header names, exactly as `check` reports it.
#[test]
fn every_invalid_example_is_refused_like_check() {
    let dir = examples().join("invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 12, "found {} invalid examples", files.len());
    let quickstart = examples().join("quickstart");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: no '# expect:' header", file.display()));
        let (object, field) = expect.split_once(' ').unwrap();
        let (code, out, err) = run(&[
            "render",
            "-f",
            quickstart.to_str().unwrap(),
            "-f",
            file.to_str().unwrap(),
        ]);
        assert_eq!(code, 1, "{}: {err}", file.display());
        assert!(
            out.is_empty(),
            "{}: rendered despite errors",
            file.display()
        );
        assert!(
            err.contains(&format!(":0: {object}: {field}: ")),
            "{}: expected {object} {field} in:\n{err}",
            file.display()
        );
    }
}
