//! Leader election: the IO shell around [`crate::lease`]. Reads the `coordination.k8s.io/v1`
//! Lease, and creates or replaces it with optimistic concurrency (`resourceVersion`), so two
//! replicas racing for it cannot both win.
//!
//! [`Elector::acquire`] waits until this replica holds the Lease; [`Elector::keep`] renews it
//! and returns only when leadership is lost (the caller then stops the process, as
//! controller-runtime does); [`Elector::release`] frees it on a clean shutdown so a standby takes
//! over at once instead of after the Lease duration.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::Client;

use crate::lease::{self, Decision, Observer, Record};

/// Leader-election settings of `mqtt-operator run --leader-elect`.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    /// Name of the Lease.
    pub lease_name: String,
    /// Namespace of the Lease (the operator's own).
    pub lease_namespace: String,
    /// This replica's identity (`POD_NAME`, or hostname + pid).
    pub identity: String,
    /// `leaseDurationSeconds`: a silent holder loses the Lease after this long.
    pub lease_duration: Duration,
    /// The leader gives up when it could not renew for this long (< `lease_duration`).
    pub renew_deadline: Duration,
    /// Time between renewals, and between a follower's looks at the Lease.
    pub retry_period: Duration,
}

impl LeaderElection {
    /// The defaults (15 s Lease, renewal every 5 s, give up after 10 s without one), as
    /// controller-runtime's, for `lease_name` in `lease_namespace` held as `identity`.
    pub fn new(lease_name: &str, lease_namespace: &str, identity: &str) -> Self {
        Self {
            lease_name: lease_name.to_string(),
            lease_namespace: lease_namespace.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(5),
        }
    }
}

/// Why leadership ended or could not be sought.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// Another replica holds the Lease now.
    #[error("Lease {lease}: taken over by {holder:?}")]
    TakenOver {
        /// namespace/name of the Lease.
        lease: String,
        /// The new holder.
        holder: Option<String>,
    },
    /// Renewals failed for longer than the renew deadline.
    #[error("Lease {lease}: not renewed for {waited:?} (last error: {last_error})")]
    RenewDeadline {
        /// namespace/name of the Lease.
        lease: String,
        /// Time since the last successful renewal.
        waited: Duration,
        /// The last failure.
        last_error: String,
    },
}

/// Result of one attempt on the Lease.
enum Attempt {
    /// We hold the Lease (created, renewed or taken over).
    Held,
    /// Someone else holds it; look again after the delay.
    Follow(String, Duration),
}

/// Seeks and keeps one Lease for one identity.
pub struct Elector {
    api: Api<Lease>,
    config: LeaderElection,
    observer: Observer,
}

fn micro_now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

/// The part of a Lease the decision reads.
fn record(lease: &Lease) -> Record {
    let spec = lease.spec.clone().unwrap_or_default();
    Record {
        holder: spec.holder_identity,
        renew_time: spec.renew_time.map(|t| t.0.to_string()),
        transitions: spec.lease_transitions.unwrap_or(0),
        duration: Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
        ),
    }
}

impl Elector {
    /// An elector for `config` using `client`.
    pub fn new(client: Client, config: LeaderElection) -> Self {
        Self {
            api: Api::namespaced(client, &config.lease_namespace),
            config,
            observer: Observer::default(),
        }
    }

    fn lease_key(&self) -> String {
        format!("{}/{}", self.config.lease_namespace, self.config.lease_name)
    }

    fn spec_held(&self, previous: Option<&LeaseSpec>, take_over: bool) -> LeaseSpec {
        let now = micro_now();
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(seconds(self.config.lease_duration)),
            acquire_time: if take_over {
                Some(now.clone())
            } else {
                previous.and_then(|p| p.acquire_time.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if take_over {
                transitions.saturating_add(1)
            } else {
                transitions
            }),
            ..LeaseSpec::default()
        }
    }

    /// One look at the Lease, and the write the decision calls for. A conflict (another
    /// replica wrote first) is reported as following that replica.
    async fn attempt(&mut self) -> Result<Attempt, kube::Error> {
        let current = self.api.get_opt(&self.config.lease_name).await?;
        let now = Instant::now();
        let rec = current.as_ref().map(record);
        let unchanged = rec
            .as_ref()
            .map_or(Duration::ZERO, |r| self.observer.observe(r, now));
        let decision = lease::decide(
            rec.as_ref(),
            &self.config.identity,
            unchanged,
            self.config.retry_period,
        );
        let written = match (decision, current) {
            (Decision::Follow { holder, retry_in }, _) => {
                return Ok(Attempt::Follow(holder, retry_in));
            }
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.lease_name.clone()),
                        namespace: Some(self.config.lease_namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec_held(None, true)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (decision, Some(mut lease)) => {
                let take_over = decision == Decision::TakeOver;
                lease.spec = Some(self.spec_held(lease.spec.as_ref(), take_over));
                // `lease` carries the resourceVersion read above: a concurrent write makes this
                // replace fail with 409 Conflict instead of overwriting it.
                self.api
                    .replace(&self.config.lease_name, &PostParams::default(), &lease)
                    .await
            }
            (_, None) => unreachable!("only Create is decided without a Lease"),
        };
        match written {
            Ok(_) => {
                self.observer.reset();
                Ok(Attempt::Held)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Follow(
                "another replica (write conflict)".to_string(),
                self.config.retry_period,
            )),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the Lease. A standby replica waits here for as long as
    /// the leader lives; each look is one bounded API call, `retry_period` apart.
    pub async fn acquire(&mut self) {
        let mut following: Option<String> = None;
        loop {
            let attempt = tokio::time::timeout(self.config.renew_deadline, self.attempt()).await;
            let attempt = match attempt {
                Ok(a) => a.map_err(|e| e.to_string()),
                Err(_) => Err("Lease request timed out".to_string()),
            };
            match attempt {
                Ok(Attempt::Held) => {
                    tracing::info!(lease = %self.lease_key(), identity = %self.config.identity, "became the leader");
                    return;
                }
                Ok(Attempt::Follow(holder, retry_in)) => {
                    if following.as_deref() != Some(holder.as_str()) {
                        tracing::info!(lease = %self.lease_key(), %holder, "waiting for the Lease");
                        following = Some(holder);
                    }
                    tokio::time::sleep(retry_in).await;
                }
                Err(e) => {
                    tracing::warn!(lease = %self.lease_key(), error = %e, "reading the Lease failed");
                    tokio::time::sleep(self.config.retry_period).await;
                }
            }
        }
    }

    /// Renews the Lease every `retry_period`; returns when leadership is lost (another holder,
    /// or no successful renewal for `renew_deadline`).
    pub async fn keep(&mut self) -> ElectionError {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            let attempt = tokio::time::timeout(self.config.renew_deadline, self.attempt()).await;
            let last_error = match attempt {
                Ok(Ok(Attempt::Held)) => {
                    last_renewed = Instant::now();
                    continue;
                }
                Ok(Ok(Attempt::Follow(holder, _))) => {
                    return ElectionError::TakenOver {
                        lease: self.lease_key(),
                        holder: Some(holder),
                    }
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "renewal timed out".to_string(),
            };
            tracing::warn!(lease = %self.lease_key(), error = %last_error, "renewing the Lease failed");
            if lease::renewal_overdue(last_renewed, Instant::now(), self.config.renew_deadline) {
                return ElectionError::RenewDeadline {
                    lease: self.lease_key(),
                    waited: last_renewed.elapsed(),
                    last_error,
                };
            }
        }
    }

    /// Frees the Lease if this replica still holds it (clean shutdown): a standby takes over
    /// at its next look. Best effort: failures are logged.
    pub async fn release(&self) {
        let result = async {
            let Some(mut lease) = self.api.get_opt(&self.config.lease_name).await? else {
                return Ok(false);
            };
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
                return Ok(false);
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(micro_now());
            self.api
                .replace(&self.config.lease_name, &PostParams::default(), &lease)
                .await
                .map(|_| true)
        }
        .await;
        match result {
            Ok(true) => tracing::info!(lease = %self.lease_key(), "released the Lease"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(lease = %self.lease_key(), error = %e, "releasing the Lease failed")
            }
        }
    }
}

/// This replica's identity: `$POD_NAME` if set, else `<hostname>-<pid>`.
pub fn default_identity(pod_name: Option<String>, hostname: Option<String>, pid: u32) -> String {
    match pod_name.filter(|p| !p.is_empty()) {
        Some(p) => p,
        None => format!(
            "{}-{pid}",
            hostname
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "mqtt-operator".into())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_prefers_the_pod_name() {
        assert_eq!(
            default_identity(Some("op-0".into()), Some("h".into()), 7),
            "op-0"
        );
        assert_eq!(
            default_identity(Some(String::new()), Some("h".into()), 7),
            "h-7"
        );
        assert_eq!(default_identity(None, None, 7), "mqtt-operator-7");
    }

    #[test]
    fn record_reads_the_spec() {
        let lease = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some("a".into()),
                lease_duration_seconds: Some(15),
                lease_transitions: Some(2),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        let r = record(&lease);
        assert_eq!(r.holder.as_deref(), Some("a"));
        assert_eq!(r.duration, Duration::from_secs(15));
        assert_eq!(r.transitions, 2);
        assert!(record(&Lease::default()).is_free());
    }
}
