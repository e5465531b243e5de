//! `bridges.json` for one MqttCluster from its Bridges and the material the controller resolved
//! for each (remote endpoint, CA, client certificate and key or credentials). Pure.
//!
//! The file carries private keys, so it belongs in a Secret ([`secret_name`], key
//! [`contract::bridge::BRIDGES_FILE`]) projected into the broker's configuration directory, and
//! is pushed with `PUT /v1/bridges`. Bridges that do not validate are left out (the Bridge
//! controller reports them), so one bad Bridge never stops the others.

use contract::bridge::{
    BridgeConfig, BridgeSet, BufferConfig, RemoteConfig, RouteConfig, RouteDirection,
};
use contract::config::CONFIG_VERSION;
use crds::bridge::Direction;
use crds::Bridge;
use kube::ResourceExt;
use sha2::{Digest, Sha256};

/// Session expiry the bridges ask from their remotes (a day: a remote outage shorter than this
/// keeps the remote session and its in-route subscriptions).
pub const SESSION_EXPIRY_SECS: u32 = 86_400;

/// Name of the Secret holding a cluster's `bridges.json`.
pub fn secret_name(cluster: &str) -> String {
    format!("{cluster}-bridges")
}

/// What the controller resolved for one Bridge (secret fields never appear in `Debug`).
#[derive(Clone, PartialEq, Eq)]
pub struct RemoteMaterial {
    /// Host to connect to (the Bridge's `remote.host`, or the remote cluster's client Service).
    pub host: String,
    /// MQTTS port.
    pub port: u16,
    /// CA bundle of the remote's server certificates (PEM).
    pub ca_pem: String,
    /// Client certificate chain (PEM), from the client DeviceIdentity.
    pub client_cert_pem: Option<String>,
    /// Its private key (PEM; secret).
    pub client_key_pem: Option<String>,
    /// Username from `credentialsSecretRef`.
    pub username: Option<String>,
    /// Password from `credentialsSecretRef` (secret).
    pub password: Option<String>,
}

impl std::fmt::Debug for RemoteMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteMaterial")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_cert", &self.client_cert_pem.is_some())
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A Bridge left out of the file, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Bridge name.
    pub name: String,
    /// The problems (field paths included).
    pub problems: Vec<String>,
}

fn config_of(
    namespace: &str,
    cluster: &str,
    bridge: &Bridge,
    m: &RemoteMaterial,
) -> Result<BridgeConfig, Vec<String>> {
    let mut problems: Vec<String> = crds::validate::validate_bridge(&bridge.spec)
        .iter()
        .map(ToString::to_string)
        .collect();
    let max_age = crds::duration::parse_duration(&bridge.spec.buffer.max_age);
    if !problems.is_empty() {
        return Err(problems);
    }
    let max_age_secs = match max_age {
        Ok(d) => d.as_secs().max(1),
        Err(e) => {
            problems.push(format!("spec.buffer.maxAge: {e}"));
            return Err(problems);
        }
    };
    let name = bridge.name_any();
    let config = BridgeConfig {
        name: name.clone(),
        remote: RemoteConfig {
            host: m.host.clone(),
            port: m.port,
            ca_pem: m.ca_pem.clone(),
            client_cert_pem: m.client_cert_pem.clone(),
            client_key_pem: m.client_key_pem.clone(),
            username: m.username.clone(),
            password: m.password.clone(),
            client_id: format!("mqtt-bridge.{namespace}.{cluster}.{name}"),
            session_expiry_secs: SESSION_EXPIRY_SECS,
        },
        routes: bridge
            .spec
            .routes
            .iter()
            .map(|r| RouteConfig {
                direction: match r.direction {
                    Direction::Out => RouteDirection::Out,
                    Direction::In => RouteDirection::In,
                },
                local: r.local.clone(),
                remote: r.remote.clone(),
                qos: r.qos,
                retain: r.retain,
            })
            .collect(),
        buffer: BufferConfig {
            max_messages: u64::try_from(bridge.spec.buffer.max_messages).unwrap_or(1),
            max_age_secs,
        },
    };
    // The contract's own checks (PEM blocks, credentials) are the broker's; run them here so a
    // Bridge the broker would refuse never reaches the file and blocks the others.
    let probe = BridgeSet {
        version: CONFIG_VERSION.into(),
        revision: String::new(),
        bridges: vec![config.clone()],
    };
    contract::bridge::load_bridges(&contract::bridge::render_bridges(&probe))
        .map_err(|e| vec![e.to_string()])?;
    Ok(config)
}

/// `bridges.json` for cluster `cluster` in `namespace`: the Bridges whose `clusterRef` names it,
/// sorted by name, with a content revision. Returns the set and the Bridges left out.
pub fn render_bridges(
    namespace: &str,
    cluster: &str,
    bridges: &[(Bridge, RemoteMaterial)],
) -> (BridgeSet, Vec<Skipped>) {
    let mut configs = Vec::new();
    let mut skipped = Vec::new();
    for (bridge, material) in bridges
        .iter()
        .filter(|(b, _)| b.spec.cluster_ref.name == cluster)
    {
        match config_of(namespace, cluster, bridge, material) {
            Ok(c) => configs.push(c),
            Err(problems) => skipped.push(Skipped {
                name: bridge.name_any(),
                problems,
            }),
        }
    }
    configs.sort_by(|a, b| a.name.cmp(&b.name));
    let mut set = BridgeSet {
        version: CONFIG_VERSION.into(),
        revision: String::new(),
        bridges: configs,
    };
    let digest = Sha256::digest(contract::bridge::render_bridges(&set));
    set.revision = hex::encode(&digest[..8]);
    (set, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMA==\n-----END PRIVATE KEY-----\n";

    fn bridge(name: &str, cluster: &str, routes: &str) -> Bridge {
        serde_yaml::from_str(&format!(
            "apiVersion: mqtt.operator.dev/v1alpha1\nkind: Bridge\nmetadata: {{name: {name}, namespace: iot}}\n\
             spec: {{clusterRef: {{name: {cluster}}}, remote: {{host: central.example, port: 8883}}, routes: {routes}, buffer: {{maxMessages: 500, maxAge: 30m}}}}\n"
        ))
        .unwrap()
    }

    fn material() -> RemoteMaterial {
        RemoteMaterial {
            host: "central.example".into(),
            port: 8883,
            ca_pem: CA.into(),
            client_cert_pem: Some(CA.into()),
            client_key_pem: Some(KEY.into()),
            username: None,
            password: None,
        }
    }

    #[test]
    fn renders_the_cluster_bridges_sorted_with_a_stable_revision() {
        let ok = "[{direction: out, local: 'site/+/telemetry/#', remote: 'prod/acme/paris/+/telemetry/#'}, {direction: in, local: 'site/+/cmd/#', remote: 'prod/acme/paris/+/cmd/#', retain: true}]";
        let input = vec![
            (bridge("z-second", "edge", ok), material()),
            (bridge("a-first", "edge", ok), material()),
            (bridge("other-cluster", "elsewhere", ok), material()),
        ];
        let (set, skipped) = render_bridges("iot", "edge", &input);
        assert!(skipped.is_empty(), "{skipped:?}");
        let names: Vec<&str> = set.bridges.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["a-first", "z-second"]);
        let b = &set.bridges[0];
        assert_eq!(b.remote.client_id, "mqtt-bridge.iot.edge.a-first");
        assert_eq!(
            b.buffer,
            BufferConfig {
                max_messages: 500,
                max_age_secs: 1800
            }
        );
        assert_eq!(b.routes[0].qos, 1, "default QoS 1");
        assert_eq!(b.routes[1].direction, RouteDirection::In);
        assert!(b.routes[1].retain);
        // The broker accepts what the operator renders.
        let bytes = contract::bridge::render_bridges(&set);
        assert_eq!(contract::bridge::load_bridges(&bytes).unwrap(), set);
        // Same input in another order: same bytes, same revision.
        let mut reversed = input.clone();
        reversed.reverse();
        assert_eq!(render_bridges("iot", "edge", &reversed).0, set);
        assert_eq!(set.revision.len(), 16);
    }

    #[test]
    fn invalid_bridges_are_left_out_with_their_fields() {
        let bad = "[{direction: out, local: 'site/+/telemetry/#', remote: 'prod/#'}]";
        let ok = "[{direction: out, local: 'a/#', remote: 'b/#'}]";
        let mut no_key = material();
        no_key.client_key_pem = None;
        let (set, skipped) = render_bridges(
            "iot",
            "edge",
            &[
                (bridge("bad", "edge", bad), material()),
                (bridge("good", "edge", ok), material()),
                (bridge("keyless", "edge", ok), no_key),
            ],
        );
        assert_eq!(set.bridges.len(), 1);
        assert_eq!(set.bridges[0].name, "good");
        assert_eq!(skipped.len(), 2);
        assert!(skipped[0].problems[0].contains("spec.routes[0].remote"));
        assert!(
            skipped[1].problems[0].contains("clientKeyPem"),
            "{skipped:?}"
        );
    }

    #[test]
    fn the_config_volume_mounts_the_optional_bridges_secret() {
        let volume = crate::render::config_dir::volume(&crate::render::names::Names::new("edge"));
        let sources = volume.projected.unwrap().sources.unwrap();
        let bridges = sources
            .iter()
            .filter_map(|s| s.secret.as_ref())
            .find(|s| s.name == secret_name("edge"))
            .expect("bridges Secret projected");
        assert_eq!(bridges.optional, Some(true));
        let items = bridges.items.as_ref().unwrap();
        assert_eq!(items[0].key, contract::bridge::BRIDGES_FILE);
        assert_eq!(items[0].path, contract::bridge::BRIDGES_FILE);
    }

    #[test]
    fn debug_never_shows_the_key_or_password() {
        let mut m = material();
        m.password = Some("hunter2".into());
        let text = format!("{m:?}");
        assert!(
            !text.contains("PRIVATE") && !text.contains("hunter2"),
            "{text}"
        );
    }
}
