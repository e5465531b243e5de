//! Leader-election decisions on a `coordination.k8s.io/v1` Lease: pure logic, time passed in.
//!
//! As client-go's leader election does, expiry is judged on the **local** clock: a Lease held by
//! someone else is expired when this process has seen the same record (holder, renew time,
//! transitions) unchanged for a whole `leaseDurationSeconds`. Comparing the holder's `renewTime`
//! with our clock would make clock skew between nodes decide who leads.
//!
//! The IO shell that reads and writes the Lease is `controllers::election`.

use std::time::{Duration, Instant};

/// What was read from the Lease, reduced to what the decision needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `spec.holderIdentity` (`None` or empty: released).
    pub holder: Option<String>,
    /// `spec.renewTime` as written by the holder (opaque: only compared for change).
    pub renew_time: Option<String>,
    /// `spec.leaseTransitions`.
    pub transitions: i32,
    /// `spec.leaseDurationSeconds` as written by the holder.
    pub duration: Duration,
}

impl Record {
    /// Whether nobody holds the Lease (released, or never held).
    pub fn is_free(&self) -> bool {
        self.holder.as_deref().is_none_or(str::is_empty)
    }
}

/// What to do after reading the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists: create it, holding it.
    Create,
    /// We hold it: write a fresh `renewTime`.
    Renew,
    /// Free or expired: take it over (holder = us, `leaseTransitions` + 1).
    TakeOver,
    /// Someone else holds a live Lease: look again after `retry_in` (at most the time left
    /// before it would expire).
    Follow {
        /// The current holder.
        holder: String,
        /// When to look again.
        retry_in: Duration,
    },
}

/// Remembers when the Lease record last changed, on the local monotonic clock.
#[derive(Debug, Default, Clone)]
pub struct Observer {
    last: Option<(Record, Instant)>,
}

impl Observer {
    /// Records that `record` was read at `now`; returns for how long it has been unchanged.
    pub fn observe(&mut self, record: &Record, now: Instant) -> Duration {
        match &self.last {
            Some((seen, since)) if seen == record => now.saturating_duration_since(*since),
            _ => {
                self.last = Some((record.clone(), now));
                Duration::ZERO
            }
        }
    }

    /// Forgets the last record (after our own write changed it).
    pub fn reset(&mut self) {
        self.last = None;
    }
}

/// Decides what `me` does with the Lease `record` (`None`: it does not exist), which has been
/// unchanged for `unchanged_for`. `retry` bounds how long a follower waits between looks.
pub fn decide(
    record: Option<&Record>,
    me: &str,
    unchanged_for: Duration,
    retry: Duration,
) -> Decision {
    let Some(record) = record else {
        return Decision::Create;
    };
    if record.holder.as_deref() == Some(me) {
        return Decision::Renew;
    }
    if record.is_free() || unchanged_for >= record.duration {
        return Decision::TakeOver;
    }
    Decision::Follow {
        holder: record.holder.clone().unwrap_or_default(),
        retry_in: retry.min(record.duration - unchanged_for),
    }
}

/// Whether a leader whose last successful renewal was at `last_renewed` must consider the
/// Lease lost at `now`: others may take it over once `lease_duration` passed without a renewal,
/// so the leader gives up a little earlier, at `renew_deadline` (< `lease_duration`).
pub fn renewal_overdue(last_renewed: Instant, now: Instant, renew_deadline: Duration) -> bool {
    now.saturating_duration_since(last_renewed) >= renew_deadline
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);
    const RETRY: Duration = Duration::from_secs(2);

    fn held_by(holder: &str, renew: &str) -> Record {
        Record {
            holder: Some(holder.to_string()),
            renew_time: Some(renew.to_string()),
            transitions: 3,
            duration: LEASE,
        }
    }

    #[test]
    fn absent_lease_is_created() {
        assert_eq!(decide(None, "a", Duration::ZERO, RETRY), Decision::Create);
    }

    #[test]
    fn own_lease_is_renewed_even_when_it_looks_expired() {
        let r = held_by("a", "t1");
        assert_eq!(
            decide(Some(&r), "a", Duration::ZERO, RETRY),
            Decision::Renew
        );
        assert_eq!(decide(Some(&r), "a", LEASE * 2, RETRY), Decision::Renew);
    }

    #[test]
    fn live_lease_of_another_is_followed_with_a_bounded_retry() {
        let r = held_by("b", "t1");
        assert_eq!(
            decide(Some(&r), "a", Duration::ZERO, RETRY),
            Decision::Follow {
                holder: "b".into(),
                retry_in: RETRY
            }
        );
        // One second before expiry: look again in one second, not two.
        assert_eq!(
            decide(Some(&r), "a", LEASE - Duration::from_secs(1), RETRY),
            Decision::Follow {
                holder: "b".into(),
                retry_in: Duration::from_secs(1)
            }
        );
    }

    #[test]
    fn expired_or_released_lease_is_taken_over() {
        let r = held_by("b", "t1");
        assert_eq!(decide(Some(&r), "a", LEASE, RETRY), Decision::TakeOver);
        for holder in [None, Some(String::new())] {
            let free = Record {
                holder,
                ..r.clone()
            };
            assert_eq!(
                decide(Some(&free), "a", Duration::ZERO, RETRY),
                Decision::TakeOver
            );
        }
    }

    #[test]
    fn the_holder_duration_counts_not_ours() {
        let short = Record {
            duration: Duration::from_secs(3),
            ..held_by("b", "t1")
        };
        assert_eq!(
            decide(Some(&short), "a", Duration::from_secs(3), RETRY),
            Decision::TakeOver
        );
    }

    #[test]
    fn observer_measures_time_since_the_record_last_changed() {
        let t0 = Instant::now();
        let mut o = Observer::default();
        let r1 = held_by("b", "t1");
        assert_eq!(o.observe(&r1, t0), Duration::ZERO);
        assert_eq!(o.observe(&r1, t0 + LEASE), LEASE);
        // A renewal (new renewTime) restarts the clock: the holder is alive.
        let r2 = held_by("b", "t2");
        assert_eq!(o.observe(&r2, t0 + LEASE), Duration::ZERO);
        assert_eq!(
            o.observe(&r2, t0 + LEASE + Duration::from_secs(4)),
            Duration::from_secs(4)
        );
        o.reset();
        assert_eq!(o.observe(&r2, t0 + LEASE * 3), Duration::ZERO);
    }

    #[test]
    fn a_silent_holder_loses_the_lease_after_its_duration() {
        // Walk the local clock in 1 s steps while the holder never renews.
        let t0 = Instant::now();
        let mut o = Observer::default();
        let r = held_by("b", "t1");
        let first_takeover = (0..60u64)
            .find(|s| {
                let unchanged = o.observe(&r, t0 + Duration::from_secs(*s));
                decide(Some(&r), "a", unchanged, RETRY) == Decision::TakeOver
            })
            .expect("taken over within 60 s");
        assert_eq!(first_takeover, LEASE.as_secs());
    }

    #[test]
    fn renewal_deadline() {
        let t0 = Instant::now();
        let deadline = Duration::from_secs(10);
        assert!(!renewal_overdue(t0, t0 + Duration::from_secs(9), deadline));
        assert!(renewal_overdue(t0, t0 + deadline, deadline));
        // A clock reading before the last renewal is not overdue.
        assert!(!renewal_overdue(t0 + deadline, t0, deadline));
    }
}
