//! The revoked set: serials of revoked certificates with their expiry. The broker rejects
//! CONNECTs from these serials; an entry is pruned once its certificate has expired, because
//! an expired certificate is refused anyway.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::clock::{from_unix_seconds, unix_seconds};
use super::Serial;

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokedEntry {
    /// The certificate's `notAfter`, Unix seconds (the entry is pruned after it).
    pub not_after: i64,
    /// When it was revoked, Unix seconds (the CRL's revocationDate).
    pub revoked_at: i64,
    /// The device id, for humans reading the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

/// Revoked serials, sorted; serializes to byte-stable JSON (`{"serials": {"<hex>": {...}}}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedSet {
    serials: BTreeMap<Serial, RevokedEntry>,
}

impl RevokedSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a revoked certificate. Revoking twice keeps the first revocation time.
    /// Returns true when the serial was new.
    pub fn revoke(
        &mut self,
        serial: Serial,
        not_after: SystemTime,
        revoked_at: SystemTime,
        device_id: Option<&str>,
    ) -> bool {
        if self.serials.contains_key(&serial) {
            return false;
        }
        self.serials.insert(
            serial,
            RevokedEntry {
                not_after: unix_seconds(not_after),
                revoked_at: unix_seconds(revoked_at),
                device_id: device_id.map(str::to_string),
            },
        );
        true
    }

    /// True when `serial` is revoked.
    pub fn contains(&self, serial: Serial) -> bool {
        self.serials.contains_key(&serial)
    }

    /// Removes entries whose certificate expired before `now`; returns the removed serials.
    pub fn prune(&mut self, now: SystemTime) -> Vec<Serial> {
        let now = unix_seconds(now);
        let expired: Vec<Serial> = self
            .serials
            .iter()
            .filter(|(_, e)| e.not_after < now)
            .map(|(s, _)| *s)
            .collect();
        for s in &expired {
            self.serials.remove(s);
        }
        expired
    }

    /// Entries in serial order.
    pub fn iter(&self) -> impl Iterator<Item = (Serial, &RevokedEntry)> {
        self.serials.iter().map(|(s, e)| (*s, e))
    }

    /// Entries still unexpired at `now` (what the CRL lists).
    pub fn live_at(&self, now: SystemTime) -> impl Iterator<Item = (Serial, &RevokedEntry)> {
        let now = unix_seconds(now);
        self.iter().filter(move |(_, e)| e.not_after >= now)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.serials.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.serials.is_empty()
    }

    /// The earliest expiry among entries: when the next prune will change something.
    pub fn next_expiry(&self) -> Option<SystemTime> {
        self.serials
            .values()
            .map(|e| e.not_after)
            .min()
            .map(from_unix_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn revoke_contains_prune() {
        let mut set = RevokedSet::new();
        assert!(set.revoke(Serial::from_u128(3), at(300), at(10), Some("c")));
        assert!(set.revoke(Serial::from_u128(1), at(100), at(10), Some("a")));
        assert!(set.revoke(Serial::from_u128(2), at(200), at(10), None));
        assert!(!set.revoke(Serial::from_u128(2), at(200), at(99), None));
        assert_eq!(
            set.iter()
                .find(|(s, _)| *s == Serial::from_u128(2))
                .unwrap()
                .1
                .revoked_at,
            10
        );
        assert!(set.contains(Serial::from_u128(1)));
        assert_eq!(set.next_expiry(), Some(at(100)));
        assert_eq!(set.live_at(at(150)).count(), 2);
        assert_eq!(
            set.prune(at(100)),
            vec![],
            "still valid at its notAfter second"
        );
        assert_eq!(
            set.prune(at(250)),
            vec![Serial::from_u128(1), Serial::from_u128(2)]
        );
        assert_eq!(set.len(), 1);
        assert!(!set.contains(Serial::from_u128(1)));
    }

    #[test]
    fn json_is_sorted_and_round_trips() {
        let mut set = RevokedSet::new();
        set.revoke(Serial::from_u128(0xff), at(300), at(10), Some("b"));
        set.revoke(Serial::from_u128(0x01), at(300), at(10), None);
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(
            json,
            r#"{"serials":{"00000000000000000000000000000001":{"notAfter":300,"revokedAt":10},"000000000000000000000000000000ff":{"notAfter":300,"revokedAt":10,"deviceId":"b"}}}"#
        );
        assert_eq!(serde_json::from_str::<RevokedSet>(&json).unwrap(), set);
    }
}
