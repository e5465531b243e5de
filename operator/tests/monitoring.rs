//! Generated alert rules and dashboard, checked by the real `promtool` (Debian `prometheus`).
//!
//! - `promtool check rules` on the PrometheusRule of every example cluster;
//! - `promtool test rules` with synthetic series: every alert fires once its condition has held
//!   for its `for:` duration, is silent before that, and is silent below its threshold;
//! - every metric named by a rule or a dashboard panel is one the broker or operator exports;
//! - every alert's runbook link points at a section of `docs/runbooks.md`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use contract::metrics;
use crds::MqttCluster;
use operator::manifest::{self, Resource};
use operator::monitoring::{self, metric_names, rules, RuleOptions};

#[path = "support/tool.rs"]
mod tool;

#[path = "support/monitoring_scenarios.rs"]
mod scenarios;
use scenarios::{scenarios, Scenario};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `promtool` (Debian `prometheus`), or `None` when skipping by hand.
fn promtool() -> Option<PathBuf> {
    tool::require("promtool", "prometheus")
}

fn example_clusters() -> Vec<MqttCluster> {
    let dirs = [repo().join("manifests/examples/quickstart")];
    let files = manifest::load_paths(&dirs).unwrap();
    let mut clusters: Vec<MqttCluster> = manifest::parse_files(&files)
        .unwrap()
        .into_iter()
        .filter_map(|d| match d.resource() {
            Some(Resource::Cluster(c)) => Some((**c).clone()),
            _ => None,
        })
        .collect();
    assert!(!clusters.is_empty());
    // A single-node variant and one with every override, to cover the other branches.
    let mut single = clusters[0].clone();
    single.metadata.name = Some("edge".into());
    single.spec.core.replicas = 1;
    let mut tuned = clusters[0].clone();
    tuned.metadata.name = Some("tuned".into());
    tuned.spec.monitoring.prometheus_rule.overrides = Some(serde_yaml::from_str(
        "{connectionsWarningPercent: 60, connectionsCriticalPercent: 70, authFailuresPerSecond: 0.5, \
          aclDeniesPerSecond: 2.5, queueDepthPercent: 50, certificateExpiryDays: 14, bridgeDownFor: 15m, \
          retainedGrowthPerHour: 10}",
    )
    .unwrap());
    clusters.push(single);
    clusters.push(tuned);
    for c in &mut clusters {
        c.metadata.namespace.get_or_insert_with(|| "default".into());
    }
    clusters
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "mqtt-operator-monitoring-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(promtool: &Path, args: &[&str], dir: &Path) -> String {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn promtool_check_rules_passes_for_every_example() {
    let Some(promtool) = promtool() else { return };
    let dir = tempdir("check");
    for cluster in example_clusters() {
        let rule = monitoring::prometheus_rule(&cluster, &RuleOptions::default());
        // The PrometheusRule's spec is exactly a Prometheus rules file.
        let file = dir.join(format!(
            "{}.yaml",
            cluster.metadata.name.as_deref().unwrap()
        ));
        std::fs::write(&file, serde_yaml::to_string(&rule["spec"]).unwrap()).unwrap();
        let out = run(&promtool, &["check", "rules", file.to_str().unwrap()], &dir);
        assert!(out.contains("SUCCESS"), "{out}");
    }
}

fn series_yaml(series: &[(String, &str)]) -> String {
    series
        .iter()
        .map(|(s, v)| format!("      - series: '{s}'\n        values: '{v}'\n"))
        .collect()
}

fn test_case(s: &Scenario, series: &[(String, &str)], evals: &[(u32, bool)]) -> String {
    let mut labels = vec![
        ("severity", severity(s.alert)),
        ("mqtt_cluster", "quickstart"),
    ];
    labels.extend(s.extra_labels.iter().copied());
    let label_yaml: String = labels
        .iter()
        .map(|(k, v)| format!("{k}: {v:?}, "))
        .collect();
    let mut out = format!(
        "  - interval: 1m\n    input_series:\n{}    alert_rule_test:\n",
        series_yaml(series)
    );
    for (minute, fires) in evals {
        out += &format!(
            "      - eval_time: {minute}m\n        alertname: {}\n",
            s.alert
        );
        if *fires {
            out += &format!("        exp_alerts:\n          - exp_labels: {{{label_yaml}}}\n");
        } else {
            out += "        exp_alerts: []\n";
        }
    }
    out
}

fn severity(alert: &str) -> &'static str {
    let cluster = &example_clusters()[0];
    let groups = rules::alert_groups(
        "default",
        "quickstart",
        &cluster.spec,
        &RuleOptions::default(),
    );
    let rule = groups[0].rules.iter().find(|r| r.alert == alert).unwrap();
    match rule.labels["severity"].as_str() {
        "critical" => "critical",
        _ => "warning",
    }
}

#[test]
fn promtool_unit_tests_every_alert_fires_and_stays_silent() {
    let Some(promtool) = promtool() else { return };
    let cluster = &example_clusters()[0];
    assert_eq!(cluster.metadata.name.as_deref(), Some("quickstart"));
    let mut groups = rules::alert_groups(
        "default",
        "quickstart",
        &cluster.spec,
        &RuleOptions::default(),
    );
    // promtool compares annotations exactly; their templates are validated by `check rules`.
    for r in &mut groups[0].rules {
        r.annotations.clear();
    }
    let rendered: BTreeSet<_> = groups[0].rules.iter().map(|r| r.alert.clone()).collect();
    let scenarios = scenarios();
    let tested: BTreeSet<_> = scenarios.iter().map(|s| s.alert.to_string()).collect();
    assert_eq!(rendered, tested, "every rendered alert needs a scenario");

    let dir = tempdir("unit");
    std::fs::write(dir.join("rules.yaml"), rules::rules_file(&groups)).unwrap();
    let mut tests = String::from("rule_files: [rules.yaml]\nevaluation_interval: 1m\ntests:\n");
    for s in &scenarios {
        tests += &test_case(s, &s.firing, &[(s.pending_at, false), (s.firing_at, true)]);
        tests += &test_case(s, &s.silent, &[(s.firing_at, false)]);
    }
    std::fs::write(dir.join("tests.yaml"), &tests).unwrap();
    let out = run(&promtool, &["test", "rules", "tests.yaml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The unit tests above would pass vacuously if promtool ignored expectations: a deliberately
/// wrong expectation must fail.
#[test]
fn promtool_unit_test_detects_a_wrong_expectation() {
    let Some(promtool) = promtool() else { return };
    let cluster = &example_clusters()[0];
    let mut groups = rules::alert_groups(
        "default",
        "quickstart",
        &cluster.spec,
        &RuleOptions::default(),
    );
    for r in &mut groups[0].rules {
        r.annotations.clear();
    }
    let dir = tempdir("wrong");
    std::fs::write(dir.join("rules.yaml"), rules::rules_file(&groups)).unwrap();
    let s = &scenarios()[0];
    let tests = format!(
        "rule_files: [rules.yaml]\nevaluation_interval: 1m\ntests:\n{}",
        test_case(s, &s.silent, &[(s.firing_at, true)])
    );
    std::fs::write(dir.join("tests.yaml"), tests).unwrap();
    let out = Command::new(&promtool)
        .args(["test", "rules", "tests.yaml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "promtool accepted a silent alert expected to fire"
    );
}

#[test]
fn thresholds_follow_the_spec_and_overrides() {
    let clusters = example_clusters();
    let expr = |c: &MqttCluster, alert: &str| {
        let groups = rules::alert_groups("ns", "c", &c.spec, &RuleOptions::default());
        groups[0]
            .rules
            .iter()
            .find(|r| r.alert == alert)
            .map(|r| r.expr.clone())
    };
    // quickstart: 3 nodes x 10000.
    assert!(expr(&clusters[0], "MqttConnectionsHigh")
        .unwrap()
        .ends_with("> 24000"));
    assert!(expr(&clusters[0], "MqttConnectionsCritical")
        .unwrap()
        .ends_with("> 28500"));
    assert!(expr(&clusters[0], "MqttRaftQuorumAtRisk")
        .unwrap()
        .ends_with("< 3"));
    let mut bigger = clusters[0].clone();
    bigger.spec.core.replicas = 5;
    bigger.spec.limits.max_connections = 2000;
    assert!(expr(&bigger, "MqttConnectionsHigh")
        .unwrap()
        .ends_with("> 8000"));
    assert!(expr(&bigger, "MqttRaftQuorumAtRisk")
        .unwrap()
        .ends_with("< 4"));
    assert!(expr(&bigger, "MqttBrokerNodeDown")
        .unwrap()
        .ends_with("< 5"));
    // single node: no raft alert.
    assert_eq!(expr(&clusters[1], "MqttRaftQuorumAtRisk"), None);
    // overrides.
    let tuned = &clusters[2];
    assert!(expr(tuned, "MqttConnectionsHigh")
        .unwrap()
        .ends_with("> 18000"));
    assert!(expr(tuned, "MqttConnectionsCritical")
        .unwrap()
        .ends_with("> 21000"));
    assert!(expr(tuned, "MqttAuthFailureSpike")
        .unwrap()
        .ends_with("> 0.5"));
    assert!(expr(tuned, "MqttAclDenySpike").unwrap().ends_with("> 2.5"));
    assert!(expr(tuned, "MqttQueueDepthHigh")
        .unwrap()
        .ends_with("> 500"));
    assert!(expr(tuned, "MqttCertificateExpiringSoon")
        .unwrap()
        .ends_with(&format!("< {}", 14 * 86_400)));
    assert!(expr(tuned, "MqttRetainedGrowth").unwrap().ends_with("> 10"));
    let groups = rules::alert_groups("ns", "c", &tuned.spec, &RuleOptions::default());
    let bridge = groups[0]
        .rules
        .iter()
        .find(|r| r.alert == "MqttBridgeDown")
        .unwrap();
    assert_eq!(bridge.for_, "15m");
}

fn known_metric(name: &str) -> bool {
    name == "up"
        || metrics::broker::ALL
            .iter()
            .chain(metrics::operator::ALL)
            .any(|m| m.name == name)
}

#[test]
fn rules_and_dashboard_reference_only_exported_metrics() {
    let cluster = &example_clusters()[0];
    let groups = rules::alert_groups(
        "default",
        "quickstart",
        &cluster.spec,
        &RuleOptions::default(),
    );
    let mut referenced = BTreeSet::new();
    for r in &groups[0].rules {
        let names = metric_names(&r.expr);
        assert!(
            !names.is_empty(),
            "{}: no metric found in {}",
            r.alert,
            r.expr
        );
        referenced.extend(names);
    }
    let cm = monitoring::dashboard_config_map(cluster);
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let (_, text) = cm["data"].as_object().unwrap().iter().next().unwrap();
    let board: serde_json::Value =
        serde_json::from_str(text.as_str().unwrap()).expect("dashboard is valid JSON");
    let panels = board["panels"].as_array().unwrap();
    let titles: Vec<_> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for wanted in [
        "Connections vs capacity",
        "Messages per second",
        "Auth failures and ACL denies",
        "Raft health per node",
        "Certificate expiry",
        "Bridges",
    ] {
        assert!(titles.contains(&wanted), "missing panel {wanted}");
    }
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}: no query", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            referenced.extend(metric_names(expr));
        }
    }
    // The shared extraction (used by the e2e scrape test) sees the same names.
    assert_eq!(
        referenced,
        monitoring::referenced_metrics(
            "default",
            "quickstart",
            &cluster.spec,
            &RuleOptions::default()
        )
    );
    let unknown: Vec<_> = referenced.iter().filter(|n| !known_metric(n)).collect();
    assert!(
        unknown.is_empty(),
        "queries reference metrics nobody exports: {unknown:?}"
    );
    assert!(
        referenced.len() >= 20,
        "expected most metrics to be used, got {referenced:?}"
    );
}

#[test]
fn every_alert_has_a_runbook_section() {
    let runbooks =
        std::fs::read_to_string(repo().join("docs/runbooks.md")).expect("docs/runbooks.md");
    let anchors: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    let cluster = &example_clusters()[0];
    let groups = rules::alert_groups(
        "default",
        "quickstart",
        &cluster.spec,
        &RuleOptions::default(),
    );
    for r in &groups[0].rules {
        let url = &r.annotations["runbook_url"];
        let anchor = url.rsplit_once('#').unwrap().1;
        assert!(
            anchors.contains(anchor),
            "{}: no '## {}' section in docs/runbooks.md",
            r.alert,
            r.alert
        );
        for key in ["summary", "description"] {
            assert!(!r.annotations[key].is_empty(), "{}: empty {key}", r.alert);
        }
        assert!(["warning", "critical"].contains(&r.labels["severity"].as_str()));
    }
    for name in rules::ALERT_NAMES {
        assert!(
            anchors.contains(&name.to_lowercase()),
            "runbook section for {name}"
        );
        for heading in ["First checks", "Likely causes", "Actions"] {
            let section = runbooks.split(&format!("## {name}\n")).nth(1).unwrap();
            let section = section.split("\n## ").next().unwrap();
            assert!(
                section.contains(heading),
                "{name}: runbook lacks '{heading}'"
            );
        }
    }
}

#[test]
fn service_monitor_selects_the_broker_metrics_port() {
    let cluster = &example_clusters()[0];
    let sm = monitoring::service_monitor(cluster);
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["kind"], "ServiceMonitor");
    let ep = &sm["spec"]["endpoints"][0];
    assert_eq!(ep["port"], monitoring::METRICS_PORT_NAME);
    assert_eq!(ep["path"], "/metrics");
    assert_eq!(ep["interval"], "30s");
    assert_eq!(ep["relabelings"][0]["targetLabel"], "mqtt_cluster");
    assert_eq!(ep["relabelings"][0]["replacement"], "quickstart");
    assert_eq!(
        sm["spec"]["selector"]["matchLabels"]["mqtt.operator.dev/cluster"],
        "quickstart"
    );
    let rule = monitoring::prometheus_rule(cluster, &RuleOptions::default());
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(rule["metadata"]["name"], "quickstart-alerts");
}
