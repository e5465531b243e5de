//! MQTT topic grammar (MQTT 3.1.1 §4.7, MQTT 5 §4.7-4.8): names, filters, shared subscriptions,
//! matching a name against a filter and deciding whether one filter covers another.
//!
//! Everything here is pure and allocation-free except where noted; the operator, `check` and the
//! broker all use these functions so they agree on what a topic means.

/// The longest topic the MQTT wire format can carry (a two-byte length prefix).
pub const MAX_TOPIC_BYTES: usize = 65_535;

/// The prefix of an MQTT 5 shared subscription: `$share/<group>/<filter>`.
pub const SHARE_PREFIX: &str = "$share/";

/// Why a string is not a valid topic name or filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic must not be empty")]
    Empty,
    #[error("topic is {0} bytes, longer than the MQTT limit of 65535")]
    TooLong(usize),
    #[error("topic is not valid UTF-8")]
    NotUtf8,
    #[error("topic must not contain the NUL character")]
    Nul,
    #[error("topic name (publish) must not contain the wildcards '+' or '#'")]
    WildcardInName,
    #[error("'#' must be the last level of a filter")]
    HashNotLast,
    #[error("'#' must occupy a whole level (e.g. 'a/#', not 'a/b#')")]
    HashNotAlone,
    #[error("'+' must occupy a whole level (e.g. 'a/+/c', not 'a/b+/c')")]
    PlusNotAlone,
    #[error("shared subscription must have the form '$share/<group>/<filter>'")]
    SharedMalformed,
    #[error("shared subscription group must be non-empty and must not contain '/', '+' or '#'")]
    SharedGroupInvalid,
}

/// Validates raw bytes from the wire as a topic name (UTF-8 first, then the name grammar).
pub fn topic_name_from_bytes(bytes: &[u8]) -> Result<&str, TopicError> {
    let s = std::str::from_utf8(bytes).map_err(|_| TopicError::NotUtf8)?;
    validate_topic_name(s)?;
    Ok(s)
}

/// Validates raw bytes from the wire as a topic filter (UTF-8 first, then the filter grammar).
pub fn topic_filter_from_bytes(bytes: &[u8]) -> Result<Filter<'_>, TopicError> {
    let s = std::str::from_utf8(bytes).map_err(|_| TopicError::NotUtf8)?;
    parse_filter(s)
}

fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong(s.len()));
    }
    if s.contains('\0') {
        return Err(TopicError::Nul);
    }
    Ok(())
}

/// A topic name, as used in PUBLISH: non-empty, ≤ 65535 bytes, no NUL, no wildcards.
pub fn validate_topic_name(s: &str) -> Result<(), TopicError> {
    check_common(s)?;
    if s.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// The level grammar of a (non-shared) filter: `#` only as the whole last level, `+` only as a
/// whole level.
pub fn validate_plain_filter(s: &str) -> Result<(), TopicError> {
    check_common(s)?;
    let mut levels = s.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') {
            if level != "#" {
                return Err(TopicError::HashNotAlone);
            }
            if levels.peek().is_some() {
                return Err(TopicError::HashNotLast);
            }
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::PlusNotAlone);
        }
    }
    Ok(())
}

/// A parsed subscription filter: the optional shared-subscription group and the filter proper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filter<'a> {
    /// The group of a `$share/<group>/<filter>` subscription, if any.
    pub share_group: Option<&'a str>,
    /// The filter that decides which topics match (without the `$share/<group>/` prefix).
    pub filter: &'a str,
}

/// Parses and validates a subscription filter, including the `$share/<group>/<filter>` form.
pub fn parse_filter(s: &str) -> Result<Filter<'_>, TopicError> {
    check_common(s)?;
    if let Some(rest) = s.strip_prefix(SHARE_PREFIX) {
        let (group, filter) = rest.split_once('/').ok_or(TopicError::SharedMalformed)?;
        if group.is_empty() || group.contains(['+', '#']) {
            return Err(TopicError::SharedGroupInvalid);
        }
        if filter.is_empty() {
            return Err(TopicError::SharedMalformed);
        }
        validate_plain_filter(filter)?;
        return Ok(Filter {
            share_group: Some(group),
            filter,
        });
    }
    if s == "$share" {
        return Err(TopicError::SharedMalformed);
    }
    validate_plain_filter(s)?;
    Ok(Filter {
        share_group: None,
        filter: s,
    })
}

/// Validates a subscription filter (shared or not).
pub fn validate_topic_filter(s: &str) -> Result<(), TopicError> {
    parse_filter(s).map(|_| ())
}

/// True when `filter` has a wildcard level.
pub fn has_wildcard(filter: &str) -> bool {
    filter.split('/').any(|l| l == "+" || l == "#")
}

/// Does the (valid, non-shared) `filter` match the (valid) topic `name`?
///
/// Follows MQTT §4.7.2: a wildcard in the first level does not match a topic whose first level
/// starts with `$` (so `#` does not match `$SYS/uptime`).
pub fn filter_matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut n = name.split('/');
    loop {
        match (f.next(), n.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(nl)) if fl == nl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Is every topic matched by filter `inner` also matched by filter `outer`?
///
/// Both are valid, non-shared filters. `devices/d1/#` covers `devices/d1/+/temp` but neither
/// `devices/#` nor `#`. A wildcard in `outer`'s first level never covers a `$`-topic literal.
pub fn filter_covers(outer: &str, inner: &str) -> bool {
    let inner_dollar = inner.starts_with('$');
    if inner_dollar && (outer.starts_with('+') || outer.starts_with('#')) {
        return false;
    }
    let mut o = outer.split('/');
    let mut i = inner.split('/');
    loop {
        match (o.next(), i.next()) {
            // `#` matches the parent level and everything below: covers whatever is left.
            (Some("#"), _) => return true,
            // `+` covers a single level: a literal or another `+`, but not `#`.
            (Some("+"), Some(il)) if il != "#" => {}
            (Some(ol), Some(il)) if ol != "+" && ol == il => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Can one topic name match both (valid, non-shared) filters `a` and `b`?
///
/// Used for deny rules on SUBSCRIBE: a subscription is refused when it could deliver a topic a
/// deny pattern names. `a/#` and `a/secret` intersect; `a/+` and `b/#` do not; `#` and `$SYS/#`
/// do not (a wildcard first level never matches a `$`-topic).
pub fn filters_intersect(a: &str, b: &str) -> bool {
    let first_wild = |f: &str| f.starts_with('+') || f.starts_with('#');
    if (first_wild(a) && b.starts_with('$')) || (first_wild(b) && a.starts_with('$')) {
        return false;
    }
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            // `#` matches the parent level and everything below: whatever the other has left.
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(l), Some(r)) if l == r => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_topic_name("a/b/c").is_ok());
        assert!(validate_topic_name("/").is_ok());
        assert!(validate_topic_name("$SYS/x").is_ok());
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a/#"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::Nul));
        let long = "a".repeat(MAX_TOPIC_BYTES + 1);
        assert_eq!(
            validate_topic_name(&long),
            Err(TopicError::TooLong(MAX_TOPIC_BYTES + 1))
        );
        assert!(validate_topic_name(&"a".repeat(MAX_TOPIC_BYTES)).is_ok());
        assert_eq!(topic_name_from_bytes(b"a\xffb"), Err(TopicError::NotUtf8));
    }

    #[test]
    fn filters() {
        for ok in ["#", "+", "a/#", "a/+/c", "+/+", "/#", "a//b", "$SYS/#"] {
            assert!(validate_topic_filter(ok).is_ok(), "{ok}");
        }
        assert_eq!(validate_topic_filter("a/#/b"), Err(TopicError::HashNotLast));
        assert_eq!(validate_topic_filter("a/b#"), Err(TopicError::HashNotAlone));
        assert_eq!(
            validate_topic_filter("a/b+/c"),
            Err(TopicError::PlusNotAlone)
        );
        assert_eq!(validate_topic_filter("++"), Err(TopicError::PlusNotAlone));
        assert_eq!(validate_topic_filter("##"), Err(TopicError::HashNotAlone));
    }

    #[test]
    fn shared() {
        let f = parse_filter("$share/g1/a/+/c").unwrap();
        assert_eq!(f.share_group, Some("g1"));
        assert_eq!(f.filter, "a/+/c");
        assert_eq!(parse_filter("$share/g1"), Err(TopicError::SharedMalformed));
        assert_eq!(parse_filter("$share/g1/"), Err(TopicError::SharedMalformed));
        assert_eq!(
            parse_filter("$share//a"),
            Err(TopicError::SharedGroupInvalid)
        );
        assert_eq!(
            parse_filter("$share/g+/a"),
            Err(TopicError::SharedGroupInvalid)
        );
        assert_eq!(parse_filter("$share/g/a/#/b"), Err(TopicError::HashNotLast));
        assert_eq!(parse_filter("$share"), Err(TopicError::SharedMalformed));
    }

    #[test]
    fn matching() {
        assert!(filter_matches("a/+/c", "a/b/c"));
        assert!(!filter_matches("a/+/c", "a/b/d"));
        assert!(filter_matches("a/#", "a"));
        assert!(filter_matches("a/#", "a/b/c"));
        assert!(!filter_matches("a/+", "a"));
        assert!(filter_matches("#", "x/y"));
        assert!(!filter_matches("#", "$SYS/x"));
        assert!(!filter_matches("+/x", "$SYS/x"));
        assert!(filter_matches("$SYS/#", "$SYS/x"));
        assert!(filter_matches("+", ""));
        assert!(!filter_matches("a/b", "a/b/c"));
    }

    #[test]
    fn covering() {
        assert!(filter_covers("devices/d1/#", "devices/d1/+/temp"));
        assert!(filter_covers("devices/d1/#", "devices/d1/#"));
        assert!(filter_covers("devices/d1/#", "devices/d1"));
        assert!(!filter_covers("devices/d1/#", "devices/#"));
        assert!(!filter_covers("devices/d1/#", "#"));
        assert!(filter_covers("a/+/c", "a/b/c"));
        assert!(filter_covers("a/+/c", "a/+/c"));
        assert!(!filter_covers("a/b/c", "a/+/c"));
        assert!(!filter_covers("a/+", "a/#"));
        assert!(!filter_covers("a", "a/#"));
        assert!(filter_covers("#", "a/#"));
        assert!(!filter_covers("#", "$SYS/#"));
        assert!(filter_covers("$SYS/#", "$SYS/a"));
    }

    #[test]
    fn intersecting() {
        assert!(filters_intersect("a/#", "a/secret"));
        assert!(filters_intersect("a/secret", "a/#"));
        assert!(filters_intersect("a/+", "+/b"));
        assert!(filters_intersect("a", "a/#"));
        assert!(filters_intersect("a/#", "a"));
        assert!(!filters_intersect("a/+", "a"));
        assert!(!filters_intersect("a/+", "b/#"));
        assert!(!filters_intersect("#", "$SYS/#"));
        assert!(!filters_intersect("+/x", "$SYS/x"));
        assert!(filters_intersect("$SYS/#", "$SYS/x"));
        assert!(filters_intersect("#", "+"));
        assert!(!filters_intersect("a/b/c", "a/b"));
    }
}
