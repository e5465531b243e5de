//! Generated files match their generators, and the CRDs are what Kubernetes needs.

use std::path::Path;

use serde_json::Value;

/// `crds/generated/` is exactly `mqtt-operator crd --out-dir crds/generated`.
#[test]
fn generated_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/generated");
    let files = operator::crd::files();
    let mut on_disk: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    let mut expected: Vec<_> = files.iter().map(|(n, _)| n.clone()).collect();
    expected.sort();
    assert_eq!(
        on_disk, expected,
        "stale or missing files in crds/generated"
    );
    for (name, yaml) in files {
        let disk = std::fs::read_to_string(dir.join(&name)).unwrap();
        assert!(
            disk == yaml,
            "crds/generated/{name} drifted from the types; run: cargo run -p operator -- crd --out-dir crds/generated"
        );
    }
}

fn crd_json() -> Vec<Value> {
    crds::all_crds()
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect()
}

/// Walks every schema node: each must have a `type` or be explicitly schemaless/int-or-string.
fn assert_structural(node: &Value, path: &str) {
    let obj = node
        .as_object()
        .unwrap_or_else(|| panic!("{path}: not an object"));
    let typed = obj.contains_key("type")
        || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        || obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    assert!(typed, "{path}: schema node without type: {node}");
    for forbidden in ["$ref", "definitions", "$defs"] {
        assert!(!obj.contains_key(forbidden), "{path}: has {forbidden}");
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(Value::Array(alts)) = obj.get(key) {
            for alt in alts {
                // Structural schemas allow these only as value validations: no types inside.
                assert!(alt.get("type").is_none(), "{path}.{key}: typed alternative");
            }
        }
    }
    if let Some(Value::Object(props)) = obj.get("properties") {
        for (k, v) in props {
            assert_structural(v, &format!("{path}.{k}"));
        }
    }
    if let Some(items) = obj.get("items") {
        assert_structural(items, &format!("{path}[]"));
    }
    if let Some(add @ Value::Object(_)) = obj.get("additionalProperties") {
        assert_structural(add, &format!("{path}{{}}"));
    }
}

#[test]
fn crds_are_structural_with_status_and_columns() {
    let expected_columns = [
        (
            "MqttCluster",
            "mqc",
            vec!["Ready", "Core", "Endpoint", "Age"],
        ),
        (
            "DeviceIdentity",
            "devid",
            vec!["Device", "Cluster", "State", "Not-After", "Ready"],
        ),
        (
            "TopicPolicy",
            "tpol",
            vec!["Cluster", "Subjects", "Applied"],
        ),
        ("Bridge", "mqbr", vec!["Cluster", "Remote", "Connected"]),
    ];
    let crds = crd_json();
    assert_eq!(crds.len(), 4);
    for (crd, (kind, short, columns)) in crds.iter().zip(expected_columns) {
        let spec = &crd["spec"];
        assert_eq!(spec["group"], "mqtt.operator.dev");
        assert_eq!(spec["scope"], "Namespaced");
        assert_eq!(spec["names"]["kind"], kind);
        assert_eq!(spec["names"]["shortNames"], serde_json::json!([short]));
        let versions = spec["versions"].as_array().unwrap();
        assert_eq!(versions.len(), 1);
        let v = &versions[0];
        assert_eq!(v["name"], "v1alpha1");
        assert_eq!(v["served"], true);
        assert_eq!(v["storage"], true);
        assert!(
            v["subresources"]["status"].is_object(),
            "{kind}: status subresource"
        );
        let names: Vec<_> = v["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, columns, "{kind}: printer columns");
        let schema = &v["schema"]["openAPIV3Schema"];
        assert_structural(schema, kind);
        assert!(schema["properties"]["spec"].is_object());
        assert!(schema["properties"]["status"].is_object());
    }
}

/// `kubectl explain` shows descriptions: every property of every schema has one.
#[test]
fn every_field_is_documented() {
    fn walk(node: &Value, path: &str, missing: &mut Vec<String>) {
        if let Some(Value::Object(props)) = node.get("properties") {
            for (k, v) in props {
                let p = format!("{path}.{k}");
                if v.get("description")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    missing.push(p.clone());
                }
                walk(v, &p, missing);
            }
        }
        if let Some(items) = node.get("items") {
            walk(items, path, missing);
        }
    }
    let mut missing = Vec::new();
    for crd in crd_json() {
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_string();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        walk(
            &schema["properties"]["spec"],
            &format!("{kind}.spec"),
            &mut missing,
        );
        walk(
            &schema["properties"]["status"],
            &format!("{kind}.status"),
            &mut missing,
        );
    }
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:#?}"
    );
}
