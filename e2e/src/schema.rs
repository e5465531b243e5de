//! Reading what the tests need out of a CRD manifest (kind, printer columns, schema) and deriving
//! schema-violating variants of a valid object. Pure: no IO.

use serde_json::Value;

/// The value written into fields to break them (an enum member nobody will define, a string
/// where a number or boolean belongs).
pub const INVALID_TEXT: &str = "not-a-valid-value";

/// One `additionalPrinterColumns` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// JSONPath of the value.
    pub json_path: String,
}

/// What a [`Violation`] breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    /// A value of the wrong JSON type (a string for an integer or boolean).
    WrongType,
    /// A string outside the field's `enum`.
    UnknownEnum,
    /// A required field removed (one without a default, so defaulting cannot restore it).
    MissingRequired,
}

/// A copy of an object with one field broken, and that field's path as the apiserver names it
/// (`spec.routes[0].direction`).
#[derive(Debug, Clone)]
pub struct Violation {
    /// What was broken.
    pub kind: ViolationKind,
    /// The field path.
    pub path: String,
    /// The broken object.
    pub object: Value,
}

/// `path` without array indices (`spec.routes[0].qos` → `spec.routes.qos`): kube-apiserver
/// 1.20 names fields inside arrays this way in validation messages; newer servers keep indices.
pub fn without_indices(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => in_index = true,
            ']' => in_index = false,
            c if !in_index => out.push(c),
            _ => {}
        }
    }
    out
}

/// `spec.names.kind` of a CRD.
pub fn crd_kind(crd: &Value) -> Option<&str> {
    crd.pointer("/spec/names/kind").and_then(Value::as_str)
}

/// The version entry that is stored (the one objects are written in).
pub fn storage_version(crd: &Value) -> Option<&Value> {
    crd.pointer("/spec/versions")?
        .as_array()?
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool).unwrap_or(false))
}

/// The printer columns of the storage version, in order.
pub fn printer_columns(crd: &Value) -> Vec<PrinterColumn> {
    storage_version(crd)
        .and_then(|v| v.get("additionalPrinterColumns"))
        .and_then(Value::as_array)
        .map(|cols| {
            cols.iter()
                .filter_map(|c| {
                    Some(PrinterColumn {
                        name: c.get("name")?.as_str()?.to_string(),
                        json_path: c.get("jsonPath")?.as_str()?.to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The storage version's `openAPIV3Schema`.
pub fn open_api_schema(crd: &Value) -> Option<&Value> {
    storage_version(crd)?.pointer("/schema/openAPIV3Schema")
}

/// Resolves a simple JSONPath (`.spec.clusterRef.name`; no filters or wildcards) in `object`.
/// `None` for paths it does not understand or that are absent.
pub fn simple_json_path<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let rest = path.strip_prefix('.')?;
    if rest.contains(['[', '*', '?', '@']) {
        return None;
    }
    rest.split('.').try_fold(object, |v, key| v.get(key))
}

/// Every single-field violation of `schema` reachable from the fields `object` sets under
/// `spec` (plus removing `spec` itself when required). Each is `object` with exactly that field
/// broken.
pub fn violations(schema: &Value, object: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    let root_required = required(schema);
    if let (Some(spec_schema), Some(spec)) =
        (schema.pointer("/properties/spec"), object.get("spec"))
    {
        if root_required.contains(&"spec") && spec_schema.get("default").is_none() {
            let mut broken = object.clone();
            if let Some(map) = broken.as_object_mut() {
                map.remove("spec");
            }
            out.push(Violation {
                kind: ViolationKind::MissingRequired,
                path: "spec".into(),
                object: broken,
            });
        }
        let mut path = vec![Segment::Key("spec".into())];
        walk(spec_schema, spec, &mut path, object, &mut out);
    }
    out
}

#[derive(Debug, Clone)]
enum Segment {
    Key(String),
    Index(usize),
}

fn render(path: &[Segment]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Segment::Key(k) if s.is_empty() => s.push_str(k),
            Segment::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Segment::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn required(schema: &Value) -> Vec<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn schema_type(schema: &Value) -> Option<&str> {
    schema.get("type").and_then(Value::as_str)
}

fn is_free_form(schema: &Value) -> bool {
    [
        "x-kubernetes-int-or-string",
        "x-kubernetes-preserve-unknown-fields",
    ]
    .iter()
    .any(|k| schema.get(*k).and_then(Value::as_bool).unwrap_or(false))
}

/// Replaces the value at `path` (which exists) inside a copy of `root`.
fn with_value(root: &Value, path: &[Segment], value: Option<Value>) -> Value {
    let mut copy = root.clone();
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut node = &mut copy;
    for seg in parents {
        node = match seg {
            Segment::Key(k) => node.get_mut(k.as_str()),
            Segment::Index(i) => node.get_mut(*i),
        }
        .expect("path exists in the object it was derived from");
    }
    match (last, value) {
        (Segment::Key(k), Some(v)) => {
            node[k.as_str()] = v;
        }
        (Segment::Key(k), None) => {
            if let Some(map) = node.as_object_mut() {
                map.remove(k);
            }
        }
        (Segment::Index(i), Some(v)) => node[*i] = v,
        (Segment::Index(i), None) => {
            if let Some(items) = node.as_array_mut() {
                items.remove(*i);
            }
        }
    }
    copy
}

fn walk(
    schema: &Value,
    value: &Value,
    path: &mut Vec<Segment>,
    root: &Value,
    out: &mut Vec<Violation>,
) {
    if is_free_form(schema) {
        return;
    }
    match value {
        Value::Object(map) => {
            for name in required(schema) {
                let has_default = schema
                    .pointer(&format!("/properties/{name}/default"))
                    .is_some();
                if map.contains_key(name) && !has_default {
                    path.push(Segment::Key(name.to_string()));
                    out.push(Violation {
                        kind: ViolationKind::MissingRequired,
                        path: render(path),
                        object: with_value(root, path, None),
                    });
                    path.pop();
                }
            }
            for (key, child) in map {
                if let Some(child_schema) = schema.get("properties").and_then(|p| p.get(key)) {
                    path.push(Segment::Key(key.clone()));
                    walk(child_schema, child, path, root, out);
                    path.pop();
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    path.push(Segment::Index(i));
                    walk(item_schema, item, path, root, out);
                    path.pop();
                }
            }
        }
        _ => {
            let enum_of_strings = schema
                .get("enum")
                .and_then(Value::as_array)
                .is_some_and(|e| !e.is_empty() && e.iter().all(Value::is_string));
            let kind = if enum_of_strings {
                Some(ViolationKind::UnknownEnum)
            } else if matches!(schema_type(schema), Some("integer" | "number" | "boolean")) {
                Some(ViolationKind::WrongType)
            } else {
                None
            };
            if let Some(kind) = kind {
                out.push(Violation {
                    kind,
                    path: render(path),
                    object: with_value(root, path, Some(Value::String(INVALID_TEXT.into()))),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd() -> Value {
        json!({
            "spec": {
                "names": {"kind": "Widget"},
                "versions": [{
                    "name": "v1", "storage": true,
                    "additionalPrinterColumns": [
                        {"name": "Size", "jsonPath": ".spec.size", "type": "integer"},
                        {"name": "Ready", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "type": "string"}
                    ],
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "required": ["spec"],
                        "properties": {"spec": {
                            "type": "object",
                            "required": ["size", "mode"],
                            "properties": {
                                "size": {"type": "integer"},
                                "mode": {"type": "string", "enum": ["fast", "slow"], "default": "fast"},
                                "quantity": {"x-kubernetes-int-or-string": true},
                                "routes": {"type": "array", "items": {
                                    "type": "object",
                                    "properties": {"on": {"type": "boolean"}}
                                }}
                            }
                        }}
                    }}
                }]
            }
        })
    }

    #[test]
    fn without_indices_drops_array_positions() {
        assert_eq!(without_indices("spec.rules[10].qos[0]"), "spec.rules.qos");
        assert_eq!(without_indices("spec.deviceId"), "spec.deviceId");
    }

    #[test]
    fn reads_kind_and_printer_columns() {
        let crd = crd();
        assert_eq!(crd_kind(&crd), Some("Widget"));
        let cols: Vec<String> = printer_columns(&crd).into_iter().map(|c| c.name).collect();
        assert_eq!(cols, ["Size", "Ready"]);
    }

    #[test]
    fn simple_json_path_resolves_plain_paths_only() {
        let obj = json!({"spec": {"clusterRef": {"name": "q"}}});
        assert_eq!(
            simple_json_path(&obj, ".spec.clusterRef.name"),
            Some(&json!("q"))
        );
        assert_eq!(simple_json_path(&obj, ".spec.missing"), None);
        assert_eq!(
            simple_json_path(&obj, ".status.conditions[?(@.type==\"Ready\")].status"),
            None
        );
    }

    #[test]
    fn derives_one_violation_per_breakable_field_with_apiserver_paths() {
        let crd = crd();
        let schema = open_api_schema(&crd).unwrap();
        let obj = json!({"spec": {"size": 3, "mode": "slow", "quantity": "1Gi", "routes": [{"on": true}]}});
        let mut found: Vec<(String, ViolationKind)> = violations(schema, &obj)
            .into_iter()
            .map(|v| (v.path, v.kind))
            .collect();
        found.sort_by_key(|(path, kind)| (path.clone(), format!("{kind:?}")));
        // `mode` has a default, so removing it is no violation; `quantity` is int-or-string.
        assert_eq!(
            found,
            [
                ("spec".to_string(), ViolationKind::MissingRequired),
                ("spec.mode".to_string(), ViolationKind::UnknownEnum),
                ("spec.routes[0].on".to_string(), ViolationKind::WrongType),
                ("spec.size".to_string(), ViolationKind::MissingRequired),
                ("spec.size".to_string(), ViolationKind::WrongType),
            ]
        );
    }

    #[test]
    fn each_violation_breaks_exactly_its_field() {
        let crd = crd();
        let schema = open_api_schema(&crd).unwrap();
        let obj = json!({"spec": {"size": 3, "mode": "slow", "routes": [{"on": true}]}});
        for v in violations(schema, &obj) {
            match v.path.as_str() {
                "spec" => assert_eq!(v.object, json!({})),
                "spec.size" if v.kind == ViolationKind::MissingRequired => {
                    assert_eq!(
                        v.object,
                        json!({"spec": {"mode": "slow", "routes": [{"on": true}]}})
                    )
                }
                "spec.size" => assert_eq!(v.object["spec"]["size"], INVALID_TEXT),
                "spec.mode" => assert_eq!(v.object["spec"]["mode"], INVALID_TEXT),
                "spec.routes[0].on" => {
                    assert_eq!(v.object["spec"]["routes"][0]["on"], INVALID_TEXT)
                }
                other => panic!("unexpected violation at {other}"),
            }
        }
    }
}
