//! Pure validation of every kind. Each error names the field path (`spec.rules[2].topics[0]`).
//!
//! These are the source of truth: the API server (1.20 on the test bed) enforces only the
//! structural schema, so the operator, `check` and the broker all call these.

mod bridge;
mod cluster;
mod device;
mod policy;

use std::fmt;

pub use bridge::validate_bridge;
pub use cluster::validate_cluster;
pub use device::{
    device_id_problem, is_device_id, validate_device, MAX_CSR_BYTES, MAX_DEVICE_ID_LEN,
};
pub use policy::{policy_warnings, validate_policy};

use crate::duration::parse_duration;
use crate::selector::{LabelSelector, SelectorOperator};

/// One problem in a spec, at a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path with indices, e.g. `spec.rules[2].topics[0]`.
    pub path: String,
    /// What is wrong and, where it helps, what would be right.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Collects [`FieldError`]s while walking a spec.
#[derive(Debug, Default)]
pub struct Errors(Vec<FieldError>);

impl Errors {
    /// Records a problem at `path`.
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Parses a duration field, recording an error on failure.
    pub fn duration(&mut self, path: &str, value: &str) -> Option<std::time::Duration> {
        match parse_duration(value) {
            Ok(d) => Some(d),
            Err(e) => {
                self.add(path, e.to_string());
                None
            }
        }
    }

    /// Checks a reference to an object by name.
    pub fn object_name(&mut self, path: &str, name: &str) {
        if !is_dns_subdomain(name) {
            self.add(
                path,
                format!("'{name}' is not a valid object name (lowercase alphanumerics, '-', '.'; at most 253)"),
            );
        }
    }

    /// Checks a label selector's requirements.
    pub fn selector(&mut self, path: &str, sel: &LabelSelector) {
        for (k, v) in &sel.match_labels {
            if !is_label_key(k) {
                self.add(
                    format!("{path}.matchLabels"),
                    format!("invalid label key '{k}'"),
                );
            }
            if !is_label_value(v) {
                self.add(
                    format!("{path}.matchLabels.{k}"),
                    format!("invalid label value '{v}'"),
                );
            }
        }
        for (i, r) in sel.match_expressions.iter().enumerate() {
            let p = format!("{path}.matchExpressions[{i}]");
            if !is_label_key(&r.key) {
                self.add(format!("{p}.key"), format!("invalid label key '{}'", r.key));
            }
            let needs_values = matches!(r.operator, SelectorOperator::In | SelectorOperator::NotIn);
            if needs_values && r.values.is_empty() {
                self.add(format!("{p}.values"), "must be non-empty for In and NotIn");
            }
            if !needs_values && !r.values.is_empty() {
                self.add(
                    format!("{p}.values"),
                    "must be empty for Exists and DoesNotExist",
                );
            }
        }
    }

    /// The collected problems.
    pub fn into_vec(self) -> Vec<FieldError> {
        self.0
    }
}

/// A DNS-1123 subdomain (Kubernetes object names).
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

/// A Kubernetes label key: `[prefix/]name`.
pub fn is_label_key(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(s),
    }
}

/// A Kubernetes label value (may be empty).
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_label_name(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels() {
        assert!(is_dns_subdomain("a-b.c"));
        assert!(!is_dns_subdomain("A"));
        assert!(!is_dns_subdomain("-a"));
        assert!(!is_dns_subdomain(""));
        assert!(!is_dns_subdomain("a..b"));
        assert!(is_label_key("app.kubernetes.io/name"));
        assert!(is_label_key("site"));
        assert!(!is_label_key("-site"));
        assert!(!is_label_key("a/b/c"));
        assert!(is_label_value(""));
        assert!(!is_label_value("a b"));
    }
}
