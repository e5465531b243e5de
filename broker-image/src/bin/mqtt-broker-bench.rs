//! Benchmark: our broker (1 node and 3 nodes, cross-node) side by side with Debian's mosquitto
//! in one run on this machine. All over TLS with client certificates, 256-byte payloads,
//! QoS 0 and QoS 1; reports throughput at the subscriber and p50/p99 end-to-end latency.
//!
//! `cargo run --release -p broker --bin mqtt-broker-bench -- [--messages N]`
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use contract::config::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, SanType,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

type Fail = Box<dyn std::error::Error>;

struct Pem {
    cert: String,
    key: String,
}

struct Pki {
    ca: String,
    server: Pem,
    client: Pem,
}

fn pki() -> Result<Pki, Fail> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, "bench-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |cn: &str, server: bool| -> Result<Pem, Fail> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(if server {
            vec!["localhost".to_owned()]
        } else {
            vec![]
        })?;
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        if server {
            p.subject_alt_names
                .push(SanType::IpAddress("127.0.0.1".parse()?));
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        } else {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        Ok(Pem {
            cert: p.signed_by(&key, &issuer)?.pem(),
            key: key.serialize_pem(),
        })
    };
    Ok(Pki {
        ca: ca_pem,
        server: leaf("broker", true)?,
        client: leaf("bench", false)?,
    })
}

fn free_port() -> Result<u16, Fail> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Kills the processes it holds when dropped.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_tcp(port: u16, timeout: Duration) -> Result<(), Fail> {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("port {port} not listening after {timeout:?}").into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn wait_ready(http: u16, timeout: Duration) -> Result<(), Fail> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", http)) {
            let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut r = String::new();
            let _ = s.read_to_string(&mut r);
            if r.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("broker on {http} not ready after {timeout:?}").into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts `n` broker nodes; returns their MQTTS ports.
fn start_brokers(root: &Path, pki: &Pki, n: u64) -> Result<(Procs, Vec<u16>), Fail> {
    let exe = std::env::current_exe()?.with_file_name("mqtt-broker");
    let mut ports = BTreeMap::new();
    for id in 1..=n {
        ports.insert(id, (free_port()?, free_port()?, free_port()?, free_port()?));
    }
    let peers: Vec<PeerConfig> = (1..=n)
        .map(|id| PeerConfig {
            id,
            host: "127.0.0.1".into(),
        })
        .collect();
    let overrides: BTreeMap<u64, PeerPorts> = ports
        .iter()
        .map(|(id, p)| {
            (
                *id,
                PeerPorts {
                    raft_port: p.2,
                    grpc_port: p.3,
                },
            )
        })
        .collect();
    let acl = contract::acl::RuleSetBuilder::new(contract::acl::Effect::Allow).build()?;
    let mut procs = Procs(Vec::new());
    let mut mqtts = Vec::new();
    for (id, (mqtt_port, http, _, _)) in &ports {
        let dir = BrokerDirectory {
            config: BrokerConfig {
                version: CONFIG_VERSION.into(),
                cluster_name: "bench".into(),
                node: NodeConfig::with_id(*id),
                listeners: ListenersConfig {
                    bind: "127.0.0.1".into(),
                    mqtts: PortConfig { port: *mqtt_port },
                    wss: None,
                    mqtt: None,
                    allow_anonymous: false,
                },
                cluster: ClusterConfig {
                    raft_port: 5363,
                    grpc_port: 5364,
                    peers: peers.clone(),
                    port_overrides: overrides.clone(),
                },
                http: HttpConfig { port: *http },
                limits: LimitsConfig {
                    max_connections: 10_000,
                    max_inflight: 1000,
                    max_queued_messages: 1_000_000,
                    max_packet_size: 1 << 20,
                    session_expiry_secs: 60,
                    message_expiry_secs: 600,
                    max_topic_levels: 16,
                    retain_available: true,
                },
                watch_interval_ms: 1000,
            },
            server_cert_pem: pki.server.cert.clone(),
            server_key_pem: pki.server.key.clone(),
            clients_ca_pem: pki.ca.clone(),
            acl: acl.clone(),
            revoked: RevokedSet {
                version: CONFIG_VERSION.into(),
                revision: "0".into(),
                serials: Default::default(),
            },
            push_token: "bench".into(),
        };
        let node_dir = root.join(format!("{n}-node-{id}"));
        for (name, bytes) in render(&dir) {
            let path = node_dir.join(name);
            std::fs::create_dir_all(path.parent().ok_or("path")?)?;
            std::fs::write(path, bytes)?;
        }
        let child = Command::new(&exe)
            .arg("--config-dir")
            .arg(&node_dir)
            .arg("--runtime-dir")
            .arg(node_dir.join("run"))
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "starting {}: {e} (build it with --release first)",
                    exe.display()
                )
            })?;
        procs.0.push(child);
        mqtts.push(*mqtt_port);
    }
    for (_, http, _, _) in ports.values() {
        wait_ready(*http, Duration::from_secs(90))?;
    }
    Ok((procs, mqtts))
}

fn start_mosquitto(root: &Path, pki: &Pki) -> Result<(Procs, u16), Fail> {
    let dir = root.join("mosquitto");
    std::fs::create_dir_all(&dir)?;
    let write = |name: &str, text: &str| -> Result<PathBuf, Fail> {
        let p = dir.join(name);
        std::fs::write(&p, text)?;
        Ok(p)
    };
    let ca = write("ca.pem", &pki.ca)?;
    let cert = write("server.crt", &pki.server.cert)?;
    let key = write("server.key", &pki.server.key)?;
    let port = free_port()?;
    let conf = write(
        "mosquitto.conf",
        &format!(
            "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n\
             use_identity_as_username true\nallow_anonymous false\nmax_inflight_messages 1000\nmax_queued_messages 1000000\npersistence false\n",
            ca.display(),
            cert.display(),
            key.display()
        ),
    )?;
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting mosquitto: {e} (apt-get install mosquitto)"))?;
    let procs = Procs(vec![child]);
    wait_tcp(port, Duration::from_secs(10))?;
    Ok((procs, port))
}

fn options(pki: &Pki, port: u16, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_transport(Transport::Tls(TlsConfiguration::Simple {
        ca: pki.ca.as_bytes().to_vec(),
        alpn: None,
        client_auth: Some((
            pki.client.cert.as_bytes().to_vec(),
            pki.client.key.as_bytes().to_vec(),
        )),
    }));
    o.set_keep_alive(Duration::from_secs(60));
    o.set_inflight(1000);
    o.set_request_channel_capacity(100_000);
    o.set_max_packet_size(1 << 20, 1 << 20);
    o
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

struct Result1 {
    received: usize,
    rate: f64,
    p50: Duration,
    p99: Duration,
}

/// Publishes `count` 256-byte messages via `pub_port`, receives them via `sub_port`.
async fn run_case(
    pki: &Pki,
    pub_port: u16,
    sub_port: u16,
    qos: QoS,
    count: usize,
    tag: &str,
) -> Result<Result1, Fail> {
    let topic = format!("bench/{tag}");
    let (sub, mut sub_loop) =
        AsyncClient::new(options(pki, sub_port, &format!("sub-{tag}")), 100_000);
    sub.subscribe(&topic, qos).await?;
    // Wait for SUBACK.
    loop {
        if let Event::Incoming(Packet::SubAck(_)) =
            tokio::time::timeout(Duration::from_secs(10), sub_loop.poll()).await??
        {
            break;
        }
    }
    let (publisher, mut pub_loop) =
        AsyncClient::new(options(pki, pub_port, &format!("pub-{tag}")), 100_000);
    let pub_task = tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
    // Routes across raft nodes take a moment: probe until a message arrives.
    let probe = format!("{topic}/probe");
    sub.subscribe(&probe, QoS::AtMostOnce).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    'probe: loop {
        publisher
            .publish(&probe, QoS::AtMostOnce, false, vec![0u8; 8])
            .await?;
        let until = Instant::now() + Duration::from_millis(300);
        while let Ok(Ok(ev)) = tokio::time::timeout_at(until.into(), sub_loop.poll()).await {
            if let Event::Incoming(Packet::Publish(p)) = ev {
                if p.topic == probe {
                    break 'probe;
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{tag}: no route after 15 s").into());
        }
    }
    let sender = publisher.clone();
    let t = topic.clone();
    let start = Instant::now();
    let send = tokio::spawn(async move {
        for _ in 0..count {
            let mut payload = vec![0u8; 256];
            payload[..16].copy_from_slice(&now_nanos().to_le_bytes());
            if sender.publish(&t, qos, false, payload).await.is_err() {
                break;
            }
        }
    });
    let mut latencies = Vec::with_capacity(count);
    let deadline = Instant::now() + Duration::from_secs(120);
    while latencies.len() < count && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), sub_loop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) if p.topic == topic => {
                let mut ts = [0u8; 16];
                ts.copy_from_slice(&p.payload[..16]);
                latencies.push(Duration::from_nanos(
                    now_nanos().saturating_sub(u128::from_le_bytes(ts)) as u64,
                ));
            }
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    let elapsed = start.elapsed();
    send.await?;
    pub_task.abort();
    latencies.sort();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or_default()
    };
    Ok(Result1 {
        received: latencies.len(),
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: pick(0.5),
        p99: pick(0.99),
    })
}

#[tokio::main]
async fn main() -> Result<(), Fail> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let count = args
        .iter()
        .position(|a| a == "--messages")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000usize);
    let root = std::env::temp_dir().join(format!("mqtt-broker-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let pki = pki()?;
    println!(
        "256-byte payloads, {count} messages per case, TLS + client certificates everywhere\n"
    );
    println!(
        "{:<38} {:>5} {:>10} {:>12} {:>10} {:>10}",
        "target", "qos", "received", "msg/s", "p50", "p99"
    );
    let mut targets: Vec<(String, Procs, u16, u16)> = Vec::new();
    let (m, port) = start_mosquitto(&root, &pki)?;
    targets.push(("mosquitto (Debian, 1 process)".into(), m, port, port));
    let (one, ports) = start_brokers(&root, &pki, 1)?;
    targets.push(("mqtt-broker, 1 node".into(), one, ports[0], ports[0]));
    let (three, ports) = start_brokers(&root, &pki, 3)?;
    targets.push((
        "mqtt-broker, 3 nodes (pub n1->sub n2)".into(),
        three,
        ports[0],
        ports[1],
    ));
    for (name, _procs, pub_port, sub_port) in &targets {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            let tag = format!("{}-{}", pub_port, qos as u8);
            let r = run_case(&pki, *pub_port, *sub_port, qos, count, &tag).await?;
            println!(
                "{:<38} {:>5} {:>10} {:>12.0} {:>10.2?} {:>10.2?}",
                name, qos as u8, r.received, r.rate, r.p50, r.p99
            );
        }
    }
    drop(targets);
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
