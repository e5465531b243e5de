//! Recording what a client asks the API server: a tower layer for `kube::client::ClientBuilder`
//! that keeps every request's method and URL, and the parse of a request into the RBAC
//! attributes the apiserver's authorizer sees (verb, group, resource, subresource, namespace).
//!
//! Tests use it to count one operator instance's writes and to list the (verb, resource) pairs
//! the operator really uses.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use kube::Client;

/// One request as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// HTTP method.
    pub method: String,
    /// Path (without the query).
    pub path: String,
    /// Query string (without `?`), possibly empty.
    pub query: String,
    /// HTTP status of the response (`None`: no response yet, or a transport error).
    pub status: Option<u16>,
}

/// The RBAC attributes of a resource request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attributes {
    /// RBAC verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`).
    pub verb: String,
    /// API group (`""` is core).
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    /// Namespace (`None`: cluster-wide).
    pub namespace: Option<String>,
}

impl Sent {
    /// Whether the request changes something (anything but GET).
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }

    /// The RBAC attributes, or `None` for a non-resource request (`/version`, discovery).
    pub fn attributes(&self) -> Option<Attributes> {
        let parts: Vec<&str> = self.path.trim_matches('/').split('/').collect();
        let (group, rest) = match parts.as_slice() {
            ["api", _version, rest @ ..] => ("", rest),
            ["apis", group, _version, rest @ ..] => (*group, rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_string()), rest),
            _ => (None, rest),
        };
        let (resource, name, sub) = match rest {
            [resource] => (*resource, None, None),
            [resource, name] => (*resource, Some(*name), None),
            [resource, name, sub] => (*resource, Some(*name), Some(*sub)),
            _ => return None,
        };
        let watch = self
            .query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1");
        let verb = match (self.method.as_str(), name) {
            ("GET", _) if watch => "watch",
            ("GET", Some(_)) => "get",
            ("GET", None) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", Some(_)) => "delete",
            ("DELETE", None) => "deletecollection",
            _ => return None,
        };
        // A namespace object itself (`/api/v1/namespaces/x`) is cluster-scoped.
        let (resource, namespace) = if resource == "namespaces" && namespace.is_none() {
            ("namespaces", None)
        } else {
            (resource, namespace)
        };
        Some(Attributes {
            verb: verb.to_string(),
            group: group.to_string(),
            resource: match sub {
                Some(s) => format!("{resource}/{s}"),
                None => resource.to_string(),
            },
            namespace,
        })
    }
}

/// Every request a client sent, in order.
#[derive(Debug, Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Sent>>>);

impl Log {
    /// A copy of the requests so far.
    pub fn sent(&self) -> Vec<Sent> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Writes so far for which `keep` holds.
    pub fn writes(&self, keep: impl Fn(&Sent) -> bool) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|s| s.is_write() && keep(s))
            .collect()
    }

    fn push(&self, sent: Sent) -> usize {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.push(sent);
        all.len() - 1
    }

    fn set_status(&self, index: usize, status: u16) {
        if let Some(s) = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(index)
        {
            s.status = Some(status);
        }
    }
}

/// The tower layer recording into a [`Log`].
#[derive(Debug, Clone)]
pub struct Record(pub Log);

impl<S> tower::Layer<S> for Record {
    type Service = Recorded<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Recorded {
            inner,
            log: self.0.clone(),
        }
    }
}

/// A service recording each request before passing it on.
#[derive(Debug, Clone)]
pub struct Recorded<S> {
    inner: S,
    log: Log,
}

impl<S, B, RB> tower::Service<http::Request<B>> for Recorded<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = WithStatus<S::Future>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let index = self.log.push(Sent {
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
            query: req.uri().query().unwrap_or_default().to_string(),
            status: None,
        });
        WithStatus {
            inner: Box::pin(self.inner.call(req)),
            log: self.log.clone(),
            index,
        }
    }
}

/// The response future of [`Recorded`]: records the status when the response arrives.
pub struct WithStatus<F> {
    inner: Pin<Box<F>>,
    log: Log,
    index: usize,
}

impl<F, RB, E> Future for WithStatus<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
{
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match this.inner.as_mut().poll(cx) {
            Poll::Ready(result) => {
                if let Ok(response) = &result {
                    this.log.set_status(this.index, response.status().as_u16());
                }
                Poll::Ready(result)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A client from `config` that records every request into the returned [`Log`].
pub fn recording_client_from(config: kube::Config) -> Result<(Client, Log), String> {
    let log = Log::default();
    let client = kube::client::ClientBuilder::try_from(config)
        .map_err(|e| e.to_string())?
        .with_layer(&Record(log.clone()))
        .build();
    Ok((client, log))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(method: &str, url: &str) -> Sent {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        Sent {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            status: None,
        }
    }

    fn attrs(verb: &str, group: &str, resource: &str, ns: Option<&str>) -> Option<Attributes> {
        Some(Attributes {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            namespace: ns.map(Into::into),
        })
    }

    #[test]
    fn resource_requests_map_to_rbac_attributes() {
        let cases = [
            (
                sent("GET", "/apis/mqtt.operator.dev/v1alpha1/mqttclusters?watch=true&resourceVersion=1"),
                attrs("watch", "mqtt.operator.dev", "mqttclusters", None),
            ),
            (
                sent("GET", "/api/v1/namespaces/a/secrets?limit=500"),
                attrs("list", "", "secrets", Some("a")),
            ),
            (
                sent("GET", "/api/v1/namespaces/a/secrets/s"),
                attrs("get", "", "secrets", Some("a")),
            ),
            (
                sent("PATCH", "/apis/mqtt.operator.dev/v1alpha1/namespaces/a/mqttclusters/q/status?fieldManager=x"),
                attrs("patch", "mqtt.operator.dev", "mqttclusters/status", Some("a")),
            ),
            (
                sent("PUT", "/apis/coordination.k8s.io/v1/namespaces/o/leases/l"),
                attrs("update", "coordination.k8s.io", "leases", Some("o")),
            ),
            (
                sent("POST", "/apis/events.k8s.io/v1/namespaces/a/events"),
                attrs("create", "events.k8s.io", "events", Some("a")),
            ),
            (
                sent("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x"),
                attrs("get", "apiextensions.k8s.io", "customresourcedefinitions", None),
            ),
            (
                sent("DELETE", "/api/v1/namespaces/a/configmaps/c"),
                attrs("delete", "", "configmaps", Some("a")),
            ),
            (
                sent("GET", "/api/v1/namespaces/a"),
                attrs("get", "", "namespaces", None),
            ),
            (sent("GET", "/version"), None),
            (sent("GET", "/apis"), None),
        ];
        for (s, expected) in cases {
            assert_eq!(s.attributes(), expected, "{s:?}");
        }
        assert!(sent("PATCH", "/x").is_write());
        assert!(!sent("GET", "/x").is_write());
    }
}
