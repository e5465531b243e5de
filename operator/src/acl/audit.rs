//! `check` findings from the compiled ACL: policies whose rules can never apply to any identity
//! of the set, and allow rules fully shadowed by deny rules. Pure.

use std::collections::BTreeMap;

use contract::acl::{Action, Effect, Rule, RuleOrigin, RuleSet};
use contract::topic;

use super::{clusters, compile_documents};
use crate::check::{Finding, Severity};
use crds::policy::SubjectKind;

use crate::manifest::{Document, Resource};

/// Findings for every cluster of the set.
pub fn findings(docs: &[Document]) -> Vec<Finding> {
    let mut out = Vec::new();
    for (namespace, cluster) in clusters(docs) {
        let cluster_name = cluster.metadata.name.as_deref().unwrap_or("");
        let doc_of = |kind: &str, name: &str| {
            docs.iter().find(|d| {
                d.kind == kind
                    && d.name == name
                    && d.namespace.as_deref().unwrap_or("") == namespace
            })
        };
        let finding = |doc: &Document, field: &str, message: String, severity| Finding {
            file: doc.file.clone(),
            document: doc.index,
            object: doc.object(),
            field: field.to_string(),
            message,
            severity,
        };
        let compiled = match compile_documents(docs, namespace, cluster) {
            Ok(c) => c,
            Err(e) => {
                if let Some(doc) = doc_of("MqttCluster", cluster_name) {
                    out.push(finding(doc, "spec.acl", e.to_string(), Severity::Error));
                }
                continue;
            }
        };
        for p in &compiled.policies {
            let Some(doc) = doc_of("TopicPolicy", &p.name) else {
                continue;
            };
            if !p.selected {
                out.push(finding(
                    doc,
                    "metadata.labels",
                    format!("not selected by MqttCluster/{cluster_name} spec.acl.policySelector: its rules never apply"),
                    Severity::Warning,
                ));
            } else if p.errors.is_empty()
                && p.active_subjects == 0
                && !has_dangling_device(docs, doc, namespace, cluster_name)
            {
                let message = if p.matched_subjects > 0 {
                    "matches only suspended or revoked devices in this set: its rules never apply"
                } else {
                    "matches no identity in this set: its rules never apply"
                };
                out.push(finding(
                    doc,
                    "spec.subjects",
                    message.into(),
                    Severity::Warning,
                ));
            }
        }
        for (origin, deny) in shadowed_allows(&compiled.rules) {
            let o = &compiled.rules.origins()[origin as usize];
            let d = &compiled.rules.origins()[deny as usize];
            if let Some(doc) = doc_of("TopicPolicy", &o.policy) {
                out.push(finding(
                    doc,
                    &format!("spec.rules[{}]", o.rule),
                    format!("allow rule is fully shadowed by deny rules (e.g. {d}): it can never allow anything"),
                    Severity::Warning,
                ));
            }
        }
    }
    out
}

/// True when the policy document names a `device:` no DeviceIdentity of the cluster has (an
/// error `check` already reports; a second finding would only repeat it).
fn has_dangling_device(
    docs: &[Document],
    policy: &Document,
    namespace: &str,
    cluster: &str,
) -> bool {
    let Some(Resource::Policy(p)) = policy.resource() else {
        return false;
    };
    p.spec.subjects.iter().any(|s| match s.kind() {
        Some(SubjectKind::Device(id)) => !docs.iter().any(|d| {
            d.namespace.as_deref().unwrap_or("") == namespace
                && matches!(d.resource(), Some(Resource::Device(dev))
                    if dev.spec.cluster_ref.name == cluster && dev.spec.device_id == id)
        }),
        _ => false,
    })
}

/// Allow origins every expanded instance of which is shadowed, each with one shadowing deny.
///
/// An instance (a subject's allow rule with pattern P) is shadowed when, for each of its
/// actions, one deny rule that applies to the same subject covers P, admits that action and
/// every QoS of the allow, and (for publish) does not restrict retain differently. Then nothing
/// the allow could permit escapes the deny (for subscribe: every filter P covers intersects it).
pub fn shadowed_allows(set: &RuleSet) -> Vec<(u32, u32)> {
    let origins = set.origins();
    // origin -> (instances, shadowed instances, example deny)
    let mut tally: BTreeMap<u32, (usize, usize, Option<u32>)> = BTreeMap::new();
    let is_deny = |r: &&Rule| origins[r.origin as usize].effect == Effect::Deny;
    let everyone_denies: Vec<&Rule> = set.everyone().iter().filter(is_deny).collect();
    let mut judge = |allows: &mut dyn Iterator<Item = &Rule>, denies: &[&Rule]| {
        for a in allows {
            let ao = &origins[a.origin as usize];
            let entry = tally.entry(a.origin).or_insert((0, 0, None));
            entry.0 += 1;
            let mut example = None;
            let shadowed = ao.actions.iter().all(|action| {
                let d = denies.iter().find(|d| {
                    shadows(
                        &origins[d.origin as usize],
                        &d.pattern,
                        ao,
                        &a.pattern,
                        action,
                    )
                });
                if let Some(d) = d {
                    example = example.or(Some(d.origin));
                }
                d.is_some()
            });
            if shadowed {
                entry.1 += 1;
                entry.2 = entry.2.or(example);
            }
        }
    };
    let is_allow = |r: &&Rule| origins[r.origin as usize].effect == Effect::Allow;
    judge(
        &mut set.everyone().iter().filter(is_allow),
        &everyone_denies,
    );
    for s in set.subjects() {
        let mut denies: Vec<&Rule> = s.rules.iter().filter(is_deny).collect();
        denies.extend(everyone_denies.iter().copied());
        judge(&mut s.rules.iter().filter(is_allow), &denies);
    }
    tally
        .into_iter()
        .filter(|(_, (n, shadowed, _))| *n > 0 && n == shadowed)
        .filter_map(|(o, (_, _, d))| d.map(|d| (o, d)))
        .collect()
}

fn shadows(
    deny: &RuleOrigin,
    deny_pattern: &str,
    allow: &RuleOrigin,
    allow_pattern: &str,
    action: Action,
) -> bool {
    deny.actions.contains(action)
        && deny.qos.is_superset(allow.qos)
        && (action == Action::Subscribe || deny.retain.is_none() || deny.retain == allow.retain)
        && topic::filter_covers(deny_pattern, allow_pattern)
}

#[cfg(test)]
mod tests {
    use crate::manifest::{parse_file, SourceFile};

    fn audit(yaml: &str) -> Vec<(String, String, String)> {
        let docs = parse_file(&SourceFile {
            path: "t.yaml".into(),
            text: yaml.into(),
        })
        .unwrap();
        super::findings(&docs)
            .into_iter()
            .map(|f| (f.object, f.field, f.message))
            .collect()
    }

    const HEAD: &str = "apiVersion: mqtt.operator.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: c}\nspec: {}\n---\n\
        apiVersion: mqtt.operator.dev/v1alpha1\nkind: DeviceIdentity\nmetadata: {name: s, labels: {class: sensor}}\n\
        spec: {clusterRef: {name: c}, deviceId: s, state: Suspended}\n---\n";

    fn policy(name: &str, subjects: &str, rules: &str) -> String {
        format!(
            "apiVersion: mqtt.operator.dev/v1alpha1\nkind: TopicPolicy\nmetadata: {{name: {name}}}\n\
             spec: {{clusterRef: {{name: c}}, subjects: {subjects}, rules: {rules}}}\n---\n"
        )
    }

    #[test]
    fn policies_that_never_apply() {
        let allow = "[{effect: allow, actions: [publish], topics: [a]}]";
        let yaml = format!(
            "{HEAD}{}{}{}",
            policy(
                "nobody",
                "[{deviceSelector: {matchLabels: {class: meter}}}]",
                allow
            ),
            policy(
                "only-suspended",
                "[{deviceSelector: {matchLabels: {class: sensor}}}]",
                allow
            ),
            policy("users", "[{user: svc}]", allow),
        );
        let f = audit(&yaml);
        assert_eq!(f.len(), 2, "{f:#?}");
        assert_eq!(f[0].0, "TopicPolicy/nobody");
        assert_eq!(f[0].1, "spec.subjects");
        assert!(f[0].2.contains("matches no identity"), "{}", f[0].2);
        assert_eq!(f[1].0, "TopicPolicy/only-suspended");
        assert!(f[1].2.contains("only suspended or revoked"), "{}", f[1].2);
    }

    #[test]
    fn shadowing_needs_every_action_and_qos_covered() {
        let rules = "[\
            {effect: allow, actions: [publish], topics: [a/b]},\
            {effect: allow, actions: [publish, subscribe], topics: [a/c]},\
            {effect: allow, actions: [publish], topics: [b/x], qos: [0, 1]},\
            {effect: allow, actions: [publish], topics: [c/x]},\
            {effect: allow, actions: [publish], topics: [d/x], retain: true},\
            {effect: deny, actions: [publish], topics: [a/#, b/+]},\
            {effect: deny, actions: [publish], topics: [c/#], qos: [0]},\
            {effect: deny, actions: [publish], topics: [d/#], retain: false}]";
        let yaml = format!("{HEAD}{}", policy("p", "[{user: svc}]", rules));
        let fields: Vec<_> = audit(&yaml).into_iter().map(|f| f.1).collect();
        // a/b: shadowed by a/#. a/c: subscribe escapes. b/x: shadowed by b/+ (all QoS).
        // c/x: the deny covers QoS 0 only. d/x: the deny is for retain false only.
        assert_eq!(fields, ["spec.rules[0]", "spec.rules[2]"]);
    }
}
