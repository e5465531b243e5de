//! TopicPolicy controller: validate and report `Accepted`. Compiling into the cluster's rule
//! set happens in the MqttCluster controller, which watches TopicPolicies.

use std::sync::Arc;

use crds::condition::{condition, upsert, Time, ACCEPTED, APPLIED, READY, REASON_INVALID};
use crds::policy::TopicPolicyStatus;
use crds::validate::{policy_warnings, validate_policy};
use crds::TopicPolicy;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use super::{Context, Error};

const KIND: &str = "TopicPolicy";

/// The status of `policy` given its validation problems (pure).
pub fn desired_status(policy: &TopicPolicy, problems: &[String], now: Time) -> TopicPolicyStatus {
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
        upsert(
            c,
            condition(
                APPLIED,
                false,
                "NotVerified",
                "compiled into the cluster's config ConfigMap; node acknowledgement not checked",
                gen,
                now.clone(),
            ),
        );
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
    let status = desired_status(&policy, &problems, now);
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

/// Runs the TopicPolicy controller until its watch ends.
pub async fn run(ctx: Arc<Context>) {
    let api = Api::<TopicPolicy>::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default())
        .shutdown_on_signal()
        .run(
            |obj, ctx| super::traced(KIND, obj, ctx, reconcile),
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
        let s = desired_status(&p, &problems, now);
        assert!(!is_true(&s.conditions, ACCEPTED));
        assert!(find(&s.conditions, READY)
            .unwrap()
            .message
            .contains("spec.rules[0].topics[0]"));
    }
}
