//! The indexed matcher: one trie over topic levels per subject (plus one for everyone's rules),
//! flattened into arrays. A check walks only the trie of the requesting username, so its cost
//! depends on that subject's rules and the topic's depth, not on the size of the whole set.
//!
//! Each node keeps the rules whose pattern ends there (`exact`) and those ending in `/#` there
//! (`hash`), its literal children sorted by label, its `+` child, and two 6-bit masks — which
//! (action, QoS) pairs some allow / deny rule in its subtree admits — so walks skip subtrees
//! that cannot answer. Deciding allocates nothing.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use super::naive::valid_target;
use super::{Action, Decision, Effect, Reason, Request, RuleOrigin, RuleSet, SubjectState};

mod build;
mod walk;

use build::Build;
use walk::Walk;

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Node {
    edges: u32,
    n_edges: u32,
    plus: u32,
    leaves: u32,
    n_exact: u32,
    n_hash: u32,
    allow: u8,
    deny: u8,
}

impl Node {
    fn new() -> Self {
        Node {
            edges: 0,
            n_edges: 0,
            plus: NONE,
            leaves: 0,
            n_exact: 0,
            n_hash: 0,
            allow: 0,
            deny: 0,
        }
    }

    fn mask(&self, effect: Effect) -> u8 {
        match effect {
            Effect::Allow => self.allow,
            Effect::Deny => self.deny,
        }
    }

    /// Rules ending exactly here: (byte offset, count).
    fn exact(&self) -> (u32, u32) {
        (self.leaves, self.n_exact)
    }

    /// Rules ending in `/#` here.
    fn hash(&self) -> (u32, u32) {
        (self.leaves + 4 * self.n_exact, self.n_hash)
    }

    /// Both.
    fn all_leaves(&self) -> (u32, u32) {
        (self.leaves, self.n_exact + self.n_hash)
    }
}

/// The bit of an (action, QoS) pair in a node mask.
fn mask_bit(action: Action, qos: u8) -> u8 {
    let base = match action {
        Action::Publish => 0,
        Action::Subscribe => 3,
    };
    1 << (base + qos)
}

/// The indexed form of a [`RuleSet`], as the broker holds it.
///
/// Storage: one byte arena in which every subject owns one contiguous region — a header (state,
/// root, name), then its trie's nodes, edges, leaves and labels — so a check touches the hash
/// table slot and then a few adjacent cache lines, whatever the size of the whole set.
#[derive(Debug, Clone)]
pub struct Matcher {
    default_action: Effect,
    revision: String,
    origins: Vec<RuleOrigin>,
    /// Keyed hash of the username -> region offset.
    subjects: HashMap<u64, u32, BuildHasherDefault<Prehashed>>,
    /// Usernames whose hash collides with an earlier one (practically never used).
    collisions: HashMap<Box<str>, u32>,
    hasher: RandomState,
    /// All ones; tests clear it to force every username into one hash slot.
    hash_mask: u64,
    /// Region of everyone's rules, or NONE.
    everyone: u32,
    arena: Vec<u8>,
    rules: usize,
}

/// A hasher for keys that are already hashes.
#[derive(Debug, Default, Clone, Copy)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Node header: edge count, `+` child, exact count, hash count, masks.
const NODE_BYTES: usize = 20;
const EDGE_BYTES: usize = 12;
/// Region header: state u32, root u32, name length u32, then the name padded to 4 bytes.
const HEADER_BYTES: usize = 12;

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

impl Matcher {
    /// Indexes a rule set.
    pub fn new(set: &RuleSet) -> Self {
        Self::with_hash_mask(set, u64::MAX)
    }

    fn with_hash_mask(set: &RuleSet, hash_mask: u64) -> Self {
        let mut b = Build::default();
        let mut arena = Vec::new();
        let everyone = if set.everyone.is_empty() {
            NONE
        } else {
            b.trie(&set.everyone, &set.origins);
            b.emit(&mut arena, "", SubjectState::Active, true)
        };
        let hasher = RandomState::new();
        let mut subjects =
            HashMap::with_capacity_and_hasher(set.subjects.len(), Default::default());
        let mut collisions = HashMap::new();
        for s in &set.subjects {
            let with_trie = !s.rules.is_empty();
            if with_trie {
                b.trie(&s.rules, &set.origins);
            }
            let region = b.emit(&mut arena, &s.name, s.state, with_trie);
            match subjects.entry(hasher.hash_one(s.name.as_str()) & hash_mask) {
                Entry::Vacant(v) => {
                    v.insert(region);
                }
                Entry::Occupied(_) => {
                    collisions.insert(s.name.clone().into_boxed_str(), region);
                }
            }
        }
        arena.shrink_to_fit();
        Matcher {
            default_action: set.default_action,
            revision: set.revision.clone(),
            origins: set.origins.clone(),
            subjects,
            collisions,
            hasher,
            hash_mask,
            everyone,
            arena,
            rules: set.rule_count(),
        }
    }

    fn word(&self, at: usize) -> u32 {
        let b = &self.arena[at..at + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    fn node(&self, at: u32) -> Node {
        let a = at as usize;
        let n_edges = self.word(a);
        let m = &self.arena[a + 16..a + 18];
        let edges = a + NODE_BYTES;
        Node {
            edges: edges as u32,
            n_edges,
            plus: self.word(a + 4),
            leaves: (edges + n_edges as usize * EDGE_BYTES) as u32,
            n_exact: self.word(a + 8),
            n_hash: self.word(a + 12),
            allow: m[0],
            deny: m[1],
        }
    }

    /// The region of a username: (state, root or NONE).
    fn region(&self, username: &str) -> Option<(SubjectState, u32)> {
        let at = *self
            .subjects
            .get(&(self.hasher.hash_one(username) & self.hash_mask))? as usize;
        let len = self.word(at + 8) as usize;
        let at = if &self.arena[at + HEADER_BYTES..at + HEADER_BYTES + len] == username.as_bytes() {
            at
        } else {
            *self.collisions.get(username)? as usize
        };
        let state = match self.word(at) {
            0 => SubjectState::Active,
            1 => SubjectState::Suspended,
            _ => SubjectState::Revoked,
        };
        Some((state, self.word(at + 4)))
    }

    /// The revision of the indexed rule set.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The decision when no rule applies.
    pub fn default_action(&self) -> Effect {
        self.default_action
    }

    /// The origin of a rule named by [`Reason::Rule`].
    pub fn origin(&self, id: u32) -> Option<&RuleOrigin> {
        self.origins.get(id as usize)
    }

    /// The state of a username with an entry (a device or a user named by a policy).
    pub fn subject_state(&self, username: &str) -> Option<SubjectState> {
        self.region(username).map(|r| r.0)
    }

    /// Number of expanded rules indexed.
    pub fn rule_count(&self) -> usize {
        self.rules
    }

    /// Approximate heap bytes held by the index.
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity() + self.subjects.capacity() * 13 + self.collisions.capacity() * 32
    }

    /// Decides one request. Allocates nothing.
    pub fn decide(&self, req: &Request<'_>) -> Decision {
        let Some(target) = valid_target(req) else {
            return Decision {
                effect: Effect::Deny,
                reason: Reason::Invalid,
            };
        };
        let own = match self.region(req.username) {
            Some((state, _)) if state.is_blocked() => {
                return Decision {
                    effect: Effect::Deny,
                    reason: Reason::Blocked(state),
                }
            }
            Some((_, root)) => root,
            None => NONE,
        };
        let everyone = if self.everyone == NONE {
            NONE
        } else {
            self.word(self.everyone as usize + 4)
        };
        let walk = Walk {
            m: self,
            req,
            bit: mask_bit(req.action, req.qos),
            dollar: target.starts_with('$'),
        };
        for effect in [Effect::Deny, Effect::Allow] {
            for root in [own, everyone] {
                if root == NONE {
                    continue;
                }
                let found = match (req.action, effect) {
                    (Action::Publish, _) => walk.matches(root, Some(target), true, effect),
                    (Action::Subscribe, Effect::Allow) => walk.covers(root, Some(target), true),
                    (Action::Subscribe, Effect::Deny) => walk.intersects(root, Some(target), true),
                };
                if let Some(o) = found {
                    return Decision {
                        effect,
                        reason: Reason::Rule(o),
                    };
                }
            }
        }
        Decision {
            effect: self.default_action,
            reason: Reason::Default,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{naive, RuleSetBuilder};
    use super::*;

    #[test]
    fn hash_collisions_resolve_by_name() {
        let mut b = RuleSetBuilder::new(Effect::Deny);
        let o = b.origin(RuleOrigin {
            policy: "p".into(),
            rule: 0,
            effect: Effect::Allow,
            actions: super::super::ActionSet::ALL,
            qos: super::super::QosSet::ALL,
            retain: None,
        });
        for i in 0..20 {
            b.rule(&format!("u{i}"), o, format!("own/u{i}/#"));
        }
        b.subject("blocked", SubjectState::Revoked);
        let set = b.build().unwrap();
        let m = Matcher::with_hash_mask(&set, 0);
        assert_eq!(m.collisions.len(), 20);
        for i in 0..20 {
            let (me, other) = (format!("u{i}"), format!("own/u{}/x", (i + 1) % 20));
            let mine = format!("own/u{i}/x");
            for (topic, allowed) in [(mine.as_str(), true), (other.as_str(), false)] {
                let r = Request::publish(&me, topic, 0, false);
                assert_eq!(m.decide(&r).is_allowed(), allowed, "{me} {topic}");
                assert_eq!(m.decide(&r), naive::decide(&set, &r));
            }
        }
        assert_eq!(m.subject_state("blocked"), Some(SubjectState::Revoked));
        assert_eq!(m.subject_state("nobody"), None);
    }
}
