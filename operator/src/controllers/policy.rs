//! TopicPolicy controller: validate and report `Accepted`, and `Applied` once every core node
//! of the cluster runs a rule set containing the policy's current generation. Compiling and
//! pushing happen in the MqttCluster controller, which watches TopicPolicies; the cluster's
//! status lists the policy generations in its acknowledged `aclRevision`, and this controller
//! watches MqttClusters to re-evaluate their policies when that changes.

use std::sync::Arc;

use crds::cluster::MqttClusterStatus;
use crds::condition::{condition, upsert, Time, ACCEPTED, APPLIED, READY, REASON_INVALID};
use crds::policy::TopicPolicyStatus;
use crds::validate::{policy_warnings, validate_policy};
use crds::{MqttCluster, TopicPolicy};
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;

use super::{Context, Error};

const KIND: &str = "TopicPolicy";

/// The `Applied` condition of a valid policy: true when the cluster's acknowledged rule set
/// (`status.aclPolicies`) holds this generation.
fn applied_condition(
    policy: &TopicPolicy,
    cluster: Option<&MqttClusterStatus>,
    now: Time,
) -> crds::condition::Condition {
    let gen = policy.metadata.generation;
    let name = policy.metadata.name.as_deref().unwrap_or_default();
    let cluster_name = &policy.spec.cluster_ref.name;
    let Some(status) = cluster else {
        return condition(
            APPLIED,
            false,
            "ClusterNotFound",
            format!("MqttCluster {cluster_name} does not exist or has no status yet"),
            gen,
            now,
        );
    };
    let in_force = status
        .acl_policies
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.generation);
    let revision = status.acl_revision.as_deref().unwrap_or("-");
    match in_force {
        Some(g) if Some(g) == gen => condition(
            APPLIED,
            true,
            "Acknowledged",
            format!("every core node runs ACL revision {revision}, which contains generation {g}"),
            gen,
            now,
        ),
        Some(g) => condition(
            APPLIED,
            false,
            "Pending",
            format!(
                "every core node runs generation {g} (ACL revision {revision}); waiting for generation {}",
                gen.unwrap_or(0)
            ),
            gen,
            now,
        ),
        None => condition(
            APPLIED,
            false,
            "Pending",
            format!(
                "not in the rule set every core node runs (ACL revision {revision}); \
                 the cluster may still be pushing it, or acl.policySelector does not select it"
            ),
            gen,
            now,
        ),
    }
}

/// The status of `policy` given its validation problems and its cluster's status (pure).
pub fn desired_status(
    policy: &TopicPolicy,
    problems: &[String],
    cluster: Option<&MqttClusterStatus>,
    now: Time,
) -> TopicPolicyStatus {
    let mut s = policy.status.clone().unwrap_or_default();
    let gen = policy.metadata.generation;
    s.observed_generation = gen;
    s.warnings = policy_warnings(&policy.spec)
        .iter()
        .map(ToString::to_string)
        .collect();
    let c = &mut s.conditions;
    if problems.is_empty() {
        upsert(
            c,
            condition(
                ACCEPTED,
                true,
                "Valid",
                "the policy is valid",
                gen,
                now.clone(),
            ),
        );
        upsert(c, applied_condition(policy, cluster, now.clone()));
        upsert(
            c,
            condition(READY, true, "Accepted", "the policy is valid", gen, now),
        );
    } else {
        let message = problems.join("; ");
        upsert(
            c,
            condition(ACCEPTED, false, REASON_INVALID, &message, gen, now.clone()),
        );
        upsert(
            c,
            condition(
                APPLIED,
                false,
                REASON_INVALID,
                "this generation is invalid and is not compiled; the rules applied before stay in force",
                gen,
                now.clone(),
            ),
        );
        upsert(
            c,
            condition(READY, false, REASON_INVALID, message, gen, now),
        );
    }
    s
}

/// One reconcile of a TopicPolicy.
pub async fn reconcile(policy: Arc<TopicPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let problems: Vec<String> = validate_policy(&policy.spec)
        .iter()
        .map(ToString::to_string)
        .collect();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let cluster = match policy.namespace() {
        Some(ns) => Api::<MqttCluster>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&policy.spec.cluster_ref.name)
            .await
            .map_err(|source| super::Error::Read {
                what: format!("MqttCluster {}", policy.spec.cluster_ref.name),
                source,
            })?
            .and_then(|c| c.status),
        None => None,
    };
    let status = desired_status(&policy, &problems, cluster.as_ref(), now);
    super::report_status(
        KIND,
        policy.as_ref(),
        &ctx,
        policy.status.as_ref(),
        &problems,
        &status,
    )
    .await
}

/// Runs the TopicPolicy controller until its watches end. A change of an MqttCluster (its
/// acknowledged rule set) requeues the policies that reference it.
pub async fn run(ctx: Arc<Context>) {
    let api: Api<super::Guarded<TopicPolicy>> = ctx.watched();
    let controller = Controller::new(api, watcher::Config::default());
    let policies = controller.store();
    controller
        .watches(
            ctx.watched::<super::Guarded<MqttCluster>>(),
            watcher::Config::default(),
            move |cluster| {
                let Some(cluster) = super::decoded(cluster) else {
                    return Vec::new();
                };
                let ns = cluster.namespace();
                let name = cluster.name_any();
                policies
                    .state()
                    .into_iter()
                    .filter(|p| {
                        p.0.as_ref()
                            .is_ok_and(|p| p.namespace() == ns && p.spec.cluster_ref.name == name)
                    })
                    .map(|p| ObjectRef::from_obj(p.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(
            |obj, ctx| super::traced_guarded(KIND, obj, ctx, reconcile),
            |obj, err, ctx| super::on_error(KIND, obj.as_ref(), err, &ctx),
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::condition::{find, is_true};

    #[test]
    fn invalid_policy_is_not_accepted_and_names_the_field() {
        let p: TopicPolicy = serde_yaml::from_str(
            "apiVersion: mqtt.operator.dev/v1alpha1\nkind: TopicPolicy\nmetadata: {name: p, namespace: iot, generation: 1}\nspec: {clusterRef: {name: qs}, subjects: [{all: true}], rules: [{effect: allow, actions: [publish], topics: ['a/#/b']}]}\n",
        )
        .unwrap();
        let problems: Vec<String> = validate_policy(&p.spec)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(!problems.is_empty());
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap());
        let s = desired_status(&p, &problems, None, now);
        assert!(!is_true(&s.conditions, ACCEPTED));
        assert_eq!(find(&s.conditions, APPLIED).unwrap().reason, REASON_INVALID);
        assert!(find(&s.conditions, READY)
            .unwrap()
            .message
            .contains("spec.rules[0].topics[0]"));
    }

    #[test]
    fn applied_only_when_the_acknowledged_rule_set_holds_this_generation() {
        let p: TopicPolicy = serde_yaml::from_str(
            "apiVersion: mqtt.operator.dev/v1alpha1\nkind: TopicPolicy\nmetadata: {name: p, namespace: iot, generation: 3}\nspec: {clusterRef: {name: qs}, subjects: [{all: true}], rules: [{effect: allow, actions: [publish], topics: ['a/#']}]}\n",
        )
        .unwrap();
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap());
        let cluster = |generation: i64| MqttClusterStatus {
            acl_revision: Some("rev".into()),
            acl_policies: vec![crds::cluster::AclPolicyStatus {
                name: "p".into(),
                generation,
            }],
            ..MqttClusterStatus::default()
        };
        let applied = |s: &TopicPolicyStatus| find(&s.conditions, APPLIED).unwrap().clone();

        let none = desired_status(&p, &[], None, now.clone());
        assert_eq!(applied(&none).reason, "ClusterNotFound");
        let old = desired_status(&p, &[], Some(&cluster(2)), now.clone());
        assert_eq!(
            (applied(&old).status.as_str(), applied(&old).reason.as_str()),
            ("False", "Pending")
        );
        let other = MqttClusterStatus::default();
        assert!(!is_true(
            &desired_status(&p, &[], Some(&other), now.clone()).conditions,
            APPLIED
        ));
        let current = desired_status(&p, &[], Some(&cluster(3)), now);
        assert!(is_true(&current.conditions, APPLIED));
        assert!(applied(&current).message.contains("rev"));
        assert!(is_true(&current.conditions, ACCEPTED));
    }
}
