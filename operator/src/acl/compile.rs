//! TopicPolicies + DeviceIdentities + the cluster's `acl` settings → one canonical [`RuleSet`].
//!
//! Pure. The inputs may be every policy and identity of the namespace in any order: the compiler
//! keeps those of the cluster, applies `acl.policySelector`, rejects invalid policies (nothing
//! of an invalid policy is compiled), expands placeholders per identity, and hands the result to
//! [`RuleSetBuilder`], which sorts it into the same bytes and revision for the same input.

use std::collections::{BTreeMap, BTreeSet};

use contract::acl::{
    codec, ActionSet, Effect, QosSet, RuleOrigin, RuleSet, RuleSetBuilder, RuleSetError,
    SubjectState, MAX_PATTERN_LEVELS,
};
use crds::cluster::{AclSpec, DefaultAction};
use crds::device::DeviceState;
use crds::pattern::Pattern;
use crds::policy::{Action, SubjectKind};
use crds::validate::{self, FieldError};
use crds::{DeviceIdentity, TopicPolicy};

/// Why a cluster's rule set cannot be compiled (the policies themselves were valid).
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// An expanded pattern is not a valid rule pattern (e.g. longer than 65535 bytes).
    #[error("compiling the ACL of MqttCluster/{cluster}: {source}")]
    RuleSet {
        /// The cluster's name.
        cluster: String,
        /// What the rule-set builder refused.
        source: RuleSetError,
    },
}

impl CompileError {
    /// A short, fixed label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            CompileError::RuleSet { .. } => "acl_rule_set",
        }
    }
}

/// The cluster whose ACL is compiled.
#[derive(Debug, Clone, Copy)]
pub struct ClusterAcl<'a> {
    /// Namespace of the MqttCluster (`""` for manifests without one).
    pub namespace: &'a str,
    /// Name of the MqttCluster.
    pub name: &'a str,
    /// Its `spec.acl`.
    pub acl: &'a AclSpec,
}

/// What happened to one TopicPolicy of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyOutcome {
    /// The policy's name.
    pub name: String,
    /// False when `acl.policySelector` does not select it (then nothing of it is compiled).
    pub selected: bool,
    /// Validation errors; non-empty means the policy was rejected and nothing of it compiled.
    pub errors: Vec<FieldError>,
    /// Identities (devices and named users) its subjects matched, blocked devices included.
    pub matched_subjects: usize,
    /// Of those, the ones its rules can apply to (active devices and users), plus one when it
    /// names `all: true`.
    pub active_subjects: usize,
}

impl PolicyOutcome {
    /// True when the policy's rules are part of the compiled set.
    pub fn applied(&self) -> bool {
        self.selected && self.errors.is_empty()
    }
}

/// The result of compiling a cluster's ACL.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The canonical rule set.
    pub rules: RuleSet,
    /// One entry per policy referencing the cluster, sorted by name.
    pub policies: Vec<PolicyOutcome>,
    /// `deviceId`s claimed by more than one DeviceIdentity: (deviceId, the names claiming it).
    /// The first name (sorted) supplies labels; the most restrictive state wins.
    pub duplicate_device_ids: Vec<(String, Vec<String>)>,
}

impl Compiled {
    /// The binary form the broker loads.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(&self.rules)
    }
}

fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("")
}

fn state_of(s: DeviceState) -> SubjectState {
    match s {
        DeviceState::Active => SubjectState::Active,
        DeviceState::Suspended => SubjectState::Suspended,
        DeviceState::Revoked => SubjectState::Revoked,
    }
}

/// A device of the cluster, resolved once.
struct Device<'a> {
    id: &'a str,
    labels: &'a BTreeMap<String, String>,
    state: SubjectState,
}

/// Compiles the ACL of one cluster from the policies and identities of its namespace.
pub fn compile<'a>(
    cluster: ClusterAcl<'_>,
    policies: impl IntoIterator<Item = &'a TopicPolicy>,
    devices: impl IntoIterator<Item = &'a DeviceIdentity>,
) -> Result<Compiled, CompileError> {
    static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
    let default = match cluster.acl.default_action {
        DefaultAction::Deny => Effect::Deny,
        DefaultAction::Allow => Effect::Allow,
    };
    let mut b = RuleSetBuilder::new(default);

    // Devices of this cluster, by deviceId; duplicates resolved deterministically.
    let mut by_id: BTreeMap<&str, Vec<&DeviceIdentity>> = BTreeMap::new();
    for d in devices {
        if namespace_of(&d.metadata) == cluster.namespace
            && d.spec.cluster_ref.name == cluster.name
            && validate::is_device_id(&d.spec.device_id)
        {
            by_id.entry(&d.spec.device_id).or_default().push(d);
        }
    }
    let mut duplicate_device_ids = Vec::new();
    let mut fleet: Vec<Device<'_>> = Vec::with_capacity(by_id.len());
    for (id, mut claims) in by_id {
        claims.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let state = claims
            .iter()
            .map(|d| state_of(d.spec.state))
            .max()
            .unwrap_or(SubjectState::Active);
        if claims.len() > 1 {
            duplicate_device_ids.push((
                id.to_string(),
                claims
                    .iter()
                    .map(|d| d.metadata.name.clone().unwrap_or_default())
                    .collect(),
            ));
        }
        // Blocked devices get an entry whatever the policies say: the broker refuses them even
        // under `defaultAction: allow` and even while their certificate is still valid.
        if state.is_blocked() {
            b.subject(id, state);
        }
        fleet.push(Device {
            id,
            labels: claims[0].metadata.labels.as_ref().unwrap_or(&NO_LABELS),
            state,
        });
    }

    let mut mine: Vec<&TopicPolicy> = policies
        .into_iter()
        .filter(|p| {
            namespace_of(&p.metadata) == cluster.namespace
                && p.spec.cluster_ref.name == cluster.name
        })
        .collect();
    mine.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut outcomes = Vec::with_capacity(mine.len());
    for p in mine {
        let name = p.metadata.name.clone().unwrap_or_default();
        let selected = cluster
            .acl
            .policy_selector
            .as_ref()
            .is_none_or(|sel| sel.matches(p.metadata.labels.as_ref().unwrap_or(&NO_LABELS)));
        let mut outcome = PolicyOutcome {
            name,
            selected,
            errors: Vec::new(),
            matched_subjects: 0,
            active_subjects: 0,
        };
        if selected {
            outcome.errors = policy_errors(p);
            if outcome.errors.is_empty() {
                add_policy(&mut b, p, &fleet, &mut outcome);
            }
        }
        outcomes.push(outcome);
    }
    let rules = b.build().map_err(|source| CompileError::RuleSet {
        cluster: cluster.name.to_string(),
        source,
    })?;
    Ok(Compiled {
        rules,
        policies: outcomes,
        duplicate_device_ids,
    })
}

/// `validate_policy`, plus the matcher's depth limit.
fn policy_errors(p: &TopicPolicy) -> Vec<FieldError> {
    let mut errors = validate::validate_policy(&p.spec);
    for (i, r) in p.spec.rules.iter().enumerate() {
        for (j, t) in r.topics.iter().enumerate() {
            let levels = t.split('/').count();
            if levels > MAX_PATTERN_LEVELS {
                errors.push(FieldError {
                    path: format!("spec.rules[{i}].topics[{j}]"),
                    message: format!(
                        "has {levels} levels; ACL patterns may have at most {MAX_PATTERN_LEVELS}"
                    ),
                });
            }
        }
    }
    errors
}

/// Adds one valid, selected policy's rules for every identity it matches.
fn add_policy(
    b: &mut RuleSetBuilder,
    p: &TopicPolicy,
    fleet: &[Device<'_>],
    outcome: &mut PolicyOutcome,
) {
    let name = outcome.name.clone();
    // Resolve subjects: devices (by index into fleet), users, and `all`.
    let mut devices: BTreeSet<usize> = BTreeSet::new();
    let mut users: BTreeSet<&str> = BTreeSet::new();
    let mut all = false;
    for s in &p.spec.subjects {
        match s.kind() {
            Some(SubjectKind::Device(id)) => {
                if let Ok(i) = fleet.binary_search_by(|d| d.id.cmp(id)) {
                    devices.insert(i);
                }
            }
            Some(SubjectKind::DeviceSelector(sel)) => {
                devices.extend((0..fleet.len()).filter(|i| sel.matches(fleet[*i].labels)));
            }
            Some(SubjectKind::User(u)) => {
                users.insert(u);
            }
            Some(SubjectKind::All) => all = true,
            None => {} // rejected by validation
        }
    }
    if all {
        devices.extend(0..fleet.len());
    }
    outcome.matched_subjects = devices.len() + users.len();
    outcome.active_subjects = devices
        .iter()
        .filter(|i| !fleet[**i].state.is_blocked())
        .count()
        + users.len()
        + usize::from(all);

    for (i, rule) in p.spec.rules.iter().enumerate() {
        let origin = b.origin(RuleOrigin {
            policy: name.clone(),
            rule: i as u32,
            effect: match rule.effect {
                crds::policy::Effect::Allow => Effect::Allow,
                crds::policy::Effect::Deny => Effect::Deny,
            },
            actions: ActionSet::of(rule.actions.iter().map(|a| match a {
                Action::Publish => contract::acl::Action::Publish,
                Action::Subscribe => contract::acl::Action::Subscribe,
            })),
            qos: rule
                .qos
                .as_ref()
                .and_then(|q| QosSet::of(q.iter().copied()))
                .unwrap_or(QosSet::ALL),
            retain: rule.retain,
        });
        for t in &rule.topics {
            let Ok(pattern) = Pattern::parse(t) else {
                continue; // rejected by validation
            };
            if !pattern.has_placeholders() {
                if all {
                    // One shared copy instead of one per identity.
                    b.everyone_rule(origin, t.clone());
                    continue;
                }
                for u in &users {
                    b.rule(u, origin, t.clone());
                }
            }
            for &d in &devices {
                let dev = &fleet[d];
                if dev.state.is_blocked() {
                    continue;
                }
                if let Some(expanded) = pattern.expand(Some(dev.id), dev.labels) {
                    b.rule(dev.id, origin, expanded);
                }
            }
        }
    }
    for u in users {
        b.subject(u, SubjectState::Active);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::device::DeviceIdentitySpec;
    use crds::reference::ClusterRef;

    fn device(name: &str, id: &str, site: &str, state: DeviceState) -> DeviceIdentity {
        let mut d = DeviceIdentity::new(
            name,
            DeviceIdentitySpec {
                cluster_ref: ClusterRef { name: "c".into() },
                device_id: id.into(),
                state,
                ..Default::default()
            },
        );
        d.metadata.labels = Some(BTreeMap::from([("site".to_string(), site.to_string())]));
        d
    }

    fn policy() -> TopicPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "mqtt.operator.dev/v1alpha1", "kind": "TopicPolicy",
            "metadata": {"name": "p"},
            "spec": {"clusterRef": {"name": "c"}, "subjects": [{"all": true}],
                     "rules": [{"effect": "allow", "actions": ["publish"],
                                "topics": ["s/${label:site}/${deviceId}"]}]}
        }))
        .unwrap()
    }

    fn run(devices: &[DeviceIdentity]) -> Compiled {
        let acl = AclSpec::default();
        let cluster = ClusterAcl {
            namespace: "",
            name: "c",
            acl: &acl,
        };
        compile(cluster, &[policy()], devices).unwrap()
    }

    #[test]
    fn duplicate_device_ids_take_labels_from_the_first_name_and_the_strictest_state() {
        let c = run(&[
            device("b", "d", "paris", DeviceState::Active),
            device("a", "d", "lyon", DeviceState::Active),
        ]);
        assert_eq!(
            c.duplicate_device_ids,
            [("d".to_string(), vec!["a".to_string(), "b".to_string()])]
        );
        let d = c.rules.subject("d").unwrap();
        assert_eq!(d.rules.len(), 1);
        assert_eq!(d.rules[0].pattern, "s/lyon/d");

        let c = run(&[
            device("a", "d", "lyon", DeviceState::Active),
            device("b", "d", "lyon", DeviceState::Suspended),
        ]);
        let d = c.rules.subject("d").unwrap();
        assert_eq!(d.state, SubjectState::Suspended);
        assert!(d.rules.is_empty());
    }

    #[test]
    fn identities_of_other_clusters_and_namespaces_are_ignored() {
        let mut other_ns = device("x", "x", "lyon", DeviceState::Active);
        other_ns.metadata.namespace = Some("elsewhere".into());
        let mut other_cluster = device("y", "y", "lyon", DeviceState::Active);
        other_cluster.spec.cluster_ref.name = "other".into();
        let c = run(&[
            other_ns,
            other_cluster,
            device("z", "z", "lyon", DeviceState::Active),
        ]);
        let names: Vec<_> = c.rules.subjects().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["z"]);
        assert_eq!(c.policies[0].matched_subjects, 1);
    }
}
