//! Durations as written in specs: a sequence of `<integer><unit>` with units `d`, `h`, `m`, `s`
//! (`90d`, `2160h`, `1h30m`, `45s`). Kept deliberately small: no fractions, no months or years,
//! because certificate lifetimes must mean exactly one thing.

use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("duration must not be empty")]
    Empty,
    #[error(
        "'{0}' is not a duration: use <number><unit> with units d, h, m, s (e.g. 90d, 2160h, 30m)"
    )]
    Malformed(String),
    #[error("'{0}' is too large")]
    Overflow(String),
}

/// Parses `90d`, `2160h`, `1h30m`, `45s` into a [`Duration`].
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed(s.to_string());
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(malformed()),
        };
        if digits.is_empty() {
            return Err(malformed());
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| DurationError::Overflow(s.to_string()))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| DurationError::Overflow(s.to_string()))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(malformed());
    }
    Ok(Duration::from_secs(total))
}

/// Formats a duration in the largest unit that divides it exactly (`7776000s` → `90d`).
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    for (unit, name) in [(86_400, 'd'), (3_600, 'h'), (60, 'm')] {
        if s != 0 && s.is_multiple_of(unit) {
            return format!("{}{}", s / unit, name);
        }
    }
    format!("{s}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sequences() {
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(
            parse_duration("2160h"),
            Ok(Duration::from_secs(90 * 86_400))
        );
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "90", "d", "1x", "1.5h", "-1h", "h1", "1 h", "1y"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            parse_duration("99999999999999999999d"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn formats_in_largest_unit() {
        assert_eq!(format_duration(Duration::from_secs(90 * 86_400)), "90d");
        assert_eq!(format_duration(Duration::from_secs(5_400)), "90m");
        assert_eq!(format_duration(Duration::from_secs(61)), "61s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
