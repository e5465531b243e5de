//! MQTT clients of the bridges test: a rumqttc client over mutual TLS that records every
//! incoming publish with its QoS, and probing until a message crosses a bridge.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::mpsc;

/// A device's certificate, key and the CA of the servers it connects to.
pub struct Device {
    /// Certificate (PEM).
    pub cert_pem: String,
    /// Private key (PKCS#8 PEM).
    pub key_pem: String,
    /// CA of the servers (PEM).
    pub ca_pem: String,
}

/// A connected rumqttc client and its incoming publishes (topic, payload, QoS).
pub struct Mqtt {
    client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<(String, Vec<u8>, QoS)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn connect(host: &str, device: &Device, client_id: &str) -> Mqtt {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut opts = MqttOptions::new(client_id, host, 8883);
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_transport(Transport::Tls(TlsConfiguration::Simple {
        ca: device.ca_pem.as_bytes().to_vec(),
        alpn: None,
        client_auth: Some((
            device.cert_pem.as_bytes().to_vec(),
            device.key_pem.as_bytes().to_vec(),
        )),
    }));
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
        Ok(Ok(Event::Incoming(Packet::ConnAck(a))))
            if a.code == rumqttc::ConnectReturnCode::Success => {}
        other => panic!("{host}: no CONNACK: {other:?}"),
    }
    let (tx, incoming) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx
                        .send((p.topic.clone(), p.payload.to_vec(), p.qos))
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    Mqtt {
        client,
        incoming,
        task,
    }
}

impl Mqtt {
    pub async fn subscribe(&self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
    }

    pub async fn unsubscribe(&self, filter: &str) {
        self.client.unsubscribe(filter).await.expect("unsubscribe");
    }

    pub async fn publish(&self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .expect("publish");
    }

    /// The next publish whose payload is `payload` within `within`: (topic, QoS).
    pub async fn receive(&mut self, payload: &str, within: Duration) -> Option<(String, QoS)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
                Ok(Some((topic, p, qos))) if p == payload.as_bytes() => return Some((topic, qos)),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

/// Publishes numbered probes on `topic` until one reaches `sub` (subscriptions and the bridge's
/// remote subscription propagate asynchronously), at most `within`: (topic, QoS) received and
/// the time it took.
pub async fn crosses(
    sub: &mut Mqtt,
    publisher: &Mqtt,
    topic: &str,
    tag: &str,
    within: Duration,
) -> Option<(String, QoS, Duration)> {
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < within {
        n += 1;
        let payload = format!("{tag}-{n}");
        publisher.publish(topic, &payload).await;
        if let Some((t, q)) = sub.receive(&payload, Duration::from_millis(500)).await {
            return Some((t, q, started.elapsed()));
        }
    }
    None
}
