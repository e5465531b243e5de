//! Property tests of the topic grammar: validators never panic, generated valid filters are
//! accepted, filters with a misplaced wildcard are rejected, and matching agrees with covering.

use contract::topic::{
    filter_covers, filter_matches, parse_filter, topic_filter_from_bytes, topic_name_from_bytes,
    validate_topic_filter, validate_topic_name, TopicError,
};
use proptest::prelude::*;

/// A literal level: no wildcards, no NUL, no '/'. May be empty (MQTT allows empty levels).
fn literal_level() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_\\-. é$]{0,6}".prop_map(|s| s.replace(['+', '#'], ""))
}

/// A valid filter: literal or '+' levels, optionally ending in '#'.
fn valid_filter() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop_oneof![literal_level(), Just("+".to_string())], 1..6),
        any::<bool>(),
    )
        .prop_map(|(levels, hash)| {
            let mut s = levels.join("/");
            if hash {
                s.push_str("/#");
            }
            s
        })
        .prop_filter("non-empty", |s| !s.is_empty())
}

fn valid_name() -> impl Strategy<Value = String> {
    prop::collection::vec(literal_level(), 1..6)
        .prop_map(|l| l.join("/"))
        .prop_filter("non-empty", |s| !s.is_empty())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = topic_name_from_bytes(&bytes);
        let _ = topic_filter_from_bytes(&bytes);
    }

    #[test]
    fn never_panics_on_arbitrary_strings(s in "\\PC{0,200}") {
        let _ = validate_topic_name(&s);
        let _ = validate_topic_filter(&s);
        if validate_topic_filter(&s).is_ok() && validate_topic_name(&s).is_ok() {
            let _ = filter_matches(&s, &s);
            let _ = filter_covers(&s, &s);
        }
    }

    #[test]
    fn generated_valid_filters_are_accepted(f in valid_filter()) {
        prop_assert!(validate_topic_filter(&f).is_ok(), "{f:?}");
        let shared = format!("$share/group1/{f}");
        let parsed = parse_filter(&shared).unwrap();
        prop_assert_eq!(parsed.filter, f.as_str());
        prop_assert!(filter_covers(&f, &f), "a filter covers itself");
    }

    #[test]
    fn misplaced_hash_is_rejected(f in valid_filter(), tail in valid_filter(), pos in any::<prop::sample::Index>()) {
        // '#' followed by more levels.
        let bad = format!("{f}/#/{tail}");
        prop_assert_eq!(validate_topic_filter(&bad), Err(TopicError::HashNotLast));
        // '#' glued to text inside a level.
        let levels: Vec<&str> = f.split('/').collect();
        let i = pos.index(levels.len());
        let mut glued: Vec<String> = levels.iter().map(|s| s.to_string()).collect();
        glued[i] = format!("x{}#", glued[i].trim_end_matches('#'));
        let glued = glued.join("/");
        prop_assert!(validate_topic_filter(&glued).is_err(), "{glued:?}");
    }

    #[test]
    fn misplaced_plus_is_rejected(f in valid_filter(), pos in any::<prop::sample::Index>(), before in any::<bool>()) {
        let mut levels: Vec<String> = f.split('/').map(str::to_string).collect();
        let i = pos.index(levels.len());
        if levels[i] == "#" {
            levels[i] = "+x".into();
        } else if before {
            levels[i] = format!("+{}", levels[i].trim_matches('+'));
            if levels[i] == "+" { levels[i] = "+a".into(); }
        } else {
            levels[i] = format!("{}+", levels[i].trim_matches('+'));
            if levels[i] == "+" { levels[i] = "a+".into(); }
        }
        let bad = levels.join("/");
        prop_assert_eq!(validate_topic_filter(&bad), Err(TopicError::PlusNotAlone), "{:?}", bad);
    }

    #[test]
    fn names_with_wildcards_are_rejected(n in valid_name(), w in prop_oneof![Just('+'), Just('#')]) {
        let bad = format!("{n}{w}");
        prop_assert_eq!(validate_topic_name(&bad), Err(TopicError::WildcardInName));
    }

    /// If `outer` covers `inner`, every name that `inner` matches is matched by `outer`.
    #[test]
    fn covering_implies_matching(outer in valid_filter(), inner in valid_filter(), name in valid_name()) {
        if filter_covers(&outer, &inner) && filter_matches(&inner, &name) {
            prop_assert!(filter_matches(&outer, &name), "{outer} covers {inner} but not {name}");
        }
    }
}
