//! Building a canonical [`RuleSet`]: origins and expanded rules go in, in any order; a sorted,
//! de-duplicated set with a stable revision comes out.

use std::collections::HashMap;

use super::{
    codec, Effect, Rule, RuleOrigin, RuleSet, SubjectRules, SubjectState, MAX_PATTERN_LEVELS,
};
use crate::topic::{self, TopicError};

/// Why a rule set cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleSetError {
    /// A pattern is not a valid MQTT filter.
    #[error("{origin}: pattern '{pattern}': {source}")]
    InvalidPattern {
        /// The rule it came from.
        origin: String,
        /// The expanded pattern.
        pattern: String,
        /// The grammar violation.
        source: TopicError,
    },
    /// A pattern carries a `$share/<group>/` prefix (rules apply to the filter inside it).
    #[error("{origin}: pattern '{pattern}' must not start with '$share/'")]
    SharedPattern {
        /// The rule it came from.
        origin: String,
        /// The expanded pattern.
        pattern: String,
    },
    /// A pattern has more levels than [`MAX_PATTERN_LEVELS`].
    #[error("{origin}: pattern has {levels} levels, more than the limit of {MAX_PATTERN_LEVELS}")]
    TooDeep {
        /// The rule it came from.
        origin: String,
        /// Its level count.
        levels: usize,
    },
    /// An origin handle from another builder.
    #[error("rule origin {0} was not registered with this builder")]
    UnknownOrigin(usize),
}

/// A handle to an origin registered with a [`RuleSetBuilder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OriginId(usize);

/// Collects origins and expanded rules in any order; [`RuleSetBuilder::build`] canonicalizes.
#[derive(Debug)]
pub struct RuleSetBuilder {
    default_action: Effect,
    origins: Vec<RuleOrigin>,
    everyone: Vec<(String, usize)>,
    subjects: HashMap<String, (SubjectState, Vec<(String, usize)>)>,
}

impl RuleSetBuilder {
    /// An empty builder with the cluster's default action.
    pub fn new(default_action: Effect) -> Self {
        RuleSetBuilder {
            default_action,
            origins: Vec::new(),
            everyone: Vec::new(),
            subjects: HashMap::new(),
        }
    }

    /// Registers the origin of some rules (one rule of one policy).
    pub fn origin(&mut self, origin: RuleOrigin) -> OriginId {
        self.origins.push(origin);
        OriginId(self.origins.len() - 1)
    }

    /// Declares a subject. Declaring one twice keeps the more restrictive state (Revoked, then
    /// Suspended, then Active), so a blocked device stays blocked whatever else names it.
    pub fn subject(&mut self, name: &str, state: SubjectState) {
        match self.subjects.get_mut(name) {
            Some(entry) => entry.0 = entry.0.max(state),
            None => {
                self.subjects.insert(name.to_string(), (state, Vec::new()));
            }
        }
    }

    /// Adds an expanded rule for a subject (declaring it Active if it is new).
    pub fn rule(&mut self, subject: &str, origin: OriginId, pattern: String) {
        match self.subjects.get_mut(subject) {
            Some(entry) => entry.1.push((pattern, origin.0)),
            None => {
                self.subjects.insert(
                    subject.to_string(),
                    (SubjectState::Active, vec![(pattern, origin.0)]),
                );
            }
        }
    }

    /// Adds a rule for every username (except blocked subjects).
    pub fn everyone_rule(&mut self, origin: OriginId, pattern: String) {
        self.everyone.push((pattern, origin.0));
    }

    /// Validates every pattern, sorts and de-duplicates, and computes the revision.
    pub fn build(self) -> Result<RuleSet, RuleSetError> {
        let RuleSetBuilder {
            default_action,
            origins,
            everyone,
            subjects,
        } = self;
        // Canonical origin order; identical origins registered twice collapse into one.
        let mut order: Vec<usize> = (0..origins.len()).collect();
        order.sort_by(|a, b| origins[*a].cmp(&origins[*b]));
        let mut remap = vec![0u32; origins.len()];
        let mut sorted: Vec<RuleOrigin> = Vec::with_capacity(origins.len());
        for i in order {
            if sorted.last() != Some(&origins[i]) {
                sorted.push(origins[i].clone());
            }
            remap[i] = (sorted.len() - 1) as u32;
        }
        let canonical = |rules: Vec<(String, usize)>| -> Result<Vec<Rule>, RuleSetError> {
            let mut out = Vec::with_capacity(rules.len());
            for (pattern, o) in rules {
                let origin = *remap.get(o).ok_or(RuleSetError::UnknownOrigin(o))?;
                check_pattern(&pattern, &sorted[origin as usize])?;
                out.push(Rule { pattern, origin });
            }
            out.sort_unstable();
            out.dedup();
            Ok(out)
        };
        let everyone = canonical(everyone)?;
        let mut subject_rules = Vec::with_capacity(subjects.len());
        for (name, (state, rules)) in subjects {
            let rules = if state.is_blocked() {
                Vec::new()
            } else {
                canonical(rules)?
            };
            subject_rules.push(SubjectRules { name, state, rules });
        }
        subject_rules.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let mut set = RuleSet {
            default_action,
            origins: sorted,
            everyone,
            subjects: subject_rules,
            revision: String::new(),
        };
        set.revision = codec::revision_of(&set);
        Ok(set)
    }
}

/// A rule pattern: a valid, non-shared filter of at most [`MAX_PATTERN_LEVELS`] levels.
pub(crate) fn check_pattern(pattern: &str, origin: &RuleOrigin) -> Result<(), RuleSetError> {
    if pattern.starts_with(topic::SHARE_PREFIX) {
        return Err(RuleSetError::SharedPattern {
            origin: origin.to_string(),
            pattern: pattern.to_string(),
        });
    }
    topic::validate_plain_filter(pattern).map_err(|source| RuleSetError::InvalidPattern {
        origin: origin.to_string(),
        pattern: pattern.to_string(),
        source,
    })?;
    let levels = pattern.split('/').count();
    if levels > MAX_PATTERN_LEVELS {
        return Err(RuleSetError::TooDeep {
            origin: origin.to_string(),
            levels,
        });
    }
    Ok(())
}
