//! Device credentials read from the DeviceIdentity controller's Secrets (`<name>-tls`:
//! tls.crt, tls.key — absent in CSR mode —, ca.crt) and rumqttc clients over mTLS with them.
//! Shared by tests/brokers.rs, tests/acl_push.rs and tests/device_lifecycle.rs.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::Client;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::{mpsc, oneshot};

use e2e::wait::{self, Check};

/// How long [`Creds::issued`] waits for the controller to write the Secret.
pub const ISSUE_TIMEOUT: Duration = Duration::from_secs(90);
/// The MQTT over TLS port of the core pods.
pub const MQTTS_PORT: u16 = 8883;

/// A device's credentials as its Secret holds them (`key_pem` empty in CSR mode).
#[derive(Clone)]
pub struct Creds {
    /// The DeviceIdentity's name (file names, messages).
    pub id: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// The cluster CA: what the device trusts the brokers with.
    pub ca_pem: String,
}

impl std::fmt::Debug for Creds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Creds")
            .field("id", &self.id)
            .field("has_key", &self.has_key())
            .finish_non_exhaustive()
    }
}

fn text(s: &Secret, k: &str) -> Option<String> {
    s.data
        .as_ref()?
        .get(k)
        .map(|b| String::from_utf8(b.0.clone()).expect("PEM is UTF-8"))
}

impl Creds {
    /// The credentials in Secret `<name>-tls` now, when it holds a certificate and the CA.
    pub async fn from_secret(client: &Client, ns: &str, name: &str) -> Option<Creds> {
        let s = Api::<Secret>::namespaced(client.clone(), ns)
            .get_opt(&format!("{name}-tls"))
            .await
            .unwrap_or_else(|e| panic!("get Secret {name}-tls: {e}"))?;
        Some(Creds {
            id: name.to_string(),
            cert_pem: text(&s, "tls.crt")?,
            key_pem: text(&s, "tls.key").unwrap_or_default(),
            ca_pem: text(&s, "ca.crt")?,
        })
    }

    /// Waits (at most [`ISSUE_TIMEOUT`]) for DeviceIdentity `name`'s Secret and reads it.
    pub async fn issued(client: &Client, ns: &str, name: &str) -> Creds {
        wait::until(
            &format!("Secret {name}-tls issued"),
            ISSUE_TIMEOUT,
            || async {
                match Creds::from_secret(client, ns, name).await {
                    Some(c) => Check::Done(c),
                    None => Check::NotYet("no Secret with tls.crt and ca.crt yet".into()),
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Whether the Secret held a private key (not in CSR mode).
    pub fn has_key(&self) -> bool {
        !self.key_pem.is_empty()
    }

    /// Writes `<id>-ca.crt`, `<id>-tls.crt`, `<id>-tls.key` into `dir`; returns their paths in
    /// that order.
    pub fn write(&self, dir: &Path) -> [String; 3] {
        let p = |n: &str| dir.join(format!("{}-{n}", self.id));
        std::fs::write(p("ca.crt"), &self.ca_pem).expect("write ca");
        std::fs::write(p("tls.crt"), &self.cert_pem).expect("write cert");
        std::fs::write(p("tls.key"), &self.key_pem).expect("write key");
        ["ca.crt", "tls.crt", "tls.key"].map(|n| p(n).display().to_string())
    }
}

/// rumqttc options: TLS to `host`:8883 with `creds`, keep-alive 5 s.
pub fn options(host: &str, creds: &Creds, client_id: &str) -> MqttOptions {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut opts = MqttOptions::new(client_id, host, MQTTS_PORT);
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_transport(Transport::Tls(TlsConfiguration::Simple {
        ca: creds.ca_pem.as_bytes().to_vec(),
        alpn: None,
        client_auth: Some((
            creds.cert_pem.as_bytes().to_vec(),
            creds.key_pem.as_bytes().to_vec(),
        )),
    }));
    opts
}

/// A connected rumqttc client: the publishes it receives (topic, payload), and when and why its
/// first session ended (the event loop keeps polling after that: rumqttc reconnects).
pub struct Mqtt {
    pub client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    ended: oneshot::Receiver<(Instant, String)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects; `Err` says what came instead of a successful CONNACK within 10 s.
pub async fn connect(host: &str, creds: &Creds, client_id: &str) -> Result<Mqtt, String> {
    let (client, mut eventloop) = AsyncClient::new(options(host, creds, client_id), 100);
    match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
        Err(_) => return Err(format!("{host}: timeout waiting for CONNACK")),
        Ok(Err(e)) => return Err(format!("{host}: {e:?}")),
        Ok(Ok(Event::Incoming(Packet::ConnAck(a))))
            if a.code == rumqttc::ConnectReturnCode::Success => {}
        Ok(Ok(other)) => return Err(format!("{host}: unexpected {other:?}")),
    }
    let (tx, incoming) = mpsc::unbounded_channel();
    let (end_tx, ended) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut end_tx = Some(end_tx);
        let mut ended = |why: String| {
            if let Some(t) = end_tx.take() {
                let _ = t.send((Instant::now(), why));
            }
        };
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = p.topic.clone();
                    if tx.send((topic, p.payload.to_vec())).is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::Disconnect)) => ended("DISCONNECT".into()),
                Ok(_) => {}
                Err(e) => {
                    ended(e.to_string());
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    Ok(Mqtt {
        client,
        incoming,
        ended,
        task,
    })
}

impl Mqtt {
    pub async fn subscribe(&self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
    }

    pub async fn publish(&self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .expect("publish");
    }

    /// The topic of the next publish whose payload is `payload`, within `within`; the payloads
    /// received meanwhile go to `other`.
    pub async fn receive_noting(
        &mut self,
        payload: &str,
        within: Duration,
        other: &mut Vec<String>,
    ) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
                Ok(Some((topic, p))) if p == payload.as_bytes() => return Some(topic),
                Ok(Some((_, p))) => other.push(String::from_utf8_lossy(&p).into_owned()),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The topic of the next publish whose payload is `payload`, within `within`.
    pub async fn receive(&mut self, payload: &str, within: Duration) -> Option<String> {
        self.receive_noting(payload, within, &mut Vec::new()).await
    }

    /// When and why the session ended, waiting at most `within`.
    pub async fn ended(&mut self, within: Duration) -> Option<(Instant, String)> {
        tokio::time::timeout(within, &mut self.ended)
            .await
            .ok()?
            .ok()
    }
}
