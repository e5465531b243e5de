//! Reading GitOps manifests: multi-document YAML files into typed objects of our four kinds.
//!
//! [`parse_file`] is pure (text in, documents out); [`load_paths`] is the one IO step that reads
//! files and directories.

use std::path::{Path, PathBuf};

use crds::validate::FieldError;
use crds::{Bridge, DeviceIdentity, MqttCluster, TopicPolicy};
use serde::de::DeserializeOwned;

/// A file's text, with the path it came from.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path as given on the command line (or found under a given directory).
    pub path: String,
    /// The file's contents.
    pub text: String,
}

/// One of our four kinds, deserialized.
#[derive(Debug, Clone)]
pub enum Resource {
    /// An MqttCluster.
    Cluster(Box<MqttCluster>),
    /// A DeviceIdentity.
    Device(DeviceIdentity),
    /// A TopicPolicy.
    Policy(TopicPolicy),
    /// A Bridge.
    Bridge(Bridge),
}

/// What a YAML document turned out to be.
#[derive(Debug, Clone)]
pub enum Content {
    /// One of our kinds, well-formed (its spec may still be invalid).
    Resource(Box<Resource>),
    /// A kind of another API group: ignored by `check`, with a note.
    Foreign {
        /// `apiVersion` of the document.
        api_version: String,
    },
    /// A document that cannot be read as one of our kinds.
    Malformed(Vec<FieldError>),
}

/// One YAML document of a file.
#[derive(Debug, Clone)]
pub struct Document {
    /// The file it came from.
    pub file: String,
    /// Index of the document in its file, counting from 0 (empty documents included).
    pub index: usize,
    /// `kind`, or `?` when absent.
    pub kind: String,
    /// `metadata.name`, or `?` when absent.
    pub name: String,
    /// `metadata.namespace`, if given.
    pub namespace: Option<String>,
    /// The parsed content.
    pub content: Content,
}

impl Document {
    /// `Kind/name`, as used in messages.
    pub fn object(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    /// The typed object, when the document is one of our kinds and well-formed.
    pub fn resource(&self) -> Option<&Resource> {
        match &self.content {
            Content::Resource(r) => Some(r),
            _ => None,
        }
    }
}

/// Input that could not be read at all (exit code 2 in `check`).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no .yaml or .yml files found")]
    NoFiles { path: String },
    #[error("{path}: document {index}: YAML syntax error: {message}")]
    Syntax {
        path: String,
        index: usize,
        message: String,
    },
}

/// Reads every `.yaml`/`.yml` file under the given files and directories (recursively, sorted).
pub fn load_paths(paths: &[PathBuf]) -> Result<Vec<SourceFile>, LoadError> {
    let mut files = Vec::new();
    for p in paths {
        let io = |source| LoadError::Io {
            path: p.display().to_string(),
            source,
        };
        if std::fs::metadata(p).map_err(io)?.is_dir() {
            let mut found = Vec::new();
            collect_yaml(p, &mut found).map_err(io)?;
            if found.is_empty() {
                return Err(LoadError::NoFiles {
                    path: p.display().to_string(),
                });
            }
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).map_err(|source| LoadError::Io {
                path: f.display().to_string(),
                source,
            })?;
            Ok(SourceFile {
                path: f.display().to_string(),
                text,
            })
        })
        .collect()
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_yaml(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// Parses every document of every file.
pub fn parse_files(files: &[SourceFile]) -> Result<Vec<Document>, LoadError> {
    let mut docs = Vec::new();
    for f in files {
        docs.extend(parse_file(f)?);
    }
    Ok(docs)
}

/// Parses one multi-document YAML file. Empty documents are skipped (but keep their index).
pub fn parse_file(file: &SourceFile) -> Result<Vec<Document>, LoadError> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (index, de) in serde_yaml::Deserializer::from_str(&file.text).enumerate() {
        let value = serde_yaml::Value::deserialize(de).map_err(|e| LoadError::Syntax {
            path: file.path.clone(),
            index,
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        out.push(parse_document(&file.path, index, value));
    }
    Ok(out)
}

fn parse_document(file: &str, index: usize, value: serde_yaml::Value) -> Document {
    let str_at = |v: &serde_yaml::Value, keys: &[&str]| -> Option<String> {
        keys.iter()
            .try_fold(v, |v, k| v.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let kind = str_at(&value, &["kind"]);
    let api_version = str_at(&value, &["apiVersion"]);
    let mut doc = Document {
        file: file.to_string(),
        index,
        kind: kind.clone().unwrap_or_else(|| "?".into()),
        name: str_at(&value, &["metadata", "name"]).unwrap_or_else(|| "?".into()),
        namespace: str_at(&value, &["metadata", "namespace"]),
        content: Content::Malformed(vec![]),
    };
    let malformed = |path: &str, message: String| {
        Content::Malformed(vec![FieldError {
            path: path.into(),
            message,
        }])
    };
    if !value.is_mapping() {
        doc.content = malformed("", "document is not a mapping".into());
        return doc;
    }
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        doc.content = malformed("apiVersion", "apiVersion and kind are required".into());
        return doc;
    };
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    if group != crds::GROUP {
        doc.content = Content::Foreign { api_version };
        return doc;
    }
    if api_version != crds::API_VERSION {
        doc.content = malformed(
            "apiVersion",
            format!(
                "unknown version '{api_version}', expected {}",
                crds::API_VERSION
            ),
        );
        return doc;
    }
    if doc.name == "?" {
        doc.content = malformed("metadata.name", "is required".into());
        return doc;
    }
    let json = match serde_json::to_value(&value) {
        Ok(j) => j,
        Err(e) => {
            doc.content = malformed("", format!("not representable as JSON: {e}"));
            return doc;
        }
    };
    doc.content = match kind.as_str() {
        "MqttCluster" => typed(json).map(|r| Resource::Cluster(Box::new(r))),
        "DeviceIdentity" => typed(json).map(Resource::Device),
        "TopicPolicy" => typed(json).map(Resource::Policy),
        "Bridge" => typed(json).map(Resource::Bridge),
        other => Err(vec![FieldError {
            path: "kind".into(),
            message: format!(
                "unknown kind '{other}' in {}: expected MqttCluster, DeviceIdentity, TopicPolicy or Bridge",
                crds::GROUP
            ),
        }]),
    }
    .map_or_else(Content::Malformed, |r| Content::Resource(Box::new(r)));
    doc
}

/// Deserializes with field paths on type errors, and reports unknown fields (which the API
/// server would silently drop) as errors.
fn typed<T: DeserializeOwned>(json: serde_json::Value) -> Result<T, Vec<FieldError>> {
    let mut unknown = Vec::new();
    let mut on_unknown = |path: serde_ignored::Path<'_>| {
        let p = path.to_string();
        if p != "apiVersion" && p != "kind" {
            unknown.push(p);
        }
    };
    let de = serde_ignored::Deserializer::new(json, &mut on_unknown);
    let result: Result<T, _> = serde_path_to_error::deserialize(de);
    match result {
        Err(e) => Err(vec![FieldError {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        }]),
        Ok(_) if !unknown.is_empty() => Err(unknown
            .into_iter()
            .map(|path| FieldError {
                path,
                message: "unknown field (the API server would drop it; check the spelling)".into(),
            })
            .collect()),
        Ok(v) => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Document> {
        parse_file(&SourceFile {
            path: "t.yaml".into(),
            text: text.into(),
        })
        .unwrap()
    }

    #[test]
    fn multi_document_with_foreign_and_empty() {
        let docs = parse(
            "---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n\
             apiVersion: mqtt.operator.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: c}\nspec: {}\n",
        );
        assert_eq!(docs.len(), 2);
        assert!(matches!(docs[0].content, Content::Foreign { .. }));
        assert_eq!(docs[1].index, 2);
        assert!(matches!(docs[1].resource(), Some(Resource::Cluster(_))));
    }

    #[test]
    fn type_errors_and_unknown_fields_name_the_path() {
        let docs = parse(
            "apiVersion: mqtt.operator.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: c}\n\
             spec: {core: {replicas: three}}\n---\n\
             apiVersion: mqtt.operator.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: d}\n\
             spec: {acl: {defaultAcion: allow}}\n",
        );
        let Content::Malformed(e) = &docs[0].content else {
            panic!("{:?}", docs[0].content)
        };
        assert_eq!(e[0].path, "spec.core.replicas");
        let Content::Malformed(e) = &docs[1].content else {
            panic!("{:?}", docs[1].content)
        };
        assert_eq!(e[0].path, "spec.acl.defaultAcion");
    }

    #[test]
    fn syntax_error_is_a_load_error() {
        let r = parse_file(&SourceFile {
            path: "t.yaml".into(),
            text: "a: [\n".into(),
        });
        assert!(matches!(r, Err(LoadError::Syntax { .. })));
    }
}
