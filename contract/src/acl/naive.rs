//! The reference decision: a linear scan over every expanded rule of the set, written as directly
//! from the semantics as possible. Tests check the indexed [`Matcher`](super::Matcher) against
//! it; benchmarks use it as the anchor. Not for production use (it is O(rules)).

use super::{Action, Decision, Effect, Reason, Request, RuleSet, SubjectState};
use crate::topic;

/// Decides a request by scanning all rules.
pub fn decide(set: &RuleSet, req: &Request<'_>) -> Decision {
    let Some(target) = valid_target(req) else {
        return Decision {
            effect: Effect::Deny,
            reason: Reason::Invalid,
        };
    };
    let mut state = SubjectState::Active;
    let mut allow = None;
    let mut deny = None;
    let subject_rules = set
        .subjects
        .iter()
        .flat_map(|s| s.rules.iter().map(move |r| (Some(s), r)));
    let everyone = set.everyone.iter().map(|r| (None, r));
    for (subject, rule) in subject_rules.chain(everyone) {
        if let Some(s) = subject {
            if s.name != req.username {
                continue;
            }
        }
        let origin = &set.origins[rule.origin as usize];
        if !origin.admits(req.action, req.qos, req.retain) {
            continue;
        }
        let applies = match (req.action, origin.effect) {
            (Action::Publish, _) => topic::filter_matches(&rule.pattern, target),
            (Action::Subscribe, Effect::Allow) => topic::filter_covers(&rule.pattern, target),
            (Action::Subscribe, Effect::Deny) => topic::filters_intersect(&rule.pattern, target),
        };
        if applies {
            match origin.effect {
                Effect::Allow => allow = allow.or(Some(rule.origin)),
                Effect::Deny => deny = deny.or(Some(rule.origin)),
            }
        }
    }
    // Blocked subjects carry no rules; their state alone decides.
    if let Some(s) = set.subjects.iter().find(|s| s.name == req.username) {
        state = s.state;
    }
    if state.is_blocked() {
        return Decision {
            effect: Effect::Deny,
            reason: Reason::Blocked(state),
        };
    }
    match (deny, allow) {
        (Some(o), _) => Decision {
            effect: Effect::Deny,
            reason: Reason::Rule(o),
        },
        (None, Some(o)) => Decision {
            effect: Effect::Allow,
            reason: Reason::Rule(o),
        },
        (None, None) => Decision {
            effect: set.default_action,
            reason: Reason::Default,
        },
    }
}

/// The topic name, or the filter without its `$share/<group>/` prefix; `None` when invalid.
pub(crate) fn valid_target<'a>(req: &Request<'a>) -> Option<&'a str> {
    if req.qos > 2 {
        return None;
    }
    match req.action {
        Action::Publish => topic::validate_topic_name(req.topic)
            .ok()
            .map(|_| req.topic),
        Action::Subscribe => topic::parse_filter(req.topic).ok().map(|f| f.filter),
    }
}
