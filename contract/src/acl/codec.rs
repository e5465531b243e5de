//! The binary form of a [`RuleSet`] the broker loads (docs/acl.md, "Serialized form").
//!
//! ```text
//! file     = magic "MQACL" | version u16 LE | revision str | body
//! body     = default u8 | origins | everyone rules | subject count varint | subject*
//! origins  = count varint | (policy str | rule varint | effect u8 | actions u8 | qos u8 | retain u8)*
//! subject  = name fstr | state u8 | rules
//! rules    = count varint | (origin varint | pattern fstr)*
//! str      = len varint | UTF-8 bytes
//! fstr     = shared varint | suffix str     (front coding against the previous fstr)
//! ```
//!
//! Sorted patterns and names share long prefixes (`sites/lyon/devices/sensor-0...`), so front
//! coding stores mostly the part that differs. Decoding checks everything (magic, version,
//! bounds, UTF-8, pattern grammar, canonical order, and that the revision is the body's digest):
//! a corrupt or truncated file is an error, never a panic or a wrong rule set.

use sha2::{Digest, Sha256};

use super::ruleset::check_pattern;
use super::{
    ActionSet, Effect, QosSet, Rule, RuleOrigin, RuleSet, RuleSetError, SubjectRules, SubjectState,
    FORMAT_VERSION,
};

/// First bytes of every encoded rule set.
pub const MAGIC: &[u8; 5] = b"MQACL";

/// Why bytes are not a rule set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Does not start with [`MAGIC`].
    #[error("not an mqtt-operator ACL rule set (bad magic)")]
    BadMagic,
    /// Written by another format version.
    #[error("rule set format version {found}, this reader understands {FORMAT_VERSION}")]
    Version {
        /// The version in the file.
        found: u16,
    },
    /// Ends in the middle of a field.
    #[error("rule set truncated at byte {0}")]
    Truncated(usize),
    /// A field holds an impossible value.
    #[error("rule set corrupt at byte {at}: {what}")]
    Corrupt {
        /// Byte offset.
        at: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// Bytes after the last subject.
    #[error("{0} trailing bytes after the rule set")]
    Trailing(usize),
    /// The revision in the header is not the digest of the body.
    #[error("revision mismatch: header says {header}, body hashes to {body}")]
    Revision {
        /// The header's revision.
        header: String,
        /// The body's digest.
        body: String,
    },
    /// A pattern is not a valid rule pattern.
    #[error(transparent)]
    Pattern(#[from] RuleSetError),
}

/// Encodes a rule set (header, revision, body).
pub fn encode(set: &RuleSet) -> Vec<u8> {
    let body = encode_body(set);
    let mut out = Vec::with_capacity(body.len() + 48);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    put_str(&mut out, &set.revision);
    out.extend_from_slice(&body);
    out
}

/// The revision of a rule set: the first 128 bits of the SHA-256 of its body, in hex.
pub(crate) fn revision_of(set: &RuleSet) -> String {
    digest(&encode_body(set))
}

fn digest(body: &[u8]) -> String {
    let hash = Sha256::digest(body);
    hex::encode(&hash[..16])
}

fn encode_body(set: &RuleSet) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + set.rule_count() * 16);
    out.push(match set.default_action {
        Effect::Allow => 0,
        Effect::Deny => 1,
    });
    put_varint(&mut out, set.origins.len() as u64);
    for o in &set.origins {
        put_str(&mut out, &o.policy);
        put_varint(&mut out, u64::from(o.rule));
        out.push(match o.effect {
            Effect::Allow => 0,
            Effect::Deny => 1,
        });
        out.push(o.actions.bits());
        out.push(o.qos.bits());
        out.push(match o.retain {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        });
    }
    let mut prev = "";
    put_rules(&mut out, &set.everyone, &mut prev);
    put_varint(&mut out, set.subjects.len() as u64);
    let mut prev_name = "";
    for s in &set.subjects {
        put_front(&mut out, &s.name, &mut prev_name);
        out.push(match s.state {
            SubjectState::Active => 0,
            SubjectState::Suspended => 1,
            SubjectState::Revoked => 2,
        });
        put_rules(&mut out, &s.rules, &mut prev);
    }
    out
}

fn put_rules<'a>(out: &mut Vec<u8>, rules: &'a [Rule], prev: &mut &'a str) {
    put_varint(out, rules.len() as u64);
    for r in rules {
        put_varint(out, u64::from(r.origin));
        put_front(out, &r.pattern, prev);
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_front<'a>(out: &mut Vec<u8>, s: &'a str, prev: &mut &'a str) {
    let shared = s
        .bytes()
        .zip(prev.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    put_varint(out, shared as u64);
    put_varint(out, (s.len() - shared) as u64);
    out.extend_from_slice(&s.as_bytes()[shared..]);
    *prev = s;
}

/// Decodes and fully checks an encoded rule set.
pub fn decode(bytes: &[u8]) -> Result<RuleSet, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(MAGIC.len())? != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let v = r.take(2)?;
    let found = u16::from_le_bytes([v[0], v[1]]);
    if found != FORMAT_VERSION {
        return Err(DecodeError::Version { found });
    }
    let header_revision = r.string()?;
    let body_start = r.at;
    let default_action = match r.byte()? {
        0 => Effect::Allow,
        1 => Effect::Deny,
        _ => return Err(r.corrupt("default action")),
    };
    let n = r.count()?;
    let mut origins: Vec<RuleOrigin> = Vec::with_capacity(n);
    for _ in 0..n {
        let policy = r.string()?;
        let rule = u32::try_from(r.varint()?).map_err(|_| r.corrupt("rule index"))?;
        let effect = match r.byte()? {
            0 => Effect::Allow,
            1 => Effect::Deny,
            _ => return Err(r.corrupt("effect")),
        };
        let actions = ActionSet::from_bits(r.byte()?).ok_or_else(|| r.corrupt("actions"))?;
        let qos = QosSet::from_bits(r.byte()?).ok_or_else(|| r.corrupt("qos"))?;
        let retain = match r.byte()? {
            0 => None,
            1 => Some(false),
            2 => Some(true),
            _ => return Err(r.corrupt("retain")),
        };
        let o = RuleOrigin {
            policy,
            rule,
            effect,
            actions,
            qos,
            retain,
        };
        if origins.last().is_some_and(|p| *p >= o) {
            return Err(r.corrupt("origins not in canonical order"));
        }
        origins.push(o);
    }
    let mut prev = Vec::new();
    let everyone = r.rules(&origins, &mut prev)?;
    let n = r.count()?;
    let mut subjects: Vec<SubjectRules> = Vec::with_capacity(n);
    let mut prev_name = Vec::new();
    for _ in 0..n {
        let name = r.front(&mut prev_name)?;
        if subjects.last().is_some_and(|p| p.name >= name) {
            return Err(r.corrupt("subjects not in canonical order"));
        }
        let state = match r.byte()? {
            0 => SubjectState::Active,
            1 => SubjectState::Suspended,
            2 => SubjectState::Revoked,
            _ => return Err(r.corrupt("subject state")),
        };
        let rules = r.rules(&origins, &mut prev)?;
        if state.is_blocked() && !rules.is_empty() {
            return Err(r.corrupt("blocked subject with rules"));
        }
        subjects.push(SubjectRules { name, state, rules });
    }
    if r.at != bytes.len() {
        return Err(DecodeError::Trailing(bytes.len() - r.at));
    }
    let body = digest(&bytes[body_start..]);
    if body != header_revision {
        return Err(DecodeError::Revision {
            header: header_revision,
            body,
        });
    }
    Ok(RuleSet {
        default_action,
        origins,
        everyone,
        subjects,
        revision: header_revision,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn corrupt(&self, what: &'static str) -> DecodeError {
        DecodeError::Corrupt { at: self.at, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or(DecodeError::Truncated(self.at))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.corrupt("varint longer than 64 bits"))
    }

    /// A count of items that each take at least one byte: bounded by the bytes left.
    fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        if n > (self.bytes.len() - self.at) as u64 {
            return Err(self.corrupt("count larger than the remaining bytes"));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let n = self.count()?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.corrupt("string is not UTF-8"))
    }

    fn front(&mut self, prev: &mut Vec<u8>) -> Result<String, DecodeError> {
        let shared = self.varint()?;
        if shared > prev.len() as u64 {
            return Err(self.corrupt("shared prefix longer than the previous string"));
        }
        let n = self.count()?;
        let suffix = self.take(n)?;
        prev.truncate(shared as usize);
        prev.extend_from_slice(suffix);
        String::from_utf8(prev.clone()).map_err(|_| self.corrupt("string is not UTF-8"))
    }

    fn rules(
        &mut self,
        origins: &[RuleOrigin],
        prev: &mut Vec<u8>,
    ) -> Result<Vec<Rule>, DecodeError> {
        let n = self.count()?;
        let mut rules: Vec<Rule> = Vec::with_capacity(n);
        for _ in 0..n {
            let origin = u32::try_from(self.varint()?).map_err(|_| self.corrupt("origin"))?;
            let o = origins
                .get(origin as usize)
                .ok_or_else(|| self.corrupt("origin index out of range"))?;
            let pattern = self.front(prev)?;
            check_pattern(&pattern, o)?;
            let rule = Rule { pattern, origin };
            if rules.last().is_some_and(|p| *p >= rule) {
                return Err(self.corrupt("rules not in canonical order"));
            }
            rules.push(rule);
        }
        Ok(rules)
    }
}
