//! Metric names the generated alert rules and dashboard query, so tests can check each one is
//! exported (by a running broker or operator) and named in `contract::metrics`.

use std::collections::BTreeSet;

use crds::cluster::MqttClusterSpec;

use super::{alert_groups, dashboard, RuleOptions};

/// Metric names in a PromQL expression: the identifiers directly followed by `{` (every query we
/// generate selects by label, so a bare name is never used).
pub fn metric_names(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    expr.match_indices('{')
        .filter_map(|(i, _)| {
            let start = bytes[..i]
                .iter()
                .rposition(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b':'))
                .map_or(0, |p| p + 1);
            (start < i).then(|| expr[start..i].to_string())
        })
        .collect()
}

/// Every metric name referenced by the cluster's alert rules and dashboard panels.
pub fn referenced_metrics(
    namespace: &str,
    cluster: &str,
    spec: &MqttClusterSpec,
    opts: &RuleOptions,
) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for group in alert_groups(namespace, cluster, spec, opts) {
        for rule in &group.rules {
            names.extend(metric_names(&rule.expr));
        }
    }
    let board = dashboard::dashboard(namespace, cluster, spec);
    for panel in board["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            names.extend(metric_names(target["expr"].as_str().unwrap_or_default()));
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_before_selectors_only() {
        assert_eq!(
            metric_names(r#"sum(rate(a_total{x="1"}[5m])) / b:rec{y="2"} > vector(3)"#),
            vec!["a_total".to_string(), "b:rec".to_string()]
        );
        assert!(metric_names("{x=\"1\"}").is_empty());
    }
}
