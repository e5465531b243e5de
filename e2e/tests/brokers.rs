//! Running brokers on the test bed: the operator's controllers run in-process (as in
//! `tests/operator.rs`), the pod stand-in (`e2e::standin`) runs each StatefulSet pod as a real
//! `mqtt-broker` on its own loopback address with its pod DNS names in `/etc/hosts`, and real
//! clients (rumqttc and Debian's `mosquitto_pub`/`mosquitto_sub`) connect over mutual TLS to
//! the pod DNS names, verifying the server certificate's hostname.

#[path = "support/in_process.rs"]
mod in_process;
#[allow(dead_code)]
#[path = "support/mqtt.rs"]
mod mqtt;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crds::condition::{find, MONITORING_READY, READY};
use crds::MqttCluster;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::Client;
use rumqttc::{AsyncClient, Event, Packet, QoS};

use e2e::manifests;
use e2e::standin::{hosts, StandIn};
use e2e::wait::{self, Check};
use operator::render::names::{Names, CONFIG_HASH_ANNOTATION};

use in_process::operator_running;
use mqtt::{connect, options, Creds, Mqtt};

const CLUSTER: &str = "quickstart";
/// Brokers start in order (OrderedReady), each joining raft: generous on a loaded 2-core box.
const CONVERGE: Duration = Duration::from_secs(180);

/// A started quickstart: bed, stand-in, client, namespace.
struct Running {
    bed: &'static e2e::TestBed,
    standin: Option<StandIn>,
    client: Client,
    ns: String,
}

async fn quickstart(prefix: &str) -> Option<Running> {
    let bed = e2e::shared()?;
    let broker = e2e::standin::broker_or_skip()?;
    operator_running(bed);
    let client = bed.client().await.expect("client");
    let ns = bed.namespace(prefix).await.expect("namespace");
    let standin = StandIn::start(bed, &ns, broker).expect("stand-in");
    for m in manifests::quickstart().expect("quickstart") {
        manifests::apply(&client, &m, &ns)
            .await
            .expect("apply quickstart");
    }
    Some(Running {
        bed,
        standin: Some(standin),
        client,
        ns,
    })
}

impl Running {
    fn standin(&self) -> &StandIn {
        self.standin.as_ref().expect("stand-in running")
    }

    async fn wait_ready(&self, replicas: i32) -> MqttCluster {
        let api = Api::<MqttCluster>::namespaced(self.client.clone(), &self.ns);
        let what = format!("MqttCluster Ready=True with core.ready={replicas}");
        let started = Instant::now();
        let c = wait::until(&what, CONVERGE, || async {
            if let Err(e) = self.bed.check_alive() {
                return Check::Fatal(e.to_string());
            }
            match api.get(CLUSTER).await {
                Ok(c) => {
                    let s = c.status.clone().unwrap_or_default();
                    let ready = find(&s.conditions, READY).is_some_and(|r| r.status == "True");
                    let core = s.core.as_ref().map(|c| (c.ready, c.desired));
                    if ready && core == Some((replicas, replicas)) {
                        Check::Done(c)
                    } else {
                        Check::NotYet(format!(
                            "core {core:?}, Ready {:?}, processes {:?}",
                            find(&s.conditions, READY).map(|r| (&r.status, &r.message)),
                            self.standin().processes()
                        ))
                    }
                }
                Err(e) => Check::NotYet(e.to_string()),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "brokers: {what} after {:.1} s",
            started.elapsed().as_secs_f64()
        );
        c
    }

    /// Device `name`'s credentials from its DeviceIdentity Secret (issued by the controller).
    async fn device(&self, name: &str) -> Creds {
        Creds::issued(&self.client, &self.ns, name).await
    }

    fn pod_host(&self, n: i32) -> String {
        Names::new(CLUSTER).pod_dns(n, &self.ns)
    }

    fn hosts_lines(&self) -> Vec<String> {
        let owner = format!("{} {}", hosts::MARK, self.standin().hosts_owner());
        std::fs::read_to_string(hosts::HOSTS_FILE)
            .expect("read /etc/hosts")
            .lines()
            .filter(|l| l.ends_with(&owner))
            .map(str::to_string)
            .collect()
    }
}

/// Subscribes on one node and publishes on another until a message crosses (the subscription
/// is propagated between nodes asynchronously), at most `within`.
async fn delivered_across(sub: &mut Mqtt, publisher: &Mqtt, topic: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut n = 0;
    while Instant::now() < deadline {
        n += 1;
        let payload = format!("probe-{n}");
        publisher.publish(topic, &payload).await;
        if sub
            .receive(&payload, Duration::from_millis(500))
            .await
            .is_some()
        {
            return true;
        }
    }
    false
}

fn mosquitto_or_skip() -> bool {
    let found = ["mosquitto_pub", "mosquitto_sub"]
        .iter()
        .all(|t| Command::new(t).arg("--help").output().is_ok());
    if !found {
        if e2e::in_ci() {
            panic!("CI=true and mosquitto-clients is not installed (scripts/install-deps.sh installs it)");
        }
        eprintln!("SKIPPED (not CI): mosquitto_pub/mosquitto_sub not installed");
    }
    found
}

fn tls_args(host: &str, files: &[String; 3]) -> Vec<String> {
    [
        "-h", host, "-p", "8883", "--cafile", &files[0], "--cert", &files[1], "--key", &files[2],
        "-q", "1",
    ]
    .map(str::to_string)
    .to_vec()
}

fn pids_alive(pids: &[u32]) -> Vec<u32> {
    pids.iter()
        .copied()
        .filter(|p| e2e::process::is_alive(*p))
        .collect()
}

/// Processes whose command line points into `dir` (the stand-in's pod directories).
fn processes_under(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
                && e2e::process::is_alive(*pid)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_runs_three_brokers_serving_mtls_clients_by_pod_dns_name_and_cleans_up() {
    let Some(mut run) = quickstart("brokers-qs").await else {
        return;
    };
    let cluster = run.wait_ready(3).await;
    // The shared bed has no Prometheus Operator CRDs: the quickstart asks for a ServiceMonitor
    // and a PrometheusRule, and is Ready all the same, saying why monitoring is not.
    let monitoring = cluster
        .status
        .as_ref()
        .and_then(|s| find(&s.conditions, MONITORING_READY))
        .map(|c| (c.status.clone(), c.reason.clone()));
    assert_eq!(
        monitoring,
        Some(("False".to_string(), "CrdMissing".to_string())),
        "Ready without the monitoring CRDs, and the condition says why"
    );
    let procs = run.standin().processes();
    assert_eq!(procs.len(), 3, "{procs:?}");
    let ips: BTreeSet<_> = procs.iter().map(|p| p.ip).collect();
    assert_eq!(ips.len(), 3, "one address per pod: {procs:?}");
    assert!(
        procs.iter().all(|p| p.ip.octets()[..2] == [127, 77]),
        "{procs:?}"
    );
    let pods = Api::<Pod>::namespaced(run.client.clone(), &run.ns);
    for p in &procs {
        let pod = pods.get(&p.pod).await.expect("pod");
        let status = pod.status.unwrap_or_default();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip, Some(p.ip.to_string()));
    }
    let lines = run.hosts_lines();
    for n in 0..3 {
        assert!(
            lines.iter().any(|l| l.contains(&run.pod_host(n))),
            "{lines:?}"
        );
    }

    // rumqttc: gateway on node 1 receives sensor-01's telemetry published on node 0.
    let gateway = run.device("gateway-lyon").await;
    let sensor = run.device("sensor-01").await;
    let mut sub = connect(&run.pod_host(1), &gateway, "gw-rumqttc")
        .await
        .expect("gateway connects");
    sub.subscribe("sites/lyon/devices/+/telemetry/#").await;
    let publisher = connect(&run.pod_host(0), &sensor, "s1-rumqttc")
        .await
        .expect("sensor connects");
    assert!(
        delivered_across(
            &mut sub,
            &publisher,
            "sites/lyon/devices/sensor-01/telemetry/t",
            Duration::from_secs(20)
        )
        .await,
        "allowed publish delivered from node 0 to node 1"
    );
    // Denied: sensor-01 may not publish sensor-02's telemetry.
    publisher
        .publish("sites/lyon/devices/sensor-02/telemetry/t", "forged")
        .await;
    publisher
        .publish("sites/lyon/devices/sensor-01/telemetry/t", "after-forged")
        .await;
    // "forged" was published before "after-forged" on the same connection: had it been
    // allowed it would have arrived first.
    let mut before = Vec::new();
    assert!(sub
        .receive_noting("after-forged", Duration::from_secs(10), &mut before)
        .await
        .is_some());
    assert!(!before.iter().any(|p| p == "forged"), "{before:?}");

    // A certificate for the wrong host name fails verification: the name really is checked.
    let wrong = connect(&procs[0].ip.to_string(), &sensor, "by-ip").await;
    assert!(
        wrong.is_err(),
        "connecting by IP must fail hostname verification"
    );

    // Volumes follow their objects: a new TopicPolicy changes the config ConfigMap's compiled
    // rule set; the stand-in rewrites every pod's acl.bin, the brokers reload it, and the newly
    // allowed route works.
    let extra = serde_yaml::from_str::<serde_json::Value>(
        "apiVersion: mqtt.operator.dev/v1alpha1\nkind: TopicPolicy\nmetadata: {name: extra}\n\
         spec:\n  clusterRef: {name: quickstart}\n  subjects: [{device: sensor-01}, {device: gateway-lyon}]\n\
         \x20 rules:\n  - {effect: allow, actions: [publish, subscribe], topics: ['sites/lyon/extra/#']}\n",
    )
    .expect("policy yaml");
    let acl_before = std::fs::read(procs[0].dir.join("volumes/config/acl.bin")).expect("acl.bin");
    manifests::apply(
        &run.client,
        &manifests::Manifest {
            path: "extra.yaml".into(),
            value: extra,
        },
        &run.ns,
    )
    .await
    .expect("apply TopicPolicy");
    let cms = Api::<ConfigMap>::namespaced(run.client.clone(), &run.ns);
    let config = Names::new(CLUSTER).config();
    let synced = Instant::now();
    wait::until(
        "acl.bin rewritten in every pod from the ConfigMap",
        Duration::from_secs(60),
        || async {
            let Ok(cm) = cms.get(&config).await else {
                return Check::NotYet("ConfigMap".into());
            };
            let want = cm
                .binary_data
                .unwrap_or_default()
                .get("acl.bin")
                .map(|b| b.0.clone())
                .unwrap_or_default();
            if want == acl_before {
                return Check::NotYet("the operator has not recompiled the rule set yet".into());
            }
            let stale: Vec<_> = procs
                .iter()
                .filter(|p| {
                    std::fs::read(p.dir.join("volumes/config/acl.bin")).ok() != Some(want.clone())
                })
                .map(|p| p.pod.clone())
                .collect();
            if stale.is_empty() {
                Check::Done(())
            } else {
                Check::NotYet(format!("stale: {stale:?}"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "brokers: ConfigMap change in every pod's files after {:.2} s",
        synced.elapsed().as_secs_f64()
    );
    let mut extra_sub = connect(&run.pod_host(2), &gateway, "gw-extra")
        .await
        .expect("gateway connects");
    let extra_pub = connect(&run.pod_host(0), &sensor, "s1-extra")
        .await
        .expect("sensor connects");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut delivered = false;
    while !delivered && Instant::now() < deadline {
        // Subscribing is refused until the broker reloaded the new rule set: retry both.
        extra_sub.subscribe("sites/lyon/extra/#").await;
        delivered = delivered_across(
            &mut extra_sub,
            &extra_pub,
            "sites/lyon/extra/x",
            Duration::from_secs(2),
        )
        .await;
    }
    assert!(
        delivered,
        "the route the new policy allows works after the file sync"
    );
    drop((extra_sub, extra_pub));

    // mosquitto clients against node 2 (subscriber) and node 0 (publisher).
    if mosquitto_or_skip() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let gw_files = gateway.write(tmp.path());
        let s_files = sensor.write(tmp.path());
        let mut sub_cmd = Command::new("mosquitto_sub");
        sub_cmd.args(tls_args(&run.pod_host(2), &gw_files)).args([
            "-i",
            "gw-mosquitto",
            "-t",
            "sites/lyon/devices/+/telemetry/#",
            "-C",
            "1",
            "-W",
            "30",
            "-v",
        ]);
        let sub_child = sub_cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("mosquitto_sub");
        // Publish repeatedly until the subscriber (and the cross-node route) is in place.
        let started = Instant::now();
        let pid = sub_child.id();
        let mut published = Vec::new();
        while e2e::process::is_alive(pid) && started.elapsed() < Duration::from_secs(25) {
            let out = Command::new("mosquitto_pub")
                .args(tls_args(&run.pod_host(0), &s_files))
                .args([
                    "-i",
                    "s1-mosquitto",
                    "-t",
                    "sites/lyon/devices/sensor-01/telemetry/m",
                    "-m",
                    "from-mosquitto",
                ])
                .output()
                .expect("mosquitto_pub");
            published.push(out.status.success());
            assert!(
                out.status.success(),
                "mosquitto_pub: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let out = sub_child.wait_with_output().expect("mosquitto_sub output");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success()
                && stdout.contains("sites/lyon/devices/sensor-01/telemetry/m from-mosquitto"),
            "mosquitto_sub: {} {stdout} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Delete the cluster: pods gone (the garbage collector deletes the StatefulSet, the
    // stand-in stops each process and finalises), no broker process left, hosts lines gone.
    let pids: Vec<u32> = procs.iter().map(|p| p.pid).collect();
    drop((sub, publisher));
    Api::<MqttCluster>::namespaced(run.client.clone(), &run.ns)
        .delete(CLUSTER, &DeleteParams::background())
        .await
        .expect("delete cluster");
    wait::until("pods deleted", Duration::from_secs(90), || async {
        match pods.list(&Default::default()).await {
            Ok(l) if l.items.is_empty() => Check::Done(()),
            Ok(l) => Check::NotYet(format!("{} pods left", l.items.len())),
            Err(e) => Check::NotYet(e.to_string()),
        }
    })
    .await
    .expect("pods gone");
    let alive = e2e::process::wait_gone(&pids, Duration::from_secs(15));
    assert!(alive.is_empty(), "broker processes left: {alive:?}");
    assert!(run.standin().processes().is_empty());
    assert!(processes_under(run.standin().root()).is_empty());
    // Hosts lines are rewritten on the next tick after the last pod went.
    wait::until("hosts lines removed", Duration::from_secs(10), || async {
        let lines = run.hosts_lines();
        if lines.is_empty() {
            Check::Done(())
        } else {
            Check::NotYet(format!("{lines:?}"))
        }
    })
    .await
    .expect("hosts lines removed");
    drop(run.standin.take());
    assert!(pids_alive(&pids).is_empty());
}

/// Continuous traffic through the client Service name (`quickstart.<ns>.svc`, resolving to the
/// ready pods): sensor-01 publishes a numbered message every 200 ms, the gateway receives them;
/// both reconnect (and the gateway resubscribes) when their node restarts.
struct Traffic {
    received: std::sync::Arc<std::sync::Mutex<Vec<Instant>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Traffic {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

const TRAFFIC_TOPIC: &str = "sites/lyon/devices/sensor-01/telemetry/traffic";

impl Traffic {
    async fn start(run: &Running) -> Traffic {
        let host = format!("{CLUSTER}.{}.svc", run.ns);
        let gateway = run.device("gateway-lyon").await;
        let sensor = run.device("sensor-01").await;
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (sub, mut sub_loop) = AsyncClient::new(options(&host, &gateway, "gw-traffic"), 100);
        let got = received.clone();
        let sub_task = tokio::spawn(async move {
            loop {
                match sub_loop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ =
                            sub.try_subscribe("sites/lyon/devices/+/telemetry/#", QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == TRAFFIC_TOPIC => {
                        got.lock().unwrap().push(Instant::now());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        let (publisher, mut pub_loop) =
            AsyncClient::new(options(&host, &sensor, "s1-traffic"), 100);
        let pub_loop_task = tokio::spawn(async move {
            loop {
                if pub_loop.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
        let pub_task = tokio::spawn(async move {
            for n in 0u64.. {
                let _ = publisher.try_publish(TRAFFIC_TOPIC, QoS::AtMostOnce, false, n.to_string());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let traffic = Traffic {
            received,
            tasks: vec![sub_task, pub_loop_task, pub_task],
        };
        traffic.flowing("traffic flowing at start").await;
        traffic
    }

    /// Waits (up to 60 s) for a message received after now.
    async fn flowing(&self, what: &str) {
        let since = Instant::now();
        wait::until(what, Duration::from_secs(60), || async {
            let got = self.received.lock().unwrap();
            match got.last() {
                Some(t) if *t > since => Check::Done(()),
                _ => Check::NotYet(format!("{} messages, none since the wait began", got.len())),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Longest interval without a delivery between `from` and now.
    fn longest_gap(&self, from: Instant) -> Duration {
        let got = self.received.lock().unwrap();
        let mut last = from;
        let mut gap = Duration::ZERO;
        for t in got
            .iter()
            .filter(|t| **t >= from)
            .chain(std::iter::once(&Instant::now()))
        {
            gap = gap.max(t.duration_since(last));
            last = *t;
        }
        gap
    }
}

/// `GET /readyz` on a pod's HTTP port (HTTP/1.0, bounded by 3 s): the JSON body.
async fn readyz(ip: &str) -> Option<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = u16::try_from(operator::render::names::HTTP_PORT).ok()?;
    let work = async {
        let mut s = tokio::net::TcpStream::connect((ip, port)).await.ok()?;
        s.write_all(format!("GET /readyz HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        serde_json::from_str(text.split_once("\r\n\r\n")?.1).ok()
    };
    tokio::time::timeout(Duration::from_secs(3), work)
        .await
        .ok()
        .flatten()
}

/// What [`sample_shrink_order`] saw.
struct ShrinkOrder {
    samples: usize,
    /// Samples with the StatefulSet still at 5 replicas and pod 0 already at 3 voters.
    held: usize,
    /// Samples with the StatefulSet below 5 replicas while pod 0 still reported more than 3.
    violations: Vec<(i32, u64)>,
}

/// Samples every 200 ms, until stopped: the StatefulSet's replicas, then pod 0's `raftVoters`.
/// Reading them in that order, a smaller StatefulSet seen with pod 0 still above 3 voters means
/// the operator shrank it before the voter set.
fn sample_shrink_order(
    run: &Running,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<ShrinkOrder>,
) {
    let sts = Api::<StatefulSet>::namespaced(run.client.clone(), &run.ns);
    let pods = Api::<Pod>::namespaced(run.client.clone(), &run.ns);
    let names = Names::new(CLUSTER);
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut seen = ShrinkOrder {
            samples: 0,
            held: 0,
            violations: Vec::new(),
        };
        loop {
            let replicas = sts
                .get(&names.core())
                .await
                .ok()
                .and_then(|s| s.spec?.replicas);
            let ip = pods
                .get(&names.pod(0))
                .await
                .ok()
                .and_then(|p| p.status?.pod_ip);
            let voters = match ip {
                Some(ip) => readyz(&ip)
                    .await
                    .and_then(|j| j.get("raftVoters")?.as_u64()),
                None => None,
            };
            if let (Some(r), Some(v)) = (replicas, voters) {
                seen.samples += 1;
                if r == 5 && v == 3 {
                    seen.held += 1;
                }
                if r < 5 && v > 3 {
                    seen.violations.push((r, v));
                }
            }
            tokio::select! {
                _ = &mut stopped => return seen,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    });
    (stop, task)
}

/// Samples the number of Ready pods every 250 ms until stopped; returns the minimum seen.
fn sample_ready_pods(
    client: &Client,
    ns: &str,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<(usize, usize)>,
) {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let (mut min, mut samples) = (usize::MAX, 0);
        loop {
            if let Ok(list) = pods.list(&Default::default()).await {
                let ready = list
                    .items
                    .iter()
                    .filter(|p| {
                        p.metadata.deletion_timestamp.is_none()
                            && p.status
                                .as_ref()
                                .and_then(|s| s.conditions.as_ref())
                                .is_some_and(|c| {
                                    c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                                })
                    })
                    .count();
                min = min.min(ready);
                samples += 1;
            }
            tokio::select! {
                _ = &mut stopped => return (min, samples),
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    });
    (stop, task)
}

impl Running {
    async fn patch_cluster(&self, patch: serde_json::Value) {
        Api::<MqttCluster>::namespaced(self.client.clone(), &self.ns)
            .patch(CLUSTER, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch MqttCluster");
    }

    /// Waits until the StatefulSet rolled out completely: `replicas` pods, all of the update
    /// revision, all ready, and the cluster reports them.
    async fn wait_rolled_out(&self, replicas: i32) -> StatefulSet {
        let api = Api::<StatefulSet>::namespaced(self.client.clone(), &self.ns);
        let core = Names::new(CLUSTER).core();
        let started = Instant::now();
        let what = format!("StatefulSet rolled out with {replicas} ready replicas");
        let sts = wait::until(&what, CONVERGE, || async {
            match api.get(&core).await {
                Ok(s) => {
                    let st = s.status.clone().unwrap_or_default();
                    let done = st.observed_generation == s.metadata.generation
                        && s.spec.as_ref().and_then(|s| s.replicas) == Some(replicas)
                        && st.replicas == replicas
                        && st.updated_replicas == Some(replicas)
                        && st.ready_replicas == Some(replicas)
                        && st.current_revision.is_some()
                        && st.current_revision == st.update_revision;
                    if done {
                        Check::Done(s)
                    } else {
                        Check::NotYet(format!(
                            "{st:?}; processes {:?}",
                            self.standin().processes()
                        ))
                    }
                }
                Err(e) => Check::NotYet(e.to_string()),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "brokers: {what} after {:.1} s",
            started.elapsed().as_secs_f64()
        );
        self.wait_ready(replicas).await;
        sts
    }

    /// Waits until every core pod's `/readyz` reports `raftVoters == voters`.
    async fn wait_voters(&self, voters: u64) {
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.ns);
        let what = format!("every core pod reports raftVoters={voters}");
        let started = Instant::now();
        wait::until(&what, Duration::from_secs(60), || async {
            let list = match pods.list(&Default::default()).await {
                Ok(l) => l,
                Err(e) => return Check::NotYet(e.to_string()),
            };
            let mut seen = Vec::new();
            for p in &list.items {
                let Some(ip) = p.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
                    continue;
                };
                let v = readyz(&ip)
                    .await
                    .and_then(|j| j.get("raftVoters").and_then(serde_json::Value::as_u64));
                seen.push((p.metadata.name.clone().unwrap_or_default(), v));
            }
            if !seen.is_empty() && seen.iter().all(|(_, v)| *v == Some(voters)) {
                Check::Done(())
            } else {
                Check::NotYet(format!("{seen:?}"))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "brokers: {what} after {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    /// Sum of the pods' `restartCount` (in-place restarts after an exit).
    async fn restarts(&self) -> i32 {
        Api::<Pod>::namespaced(self.client.clone(), &self.ns)
            .list(&Default::default())
            .await
            .expect("list pods")
            .items
            .iter()
            .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
            .flatten()
            .map(|c| c.restart_count)
            .sum()
    }

    async fn pod_uids(&self) -> BTreeSet<String> {
        Api::<Pod>::namespaced(self.client.clone(), &self.ns)
            .list(&Default::default())
            .await
            .expect("list pods")
            .items
            .into_iter()
            .filter_map(|p| p.metadata.uid)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarting_config_change_and_scaling_3_5_3_roll_one_pod_at_a_time_while_serving() {
    let Some(run) = quickstart("brokers-roll").await else {
        return;
    };
    run.wait_rolled_out(3).await;
    let traffic = Traffic::start(&run).await;

    // A restart-requiring change: the broker limits are in broker.json, whose hash is the pod
    // template's config-hash annotation.
    let core = Names::new(CLUSTER).core();
    let sts = Api::<StatefulSet>::namespaced(run.client.clone(), &run.ns);
    let hash = |s: &StatefulSet| {
        s.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(CONFIG_HASH_ANNOTATION).cloned())
    };
    let before = hash(&sts.get(&core).await.expect("sts"));
    let uids_before = run.pod_uids().await;
    let (stop, sampler) = sample_ready_pods(&run.client, &run.ns);
    let from = Instant::now();
    run.patch_cluster(serde_json::json!({"spec": {"limits": {"maxConnections": 20000}}}))
        .await;
    wait::until(
        "the operator to change the config hash",
        CONVERGE,
        || async {
            match sts.get(&core).await {
                Ok(s) if hash(&s) != before => Check::Done(()),
                Ok(s) => Check::NotYet(format!("hash still {:?}", hash(&s))),
                Err(e) => Check::NotYet(e.to_string()),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let rolled = run.wait_rolled_out(3).await;
    let _ = stop.send(());
    let (min_ready, samples) = sampler.await.expect("sampler");
    assert_ne!(hash(&rolled), before, "the config hash annotation changed");
    let uids_after = run.pod_uids().await;
    assert!(
        uids_before.is_disjoint(&uids_after),
        "every pod was recreated: {uids_before:?} -> {uids_after:?}"
    );
    eprintln!(
        "brokers: config rollout: {samples} samples, at least {min_ready} of 3 pods ready \
         throughout, took {:.1} s",
        from.elapsed().as_secs_f64()
    );
    assert!(samples > 3, "sampled the rollout");
    assert!(
        min_ready >= 2,
        "at most one pod down at a time; saw {min_ready} ready"
    );
    traffic.flowing("traffic after the config rollout").await;
    let gap = traffic.longest_gap(from);
    eprintln!(
        "brokers: config rollout: longest delivery gap {:.1} s",
        gap.as_secs_f64()
    );
    assert!(
        gap < Duration::from_secs(30),
        "no delivery for {gap:?} during the rollout"
    );

    // Scale 3 -> 5: new pods join, and the peers in broker.json change, so the old pods roll
    // too.
    let from = Instant::now();
    run.patch_cluster(serde_json::json!({"spec": {"core": {"replicas": 5}}}))
        .await;
    run.wait_rolled_out(5).await;
    let procs = run.standin().processes();
    assert_eq!(procs.len(), 5, "{procs:?}");
    traffic.flowing("traffic after scaling to 5").await;
    let gap = traffic.longest_gap(from);
    eprintln!(
        "brokers: scale 3 -> 5 took {:.1} s, longest delivery gap {:.1} s",
        from.elapsed().as_secs_f64(),
        gap.as_secs_f64()
    );
    assert!(
        gap < Duration::from_secs(30),
        "no delivery for {gap:?} while scaling to 5"
    );
    run.wait_voters(5).await;

    // Scale 5 -> 3: the operator removes raft ids 5 and 4 before the StatefulSet shrinks, so
    // the rolling restart of pods 0-2 that follows (their peers change) keeps a quorum.
    let (stop_order, order) = sample_shrink_order(&run);
    let from = Instant::now();
    run.patch_cluster(serde_json::json!({"spec": {"core": {"replicas": 3}}}))
        .await;
    run.wait_rolled_out(3).await;
    let _ = stop_order.send(());
    let order = order.await.expect("order sampler");
    eprintln!(
        "brokers: scale 5 -> 3: {} samples; StatefulSet kept at 5 with pod 0 already at 3 voters \
         in {} of them",
        order.samples, order.held
    );
    assert!(order.samples > 3, "sampled the scale-down");
    assert!(
        order.violations.is_empty(),
        "the StatefulSet shrank before the voters were removed: {:?}",
        order.violations
    );
    let procs = run.standin().processes();
    assert_eq!(procs.len(), 3, "{procs:?}");
    traffic.flowing("traffic after scaling to 3").await;
    let gap = traffic.longest_gap(from);
    eprintln!(
        "brokers: scale 5 -> 3 took {:.1} s, longest delivery gap {:.1} s",
        from.elapsed().as_secs_f64(),
        gap.as_secs_f64()
    );
    assert!(
        gap < Duration::from_secs(30),
        "no delivery for {gap:?} while scaling to 3"
    );
    run.wait_voters(3).await;

    // A restart-requiring change after the scale-down rolls fine: with 3 voters, one pod down
    // leaves a quorum (with 5 stale voters it would not).
    let from = Instant::now();
    run.patch_cluster(serde_json::json!({"spec": {"limits": {"maxConnections": 30000}}}))
        .await;
    wait::until(
        "the operator to change the config hash again",
        CONVERGE,
        || async {
            match sts.get(&core).await {
                Ok(s) if hash(&s) != hash(&rolled) => Check::Done(()),
                Ok(s) => Check::NotYet(format!("hash still {:?}", hash(&s))),
                Err(e) => Check::NotYet(e.to_string()),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    run.wait_rolled_out(3).await;
    traffic
        .flowing("traffic after the rollout at 3 replicas")
        .await;
    let gap = traffic.longest_gap(from);
    eprintln!(
        "brokers: rollout after 5 -> 3 took {:.1} s, longest delivery gap {:.1} s",
        from.elapsed().as_secs_f64(),
        gap.as_secs_f64()
    );
    assert!(
        gap < Duration::from_secs(30),
        "no delivery for {gap:?} during the rollout after scaling down"
    );
    run.wait_voters(3).await;
    let procs = run.standin().processes();
    eprintln!(
        "brokers: container restarts in place (exit and kubelet restart) over the test: {}",
        run.restarts().await
    );

    // Dropping the stand-in (as at bed teardown) stops every broker and removes its hosts lines.
    drop(traffic);
    let pids: Vec<u32> = procs.iter().map(|p| p.pid).collect();
    let root = run.standin().root().to_path_buf();
    let mut run = run;
    drop(run.standin.take());
    assert!(
        pids_alive(&pids).is_empty(),
        "after drop: {:?}",
        pids_alive(&pids)
    );
    assert!(processes_under(&root).is_empty());
    let tag = format!(
        "{} {}",
        hosts::MARK,
        hosts::owner(std::process::id(), &run.ns)
    );
    let hosts_text = std::fs::read_to_string(hosts::HOSTS_FILE).expect("read /etc/hosts");
    assert!(!hosts_text.contains(&tag), "{hosts_text}");
}
