//! The DeviceIdentity controller against the real API server, with the controllers in-process:
//! the quickstart's identities get Secrets whose certificate chains to the clients CA (checked
//! with the openssl CLI) and whose key matches; the rotate annotation rotates; CSR mode signs the
//! device's own key and stores no private key; a CSR with another CN is refused; a duplicate
//! deviceId leaves the older identity alone; Suspended and Revoked serials reach the cluster's
//! revoked.json; a reconcile with nothing changed makes zero writes.

#[path = "../../operator/tests/support/tool.rs"]
mod tool;

#[path = "support/in_process.rs"]
mod in_process;
#[path = "support/devices.rs"]
mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crds::DeviceIdentity;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;

use e2e::manifests::{self, Manifest};
use e2e::wait::{self, Check};
use operator::controllers::{self, device, Context};
use operator::render::names::{Names, FIELD_MANAGER};

use support::*;

#[tokio::test]
async fn quickstart_identities_get_verified_secrets_and_a_second_reconcile_writes_nothing() {
    let Some(bed) = e2e::shared() else { return };
    let Some(openssl) = openssl() else { return };
    let (client, ns) = cluster_namespace(bed, "dev-qs").await;
    let quickstart = manifests::quickstart().expect("quickstart");
    let devices: Vec<&Manifest> = quickstart
        .iter()
        .filter(|m| m.value["kind"] == "DeviceIdentity")
        .collect();
    assert!(devices.len() >= 3, "the quickstart has devices");
    for m in &devices {
        manifests::apply(&client, m, &ns)
            .await
            .expect("apply device");
    }
    let names = Names::new("quickstart");
    let clients_ca = key(
        &secret(&client, &ns, &names.clients_ca())
            .await
            .expect("clients CA Secret"),
        "tls.crt",
    )
    .expect("clients CA tls.crt");
    let bundle = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get(&names.ca_bundle())
        .await
        .expect("CA bundle ConfigMap")
        .data
        .and_then(|mut d| d.remove("cluster-ca.crt"))
        .expect("cluster-ca.crt");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("clients-ca.crt"), &clients_ca).expect("write");

    let mut converged = Vec::new();
    for m in &devices {
        let name = m.value["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_string();
        let device_id = m.value["spec"]["deviceId"].as_str().expect("deviceId");
        let d = wait_ready(&client, &ns, &name).await;
        let status = d.status.clone().expect("status");
        let secret_name = format!("{name}-tls");
        assert_eq!(status.secret_name.as_deref(), Some(secret_name.as_str()));
        let s = secret(&client, &ns, &secret_name)
            .await
            .expect("device Secret");
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
        let owner = &s.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), Some(owner.uid.as_str())),
            ("DeviceIdentity", d.metadata.uid.as_deref())
        );
        assert!(s
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|f| f.manager.as_deref() == Some(FIELD_MANAGER)));
        assert_eq!(
            key(&s, "ca.crt").as_deref(),
            Some(bundle.as_str()),
            "ca.crt is the cluster CA bundle"
        );
        let sub = dir.path().join(&name);
        std::fs::create_dir_all(&sub).expect("mkdir");
        for k in ["tls.crt", "tls.key", "ca.crt"] {
            std::fs::write(
                sub.join(k),
                key(&s, k).unwrap_or_else(|| panic!("{name}: {k}")),
            )
            .expect("write");
        }
        let verified = run_openssl(
            &openssl,
            &sub,
            &[
                "verify",
                "-CAfile",
                "../clients-ca.crt",
                "-purpose",
                "sslclient",
                "tls.crt",
            ],
        );
        assert!(verified.contains("tls.crt: OK"), "{name}: {verified}");
        let cert_pub = run_openssl(
            &openssl,
            &sub,
            &["x509", "-in", "tls.crt", "-noout", "-pubkey"],
        );
        let key_pub = run_openssl(&openssl, &sub, &["pkey", "-in", "tls.key", "-pubout"]);
        assert_eq!(cert_pub, key_pub, "{name}: tls.key matches tls.crt");
        let subject = run_openssl(
            &openssl,
            &sub,
            &["x509", "-in", "tls.crt", "-noout", "-subject"],
        );
        assert!(subject.contains(&format!("CN = {device_id}")), "{subject}");
        let serial = run_openssl(
            &openssl,
            &sub,
            &["x509", "-in", "tls.crt", "-noout", "-serial"],
        );
        assert_eq!(
            normalize_serial(&serial),
            normalize_serial(status.serial.as_deref().expect("serial"))
        );
        assert!(status.not_after.is_some() && status.renewal_time.is_some());
        assert!(status.fingerprint_sha256.is_some());
        wait_event(&client, &ns, &name, "Issued").await;
        converged.push(name);
    }

    // A reconcile of every converged identity writes nothing.
    let (counting, writes) = counting_client(bed).await;
    let ctx = Arc::new(Context::new(
        counting,
        Arc::new(controllers::telemetry::Metrics::new()),
    ));
    let api = Api::<DeviceIdentity>::namespaced(client.clone(), &ns);
    let mut fresh = Vec::new();
    for name in &converged {
        let d = api.get(name).await.expect("get");
        device::reconcile(Arc::new(d.clone()), ctx.clone(), None)
            .await
            .expect("no-op reconcile");
        fresh.push(d);
    }
    assert_eq!(
        writes.load(Ordering::SeqCst),
        0,
        "a reconcile with nothing to change wrote"
    );
    // Control: the counter sees writes (a lost status, in memory only, is written back).
    let mut no_status = fresh.remove(0);
    no_status.status = None;
    device::reconcile(Arc::new(no_status), ctx, None)
        .await
        .expect("reconcile");
    assert!(writes.load(Ordering::SeqCst) >= 1, "the counter counts");
}

#[tokio::test]
async fn the_rotate_annotation_issues_a_new_serial_and_keeps_the_old_one() {
    let Some(bed) = e2e::shared() else { return };
    let (client, ns) = cluster_namespace(bed, "dev-rotate").await;
    apply_device(
        &client,
        &ns,
        "meter",
        serde_json::json!({"deviceId": "meter-1"}),
    )
    .await;
    let before = wait_ready(&client, &ns, "meter").await;
    let old = before.status.expect("status").serial.expect("serial");

    patch_device(
        &client,
        &ns,
        "meter",
        serde_json::json!({"metadata": {"annotations": {"mqtt.operator.dev/rotate": "2026-11-23"}}}),
    )
    .await;
    let after = wait_device(&client, &ns, "meter", "a new serial", |d| {
        d.status
            .as_ref()
            .is_some_and(|s| s.serial.as_ref().is_some_and(|x| x != &old))
    })
    .await;
    let status = after.status.expect("status");
    assert!(
        status.previous_serials.iter().any(|p| p.serial == old),
        "previous serial kept: {:?}",
        status.previous_serials
    );
    let s = secret(&client, &ns, "meter-tls").await.expect("Secret");
    let pem = key(&s, "tls.crt").expect("tls.crt");
    let info = operator::pki::CertificateInfo::from_pem(&pem).expect("certificate");
    assert_eq!(Some(info.serial.to_string()), status.serial);
    wait_event(&client, &ns, "meter", "Rotated").await;

    // The handled value is remembered: the serial stays put afterwards.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = Api::<DeviceIdentity>::namespaced(client.clone(), &ns)
        .get("meter")
        .await
        .expect("get");
    assert_eq!(later.status.and_then(|s| s.serial), status.serial);
}

#[tokio::test]
async fn csr_mode_signs_the_device_key_and_a_wrong_cn_is_refused() {
    let Some(bed) = e2e::shared() else { return };
    let Some(openssl) = openssl() else { return };
    let (client, ns) = cluster_namespace(bed, "dev-csr").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let csr = |cn: &str, file: &str| {
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
                &format!("{file}.key"),
                "-subj",
                &format!("/CN={cn}"),
                "-out",
                &format!("{file}.csr"),
            ],
        );
        std::fs::read_to_string(dir.path().join(format!("{file}.csr"))).expect("read CSR")
    };
    let good = csr("own-key", "good");
    apply_device(
        &client,
        &ns,
        "own-key",
        serde_json::json!({"deviceId": "own-key", "csr": good}),
    )
    .await;
    wait_ready(&client, &ns, "own-key").await;
    let s = secret(&client, &ns, "own-key-tls").await.expect("Secret");
    assert_eq!(key(&s, "tls.key"), None, "no private key in CSR mode");
    std::fs::write(
        dir.path().join("good.crt"),
        key(&s, "tls.crt").expect("tls.crt"),
    )
    .expect("write");
    let cert_pub = run_openssl(
        &openssl,
        dir.path(),
        &["x509", "-in", "good.crt", "-noout", "-pubkey"],
    );
    let key_pub = run_openssl(
        &openssl,
        dir.path(),
        &["pkey", "-in", "good.key", "-pubout"],
    );
    assert_eq!(cert_pub, key_pub, "the certificate carries the CSR's key");

    // Back to an operator-generated key: the (immutable-typed) Secret is replaced.
    patch_device(
        &client,
        &ns,
        "own-key",
        serde_json::json!({"spec": {"csr": null}}),
    )
    .await;
    wait::until("own-key-tls with a generated key", CONVERGE, || async {
        match secret(&client, &ns, "own-key-tls").await {
            Some(s) if key(&s, "tls.key").is_some() => Check::Done(s.type_),
            other => Check::NotYet(format!("type {:?}", other.and_then(|s| s.type_))),
        }
    })
    .await
    .map(|t| assert_eq!(t.as_deref(), Some("kubernetes.io/tls")))
    .unwrap_or_else(|e| panic!("{e}"));

    let bad = csr("intruder", "bad");
    apply_device(
        &client,
        &ns,
        "wrong-cn",
        serde_json::json!({"deviceId": "wrong-cn", "csr": bad}),
    )
    .await;
    let d = wait_device(&client, &ns, "wrong-cn", "Ready=False Invalid", |d| {
        ready(d).is_some_and(|(s, r, _)| s == "False" && r == "Invalid")
    })
    .await;
    let (_, _, message) = ready(&d).expect("Ready");
    assert!(message.contains("spec.csr"), "{message}");
    assert!(message.contains("intruder"), "{message}");
    let note = wait_event(&client, &ns, "wrong-cn", "Invalid").await;
    assert!(note.contains("spec.csr"), "{note}");
    assert!(
        secret(&client, &ns, "wrong-cn-tls").await.is_none(),
        "nothing written"
    );
}

#[tokio::test]
async fn a_duplicate_device_id_is_refused_and_the_older_identity_keeps_working() {
    let Some(bed) = e2e::shared() else { return };
    let (client, ns) = cluster_namespace(bed, "dev-dup").await;
    apply_device(
        &client,
        &ns,
        "first",
        serde_json::json!({"deviceId": "pump-7"}),
    )
    .await;
    let first = wait_ready(&client, &ns, "first").await;
    let serial = first.status.expect("status").serial;
    // creationTimestamp has one-second resolution: make "second" strictly newer.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    apply_device(
        &client,
        &ns,
        "second",
        serde_json::json!({"deviceId": "pump-7"}),
    )
    .await;
    let d = wait_device(
        &client,
        &ns,
        "second",
        "Ready=False DuplicateDeviceId",
        |d| ready(d).is_some_and(|(s, r, _)| s == "False" && r == "DuplicateDeviceId"),
    )
    .await;
    let (_, _, message) = ready(&d).expect("Ready");
    assert!(message.contains("DeviceIdentity first"), "{message}");
    wait_event(&client, &ns, "second", "DuplicateDeviceId").await;
    assert!(secret(&client, &ns, "second-tls").await.is_none());
    let first = wait_ready(&client, &ns, "first").await;
    assert_eq!(
        first.status.expect("status").serial,
        serial,
        "older untouched"
    );
}

#[tokio::test]
async fn suspended_and_revoked_serials_reach_the_revoked_set() {
    let Some(bed) = e2e::shared() else { return };
    let (client, ns) = cluster_namespace(bed, "dev-revoke").await;
    apply_device(
        &client,
        &ns,
        "lost",
        serde_json::json!({"deviceId": "lost-1"}),
    )
    .await;
    let d = wait_ready(&client, &ns, "lost").await;
    let serial = d.status.expect("status").serial.expect("serial");

    patch_device(
        &client,
        &ns,
        "lost",
        serde_json::json!({"spec": {"state": "Suspended"}}),
    )
    .await;
    wait_device(&client, &ns, "lost", "Ready=False Suspended", |d| {
        ready(d).is_some_and(|(s, r, _)| s == "False" && r == "Suspended")
    })
    .await;
    wait_revoked(&client, &ns, &serial, true).await;
    wait_event(&client, &ns, "lost", "Suspended").await;

    patch_device(
        &client,
        &ns,
        "lost",
        serde_json::json!({"spec": {"state": "Active"}}),
    )
    .await;
    let d = wait_ready(&client, &ns, "lost").await;
    assert_eq!(
        d.status.expect("status").serial.as_ref(),
        Some(&serial),
        "same certificate"
    );
    wait_revoked(&client, &ns, &serial, false).await;

    patch_device(
        &client,
        &ns,
        "lost",
        serde_json::json!({"spec": {"state": "Revoked"}}),
    )
    .await;
    let d = wait_device(&client, &ns, "lost", "Ready=False Revoked", |d| {
        ready(d).is_some_and(|(s, r, _)| s == "False" && r == "Revoked")
    })
    .await;
    assert_eq!(d.status.expect("status").serial.as_ref(), Some(&serial));
    wait_revoked(&client, &ns, &serial, true).await;
    wait_event(&client, &ns, "lost", "Revoked").await;
}
