//! How the broker's configuration directory is assembled in a pod: one projected volume of the
//! config ConfigMap, the CA bundle ConfigMap, the server/push-token Secrets and the optional
//! bridges Secret. Projected volumes update atomically, so the broker's file watcher never sees
//! half a change.

use k8s_openapi::api::core::v1::{
    ConfigMapProjection, KeyToPath, ProjectedVolumeSource, SecretProjection, Volume,
    VolumeProjection,
};

use contract::config::files;

use super::names::Names;

/// Keys of the config ConfigMap, each mounted under the same file name: the text keys
/// ([`CONFIG_TEXT_KEYS`], under `data`) and the binary ones ([`CONFIG_BINARY_KEYS`]).
pub const CONFIG_KEYS: [&str; 3] = [files::BROKER, files::ACL, files::REVOKED];
/// Keys of the config ConfigMap carried under `data` (UTF-8 JSON).
pub const CONFIG_TEXT_KEYS: [&str; 2] = [files::BROKER, files::REVOKED];
/// Keys of the config ConfigMap carried under `binaryData`: the compiled ACL rule set
/// (`contract::acl::codec`), which is not UTF-8.
pub const CONFIG_BINARY_KEYS: [&str; 1] = [files::ACL];
/// Key of the CA bundle ConfigMap holding the clients CA bundle.
pub const CLIENTS_CA_KEY: &str = "clients-ca.crt";
/// Key of the CA bundle ConfigMap holding the cluster CA bundle.
pub const CLUSTER_CA_KEY: &str = "cluster-ca.crt";
/// Key of the push-token Secret.
pub const PUSH_TOKEN_KEY: &str = "token";

fn item(key: &str, path: &str) -> KeyToPath {
    KeyToPath {
        key: key.into(),
        path: path.into(),
        mode: None,
    }
}

/// The `config` volume of a core pod.
pub fn volume(names: &Names) -> Volume {
    Volume {
        name: "config".into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o440),
            sources: Some(vec![
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: names.config(),
                        items: Some(CONFIG_KEYS.iter().map(|k| item(k, k)).collect()),
                        optional: Some(false),
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: names.ca_bundle(),
                        items: Some(vec![item(CLIENTS_CA_KEY, "tls/clients-ca.crt")]),
                        optional: Some(false),
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    secret: Some(SecretProjection {
                        name: names.server_tls(),
                        items: Some(vec![
                            item("tls.crt", "tls/server.crt"),
                            item("tls.key", "tls/server.key"),
                        ]),
                        optional: Some(false),
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    secret: Some(SecretProjection {
                        name: names.push_token(),
                        items: Some(vec![item(PUSH_TOKEN_KEY, "push-token")]),
                        optional: Some(false),
                    }),
                    ..VolumeProjection::default()
                },
                // `bridges.json` holds client keys, hence a Secret; optional: a cluster without
                // Bridges has none, and the broker treats the absent file as no bridges.
                VolumeProjection {
                    secret: Some(SecretProjection {
                        name: super::bridge::secret_name(&names.cluster),
                        items: Some(vec![item(
                            contract::bridge::BRIDGES_FILE,
                            contract::bridge::BRIDGES_FILE,
                        )]),
                        optional: Some(true),
                    }),
                    ..VolumeProjection::default()
                },
            ]),
        }),
        ..Volume::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys_are_the_text_and_binary_keys_and_name_contract_files() {
        let mut split: Vec<&str> = CONFIG_TEXT_KEYS
            .iter()
            .chain(CONFIG_BINARY_KEYS.iter())
            .copied()
            .collect();
        let mut all = CONFIG_KEYS.to_vec();
        split.sort_unstable();
        all.sort_unstable();
        assert_eq!(split, all);
        for key in CONFIG_KEYS {
            assert!(files::ALL.contains(&key), "{key}");
        }
        assert_eq!(CONFIG_BINARY_KEYS, ["acl.bin"]);
    }
}
