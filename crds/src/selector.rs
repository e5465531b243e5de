//! Label selectors (the `metav1.LabelSelector` shape) with a pure matcher, so a policy selects
//! exactly the identities `kubectl get devid -l ...` would show.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A label query over DeviceIdentity `metadata.labels`. All requirements are ANDed; an empty
/// selector matches everything.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must be present with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements (`In`, `NotIn`, `Exists`, `DoesNotExist`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One set-based requirement of a label selector.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    /// The label key the requirement applies to.
    pub key: String,
    /// How the label's value relates to `values`.
    pub operator: SelectorOperator,
    /// Values for `In` and `NotIn` (must be non-empty); must be empty for `Exists` and
    /// `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// The operator of a label selector requirement.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SelectorOperator {
    /// The label exists and its value is one of `values`.
    In,
    /// The label is absent, or its value is none of `values`.
    NotIn,
    /// The label exists (any value).
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// Does a set of labels satisfy this selector?
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// An empty selector matches every object.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }
}

impl LabelSelectorRequirement {
    /// Does a set of labels satisfy this requirement?
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, operator: SelectorOperator, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let sel = LabelSelector {
            match_labels: labels(&[("site", "lyon")]),
            match_expressions: vec![req("class", SelectorOperator::In, &["sensor", "meter"])],
        };
        assert!(sel.matches(&labels(&[("site", "lyon"), ("class", "sensor")])));
        assert!(!sel.matches(&labels(&[("site", "lyon"), ("class", "gateway")])));
        assert!(!sel.matches(&labels(&[("site", "paris"), ("class", "sensor")])));
        assert!(!sel.matches(&labels(&[("class", "sensor")])));
    }

    #[test]
    fn operators() {
        let l = labels(&[("a", "1")]);
        assert!(req("a", SelectorOperator::Exists, &[]).matches(&l));
        assert!(!req("b", SelectorOperator::Exists, &[]).matches(&l));
        assert!(req("b", SelectorOperator::DoesNotExist, &[]).matches(&l));
        assert!(req("b", SelectorOperator::NotIn, &["1"]).matches(&l));
        assert!(!req("a", SelectorOperator::NotIn, &["1"]).matches(&l));
        assert!(req("a", SelectorOperator::NotIn, &["2"]).matches(&l));
        assert!(LabelSelector::default().matches(&l));
    }
}
