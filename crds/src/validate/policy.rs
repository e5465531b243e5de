//! TopicPolicy validation and warnings.

use std::collections::BTreeSet;

use super::device::device_id_problem;
use super::{Errors, FieldError};
use crate::pattern::Pattern;
use crate::policy::{Action, SubjectKind, TopicPolicySpec};

/// Upper bounds that keep one policy reviewable and its compile bounded.
pub const MAX_SUBJECTS: usize = 1_000;
/// Maximum rules per policy.
pub const MAX_RULES: usize = 1_000;
/// Maximum topic patterns per rule.
pub const MAX_TOPICS_PER_RULE: usize = 256;

/// Validates a TopicPolicy spec.
pub fn validate_policy(spec: &TopicPolicySpec) -> Vec<FieldError> {
    let mut e = Errors::default();
    e.object_name("spec.clusterRef.name", &spec.cluster_ref.name);
    if spec.subjects.is_empty() {
        e.add("spec.subjects", "must list at least one subject");
    }
    if spec.subjects.len() > MAX_SUBJECTS {
        e.add(
            "spec.subjects",
            format!("at most {MAX_SUBJECTS} subjects per policy"),
        );
    }
    for (i, s) in spec.subjects.iter().enumerate() {
        let p = format!("spec.subjects[{i}]");
        match s.kind() {
            None => e.add(
                p,
                "must set exactly one of device, deviceSelector, user, all (and all must be true)",
            ),
            Some(SubjectKind::Device(id)) if device_id_problem(id).is_some() => e.add(
                format!("{p}.device"),
                format!(
                    "'{id}' is not a valid device id: {}",
                    device_id_problem(id).unwrap_or_default()
                ),
            ),
            Some(SubjectKind::User(u)) if u.is_empty() || u.len() > 256 || u.contains('\0') => {
                e.add(format!("{p}.user"), "must be 1-256 characters without NUL")
            }
            Some(SubjectKind::DeviceSelector(sel)) => {
                e.selector(&format!("{p}.deviceSelector"), sel)
            }
            Some(_) => {}
        }
    }
    if spec.rules.is_empty() {
        e.add("spec.rules", "must list at least one rule");
    }
    if spec.rules.len() > MAX_RULES {
        e.add(
            "spec.rules",
            format!("at most {MAX_RULES} rules per policy"),
        );
    }
    for (i, r) in spec.rules.iter().enumerate() {
        let p = format!("spec.rules[{i}]");
        if r.actions.is_empty() {
            e.add(format!("{p}.actions"), "must list publish and/or subscribe");
        }
        let distinct: BTreeSet<_> = r.actions.iter().collect();
        if distinct.len() != r.actions.len() {
            e.add(format!("{p}.actions"), "lists an action twice");
        }
        if r.topics.is_empty() {
            e.add(
                format!("{p}.topics"),
                "must list at least one topic pattern",
            );
        }
        if r.topics.len() > MAX_TOPICS_PER_RULE {
            e.add(
                format!("{p}.topics"),
                format!("at most {MAX_TOPICS_PER_RULE} patterns per rule"),
            );
        }
        for (j, t) in r.topics.iter().enumerate() {
            if let Err(err) = Pattern::parse(t) {
                e.add(
                    format!("{p}.topics[{j}]"),
                    format!("'{}': {err}", abbreviate(t)),
                );
            }
        }
        if let Some(qos) = &r.qos {
            if qos.is_empty() {
                e.add(
                    format!("{p}.qos"),
                    "must list at least one of 0, 1, 2 (or be omitted)",
                );
            }
            for (j, q) in qos.iter().enumerate() {
                if *q > 2 {
                    e.add(
                        format!("{p}.qos[{j}]"),
                        format!("QoS must be 0, 1 or 2, got {q}"),
                    );
                }
            }
        }
        if r.retain.is_some() && !r.actions.contains(&Action::Publish) {
            e.add(
                format!("{p}.retain"),
                "only applies to publish; this rule has no publish action",
            );
        }
    }
    e.into_vec()
}

/// Non-fatal findings: selector-wide (or `all`) subscriptions to `#` or `$SYS`.
pub fn policy_warnings(spec: &TopicPolicySpec) -> Vec<FieldError> {
    let broad_subjects = spec.subjects.iter().any(|s| {
        matches!(
            s.kind(),
            Some(SubjectKind::DeviceSelector(_)) | Some(SubjectKind::All)
        )
    });
    let mut e = Errors::default();
    if !broad_subjects {
        return e.into_vec();
    }
    for (i, r) in spec.rules.iter().enumerate() {
        if r.effect != crate::policy::Effect::Allow || !r.actions.contains(&Action::Subscribe) {
            continue;
        }
        for (j, t) in r.topics.iter().enumerate() {
            if t == "#" || t.starts_with("$SYS") {
                e.add(
                    format!("spec.rules[{i}].topics[{j}]"),
                    format!(
                        "device selectors may subscribe to '{t}': every matched device can read it"
                    ),
                );
            }
        }
    }
    e.into_vec()
}

/// Shortens a long value for messages.
fn abbreviate(s: &str) -> String {
    if s.len() <= 80 {
        return s.to_string();
    }
    let cut = (0..=77).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
    format!("{}... ({} bytes)", &s[..cut], s.len())
}
