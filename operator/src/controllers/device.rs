//! DeviceIdentity controller. What holds today: validation (`Ready=False, reason=Invalid`
//! naming the field, plus an Event). Certificate issuance is not implemented yet: a valid
//! identity reports `Issued=False, reason=NotImplemented` rather than pretending.

use std::sync::Arc;

use crds::condition::{condition, upsert, Time, ISSUED, READY, REASON_INVALID};
use crds::device::DeviceIdentityStatus;
use crds::validate::validate_device;
use crds::DeviceIdentity;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use super::{Context, Error};

const KIND: &str = "DeviceIdentity";

/// The status of `device` given its validation problems (pure).
pub fn desired_status(
    device: &DeviceIdentity,
    problems: &[String],
    now: Time,
) -> DeviceIdentityStatus {
    let mut s = device.status.clone().unwrap_or_default();
    let gen = device.metadata.generation;
    s.observed_generation = gen;
    let c = &mut s.conditions;
    if problems.is_empty() {
        let msg = "certificate issuance is not implemented by this operator build yet";
        upsert(
            c,
            condition(ISSUED, false, "NotImplemented", msg, gen, now.clone()),
        );
        upsert(c, condition(READY, false, "NotIssued", msg, gen, now));
    } else {
        upsert(
            c,
            condition(READY, false, REASON_INVALID, problems.join("; "), gen, now),
        );
    }
    s
}

/// One reconcile of a DeviceIdentity.
pub async fn reconcile(device: Arc<DeviceIdentity>, ctx: Arc<Context>) -> Result<Action, Error> {
    let problems: Vec<String> = validate_device(&device.spec)
        .iter()
        .map(ToString::to_string)
        .collect();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = desired_status(&device, &problems, now);
    super::report_status(
        KIND,
        device.as_ref(),
        &ctx,
        device.status.as_ref(),
        &problems,
        &status,
    )
    .await
}

/// Runs the DeviceIdentity controller until its watch ends.
pub async fn run(ctx: Arc<Context>) {
    let api = Api::<DeviceIdentity>::all(ctx.client.clone());
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
