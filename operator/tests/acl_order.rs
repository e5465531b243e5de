//! Property (b): the compiled rule set does not depend on the order of policies or identities
//! (same bytes, same revision), and decisions do not depend on the order of rules within a
//! policy either.

use std::collections::BTreeMap;

use contract::acl::{Matcher, Request};
use crds::cluster::{AclSpec, DefaultAction};
use crds::device::{DeviceIdentitySpec, DeviceState};
use crds::policy::{Action, Effect, PolicyRule, Subject, TopicPolicySpec};
use crds::reference::ClusterRef;
use crds::selector::LabelSelector;
use crds::{DeviceIdentity, TopicPolicy};
use operator::acl::{compile, ClusterAcl, Compiled};
use proptest::prelude::*;

const TOPICS: &[&str] = &[
    "s/${label:site}/d/${deviceId}/#",
    "s/${label:site}/d/+/t",
    "s/+/d/${deviceId}",
    "s/#",
    "p/${deviceId}",
    "p/+",
    "#",
    "$SYS/#",
    "s/lyon/d/x/t",
];
const DEVICES: &[&str] = &["x", "y", "z", "w"];
const SITES: &[&str] = &["lyon", "paris"];

fn cluster_ref() -> ClusterRef {
    ClusterRef { name: "c".into() }
}

fn rule_strategy() -> impl Strategy<Value = PolicyRule> {
    (
        any::<bool>(),
        prop::sample::subsequence(vec![Action::Publish, Action::Subscribe], 1..=2),
        prop::sample::subsequence(TOPICS.to_vec(), 1..=2),
        prop::option::of(prop::sample::subsequence(vec![0u8, 1, 2], 1..=3)),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(deny, actions, topics, qos, retain)| PolicyRule {
            effect: if deny { Effect::Deny } else { Effect::Allow },
            retain: retain.filter(|_| actions.contains(&Action::Publish)),
            actions,
            topics: topics.into_iter().map(String::from).collect(),
            qos,
        })
}

fn subject_strategy() -> impl Strategy<Value = Subject> {
    prop_oneof![
        prop::sample::select(DEVICES).prop_map(|d| Subject {
            device: Some(d.into()),
            ..Default::default()
        }),
        prop::sample::select(SITES).prop_map(|s| Subject {
            device_selector: Some(LabelSelector {
                match_labels: BTreeMap::from([("site".to_string(), s.to_string())]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        Just(Subject {
            user: Some("svc".into()),
            ..Default::default()
        }),
        Just(Subject {
            all: Some(true),
            ..Default::default()
        }),
    ]
}

fn policies_strategy() -> impl Strategy<Value = Vec<TopicPolicy>> {
    prop::collection::vec(
        (
            prop::collection::vec(subject_strategy(), 1..3),
            prop::collection::vec(rule_strategy(), 1..5),
        ),
        1..5,
    )
    .prop_map(|ps| {
        ps.into_iter()
            .enumerate()
            .map(|(i, (subjects, rules))| {
                TopicPolicy::new(
                    &format!("p{i}"),
                    TopicPolicySpec {
                        cluster_ref: cluster_ref(),
                        subjects,
                        rules,
                    },
                )
            })
            .collect()
    })
}

fn devices_strategy() -> impl Strategy<Value = Vec<DeviceIdentity>> {
    prop::collection::vec(
        (prop::option::of(prop::sample::select(SITES)), 0u8..10),
        DEVICES.len(),
    )
    .prop_map(|ds| {
        ds.into_iter()
            .zip(DEVICES)
            .map(|((site, st), id)| {
                let mut d = DeviceIdentity::new(
                    id,
                    DeviceIdentitySpec {
                        cluster_ref: cluster_ref(),
                        device_id: id.to_string(),
                        state: match st {
                            0 => DeviceState::Suspended,
                            1 => DeviceState::Revoked,
                            _ => DeviceState::Active,
                        },
                        ..Default::default()
                    },
                );
                d.metadata.labels =
                    site.map(|s| BTreeMap::from([("site".to_string(), s.to_string())]));
                d
            })
            .collect()
    })
}

fn run(policies: &[TopicPolicy], devices: &[DeviceIdentity], default: DefaultAction) -> Compiled {
    let acl = AclSpec {
        default_action: default,
        policy_selector: None,
    };
    compile(
        ClusterAcl {
            namespace: "",
            name: "c",
            acl: &acl,
        },
        policies,
        devices,
    )
    .unwrap()
}

/// A deterministic permutation from a seed.
fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut x = seed | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

const REQUEST_TOPICS: &[&str] = &[
    "s/lyon/d/x/t",
    "s/lyon/d/y",
    "s/paris/d/z/a/b",
    "p/x",
    "p/svc",
    "$SYS/up",
    "other",
    "s/lyon/d/x/#",
    "s/+/d/y",
    "s/#",
    "#",
    "$share/g/p/+",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn order_never_matters(policies in policies_strategy(), devices in devices_strategy(),
                           allow in any::<bool>(), seed in any::<u64>()) {
        let default = if allow { DefaultAction::Allow } else { DefaultAction::Deny };
        let base = run(&policies, &devices, default);

        // Policies and identities in another order: the same bytes.
        let (mut p2, mut d2) = (policies.clone(), devices.clone());
        shuffle(&mut p2, seed);
        shuffle(&mut d2, seed.rotate_left(17));
        let moved = run(&p2, &d2, default);
        prop_assert_eq!(base.encode(), moved.encode());
        prop_assert_eq!(base.rules.revision(), moved.rules.revision());

        // Rules and subjects within each policy in another order: the same decisions.
        let mut p3 = policies.clone();
        for (i, p) in p3.iter_mut().enumerate() {
            shuffle(&mut p.spec.rules, seed ^ i as u64);
            shuffle(&mut p.spec.subjects, seed.rotate_left(9) ^ i as u64);
        }
        let reordered = run(&p3, &devices, default);
        let (a, b) = (Matcher::new(&base.rules), Matcher::new(&reordered.rules));
        for user in DEVICES.iter().chain(&["svc", "stranger"]) {
            for topic in REQUEST_TOPICS {
                for qos in 0..3 {
                    let mut reqs = vec![Request::subscribe(user, topic, qos)];
                    for retain in [false, true] {
                        reqs.push(Request::publish(user, topic, qos, retain));
                    }
                    for r in reqs {
                        prop_assert_eq!(a.decide(&r).effect, b.decide(&r).effect, "{:?}", r);
                    }
                }
            }
        }
    }
}
