//! The ready-to-run `mosquitto_sub` / `mosquitto_pub` commands `local up` prints (pure): an
//! example derived from the compiled rule set with the same [`Matcher`] the broker uses, so the
//! printed "delivered" and "refused" lines are what the broker will do.

use contract::acl::{Action, Matcher, Request, RuleSet};
use contract::topic::filter_matches;

/// One subscriber and two publishes: one delivered, one refused by the ACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Subscribing deviceId.
    pub subscriber: String,
    /// Its filter.
    pub filter: String,
    /// Publishing deviceId.
    pub publisher: String,
    /// A topic it may publish to, delivered to the subscriber.
    pub topic: String,
    /// QoS of the publishes.
    pub qos: u8,
    /// A topic the subscriber's filter matches that the publisher may not publish to.
    pub refused_topic: String,
}

/// A concrete topic name for a rule pattern: `+` becomes `x`, a trailing `#` becomes `temp`.
fn concrete(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|l| match l {
            "+" => "x",
            "#" => "temp",
            other => other,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Finds an example among the `usable` deviceIds (those whose key we hold).
pub fn example(set: &RuleSet, usable: &[&str]) -> Option<Example> {
    let matcher = Matcher::new(set);
    let mut subs = Vec::new();
    let mut pubs = Vec::new();
    for s in set
        .subjects()
        .iter()
        .filter(|s| usable.contains(&s.name.as_str()))
    {
        for r in &s.rules {
            let Some(o) = set.origins().get(r.origin as usize) else {
                continue;
            };
            let Some(qos) = o.qos.iter().max().map(|q| q.min(1)) else {
                continue;
            };
            if o.actions.contains(Action::Subscribe)
                && matcher
                    .decide(&Request::subscribe(&s.name, &r.pattern, qos))
                    .is_allowed()
            {
                subs.push((s.name.clone(), r.pattern.clone()));
            }
            let topic = concrete(&r.pattern);
            if o.actions.contains(Action::Publish)
                && matcher
                    .decide(&Request::publish(&s.name, &topic, qos, false))
                    .is_allowed()
            {
                pubs.push((s.name.clone(), topic, qos));
            }
        }
    }
    let mut best: Option<Example> = None;
    for (sub, filter) in &subs {
        for (publisher, topic, qos) in pubs.iter().filter(|p| filter_matches(filter, &p.1)) {
            // A topic the subscriber would see but this publisher may not use: another device's.
            let refused = pubs
                .iter()
                .map(|p| p.1.clone())
                .chain(std::iter::once(concrete(filter)))
                .find(|t| {
                    filter_matches(filter, t)
                        && !matcher
                            .decide(&Request::publish(publisher, t, *qos, false))
                            .is_allowed()
                });
            let Some(refused_topic) = refused else {
                continue;
            };
            let candidate = Example {
                subscriber: sub.clone(),
                filter: filter.clone(),
                publisher: publisher.clone(),
                topic: topic.clone(),
                qos: *qos,
                refused_topic,
            };
            // Prefer a subscriber other than the publisher, then the first in name order.
            if best
                .as_ref()
                .is_none_or(|b| b.subscriber == b.publisher && sub != publisher)
            {
                best = Some(candidate);
            }
        }
    }
    best
}

/// Quotes a shell word when it needs it (single quotes; `'` itself escaped).
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Where a device's files are and which port to use.
#[derive(Debug, Clone)]
pub struct Connection<'a> {
    /// The MQTTS port of the node to connect to.
    pub port: u16,
    /// `<state>/devices` directory.
    pub devices_dir: &'a str,
}

fn tls_args(c: &Connection<'_>, device: &str) -> Vec<String> {
    let file = |f: &str| format!("{}/{device}/{f}", c.devices_dir);
    vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        c.port.to_string(),
        "--cafile".into(),
        file("ca.crt"),
        "--cert".into(),
        file("tls.crt"),
        "--key".into(),
        file("tls.key"),
    ]
}

fn line(program: &str, args: Vec<String>) -> String {
    std::iter::once(program.to_owned())
        .chain(args.iter().map(|a| shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `mosquitto_sub` for the example's subscriber.
pub fn subscribe(c: &Connection<'_>, e: &Example) -> String {
    let mut args = tls_args(c, &e.subscriber);
    args.extend([
        "-i".into(),
        format!("{}-sub", e.subscriber),
        "-q".into(),
        e.qos.to_string(),
        "-t".into(),
        e.filter.clone(),
        "-v".into(),
    ]);
    line("mosquitto_sub", args)
}

/// `mosquitto_pub` of the example's publisher to `topic`.
pub fn publish(c: &Connection<'_>, e: &Example, topic: &str, message: &str) -> String {
    let mut args = tls_args(c, &e.publisher);
    args.extend([
        "-i".into(),
        format!("{}-pub", e.publisher),
        "-q".into(),
        e.qos.to_string(),
        "-t".into(),
        topic.to_owned(),
        "-m".into(),
        message.to_owned(),
    ]);
    line("mosquitto_pub", args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::acl::{ActionSet, Effect, QosSet, RuleOrigin, RuleSetBuilder, SubjectState};

    fn set() -> RuleSet {
        let mut b = RuleSetBuilder::new(Effect::Deny);
        let origin = |b: &mut RuleSetBuilder, rule, actions| {
            b.origin(RuleOrigin {
                policy: "p".into(),
                rule,
                effect: Effect::Allow,
                actions: ActionSet::of(actions),
                qos: QosSet::of([0, 1]).unwrap(),
                retain: None,
            })
        };
        let p = origin(&mut b, 0, vec![Action::Publish]);
        let s = origin(&mut b, 1, vec![Action::Subscribe]);
        for d in ["s1", "s2", "gw"] {
            b.subject(d, SubjectState::Active);
        }
        b.rule("s1", p, "site/s1/t/#".into());
        b.rule("s2", p, "site/s2/t/#".into());
        b.rule("gw", s, "site/+/t/#".into());
        b.build().unwrap()
    }

    #[test]
    fn example_pairs_a_subscriber_with_an_allowed_and_a_refused_publish() {
        let e = example(&set(), &["s1", "s2", "gw"]).unwrap();
        assert_eq!(e.subscriber, "gw");
        assert_eq!(e.filter, "site/+/t/#");
        assert_eq!(e.publisher, "s1");
        assert_eq!(e.topic, "site/s1/t/temp");
        assert_eq!(e.refused_topic, "site/s2/t/temp");
        assert_eq!(e.qos, 1);
    }

    #[test]
    fn no_example_without_usable_keys() {
        assert_eq!(example(&set(), &["s1"]), None);
    }

    #[test]
    fn commands_quote_wildcards_and_spaces() {
        let e = example(&set(), &["s1", "s2", "gw"]).unwrap();
        let c = Connection {
            port: 18830,
            devices_dir: "/tmp/a b/devices",
        };
        let sub = subscribe(&c, &e);
        assert!(
            sub.starts_with(
                "mosquitto_sub -h 127.0.0.1 -p 18830 --cafile '/tmp/a b/devices/gw/ca.crt'"
            ),
            "{sub}"
        );
        assert!(sub.contains("-t 'site/+/t/#' -v"), "{sub}");
        let p = publish(&c, &e, &e.topic, "it's 21");
        assert!(p.ends_with(r"-t site/s1/t/temp -m 'it'\''s 21'"), "{p}");
        assert_eq!(shell_quote("a$b"), "'a$b'");
    }
}
