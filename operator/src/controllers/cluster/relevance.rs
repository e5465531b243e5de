//! Which DeviceIdentity watch events requeue the MqttCluster (pure).
//!
//! The cluster reconcile lists every identity of the namespace to compile the ACL and the
//! revoked set; at 10,000 identities that is its whole cost. Most identity events do not change
//! either (the DeviceIdentity controller's own status writes: conditions, fingerprint, renewal
//! time), so [`DeviceFilter`] lets through only events that change what the cluster reads.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use crds::DeviceIdentity;
use kube::runtime::watcher::Event;
use kube::ResourceExt;

use crate::controllers::Guarded;

/// Hash of everything of an identity the cluster reconcile reads (ACL compile and revoked set):
/// labels, cluster, deviceId, state, serials, and whether it is being deleted.
pub fn fingerprint(d: &DeviceIdentity) -> u64 {
    let mut h = DefaultHasher::new();
    d.metadata.labels.hash(&mut h);
    d.metadata.deletion_timestamp.is_some().hash(&mut h);
    d.spec.cluster_ref.name.hash(&mut h);
    d.spec.device_id.hash(&mut h);
    std::mem::discriminant(&d.spec.state).hash(&mut h);
    let status = d.status.as_ref();
    status.and_then(|s| s.serial.as_ref()).hash(&mut h);
    for p in status.iter().flat_map(|s| &s.previous_serials) {
        p.serial.hash(&mut h);
    }
    h.finish()
}

/// Identity of a watched object across delete and re-create: namespace, name, uid.
type Key = (Option<String>, String, Option<String>);

fn key<K: kube::Resource>(obj: &K) -> Key {
    let m = obj.meta();
    (m.namespace.clone(), obj.name_any(), m.uid.clone())
}

/// Remembers the [`fingerprint`] of every identity seen and drops events that leave it
/// unchanged. Deletions, (re)list starts and objects that do not decode always pass.
#[derive(Debug, Default)]
pub struct DeviceFilter {
    seen: HashMap<Key, u64>,
}

impl DeviceFilter {
    /// Whether `event` should reach the cluster controller; records what it saw.
    pub fn admit(&mut self, event: &Event<Guarded<DeviceIdentity>>) -> bool {
        match event {
            Event::Apply(g) | Event::InitApply(g) => match &g.0 {
                Ok(d) => self.seen.insert(key(d), fingerprint(d)) != Some(fingerprint(d)),
                Err(_) => true,
            },
            Event::Delete(g) => {
                self.seen.remove(&key(g));
                true
            }
            // A re-list: identities deleted meanwhile send no Delete, so forget everything; the
            // re-listed ones pass again (one reconcile of the cluster, as without the filter).
            Event::Init => {
                self.seen.clear();
                true
            }
            Event::InitDone => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::device::{DeviceIdentitySpec, DeviceIdentityStatus, DeviceState, PreviousSerial};

    fn device(name: &str, uid: &str) -> DeviceIdentity {
        let mut d = DeviceIdentity::new(
            name,
            DeviceIdentitySpec {
                cluster_ref: crds::reference::ClusterRef {
                    name: "prod".into(),
                },
                device_id: format!("id-{name}"),
                ..DeviceIdentitySpec::default()
            },
        );
        d.metadata.namespace = Some("ns".into());
        d.metadata.uid = Some(uid.into());
        d
    }

    fn apply(d: &DeviceIdentity) -> Event<Guarded<DeviceIdentity>> {
        Event::Apply(kube::core::DeserializeGuard(Ok(d.clone())))
    }

    #[test]
    fn status_writes_the_cluster_does_not_read_are_dropped() {
        let mut filter = DeviceFilter::default();
        let mut d = device("a", "u1");
        assert!(filter.admit(&apply(&d)), "first sight passes");
        assert!(!filter.admit(&apply(&d)), "an identical event is dropped");
        d.status = Some(DeviceIdentityStatus {
            fingerprint_sha256: Some("ab".into()),
            renewal_time: Some("2030-01-01T00:00:00Z".into()),
            ..DeviceIdentityStatus::default()
        });
        d.metadata.managed_fields = None;
        d.metadata.resource_version = Some("42".into());
        assert!(
            !filter.admit(&apply(&d)),
            "fingerprint and renewal time do not matter"
        );
    }

    #[test]
    fn every_field_the_cluster_reads_passes() {
        type Change = fn(&mut DeviceIdentity);
        let changes: Vec<(&str, Change)> = vec![
            ("labels", |d| {
                d.metadata.labels = Some([("site".to_string(), "lyon".to_string())].into());
            }),
            ("state", |d| d.spec.state = DeviceState::Revoked),
            ("deviceId", |d| d.spec.device_id = "other".into()),
            ("clusterRef", |d| d.spec.cluster_ref.name = "other".into()),
            ("serial", |d| {
                d.status.get_or_insert_with(Default::default).serial = Some("01".into());
            }),
            ("previous serials", |d| {
                d.status
                    .get_or_insert_with(Default::default)
                    .previous_serials
                    .push(PreviousSerial {
                        serial: "00".into(),
                        not_after: "2030-01-01T00:00:00Z".into(),
                    });
            }),
            ("deletion", |d| {
                d.metadata.deletion_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                    ));
            }),
        ];
        for (what, change) in changes {
            let mut filter = DeviceFilter::default();
            let mut d = device("a", "u1");
            assert!(filter.admit(&apply(&d)));
            change(&mut d);
            assert!(filter.admit(&apply(&d)), "a change of {what} passes");
            assert!(!filter.admit(&apply(&d)), "its repeat does not ({what})");
        }
    }

    #[test]
    fn deletions_relists_and_recreations_pass() {
        let mut filter = DeviceFilter::default();
        let d = device("a", "u1");
        assert!(filter.admit(&apply(&d)));
        assert!(filter.admit(&Event::Delete(kube::core::DeserializeGuard(Ok(d.clone())))));
        assert!(filter.admit(&apply(&d)), "seen again after its deletion");
        assert!(
            filter.admit(&apply(&device("a", "u2"))),
            "same name, new uid"
        );
        assert!(filter.admit(&Event::Init));
        assert!(
            filter.admit(&Event::InitApply(kube::core::DeserializeGuard(Ok(d)))),
            "a re-list passes every identity once"
        );
    }
}
