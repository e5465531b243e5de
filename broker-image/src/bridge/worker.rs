//! One bridge's connection to its remote: an MQTT 5 client (rumqttc) with a persistent session
//! (`clean_start = false`, session expiry > 0) that sends the buffer (out routes) and injects
//! remote messages locally (in routes).
//!
//! Delivery: every (re)connection uses a fresh rumqttc event loop and re-sends every message
//! still in the buffer, oldest first, at most [`WINDOW`] unacknowledged at a time; a message
//! leaves the buffer only when its PUBACK arrives (at-least-once: a message in flight when the
//! connection broke may arrive twice). rumqttc's own retransmission is not relied on, because it
//! discards its pending messages when the remote answers `session_present = false` (a remote
//! that lost its session store), which would lose them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use contract::bridge::{BridgeConfig, Mapping, RouteDirection, MARKER_PROPERTY};
use rmqtt::context::ServerContext;
use rmqtt::session::SessionState;
use rmqtt::types::{From, Id};
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, PubAckReason, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc::{Outgoing, TlsConfiguration, Transport};

use super::{Shared, Stats};

/// Unacknowledged messages allowed in flight to the remote.
pub const WINDOW: usize = 64;
/// Longest wait for a CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect back-off bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What a worker needs.
pub struct Worker {
    /// The engine (local injection).
    pub scx: ServerContext,
    /// This node's id (part of the remote client id).
    pub node_id: u64,
    /// Remote shared-subscription group for `in` routes when the local cluster has several nodes.
    pub share_group: Option<String>,
    /// The bridge.
    pub config: BridgeConfig,
    /// Buffer and counters.
    pub shared: Arc<Shared>,
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("no CONNACK from {0} within {CONNECT_TIMEOUT:?}")]
    ConnectTimeout(String),
    #[error("connection to {remote}: {source}")]
    Connection {
        remote: String,
        source: rumqttc::v5::ConnectionError,
    },
    #[error("request to the client failed: {0}")]
    Client(#[from] rumqttc::v5::ClientError),
}

struct InRoute {
    /// remote → local
    mapping: Mapping,
    qos: u8,
    retain: bool,
}

fn qos(q: u8) -> QoS {
    if q == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

/// Runs until aborted: connect, forward, reconnect with back-off.
pub async fn run(w: Worker) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let started = Instant::now();
        let result = session(&w).await;
        w.shared.stats.connected.store(false, Ordering::Release);
        let Err(e) = result;
        log::warn!("bridge {}: {e}", w.shared.name);
        w.shared.stats.set_error(e.to_string());
        if started.elapsed() > BACKOFF_MAX {
            backoff = BACKOFF_MIN;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn options(w: &Worker) -> MqttOptions {
    let r = &w.config.remote;
    let mut o = MqttOptions::new(format!("{}-{}", r.client_id, w.node_id), &r.host, r.port);
    o.set_keep_alive(Duration::from_secs(10));
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(r.session_expiry_secs));
    o.set_manual_acks(true);
    o.set_request_channel_capacity(WINDOW * 4 + 16);
    o.set_connection_timeout(CONNECT_TIMEOUT.as_secs());
    o.set_transport(Transport::Tls(TlsConfiguration::Simple {
        ca: r.ca_pem.as_bytes().to_vec(),
        alpn: None,
        client_auth: r
            .client_cert_pem
            .as_ref()
            .zip(r.client_key_pem.as_ref())
            .map(|(c, k)| (c.as_bytes().to_vec(), k.as_bytes().to_vec())),
    }));
    if let Some(u) = &r.username {
        o.set_credentials(u.clone(), r.password.clone().unwrap_or_default());
    }
    o
}

async fn connect(w: &Worker, el: &mut EventLoop) -> Result<(), SessionError> {
    let remote = format!("{}:{}", w.config.remote.host, w.config.remote.port);
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, el.poll()).await {
            Err(_) => return Err(SessionError::ConnectTimeout(remote)),
            Ok(Err(source)) => return Err(SessionError::Connection { remote, source }),
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok(()),
            Ok(Ok(_)) => {}
        }
    }
}

/// One connection, until it fails.
async fn session(w: &Worker) -> Result<std::convert::Infallible, SessionError> {
    let remote = format!("{}:{}", w.config.remote.host, w.config.remote.port);
    let (client, mut el) = AsyncClient::new(options(w), WINDOW * 4 + 16);
    connect(w, &mut el).await?;
    w.shared.stats.connected.store(true, Ordering::Release);
    log::info!("bridge {}: connected to {remote}", w.shared.name);

    let routes: Vec<InRoute> = w
        .config
        .routes
        .iter()
        .filter(|r| r.direction == RouteDirection::In)
        .filter_map(|r| {
            Mapping::new(&r.remote, &r.local)
                .ok()
                .map(|mapping| InRoute {
                    mapping,
                    qos: r.qos,
                    retain: r.retain,
                })
        })
        .collect();
    if !routes.is_empty() {
        let filters: Vec<Filter> = routes
            .iter()
            .map(|r| {
                let path = match &w.share_group {
                    Some(g) => format!("$share/{g}/{}", r.mapping.from_filter()),
                    None => r.mapping.from_filter().to_string(),
                };
                let mut f = Filter::new(path, qos(r.qos));
                // No-local is a protocol error on shared subscriptions; the marker covers them.
                f.nolocal = w.share_group.is_none();
                f.preserve_retain = r.retain;
                f
            })
            .collect();
        client.try_subscribe_many(filters)?;
    }

    // Sent to the client, PUBLISH not yet on the wire (pkid unknown): (seq, qos).
    let mut unassigned: VecDeque<(u64, u8)> = VecDeque::new();
    // On the wire, awaiting PUBACK: pkid → seq.
    let mut awaiting: HashMap<u16, u64> = HashMap::new();
    let mut cursor: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        // Fill the window from the buffer.
        while unassigned.len() + awaiting.len() < WINDOW {
            let next = {
                let mut b = match w.shared.buffer.lock() {
                    Ok(b) => b,
                    Err(_) => break,
                };
                let expired = b.expire(Instant::now());
                Stats::add(&w.shared.stats.dropped, expired);
                b.first_from(cursor).cloned()
            };
            let Some(item) = next else { break };
            let props = PublishProperties {
                user_properties: vec![(MARKER_PROPERTY.to_string(), w.shared.marker.clone())],
                ..PublishProperties::default()
            };
            client.try_publish_with_properties(
                item.topic,
                qos(item.qos),
                item.retain,
                item.payload,
                props,
            )?;
            unassigned.push_back((item.seq, item.qos));
            cursor = item.seq + 1;
        }
        tokio::select! {
            event = el.poll() => {
                let event = event.map_err(|source| SessionError::Connection { remote: remote.clone(), source })?;
                match event {
                    Event::Outgoing(Outgoing::Publish(pkid)) => {
                        if let Some((seq, q)) = unassigned.pop_front() {
                            if q == 0 {
                                acknowledged(w, seq, None);
                            } else {
                                awaiting.insert(pkid, seq);
                            }
                        }
                    }
                    Event::Incoming(Packet::PubAck(ack)) => {
                        if let Some(seq) = awaiting.remove(&ack.pkid) {
                            acknowledged(w, seq, Some(ack.reason));
                        }
                    }
                    Event::Incoming(Packet::SubAck(ack)) => {
                        if let Some(code) = ack.return_codes.iter().find(|c| !matches!(c, rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_))) {
                            w.shared.stats.set_error(format!("remote refused an in-route subscription: {code:?}"));
                        }
                    }
                    Event::Incoming(Packet::Publish(p)) => {
                        inject(w, &routes, &p).await;
                        if p.qos != QoS::AtMostOnce {
                            client.try_ack(&p)?;
                        }
                    }
                    _ => {}
                }
            }
            _ = w.shared.notify.notified() => {}
            _ = tick.tick() => {}
        }
    }
}

/// A PUBACK (or a QoS 0 send) for buffered message `seq`.
fn acknowledged(w: &Worker, seq: u64, reason: Option<PubAckReason>) {
    if let Ok(mut b) = w.shared.buffer.lock() {
        b.remove(seq);
    }
    match reason {
        None | Some(PubAckReason::Success) | Some(PubAckReason::NoMatchingSubscribers) => {
            Stats::add(&w.shared.stats.forwarded, 1);
        }
        Some(r) => {
            Stats::add(&w.shared.stats.failed, 1);
            w.shared
                .stats
                .set_error(format!("remote refused a message: {r:?}"));
        }
    }
}

/// Publishes a remote message into the local cluster with the mapped topic.
async fn inject(w: &Worker, routes: &[InRoute], p: &rumqttc::v5::mqttbytes::v5::Publish) {
    let own = p.properties.as_ref().is_some_and(|props| {
        props
            .user_properties
            .iter()
            .any(|(k, v)| k == MARKER_PROPERTY && *v == w.shared.marker)
    });
    if own {
        Stats::add(&w.shared.stats.loops_blocked, 1);
        return;
    }
    let Ok(topic) = std::str::from_utf8(&p.topic) else {
        Stats::add(&w.shared.stats.failed, 1);
        return;
    };
    let Some((route, local)) = routes
        .iter()
        .find_map(|r| r.mapping.map(topic).map(|t| (r, t)))
    else {
        return;
    };
    let mut props = rmqtt::codec::v5::PublishProperties::default();
    props.user_properties.push((
        MARKER_PROPERTY.into(),
        bytestring::ByteString::from(w.shared.marker.clone()),
    ));
    let publish = rmqtt::codec::types::Publish {
        dup: false,
        retain: route.retain && p.retain,
        qos: if route.qos == 0 {
            rmqtt::codec::types::QoS::AtMostOnce
        } else {
            rmqtt::codec::types::QoS::AtLeastOnce
        },
        topic: bytestring::ByteString::from(local),
        packet_id: None,
        payload: Bytes::clone(&p.payload),
        properties: Some(props),
    };
    let from = From::from_bridge(Id::new(
        w.node_id,
        0,
        None,
        None,
        bytestring::ByteString::from(format!("bridge:{}", w.shared.name)),
        None,
    ));
    match SessionState::forwards(&w.scx, from, publish.into(), false, None).await {
        Ok(()) => Stats::add(&w.shared.stats.forwarded, 1),
        Err(e) => {
            Stats::add(&w.shared.stats.failed, 1);
            w.shared
                .stats
                .set_error(format!("injecting a remote message locally: {e}"));
        }
    }
}
