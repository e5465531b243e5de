//! `docs/api.md`: the API reference generated from the CRD schemas (`mqtt-operator docs api`).
//! Pure: the same types always give the same text; a test keeps `docs/api.md` in sync.

use serde_json::Value;

/// The whole reference as Markdown.
pub fn markdown() -> String {
    let mut out = String::from(
        "# API reference (`mqtt.operator.dev/v1alpha1`)\n\n\
         Generated from the CRD schemas by `mqtt-operator docs api > docs/api.md`; do not edit by \
         hand (a test fails when this file drifts from the types).\n",
    );
    let crds: Vec<Value> = crds::all_crds()
        .iter()
        .map(|c| serde_json::to_value(c).expect("a CRD serializes"))
        .collect();
    out.push_str("\n| Kind | Short names | Scope |\n| --- | --- | --- |\n");
    for crd in &crds {
        let names = &crd["spec"]["names"];
        let short: Vec<String> = names["shortNames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(|s| format!("`{s}`")))
            .collect();
        out.push_str(&format!(
            "| [{kind}](#{anchor}) | {} | {} |\n",
            short.join(", "),
            crd["spec"]["scope"].as_str().unwrap_or(""),
            kind = names["kind"].as_str().unwrap_or(""),
            anchor = names["kind"].as_str().unwrap_or("").to_lowercase(),
        ));
    }
    for crd in &crds {
        kind_section(crd, &mut out);
    }
    out
}

fn kind_section(crd: &Value, out: &mut String) {
    let names = &crd["spec"]["names"];
    let kind = names["kind"].as_str().unwrap_or("");
    let Some(version) = crd["spec"]["versions"].as_array().and_then(|v| v.first()) else {
        return;
    };
    let schema = &version["schema"]["openAPIV3Schema"];
    out.push_str(&format!("\n## {kind}\n\n"));
    if let Some(d) = schema["description"].as_str() {
        out.push_str(&format!("{}\n\n", one_line(d)));
    }
    out.push_str(&format!(
        "`apiVersion: {}/{}`, `kind: {kind}`, plural `{}`.\n",
        crd["spec"]["group"].as_str().unwrap_or(""),
        version["name"].as_str().unwrap_or(""),
        names["plural"].as_str().unwrap_or("")
    ));
    for part in ["spec", "status"] {
        let node = &schema["properties"][part];
        if node.is_null() {
            continue;
        }
        out.push_str(&format!(
            "\n### {kind} `.{part}`\n\n| Field | Type | Required | Description |\n| --- | --- | --- | --- |\n"
        ));
        fields(node, part, out);
    }
}

/// The type of a schema node, as shown in the table.
fn type_of(node: &Value) -> String {
    if node["x-kubernetes-int-or-string"] == Value::Bool(true) {
        return "int or string".into();
    }
    match node["type"].as_str() {
        Some("array") => format!("[]{}", type_of(&node["items"])),
        Some("object")
            if node["properties"].is_null() && !node["additionalProperties"].is_null() =>
        {
            format!("map[string]{}", type_of(&node["additionalProperties"]))
        }
        Some(t) => t.to_owned(),
        None if node["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true) => "any".into(),
        None => "any".into(),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// Constraints shown after the description.
fn constraints(node: &Value) -> String {
    let mut c = Vec::new();
    if let Some(values) = node["enum"].as_array() {
        let v: Vec<String> = values.iter().map(|v| format!("`{}`", plain(v))).collect();
        c.push(format!("one of {}", v.join(", ")));
    }
    if !node["default"].is_null() {
        c.push(format!("default `{}`", plain(&node["default"])));
    }
    for (key, label) in [
        ("minimum", "min"),
        ("maximum", "max"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
    ] {
        if let Some(v) = node[key].as_number() {
            c.push(format!("{label} {v}"));
        }
    }
    if let Some(p) = node["pattern"].as_str() {
        c.push(format!("pattern `{}`", p.replace('|', "\\|")));
    }
    if c.is_empty() {
        String::new()
    } else {
        format!(" ({})", c.join("; "))
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string().replace('|', "\\|"),
    }
}

/// One row per field, depth first, properties in schema (alphabetical) order.
fn fields(node: &Value, path: &str, out: &mut String) {
    let required: Vec<&str> = node["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    let object = match node["type"].as_str() {
        Some("array") => &node["items"],
        _ => node,
    };
    let Some(props) = object["properties"].as_object() else {
        return;
    };
    let required_here: Vec<&str> = if object == node {
        required
    } else {
        object["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect()
    };
    let prefix = if object == node {
        path.to_owned()
    } else {
        format!("{path}[]")
    };
    for (name, child) in props {
        let field = format!("{prefix}.{name}");
        out.push_str(&format!(
            "| `{field}` | {} | {} | {}{} |\n",
            type_of(child),
            if required_here.contains(&name.as_str()) {
                "yes"
            } else {
                ""
            },
            child["description"]
                .as_str()
                .map(one_line)
                .unwrap_or_default(),
            constraints(child)
        ));
        fields(child, &field, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_kind_has_a_section_and_key_fields_are_listed() {
        let md = markdown();
        for kind in ["MqttCluster", "DeviceIdentity", "TopicPolicy", "Bridge"] {
            assert!(md.contains(&format!("\n## {kind}\n")), "{kind}");
        }
        assert!(
            md.contains("| `spec.core.replicas` | integer |"),
            "replicas row"
        );
        assert!(
            md.contains("| `spec.deviceId` | string | yes |"),
            "deviceId row"
        );
        assert!(
            md.contains("`spec.rules[].effect`"),
            "array items are walked"
        );
        assert!(md.contains("one of `deny`, `allow`"), "enums are listed");
        assert_eq!(md, markdown(), "deterministic");
    }

    #[test]
    fn types_of_arrays_maps_and_int_or_string() {
        assert_eq!(
            type_of(&json!({"type": "array", "items": {"type": "string"}})),
            "[]string"
        );
        assert_eq!(
            type_of(&json!({"type": "object", "additionalProperties": {"type": "string"}})),
            "map[string]string"
        );
        assert_eq!(
            type_of(&json!({"x-kubernetes-int-or-string": true})),
            "int or string"
        );
        assert_eq!(one_line("a |\n b"), "a \\| b");
    }
}
