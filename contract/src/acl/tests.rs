//! Matcher, codec and builder tests: hand-written cases for the walks' edge cases, and property
//! tests against the naive reference.

use proptest::prelude::*;

use super::*;
use crate::topic;

/// A generated rule: (subject index or everyone, effect, actions, qos, retain, pattern).
#[derive(Debug, Clone)]
struct GenRule {
    subject: Option<usize>,
    effect: Effect,
    actions: ActionSet,
    qos: QosSet,
    retain: Option<bool>,
    pattern: String,
}

const SUBJECTS: [&str; 3] = ["u1", "u2", "u3"];

fn origin_of(i: usize, r: &GenRule) -> RuleOrigin {
    RuleOrigin {
        policy: format!("p{}", i % 3),
        rule: i as u32,
        effect: r.effect,
        actions: r.actions,
        qos: r.qos,
        retain: r.retain,
    }
}

fn build(rules: &[GenRule], states: &[SubjectState], default: Effect) -> RuleSet {
    let mut b = RuleSetBuilder::new(default);
    for (i, s) in states.iter().enumerate() {
        b.subject(SUBJECTS[i], *s);
    }
    for (i, r) in rules.iter().enumerate() {
        let o = b.origin(origin_of(i, r));
        match r.subject {
            Some(s) => b.rule(SUBJECTS[s], o, r.pattern.clone()),
            None => b.everyone_rule(o, r.pattern.clone()),
        }
    }
    b.build().expect("generated patterns are valid")
}

fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("ab".to_string()),
        Just(String::new()),
        Just("$SYS".to_string()),
        Just("!".to_string()),
    ]
}

fn filter_level() -> impl Strategy<Value = String> {
    prop_oneof![3 => level(), 1 => Just("+".to_string())]
}

fn filter() -> impl Strategy<Value = String> {
    (prop::collection::vec(filter_level(), 0..4), any::<bool>()).prop_filter_map(
        "non-empty",
        |(mut levels, hash)| {
            if hash {
                levels.push("#".into());
            }
            Some(levels.join("/")).filter(|f| !f.is_empty())
        },
    )
}

fn topic_name() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..5).prop_map(|l| l.join("/"))
}

fn gen_rule() -> impl Strategy<Value = GenRule> {
    (
        prop::option::weighted(0.8, 0..SUBJECTS.len()),
        prop_oneof![Just(Effect::Allow), Just(Effect::Deny)],
        1u8..4,
        1u8..8,
        prop_oneof![Just(None), Just(Some(false)), Just(Some(true))],
        filter(),
    )
        .prop_map(|(subject, effect, a, q, retain, pattern)| GenRule {
            subject,
            effect,
            actions: ActionSet::from_bits(a).unwrap(),
            qos: QosSet::from_bits(q).unwrap(),
            retain,
            pattern,
        })
}

fn state() -> impl Strategy<Value = SubjectState> {
    prop_oneof![
        8 => Just(SubjectState::Active),
        1 => Just(SubjectState::Suspended),
        1 => Just(SubjectState::Revoked),
    ]
}

/// (username, action, topic, qos, retain)
fn request() -> impl Strategy<Value = (String, Action, String, u8, bool)> {
    let user = prop_oneof![
        Just("u1".to_string()),
        Just("u2".to_string()),
        Just("u3".to_string()),
        Just("stranger".to_string())
    ];
    let publish =
        (topic_name(), 0u8..3, any::<bool>()).prop_map(|(t, q, r)| (Action::Publish, t, q, r));
    let subscribe = (filter(), 0u8..3, any::<bool>()).prop_map(|(f, q, shared)| {
        let f = if shared { format!("$share/g/{f}") } else { f };
        (Action::Subscribe, f, q, false)
    });
    (user, prop_oneof![publish, subscribe]).prop_map(|(u, (a, t, q, r))| (u, a, t, q, r))
}

fn req<'a>(r: &'a (String, Action, String, u8, bool)) -> Request<'a> {
    Request {
        username: &r.0,
        action: r.1,
        topic: &r.2,
        qos: r.3,
        retain: r.4,
    }
}

/// The rule a decision names really has the decision's effect and applies to the request.
fn reason_is_sound(set: &RuleSet, req: &Request<'_>, d: &Decision) -> bool {
    let Reason::Rule(o) = d.reason else {
        return true;
    };
    let origin = &set.origins()[o as usize];
    let target = naive::valid_target(req).unwrap();
    let own = set.subject(req.username).map_or(&[][..], |s| &s.rules[..]);
    origin.effect == d.effect
        && origin.admits(req.action, req.qos, req.retain)
        && own.iter().chain(set.everyone()).any(|r| {
            r.origin == o
                && match (req.action, d.effect) {
                    (Action::Publish, _) => topic::filter_matches(&r.pattern, target),
                    (Action::Subscribe, Effect::Allow) => topic::filter_covers(&r.pattern, target),
                    (Action::Subscribe, Effect::Deny) => {
                        topic::filters_intersect(&r.pattern, target)
                    }
                }
        })
}

fn rule_set() -> impl Strategy<Value = (Vec<GenRule>, Vec<SubjectState>, Effect)> {
    (
        prop::collection::vec(gen_rule(), 0..24),
        prop::collection::vec(state(), SUBJECTS.len()),
        prop_oneof![Just(Effect::Allow), Just(Effect::Deny)],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// (c) The indexed matcher agrees with the naive scan, and the rule it names applies.
    #[test]
    fn index_agrees_with_naive((rules, states, default) in rule_set(),
                               reqs in prop::collection::vec(request(), 1..16)) {
        let set = build(&rules, &states, default);
        let m = Matcher::new(&set);
        for r in &reqs {
            let q = req(r);
            let fast = m.decide(&q);
            let slow = naive::decide(&set, &q);
            prop_assert_eq!(fast.effect, slow.effect, "{:?}", r);
            prop_assert_eq!(matches!(fast.reason, Reason::Rule(_)),
                            matches!(slow.reason, Reason::Rule(_)), "{:?}", r);
            if !matches!(fast.reason, Reason::Rule(_)) {
                prop_assert_eq!(fast.reason, slow.reason);
            }
            prop_assert!(reason_is_sound(&set, &q, &fast), "{:?} {:?}", r, fast);
            prop_assert!(reason_is_sound(&set, &q, &slow), "{:?} {:?}", r, slow);
        }
    }

    /// (a) Adding a deny rule never turns DENY into ALLOW.
    #[test]
    fn deny_is_monotone((rules, states, default) in rule_set(), extra in gen_rule(),
                        reqs in prop::collection::vec(request(), 1..16)) {
        let extra = GenRule { effect: Effect::Deny, ..extra };
        let before = Matcher::new(&build(&rules, &states, default));
        let mut more = rules.clone();
        more.push(extra);
        let after = Matcher::new(&build(&more, &states, default));
        for r in &reqs {
            let (b, a) = (before.decide(&req(r)), after.decide(&req(r)));
            prop_assert!(!(b.effect == Effect::Deny && a.effect == Effect::Allow), "{:?}", r);
        }
    }

    /// (b) Order of rules given to the builder changes neither the bytes nor any decision.
    #[test]
    fn builder_is_order_independent((rules, states, default) in rule_set(), seed in any::<u64>()) {
        let a = build(&rules, &states, default);
        let mut shuffled: Vec<(usize, GenRule)> = rules.iter().cloned().enumerate().collect();
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut b = RuleSetBuilder::new(default);
        for (i, s) in states.iter().enumerate().rev() {
            b.subject(SUBJECTS[i], *s);
        }
        for (i, r) in &shuffled {
            let o = b.origin(origin_of(*i, r));
            match r.subject {
                Some(s) => b.rule(SUBJECTS[s], o, r.pattern.clone()),
                None => b.everyone_rule(o, r.pattern.clone()),
            }
        }
        let b = b.build().unwrap();
        prop_assert_eq!(codec::encode(&a), codec::encode(&b));
        prop_assert_eq!(a.revision(), b.revision());
    }

    /// The binary form round-trips, and every truncation is an error, never a panic.
    #[test]
    fn codec_round_trips((rules, states, default) in rule_set()) {
        let set = build(&rules, &states, default);
        let bytes = codec::encode(&set);
        prop_assert_eq!(&codec::decode(&bytes).unwrap(), &set);
        for cut in 0..bytes.len() {
            prop_assert!(codec::decode(&bytes[..cut]).is_err());
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// `filters_intersect` agrees with brute force over a small universe of topic names.
    #[test]
    fn intersection_matches_brute_force(a in filter(), b in filter()) {
        let names = universe();
        let brute = names.iter().any(|n| topic::filter_matches(&a, n) && topic::filter_matches(&b, n));
        // Filters have at most 4 levels, the universe covers every name of up to 5 levels over
        // the levels used plus one fresh literal, so brute force is exact.
        prop_assert_eq!(topic::filters_intersect(&a, &b), brute, "{} {}", a, b);
    }
}

fn universe() -> &'static [String] {
    use std::sync::OnceLock;
    static U: OnceLock<Vec<String>> = OnceLock::new();
    U.get_or_init(|| {
        let levels = ["a", "b", "ab", "", "$SYS", "!", "z"];
        let mut out: Vec<String> = levels.iter().map(|l| l.to_string()).collect();
        let mut last = out.clone();
        for _ in 1..5 {
            let mut next = Vec::new();
            for p in &last {
                for l in levels {
                    next.push(format!("{p}/{l}"));
                }
            }
            out.extend(next.iter().cloned());
            last = next;
        }
        out
    })
}

fn one_rule(effect: Effect, actions: &[Action], pattern: &str) -> RuleSet {
    let mut b = RuleSetBuilder::new(Effect::Deny);
    let o = b.origin(RuleOrigin {
        policy: "p".into(),
        rule: 0,
        effect,
        actions: ActionSet::of(actions.iter().copied()),
        qos: QosSet::ALL,
        retain: None,
    });
    b.rule("u", o, pattern.into());
    b.build().unwrap()
}

#[test]
fn deny_on_a_narrow_topic_blocks_a_broad_subscription() {
    let mut b = RuleSetBuilder::new(Effect::Deny);
    let allow = b.origin(RuleOrigin {
        policy: "p".into(),
        rule: 0,
        effect: Effect::Allow,
        actions: ActionSet::ALL,
        qos: QosSet::ALL,
        retain: None,
    });
    let deny = b.origin(RuleOrigin {
        policy: "p".into(),
        rule: 1,
        effect: Effect::Deny,
        actions: ActionSet::ALL,
        qos: QosSet::ALL,
        retain: None,
    });
    b.rule("u", allow, "a/#".into());
    b.rule("u", deny, "a/secret".into());
    let m = Matcher::new(&b.build().unwrap());
    assert_eq!(
        m.decide(&Request::subscribe("u", "a/#", 0)).effect,
        Effect::Deny
    );
    assert_eq!(
        m.decide(&Request::subscribe("u", "a/+", 0)).effect,
        Effect::Deny
    );
    assert_eq!(
        m.decide(&Request::subscribe("u", "a/public", 0)).effect,
        Effect::Allow
    );
    assert_eq!(
        m.decide(&Request::publish("u", "a/public", 0, false))
            .effect,
        Effect::Allow
    );
    assert_eq!(
        m.decide(&Request::publish("u", "a/secret", 0, false))
            .effect,
        Effect::Deny
    );
}

#[test]
fn invalid_requests_are_denied() {
    let m = Matcher::new(&one_rule(
        Effect::Allow,
        &[Action::Publish, Action::Subscribe],
        "#",
    ));
    for r in [
        Request::publish("u", "a/+", 0, false),
        Request::publish("u", "", 0, false),
        Request::publish("u", "a", 3, false),
        Request::subscribe("u", "a/#/b", 0),
        Request::subscribe("u", "$share/g", 0),
    ] {
        let d = m.decide(&r);
        assert_eq!(
            (d.effect, d.reason),
            (Effect::Deny, Reason::Invalid),
            "{r:?}"
        );
    }
}

#[test]
fn builder_rejects_bad_patterns() {
    let mut b = RuleSetBuilder::new(Effect::Deny);
    let o = b.origin(RuleOrigin {
        policy: "p".into(),
        rule: 2,
        effect: Effect::Allow,
        actions: ActionSet::ALL,
        qos: QosSet::ALL,
        retain: None,
    });
    b.rule("u", o, "a/#/b".into());
    let e = b.build().unwrap_err();
    assert!(e.to_string().contains("TopicPolicy/p rules[2]"), "{e}");
    let deep = vec!["x"; MAX_PATTERN_LEVELS + 1].join("/");
    let mut b = RuleSetBuilder::new(Effect::Deny);
    let o = b.origin(origin_of(
        0,
        &GenRule {
            subject: None,
            effect: Effect::Allow,
            actions: ActionSet::ALL,
            qos: QosSet::ALL,
            retain: None,
            pattern: String::new(),
        },
    ));
    b.everyone_rule(o, deep);
    assert!(matches!(b.build(), Err(RuleSetError::TooDeep { .. })));
}

#[test]
fn decode_rejects_tampering() {
    let set = one_rule(Effect::Allow, &[Action::Publish], "a/b");
    let mut bytes = codec::encode(&set);
    assert_eq!(codec::decode(&bytes).unwrap(), set);
    let last = bytes.len() - 1;
    bytes[last] = b'c'; // a/b -> a/c: still well-formed, but the revision no longer matches
    assert!(matches!(
        codec::decode(&bytes),
        Err(codec::DecodeError::Revision { .. })
    ));
    let mut v2 = codec::encode(&set);
    v2[5] = 2;
    assert_eq!(
        codec::decode(&v2),
        Err(codec::DecodeError::Version { found: 2 })
    );
    assert_eq!(
        codec::decode(b"nope!\x01\x00"),
        Err(codec::DecodeError::BadMagic)
    );
    let mut trailing = codec::encode(&set);
    trailing.push(0);
    assert_eq!(
        codec::decode(&trailing),
        Err(codec::DecodeError::Trailing(1))
    );
}

#[test]
fn wide_fanout_uses_binary_search() {
    let mut b = RuleSetBuilder::new(Effect::Deny);
    let o = b.origin(origin_of(
        0,
        &GenRule {
            subject: None,
            effect: Effect::Allow,
            actions: ActionSet::ALL,
            qos: QosSet::ALL,
            retain: None,
            pattern: String::new(),
        },
    ));
    for i in 0..100 {
        b.rule("u", o, format!("d/{i:03}/#"));
    }
    let set = b.build().unwrap();
    let m = Matcher::new(&set);
    for i in 0..100 {
        let t = format!("d/{i:03}/x");
        assert!(
            m.decide(&Request::publish("u", &t, 0, false)).is_allowed(),
            "{t}"
        );
    }
    assert!(!m
        .decide(&Request::publish("u", "d/100/x", 0, false))
        .is_allowed());
    assert!(!m.decide(&Request::subscribe("u", "d/+/x", 0)).is_allowed());
}
