//! Adapter from `acl.json` to [`AccessPolicy`].
//!
//! INTERIM: until `contract::acl` (the compiled rule set and matcher shared with the operator)
//! lands, this module reads a minimal rule format with the documented semantics (deny beats
//! allow, subscription filters must be covered by an allowed pattern, default action otherwise).
//! Replacing it is confined to this file.

use std::sync::Arc;

use contract::topic::{filter_covers, filter_matches};
use serde::Deserialize;

use crate::access::{AccessPolicy, PolicyError, Subject};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RuleSet {
    revision: String,
    default_action: Effect,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Action {
    Publish,
    Subscribe,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Rule {
    /// Device ids, or `["*"]` for everyone (including anonymous clients).
    subjects: Vec<String>,
    effect: Effect,
    actions: Vec<Action>,
    topics: Vec<String>,
    #[serde(default)]
    qos: Option<Vec<u8>>,
    #[serde(default)]
    retain: Option<bool>,
}

impl Rule {
    fn applies(&self, subject: Subject<'_>, action: Action, qos: u8, retain: Option<bool>) -> bool {
        let who = self.subjects.iter().any(|s| match subject {
            Subject::Device(id) => s == "*" || s == id,
            Subject::Anonymous => s == "*",
        });
        who && self.actions.contains(&action)
            && self.qos.as_ref().is_none_or(|q| q.contains(&qos))
            && match (self.retain, retain) {
                (Some(want), Some(got)) => want == got,
                _ => true,
            }
    }
}

impl AccessPolicy for RuleSet {
    fn revision(&self) -> &str {
        &self.revision
    }

    fn allow_publish(&self, subject: Subject<'_>, topic: &str, qos: u8, retain: bool) -> bool {
        let mut allowed = false;
        for rule in self
            .rules
            .iter()
            .filter(|r| r.applies(subject, Action::Publish, qos, Some(retain)))
        {
            if rule.topics.iter().any(|t| filter_matches(t, topic)) {
                match rule.effect {
                    Effect::Deny => return false,
                    Effect::Allow => allowed = true,
                }
            }
        }
        allowed || self.default_action == Effect::Allow
    }

    fn allow_subscribe(&self, subject: Subject<'_>, filter: &str, qos: u8) -> bool {
        let mut allowed = false;
        for rule in self
            .rules
            .iter()
            .filter(|r| r.applies(subject, Action::Subscribe, qos, None))
        {
            match rule.effect {
                Effect::Deny => {
                    if rule
                        .topics
                        .iter()
                        .any(|t| filter_covers(t, filter) || filter_covers(filter, t))
                    {
                        return false;
                    }
                }
                Effect::Allow => allowed |= rule.topics.iter().any(|t| filter_covers(t, filter)),
            }
        }
        allowed || self.default_action == Effect::Allow
    }
}

/// Parses `acl.json`.
pub(crate) fn parse(bytes: &[u8]) -> Result<Arc<dyn AccessPolicy>, PolicyError> {
    let set: RuleSet = serde_json::from_slice(bytes).map_err(|e| PolicyError(e.to_string()))?;
    Ok(Arc::new(set))
}
