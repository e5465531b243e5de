//! Injected time. Pure functions take `now: SystemTime`; the controller gets it from a [`Clock`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

use super::PkiError;

/// A source of the current time.
pub trait Clock {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock stopped at one instant (tests, reproducible renders).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub SystemTime);

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        self.0
    }
}

/// How far before "now" a certificate's `notBefore` is set, so a device whose clock runs a few
/// minutes behind still accepts (and is accepted with) a certificate issued a moment ago.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);

/// A certificate validity window, whole seconds (X.509 time has no sub-second part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidityWindow {
    /// `notBefore`.
    pub not_before: SystemTime,
    /// `notAfter`.
    pub not_after: SystemTime,
}

impl ValidityWindow {
    /// `notBefore = now - CLOCK_SKEW_ALLOWANCE`, `notAfter = now + validity` (`now` truncated to
    /// the second). The skew allowance is not counted in the validity.
    pub fn starting_at(now: SystemTime, validity: Duration) -> Result<Self, PkiError> {
        if validity < Duration::from_secs(60) {
            return Err(PkiError::Validity(format!(
                "validity {validity:?} is shorter than one minute"
            )));
        }
        let now = truncate_to_second(now);
        let not_before = now
            .checked_sub(CLOCK_SKEW_ALLOWANCE)
            .ok_or_else(|| PkiError::Validity("now is before the epoch".into()))?;
        let not_after = now
            .checked_add(validity)
            .filter(|t| unix_seconds(*t) < 253_402_300_799) // 9999-12-31T23:59:59Z
            .ok_or_else(|| PkiError::Validity(format!("validity {validity:?} ends after 9999")))?;
        Ok(ValidityWindow {
            not_before,
            not_after,
        })
    }

    /// The validity the window was made for (`notAfter - notBefore - skew allowance`).
    pub fn nominal_validity(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
            .saturating_sub(CLOCK_SKEW_ALLOWANCE)
    }

    /// True when `now` is inside `[notBefore, notAfter]`.
    pub fn contains(&self, now: SystemTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// Seconds since the Unix epoch (negative before it).
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// The instant `secs` seconds after (or before, if negative) the Unix epoch.
pub fn from_unix_seconds(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

fn truncate_to_second(t: SystemTime) -> SystemTime {
    from_unix_seconds(unix_seconds(t))
}

pub(crate) fn to_offset(t: SystemTime) -> Result<OffsetDateTime, PkiError> {
    OffsetDateTime::from_unix_timestamp(unix_seconds(t))
        .map_err(|e| PkiError::Validity(format!("time out of range: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_truncates_backdates_and_reports_nominal_validity() {
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_750);
        let w = ValidityWindow::starting_at(now, Duration::from_secs(86_400)).unwrap();
        assert_eq!(unix_seconds(w.not_before), 1_700_000_000 - 300);
        assert_eq!(unix_seconds(w.not_after), 1_700_000_000 + 86_400);
        assert_eq!(w.nominal_validity(), Duration::from_secs(86_400));
        assert!(w.contains(now));
        assert!(!w.contains(w.not_after + Duration::from_secs(1)));
    }

    #[test]
    fn window_rejects_silly_validities() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert!(ValidityWindow::starting_at(now, Duration::from_secs(5)).is_err());
        assert!(
            ValidityWindow::starting_at(now, Duration::from_secs(400 * 365 * 86_400 * 25)).is_err()
        );
    }

    #[test]
    fn unix_seconds_round_trip_both_sides_of_the_epoch() {
        for s in [-86_400, -1, 0, 1, 1_700_000_000] {
            assert_eq!(unix_seconds(from_unix_seconds(s)), s);
        }
    }
}
