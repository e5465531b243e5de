//! The broker's view of the ACL: the compiled rule set from `contract::acl`, indexed by the one
//! matcher the project has ([`contract::acl::Matcher`], the same one `mqtt-operator acl explain`
//! uses), behind the two questions the enforcement hooks ask.

use contract::acl::{Matcher, Request, RuleSet};

/// Who is acting: the certificate identity (device id = certificate CN = MQTT username), or
/// nobody (an anonymous client on the opt-in plain listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// A client authenticated by a certificate from the clients CA.
    Device(&'a str),
    /// A client without a certificate identity: only rules for everyone apply.
    Anonymous,
}

impl Subject<'_> {
    /// The username the matcher is asked about. Anonymous clients ask as the empty username,
    /// which no device can have, so only rules for everyone (and the default) apply.
    fn username(&self) -> &str {
        match self {
            Subject::Device(name) => name,
            Subject::Anonymous => "",
        }
    }
}

/// The rule set the broker enforces. Immutable: a reload builds a new one and swaps it in
/// whole, so a check never sees half a rule set.
pub struct Policy {
    matcher: Matcher,
}

impl Policy {
    /// Indexes a decoded rule set.
    pub fn new(set: &RuleSet) -> Self {
        Self {
            matcher: Matcher::new(set),
        }
    }

    /// The rule set's revision, reported in `/readyz` and `mqtt_acl_revision`.
    pub fn revision(&self) -> &str {
        self.matcher.revision()
    }

    /// May `subject` publish to `topic` with this QoS and retain flag? (Also the will check.)
    pub fn allow_publish(&self, subject: Subject<'_>, topic: &str, qos: u8, retain: bool) -> bool {
        self.matcher
            .decide(&Request::publish(subject.username(), topic, qos, retain))
            .is_allowed()
    }

    /// May `subject` subscribe with `filter` at this QoS? A `$share/<group>/` prefix is judged on
    /// the filter after it.
    pub fn allow_subscribe(&self, subject: Subject<'_>, filter: &str, qos: u8) -> bool {
        self.matcher
            .decide(&Request::subscribe(subject.username(), filter, qos))
            .is_allowed()
    }
}
