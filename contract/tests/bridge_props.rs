//! Property tests of the bridge topic mapping: for any mappable pair of filters and any topic
//! matching the local one, the mapped topic matches the remote filter and mapping it back gives
//! the original topic.

use contract::bridge::Mapping;
use contract::topic::{filter_matches, validate_topic_name};
use proptest::prelude::*;

fn literal_level() -> impl Strategy<Value = String> {
    "[a-z0-9_\\-. é]{0,5}"
}

fn literal_prefix() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(literal_level(), 0..4)
}

/// The shared suffix from the first wildcard on: starts with a wildcard, then literal or `+`
/// levels, optionally `#` at the end. Empty means both filters are literal.
fn suffix() -> impl Strategy<Value = Vec<String>> {
    (
        prop_oneof![Just(None), Just(Some("+")), Just(Some("#"))],
        prop::collection::vec(prop_oneof![literal_level(), Just("+".to_string())], 0..4),
        any::<bool>(),
    )
        .prop_map(|(first, middle, hash)| match first {
            None => vec![],
            Some("#") => vec!["#".to_string()],
            Some(w) => {
                let mut v = vec![w.to_string()];
                v.extend(middle);
                if hash {
                    v.push("#".into());
                }
                v
            }
        })
}

/// A topic matching `prefix ++ suffix`: wildcards replaced by generated levels.
fn topic_for(prefix: &[String], suffix: &[String], fill: &[String], hash_levels: usize) -> String {
    let mut levels: Vec<String> = prefix.to_vec();
    let mut fill = fill.iter().cycle();
    for l in suffix {
        match l.as_str() {
            "+" => levels.push(fill.next().cloned().unwrap_or_default()),
            "#" => {
                for _ in 0..hash_levels {
                    levels.push(fill.next().cloned().unwrap_or_default());
                }
            }
            _ => levels.push(l.clone()),
        }
    }
    levels.join("/")
}

fn join(prefix: &[String], suffix: &[String]) -> String {
    prefix
        .iter()
        .chain(suffix.iter())
        .cloned()
        .collect::<Vec<_>>()
        .join("/")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, max_global_rejects: 100_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn map_then_reverse_is_identity(
        local_prefix in literal_prefix(),
        remote_prefix in literal_prefix(),
        suffix in suffix(),
        fill in prop::collection::vec("[a-z0-9]{1,4}", 1..4),
        hash_levels in 0usize..3,
    ) {
        let local = join(&local_prefix, &suffix);
        let remote = join(&remote_prefix, &suffix);
        prop_assume!(!local.is_empty() && !remote.is_empty());
        let Ok(mapping) = Mapping::new(&local, &remote) else {
            // Only the bare-`#`-on-one-side case may be refused for same-suffix filters.
            prop_assert_eq!(suffix.first().map(String::as_str), Some("#"));
            prop_assert!(local_prefix.join("/").is_empty() != remote_prefix.join("/").is_empty());
            return Ok(());
        };
        let topic = topic_for(&local_prefix, &suffix, &fill, hash_levels);
        prop_assume!(validate_topic_name(&topic).is_ok() && filter_matches(&local, &topic));
        let mapped = mapping.map(&topic);
        prop_assert!(mapped.is_some(), "{} did not map via {} -> {}", topic, local, remote);
        let mapped = mapped.unwrap();
        prop_assert!(filter_matches(&remote, &mapped), "{} does not match {}", mapped, remote);
        prop_assert_eq!(mapping.reverse().map(&mapped), Some(topic));
    }

    #[test]
    fn different_suffixes_are_refused(
        prefix in literal_prefix(),
        a in suffix(),
        b in suffix(),
    ) {
        prop_assume!(a != b);
        let local = join(&prefix, &a);
        let remote = join(&prefix, &b);
        prop_assume!(!local.is_empty() && !remote.is_empty());
        // A literal level right after the prefix can look like part of it; compare the real
        // wildcard suffixes.
        let wild = |f: &str| {
            let l: Vec<&str> = f.split('/').collect();
            let i = l.iter().position(|x| *x == "+" || *x == "#").unwrap_or(l.len());
            l[i..].join("/")
        };
        prop_assume!(wild(&local) != wild(&remote));
        prop_assert!(Mapping::new(&local, &remote).is_err());
    }
}
