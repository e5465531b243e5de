//! Reading YAML manifests from the repository and applying them (server-side apply) to the bed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::Client;
use serde::Deserialize;

use crate::wait::{self, Check};

/// Field manager of everything the test bed itself applies.
pub const FIELD_MANAGER: &str = "mqtt-operator-e2e";

/// Errors reading or applying manifests.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file or directory could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A file is not valid YAML.
    #[error("parsing YAML in {path}: {source}")]
    Parse {
        /// The path.
        path: PathBuf,
        /// The parse error.
        source: serde_yaml::Error,
    },
    /// A directory had no manifests.
    #[error("no *.yaml files in {0}")]
    Empty(PathBuf),
    /// A document lacks apiVersion, kind or metadata.name.
    #[error("{what}: document lacks {field}")]
    Incomplete {
        /// Where the document came from.
        what: String,
        /// The missing field.
        field: &'static str,
    },
    /// The server refused or failed a request.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// The client error.
        source: Box<kube::Error>,
    },
    /// A wait timed out.
    #[error(transparent)]
    Wait(#[from] wait::WaitError),
}

/// One parsed YAML document and the file it came from.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The source file.
    pub path: PathBuf,
    /// The document.
    pub value: serde_json::Value,
}

impl Manifest {
    /// `apiVersion`, `kind`, `metadata.name` of the document.
    pub fn identity(&self) -> Result<(String, String, String), ManifestError> {
        let field = |pointer: &str, field: &'static str| {
            self.value
                .pointer(pointer)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| ManifestError::Incomplete {
                    what: self.path.display().to_string(),
                    field,
                })
        };
        Ok((
            field("/apiVersion", "apiVersion")?,
            field("/kind", "kind")?,
            field("/metadata/name", "metadata.name")?,
        ))
    }
}

/// Reads every non-empty YAML document of `path` (multi-document files allowed).
pub fn read_file(path: &Path) -> Result<Vec<Manifest>, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_json::Value::deserialize(doc).map_err(|source| ManifestError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        if !value.is_null() {
            out.push(Manifest {
                path: path.to_path_buf(),
                value,
            });
        }
    }
    Ok(out)
}

/// Reads every `*.yaml`/`*.yml` file of `dir` in file-name order.
pub fn read_dir(dir: &Path) -> Result<Vec<Manifest>, ManifestError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ManifestError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| ManifestError::Read {
                path: dir.to_path_buf(),
                source,
            })?
            .path();
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            files.push(path);
        }
    }
    files.sort();
    let mut out = Vec::new();
    for file in files {
        out.extend(read_file(&file)?);
    }
    if out.is_empty() {
        return Err(ManifestError::Empty(dir.to_path_buf()));
    }
    Ok(out)
}

/// Server-side applies CRD manifests (forced, [`FIELD_MANAGER`]) and returns their names.
pub async fn apply_crds(client: &Client, crds: &[Manifest]) -> Result<Vec<String>, ManifestError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::new();
    for crd in crds {
        let (_, kind, name) = crd.identity()?;
        if kind != "CustomResourceDefinition" {
            return Err(ManifestError::Incomplete {
                what: format!("{} (kind {kind})", crd.path.display()),
                field: "kind: CustomResourceDefinition",
            });
        }
        api.patch(&name, &params, &Patch::Apply(&crd.value))
            .await
            .map_err(|source| ManifestError::Api {
                action: format!("applying CRD {name} from {}", crd.path.display()),
                source: Box::new(source),
            })?;
        names.push(name);
    }
    Ok(names)
}

/// Waits until every named CRD has condition `Established=True`.
pub async fn wait_established(
    client: &Client,
    names: &[String],
    timeout: Duration,
) -> Result<(), ManifestError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in names {
        wait::until(&format!("CRD {name} to be Established"), timeout, || {
            let api = api.clone();
            async move {
                let crd = match api.get(name).await {
                    Ok(crd) => crd,
                    Err(e) => return Check::NotYet(format!("get: {e}")),
                };
                let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
                match conditions.iter().find(|c| c.type_ == "Established") {
                    Some(c) if c.status == "True" => Check::Done(()),
                    Some(c) => Check::NotYet(format!(
                        "Established={} ({})",
                        c.status,
                        c.message.clone().unwrap_or_default()
                    )),
                    None => Check::NotYet("no Established condition yet".to_string()),
                }
            }
        })
        .await?;
    }
    Ok(())
}

/// An [`Api`] for the manifest's kind (found by discovery), scoped to `namespace` when the kind
/// is namespaced.
pub async fn api_for(
    client: &Client,
    manifest: &Manifest,
    namespace: &str,
) -> Result<Api<DynamicObject>, ManifestError> {
    let (api_version, kind, _) = manifest.identity()?;
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version.clone()),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, &kind);
    let (resource, caps) = discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|source| ManifestError::Api {
            action: format!("discovering {api_version} {kind}"),
            source: Box::new(source),
        })?;
    Ok(match caps.scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, &resource),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    })
}

/// Server-side applies one object into `namespace` (its own `metadata.namespace` is ignored).
pub async fn apply(
    client: &Client,
    manifest: &Manifest,
    namespace: &str,
) -> Result<DynamicObject, ManifestError> {
    let (_, kind, name) = manifest.identity()?;
    let api = api_for(client, manifest, namespace).await?;
    let mut value = manifest.value.clone();
    if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("namespace");
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&value),
    )
    .await
    .map_err(|source| ManifestError::Api {
        action: format!(
            "applying {kind} {namespace}/{name} from {}",
            manifest.path.display()
        ),
        source: Box::new(source),
    })
}

impl ManifestError {
    /// The server's `Status` when the server refused the request (e.g. a 422 Invalid).
    pub fn server_status(&self) -> Option<&kube::core::Status> {
        match self {
            ManifestError::Api { source, .. } => match source.as_ref() {
                kube::Error::Api(status) => Some(status),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The repository's CRDs, `crds/generated/*.yaml`.
pub fn repo_crds() -> Result<Vec<Manifest>, ManifestError> {
    read_dir(&crate::bed::repo_root().join("crds/generated"))
}

/// The repository's quickstart, `manifests/examples/quickstart/*.yaml`, in apply order.
pub fn quickstart() -> Result<Vec<Manifest>, ManifestError> {
    read_dir(&crate::bed::repo_root().join("manifests/examples/quickstart"))
}

/// The first manifest of `kind` in `manifests`.
pub fn first_of_kind<'a>(manifests: &'a [Manifest], kind: &str) -> Option<&'a Manifest> {
    manifests.iter().find(|m| m.value["kind"] == kind)
}
