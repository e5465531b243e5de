//! Keeping the last good rules of a policy that became invalid (DESIGN §4: nothing is applied
//! from an invalid spec, and what was applied before stays). The compiler leaves an invalid
//! policy out; the cluster controller then carries that policy's rules over from the rule set
//! the nodes run (the config ConfigMap's `acl.bin`). Pure.

use std::collections::{BTreeMap, BTreeSet};

use contract::acl::{RuleSet, RuleSetBuilder, RuleSetError};

fn add_all(
    b: &mut RuleSetBuilder,
    set: &RuleSet,
    keep: impl Fn(&str) -> bool,
    declare_subjects: bool,
) {
    let mut ids = BTreeMap::new();
    for (i, origin) in set.origins().iter().enumerate() {
        if keep(&origin.policy) {
            ids.insert(
                u32::try_from(i).unwrap_or(u32::MAX),
                b.origin(origin.clone()),
            );
        }
    }
    for rule in set.everyone() {
        if let Some(id) = ids.get(&rule.origin) {
            b.everyone_rule(*id, rule.pattern.clone());
        }
    }
    for subject in set.subjects() {
        if declare_subjects {
            b.subject(&subject.name, subject.state);
        }
        for rule in &subject.rules {
            if let Some(id) = ids.get(&rule.origin) {
                b.rule(&subject.name, *id, rule.pattern.clone());
            }
        }
    }
}

/// `current` plus the rules of `previous` that came from the policies in `carried`. Subjects
/// keep their state from `current` (a device revoked since stays blocked: blocked subjects get
/// no rules). Returns `current` unchanged when `carried` is empty.
pub fn carry_over(
    current: &RuleSet,
    previous: &RuleSet,
    carried: &BTreeSet<String>,
) -> Result<RuleSet, RuleSetError> {
    if carried.is_empty() {
        return Ok(current.clone());
    }
    let mut b = RuleSetBuilder::new(current.default_action());
    add_all(&mut b, current, |_| true, true);
    add_all(&mut b, previous, |p| carried.contains(p), false);
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::compile::{compile, ClusterAcl};
    use contract::acl::{Matcher, Request};
    use crds::cluster::AclSpec;
    use crds::{DeviceIdentity, TopicPolicy};

    fn policy(name: &str, topic: &str) -> TopicPolicy {
        serde_yaml::from_str(&format!(
            "apiVersion: mqtt.operator.dev/v1alpha1\nkind: TopicPolicy\nmetadata: {{name: {name}, namespace: iot}}\nspec: {{clusterRef: {{name: qs}}, subjects: [{{deviceSelector: {{matchLabels: {{class: sensor}}}}}}], rules: [{{effect: allow, actions: [publish], topics: ['{topic}']}}]}}\n"
        ))
        .unwrap()
    }

    fn device(id: &str, state: &str) -> DeviceIdentity {
        serde_yaml::from_str(&format!(
            "apiVersion: mqtt.operator.dev/v1alpha1\nkind: DeviceIdentity\nmetadata: {{name: {id}, namespace: iot, labels: {{class: sensor}}}}\nspec: {{clusterRef: {{name: qs}}, deviceId: {id}, state: {state}}}\n"
        ))
        .unwrap()
    }

    fn compiled(policies: &[TopicPolicy], devices: &[DeviceIdentity]) -> crate::acl::Compiled {
        let acl = AclSpec::default();
        compile(
            ClusterAcl {
                namespace: "iot",
                name: "qs",
                acl: &acl,
            },
            policies,
            devices,
        )
        .unwrap()
    }

    fn allowed(set: &RuleSet, user: &str, topic: &str) -> bool {
        Matcher::new(set)
            .decide(&Request::publish(user, topic, 0, false))
            .is_allowed()
    }

    #[test]
    fn an_invalid_edit_keeps_the_policys_last_good_rules_and_nothing_of_the_new_spec() {
        let devices = [device("s1", "Active"), device("s2", "Active")];
        let good = compiled(
            &[
                policy("tele", "t/${deviceId}/#"),
                policy("other", "o/${deviceId}"),
            ],
            &devices,
        );
        assert!(allowed(&good.rules, "s1", "t/s1/x"));

        // `tele` becomes invalid (a `#` not last); `other` changes validly at the same time.
        let now = compiled(
            &[
                policy("tele", "t/#/${deviceId}"),
                policy("other", "p/${deviceId}"),
            ],
            &devices,
        );
        let tele = now.policies.iter().find(|p| p.name == "tele").unwrap();
        assert!(!tele.errors.is_empty(), "the edit must be invalid");
        assert!(
            !allowed(&now.rules, "s1", "t/s1/x"),
            "the compiler alone drops it"
        );

        let kept = carry_over(&now.rules, &good.rules, &BTreeSet::from(["tele".into()])).unwrap();
        assert!(allowed(&kept, "s1", "t/s1/x"), "last good rules stay");
        assert!(allowed(&kept, "s2", "t/s2/x"));
        assert!(allowed(&kept, "s1", "p/s1"), "valid edits of others apply");
        assert!(!allowed(&kept, "s1", "o/s1"), "others' old rules are gone");
        // Nothing carried: identical to the new compile (same revision).
        assert_eq!(
            carry_over(&now.rules, &good.rules, &BTreeSet::new())
                .unwrap()
                .revision(),
            now.rules.revision()
        );
        // Carrying is stable: the same inputs give the same revision.
        let again = carry_over(&now.rules, &good.rules, &BTreeSet::from(["tele".into()])).unwrap();
        assert_eq!(again.revision(), kept.revision());
    }

    #[test]
    fn a_device_revoked_since_gets_no_carried_rules() {
        let good = compiled(
            &[policy("tele", "t/${deviceId}/#")],
            &[device("s1", "Active")],
        );
        let now = compiled(
            &[policy("tele", "t/#/${deviceId}")],
            &[device("s1", "Revoked")],
        );
        let kept = carry_over(&now.rules, &good.rules, &BTreeSet::from(["tele".into()])).unwrap();
        assert!(!allowed(&kept, "s1", "t/s1/x"));
    }
}
