//! `mqtt-operator acl explain`: the decision the broker would take for one request, and what
//! decided it. Uses the same compiler and the same [`Matcher`] as the broker. Pure.

use std::fmt;

use contract::acl::{Action, Decision, Effect, Matcher, Reason, Request, RuleOrigin};
use contract::topic;

use super::{clusters, compile_documents, CompileError, Compiled};
use crate::manifest::Document;

/// Who asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who<'a> {
    /// A device, by `deviceId`.
    Device(&'a str),
    /// A non-device user, by MQTT username.
    User(&'a str),
}

impl Who<'_> {
    fn username(&self) -> &str {
        match self {
            Who::Device(n) | Who::User(n) => n,
        }
    }
}

/// The request to explain.
#[derive(Debug, Clone, Copy)]
pub struct Question<'a> {
    /// Who asks.
    pub who: Who<'a>,
    /// Publish or subscribe.
    pub action: Action,
    /// Topic name (publish) or filter (subscribe, `$share/...` allowed).
    pub topic: &'a str,
    /// QoS.
    pub qos: u8,
    /// Retain flag (publish).
    pub retain: bool,
}

/// Why a question cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// No MqttCluster in the set.
    #[error("no MqttCluster in the given files")]
    NoCluster,
    /// Several clusters and no `--cluster`.
    #[error("several MqttClusters in the given files ({0}); choose one with --cluster")]
    AmbiguousCluster(String),
    /// `--cluster` names no cluster of the set.
    #[error("no MqttCluster named '{0}' in the given files")]
    UnknownCluster(String),
    /// The rule set does not compile.
    #[error(transparent)]
    Compile(#[from] CompileError),
}

/// The answer.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// `Kind/name` of the cluster.
    pub cluster: String,
    /// The decision.
    pub decision: Decision,
    /// The deciding rule, when a rule decided.
    pub origin: Option<RuleOrigin>,
    /// The expanded pattern of the deciding rule that applied.
    pub pattern: Option<String>,
    /// Why the topic is invalid, when it is.
    pub invalid: Option<String>,
    /// Revision of the compiled rule set.
    pub revision: String,
    /// Number of expanded rules in the set.
    pub rules: usize,
    /// Context: unknown device, rejected or unselected policies, etc.
    pub notes: Vec<String>,
    /// The question, for display.
    pub question: String,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match self.decision.effect {
            Effect::Allow => "ALLOW",
            Effect::Deny => "DENY",
        };
        match (&self.decision.reason, &self.origin) {
            (Reason::Rule(_), Some(o)) => writeln!(f, "{verdict} by {o}")?,
            (Reason::Default, _) => writeln!(f, "{verdict} by default")?,
            (Reason::Blocked(state), _) => writeln!(f, "{verdict} by device state ({state})")?,
            (Reason::Invalid, _) | (Reason::Rule(_), None) => {
                writeln!(f, "{verdict}: invalid request")?
            }
        }
        writeln!(f, "  request:  {}", self.question)?;
        if let (Some(o), Some(p)) = (&self.origin, &self.pattern) {
            let verb = match (o.effect, self.question.starts_with("subscribe")) {
                (Effect::Allow, true) => "covers",
                (Effect::Deny, true) => "overlaps",
                (_, false) => "matches",
            };
            writeln!(
                f,
                "  rule:     {} {} pattern '{p}' ({verb} the request)",
                o.effect,
                actions(o)
            )?;
        }
        if let Some(e) = &self.invalid {
            writeln!(f, "  invalid:  {e}")?;
        }
        writeln!(
            f,
            "  rule set: {} revision {} ({} rules)",
            self.cluster, self.revision, self.rules
        )?;
        for n in &self.notes {
            writeln!(f, "  note:     {n}")?;
        }
        Ok(())
    }
}

fn actions(o: &RuleOrigin) -> String {
    let a: Vec<String> = o.actions.iter().map(|a| a.to_string()).collect();
    let q: Vec<String> = o.qos.iter().map(|q| q.to_string()).collect();
    let mut s = format!("{} qos [{}]", a.join(","), q.join(","));
    if let Some(r) = o.retain {
        s.push_str(&format!(" retain {r}"));
    }
    s
}

/// Explains one request against the cluster of a document set.
pub fn explain(
    docs: &[Document],
    cluster: Option<&str>,
    q: &Question<'_>,
) -> Result<Explanation, ExplainError> {
    let all: Vec<_> = clusters(docs).collect();
    let (namespace, c) = match cluster {
        Some(name) => *all
            .iter()
            .find(|(_, c)| c.metadata.name.as_deref() == Some(name))
            .ok_or_else(|| ExplainError::UnknownCluster(name.to_string()))?,
        None => match all.as_slice() {
            [] => return Err(ExplainError::NoCluster),
            [one] => *one,
            many => {
                let names: Vec<_> = many
                    .iter()
                    .filter_map(|(_, c)| c.metadata.name.as_deref())
                    .collect();
                return Err(ExplainError::AmbiguousCluster(names.join(", ")));
            }
        },
    };
    let compiled = compile_documents(docs, namespace, c)?;
    Ok(explain_compiled(
        &compiled,
        &format!("MqttCluster/{}", c.metadata.name.as_deref().unwrap_or("")),
        q,
    ))
}

/// Explains one request against an already compiled rule set.
pub fn explain_compiled(compiled: &Compiled, cluster: &str, q: &Question<'_>) -> Explanation {
    let set = &compiled.rules;
    let matcher = Matcher::new(set);
    let username = q.who.username();
    let req = Request {
        username,
        action: q.action,
        topic: q.topic,
        qos: q.qos,
        retain: q.retain,
    };
    let decision = matcher.decide(&req);
    let mut notes = Vec::new();
    let subject = set.subject(username);
    match q.who {
        Who::Device(id) if subject.is_none() => notes.push(format!(
            "device '{id}' has no rules of its own in this set (no DeviceIdentity with that deviceId, or no policy selects it); only rules for everyone apply"
        )),
        Who::User(u) if subject.is_none() => notes.push(format!(
            "no policy names user '{u}'; only rules for everyone apply"
        )),
        _ => {}
    }
    for p in &compiled.policies {
        if !p.selected {
            notes.push(format!(
                "TopicPolicy/{} is not selected by the cluster's acl.policySelector: ignored",
                p.name
            ));
        } else if !p.errors.is_empty() {
            notes.push(format!(
                "TopicPolicy/{} is invalid and was not compiled ({})",
                p.name, p.errors[0]
            ));
        }
    }
    let origin = match decision.reason {
        Reason::Rule(o) => matcher.origin(o).cloned(),
        _ => None,
    };
    // The expanded pattern that made the deciding rule apply (for display only).
    let pattern = match decision.reason {
        Reason::Rule(o) => {
            let target = match q.action {
                Action::Publish => Some(q.topic),
                Action::Subscribe => topic::parse_filter(q.topic).ok().map(|f| f.filter),
            };
            let own = subject.map_or(&[][..], |s| &s.rules[..]);
            target.and_then(|t| {
                own.iter()
                    .chain(set.everyone())
                    .filter(|r| r.origin == o)
                    .find(|r| match (q.action, decision.effect) {
                        (Action::Publish, _) => topic::filter_matches(&r.pattern, t),
                        (Action::Subscribe, Effect::Allow) => topic::filter_covers(&r.pattern, t),
                        (Action::Subscribe, Effect::Deny) => {
                            topic::filters_intersect(&r.pattern, t)
                        }
                    })
                    .map(|r| r.pattern.clone())
            })
        }
        _ => None,
    };
    let invalid = (decision.reason == Reason::Invalid).then(|| {
        if q.qos > 2 {
            return format!("QoS {} is not 0, 1 or 2", q.qos);
        }
        let e = match q.action {
            Action::Publish => topic::validate_topic_name(q.topic).err(),
            Action::Subscribe => topic::parse_filter(q.topic).err(),
        };
        e.map_or_else(|| "invalid".to_string(), |e| e.to_string())
    });
    let who = match q.who {
        Who::Device(d) => format!("device {d}"),
        Who::User(u) => format!("user {u}"),
    };
    let question = match q.action {
        Action::Publish => format!(
            "publish '{}' qos {} retain {} as {who}",
            q.topic, q.qos, q.retain
        ),
        Action::Subscribe => format!("subscribe '{}' qos {} as {who}", q.topic, q.qos),
    };
    if decision.reason == Reason::Default {
        notes.push(format!(
            "no rule applies; the cluster's acl.defaultAction is {}",
            set.default_action()
        ));
    }
    Explanation {
        cluster: cluster.to_string(),
        decision,
        origin,
        pattern,
        invalid,
        revision: set.revision().to_string(),
        rules: set.rule_count(),
        notes,
        question,
    }
}
