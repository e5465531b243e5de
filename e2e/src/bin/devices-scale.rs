//! Scale measurement (DESIGN §10): N DeviceIdentities (default 10,000) applied on a fresh test
//! bed with the real `mqtt-operator run` process → all `Ready`. Prints the wall time from the
//! first apply to the last `Ready=True`, and the operator's peak RSS (`VmHWM` of
//! `/proc/<pid>/status`), next to the design targets. A measurement, not a test: it asserts
//! nothing about the figures.
//!
//! ```text
//! cargo build --release -p operator --bin mqtt-operator
//! cargo run --release -p e2e --bin devices-scale -- [--devices 10000] [--operator PATH]
//! ```
//!
//! The operator binary defaults to `$CARGO_TARGET_DIR/release/mqtt-operator` (or
//! `target/release/mqtt-operator` in the repository).
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::runtime::{watcher, WatchStreamExt};

use e2e::manifests;
use e2e::wait::{self, Check};
use e2e::TestBed;

/// Design target: apply → all Ready.
const TARGET_WALL: Duration = Duration::from_secs(300);
/// Design target: operator RSS, MiB.
const TARGET_RSS_MIB: f64 = 200.0;
/// Give up after this long.
const DEADLINE: Duration = Duration::from_secs(30 * 60);
/// Concurrent creates.
const WRITERS: usize = 16;

struct Options {
    devices: usize,
    operator: PathBuf,
}

fn options() -> Result<Options, String> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| e2e::bed::repo_root().join("target"));
    let mut o = Options {
        devices: 10_000,
        operator: std::env::var_os("MQTT_OPERATOR_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| target.join("release/mqtt-operator")),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = args.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--devices" => o.devices = value.parse().map_err(|e| format!("--devices: {e}"))?,
            "--operator" => o.operator = PathBuf::from(value),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !o.operator.is_file() {
        return Err(format!(
            "{} not found: cargo build --release -p operator --bin mqtt-operator (or --operator PATH)",
            o.operator.display()
        ));
    }
    Ok(o)
}

/// `(VmHWM, VmRSS)` of `pid` in MiB.
fn memory_mib(pid: u32) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

fn device_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "mqtt.operator.dev",
        "v1alpha1",
        "DeviceIdentity",
    ))
}

fn is_ready(obj: &DynamicObject) -> bool {
    obj.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

#[tokio::main]
async fn main() {
    if let Err(e) = measure().await {
        eprintln!("devices-scale: {e}");
        std::process::exit(1);
    }
}

async fn measure() -> Result<(), String> {
    let o = options()?;
    let bed = TestBed::start().await.map_err(|e| e.to_string())?;
    let client = bed.client().await.map_err(|e| e.to_string())?;
    let ns = bed.namespace("scale").await.map_err(|e| e.to_string())?;

    let mut command = Command::new(&o.operator);
    command
        .args([
            "run",
            "--metrics-bind-address",
            "127.0.0.1:0",
            "--log-format",
            "text",
        ])
        .env("KUBECONFIG", bed.kubeconfig_path())
        .env("RUST_LOG", "warn");
    let operator = bed.spawn("operator", command).map_err(|e| e.to_string())?;
    let pid = operator.pid();

    // The cluster first: its CAs must exist before identities can be issued.
    let quickstart = manifests::quickstart().map_err(|e| e.to_string())?;
    let cluster = manifests::first_of_kind(&quickstart, "MqttCluster")
        .ok_or("the quickstart has no MqttCluster")?;
    manifests::apply(&client, cluster, &ns)
        .await
        .map_err(|e| e.to_string())?;
    let bundles = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &ns);
    wait::until(
        "the quickstart cluster's CA bundle",
        Duration::from_secs(120),
        || async {
            match bundles.get_opt("quickstart-ca-bundle").await {
                Ok(Some(_)) => Check::Done(()),
                Ok(None) => Check::NotYet("absent".into()),
                Err(e) => Check::NotYet(e.to_string()),
            }
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let (hwm_idle, _) = memory_mib(pid).ok_or("operator process gone")?;

    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &device_resource());
    // Watch first, so no Ready transition is missed.
    let mut events = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();

    let start = Instant::now();
    let n = o.devices;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let (api, next) = (api.clone(), next.clone());
        writers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), String>(());
                }
                let body: DynamicObject = serde_json::from_value(serde_json::json!({
                    "apiVersion": "mqtt.operator.dev/v1alpha1",
                    "kind": "DeviceIdentity",
                    "metadata": {"name": format!("dev-{i:05}"), "labels": {"fleet": "scale"}},
                    "spec": {"clusterRef": {"name": "quickstart"}, "deviceId": format!("dev-{i:05}")},
                }))
                .map_err(|e| e.to_string())?;
                api.create(&PostParams::default(), &body)
                    .await
                    .map_err(|e| format!("creating dev-{i:05}: {e}"))?;
            }
        }));
    }
    for w in writers {
        w.await.map_err(|e| e.to_string())??;
    }
    let created = start.elapsed();
    eprintln!("created {n} DeviceIdentities in {created:.1?}");

    let mut ready = HashSet::new();
    let mut last_report = Instant::now();
    while ready.len() < n {
        let left = DEADLINE.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(format!(
                "timed out after {DEADLINE:?}: {}/{n} Ready",
                ready.len()
            ));
        }
        match tokio::time::timeout(left, events.next()).await {
            Ok(Some(Ok(obj))) => {
                let name = obj.metadata.name.clone().unwrap_or_default();
                if is_ready(&obj) {
                    ready.insert(name);
                } else {
                    ready.remove(&name);
                }
            }
            Ok(Some(Err(e))) => eprintln!("watch error (retried): {e}"),
            Ok(None) => return Err("the watch ended".into()),
            Err(_) => continue,
        }
        if last_report.elapsed() > Duration::from_secs(15) {
            let mem =
                memory_mib(pid).map_or("?".into(), |(h, r)| format!("{r:.0} MiB (peak {h:.0})"));
            eprintln!(
                "{:>6.0} s: {}/{n} Ready, operator RSS {mem}",
                start.elapsed().as_secs_f64(),
                ready.len()
            );
            last_report = Instant::now();
        }
    }
    let wall = start.elapsed();
    let (hwm, rss) = memory_mib(pid).ok_or("operator process gone")?;
    if let Some(exit) = operator.exited() {
        return Err(format!("the operator exited: {exit}"));
    }
    println!(
        "devices-scale: {n} DeviceIdentities on the test bed (Kubernetes {}), real `mqtt-operator run` ({})",
        e2e::KUBERNETES_VERSION,
        o.operator.display()
    );
    println!(
        "  {:<34} {:>10}   target (DESIGN §10)",
        "figure", "measured"
    );
    println!(
        "  {:<34} {:>8.1} s   < {} s",
        "apply → all Ready (wall)",
        wall.as_secs_f64(),
        TARGET_WALL.as_secs()
    );
    println!(
        "  {:<34} {:>8.1} s",
        "  of which creating the objects",
        created.as_secs_f64()
    );
    println!(
        "  {:<34} {:>8.0} /s",
        "identities Ready per second",
        n as f64 / wall.as_secs_f64()
    );
    println!(
        "  {:<34} {:>6.1} MiB   < {TARGET_RSS_MIB} MiB",
        "operator peak RSS (VmHWM)", hwm
    );
    println!("  {:<34} {:>6.1} MiB", "operator RSS at the end", rss);
    println!(
        "  {:<34} {:>6.1} MiB",
        "operator peak RSS before devices", hwm_idle
    );
    drop(operator);
    drop(bed);
    Ok(())
}
