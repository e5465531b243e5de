//! Compiled topic ACLs: the rule set the operator hands the broker, its binary form, and the one
//! matcher both sides use to decide a PUBLISH or SUBSCRIBE.
//!
//! Semantics (docs/acl.md is the long form; every sentence there has a test):
//! - a request is `(username, action, topic or filter, qos, retain)`;
//! - a blocked subject (a Suspended or Revoked device) is denied everything;
//! - otherwise the subject's own rules and the rules for everyone are consulted: if any deny rule
//!   applies the request is denied, else if any allow rule applies it is allowed, else the
//!   default action decides. Deny always beats allow; rule and policy order never matter;
//! - PUBLISH (and a will message): a rule applies when its pattern matches the topic name;
//! - SUBSCRIBE: an allow rule applies when its pattern *covers* the filter (every topic the filter
//!   can deliver matches the pattern); a deny rule applies when its pattern *intersects* the filter
//!   (the subscription could deliver a denied topic). `$share/<group>/<filter>` is judged on
//!   `<filter>`; wildcards in a first level never match `$`-topics, so `$SYS/...` needs a rule
//!   that names `$SYS`;
//! - a rule's `qos` list must contain the request's QoS; its `retain` flag, when set, must equal
//!   the publish's retain flag (it does not constrain subscribes).

pub mod codec;
mod index;
pub mod naive;
mod ruleset;

pub use index::Matcher;
pub use ruleset::{RuleSetBuilder, RuleSetError};

use std::fmt;

/// Version of the binary rule-set format ([`codec`]); a reader refuses other versions.
pub const FORMAT_VERSION: u16 = 1;

/// The deepest pattern (in topic levels) a rule may have. Bounds the matcher's recursion.
pub const MAX_PATTERN_LEVELS: usize = 128;

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Effect {
    /// Permit.
    Allow,
    /// Refuse; beats any allow.
    Deny,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        })
    }
}

/// An MQTT operation subject to the ACL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// PUBLISH, and the will message of a CONNECT (authorized as the publish it becomes).
    Publish,
    /// SUBSCRIBE (one filter at a time).
    Subscribe,
}

impl Action {
    const fn bit(self) -> u8 {
        match self {
            Action::Publish => 1,
            Action::Subscribe => 2,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
        })
    }
}

/// A set of actions (bit 0 publish, bit 1 subscribe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActionSet(u8);

impl ActionSet {
    /// Both actions.
    pub const ALL: ActionSet = ActionSet(3);

    /// The set of the given actions.
    pub fn of(actions: impl IntoIterator<Item = Action>) -> Self {
        ActionSet(actions.into_iter().fold(0, |m, a| m | a.bit()))
    }

    /// From the raw bits; `None` for bits outside the two actions.
    pub fn from_bits(bits: u8) -> Option<Self> {
        (bits & !3 == 0).then_some(ActionSet(bits))
    }

    /// The raw bits.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Is `a` in the set?
    pub fn contains(self, a: Action) -> bool {
        self.0 & a.bit() != 0
    }

    /// The actions in the set, publish first.
    pub fn iter(self) -> impl Iterator<Item = Action> {
        [Action::Publish, Action::Subscribe]
            .into_iter()
            .filter(move |a| self.contains(*a))
    }
}

/// A set of QoS levels (bit q for QoS q).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QosSet(u8);

impl QosSet {
    /// QoS 0, 1 and 2 (a rule without a `qos` list).
    pub const ALL: QosSet = QosSet(7);

    /// The set of the given levels; `None` when a level is above 2.
    pub fn of(levels: impl IntoIterator<Item = u8>) -> Option<Self> {
        levels
            .into_iter()
            .try_fold(0u8, |m, q| (q <= 2).then(|| m | (1 << q)))
            .map(QosSet)
    }

    /// From the raw bits; `None` for bits above QoS 2.
    pub fn from_bits(bits: u8) -> Option<Self> {
        (bits & !7 == 0).then_some(QosSet(bits))
    }

    /// The raw bits.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Is QoS `q` in the set?
    pub fn contains(self, q: u8) -> bool {
        q <= 2 && self.0 & (1 << q) != 0
    }

    /// Is every level of `other` in this set?
    pub fn is_superset(self, other: QosSet) -> bool {
        other.0 & !self.0 == 0
    }

    /// The levels in the set, ascending.
    pub fn iter(self) -> impl Iterator<Item = u8> {
        (0..=2u8).filter(move |q| self.contains(*q))
    }
}

/// Lifecycle state of a subject, as the rule set carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubjectState {
    /// Rules apply.
    Active,
    /// A Suspended device: every request is denied; no rules are shipped for it.
    Suspended,
    /// A Revoked device: every request is denied; no rules are shipped for it.
    Revoked,
}

impl SubjectState {
    /// True for Suspended and Revoked.
    pub fn is_blocked(self) -> bool {
        self != SubjectState::Active
    }
}

impl fmt::Display for SubjectState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SubjectState::Active => "active",
            SubjectState::Suspended => "suspended",
            SubjectState::Revoked => "revoked",
        })
    }
}

/// Where a compiled rule comes from, and the constraints it carries: one rule of one policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleOrigin {
    /// Name of the TopicPolicy (in the cluster's namespace).
    pub policy: String,
    /// Index of the rule in the policy's `spec.rules`.
    pub rule: u32,
    /// Allow or deny.
    pub effect: Effect,
    /// Actions the rule applies to.
    pub actions: ActionSet,
    /// QoS levels the rule applies to.
    pub qos: QosSet,
    /// When set, the rule applies only to publishes with this retain flag.
    pub retain: Option<bool>,
}

impl RuleOrigin {
    /// Do the rule's action, QoS and retain constraints admit this request (topic aside)?
    #[inline]
    pub fn admits(&self, action: Action, qos: u8, retain: bool) -> bool {
        self.actions.contains(action)
            && self.qos.contains(qos)
            && (action == Action::Subscribe || self.retain.is_none_or(|r| r == retain))
    }
}

impl fmt::Display for RuleOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicPolicy/{} rules[{}]", self.policy, self.rule)
    }
}

/// One expanded rule of a subject: an origin and a concrete topic pattern (placeholders expanded).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    /// The pattern: a valid, non-shared MQTT filter.
    pub pattern: String,
    /// Index into [`RuleSet::origins`].
    pub origin: u32,
}

/// The rules of one MQTT username (a device id or a user name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRules {
    /// The MQTT username.
    pub name: String,
    /// Active, or blocked (then `rules` is empty).
    pub state: SubjectState,
    /// Rules sorted by (pattern, origin), without duplicates.
    pub rules: Vec<Rule>,
}

/// A compiled, canonical rule set: the same policies and identities give the same value (and the
/// same bytes and revision) whatever order they came in. Build one with [`RuleSetBuilder`] or
/// [`codec::decode`]; index it with [`Matcher::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    pub(crate) default_action: Effect,
    pub(crate) origins: Vec<RuleOrigin>,
    pub(crate) everyone: Vec<Rule>,
    pub(crate) subjects: Vec<SubjectRules>,
    pub(crate) revision: String,
}

impl RuleSet {
    /// The decision when no rule applies.
    pub fn default_action(&self) -> Effect {
        self.default_action
    }

    /// Rule origins, sorted by (policy, rule index).
    pub fn origins(&self) -> &[RuleOrigin] {
        &self.origins
    }

    /// Rules that apply to every username (patterns without placeholders of `all: true` policies),
    /// except blocked subjects.
    pub fn everyone(&self) -> &[Rule] {
        &self.everyone
    }

    /// Per-username rules, sorted by name.
    pub fn subjects(&self) -> &[SubjectRules] {
        &self.subjects
    }

    /// The rules of one username, if it has an entry.
    pub fn subject(&self, name: &str) -> Option<&SubjectRules> {
        self.subjects
            .binary_search_by(|s| s.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.subjects[i])
    }

    /// Stable revision: the first 128 bits of the SHA-256 of the encoded body, as hex.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// Number of expanded rules (per-subject rules plus everyone rules).
    pub fn rule_count(&self) -> usize {
        self.everyone.len() + self.subjects.iter().map(|s| s.rules.len()).sum::<usize>()
    }
}

/// One authorization question, as the broker asks it. Borrowed: building one allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The MQTT username (a device id, from the certificate CN, or a user name).
    pub username: &'a str,
    /// Publish or subscribe.
    pub action: Action,
    /// The topic name (publish) or the filter as sent, `$share/<group>/` prefix included
    /// (subscribe).
    pub topic: &'a str,
    /// The QoS of the publish, or the requested maximum QoS of the subscription.
    pub qos: u8,
    /// The publish's retain flag (ignored for subscribe).
    pub retain: bool,
}

impl<'a> Request<'a> {
    /// A PUBLISH.
    pub fn publish(username: &'a str, topic: &'a str, qos: u8, retain: bool) -> Self {
        Request {
            username,
            action: Action::Publish,
            topic,
            qos,
            retain,
        }
    }

    /// The will message of a CONNECT: authorized exactly like the PUBLISH it becomes.
    pub fn will(username: &'a str, topic: &'a str, qos: u8, retain: bool) -> Self {
        Self::publish(username, topic, qos, retain)
    }

    /// A SUBSCRIBE of one filter.
    pub fn subscribe(username: &'a str, filter: &'a str, qos: u8) -> Self {
        Request {
            username,
            action: Action::Subscribe,
            topic: filter,
            qos,
            retain: false,
        }
    }
}

/// Why a decision came out as it did. `Copy`, no allocation: the broker keeps it for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// This rule decided (index into [`RuleSet::origins`] / [`Matcher::origin`]).
    Rule(u32),
    /// No rule applied: the default action decided.
    Default,
    /// The subject is a Suspended or Revoked device.
    Blocked(SubjectState),
    /// The topic name or filter is not valid MQTT, or the QoS is above 2.
    Invalid,
}

/// An authorization decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny.
    pub effect: Effect,
    /// What decided it.
    pub reason: Reason,
}

impl Decision {
    /// True when allowed.
    pub fn is_allowed(&self) -> bool {
        self.effect == Effect::Allow
    }
}

#[cfg(test)]
mod tests;
