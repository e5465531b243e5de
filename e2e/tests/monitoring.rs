//! Observability on the test bed (issue #9):
//!
//! - without the Prometheus Operator CRDs the quickstart cluster gets its other children and
//!   `MonitoringReady=False, reason=CrdMissing`; once minimal CRDs (`e2e/fixtures/
//!   prometheus-operator/`) are installed the running operator — no restart — creates the
//!   ServiceMonitor and PrometheusRule, owned by the cluster, and `MonitoringReady=True`; changing
//!   `spec.limits.maxConnections` or a threshold override changes the PrometheusRule expression;
//! - every metric name the generated rules and dashboard query appears in a real scrape: real
//!   broker nodes (`mqtt-operator local up` on loopback) and the operator's own `/metrics` after
//!   real reconciles.
//!
//! This binary has its own bed (one per test binary), so installing the CRDs here does not
//! change what `operator.rs` sees on its bed.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crds::condition::{find, CERTIFICATES_READY, MONITORING_READY};
use crds::MqttCluster;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Client, ResourceExt};

use e2e::bed::repo_root;
use e2e::manifests::{self, Manifest};
use e2e::wait::{self, Check};
use operator::controllers;
use operator::monitoring::{referenced_metrics, RuleOptions};

const CONVERGE: Duration = Duration::from_secs(60);

/// Starts the controllers once for this test binary; returns the port of their `/metrics`.
fn operator_running(bed: &'static e2e::TestBed) -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
        let port = free_port();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("operator runtime");
            rt.block_on(async {
                let client = bed.client().await.expect("operator client");
                let listen = ([127, 0, 0, 1], port).into();
                controllers::run(client, controllers::RunOptions::new(listen))
                    .await
                    .expect("operator stopped");
            });
        });
        port
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn quickstart() -> Vec<Manifest> {
    manifests::quickstart().expect("read the quickstart")
}

fn monitoring_api(client: &Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("monitoring.coreos.com", "v1", kind));
    Api::namespaced_with(client.clone(), ns, &ar)
}

async fn wait_cluster(
    client: &Client,
    ns: &str,
    what: &str,
    ok: impl Fn(&MqttCluster) -> bool,
) -> MqttCluster {
    let api = Api::<MqttCluster>::namespaced(client.clone(), ns);
    wait::until(what, CONVERGE, || async {
        match api.get("quickstart").await {
            Ok(c) if ok(&c) => Check::Done(c),
            Ok(c) => Check::NotYet(format!("status: {:?}", c.status)),
            Err(e) => Check::NotYet(e.to_string()),
        }
    })
    .await
    .expect("cluster condition")
}

fn monitoring_condition(c: &MqttCluster) -> Option<(String, String)> {
    let s = c.status.as_ref()?;
    let m = find(&s.conditions, MONITORING_READY)?;
    Some((m.status.clone(), m.reason.clone()))
}

/// The `MqttConnectionsHigh` expression of the cluster's PrometheusRule, if it exists.
async fn connections_high_expr(api: &Api<DynamicObject>) -> Option<String> {
    let rule = api.get_opt("quickstart-alerts").await.ok()??;
    rule.data["spec"]["groups"]
        .as_array()?
        .iter()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .find(|r| r["alert"] == "MqttConnectionsHigh")
        .and_then(|r| r["expr"].as_str().map(str::to_string))
}

async fn wait_expr_suffix(api: &Api<DynamicObject>, suffix: &str) {
    wait::until(
        &format!("MqttConnectionsHigh expression ending in '{suffix}'"),
        CONVERGE,
        || async {
            match connections_high_expr(api).await {
                Some(e) if e.ends_with(suffix) => Check::Done(()),
                other => Check::NotYet(format!("expr: {other:?}")),
            }
        },
    )
    .await
    .expect("PrometheusRule updated");
}

async fn merge_patch(client: &Client, ns: &str, patch: serde_json::Value) {
    Api::<MqttCluster>::namespaced(client.clone(), ns)
        .patch("quickstart", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch MqttCluster");
}

#[tokio::test]
async fn monitoring_objects_follow_the_crds_and_the_spec() {
    let Some(bed) = e2e::shared() else { return };
    operator_running(bed);
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("mon-crds").await.expect("namespace");
    let cluster_manifest = manifests::first_of_kind(&quickstart(), "MqttCluster")
        .expect("quickstart MqttCluster")
        .clone();
    manifests::apply(&client, &cluster_manifest, &ns)
        .await
        .expect("apply MqttCluster");

    // CRDs absent: the condition says why, and the other children exist.
    let cluster = wait_cluster(&client, &ns, "MonitoringReady=False/CrdMissing", |c| {
        monitoring_condition(c).is_some_and(|(s, r)| s == "False" && r == "CrdMissing")
    })
    .await;
    let uid = cluster.uid().expect("uid");
    Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .get("quickstart-core")
        .await
        .expect("StatefulSet exists without the monitoring CRDs");
    Api::<Service>::namespaced(client.clone(), &ns)
        .get("quickstart")
        .await
        .expect("client Service exists");
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    for name in ["quickstart-config", "quickstart-dashboard"] {
        config_maps
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("ConfigMap {name}: {e}"));
    }

    // Install the CRDs; the running operator notices on its next reconcile (triggered here by
    // touching the cluster; unattended, the CrdMissing recheck requeues within 60 s).
    let crds = manifests::read_dir(&repo_root().join("e2e/fixtures/prometheus-operator"))
        .expect("read the monitoring CRD fixtures");
    let names = manifests::apply_crds(&client, &crds)
        .await
        .expect("apply monitoring CRDs");
    manifests::wait_established(&client, &names, CONVERGE)
        .await
        .expect("monitoring CRDs established");
    merge_patch(
        &client,
        &ns,
        serde_json::json!({"metadata": {"annotations": {"test.mqtt.operator.dev/touch": "1"}}}),
    )
    .await;
    wait_cluster(&client, &ns, "MonitoringReady=True", |c| {
        monitoring_condition(c).is_some_and(|(s, _)| s == "True")
    })
    .await;
    for (kind, name) in [
        ("ServiceMonitor", "quickstart-broker"),
        ("PrometheusRule", "quickstart-alerts"),
    ] {
        let obj = monitoring_api(&client, &ns, kind)
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("{kind} {name}: {e}"));
        let owners: Vec<_> = obj
            .metadata
            .owner_references
            .iter()
            .flatten()
            .filter(|o| o.kind == "MqttCluster" && o.controller == Some(true))
            .map(|o| o.uid.clone())
            .collect();
        assert_eq!(owners, vec![uid.clone()], "{kind} is owned by the cluster");
    }
    let sm = monitoring_api(&client, &ns, "ServiceMonitor")
        .get("quickstart-broker")
        .await
        .expect("ServiceMonitor");
    assert_eq!(sm.data["spec"]["endpoints"][0]["port"], "http");
    let rules = monitoring_api(&client, &ns, "PrometheusRule");
    // 3 nodes × 10000 connections at 80 %.
    wait_expr_suffix(&rules, "> 24000").await;

    // The spec's limit drives the threshold: 3 × 2000 at 80 %.
    merge_patch(
        &client,
        &ns,
        serde_json::json!({"spec": {"limits": {"maxConnections": 2000}}}),
    )
    .await;
    wait_expr_suffix(&rules, "> 4800").await;
    // An override wins over the default percentage: 3 × 2000 at 50 %.
    merge_patch(
        &client,
        &ns,
        serde_json::json!({"spec": {"monitoring": {"prometheusRule": {
            "overrides": {"connectionsWarningPercent": 50}}}}}),
    )
    .await;
    wait_expr_suffix(&rules, "> 3000").await;
}

// ---- real exports -------------------------------------------------------------------------

/// Metric family names in a Prometheus text exposition: `# TYPE` lines and sample names
/// (histogram/summary series under their family name too).
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            names.extend(rest.split_whitespace().next().map(str::to_string));
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = &line[..end];
            names.insert(name.to_string());
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = name.strip_suffix(suffix) {
                    names.insert(base.to_string());
                }
            }
        }
    }
    names
}

#[test]
fn exposition_parsing_sees_declared_families_and_histogram_series() {
    let text = "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\"} 1\n\
                # HELP declared_only y\n# TYPE declared_only gauge\n\
                h_seconds_bucket{le=\"1\"} 2\nh_seconds_count 2\nplain 3\n";
    let names = exported_names(text);
    for n in ["a_total", "declared_only", "h_seconds", "plain"] {
        assert!(names.contains(n), "{n} in {names:?}");
    }
    assert!(!names.contains("HELP") && !names.contains("x"), "{names:?}");
}

/// GET `/metrics` on a loopback port; panics unless 200.
fn scrape(port: u16) -> String {
    let (status, body) = operator::local::supervise::http(port, "GET", "/metrics", None, &[])
        .unwrap_or_else(|e| panic!("scraping 127.0.0.1:{port}: {e}"));
    assert_eq!(status, 200, "GET /metrics on {port}: {body}");
    body
}

/// The workspace's debug binaries directory (this test runs from `<target>/debug/deps/`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/debug")
        .to_path_buf()
}

/// Newest modification time of the files under `dir` (recursive, bounded depth).
fn newest_source(dir: &Path, depth: u32) -> std::time::SystemTime {
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let t = if path.is_dir() && depth > 0 {
            newest_source(&path, depth - 1)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::SystemTime::UNIX_EPOCH)
        };
        newest = newest.max(t);
    }
    newest
}

/// `mqtt-operator` and `mqtt-broker` of this checkout. `cargo test --workspace` builds both;
/// `cargo test -p e2e` alone does not, so when one is missing or older than the sources it is
/// built here (a stale one would scrape an old exporter).
fn binaries() -> (PathBuf, PathBuf) {
    let dir = bin_dir();
    let (operator, broker) = (dir.join("mqtt-operator"), dir.join("mqtt-broker"));
    let root = repo_root();
    let sources = [
        "contract/src",
        "crds/src",
        "operator/src",
        "broker-image/src",
    ]
    .iter()
    .map(|d| newest_source(&root.join(d), 8))
    .max()
    .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
    let fresh = |bin: &Path| {
        std::fs::metadata(bin)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= sources)
    };
    if !fresh(&operator) || !fresh(&broker) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        eprintln!(
            "building: {cargo} build -p operator -p broker --bin mqtt-operator --bin mqtt-broker"
        );
        let status = Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "-p",
                "operator",
                "-p",
                "broker",
                "--bin",
                "mqtt-operator",
                "--bin",
                "mqtt-broker",
            ])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build of the binaries failed");
    }
    assert!(
        operator.is_file() && broker.is_file(),
        "no binaries in {}",
        dir.display()
    );
    (operator, broker)
}

/// A base port with 30 free loopback ports after it (3 nodes × 10).
fn free_base() -> u16 {
    let seed = std::process::id() as u16;
    for attempt in 0..200u16 {
        let base = 20_000 + (seed.wrapping_mul(37).wrapping_add(attempt * 101)) % 40_000;
        if (base..base + 30).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no free range of 30 loopback ports found in 200 attempts");
}

/// Stops `local up` with SIGINT (it stops its brokers), then kills it if still running.
struct LocalUp(Child);

impl Drop for LocalUp {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stdout_lines(child: &mut Child) -> Receiver<String> {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs the quickstart's brokers with `local up` and returns the union of their scrapes.
fn scrape_local_brokers() -> String {
    let (operator_bin, broker_bin) = binaries();
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = free_base();
    let mut child = Command::new(&operator_bin)
        .args(["local", "up", "-f"])
        .arg(repo_root().join("manifests/examples/quickstart"))
        .arg("-d")
        .arg(tmp.path().join("state"))
        .args(["--base-port", &base.to_string()])
        .env("MQTT_BROKER_BIN", &broker_bin)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start mqtt-operator local up");
    let lines = stdout_lines(&mut child);
    let guard = LocalUp(child);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "local up not ready within 120 s:\n{}",
            seen.join("\n")
        );
        match lines.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(l) if l.starts_with("Watching the manifests") => break,
            Ok(l) => seen.push(l),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("local up exited ({e}):\n{}", seen.join("\n")),
        }
    }
    let text: String = (0..3u16).map(|n| scrape(base + 10 * n + 3)).collect();
    drop(guard);
    text
}

#[tokio::test]
async fn every_referenced_metric_is_exported_by_a_real_broker_or_the_operator() {
    let Some(bed) = e2e::shared() else { return };
    let port = operator_running(bed);
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("mon-exports").await.expect("namespace");
    for m in quickstart() {
        manifests::apply(&client, &m, &ns)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let cluster = wait_cluster(&client, &ns, "CertificatesReady on quickstart", |c| {
        c.status.as_ref().is_some_and(|s| {
            find(&s.conditions, CERTIFICATES_READY).is_some_and(|c| c.status == "True")
        })
    })
    .await;
    // The device certificates' expiry series (the expiry alerts' input) appear once the
    // DeviceIdentity controller has issued them, with a future expiry.
    let series = format!(
        "mqtt_operator_certificate_not_after_timestamp_seconds{{certificate=\"device\",mqtt_cluster=\"quickstart\",mqtt_cluster_namespace=\"{ns}\",name=\"sensor-01\"}} "
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let operator_text = loop {
        let text = scrape(port);
        let expiry = text
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok());
        if let Some(expiry) = expiry {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs_f64();
            assert!(
                expiry > now + 86_400.0,
                "sensor-01 expires in the past or within a day: {expiry}"
            );
            assert!(
                text.contains("mqtt_operator_certificates_total{operation=\"issued\"}"),
                "issued certificates are counted:\n{text}"
            );
            for kind in ["cluster-ca", "clients-ca", "server"] {
                assert!(
                    text.contains(&format!("certificate=\"{kind}\",mqtt_cluster=\"quickstart\",mqtt_cluster_namespace=\"{ns}\"")),
                    "no expiry series for the {kind} certificate:\n{text}"
                );
            }
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no expiry series for sensor-01 within 60 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let operator_names = exported_names(&operator_text);
    assert!(
        operator_text.contains("mqtt_operator_reconcile_total{kind=\"MqttCluster\"}"),
        "the operator counted its reconciles:\n{operator_text}"
    );

    let broker_text = tokio::task::spawn_blocking(scrape_local_brokers)
        .await
        .expect("broker scrape thread");
    let broker_names = exported_names(&broker_text);
    assert!(
        broker_text.contains("\nmqtt_connections_max 10000\n"),
        "the brokers export the spec's limit:\n{broker_text}"
    );

    let referenced = referenced_metrics(&ns, "quickstart", &cluster.spec, &RuleOptions::default());
    // `up` is written by Prometheus itself for every scrape target, never exported.
    let missing: Vec<_> = referenced
        .iter()
        .filter(|n| *n != "up" && !operator_names.contains(*n) && !broker_names.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "referenced by rules/dashboard but in no scrape: {missing:?}\n\
         operator exports {operator_names:?}\nbrokers export {broker_names:?}"
    );
    eprintln!(
        "{} referenced metric names, all exported ({} by the operator, {} by the brokers)",
        referenced.len(),
        referenced
            .iter()
            .filter(|n| operator_names.contains(*n))
            .count(),
        referenced
            .iter()
            .filter(|n| broker_names.contains(*n))
            .count()
    );
}
