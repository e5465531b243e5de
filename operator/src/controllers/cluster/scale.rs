//! Scale-down guard: the raft voter set must shrink before the StatefulSet does.
//!
//! rmqtt-raft never forgets a voter by itself. If the StatefulSet simply drops pods 3 and 4 of a
//! 5-node cluster, the voter set stays at 5 and the next rolling restart leaves 2 of 5 voters:
//! no quorum, the restarted pod cannot join. So, while the running StatefulSet has more replicas
//! than desired, the controller asks a remaining ready node (`POST /v1/raft/remove`, push token)
//! to remove the departing raft ids (`ordinal + 1` for ordinals `desired..current`), confirms from
//! the remaining nodes' `/readyz` `raftVoters`, and only then applies the smaller StatefulSet.
//! Until confirmed the whole StatefulSet (replicas and pod template) stays as it is and the
//! cluster is looked at again within [`SCALE_DOWN_RETRY`]. The decision is [`decide`] (pure).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crds::cluster::MqttClusterStatus;
use crds::condition::{condition, upsert, Time, PROGRESSING};
use hyper::{Method, StatusCode};

use super::push::{exchange, PushOptions, PushToken};
use crate::render::names::Names;

/// How soon a held scale-down is looked at again.
pub const SCALE_DOWN_RETRY: Duration = Duration::from_secs(2);

/// `Progressing` reason while departing voters are being removed.
pub const REASON_SCALING_DOWN: &str = "ScalingDown";

/// Path of the broker's member-removal endpoint.
const REMOVE_PATH: &str = "/v1/raft/remove";

/// One removal request can take the broker up to 10 s (leader search and commit).
const REMOVE_TIMEOUT: Duration = Duration::from_secs(12);

/// What to do with the StatefulSet this reconcile (pure result of [`decide`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScaleStep {
    /// Not a scale-down (or no StatefulSet yet): apply as built.
    Apply,
    /// A scale-down whose departing voters are confirmed gone: apply as built.
    Confirmed,
    /// Keep the StatefulSet unchanged; remove these raft ids (ascending) first.
    Remove {
        /// Raft ids of the departing pods.
        ids: Vec<u64>,
    },
}

impl ScaleStep {
    /// True when the StatefulSet may be applied.
    pub fn may_apply(&self) -> bool {
        !matches!(self, ScaleStep::Remove { .. })
    }
}

/// Decides the scale-down step (pure). `current`: replicas of the running StatefulSet;
/// `desired`: replicas of the spec; `voters`: what each remaining ordinal (`0..desired`) reports
/// as `raftVoters` (`None`: unreachable or unknown). Confirmed when a majority of the remaining
/// nodes answer and every answer is at most `desired`.
pub fn decide(
    current: Option<i32>,
    desired: i32,
    voters: &BTreeMap<i32, Option<u64>>,
) -> ScaleStep {
    let Some(current) = current else {
        return ScaleStep::Apply;
    };
    if current <= desired || desired < 1 {
        return ScaleStep::Apply;
    }
    let wanted = u64::try_from(desired).unwrap_or(0);
    let answers: Vec<u64> = (0..desired)
        .filter_map(|n| voters.get(&n).copied().flatten())
        .filter(|v| *v > 0)
        .collect();
    let majority = usize::try_from(desired / 2 + 1).unwrap_or(usize::MAX);
    if answers.len() >= majority && answers.iter().all(|v| *v <= wanted) {
        return ScaleStep::Confirmed;
    }
    ScaleStep::Remove {
        ids: (desired..current)
            .filter_map(|n| u64::try_from(n + 1).ok())
            .collect(),
    }
}

/// The `raftVoters` a `/readyz` body reports (0 or absent = unknown).
pub fn voters_from_readyz(body: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get("raftVoters")?
        .as_u64()
        .filter(|v| *v > 0)
}

/// Marks the status as scaling down (`Progressing=True`, reason `ScalingDown`).
pub fn mark_scaling_down(
    status: &mut MqttClusterStatus,
    step: &ScaleStep,
    generation: Option<i64>,
    now: Time,
) {
    if let ScaleStep::Remove { ids } = step {
        upsert(
            &mut status.conditions,
            condition(
                PROGRESSING,
                true,
                REASON_SCALING_DOWN,
                format!("removing raft voters {ids:?} before the StatefulSet shrinks"),
                generation,
                now,
            ),
        );
    }
}

async fn voters_of(
    nodes: &BTreeMap<String, SocketAddr>,
    names: &Names,
    desired: i32,
    options: &PushOptions,
) -> BTreeMap<i32, Option<u64>> {
    let mut out = BTreeMap::new();
    for n in 0..desired {
        let voters = match nodes.get(&names.pod(n)) {
            Some(addr) => exchange(
                *addr,
                Method::GET,
                "/readyz",
                None,
                Vec::new(),
                options.timeout,
            )
            .await
            .ok()
            .and_then(|(_, body)| voters_from_readyz(&body)),
            None => None,
        };
        out.insert(n, voters);
    }
    out
}

/// Asks `addr` to remove raft voter `id`. Errors are logged (the next reconcile retries).
async fn remove(addr: SocketAddr, id: u64, token: &PushToken) -> bool {
    let body = serde_json::json!({ "id": id }).to_string().into_bytes();
    match exchange(
        addr,
        Method::POST,
        REMOVE_PATH,
        Some(token),
        body,
        REMOVE_TIMEOUT,
    )
    .await
    {
        Ok((StatusCode::OK, _)) => true,
        Ok((status, body)) => {
            tracing::info!(node = %addr, id, status = status.as_u16(), body = %String::from_utf8_lossy(&body), "raft member removal refused");
            false
        }
        Err(e) => {
            tracing::info!(node = %addr, id, error = %e, "raft member removal failed");
            false
        }
    }
}

/// Runs the guard for one reconcile: decides, removes the departing voters through a remaining
/// node, confirms. Returns the final step ([`ScaleStep::may_apply`] says whether the
/// StatefulSet may be applied now).
pub async fn guard(
    current: Option<i32>,
    desired: i32,
    nodes: &BTreeMap<String, SocketAddr>,
    names: &Names,
    token: &PushToken,
) -> ScaleStep {
    if decide(current, desired, &BTreeMap::new()) == ScaleStep::Apply {
        return ScaleStep::Apply;
    }
    let options = PushOptions::default();
    let voters = voters_of(nodes, names, desired, &options).await;
    let step = decide(current, desired, &voters);
    let ScaleStep::Remove { ids } = &step else {
        return step;
    };
    // Ask the first remaining node that answered (it is running and reachable).
    let Some(via) = voters
        .iter()
        .find(|(_, v)| v.is_some())
        .and_then(|(n, _)| nodes.get(&names.pod(*n)))
    else {
        tracing::info!(
            ?ids,
            "scale-down held: no remaining core node answers /readyz"
        );
        return step;
    };
    // The highest ids first: they are the last pods, so a partial run leaves a prefix.
    for id in ids.iter().rev() {
        if !remove(*via, *id, token).await {
            return step;
        }
    }
    let voters = voters_of(nodes, names, desired, &options).await;
    let after = decide(current, desired, &voters);
    tracing::info!(
        ?ids,
        ?voters,
        confirmed = after.may_apply(),
        "raft voters removed before scale-down"
    );
    after
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reports(v: &[Option<u64>]) -> BTreeMap<i32, Option<u64>> {
        v.iter()
            .enumerate()
            .map(|(n, v)| (i32::try_from(n).unwrap(), *v))
            .collect()
    }

    #[test]
    fn no_statefulset_or_no_scale_down_applies() {
        let none = BTreeMap::new();
        assert_eq!(decide(None, 3, &none), ScaleStep::Apply);
        assert_eq!(decide(Some(3), 3, &none), ScaleStep::Apply);
        assert_eq!(decide(Some(3), 5, &none), ScaleStep::Apply);
    }

    #[test]
    fn a_scale_down_removes_the_departing_ids_first() {
        let step = decide(Some(5), 3, &reports(&[Some(5), Some(5), Some(5)]));
        assert_eq!(step, ScaleStep::Remove { ids: vec![4, 5] });
        assert!(!step.may_apply());
        assert_eq!(
            decide(Some(5), 3, &BTreeMap::new()),
            ScaleStep::Remove { ids: vec![4, 5] }
        );
    }

    #[test]
    fn confirmed_once_a_majority_of_the_remaining_report_the_smaller_set() {
        assert_eq!(
            decide(Some(5), 3, &reports(&[Some(3), Some(3), Some(3)])),
            ScaleStep::Confirmed
        );
        // One node unreachable: two of three is a majority.
        assert_eq!(
            decide(Some(5), 3, &reports(&[Some(3), None, Some(3)])),
            ScaleStep::Confirmed
        );
        // Only one answer: not enough.
        assert!(!decide(Some(5), 3, &reports(&[Some(3), None, None])).may_apply());
        // One node still sees 4 voters (it has not applied the change yet).
        assert!(!decide(Some(5), 3, &reports(&[Some(3), Some(4), Some(3)])).may_apply());
        // Reports of departing ordinals do not count.
        assert!(!decide(
            Some(5),
            3,
            &reports(&[None, None, Some(3), Some(3), Some(3)])
        )
        .may_apply());
    }

    #[test]
    fn scaling_to_one_node_needs_its_own_answer() {
        assert_eq!(
            decide(Some(3), 1, &reports(&[None])),
            ScaleStep::Remove { ids: vec![2, 3] }
        );
        assert_eq!(
            decide(Some(3), 1, &reports(&[Some(1)])),
            ScaleStep::Confirmed
        );
    }

    #[test]
    fn readyz_voters_are_read_and_zero_means_unknown() {
        assert_eq!(
            voters_from_readyz(br#"{"ready":true,"raftVoters":3}"#),
            Some(3)
        );
        assert_eq!(
            voters_from_readyz(br#"{"ready":true,"raftVoters":0}"#),
            None
        );
        assert_eq!(voters_from_readyz(br#"{"ready":true}"#), None);
        assert_eq!(voters_from_readyz(b"not json"), None);
    }

    #[test]
    fn held_scale_down_sets_progressing_scaling_down() {
        let mut status = MqttClusterStatus::default();
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        mark_scaling_down(&mut status, &ScaleStep::Confirmed, Some(2), now.clone());
        assert!(status.conditions.is_empty());
        mark_scaling_down(
            &mut status,
            &ScaleStep::Remove { ids: vec![4, 5] },
            Some(2),
            now,
        );
        let c = crds::condition::find(&status.conditions, PROGRESSING).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "ScalingDown")
        );
    }
}
