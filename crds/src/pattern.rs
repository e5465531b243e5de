//! Topic patterns of TopicPolicy rules: MQTT filters that may contain the placeholders
//! `${deviceId}` and `${label:<key>}`, expanded per matched identity.
//!
//! A placeholder may stand anywhere inside a level (`devices/${deviceId}/#`,
//! `site-${label:site}/+`). Expanded values must be non-empty and must not contain `/`, `+`, `#`
//! or NUL; a pattern whose placeholder has no such value for an identity does not apply to it.

use std::collections::BTreeMap;

use contract::topic::{self, TopicError};

/// One piece of a parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Literal text (may contain `/`, `+`, `#`).
    Literal(String),
    /// `${deviceId}`.
    DeviceId,
    /// `${label:<key>}`.
    Label(String),
}

/// A validated pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segments: Vec<Segment>,
}

/// Why a pattern is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("unterminated placeholder: '${{' without a closing '}}'")]
    Unterminated,
    #[error("unknown placeholder '${{{0}}}': use ${{deviceId}} or ${{label:<key>}}")]
    UnknownPlaceholder(String),
    #[error("invalid label key '{0}' in placeholder")]
    InvalidLabelKey(String),
    #[error(
        "rules apply to the filter inside '$share/<group>/'; write the filter without the prefix"
    )]
    SharedPrefix,
    #[error(transparent)]
    Topic(#[from] TopicError),
}

impl Pattern {
    /// Parses and validates a pattern: placeholders known, and the MQTT filter grammar holds
    /// with every placeholder replaced by a plain value.
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        if s.starts_with(topic::SHARE_PREFIX) {
            return Err(PatternError::SharedPrefix);
        }
        let mut segments = Vec::new();
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                segments.push(Segment::Literal(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or(PatternError::Unterminated)?;
            let name = &after[..end];
            segments.push(match name {
                "deviceId" => Segment::DeviceId,
                _ => match name.strip_prefix("label:") {
                    Some(key) if crate::validate::is_label_key(key) => {
                        Segment::Label(key.to_string())
                    }
                    Some(key) => return Err(PatternError::InvalidLabelKey(key.to_string())),
                    None => return Err(PatternError::UnknownPlaceholder(name.to_string())),
                },
            });
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Literal(rest.to_string()));
        }
        let pattern = Pattern { segments };
        // Grammar check with a stand-in value for every placeholder; length on the raw text.
        if s.len() > topic::MAX_TOPIC_BYTES {
            return Err(TopicError::TooLong(s.len()).into());
        }
        topic::validate_plain_filter(&pattern.render(|_| Some("x")).unwrap_or_default())?;
        Ok(pattern)
    }

    /// True when the pattern has a placeholder.
    pub fn has_placeholders(&self) -> bool {
        self.segments
            .iter()
            .any(|s| !matches!(s, Segment::Literal(_)))
    }

    /// The parsed segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Label keys the pattern uses.
    pub fn label_keys(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Label(k) => Some(k.as_str()),
            _ => None,
        })
    }

    /// True when the pattern uses `${deviceId}`.
    pub fn uses_device_id(&self) -> bool {
        self.segments.contains(&Segment::DeviceId)
    }

    /// Expands the placeholders for one identity. `None` when a placeholder has no usable value
    /// (no device id, a missing label, or a value that is empty or contains `/`, `+`, `#`, NUL):
    /// the rule then does not apply to that identity.
    pub fn expand(
        &self,
        device_id: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> Option<String> {
        self.render(|seg| match seg {
            Segment::DeviceId => device_id,
            Segment::Label(k) => labels.get(k).map(String::as_str),
            Segment::Literal(_) => None,
        })
    }

    fn render<'a>(&'a self, value: impl Fn(&'a Segment) -> Option<&'a str>) -> Option<String> {
        let mut out = String::new();
        for seg in &self.segments {
            match seg {
                Segment::Literal(l) => out.push_str(l),
                other => {
                    let v = value(other)?;
                    if !is_expandable_value(v) {
                        return None;
                    }
                    out.push_str(v);
                }
            }
        }
        Some(out)
    }
}

/// A value that may be substituted into a topic level.
pub fn is_expandable_value(v: &str) -> bool {
    !v.is_empty() && !v.contains(['/', '+', '#', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_expands() {
        let p = Pattern::parse("sites/${label:site}/devices/${deviceId}/#").unwrap();
        assert!(p.has_placeholders());
        assert!(p.uses_device_id());
        assert_eq!(p.label_keys().collect::<Vec<_>>(), ["site"]);
        assert_eq!(
            p.expand(Some("d1"), &labels(&[("site", "lyon")]))
                .as_deref(),
            Some("sites/lyon/devices/d1/#")
        );
        assert_eq!(p.expand(Some("d1"), &labels(&[])), None);
        assert_eq!(p.expand(None, &labels(&[("site", "lyon")])), None);
        assert_eq!(p.expand(Some("d1"), &labels(&[("site", "a/b")])), None);
        assert_eq!(p.expand(Some("d1"), &labels(&[("site", "")])), None);
    }

    #[test]
    fn placeholder_inside_a_level() {
        let p = Pattern::parse("t/dev-${deviceId}-x").unwrap();
        assert_eq!(
            p.expand(Some("7"), &BTreeMap::new()).as_deref(),
            Some("t/dev-7-x")
        );
    }

    #[test]
    fn rejects_bad_patterns() {
        assert_eq!(
            Pattern::parse("a/${deviceId"),
            Err(PatternError::Unterminated)
        );
        assert!(matches!(
            Pattern::parse("a/${clientId}"),
            Err(PatternError::UnknownPlaceholder(_))
        ));
        assert!(matches!(
            Pattern::parse("a/${label:-bad}"),
            Err(PatternError::InvalidLabelKey(_))
        ));
        assert_eq!(
            Pattern::parse("a/#/${deviceId}"),
            Err(PatternError::Topic(TopicError::HashNotLast))
        );
        assert_eq!(
            Pattern::parse("a/${deviceId}+"),
            Err(PatternError::Topic(TopicError::PlusNotAlone))
        );
        assert_eq!(
            Pattern::parse("$share/g/a"),
            Err(PatternError::SharedPrefix)
        );
        assert_eq!(
            Pattern::parse(""),
            Err(PatternError::Topic(TopicError::Empty))
        );
    }
}
