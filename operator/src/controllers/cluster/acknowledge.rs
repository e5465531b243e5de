//! The pure half of pushing hot-reloadable configuration to the core nodes: which payloads a
//! node needs given what its `/readyz` reports, and whether every desired node has acknowledged
//! the desired revisions (the `AclApplied` condition). No IO; `push.rs` does the requests.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// One hot-reloadable part of the broker's configuration, pushed with `PUT /v1/<part>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// The compiled ACL rule set (`acl.bin`).
    Acl,
    /// The revoked serials (`revoked.json`).
    Revoked,
    /// The clients CA trust bundle (PEM).
    Trust,
    /// The bridges (`bridges.json`).
    Bridges,
}

impl Part {
    /// Every part, in push order (the ACL first: it is what policy edits change).
    pub const ALL: [Part; 4] = [Part::Acl, Part::Revoked, Part::Trust, Part::Bridges];

    /// The push endpoint's path.
    pub fn path(self) -> &'static str {
        match self {
            Part::Acl => "/v1/acl",
            Part::Revoked => "/v1/revoked",
            Part::Trust => "/v1/trust",
            Part::Bridges => "/v1/bridges",
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Acl => "acl",
            Part::Revoked => "revoked",
            Part::Trust => "trust",
            Part::Bridges => "bridges",
        })
    }
}

/// Revisions of the parts, as the broker reports them in `/readyz` (`aclRevision`,
/// `revokedRevision`, `trustRevision`, `bridgesRevision`). A part a node does not report is
/// `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revisions {
    /// Revision of the ACL rule set (`RuleSet::revision`).
    pub acl: Option<String>,
    /// Revision of the revoked set (`revoked.json` `revision`).
    pub revoked: Option<String>,
    /// Revision of the trust bundle (first 16 hex digits of its SHA-256).
    pub trust: Option<String>,
    /// Revision of `bridges.json` (its `revision` field); desired only for a cluster that has
    /// a `<cluster>-bridges` Secret.
    pub bridges: Option<String>,
}

impl Revisions {
    /// The revision of `part`.
    pub fn get(&self, part: Part) -> Option<&str> {
        match part {
            Part::Acl => self.acl.as_deref(),
            Part::Revoked => self.revoked.as_deref(),
            Part::Trust => self.trust.as_deref(),
            Part::Bridges => self.bridges.as_deref(),
        }
    }

    /// Parses a `/readyz` body; fields that are absent or not strings are `None` (a node still
    /// starting serves a body without revisions).
    pub fn from_readyz(body: &serde_json::Value) -> Self {
        let field = |k: &str| body.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        Revisions {
            acl: field("aclRevision"),
            revoked: field("revokedRevision"),
            trust: field("trustRevision"),
            // "" is the broker's "no bridges.json loaded".
            bridges: field("bridgesRevision").filter(|r| !r.is_empty()),
        }
    }
}

/// The parts whose reported revision differs from the desired one, in push order. A part
/// without a desired revision is never pushed.
pub fn parts_to_push(desired: &Revisions, reported: &Revisions) -> Vec<Part> {
    Part::ALL
        .into_iter()
        .filter(|p| desired.get(*p).is_some_and(|d| reported.get(*p) != Some(d)))
        .collect()
}

/// What the push learned about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeState {
    /// The node answered `/readyz` (after any pushes) with these revisions.
    Reported(Revisions),
    /// The node could not be reached or refused; the message says why (never the token).
    Unreachable(String),
}

/// Whether every desired core node runs the desired ACL and revoked revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledgement {
    /// True when every desired node reported the desired ACL and revoked revisions.
    pub complete: bool,
    /// Nodes that are behind, each with the reason, sorted by node name.
    pub behind: Vec<(String, String)>,
}

impl Acknowledgement {
    /// A one-line summary for the condition message: `"n/m nodes acknowledged ..."` plus the
    /// nodes behind.
    pub fn message(&self, desired_nodes: usize, desired: &Revisions) -> String {
        let acked = desired_nodes.saturating_sub(self.behind.len());
        let head = format!(
            "{acked}/{desired_nodes} core nodes run ACL revision {} and revoked set {}",
            desired.acl.as_deref().unwrap_or("-"),
            desired.revoked.as_deref().unwrap_or("-"),
        );
        if self.behind.is_empty() {
            head
        } else {
            let list: Vec<String> = self
                .behind
                .iter()
                .map(|(n, why)| format!("{n}: {why}"))
                .collect();
            format!("{head}; behind: {}", list.join("; "))
        }
    }
}

/// The `AclApplied` verdict: every name in `desired_nodes` must be in `observed` with the
/// desired ACL and revoked revisions. Nodes observed but not desired (a scale-down in progress)
/// do not count. The trust bundle is pushed too but does not gate the condition.
pub fn acknowledge(
    desired_nodes: &[String],
    desired: &Revisions,
    observed: &BTreeMap<String, NodeState>,
) -> Acknowledgement {
    let mut behind = Vec::new();
    for node in desired_nodes {
        match observed.get(node) {
            None => behind.push((node.clone(), "no running pod with an IP".to_string())),
            Some(NodeState::Unreachable(why)) => behind.push((node.clone(), why.clone())),
            Some(NodeState::Reported(r)) => {
                let lagging: Vec<String> = [Part::Acl, Part::Revoked]
                    .into_iter()
                    .filter(|p| desired.get(*p).is_some_and(|d| r.get(*p) != Some(d)))
                    .map(|p| format!("{p} at {}", r.get(p).unwrap_or("none")))
                    .collect();
                if !lagging.is_empty() {
                    behind.push((node.clone(), lagging.join(", ")));
                }
            }
        }
    }
    behind.sort();
    Acknowledgement {
        complete: behind.is_empty(),
        behind,
    }
}

/// When to look again while nodes are behind, given how long `AclApplied` has been false:
/// 2 s at first (a pod just started or a push raced a restart), then a quarter of the time
/// already waited, at most `cap` (the normal resync), so a node that stays unreachable is not
/// polled every 2 s forever.
pub fn retry_after(behind_for: Duration, cap: Duration) -> Duration {
    (behind_for / 4).clamp(RETRY_MIN, cap.max(RETRY_MIN))
}

/// The first retry delay while nodes are behind.
pub const RETRY_MIN: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    fn revs(acl: &str, revoked: &str, trust: &str) -> Revisions {
        let s = |v: &str| (!v.is_empty()).then(|| v.to_string());
        Revisions {
            acl: s(acl),
            revoked: s(revoked),
            trust: s(trust),
            bridges: None,
        }
    }

    #[test]
    fn bridges_are_pushed_when_desired_and_do_not_gate_the_acknowledgement() {
        let mut desired = revs("a", "r", "t");
        let body = serde_json::json!({"aclRevision": "a", "revokedRevision": "r", "trustRevision": "t", "bridgesRevision": "b0"});
        let reported = Revisions::from_readyz(&body);
        assert_eq!(reported.bridges.as_deref(), Some("b0"));
        assert!(
            parts_to_push(&desired, &reported).is_empty(),
            "no bridges desired: not pushed"
        );
        desired.bridges = Some("b1".into());
        assert_eq!(parts_to_push(&desired, &reported), [Part::Bridges]);
        assert_eq!(Part::Bridges.path(), "/v1/bridges");
        let observed = BTreeMap::from([("n-0".to_string(), NodeState::Reported(reported))]);
        assert!(acknowledge(&["n-0".to_string()], &desired, &observed).complete);
    }

    #[test]
    fn only_differing_parts_are_pushed_in_order() {
        let desired = revs("a2", "r1", "t1");
        assert_eq!(parts_to_push(&desired, &revs("a2", "r1", "t1")), vec![]);
        assert_eq!(
            parts_to_push(&desired, &revs("a1", "r1", "t0")),
            vec![Part::Acl, Part::Trust]
        );
        // A node that reports nothing (still starting) gets everything desired.
        assert_eq!(
            parts_to_push(&desired, &Revisions::default()),
            vec![Part::Acl, Part::Revoked, Part::Trust]
        );
        // Nothing desired for a part: never pushed.
        assert_eq!(
            parts_to_push(&revs("a2", "", ""), &revs("a1", "r9", "t9")),
            vec![Part::Acl]
        );
    }

    #[test]
    fn retries_start_at_two_seconds_and_stay_bounded() {
        let cap = Duration::from_secs(3600);
        assert_eq!(retry_after(Duration::ZERO, cap), RETRY_MIN);
        assert_eq!(retry_after(Duration::from_secs(7), cap), RETRY_MIN);
        assert_eq!(
            retry_after(Duration::from_secs(400), cap),
            Duration::from_secs(100)
        );
        assert_eq!(retry_after(Duration::from_secs(86_400), cap), cap);
    }

    #[test]
    fn readyz_body_parses_present_revisions_only() {
        let body = serde_json::json!({"ready": true, "aclRevision": "a", "revokedRevision": "r", "trustRevision": 3});
        assert_eq!(
            Revisions::from_readyz(&body),
            Revisions {
                acl: Some("a".into()),
                revoked: Some("r".into()),
                trust: None,
                bridges: None,
            }
        );
        assert_eq!(
            Revisions::from_readyz(&serde_json::json!({"ready": false})),
            Revisions::default()
        );
    }

    #[test]
    fn complete_only_when_every_desired_node_reports_acl_and_revoked() {
        let nodes: Vec<String> = ["qs-core-0", "qs-core-1", "qs-core-2"]
            .map(String::from)
            .to_vec();
        let desired = revs("a2", "r1", "t1");
        let mut seen = BTreeMap::new();
        for n in &nodes {
            // Trust lagging does not gate the condition.
            seen.insert(n.clone(), NodeState::Reported(revs("a2", "r1", "t0")));
        }
        let ack = acknowledge(&nodes, &desired, &seen);
        assert!(ack.complete, "{ack:?}");
        assert_eq!(
            ack.message(3, &desired),
            "3/3 core nodes run ACL revision a2 and revoked set r1"
        );

        seen.insert(
            "qs-core-1".into(),
            NodeState::Reported(revs("a1", "r1", "t1")),
        );
        seen.insert(
            "qs-core-2".into(),
            NodeState::Unreachable("connect: refused".into()),
        );
        // A node that is not desired (scale-down) does not count either way.
        seen.insert("qs-core-3".into(), NodeState::Unreachable("gone".into()));
        let ack = acknowledge(&nodes, &desired, &seen);
        assert!(!ack.complete);
        assert_eq!(
            ack.message(3, &desired),
            "1/3 core nodes run ACL revision a2 and revoked set r1; behind: \
             qs-core-1: acl at a1; qs-core-2: connect: refused"
        );

        seen.remove("qs-core-0");
        let ack = acknowledge(&nodes, &desired, &seen);
        assert_eq!(
            ack.behind[0],
            ("qs-core-0".into(), "no running pod with an IP".into())
        );
    }
}
