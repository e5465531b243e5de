use super::*;

const CA: &str = "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMA==\n-----END PRIVATE KEY-----\n";

fn bridge(name: &str) -> BridgeConfig {
    BridgeConfig {
        name: name.into(),
        remote: RemoteConfig {
            host: "central.example".into(),
            port: 8883,
            ca_pem: CA.into(),
            client_cert_pem: Some(CA.into()),
            client_key_pem: Some(KEY.into()),
            username: None,
            password: None,
            client_id: "edge-to-central".into(),
            session_expiry_secs: 3600,
        },
        routes: vec![
            RouteConfig {
                direction: RouteDirection::Out,
                local: "site/+/telemetry/#".into(),
                remote: "prod/acme/paris/+/telemetry/#".into(),
                qos: 1,
                retain: false,
            },
            RouteConfig {
                direction: RouteDirection::In,
                local: "site/+/commands/#".into(),
                remote: "prod/acme/paris/+/commands/#".into(),
                qos: 1,
                retain: false,
            },
        ],
        buffer: BufferConfig {
            max_messages: 1000,
            max_age_secs: 3600,
        },
    }
}

fn set(bridges: Vec<BridgeConfig>) -> BridgeSet {
    BridgeSet {
        version: CONFIG_VERSION.into(),
        revision: "r1".into(),
        bridges,
    }
}

#[test]
fn maps_the_documented_example_both_ways() {
    let m = Mapping::new("site/+/telemetry/#", "prod/acme/paris/+/telemetry/#").unwrap();
    assert_eq!(
        m.map("site/s1/telemetry/temp/c").as_deref(),
        Some("prod/acme/paris/s1/telemetry/temp/c")
    );
    assert_eq!(
        m.map("site/s1/telemetry").as_deref(),
        Some("prod/acme/paris/s1/telemetry")
    );
    assert_eq!(m.map("site/s1/commands/x"), None);
    assert_eq!(m.map("other/s1/telemetry/x"), None);
    let r = m.reverse();
    assert_eq!(r.from_filter(), "prod/acme/paris/+/telemetry/#");
    assert_eq!(
        r.map("prod/acme/paris/s1/telemetry/temp").as_deref(),
        Some("site/s1/telemetry/temp")
    );
}

#[test]
fn exact_and_prefix_only_mappings() {
    let m = Mapping::new("a/b", "c/d/e").unwrap();
    assert_eq!(m.map("a/b").as_deref(), Some("c/d/e"));
    assert_eq!(m.map("a/b/c"), None);
    let m = Mapping::new("+/x", "p/+/x").unwrap();
    assert_eq!(m.map("a/x").as_deref(), Some("p/a/x"));
    let m = Mapping::new("#", "#").unwrap();
    assert_eq!(m.map("a/b").as_deref(), Some("a/b"));
}

#[test]
fn unmappable_filters_are_rejected() {
    for (l, r) in [
        ("site/+/telemetry/#", "prod/#"),
        ("site/+/x", "prod/+/y"),
        ("site/#", "prod/x"),
        ("a/+", "a/+/+"),
    ] {
        assert!(
            matches!(Mapping::new(l, r), Err(MappingError::Shape { .. })),
            "{l} -> {r}"
        );
    }
    for (l, r) in [("prod/#", "#"), ("0/#", "/#")] {
        assert!(
            matches!(Mapping::new(l, r), Err(MappingError::EmptyPrefix { .. })),
            "{l} -> {r}"
        );
    }
    assert!(matches!(
        Mapping::new("$share/g/a/#", "b/#"),
        Err(MappingError::Shared(_))
    ));
    assert!(matches!(
        Mapping::new("a/#/b", "c/#/b"),
        Err(MappingError::Filter { .. })
    ));
    assert!(matches!(
        Mapping::new("a/b+", "c/b+"),
        Err(MappingError::Filter { .. })
    ));
}

#[test]
fn bridges_file_round_trips() {
    let s = set(vec![bridge("to-central"), bridge("to-backup")]);
    assert_eq!(load_bridges(&render_bridges(&s)).unwrap(), s);
}

#[test]
fn bridges_file_rejects_each_problem() {
    let check = |mutate: &dyn Fn(&mut BridgeSet), want: &str| {
        let mut s = set(vec![bridge("b1")]);
        mutate(&mut s);
        let err = load_bridges(&render_bridges(&s)).unwrap_err().to_string();
        assert!(err.contains(want), "{err} does not contain {want}");
    };
    check(&|s| s.version = "v0".into(), "unsupported version");
    check(&|s| s.bridges.push(bridge("b1")), "listed twice");
    check(&|s| s.bridges[0].name = "B_1".into(), "bridge name");
    check(&|s| s.bridges[0].remote.port = 0, "remote.port");
    check(&|s| s.bridges[0].remote.host = " ".into(), "remote.host");
    check(&|s| s.bridges[0].remote.ca_pem = "x".into(), "remote.caPem");
    check(
        &|s| s.bridges[0].remote.client_key_pem = None,
        "set together",
    );
    check(
        &|s| s.bridges[0].remote.password = Some("p".into()),
        "remote.username",
    );
    check(
        &|s| s.bridges[0].remote.session_expiry_secs = 0,
        "persistent remote session",
    );
    check(&|s| s.bridges[0].routes.clear(), "at least one route");
    check(
        &|s| s.bridges[0].routes[1].remote = "prod/#".into(),
        "routes[1]: cannot map",
    );
    check(&|s| s.bridges[0].routes[0].qos = 2, "routes[0].qos");
    check(&|s| s.bridges[0].buffer.max_messages = 0, "maxMessages");
    check(&|s| s.bridges[0].buffer.max_age_secs = 0, "maxAgeSecs");
    let unknown =
        br#"{"version":"broker.mqtt.operator.dev/v1","revision":"r","bridges":[],"extra":1}"#;
    assert!(matches!(load_bridges(unknown), Err(BridgeError::Parse(_))));
}

#[test]
fn debug_redacts_secrets() {
    let mut b = bridge("b");
    b.remote.username = Some("u".into());
    b.remote.password = Some("hunter2".into());
    let text = format!("{b:?}");
    assert!(
        !text.contains("PRIVATE KEY") && !text.contains("hunter2"),
        "{text}"
    );
    assert!(text.contains("<redacted>"));
}
