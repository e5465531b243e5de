//! What a kubelet reads from a Pod and writes back, as pure functions: mount paths mapped to
//! host directories in the container's arguments, environment from the spec (literals and the
//! downward API), the readiness probe, the pod's DNS names, the network-namespace rewrite of
//! `broker.json`, and the status patch.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};

/// A Pod field the stand-in does not emulate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pod {pod}: {what} is not supported by the stand-in")]
pub struct Unsupported {
    /// The pod.
    pub pod: String,
    /// The unsupported field.
    pub what: String,
}

/// Replaces a container path in `arg` (`/etc/mqtt/x` or `--flag=/etc/mqtt`) by the host
/// directory of the deepest mount containing it; other arguments are returned unchanged.
pub fn map_arg(arg: &str, mounts: &[(String, PathBuf)]) -> String {
    let (prefix, path) = match arg.split_once('=') {
        Some((flag, value)) if flag.starts_with('-') => (format!("{flag}="), value),
        _ => (String::new(), arg),
    };
    if !path.starts_with('/') {
        return arg.to_string();
    }
    let best = mounts
        .iter()
        .filter_map(|(mount, host)| {
            let mount = mount.trim_end_matches('/');
            let rest = path.strip_prefix(mount)?;
            (rest.is_empty() || rest.starts_with('/')).then_some((mount.len(), host, rest))
        })
        .max_by_key(|(len, _, _)| *len);
    match best {
        Some((_, host, rest)) => {
            // Keep a trailing slash if the argument had one.
            let rest = rest.trim_matches('/');
            let mapped = if rest.is_empty() {
                host.clone()
            } else {
                host.join(rest)
            };
            let slash = if path.ends_with('/') { "/" } else { "" };
            format!("{prefix}{}{slash}", mapped.display())
        }
        None => arg.to_string(),
    }
}

/// The container's environment: literal values and downward-API `fieldRef`s
/// (`metadata.name`, `metadata.namespace`, `metadata.uid`, `spec.nodeName`, `status.podIP`).
pub fn env(
    pod: &Pod,
    container: &Container,
    ip: Ipv4Addr,
) -> Result<Vec<(String, String)>, Unsupported> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let unsupported = |what: String| Unsupported {
        pod: name.clone(),
        what,
    };
    let mut out = Vec::new();
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                let Some(field) = &from.field_ref else {
                    return Err(unsupported(format!(
                        "env {} valueFrom other than fieldRef",
                        var.name
                    )));
                };
                match field.field_path.as_str() {
                    "metadata.name" => name.clone(),
                    "metadata.namespace" => pod.metadata.namespace.clone().unwrap_or_default(),
                    "metadata.uid" => pod.metadata.uid.clone().unwrap_or_default(),
                    "spec.nodeName" => pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_default(),
                    "status.podIP" => ip.to_string(),
                    other => return Err(unsupported(format!("env {} fieldRef {other}", var.name))),
                }
            }
            (Some(v), None) => v.clone(),
            (None, None) => String::new(),
        };
        out.push((var.name.clone(), value));
    }
    Ok(out)
}

/// `(path, port)` of the container's HTTP readiness probe, a named port resolved through the
/// container's ports. `None`: no HTTP probe (ready once running).
pub fn readiness_http(container: &Container) -> Option<(String, u16)> {
    let get = container.readiness_probe.as_ref()?.http_get.as_ref()?;
    let port = match &get.port {
        IntOrString::Int(p) => *p,
        IntOrString::String(name) => {
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))?
                .container_port
        }
    };
    Some((
        get.path.clone().unwrap_or_else(|| "/".into()),
        u16::try_from(port).ok()?,
    ))
}

/// DNS names of the pod: `<hostname>.<subdomain>.<ns>.svc[.cluster.local]` when the pod has a
/// subdomain (StatefulSet pods do), as the cluster DNS would publish them.
pub fn pod_dns_names(pod: &Pod) -> Vec<String> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let (Some(sub), Some(ns)) = (&spec.subdomain, &pod.metadata.namespace) else {
        return Vec::new();
    };
    let host = spec
        .hostname
        .clone()
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    vec![
        format!("{host}.{sub}.{ns}.svc"),
        format!("{host}.{sub}.{ns}.svc.cluster.local"),
    ]
}

/// Names of a Service in `ns` (the namespaced forms only: a bare name would collide between
/// tests running in parallel on this machine).
pub fn service_dns_names(service: &str, ns: &str) -> Vec<String> {
    vec![
        format!("{service}.{ns}"),
        format!("{service}.{ns}.svc"),
        format!("{service}.{ns}.svc.cluster.local"),
    ]
}

/// What a network namespace gives the process: `broker.json` listening on `0.0.0.0` listens on
/// the pod's own address. Other files, and other bind addresses, are returned unchanged.
pub fn network_namespace_rewrite(path: &Path, bytes: Vec<u8>, ip: Ipv4Addr) -> Vec<u8> {
    if path.file_name().and_then(|n| n.to_str()) != Some("broker.json") {
        return bytes;
    }
    let Ok(mut doc) = serde_json::from_slice::<Value>(&bytes) else {
        return bytes;
    };
    let Some(bind) = doc.pointer_mut("/listeners/bind") else {
        return bytes;
    };
    if bind.as_str() != Some("0.0.0.0") {
        return bytes;
    }
    *bind = Value::String(ip.to_string());
    serde_json::to_vec_pretty(&doc).unwrap_or(bytes)
}

/// The container's observed state for the status patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    /// Container name.
    pub name: String,
    /// Image (as in the spec).
    pub image: String,
    /// Readiness probe passed.
    pub ready: bool,
    /// Restarts so far.
    pub restarts: u32,
    /// RFC 3339 start of the current process.
    pub started_at: String,
}

/// Merge patch of `status` for a running pod: phase, IPs, start time, conditions (transition
/// times kept from `previous` unless the status flips) and container statuses.
pub fn running_status(
    previous: Option<&Pod>,
    ip: Ipv4Addr,
    start_time: &str,
    now: &str,
    containers: &[ContainerState],
) -> Value {
    let ready = !containers.is_empty() && containers.iter().all(|c| c.ready);
    let old = previous
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let condition = |kind: &str, status: bool| {
        let status = if status { "True" } else { "False" };
        let since = old
            .iter()
            .find(|c| c.type_ == kind && c.status == status)
            .and_then(|c| c.last_transition_time.as_ref())
            .and_then(|t| serde_json::to_value(t).ok())
            .unwrap_or_else(|| json!(now));
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since})
    };
    json!({
        "status": {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": ip.to_string(),
            "podIPs": [{"ip": ip.to_string()}],
            "startTime": start_time,
            "conditions": [
                condition("PodScheduled", true),
                condition("Initialized", true),
                condition("ContainersReady", ready),
                condition("Ready", ready),
            ],
            "containerStatuses": containers.iter().map(|c| json!({
                "name": c.name,
                "image": c.image,
                "imageID": format!("standin://{}", c.image),
                "containerID": format!("standin://{}", c.name),
                "ready": c.ready,
                "started": true,
                "restartCount": c.restarts,
                "state": {"running": {"startedAt": c.started_at}},
            })).collect::<Vec<_>>(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    const POD: &str = r#"
metadata: {name: qs-core-1, namespace: iot, uid: u-1}
spec:
  hostname: qs-core-1
  subdomain: qs-core
  containers:
    - name: broker
      image: broker:1
      args: [--config-dir, /etc/mqtt, --runtime-dir, /var/lib/mqtt/run]
      env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        - {name: NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        - {name: LEVEL, value: debug}
      ports: [{name: http, containerPort: 9090}]
      readinessProbe: {httpGet: {path: /readyz, port: http}}
"#;

    #[test]
    fn args_map_to_the_deepest_mount_and_leave_other_arguments_alone() {
        let mounts = vec![
            ("/etc/mqtt".to_string(), PathBuf::from("/tmp/p/config")),
            (
                "/var/lib/mqtt".to_string(),
                PathBuf::from("/tmp/pvc/data-0"),
            ),
            (
                "/var/lib/mqtt/cache/".to_string(),
                PathBuf::from("/tmp/p/cache"),
            ),
        ];
        let m = |a: &str| map_arg(a, &mounts);
        assert_eq!(m("--config-dir"), "--config-dir");
        assert_eq!(m("/etc/mqtt"), "/tmp/p/config");
        assert_eq!(m("/var/lib/mqtt/run"), "/tmp/pvc/data-0/run");
        assert_eq!(m("/var/lib/mqtt/cache/x"), "/tmp/p/cache/x");
        assert_eq!(m("--config-dir=/etc/mqtt/"), "--config-dir=/tmp/p/config/");
        assert_eq!(m("/etc/mqttx"), "/etc/mqttx");
        assert_eq!(m("/usr/bin"), "/usr/bin");
    }

    #[test]
    fn env_resolves_literals_and_the_downward_api() {
        let p = pod(POD);
        let c = &p.spec.as_ref().unwrap().containers[0];
        let env = env(&p, c, Ipv4Addr::new(127, 77, 0, 9)).unwrap();
        assert_eq!(
            env,
            [
                ("POD_NAME", "qs-core-1"),
                ("POD_IP", "127.77.0.9"),
                ("NS", "iot"),
                ("LEVEL", "debug")
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        let bad = pod(&POD.replace("metadata.namespace", "metadata.labels"));
        let c = &bad.spec.as_ref().unwrap().containers[0];
        assert!(super::env(&bad, c, Ipv4Addr::LOCALHOST).is_err());
    }

    #[test]
    fn readiness_probe_port_is_resolved_by_name_and_dns_names_follow_the_subdomain() {
        let p = pod(POD);
        let c = &p.spec.as_ref().unwrap().containers[0];
        assert_eq!(readiness_http(c), Some(("/readyz".to_string(), 9090)));
        assert_eq!(
            pod_dns_names(&p),
            [
                "qs-core-1.qs-core.iot.svc",
                "qs-core-1.qs-core.iot.svc.cluster.local"
            ]
        );
        assert_eq!(service_dns_names("qs", "iot")[1], "qs.iot.svc");
    }

    #[test]
    fn broker_json_binding_everything_binds_the_pod_address_only() {
        let ip = Ipv4Addr::new(127, 77, 0, 3);
        let doc = br#"{"listeners":{"bind":"0.0.0.0","mqtts":{"port":8883}},"http":{"port":9090}}"#;
        let out = network_namespace_rewrite(Path::new("cfg/broker.json"), doc.to_vec(), ip);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["listeners"]["bind"], "127.77.0.3");
        assert_eq!(v["listeners"]["mqtts"]["port"], 8883);
        assert_eq!(v["http"]["port"], 9090);
        let fixed = br#"{"listeners":{"bind":"10.0.0.1"}}"#.to_vec();
        assert_eq!(
            network_namespace_rewrite(Path::new("broker.json"), fixed.clone(), ip),
            fixed
        );
        assert_eq!(
            network_namespace_rewrite(Path::new("acl.bin"), doc.to_vec(), ip),
            doc.to_vec()
        );
    }

    #[test]
    fn status_keeps_transition_times_until_readiness_flips() {
        let c = |ready| ContainerState {
            name: "broker".into(),
            image: "broker:1".into(),
            ready,
            restarts: 2,
            started_at: "2026-01-01T00:00:00Z".into(),
        };
        let ip = Ipv4Addr::new(127, 77, 0, 3);
        let first = running_status(None, ip, "T0", "T1", &[c(false)]);
        assert_eq!(first["status"]["phase"], "Running");
        assert_eq!(first["status"]["podIP"], "127.77.0.3");
        assert_eq!(first["status"]["conditions"][3]["type"], "Ready");
        assert_eq!(first["status"]["conditions"][3]["status"], "False");
        assert_eq!(first["status"]["containerStatuses"][0]["restartCount"], 2);
        let t = Time("2026-01-01T00:00:05Z".parse().unwrap());
        let previous = Pod {
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "False".into(),
                    last_transition_time: Some(t),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        let same = running_status(Some(&previous), ip, "T0", "T9", &[c(false)]);
        assert_eq!(
            same["status"]["conditions"][3]["lastTransitionTime"],
            "2026-01-01T00:00:05Z"
        );
        let flipped = running_status(Some(&previous), ip, "T0", "T9", &[c(true)]);
        assert_eq!(flipped["status"]["conditions"][3]["status"], "True");
        assert_eq!(
            flipped["status"]["conditions"][3]["lastTransitionTime"],
            "T9"
        );
    }
}
