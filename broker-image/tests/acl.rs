//! ACL enforcement table: the rule set is compiled from TopicPolicy / DeviceIdentity YAML by the
//! operator's real compiler, and every case's decision observed at the broker equals the decision
//! `mqtt-operator acl explain` gives for the same request (`operator::acl::explain`) and the
//! expected value. Publishes are
//! observed through a spy subscriber (3.1.1 publishes are acknowledged and dropped), subscribes
//! through SUBACK codes, wills through CONNACK. MQTT 5 reason codes (0x87) and Debian's
//! mosquitto clients are checked too.

mod fixture;

use std::time::Duration;

use contract::acl::Action;
use fixture::client::{connect, tls, Client, ConnectOpts};
use fixture::{acl_bin, acl_documents, user_policy, Cluster, Options};
use operator::acl::explain::{explain, Question, Who};
use operator::manifest::Document;
use rumqttc::QoS;

/// The table's policies: two DeviceIdentities (selected by label and by deviceId, with
/// `${deviceId}` placeholders), a policy for everyone, and a non-device user.
const POLICIES: &str = r#"
apiVersion: mqtt.operator.dev/v1alpha1
kind: DeviceIdentity
metadata:
  name: dev-a
  labels: {role: a}
spec:
  clusterRef: {name: t}
  deviceId: dev-a
---
apiVersion: mqtt.operator.dev/v1alpha1
kind: DeviceIdentity
metadata:
  name: dev-b
  labels: {role: b}
spec:
  clusterRef: {name: t}
  deviceId: dev-b
---
apiVersion: mqtt.operator.dev/v1alpha1
kind: TopicPolicy
metadata:
  name: role-a
spec:
  clusterRef: {name: t}
  subjects:
    - device: dev-a
  rules:
    - {effect: allow, actions: [publish, subscribe], topics: ["devices/${deviceId}/#"]}
    - {effect: allow, actions: [subscribe], topics: ["fleet/+/status"]}
    - {effect: deny, actions: [publish], topics: ["devices/${deviceId}/secret/#"]}
    - {effect: allow, actions: [publish], topics: ["telemetry/${deviceId}"], qos: [0, 1], retain: false}
    - {effect: allow, actions: [publish], topics: ["status/${deviceId}"], retain: true}
---
apiVersion: mqtt.operator.dev/v1alpha1
kind: TopicPolicy
metadata:
  name: role-b
spec:
  clusterRef: {name: t}
  subjects:
    - deviceSelector:
        matchLabels: {role: b}
  rules:
    - {effect: allow, actions: [publish], topics: ["devices/${deviceId}/#"]}
---
apiVersion: mqtt.operator.dev/v1alpha1
kind: TopicPolicy
metadata:
  name: broadcast
spec:
  clusterRef: {name: t}
  subjects:
    - all: true
  rules:
    - {effect: allow, actions: [subscribe], topics: ["broadcast/#"]}
"#;

fn policies() -> String {
    format!(
        "{POLICIES}{}",
        user_policy(
            "spy",
            &["spy"],
            &["{effect: allow, actions: [subscribe], topics: [\"#\"]}"]
        )
    )
}

/// What `mqtt-operator acl explain` answers for one request.
fn explained(
    docs: &[Document],
    who: &str,
    action: Action,
    topic: &str,
    qos: u8,
    retain: bool,
) -> bool {
    let q = Question {
        who: Who::Device(who),
        action,
        topic,
        qos,
        retain,
    };
    explain(docs, None, &q).unwrap().decision.is_allowed()
}

enum Case {
    Pub {
        who: &'static str,
        topic: &'static str,
        qos: QoS,
        retain: bool,
        allow: bool,
    },
    Sub {
        who: &'static str,
        filter: &'static str,
        allow: bool,
    },
    Will {
        who: &'static str,
        topic: &'static str,
        retain: bool,
        allow: bool,
    },
}

fn table() -> Vec<Case> {
    use Case::*;
    use QoS::*;
    vec![
        Pub {
            who: "dev-a",
            topic: "devices/dev-a/temp",
            qos: AtMostOnce,
            retain: false,
            allow: true,
        },
        Pub {
            who: "dev-a",
            topic: "devices/dev-a/x/y",
            qos: AtLeastOnce,
            retain: false,
            allow: true,
        },
        Pub {
            who: "dev-a",
            topic: "devices/dev-b/temp",
            qos: AtMostOnce,
            retain: false,
            allow: false,
        },
        Pub {
            who: "dev-a",
            topic: "devices/dev-a/secret/k",
            qos: AtLeastOnce,
            retain: false,
            allow: false,
        },
        Pub {
            who: "dev-a",
            topic: "telemetry/dev-a",
            qos: AtLeastOnce,
            retain: false,
            allow: true,
        },
        Pub {
            who: "dev-a",
            topic: "telemetry/dev-a",
            qos: ExactlyOnce,
            retain: false,
            allow: false,
        },
        Pub {
            who: "dev-a",
            topic: "telemetry/dev-a",
            qos: AtMostOnce,
            retain: true,
            allow: false,
        },
        Pub {
            who: "dev-a",
            topic: "status/dev-a",
            qos: AtLeastOnce,
            retain: true,
            allow: true,
        },
        Pub {
            who: "dev-a",
            topic: "status/dev-a",
            qos: AtLeastOnce,
            retain: false,
            allow: false,
        },
        Pub {
            who: "dev-b",
            topic: "devices/dev-b/t",
            qos: AtMostOnce,
            retain: false,
            allow: true,
        },
        Pub {
            who: "dev-b",
            topic: "devices/dev-a/t",
            qos: AtMostOnce,
            retain: false,
            allow: false,
        },
        Pub {
            who: "dev-a",
            topic: "other",
            qos: AtMostOnce,
            retain: false,
            allow: false,
        },
        Sub {
            who: "dev-a",
            filter: "devices/dev-a/#",
            allow: true,
        },
        Sub {
            who: "dev-a",
            filter: "devices/dev-a/+/temp",
            allow: true,
        },
        Sub {
            who: "dev-a",
            filter: "devices/#",
            allow: false,
        },
        Sub {
            who: "dev-a",
            filter: "#",
            allow: false,
        },
        Sub {
            who: "dev-a",
            filter: "fleet/+/status",
            allow: true,
        },
        Sub {
            who: "dev-a",
            filter: "fleet/#",
            allow: false,
        },
        Sub {
            who: "dev-a",
            filter: "fleet/x/status",
            allow: true,
        },
        Sub {
            who: "dev-b",
            filter: "broadcast/news",
            allow: true,
        },
        Sub {
            who: "dev-b",
            filter: "devices/dev-b/#",
            allow: false,
        },
        Sub {
            who: "dev-a",
            filter: "$share/g/devices/dev-a/#",
            allow: true,
        },
        Sub {
            who: "dev-a",
            filter: "$share/g/devices/#",
            allow: false,
        },
        Sub {
            who: "dev-a",
            filter: "devices/dev-a/secret/#",
            allow: true,
        },
        Will {
            who: "dev-a",
            topic: "devices/dev-a/status",
            retain: false,
            allow: true,
        },
        Will {
            who: "dev-a",
            topic: "devices/dev-b/status",
            retain: false,
            allow: false,
        },
        Will {
            who: "dev-a",
            topic: "telemetry/dev-a",
            retain: true,
            allow: false,
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_table_matches_the_matcher() {
    let docs = acl_documents(false, &policies());
    let cluster = Cluster::start(Options {
        acl: acl_bin(false, &policies()),
        ..Options::default()
    });
    let port = cluster.nodes[0].mqtts;
    let ca = cluster.pki.cluster_ca.cert_pem.clone();
    let leaf = |id: &str| cluster.pki.clients_ca.device(id);
    let (la, lb, ls) = (leaf("dev-a"), leaf("dev-b"), leaf("spy"));
    let mut spy = connect(ConnectOpts::new(port, "spy", &ca, Some(&ls)))
        .await
        .unwrap();
    assert_eq!(spy.subscribe("#", QoS::AtLeastOnce).await, 1);
    let mut a = connect(ConnectOpts::new(port, "a", &ca, Some(&la)))
        .await
        .unwrap();
    let mut b = connect(ConnectOpts::new(port, "b", &ca, Some(&lb)))
        .await
        .unwrap();

    let cases = table();
    assert!(cases.len() >= 20);
    for (n, case) in cases.iter().enumerate() {
        match *case {
            Case::Pub {
                who,
                topic,
                qos,
                retain,
                allow,
            } => {
                let explained = explained(&docs, who, Action::Publish, topic, qos as u8, retain);
                assert_eq!(
                    explained, allow,
                    "case {n}: acl explain disagrees with the table"
                );
                let client: &Client = if who == "dev-a" { &a } else { &b };
                let marker = format!("devices/{who}/marker");
                let payload = format!("case-{n}");
                client
                    .client
                    .publish(topic, qos, retain, payload.clone())
                    .await
                    .unwrap();
                client
                    .client
                    .publish(marker.clone(), QoS::AtLeastOnce, false, "m")
                    .await
                    .unwrap();
                // Messages of one connection arrive in order: the case's message (if allowed)
                // comes before the marker.
                let mut seen = false;
                loop {
                    let got = spy
                        .next_matching(Duration::from_secs(5), |p| {
                            matches!(p, rumqttc::Packet::Publish(_))
                        })
                        .await;
                    match got {
                        Some(Ok(rumqttc::Packet::Publish(p))) if p.topic == marker => break,
                        Some(Ok(rumqttc::Packet::Publish(p)))
                            if p.payload == payload.as_bytes() =>
                        {
                            seen = true
                        }
                        Some(Ok(_)) => {}
                        other => panic!("case {n}: spy got {other:?}"),
                    }
                }
                assert_eq!(
                    seen, allow,
                    "case {n}: publish {topic} q{qos:?} retain {retain} by {who}"
                );
            }
            Case::Sub { who, filter, allow } => {
                let explained = explained(&docs, who, Action::Subscribe, filter, 1, false);
                assert_eq!(
                    explained, allow,
                    "case {n}: acl explain disagrees with the table"
                );
                let client = if who == "dev-a" { &mut a } else { &mut b };
                let code = client.subscribe(filter, QoS::AtLeastOnce).await;
                assert_eq!(
                    code,
                    if allow { 1 } else { 0x80 },
                    "case {n}: subscribe {filter} by {who}"
                );
            }
            Case::Will {
                who,
                topic,
                retain,
                allow,
            } => {
                let explained = explained(&docs, who, Action::Publish, topic, 1, retain);
                assert_eq!(
                    explained, allow,
                    "case {n}: acl explain disagrees with the table"
                );
                let l = leaf(who);
                let client_id = format!("will-{n}");
                let mut o = ConnectOpts::new(port, &client_id, &ca, Some(&l));
                o.will = Some((topic, QoS::AtLeastOnce, retain));
                let result = connect(o).await;
                assert_eq!(
                    result.is_ok(),
                    allow,
                    "case {n}: will {topic} retain {retain}: {:?}",
                    result.err()
                );
            }
        }
    }
    let denies = cluster.metric(0, "mqtt_acl_denies_total").unwrap();
    assert!(denies >= 1.0);

    // MQTT 5: reason code 0x87 on PUBACK and SUBACK.
    v5_reason_codes(port, &ca, &la).await;

    // Debian's mosquitto clients as an independent implementation.
    mosquitto_clients(&cluster, &la).await;
}

async fn v5_reason_codes(port: u16, ca: &str, leaf: &fixture::pki::Leaf) {
    use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, SubscribeReasonCode};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let mut opts = MqttOptions::new("a-v5", "127.0.0.1", port);
    opts.set_transport(tls(ca, Some(leaf)));
    let (client, mut el) = AsyncClient::new(opts, 100);
    client
        .publish("devices/dev-b/x", Q5::AtLeastOnce, false, "no")
        .await
        .unwrap();
    client
        .subscribe("devices/#", Q5::AtLeastOnce)
        .await
        .unwrap();
    let (mut puback, mut suback) = (None, None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while puback.is_none() || suback.is_none() {
        match tokio::time::timeout_at(deadline, el.poll())
            .await
            .expect("v5 acks within 10 s")
            .unwrap()
        {
            Event::Incoming(Packet::PubAck(a)) => puback = Some(a.reason),
            Event::Incoming(Packet::SubAck(s)) => suback = Some(s.return_codes[0]),
            _ => {}
        }
    }
    assert_eq!(
        puback,
        Some(PubAckReason::NotAuthorized),
        "MQTT 5 PUBACK 0x87"
    );
    assert_eq!(
        suback,
        Some(SubscribeReasonCode::NotAuthorized),
        "MQTT 5 SUBACK 0x87"
    );
}

async fn mosquitto_clients(cluster: &Cluster, dev_a: &fixture::pki::Leaf) {
    if !fixture::require_tool("mosquitto_sub") {
        return;
    }
    let dir = cluster.root().join("mosquitto");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ca = write("ca.pem", &cluster.pki.cluster_ca.cert_pem);
    let cert = write("a.crt", &dev_a.cert_pem);
    let key = write("a.key", &dev_a.key_pem);
    let port = cluster.nodes[0].mqtts.to_string();
    let tls_args = |cmd: &mut std::process::Command| {
        cmd.args(["-h", "127.0.0.1", "-p", &port, "--cafile"])
            .arg(&ca)
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key);
    };
    // Allowed: subscribe to own topic, receive one message published by mosquitto_pub.
    let mut sub = std::process::Command::new("mosquitto_sub");
    tls_args(&mut sub);
    sub.args([
        "-i",
        "mq-sub",
        "-t",
        "devices/dev-a/mq",
        "-C",
        "1",
        "-W",
        "10",
        "-q",
        "1",
    ]);
    let sub = sub.stdout(std::process::Stdio::piped()).spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut publ = std::process::Command::new("mosquitto_pub");
    tls_args(&mut publ);
    let status = publ
        .args([
            "-i",
            "mq-pub",
            "-t",
            "devices/dev-a/mq",
            "-m",
            "hello",
            "-q",
            "1",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let out = sub.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello",
        "mosquitto_sub got the message"
    );
    // Denied: subscribing to `#` with MQTT 5 is refused (mosquitto_sub reports the SUBACK failure).
    let mut deny = std::process::Command::new("mosquitto_sub");
    tls_args(&mut deny);
    let out = deny
        .args([
            "-i", "mq-deny", "-V", "mqttv5", "-t", "#", "-C", "1", "-W", "3",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("denied"),
        "subscription to # must be denied: {text}"
    );
    eprintln!("mosquitto_sub on #: {text}");
}
