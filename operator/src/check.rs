//! `mqtt-operator check`: offline validation of a set of manifests, as a CI pipeline runs it
//! before merge. Pure: documents in, findings out.
//!
//! Checks, per document: well-formed kind, types and field names; the kind's spec validation.
//! Across the set: references resolve (identity/policy/bridge → cluster, bridge client identity
//! → DeviceIdentity, policy device subjects → an identity of that cluster), no duplicate objects
//! or `deviceId`s within a cluster, and no placeholder that can never match. From the compiled
//! ACL of each cluster (`acl::audit`): policies that apply to no identity or are not selected by
//! the cluster's `acl.policySelector`, and allow rules fully shadowed by deny rules.

use std::collections::{BTreeMap, BTreeSet};

use crds::pattern::Pattern;
use crds::policy::SubjectKind;
use crds::validate::{self, FieldError};
use crds::{DeviceIdentity, TopicPolicy};
use serde::Serialize;

use crate::manifest::{Content, Document, Resource};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Makes `check` fail (exit 1); the operator would refuse the object.
    Error,
    /// Reported, does not fail the check.
    Warning,
}

/// One finding about one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// File the document came from.
    pub file: String,
    /// Index of the document in the file (from 0).
    pub document: usize,
    /// `Kind/name`.
    pub object: String,
    /// Field path, e.g. `spec.rules[2].topics[0]`.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// Error or warning.
    pub severity: Severity,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let field = if self.field.is_empty() {
            "(document)"
        } else {
            &self.field
        };
        let warn = match self.severity {
            Severity::Warning => "warning: ",
            Severity::Error => "",
        };
        write!(
            f,
            "{}:{}: {}: {}: {warn}{}",
            self.file, self.document, self.object, field, self.message
        )
    }
}

/// The outcome of a check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Errors and warnings, in input order.
    pub findings: Vec<Finding>,
    /// Informational notes (e.g. ignored foreign kinds).
    pub notes: Vec<String>,
    /// Number of documents of our kinds that were checked.
    pub checked: usize,
}

impl Report {
    /// True when any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}

/// Namespace key for reference resolution: unset namespaces resolve among themselves.
fn ns(doc: &Document) -> &str {
    doc.namespace.as_deref().unwrap_or("")
}

struct Ctx<'a> {
    report: Report,
    docs: &'a [Document],
}

impl Ctx<'_> {
    fn push(&mut self, doc: &Document, e: FieldError, severity: Severity) {
        self.report.findings.push(Finding {
            file: doc.file.clone(),
            document: doc.index,
            object: doc.object(),
            field: e.path,
            message: e.message,
            severity,
        });
    }

    fn error(&mut self, doc: &Document, path: &str, message: String) {
        self.push(
            doc,
            FieldError {
                path: path.into(),
                message,
            },
            Severity::Error,
        );
    }

    fn has_cluster(&self, namespace: &str, name: &str) -> bool {
        self.docs.iter().any(|d| {
            ns(d) == namespace
                && d.name == name
                && matches!(d.resource(), Some(Resource::Cluster(_)))
        })
    }
}

/// The DeviceIdentities of one cluster in the set.
fn devices_of<'a>(
    docs: &'a [Document],
    namespace: &'a str,
    cluster: &'a str,
) -> impl Iterator<Item = &'a DeviceIdentity> + 'a {
    docs.iter().filter_map(move |d| match d.resource() {
        Some(Resource::Device(dev))
            if ns(d) == namespace && dev.spec.cluster_ref.name == cluster =>
        {
            Some(dev)
        }
        _ => None,
    })
}

/// Checks a set of documents.
pub fn check(docs: &[Document]) -> Report {
    let mut cx = Ctx {
        report: Report::default(),
        docs,
    };
    let mut seen_objects: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut device_ids: BTreeMap<(String, String, String), String> = BTreeMap::new();
    for doc in docs {
        let resource = match &doc.content {
            Content::Foreign { api_version } => {
                cx.report.notes.push(format!(
                    "{}:{}: {} ({api_version}) is not an mqtt-operator kind; ignored",
                    doc.file,
                    doc.index,
                    doc.object()
                ));
                continue;
            }
            Content::Malformed(errors) => {
                cx.report.checked += 1;
                for e in errors {
                    cx.push(doc, e.clone(), Severity::Error);
                }
                continue;
            }
            Content::Resource(r) => r.as_ref(),
        };
        cx.report.checked += 1;
        if !validate::is_dns_subdomain(&doc.name) {
            cx.error(
                doc,
                "metadata.name",
                format!("'{}' is not a valid object name", doc.name),
            );
        }
        let key = (doc.kind.clone(), ns(doc).to_string(), doc.name.clone());
        if !seen_objects.insert(key) {
            cx.error(
                doc,
                "metadata.name",
                "the same object is defined twice in this set".into(),
            );
        }
        let (errors, warnings, cluster) = match resource {
            Resource::Cluster(c) => (validate::validate_cluster(&c.spec), vec![], None),
            Resource::Device(d) => (
                validate::validate_device(&d.spec),
                vec![],
                Some(&d.spec.cluster_ref.name),
            ),
            Resource::Policy(p) => (
                validate::validate_policy(&p.spec),
                validate::policy_warnings(&p.spec),
                Some(&p.spec.cluster_ref.name),
            ),
            Resource::Bridge(b) => (
                validate::validate_bridge(&b.spec),
                vec![],
                Some(&b.spec.cluster_ref.name),
            ),
        };
        for e in errors {
            cx.push(doc, e, Severity::Error);
        }
        for w in warnings {
            cx.push(doc, w, Severity::Warning);
        }
        if let Some(cluster) = cluster {
            if !cx.has_cluster(ns(doc), cluster) {
                cx.error(
                    doc,
                    "spec.clusterRef.name",
                    format!("MqttCluster '{cluster}' is not defined in this set"),
                );
            }
        }
        match resource {
            Resource::Device(d) => {
                let key = (
                    ns(doc).to_string(),
                    d.spec.cluster_ref.name.clone(),
                    d.spec.device_id.clone(),
                );
                if let Some(first) = device_ids.get(&key) {
                    cx.error(
                        doc,
                        "spec.deviceId",
                        format!(
                            "deviceId '{}' is already used by DeviceIdentity/{first} in cluster '{}'",
                            d.spec.device_id, d.spec.cluster_ref.name
                        ),
                    );
                } else {
                    device_ids.insert(key, doc.name.clone());
                }
            }
            Resource::Policy(p) => check_policy_refs(&mut cx, doc, p),
            Resource::Bridge(b) => check_bridge_refs(&mut cx, doc, b),
            Resource::Cluster(_) => {}
        }
    }
    cx.report.findings.extend(crate::acl::audit::findings(docs));
    cx.report
}

fn check_bridge_refs(cx: &mut Ctx<'_>, doc: &Document, b: &crds::Bridge) {
    if let Some(remote) = &b.spec.remote.cluster_ref {
        if remote.name != b.spec.cluster_ref.name && !cx.has_cluster(ns(doc), &remote.name) {
            cx.error(
                doc,
                "spec.remote.clusterRef.name",
                format!("MqttCluster '{}' is not defined in this set", remote.name),
            );
        }
    }
    let identity = b
        .spec
        .remote
        .tls
        .as_ref()
        .and_then(|t| t.client_identity_ref.as_ref());
    if let Some(id) = identity {
        let found = cx.docs.iter().any(|d| {
            ns(d) == ns(doc)
                && d.name == id.name
                && matches!(d.resource(), Some(Resource::Device(_)))
        });
        if !found {
            cx.error(
                doc,
                "spec.remote.tls.clientIdentityRef.name",
                format!("DeviceIdentity '{}' is not defined in this set", id.name),
            );
        }
    }
}

fn check_policy_refs(cx: &mut Ctx<'_>, doc: &Document, p: &TopicPolicy) {
    let cluster = &p.spec.cluster_ref.name;
    let namespace = ns(doc);
    let docs = cx.docs;
    // The identities this policy can apply to, and whether it has non-device subjects.
    let mut matched: Vec<&DeviceIdentity> = Vec::new();
    let mut only_users = true;
    let mut dangling = Vec::new();
    for (i, s) in p.spec.subjects.iter().enumerate() {
        match s.kind() {
            Some(SubjectKind::Device(id)) => {
                only_users = false;
                let found: Vec<_> = devices_of(docs, namespace, cluster)
                    .filter(|d| d.spec.device_id == id)
                    .collect();
                if found.is_empty() {
                    dangling.push((i, id.to_string()));
                }
                matched.extend(found);
            }
            Some(SubjectKind::DeviceSelector(sel)) => {
                only_users = false;
                matched.extend(devices_of(docs, namespace, cluster).filter(|d| {
                    sel.matches(d.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))
                }));
            }
            Some(SubjectKind::All) => {
                only_users = false;
                matched.extend(devices_of(docs, namespace, cluster));
            }
            Some(SubjectKind::User(_)) | None => {}
        }
    }
    if !cx.has_cluster(namespace, cluster) {
        return; // already reported; identities cannot be resolved
    }
    for (i, id) in dangling {
        cx.error(
            doc,
            &format!("spec.subjects[{i}].device"),
            format!("no DeviceIdentity with deviceId '{id}' in cluster '{cluster}' in this set"),
        );
    }
    let empty = BTreeMap::new();
    for (i, rule) in p.spec.rules.iter().enumerate() {
        for (j, t) in rule.topics.iter().enumerate() {
            let Ok(pattern) = Pattern::parse(t) else {
                continue; // reported by validation
            };
            if !pattern.has_placeholders() {
                continue;
            }
            let path = format!("spec.rules[{i}].topics[{j}]");
            if only_users {
                cx.error(
                    doc,
                    &path,
                    format!("'{t}' uses placeholders, but the policy's subjects are users only: it can never match"),
                );
                continue;
            }
            let expands = matched.iter().any(|d| {
                pattern
                    .expand(
                        Some(&d.spec.device_id),
                        d.metadata.labels.as_ref().unwrap_or(&empty),
                    )
                    .is_some()
            });
            if !expands {
                let keys: Vec<_> = pattern.label_keys().collect();
                cx.error(
                    doc,
                    &path,
                    format!(
                        "'{t}' can never match: no identity selected by this policy has a usable value for {}",
                        if keys.is_empty() {
                            "its placeholders".to_string()
                        } else {
                            format!("label(s) {}", keys.join(", "))
                        }
                    ),
                );
            }
        }
    }
}
