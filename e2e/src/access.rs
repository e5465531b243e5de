//! Asking the API server's authorizer what a ServiceAccount may do (SubjectAccessReview): the
//! real RBAC evaluation, without discovery, so resources whose CRDs are absent can be asked about.

use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::Client;

/// One request to authorize.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    /// The verb (`get`, `patch`, ...).
    pub verb: &'a str,
    /// The API group (`""` is core).
    pub group: &'a str,
    /// `resource` or `resource/subresource`.
    pub resource: &'a str,
    /// `None`: cluster-wide (all namespaces, or a cluster-scoped resource).
    pub namespace: Option<&'a str>,
}

/// A review failed or timed out.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The API call failed.
    #[error("SubjectAccessReview for {access}: {source}")]
    Api {
        /// The access asked about.
        access: String,
        /// The client error.
        source: Box<kube::Error>,
    },
    /// Still denied when the deadline passed.
    #[error("{subject} still denied {access} after {waited:?}")]
    StillDenied {
        /// The ServiceAccount.
        subject: String,
        /// The access asked about.
        access: String,
        /// How long it waited.
        waited: Duration,
    },
}

/// Whether ServiceAccount `sa_namespace/sa_name` may do `access`.
pub async fn allowed(
    client: &Client,
    sa_namespace: &str,
    sa_name: &str,
    access: Access<'_>,
) -> Result<bool, AccessError> {
    let (resource, subresource) = match access.resource.split_once('/') {
        Some((r, sub)) => (r, Some(sub.to_string())),
        None => (access.resource, None),
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{sa_namespace}:{sa_name}")),
            groups: Some(vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{sa_namespace}"),
                "system:authenticated".to_string(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(access.verb.to_string()),
                group: Some(access.group.to_string()),
                resource: Some(resource.to_string()),
                subresource,
                namespace: access.namespace.map(str::to_string),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(|source| AccessError::Api {
            access: format!("{access:?}"),
            source: Box::new(source),
        })?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Waits (up to `timeout`, polling every 100 ms) until `access` is allowed: RBAC objects just
/// written reach the authorizer through an informer, a moment later.
pub async fn wait_allowed(
    client: &Client,
    sa_namespace: &str,
    sa_name: &str,
    access: Access<'_>,
    timeout: Duration,
) -> Result<(), AccessError> {
    let start = Instant::now();
    while !allowed(client, sa_namespace, sa_name, access).await? {
        if start.elapsed() > timeout {
            return Err(AccessError::StillDenied {
                subject: format!("{sa_namespace}/{sa_name}"),
                access: format!("{access:?}"),
                waited: timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
