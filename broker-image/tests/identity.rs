//! mTLS identity and revocation against a real broker process.

mod fixture;

use std::time::{Duration, Instant};

use fixture::client::{connect, ConnectOpts};
use fixture::pki::Ca;
use fixture::{acl_bin, acl_revision, revoked_json, user_policy, Cluster, Options};
use rumqttc::QoS;

/// Each device may use devices/<its id>/#; nothing else.
fn own_topics() -> String {
    [
        user_policy(
            "dev-a",
            &["dev-a"],
            &["{effect: allow, actions: [publish, subscribe], topics: [\"devices/dev-a/#\"]}"],
        ),
        user_policy(
            "dev-b",
            &["dev-b"],
            &["{effect: allow, actions: [publish, subscribe], topics: [\"devices/dev-b/#\"]}"],
        ),
    ]
    .concat()
}

fn acl_own_topics() -> Vec<u8> {
    acl_bin(false, &own_topics())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_identity_and_revocation() {
    let cluster = Cluster::start(Options {
        acl: acl_own_topics(),
        ..Options::default()
    });
    let node = &cluster.nodes[0];
    let ca = cluster.pki.cluster_ca.cert_pem.clone();
    let clients = &cluster.pki.clients_ca;

    // A valid device connects and can use its own topics.
    let dev_a = clients.device("dev-a");
    let mut a = connect(ConnectOpts::new(node.mqtts, "a-1", &ca, Some(&dev_a)))
        .await
        .expect("valid device connects");
    assert_eq!(a.subscribe("devices/dev-a/cmd", QoS::AtLeastOnce).await, 1);

    // No client certificate: the TLS handshake is refused.
    let err = connect(ConnectOpts::new(node.mqtts, "anon", &ca, None))
        .await
        .err()
        .expect("no cert refused");
    eprintln!("no cert: {err}");

    // A certificate from another CA.
    let other = Ca::new("other-ca").device("dev-a");
    let err = connect(ConnectOpts::new(node.mqtts, "other", &ca, Some(&other)))
        .await
        .err()
        .expect("other CA refused");
    eprintln!("other CA: {err}");

    // An expired certificate.
    let expired = clients.expired_device("dev-a");
    let err = connect(ConnectOpts::new(node.mqtts, "exp", &ca, Some(&expired)))
        .await
        .err()
        .expect("expired refused");
    eprintln!("expired: {err}");

    // A certificate without CN cannot borrow an identity through the username.
    let no_cn = clients.device_without_cn();
    let mut o = ConnectOpts::new(node.mqtts, "nocn", &ca, Some(&no_cn));
    o.username = Some("dev-a");
    let err = connect(o).await.err().expect("no CN refused");
    assert!(err.contains("NotAuthorized"), "{err}");

    // dev-b claims to be dev-a with the username: the CN wins, so it acts as dev-b.
    let dev_b = clients.device("dev-b");
    let mut o = ConnectOpts::new(node.mqtts, "b-spoof", &ca, Some(&dev_b));
    o.username = Some("dev-a");
    let mut b = connect(o).await.expect("dev-b connects");
    assert_eq!(
        b.subscribe("devices/dev-a/cmd", QoS::AtLeastOnce).await,
        0x80,
        "dev-b must not act as dev-a"
    );
    assert_eq!(b.subscribe("devices/dev-b/cmd", QoS::AtLeastOnce).await, 1);

    // Revoked at CONNECT: push the serial, a new connection is refused.
    let revoked_dev = clients.device("dev-a");
    let (code, body) = cluster.push(
        0,
        "/v1/revoked",
        &revoked_json("rev-1", &[&revoked_dev.serial]),
    );
    assert_eq!(code, 200, "{body}");
    let err = connect(ConnectOpts::new(
        node.mqtts,
        "a-rev",
        &ca,
        Some(&revoked_dev),
    ))
    .await
    .err()
    .expect("revoked refused");
    assert!(err.contains("NotAuthorized"), "{err}");
    assert!(
        cluster
            .metric(0, "mqtt_auth_failures_revoked_total")
            .unwrap()
            >= 1.0
    );

    // Live session of a newly revoked certificate is disconnected; measured.
    let started = Instant::now();
    let serial_upper = dev_a.serial.to_uppercase();
    let (code, body) = cluster.push(
        0,
        "/v1/revoked",
        &revoked_json("rev-2", &[&revoked_dev.serial, &serial_upper]),
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        a.expect_disconnect(Duration::from_secs(2)).await,
        "dev-a session not disconnected within 2 s"
    );
    eprintln!("revocation disconnect after {:?}", started.elapsed());
    // dev-b (not revoked) is still connected.
    assert_eq!(b.subscribe("devices/dev-b/x", QoS::AtMostOnce).await, 0);

    let (_, ready) = cluster.get(0, "/readyz");
    assert!(ready.contains("\"revokedRevision\":\"rev-2\""), "{ready}");
    assert_eq!(cluster.metric(0, "mqtt_revoked_set_size"), Some(2.0));

    // Wrong token on the push endpoint.
    let (code, _) = fixture::http(node.http, "PUT", "/v1/revoked", Some("nope"), b"{}").unwrap();
    assert_eq!(code, 401);
    // Invalid content is rejected and the previous set stays.
    let (code, _) = cluster.push(0, "/v1/revoked", b"{\"version\":\"x\"}");
    assert_eq!(code, 400);
    let (_, ready) = cluster.get(0, "/readyz");
    assert!(ready.contains("\"revokedRevision\":\"rev-2\""), "{ready}");

    // File-based reload: rewriting acl.bin lets dev-b use devices/shared/#.
    let shared_acl = acl_bin(
        false,
        &format!(
            "{}{}",
            own_topics(),
            user_policy(
                "shared",
                &["dev-b"],
                &["{effect: allow, actions: [subscribe], topics: [\"devices/shared/#\"]}"],
            )
        ),
    );
    assert_eq!(b.subscribe("devices/shared/x", QoS::AtMostOnce).await, 0x80);
    cluster.write_file(0, contract::config::files::ACL, &shared_acl);
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.subscribe("devices/shared/x", QoS::AtMostOnce).await != 0 {
        assert!(
            Instant::now() < deadline,
            "acl.bin change not applied within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Push wins over files: once the ACL was pushed, a later file change (a kubelet refreshing
    // the mounted ConfigMap late, with an older version) does not roll the node back.
    let (code, body) = cluster.push(0, "/v1/acl", &shared_acl);
    assert_eq!(code, 200, "{body}");
    let stale = acl_bin(false, &own_topics());
    cluster.write_file(0, contract::config::files::ACL, &stale);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, ready) = cluster.get(0, "/readyz");
    assert!(
        ready.contains(&format!(
            "\"aclRevision\":\"{}\"",
            acl_revision(&shared_acl)
        )),
        "a file change overrode the pushed ACL: {ready}"
    );
    assert_eq!(b.subscribe("devices/shared/y", QoS::AtMostOnce).await, 0);

    // Trust bundle reload: a new clients CA is pushed; its devices connect, the old CA's new
    // connections are refused, the established dev-b connection stays up.
    let new_ca = Ca::new("clients-ca-2");
    let (code, body) = cluster.push(0, "/v1/trust", new_ca.cert_pem.as_bytes());
    assert_eq!(code, 200, "{body}");
    let dev_c = new_ca.device("dev-c");
    connect(ConnectOpts::new(node.mqtts, "c-1", &ca, Some(&dev_c)))
        .await
        .expect("device of the new CA connects");
    let old = clients.device("dev-b");
    let err = connect(ConnectOpts::new(node.mqtts, "b-2", &ca, Some(&old)))
        .await
        .err()
        .expect("old CA refused");
    assert!(
        err.contains("UnknownCA") || err.contains("BadCertificate"),
        "{err}"
    );
    assert_eq!(
        b.subscribe("devices/dev-b/still", QoS::AtMostOnce).await,
        0,
        "established connection survived"
    );
    let (_, ready) = cluster.get(0, "/readyz");
    assert!(
        ready.contains(&format!(
            "\"aclRevision\":\"{}\"",
            acl_revision(&shared_acl)
        )),
        "{ready}"
    );
}
