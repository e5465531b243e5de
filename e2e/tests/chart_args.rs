//! The Helm chart's container arguments parsed by the operator's own flag definition
//! (`operator::cli`), so the chart can never pass a flag the binary does not accept (or a value
//! it reads differently) again.
//!
//! The chart is rendered with `helm template` for several value sets; `$(VAR)` references in the
//! args are expanded from the container's `env` as the kubelet does (downward-API fields from a
//! stand-in Pod), then parsed and turned into the controllers' options.
//!
//! helm comes from `scripts/install-helm.sh`; without it these tests skip (printing why) when run
//! by hand and fail under CI.

use serde_json::Value;

use e2e::bed::repo_root;
use operator::cli::{self, Environment};
use operator::controllers::RunOptions;

const POD_NAME: &str = "rel-mqtt-operator-6d9f-abcde";

/// The operator container of the rendered Deployment.
fn operator_container(docs: &[Value]) -> &Value {
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("the chart renders a Deployment");
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    containers
        .iter()
        .find(|c| c["name"] == "operator")
        .expect("an 'operator' container")
}

/// The value of env var `name` in the container, resolving the downward API fields the chart
/// uses against a Pod named [`POD_NAME`] in `namespace`.
fn env_value(container: &Value, name: &str, namespace: &str) -> Option<String> {
    let var = container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?;
    if let Some(v) = var["value"].as_str() {
        return Some(v.to_string());
    }
    match var["valueFrom"]["fieldRef"]["fieldPath"].as_str()? {
        "metadata.namespace" => Some(namespace.to_string()),
        "metadata.name" => Some(POD_NAME.to_string()),
        other => panic!("env {name}: unexpected fieldPath {other}"),
    }
}

/// Expands `$(VAR)` as the kubelet does; an unknown variable stays as written (kubelet
/// behaviour), which the assertions below would then catch.
fn expand(arg: &str, container: &Value, namespace: &str) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find(')') {
            Some(end) => {
                let name = &after[..end];
                match env_value(container, name, namespace) {
                    Some(v) => out.push_str(&v),
                    None => out.push_str(&rest[start..start + 2 + end + 1]),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Renders the chart as release `rel` in `namespace` with `--set` values, and returns the
/// options the operator would run with in that Pod.
fn options_for(tools: &e2e::Tools, namespace: &str, sets: &[&str]) -> (Vec<String>, RunOptions) {
    let mut extra = Vec::new();
    for s in sets {
        extra.push("--set");
        extra.push(s);
    }
    let chart = repo_root().join("helm/mqtt-operator");
    let docs = tools
        .template("rel", &chart, namespace, &extra)
        .unwrap_or_else(|e| panic!("{e}"));
    let container = operator_container(&docs);
    let args: Vec<String> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| expand(a.as_str().expect("string arg"), container, namespace))
        .collect();
    let parsed = cli::parse_run(&args)
        .unwrap_or_else(|e| panic!("the binary refuses the chart's args {args:?}:\n{e}"));
    let env = Environment {
        pod_namespace: env_value(container, "POD_NAMESPACE", namespace),
        identity: env_value(container, "POD_NAME", namespace).expect("POD_NAME in env"),
    };
    let options = parsed
        .options(&env)
        .unwrap_or_else(|e| panic!("chart args {args:?}: {e}"));
    (args, options)
}

#[test]
fn default_values_run_leader_elected_on_every_namespace() {
    let Some(tools) = e2e::tools_or_skip() else {
        return;
    };
    let (args, o) = options_for(&tools, "ops", &[]);
    assert!(o.watch_namespaces.is_empty(), "{args:?}");
    assert_eq!(o.listen.port(), 8080, "{args:?}");
    let le = o.leader_election.expect("leader election on by default");
    assert_eq!(le.lease_name, "rel-mqtt-operator");
    assert_eq!(
        le.lease_namespace, "ops",
        "the Lease lives in the release namespace"
    );
    assert_eq!(le.identity, POD_NAME, "each replica is its own Pod");
    assert!(le.renew_deadline < le.lease_duration);
}

#[test]
fn every_chart_value_that_reaches_the_args_is_read_as_meant() {
    let Some(tools) = e2e::tools_or_skip() else {
        return;
    };
    let (args, o) = options_for(
        &tools,
        "edge",
        &[
            "watchNamespaces={team-b,team-a}",
            "leaderElection.leaseName=custom-lease",
            "metrics.port=9100",
        ],
    );
    assert_eq!(o.watch_namespaces, ["team-a", "team-b"], "{args:?}");
    assert_eq!(o.listen.port(), 9100, "{args:?}");
    let le = o.leader_election.expect("leader election");
    assert_eq!(
        (le.lease_name.as_str(), le.lease_namespace.as_str()),
        ("custom-lease", "edge")
    );

    let (args, o) = options_for(
        &tools,
        "ops",
        &["replicas=1", "leaderElection.enabled=false"],
    );
    assert!(o.leader_election.is_none(), "{args:?}");
}
