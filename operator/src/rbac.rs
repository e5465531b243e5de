//! The API permissions the operator needs: the ONE list, as data, and the RBAC objects made from it.
//!
//! The Helm chart (`helm/mqtt-operator/templates/rbac.yaml`) spells the same rules out in YAML so
//! that chart users can read them; `e2e/tests/helm_chart.rs` renders the chart with
//! `helm template` and fails unless its ClusterRole and Roles carry exactly the rules below, in
//! this order. `e2e/tests/helm_install.rs` asks a real API server's authorizer whether the
//! installed ServiceAccount may do each of them (and a list of things it must not).
//!
//! To grant the operator something new, add a [`Rule`] to [`RULES`] (with a `why`), then copy the
//! rule into the chart template; the test prints the expected YAML when they differ.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Where a rule is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Namespaced resources in the namespaces the operator watches: cluster-wide (ClusterRole)
    /// when it watches all namespaces, else a Role in each watched namespace.
    Watched,
    /// Cluster-scoped resources (always in the ClusterRole).
    Cluster,
    /// Only in the operator's own namespace (a Role): the leader-election Lease.
    OperatorNamespace,
}

/// One RBAC rule: API groups x resources x verbs, and where it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// API groups (`""` is the core group).
    pub api_groups: &'static [&'static str],
    /// Resources (and subresources such as `mqttclusters/status`).
    pub resources: &'static [&'static str],
    /// Verbs actually used by the operator.
    pub verbs: &'static [&'static str],
    /// Where the rule is granted.
    pub scope: Scope,
    /// Why the operator needs it (documentation; rendered as a comment in the chart).
    pub why: &'static str,
}

/// Verbs for the children the operator creates and owns via server-side apply.
const OWN: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];
/// Verbs for objects the operator only observes.
const READ: &[&str] = &["get", "list", "watch"];

/// Every permission the operator needs, in the order the chart renders them.
pub const RULES: &[Rule] = &[
    Rule {
        api_groups: &["mqtt.operator.dev"],
        resources: &[
            "mqttclusters",
            "deviceidentities",
            "topicpolicies",
            "bridges",
        ],
        verbs: &["get", "list", "watch", "patch"],
        scope: Scope::Watched,
        why: "watch the four kinds; patch finalizers and annotations",
    },
    Rule {
        api_groups: &["mqtt.operator.dev"],
        resources: &[
            "mqttclusters/status",
            "deviceidentities/status",
            "topicpolicies/status",
            "bridges/status",
        ],
        verbs: &["get", "patch"],
        scope: Scope::Watched,
        why: "write status and conditions",
    },
    Rule {
        api_groups: &["mqtt.operator.dev"],
        resources: &[
            "mqttclusters/finalizers",
            "deviceidentities/finalizers",
            "topicpolicies/finalizers",
            "bridges/finalizers",
        ],
        verbs: &["update"],
        scope: Scope::Watched,
        why: "owner references with blockOwnerDeletion (OwnerReferencesPermissionEnforcement)",
    },
    Rule {
        api_groups: &[""],
        resources: &["secrets", "configmaps", "services"],
        verbs: OWN,
        scope: Scope::Watched,
        why: "CA and certificate Secrets, broker config and trust bundles, broker Services",
    },
    Rule {
        api_groups: &["apps"],
        resources: &["statefulsets"],
        verbs: OWN,
        scope: Scope::Watched,
        why: "broker core nodes",
    },
    Rule {
        api_groups: &["policy"],
        resources: &["poddisruptionbudgets"],
        verbs: OWN,
        scope: Scope::Watched,
        why: "keep a raft majority (policy/v1, or v1beta1 before Kubernetes 1.21)",
    },
    Rule {
        api_groups: &["networking.k8s.io"],
        resources: &["networkpolicies"],
        verbs: OWN,
        scope: Scope::Watched,
        why: "restrict traffic to the brokers",
    },
    Rule {
        api_groups: &[""],
        resources: &["pods"],
        verbs: READ,
        scope: Scope::Watched,
        why: "broker readiness during rolling restarts",
    },
    Rule {
        api_groups: &["", "events.k8s.io"],
        resources: &["events"],
        verbs: &["create", "patch"],
        scope: Scope::Watched,
        why: "Events on the objects it reconciles",
    },
    Rule {
        api_groups: &["monitoring.coreos.com"],
        resources: &["servicemonitors", "prometheusrules"],
        verbs: OWN,
        scope: Scope::Watched,
        why: "per-cluster scrape config and alert rules (when the CRDs exist)",
    },
    Rule {
        api_groups: &["apiextensions.k8s.io"],
        resources: &["customresourcedefinitions"],
        verbs: READ,
        scope: Scope::Cluster,
        why: "discover whether the monitoring.coreos.com CRDs are installed",
    },
    Rule {
        api_groups: &["coordination.k8s.io"],
        resources: &["leases"],
        verbs: &["get", "create", "update", "patch"],
        scope: Scope::OperatorNamespace,
        why: "leader election between the operator replicas",
    },
];

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

/// The Kubernetes form of one rule.
pub fn policy_rule(rule: &Rule) -> PolicyRule {
    PolicyRule {
        api_groups: Some(strings(rule.api_groups)),
        resources: Some(strings(rule.resources)),
        verbs: strings(rule.verbs),
        ..PolicyRule::default()
    }
}

/// The rules of the given scopes, in [`RULES`] order.
pub fn rules_for(scopes: &[Scope]) -> Vec<PolicyRule> {
    RULES
        .iter()
        .filter(|r| scopes.contains(&r.scope))
        .map(policy_rule)
        .collect()
}

/// The ClusterRole: every watched and cluster-scoped rule when the operator watches all
/// namespaces (`all_namespaces`), else only the cluster-scoped ones.
pub fn cluster_role(name: &str, all_namespaces: bool) -> ClusterRole {
    let scopes: &[Scope] = if all_namespaces {
        &[Scope::Watched, Scope::Cluster]
    } else {
        &[Scope::Cluster]
    };
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        rules: Some(rules_for(scopes)),
        ..ClusterRole::default()
    }
}

/// The Role granted in one watched namespace when the operator watches a fixed list of them.
pub fn watched_namespace_role(name: &str, namespace: &str) -> Role {
    role(name, namespace, Scope::Watched)
}

/// The Role in the operator's own namespace (leader-election Lease).
pub fn operator_namespace_role(name: &str, namespace: &str) -> Role {
    role(name, namespace, Scope::OperatorNamespace)
}

fn role(name: &str, namespace: &str, scope: Scope) -> Role {
    Role {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        rules: Some(rules_for(&[scope])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Verbs that would let the operator do more than reconcile its own children.
    const FORBIDDEN_VERBS: &[&str] = &["*", "escalate", "bind", "impersonate", "deletecollection"];

    #[test]
    fn no_wildcards_or_escalation() {
        for rule in RULES {
            for verb in rule.verbs {
                assert!(!FORBIDDEN_VERBS.contains(verb), "{rule:?} grants {verb}");
            }
            assert!(!rule.resources.contains(&"*"), "{rule:?}");
            assert!(!rule.api_groups.contains(&"*"), "{rule:?}");
            assert!(!rule.why.is_empty(), "{rule:?} needs a why");
        }
    }

    #[test]
    fn never_manages_rbac_and_only_reads_pods() {
        for rule in RULES {
            assert!(
                !rule.api_groups.contains(&"rbac.authorization.k8s.io"),
                "the operator never manages RBAC: {rule:?}"
            );
            if rule.resources.contains(&"pods") {
                assert_eq!(rule.verbs, READ, "pods are only read");
            }
        }
    }

    #[test]
    fn each_group_resource_appears_once() {
        let mut seen = BTreeSet::new();
        for rule in RULES {
            for group in rule.api_groups {
                for resource in rule.resources {
                    assert!(
                        seen.insert((*group, *resource)),
                        "{group}/{resource} granted by two rules; merge them"
                    );
                }
            }
        }
    }

    #[test]
    fn secrets_only_in_watched_namespaces() {
        for rule in RULES.iter().filter(|r| r.resources.contains(&"secrets")) {
            assert_eq!(rule.scope, Scope::Watched);
        }
    }

    #[test]
    fn cluster_role_modes() {
        let all = cluster_role("x", true).rules.unwrap();
        let fixed = cluster_role("x", false).rules.unwrap();
        let watched = watched_namespace_role("x", "ns").rules.unwrap();
        let lease = operator_namespace_role("x", "op").rules.unwrap();
        assert_eq!(all.len(), watched.len() + fixed.len());
        assert!(fixed
            .iter()
            .all(|r| r.api_groups.as_deref() == Some(&["apiextensions.k8s.io".to_string()][..])));
        assert_eq!(lease.len(), 1);
        assert_eq!(
            lease[0].resources.as_deref(),
            Some(&["leases".to_string()][..])
        );
        assert!(
            !all.contains(&lease[0]),
            "the Lease is never granted cluster-wide"
        );
    }
}
