//! Server-side apply that skips writes which would change nothing: the desired object is
//! compared with the observed one, ignoring every field the server (or anyone else) added.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::render::names::FIELD_MANAGER;

/// Field manager for status writes (separate from the spec manager).
pub const STATUS_FIELD_MANAGER: &str = "mqtt-operator-status";

/// An apply failed.
#[derive(Debug, thiserror::Error)]
#[error("{verb} {kind} {name}: {source}")]
pub struct ApplyError {
    /// `get`, `apply` or `status`.
    pub verb: &'static str,
    /// Kind of the object.
    pub kind: String,
    /// Name of the object.
    pub name: String,
    /// The API error.
    #[source]
    pub source: kube::Error,
}

/// True when every field set in `desired` has the same value in `observed`. Objects may have
/// extra keys in `observed` (server defaults, other managers); arrays must match element-wise;
/// a `null` in `desired` matches an absent field.
pub fn is_subset(desired: &Value, observed: &Value) -> bool {
    match (desired, observed) {
        (Value::Object(d), Value::Object(o)) => d.iter().all(|(k, v)| match o.get(k) {
            Some(ov) => is_subset(v, ov),
            None => v.is_null(),
        }),
        (Value::Array(d), Value::Array(o)) => {
            d.len() == o.len() && d.iter().zip(o).all(|(a, b)| is_subset(a, b))
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (d, o) => d == o,
    }
}

/// Applies `desired` (forced, field manager `mqtt-operator`) unless the observed object already
/// matches. Returns whether a write was made.
pub async fn apply<K>(api: &Api<K>, desired: &K) -> Result<bool, ApplyError>
where
    K: Resource + Serialize + DeserializeOwned + Clone + std::fmt::Debug,
    K::DynamicType: Default,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let err = |verb, source| ApplyError {
        verb,
        kind: kind.clone(),
        name: name.clone(),
        source,
    };
    let want = serde_json::to_value(desired).unwrap_or(Value::Null);
    if let Some(observed) = api.get_opt(&name).await.map_err(|e| err("get", e))? {
        let have = serde_json::to_value(&observed).unwrap_or(Value::Null);
        if is_subset(&want, &have) {
            return Ok(false);
        }
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&want),
    )
    .await
    .map_err(|e| err("apply", e))?;
    Ok(true)
}

/// [`apply`] for an object only known as JSON (PDB with a discovered version, monitoring kinds).
pub async fn apply_dynamic(api: &Api<DynamicObject>, desired: &Value) -> Result<bool, ApplyError> {
    let name = desired["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let kind = desired["kind"].as_str().unwrap_or_default().to_string();
    let err = |verb, source| ApplyError {
        verb,
        kind: kind.clone(),
        name: name.clone(),
        source,
    };
    if let Some(observed) = api.get_opt(&name).await.map_err(|e| err("get", e))? {
        let have = serde_json::to_value(&observed).unwrap_or(Value::Null);
        if is_subset(desired, &have) {
            return Ok(false);
        }
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(desired),
    )
    .await
    .map_err(|e| err("apply", e))?;
    Ok(true)
}

/// Writes `status` with server-side apply (status manager) unless it equals `current`.
pub async fn apply_status<K, S>(
    api: &Api<K>,
    name: &str,
    current: Option<&S>,
    status: &S,
) -> Result<bool, ApplyError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(false);
    }
    let dt = K::DynamicType::default();
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&dt),
        "kind": K::kind(&dt),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(STATUS_FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| ApplyError {
        verb: "status",
        kind: K::kind(&dt).into_owned(),
        name: name.into(),
        source,
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_added_fields_do_not_count_as_changes() {
        let desired = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"ports": [{"port": 80}]}});
        let observed = json!({"metadata": {"name": "a", "uid": "u", "labels": {"x": "1"}}, "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "clusterIP": "10.0.0.1"}});
        assert!(is_subset(&desired, &observed));
    }

    #[test]
    fn changed_or_missing_fields_do() {
        let observed = json!({"spec": {"ports": [{"port": 80}], "replicas": 3}});
        assert!(!is_subset(&json!({"spec": {"replicas": 5}}), &observed));
        assert!(!is_subset(&json!({"spec": {"extra": 1}}), &observed));
        assert!(!is_subset(
            &json!({"spec": {"ports": [{"port": 80}, {"port": 81}]}}),
            &observed
        ));
        assert!(is_subset(&json!({"spec": {"gone": null}}), &observed));
    }
}
