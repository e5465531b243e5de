//! Status conditions in the standard `metav1.Condition` shape, and the pure rule for updating
//! them: `lastTransitionTime` changes only when `status` flips.

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition type present on every kind: the object is valid and fully in effect.
pub const READY: &str = "Ready";
/// MqttCluster: a change is being rolled out.
pub const PROGRESSING: &str = "Progressing";
/// MqttCluster: running, but with fewer healthy nodes than desired.
pub const DEGRADED: &str = "Degraded";
/// MqttCluster: CAs and server certificates exist and are valid.
pub const CERTIFICATES_READY: &str = "CertificatesReady";
/// MqttCluster: every core node runs the current ACL revision.
pub const ACL_APPLIED: &str = "AclApplied";
/// MqttCluster: ServiceMonitor/PrometheusRule exist (or why not).
pub const MONITORING_READY: &str = "MonitoringReady";
/// DeviceIdentity: a certificate has been issued.
pub const ISSUED: &str = "Issued";
/// TopicPolicy: the policy is valid and part of the compiled rule set.
pub const ACCEPTED: &str = "Accepted";
/// TopicPolicy: every node runs an ACL revision containing this generation.
pub const APPLIED: &str = "Applied";
/// Bridge: the bridge is connected to its remote.
pub const CONNECTED: &str = "Connected";

/// The reason used for every condition set because the spec is invalid.
pub const REASON_INVALID: &str = "Invalid";

/// Builds a condition. `status` is `true`/`false`; `observed_generation` is the object's
/// `metadata.generation` the condition was computed from.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        last_transition_time: now,
        observed_generation,
    }
}

/// Inserts or replaces the condition of the same type, keeping the old `lastTransitionTime`
/// when the status did not change. Conditions stay sorted by type so status is byte-stable.
pub fn upsert(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition exists with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_changes_only_on_status_flip() {
        let mut cs = vec![];
        upsert(
            &mut cs,
            condition(READY, false, "Pending", "a", Some(1), t(10)),
        );
        upsert(
            &mut cs,
            condition(READY, false, "Pending", "b", Some(2), t(20)),
        );
        assert_eq!(cs[0].last_transition_time, t(10));
        assert_eq!(cs[0].message, "b");
        assert_eq!(cs[0].observed_generation, Some(2));
        upsert(&mut cs, condition(READY, true, "Ok", "c", Some(2), t(30)));
        assert_eq!(cs[0].last_transition_time, t(30));
        assert!(is_true(&cs, READY));
    }

    #[test]
    fn sorted_by_type() {
        let mut cs = vec![];
        upsert(&mut cs, condition(READY, true, "Ok", "", None, t(1)));
        upsert(&mut cs, condition(ACL_APPLIED, true, "Ok", "", None, t(1)));
        let types: Vec<_> = cs.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [ACL_APPLIED, READY]);
    }
}
