//! The repository's CRDs and quickstart examples against a real kube-apiserver 1.20.2: apply,
//! Established, schema validation, the status subresource and the printer columns.

use std::collections::BTreeSet;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

use e2e::manifests::{self, Manifest, FIELD_MANAGER};
use e2e::schema::{self, ViolationKind};

const GROUP: &str = "mqtt.operator.dev";
const VERSION: &str = "v1alpha1";

fn crds() -> Vec<Manifest> {
    manifests::repo_crds().expect("read crds/generated")
}

fn examples() -> Vec<Manifest> {
    manifests::quickstart().expect("read manifests/examples/quickstart")
}

fn first_example_of(kind: &str) -> Manifest {
    manifests::first_of_kind(&examples(), kind)
        .unwrap_or_else(|| panic!("manifests/examples/quickstart has no {kind}"))
        .clone()
}

fn plural(crd: &Manifest) -> String {
    crd.value["spec"]["names"]["plural"]
        .as_str()
        .expect("spec.names.plural")
        .to_string()
}

/// Every leaf of `expected` is present, equal, in `actual` (extra fields, e.g. defaults, allowed).
fn assert_contains(actual: &Value, expected: &Value, path: &str) {
    match expected {
        Value::Object(map) => {
            for (k, v) in map {
                assert_contains(&actual[k.as_str()], v, &format!("{path}.{k}"));
            }
        }
        Value::Array(items) => {
            let got = actual.as_array().map(Vec::len);
            assert_eq!(got, Some(items.len()), "{path}: array length; got {actual}");
            for (i, v) in items.iter().enumerate() {
                assert_contains(&actual[i], v, &format!("{path}[{i}]"));
            }
        }
        leaf => assert_eq!(
            actual, leaf,
            "{path} changed by the server (pruned or rewritten)"
        ),
    }
}

#[tokio::test]
async fn all_four_crds_apply_server_side_and_become_established() {
    let Some(bed) = e2e::shared() else { return };
    let client = bed.client().await.expect("client");
    let files = crds();
    let names: BTreeSet<String> = files
        .iter()
        .map(|m| m.identity().expect("identity").2)
        .collect();
    assert_eq!(
        names.len(),
        4,
        "crds/generated should hold four CRDs: {names:?}"
    );
    let installed: BTreeSet<String> = bed.crds().iter().cloned().collect();
    assert_eq!(installed, names, "the bed installs exactly crds/generated");

    // Apply again (idempotent, same manager) and check the server's view.
    manifests::apply_crds(&client, &files)
        .await
        .expect("server-side apply of the CRDs");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in &names {
        let crd = api.get(name).await.expect("get CRD");
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        for wanted in ["Established", "NamesAccepted"] {
            let c = conditions.iter().find(|c| c.type_ == wanted);
            assert_eq!(
                c.map(|c| c.status.as_str()),
                Some("True"),
                "{name}: {wanted} in {conditions:?}"
            );
        }
        let managers = crd.metadata.managed_fields.unwrap_or_default();
        assert!(
            managers
                .iter()
                .any(|m| m.manager.as_deref() == Some(FIELD_MANAGER)
                    && m.operation.as_deref() == Some("Apply")),
            "{name}: expected an Apply entry by {FIELD_MANAGER} in managedFields"
        );
    }

    // Discovery serves every kind under the group/version.
    let req = http::Request::get(format!("/apis/{GROUP}/{VERSION}"))
        .body(Vec::new())
        .unwrap();
    let list: Value = client.request(req).await.expect("discovery of the group");
    let served: BTreeSet<String> = list["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .filter(|n| !n.contains('/'))
        .map(|n| format!("{n}.{GROUP}"))
        .collect();
    assert_eq!(served, names);
}

#[tokio::test]
async fn every_quickstart_example_is_accepted_as_written() {
    let Some(bed) = e2e::shared() else { return };
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("examples").await.expect("namespace");
    let docs = examples();
    let kinds: BTreeSet<String> = docs.iter().map(|m| m.identity().unwrap().1).collect();
    let crd_kinds: BTreeSet<String> = crds()
        .iter()
        .filter_map(|c| schema::crd_kind(&c.value).map(str::to_string))
        .collect();
    assert_eq!(kinds, crd_kinds, "the quickstart should show every kind");
    for doc in &docs {
        let stored = manifests::apply(&client, doc, &ns)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let stored = serde_json::to_value(&stored).unwrap();
        assert_contains(
            &stored["spec"],
            &doc.value["spec"],
            &format!("{}: spec", doc.path.display()),
        );
        // Labels are what policies select on: they must come back unchanged (absent stays absent).
        assert_eq!(
            stored["metadata"]["labels"],
            doc.value["metadata"]["labels"]
        );
    }
}

#[tokio::test]
async fn schema_violations_are_rejected_naming_the_field() {
    let Some(bed) = e2e::shared() else { return };
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("violations").await.expect("namespace");
    let mut seen = BTreeSet::new();
    let mut failures = Vec::new();
    let mut checked = 0;
    for crd in crds() {
        let kind = schema::crd_kind(&crd.value).expect("kind").to_string();
        let open_api = schema::open_api_schema(&crd.value).expect("schema");
        let example = first_example_of(&kind);
        let resource = manifests::api_for(&client, &example, &ns)
            .await
            .expect("api");
        for violation in schema::violations(open_api, &example.value) {
            let mut object: DynamicObject =
                serde_json::from_value(violation.object.clone()).expect("dynamic object");
            object.metadata.namespace = Some(ns.clone());
            object.metadata.name = Some(format!("bad-{checked}"));
            checked += 1;
            let label = format!("{kind} {:?} at {}", violation.kind, violation.path);
            match resource.create(&PostParams::default(), &object).await {
                Ok(_) => failures.push(format!("{label}: ACCEPTED")),
                Err(kube::Error::Api(status)) if status.code == 422 => {
                    // 1.20 drops array indices from field paths (`spec.routes.qos`).
                    let unindexed = schema::without_indices(&violation.path);
                    if status.message.contains(&violation.path)
                        || status.message.contains(&unindexed)
                    {
                        seen.insert(format!("{:?}", violation.kind));
                    } else {
                        failures.push(format!(
                            "{label}: message does not name it: {}",
                            status.message
                        ));
                    }
                }
                Err(e) => failures.push(format!("{label}: unexpected error {e}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} violations mishandled:\n{}",
        failures.len(),
        failures.join("\n")
    );
    for kind in [
        ViolationKind::WrongType,
        ViolationKind::UnknownEnum,
        ViolationKind::MissingRequired,
    ] {
        assert!(
            seen.contains(&format!("{kind:?}")),
            "no {kind:?} case derived from the examples"
        );
    }
    eprintln!("{checked} schema violations rejected with the field named");
}

#[tokio::test]
async fn status_is_a_subresource() {
    let Some(bed) = e2e::shared() else { return };
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("status").await.expect("namespace");
    let example = first_example_of("MqttCluster");
    let api = manifests::api_for(&client, &example, &ns)
        .await
        .expect("api");
    let name = example.identity().unwrap().2;
    let created = manifests::apply(&client, &example, &ns)
        .await
        .expect("apply");
    let generation = created.metadata.generation.expect("generation");

    // Patching status does not bump generation.
    let status = json!({
        "observedGeneration": generation,
        "conditions": [{
            "type": "Ready", "status": "False", "reason": "E2eTest", "message": "set by the test",
            "lastTransitionTime": "2024-01-01T00:00:00Z", "observedGeneration": generation,
        }],
    });
    let patch =
        json!({"apiVersion": example.value["apiVersion"], "kind": "MqttCluster", "status": status});
    let after_status = api
        .patch_status(
            &name,
            &PatchParams::apply("e2e-status").force(),
            &Patch::Apply(&patch),
        )
        .await
        .expect("apply status");
    assert_eq!(
        after_status.metadata.generation,
        Some(generation),
        "status patch bumped generation"
    );
    assert_eq!(
        after_status.data["status"]["conditions"][0]["reason"],
        "E2eTest"
    );

    // Changing spec (with a status block smuggled into the main resource) leaves status alone.
    let mut changed = example.clone();
    let max = changed.value["spec"]["limits"]["maxConnections"]
        .as_i64()
        .expect("example sets limits.maxConnections");
    changed.value["spec"]["limits"]["maxConnections"] = json!(max + 1);
    changed.value["status"] = json!({"observedGeneration": 999, "conditions": []});
    let after_spec = manifests::apply(&client, &changed, &ns)
        .await
        .expect("apply spec change");
    assert_eq!(
        after_spec.metadata.generation,
        Some(generation + 1),
        "spec change bumps generation"
    );
    assert_eq!(
        after_spec.data["status"], after_status.data["status"],
        "spec update touched status"
    );
    assert_eq!(
        after_spec.data["spec"]["limits"]["maxConnections"],
        json!(max + 1)
    );
}

#[tokio::test]
async fn table_output_shows_the_crd_printer_columns() {
    let Some(bed) = e2e::shared() else { return };
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("table").await.expect("namespace");
    for doc in examples() {
        manifests::apply(&client, &doc, &ns)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    for crd in crds() {
        let columns = schema::printer_columns(&crd.value);
        assert!(
            !columns.is_empty(),
            "{}: no printer columns",
            crd.path.display()
        );
        let table = get_table(&client, &ns, &plural(&crd)).await;
        let headers: Vec<&str> = table["columnDefinitions"]
            .as_array()
            .expect("columnDefinitions")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        let mut expected = vec!["Name"];
        expected.extend(columns.iter().map(|c| c.name.as_str()));
        assert_eq!(headers, expected, "{}", crd.path.display());

        let kind = schema::crd_kind(&crd.value).unwrap();
        let objects: Vec<Manifest> = examples()
            .into_iter()
            .filter(|m| m.value["kind"] == kind)
            .collect();
        let rows = table["rows"].as_array().expect("rows");
        assert_eq!(
            rows.len(),
            objects.len(),
            "{kind}: one row per example object"
        );
        for object in &objects {
            let name = object.identity().unwrap().2;
            let row = rows
                .iter()
                .find(|r| r["cells"][0] == name.as_str())
                .unwrap_or_else(|| panic!("{kind} {name} not in the table: {rows:?}"));
            assert_eq!(row["cells"].as_array().map(Vec::len), Some(expected.len()));
            for (i, column) in columns.iter().enumerate() {
                if let Some(value) = schema::simple_json_path(&object.value, &column.json_path) {
                    if column.json_path.starts_with(".spec") {
                        assert_eq!(
                            &row["cells"][i + 1],
                            value,
                            "{kind} {name} column {}",
                            column.name
                        );
                    }
                }
            }
        }
    }
}

async fn get_table(client: &Client, ns: &str, plural: &str) -> Value {
    let req = http::Request::get(format!("/apis/{GROUP}/{VERSION}/namespaces/{ns}/{plural}"))
        .header(
            http::header::ACCEPT,
            "application/json;as=Table;g=meta.k8s.io;v=v1",
        )
        .body(Vec::new())
        .unwrap();
    let table: Value = client.request(req).await.expect("Table request");
    assert_eq!(
        table["kind"], "Table",
        "server did not answer with a Table: {table}"
    );
    table
}
