use super::*;

const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

fn config() -> BrokerConfig {
    BrokerConfig {
        version: CONFIG_VERSION.into(),
        cluster_name: "demo".into(),
        node: NodeConfig::with_id(1),
        listeners: ListenersConfig {
            bind: "127.0.0.1".into(),
            mqtts: PortConfig { port: 8883 },
            wss: None,
            mqtt: None,
            allow_anonymous: false,
        },
        cluster: ClusterConfig {
            raft_port: 5363,
            grpc_port: 5364,
            peers: vec![
                PeerConfig {
                    id: 1,
                    host: "demo-core-0.demo-core.ns.svc".into(),
                },
                PeerConfig {
                    id: 2,
                    host: "demo-core-1.demo-core.ns.svc".into(),
                },
                PeerConfig {
                    id: 3,
                    host: "demo-core-2.demo-core.ns.svc".into(),
                },
            ],
            port_overrides: BTreeMap::new(),
        },
        http: HttpConfig { port: 9090 },
        limits: LimitsConfig {
            max_connections: 10_000,
            max_inflight: 32,
            max_queued_messages: 1000,
            max_packet_size: 1 << 20,
            session_expiry_secs: 7200,
            message_expiry_secs: 3600,
            max_topic_levels: 16,
            retain_available: true,
        },
        watch_interval_ms: 250,
    }
}

fn directory() -> BrokerDirectory {
    BrokerDirectory {
        config: config(),
        server_cert_pem: CERT.into(),
        server_key_pem: KEY.into(),
        clients_ca_pem: CERT.into(),
        acl: crate::acl::RuleSetBuilder::new(crate::acl::Effect::Deny)
            .build()
            .unwrap(),
        revoked: RevokedSet {
            version: CONFIG_VERSION.into(),
            revision: "r1".into(),
            serials: ["0A:1B".to_owned()].into(),
        },
        push_token: "s3cret".into(),
    }
}

fn files_with(edit: impl FnOnce(&mut DirectoryFiles)) -> DirectoryFiles {
    let mut files = render(&directory());
    edit(&mut files);
    files
}

fn broker_json_with(edit: impl FnOnce(&mut BrokerConfig)) -> DirectoryFiles {
    let mut c = config();
    edit(&mut c);
    files_with(|f| {
        f.insert(files::BROKER.into(), serde_json::to_vec(&c).unwrap());
    })
}

#[test]
fn render_then_load_round_trips() {
    let loaded = load(&render(&directory())).unwrap();
    assert_eq!(loaded, directory());
}

#[test]
fn every_missing_file_is_named() {
    for file in files::ALL {
        let files = files_with(|f| {
            f.remove(file);
        });
        assert_eq!(
            load(&files).unwrap_err(),
            ConfigError::MissingFile(file),
            "{file}"
        );
    }
}

#[test]
fn not_utf8_is_rejected() {
    let files = files_with(|f| {
        f.insert(files::SERVER_CERT.into(), vec![0xff, 0xfe]);
    });
    assert_eq!(
        load(&files).unwrap_err(),
        ConfigError::NotUtf8(files::SERVER_CERT)
    );
}

#[test]
fn malformed_json_names_the_file() {
    let files = files_with(|f| {
        f.insert(files::BROKER.into(), b"{not json".to_vec());
    });
    assert!(matches!(
        load(&files).unwrap_err(),
        ConfigError::Parse {
            file: files::BROKER,
            ..
        }
    ));
}

#[test]
fn unknown_field_is_rejected() {
    let mut v = serde_json::to_value(config()).unwrap();
    v["surprise"] = serde_json::json!(1);
    let files = files_with(|f| {
        f.insert(files::BROKER.into(), serde_json::to_vec(&v).unwrap());
    });
    let err = load(&files).unwrap_err();
    assert!(err.to_string().contains("surprise"), "{err}");
}

#[test]
fn incomplete_broker_json_is_rejected() {
    let mut v = serde_json::to_value(config()).unwrap();
    v.as_object_mut().unwrap().remove("cluster");
    let files = files_with(|f| {
        f.insert(files::BROKER.into(), serde_json::to_vec(&v).unwrap());
    });
    let err = load(&files).unwrap_err();
    assert!(err.to_string().contains("cluster"), "{err}");
}

#[test]
fn wrong_version_is_rejected() {
    let files = broker_json_with(|c| c.version = "broker.mqtt.operator.dev/v0".into());
    assert_eq!(
        load(&files).unwrap_err(),
        ConfigError::UnsupportedVersion {
            file: files::BROKER,
            found: "broker.mqtt.operator.dev/v0".into()
        }
    );
}

#[test]
fn zero_node_id_is_rejected() {
    let files = broker_json_with(|c| c.node.id = 0);
    assert_eq!(load(&files).unwrap_err(), ConfigError::ZeroNodeId);
}

#[test]
fn node_must_be_a_peer() {
    let files = broker_json_with(|c| c.node.id = 7);
    assert_eq!(load(&files).unwrap_err(), ConfigError::NodeNotInPeers(7));
}

#[test]
fn duplicate_peer_is_rejected() {
    let files = broker_json_with(|c| {
        c.cluster.peers.push(PeerConfig {
            id: 2,
            host: "x".into(),
        })
    });
    assert_eq!(load(&files).unwrap_err(), ConfigError::DuplicatePeer(2));
}

#[test]
fn empty_peer_host_is_rejected() {
    let files = broker_json_with(|c| c.cluster.peers[1].host = " ".into());
    assert_eq!(load(&files).unwrap_err(), ConfigError::EmptyPeerHost(2));
}

#[test]
fn zero_port_is_rejected() {
    let files = broker_json_with(|c| c.http.port = 0);
    assert_eq!(load(&files).unwrap_err(), ConfigError::ZeroPort("http"));
}

#[test]
fn port_clash_is_rejected() {
    let files = broker_json_with(|c| c.listeners.mqtt = Some(PortConfig { port: 9090 }));
    assert_eq!(
        load(&files).unwrap_err(),
        ConfigError::PortClash {
            first: "http",
            second: "listeners.mqtt",
            port: 9090
        }
    );
}

#[test]
fn port_overrides_apply_to_this_node() {
    let files = broker_json_with(|c| {
        c.cluster.port_overrides.insert(
            1,
            PeerPorts {
                raft_port: 8883,
                grpc_port: 7000,
            },
        );
    });
    assert_eq!(
        load(&files).unwrap_err(),
        ConfigError::PortClash {
            first: "listeners.mqtts",
            second: "cluster.raftPort",
            port: 8883
        }
    );
}

#[test]
fn zero_limit_is_rejected() {
    let files = broker_json_with(|c| c.limits.max_inflight = 0);
    assert_eq!(
        load(&files).unwrap_err(),
        ConfigError::ZeroLimit("maxInflight")
    );
}

#[test]
fn bind_must_be_an_ip() {
    let files = broker_json_with(|c| c.listeners.bind = "localhost".into());
    assert_eq!(
        load(&files).unwrap_err(),
        ConfigError::InvalidBind("localhost".into())
    );
}

#[test]
fn server_cert_without_pem_is_rejected() {
    let files = files_with(|f| {
        f.insert(files::SERVER_CERT.into(), b"not a cert".to_vec());
    });
    assert_eq!(
        load(&files).unwrap_err(),
        ConfigError::NoPem {
            file: files::SERVER_CERT,
            expected: "CERTIFICATE"
        }
    );
}

#[test]
fn server_key_without_pem_is_rejected() {
    let files = files_with(|f| {
        f.insert(files::SERVER_KEY.into(), CERT.as_bytes().to_vec());
    });
    assert_eq!(
        load(&files).unwrap_err(),
        ConfigError::NoPem {
            file: files::SERVER_KEY,
            expected: "PRIVATE KEY"
        }
    );
}

#[test]
fn empty_trust_bundle_is_rejected() {
    let files = files_with(|f| {
        f.insert(files::CLIENTS_CA.into(), b"\n".to_vec());
    });
    assert_eq!(
        load(&files).unwrap_err(),
        ConfigError::NoPem {
            file: files::CLIENTS_CA,
            expected: "CERTIFICATE"
        }
    );
}

#[test]
fn empty_push_token_is_rejected() {
    let files = files_with(|f| {
        f.insert(files::PUSH_TOKEN.into(), b"  \n".to_vec());
    });
    assert_eq!(load(&files).unwrap_err(), ConfigError::EmptyPushToken);
}

#[test]
fn invalid_serial_is_rejected() {
    let files = files_with(|f| {
        f.insert(
            files::REVOKED.into(),
            serde_json::to_vec(&serde_json::json!({
                "version": CONFIG_VERSION, "revision": "r", "serials": ["zz"]
            }))
            .unwrap(),
        );
    });
    assert_eq!(
        load(&files).unwrap_err(),
        ConfigError::InvalidSerial("zz".into())
    );
}

#[test]
fn revoked_set_version_is_checked() {
    let bytes = serde_json::to_vec(&serde_json::json!({
        "version": "v0", "revision": "r", "serials": []
    }))
    .unwrap();
    assert_eq!(
        load_revoked(&bytes).unwrap_err(),
        ConfigError::UnsupportedVersion {
            file: files::REVOKED,
            found: "v0".into()
        }
    );
}

#[test]
fn serials_normalise_across_spellings() {
    assert_eq!(normalize_serial("0A:1B:fF").as_deref(), Some("a1bff"));
    assert_eq!(normalize_serial("0x00a1bff").as_deref(), Some("a1bff"));
    assert_eq!(normalize_serial("000").as_deref(), Some("0"));
    assert_eq!(normalize_serial("g1"), None);
    assert_eq!(normalize_serial(""), None);
}

#[test]
fn debug_redacts_secrets() {
    let shown = format!("{:?}", directory());
    assert!(!shown.contains("s3cret"));
    assert!(!shown.contains("MIIE"));
}

#[test]
fn acl_bin_round_trips_and_garbage_is_rejected_naming_the_file() {
    let files = render(&directory());
    assert_eq!(load(&files).unwrap().acl, directory().acl);
    let bad = files_with(|f| {
        f.insert(files::ACL.into(), b"{}".to_vec());
    });
    let err = load(&bad).unwrap_err();
    assert!(matches!(err, ConfigError::Acl(_)), "{err}");
    assert!(err.to_string().contains("acl.bin"), "{err}");
}

#[test]
fn node_id_from_pod_name_resolves_the_ordinal() {
    let files = broker_json_with(|c| c.node = NodeConfig::from_pod_name());
    let dir = load_for(&files, Some("demo-core-2")).unwrap();
    assert_eq!(dir.config.node, NodeConfig::with_id(3));
    assert_eq!(node_id_from_pod_name("demo", "demo-core-0"), Some(1));
    assert_eq!(node_id_from_pod_name("demo", "other-core-0"), None);
    assert_eq!(node_id_from_pod_name("demo", "demo-core-"), None);
    assert_eq!(node_id_from_pod_name("demo", "demo-core-1x"), None);
}

#[test]
fn node_id_has_exactly_one_source() {
    let from_pod = broker_json_with(|c| c.node = NodeConfig::from_pod_name());
    assert_eq!(load(&from_pod).unwrap_err(), ConfigError::NoPodName);
    assert!(matches!(
        load_for(&from_pod, Some("demo-core-x")).unwrap_err(),
        ConfigError::BadPodName { .. }
    ));
    // Ordinal 6 -> id 7, which is not a peer.
    assert_eq!(
        load_for(&from_pod, Some("demo-core-6")).unwrap_err(),
        ConfigError::NodeNotInPeers(7)
    );
    let fixed = broker_json_with(|c| c.node = NodeConfig::with_id(1));
    assert_eq!(
        load_for(&fixed, Some("demo-core-0")).unwrap_err(),
        ConfigError::NodeIdTwice("demo-core-0".into())
    );
    let both = broker_json_with(|c| {
        c.node = NodeConfig {
            id: 1,
            id_from_pod_name: true,
        }
    });
    assert!(matches!(
        load_for(&both, Some("demo-core-0")).unwrap_err(),
        ConfigError::NodeIdTwice(_)
    ));
}
