//! Issue #7, the device part, end to end with running brokers: the operator's controllers run
//! in-process, the pod stand-in runs the quickstart's core pods as real `mqtt-broker` processes,
//! and devices connect with the certificates FROM THEIR DeviceIdentity Secrets (mosquitto_pub
//! and rumqttc). Checks the sensors policy (allowed delivered, denied refused), revocation
//! (the live session drops, measured; reconnect refused), suspension and reactivation, rotation
//! (new and old certificates both accepted) and CSR mode (the test's own key).

#[path = "../../operator/tests/support/tool.rs"]
mod tool;

#[path = "support/in_process.rs"]
mod in_process;

#[allow(dead_code)]
#[path = "support/devices.rs"]
mod support;

#[allow(dead_code)]
#[path = "support/mqtt.rs"]
mod mqtt;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crds::condition::{find, ACL_APPLIED, READY};
use crds::{DeviceIdentity, MqttCluster};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::Client;

use e2e::manifests;
use e2e::standin::StandIn;
use e2e::wait::{self, Check};
use operator::render::names::Names;

use mqtt::{connect, Creds, Mqtt};
use support::*;

const CLUSTER: &str = "quickstart";
const CONVERGE_CLUSTER: Duration = Duration::from_secs(180);
/// Revoke → session dropped must stay below this.
const DROP_BOUND: Duration = Duration::from_secs(2);
/// Devices revoked while connected (sensor-02 and these), for the drop figure.
const EXTRA_REVOKED: usize = 4;
/// The gateway's subscription.
const SITE_TELEMETRY: &str = "sites/lyon/devices/+/telemetry/#";

/// Retries `connect` until it succeeds (`want_ok`) or is refused with CONNACK NotAuthorized, at
/// most `within`.
async fn connect_until(host: &str, creds: &Creds, id: &str, want_ok: bool, within: Duration) {
    let deadline = Instant::now() + within;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let got = connect(host, creds, &format!("{id}-{attempt}")).await;
        match &got {
            Ok(_) if want_ok => return,
            Err(e) if !want_ok && e.contains("NotAuthorized") => return,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "{id}: connection still {} after {within:?}: {:?}",
            if want_ok { "refused" } else { "accepted" },
            got.err()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publishes `topic`/`payload` then a marker on `marker_topic`; true when the gateway got the
/// payload (with the marker or within 1 s after it: topics are not ordered between each other).
async fn delivered(gw: &mut Mqtt, from: &Mqtt, topic: &str, marker_topic: &str, tag: &str) -> bool {
    let payload = format!("payload-{tag}");
    let marker = format!("marker-{tag}");
    from.publish(topic, &payload).await;
    from.publish(marker_topic, &marker).await;
    let mut seen = Vec::new();
    assert!(
        gw.receive_noting(&marker, Duration::from_secs(10), &mut seen)
            .await
            .is_some(),
        "{tag}: marker on {marker_topic} not delivered"
    );
    seen.contains(&payload)
        || gw
            .receive_noting(&payload, Duration::from_secs(1), &mut seen)
            .await
            .is_some()
}

/// Runs `mosquitto_pub -d` (MQTT 5, QoS 1) with the files of `dir`; returns (exit success,
/// stdout + stderr).
async fn mosquitto_pub(
    bin: &Path,
    dir: &Path,
    host: &str,
    topic: &str,
    msg: &str,
) -> (bool, String) {
    let mut cmd = Command::new("timeout");
    cmd.arg("20").arg(bin);
    cmd.args(["-h", host, "-p", "8883", "-V", "mqttv5", "-q", "1", "-d"]);
    cmd.args([
        "--cafile", "ca.crt", "--cert", "tls.crt", "--key", "tls.key",
    ]);
    cmd.args(["-i", &format!("mp-{msg}"), "-t", topic, "-m", msg]);
    cmd.current_dir(dir);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run mosquitto_pub");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(
        out.status.code(),
        Some(124),
        "mosquitto_pub timed out: {text}"
    );
    (out.status.success(), text)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn device_serial(client: &Client, ns: &str, name: &str) -> String {
    let d = Api::<DeviceIdentity>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("device");
    d.status.and_then(|s| s.serial).expect("status.serial")
}

/// Applies a DeviceIdentity of the Lyon site with `class` label (and optionally a CSR).
async fn apply_labelled(client: &Client, ns: &str, name: &str, class: &str, csr: Option<&str>) {
    let mut spec = serde_json::json!({"clusterRef": {"name": CLUSTER}, "deviceId": name});
    if let Some(csr) = csr {
        spec["csr"] = serde_json::json!(csr);
    }
    let body = serde_json::json!({
        "apiVersion": "mqtt.operator.dev/v1alpha1",
        "kind": "DeviceIdentity",
        "metadata": {"name": name, "labels": {"site": "lyon", "class": class}},
        "spec": spec,
    });
    Api::<DeviceIdentity>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply("e2e-user").force(),
            &Patch::Apply(&body),
        )
        .await
        .unwrap_or_else(|e| panic!("apply DeviceIdentity {name}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_connect_with_their_secrets_and_revoke_suspend_rotate_csr_take_effect() {
    let Some(bed) = e2e::shared() else { return };
    let Some(broker) = e2e::standin::broker_or_skip() else {
        return;
    };
    let Some(openssl) = openssl() else { return };
    let Some(mosquitto) = tool::require("mosquitto_pub", "mosquitto-clients") else {
        return;
    };
    in_process::operator_running(bed);
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("dev-life").await.expect("namespace");
    let standin = StandIn::start(bed, &ns, broker).expect("stand-in");
    for m in manifests::quickstart().expect("quickstart") {
        manifests::apply(&client, &m, &ns).await.expect("apply");
    }
    let clusters = Api::<MqttCluster>::namespaced(client.clone(), &ns);
    wait::until(
        "MqttCluster Ready=True and AclApplied=True",
        CONVERGE_CLUSTER,
        || async {
            if let Err(e) = bed.check_alive() {
                return Check::Fatal(e.to_string());
            }
            let Ok(c) = clusters.get(CLUSTER).await else {
                return Check::NotYet("no cluster".into());
            };
            let s = c.status.unwrap_or_default();
            let ok = |t| find(&s.conditions, t).is_some_and(|c| c.status == "True");
            if ok(READY) && ok(ACL_APPLIED) {
                Check::Done(())
            } else {
                Check::NotYet(format!("{:?}", s.conditions))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    for d in ["sensor-01", "sensor-02", "gateway-lyon"] {
        wait_ready(&client, &ns, d).await;
    }
    let host = Names::new(CLUSTER).pod_dns(0, &ns);

    // 1. Connect with the Secrets' certificates: the gateway sees what sensor-01 may publish.
    let gw_creds = Creds::issued(&client, &ns, "gateway-lyon").await;
    let s1_creds = Creds::issued(&client, &ns, "sensor-01").await;
    assert!(s1_creds.has_key(), "operator-generated key in the Secret");
    let mut gw = connect(&host, &gw_creds, "gw")
        .await
        .expect("gateway connects");
    gw.subscribe(SITE_TELEMETRY).await;
    let s1 = connect(&host, &s1_creds, "s1")
        .await
        .expect("sensor-01 connects");
    let own = "sites/lyon/devices/sensor-01/telemetry/t";
    let other = "sites/lyon/devices/sensor-02/telemetry/t";
    // The subscription is live once a first own publish arrives (bounded).
    let deadline = Instant::now() + Duration::from_secs(20);
    for probe in 0.. {
        s1.publish(own, &format!("probe-{probe}")).await;
        if gw
            .receive_noting(
                &format!("probe-{probe}"),
                Duration::from_millis(500),
                &mut Vec::new(),
            )
            .await
            .is_some()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gateway never received sensor-01"
        );
    }
    assert!(
        delivered(&mut gw, &s1, own, own, "own").await,
        "own telemetry allowed"
    );
    assert!(
        !delivered(&mut gw, &s1, other, own, "forged").await,
        "sensor-01 may not publish sensor-02's telemetry"
    );
    // The same with mosquitto_pub and the Secret's files.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tls.crt"), &s1_creds.cert_pem).expect("write");
    std::fs::write(dir.path().join("tls.key"), &s1_creds.key_pem).expect("write");
    std::fs::write(dir.path().join("ca.crt"), &s1_creds.ca_pem).expect("write");
    let (ok, out) = mosquitto_pub(&mosquitto, dir.path(), &host, own, "mp-allowed").await;
    assert!(
        ok && out.contains("received PUBACK") && !out.contains("Not authorized"),
        "mosquitto_pub allowed publish failed: {out}"
    );
    assert!(
        gw.receive_noting("mp-allowed", Duration::from_secs(10), &mut Vec::new())
            .await
            .is_some(),
        "mosquitto_pub's allowed publish not delivered"
    );
    let (ok, out) = mosquitto_pub(&mosquitto, dir.path(), &host, other, "mp-denied").await;
    eprintln!(
        "mosquitto_pub denied publish: exit ok={ok}; output: {}",
        out.trim()
    );
    // mosquitto_pub 2.0 exits 0 on a refused QoS 1 publish: the refusal is the PUBACK reason
    // code 135 (0x87, Not authorized) it prints with -d, and its warning.
    assert!(
        out.contains("RC:135") && out.contains("Not authorized"),
        "a denied QoS 1 publish gets PUBACK 0x87: {out}"
    );
    let mut seen = Vec::new();
    s1.publish(own, "after-mp-denied").await;
    assert!(gw
        .receive_noting("after-mp-denied", Duration::from_secs(10), &mut seen)
        .await
        .is_some());
    assert!(
        !seen.iter().any(|p| p == "mp-denied")
            && gw
                .receive_noting("mp-denied", Duration::from_secs(1), &mut seen)
                .await
                .is_none(),
        "mosquitto_pub's denied publish was delivered"
    );

    // 2. Revoke while connected: the session drops within DROP_BOUND; reconnect refused.
    let mut revoke_names = vec!["sensor-02".to_string()];
    for n in 0..EXTRA_REVOKED {
        let name = format!("rev-{n}");
        apply_labelled(&client, &ns, &name, "sensor", None).await;
        revoke_names.push(name);
    }
    let mut drops = Vec::new();
    for name in &revoke_names {
        wait_ready(&client, &ns, name).await;
        let creds = Creds::issued(&client, &ns, name).await;
        let mut session = connect(&host, &creds, name)
            .await
            .unwrap_or_else(|e| panic!("{name} connects before revocation: {e}"));
        let t0 = Instant::now();
        patch_device(
            &client,
            &ns,
            name,
            serde_json::json!({"spec": {"state": "Revoked"}}),
        )
        .await;
        let (at, why) = session
            .ended(Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("{name}: session not dropped within 15 s of Revoked"));
        let took = at.saturating_duration_since(t0);
        eprintln!(
            "{name}: revoked -> session dropped in {:.0} ms ({why})",
            ms(took)
        );
        drops.push(took);
        match connect(&host, &creds, &format!("{name}-again")).await {
            Ok(_) => panic!("{name}: reconnect with a revoked certificate accepted"),
            Err(e) => assert!(
                e.contains("NotAuthorized"),
                "{name}: reconnect not refused with CONNACK NotAuthorized: {e}"
            ),
        }
    }
    drops.sort();
    eprintln!(
        "DeviceIdentity Revoked -> live session dropped ({} devices): p50 {:.0} ms, max {:.0} ms (bound {} ms)",
        drops.len(),
        ms(drops[drops.len() / 2]),
        ms(drops[drops.len() - 1]),
        DROP_BOUND.as_millis()
    );
    assert!(
        drops.iter().all(|d| *d < DROP_BOUND),
        "revoke -> drop over {DROP_BOUND:?}: {drops:?}"
    );

    // Suspended → refused; Active again → accepted.
    apply_labelled(&client, &ns, "pause-1", "sensor", None).await;
    wait_ready(&client, &ns, "pause-1").await;
    let pause = Creds::issued(&client, &ns, "pause-1").await;
    connect_until(&host, &pause, "pause-1", true, Duration::from_secs(10)).await;
    let serial = device_serial(&client, &ns, "pause-1").await;
    patch_device(
        &client,
        &ns,
        "pause-1",
        serde_json::json!({"spec": {"state": "Suspended"}}),
    )
    .await;
    wait_revoked(&client, &ns, &serial, true).await;
    connect_until(&host, &pause, "pause-1s", false, Duration::from_secs(10)).await;
    patch_device(
        &client,
        &ns,
        "pause-1",
        serde_json::json!({"spec": {"state": "Active"}}),
    )
    .await;
    wait_revoked(&client, &ns, &serial, false).await;
    connect_until(&host, &pause, "pause-1a", true, Duration::from_secs(10)).await;

    // 3. Rotate sensor-01: new serial in Secret and status, old in previousSerials; both certs
    // are accepted.
    let old_serial = device_serial(&client, &ns, "sensor-01").await;
    patch_device(
        &client,
        &ns,
        "sensor-01",
        serde_json::json!({"metadata": {"annotations": {"mqtt.operator.dev/rotate": "lifecycle-1"}}}),
    )
    .await;
    let old_norm = normalize_serial(&old_serial);
    let rotated = wait_device(&client, &ns, "sensor-01", "rotated", |d| {
        d.status.as_ref().is_some_and(|s| {
            s.serial.as_deref().map(normalize_serial) != Some(old_norm.clone())
                && s.previous_serials
                    .iter()
                    .any(|p| normalize_serial(&p.serial) == old_norm)
        })
    })
    .await;
    let new_serial = rotated.status.and_then(|s| s.serial).expect("serial");
    let new_creds = wait::until(
        "sensor-01 Secret holds the new certificate",
        CONVERGE,
        || async {
            match Creds::from_secret(&client, &ns, "sensor-01").await {
                Some(c) if c.cert_pem != s1_creds.cert_pem => Check::Done(c),
                _ => Check::NotYet("old certificate".into()),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("new.crt"), &new_creds.cert_pem).expect("write");
    let printed = run_openssl(
        &openssl,
        dir.path(),
        &["x509", "-in", "new.crt", "-noout", "-serial"],
    );
    assert_eq!(
        normalize_serial(&printed),
        normalize_serial(&new_serial),
        "Secret = status"
    );
    drop(s1);
    let s1_new = connect(&host, &new_creds, "s1-new")
        .await
        .expect("new certificate accepted");
    assert!(delivered(&mut gw, &s1_new, own, own, "rotated").await);
    connect(&host, &s1_creds, "s1-old")
        .await
        .expect("old certificate still accepted (not expired, not revoked)");
    eprintln!("sensor-01 rotated: serial {old_serial} -> {new_serial}; both accepted");

    // 4. CSR mode: the test's key, the Secret's certificate; the sensors policy applies.
    run_openssl(
        &openssl,
        dir.path(),
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "own.key",
            "-subj",
            "/CN=own-key",
            "-out",
            "own.csr",
        ],
    );
    let csr = std::fs::read_to_string(dir.path().join("own.csr")).expect("CSR");
    apply_labelled(&client, &ns, "own-key", "sensor", Some(&csr)).await;
    wait_ready(&client, &ns, "own-key").await;
    let mut own_creds = Creds::issued(&client, &ns, "own-key").await;
    assert!(
        !own_creds.has_key(),
        "no private key in the Secret in CSR mode"
    );
    own_creds.key_pem = std::fs::read_to_string(dir.path().join("own.key")).expect("key");
    let own_key = connect(&host, &own_creds, "own-key")
        .await
        .expect("CSR-mode device connects with its own key");
    let own_topic = "sites/lyon/devices/own-key/telemetry/t";
    // Its labels reach the nodes' ACL by push: allowed delivery within a bounded wait.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut round = 0;
    while !delivered(
        &mut gw,
        &own_key,
        own_topic,
        own_topic,
        &format!("csr-{round}"),
    )
    .await
    {
        assert!(
            Instant::now() < deadline,
            "own-key's own telemetry never delivered"
        );
        round += 1;
    }
    assert!(
        !delivered(&mut gw, &own_key, own, own_topic, "csr-forged").await,
        "own-key may not publish sensor-01's telemetry"
    );

    drop(own_key);
    drop(s1_new);
    drop(gw);
    clusters
        .delete(CLUSTER, &DeleteParams::default())
        .await
        .expect("delete cluster");
    drop(standin);
}
