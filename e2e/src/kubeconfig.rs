//! The bed's credentials as files the apiserver and clients read: the static token file and a
//! token kubeconfig. Pure: renders text, writes nothing.

use std::path::Path;

/// The user the token authenticates as; member of `system:masters`, so RBAC allows everything.
pub const ADMIN_USER: &str = "e2e-admin";

/// Renders the apiserver's `--token-auth-file` (CSV: token, user, uid, "groups").
pub fn token_auth_file(token: &str) -> String {
    format!("{token},{ADMIN_USER},{ADMIN_USER},\"system:masters\"\n")
}

/// Renders a kubeconfig for `server` (an `https://127.0.0.1:port` URL) trusting the CA at
/// `ca_path` and authenticating with `token`; its context's namespace is `default`.
pub fn render(server: &str, ca_path: &Path, token: &str) -> String {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "e2e",
            "cluster": {
                "server": server,
                "certificate-authority": ca_path.display().to_string(),
            },
        }],
        "users": [{ "name": ADMIN_USER, "user": { "token": token } }],
        "contexts": [{
            "name": "e2e",
            "context": { "cluster": "e2e", "user": ADMIN_USER, "namespace": "default" },
        }],
        "current-context": "e2e",
        "preferences": {},
    });
    // A JSON value of strings, arrays and objects always serializes to YAML.
    serde_yaml::to_string(&doc).unwrap_or_else(|e| unreachable!("kubeconfig to YAML: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn kubeconfig_names_server_ca_and_token() {
        let text = render(
            "https://127.0.0.1:4443",
            &PathBuf::from("/tmp/x/ca.crt"),
            "s3cret",
        );
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("valid YAML");
        assert_eq!(
            doc["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:4443"
        );
        assert_eq!(
            doc["clusters"][0]["cluster"]["certificate-authority"],
            "/tmp/x/ca.crt"
        );
        assert_eq!(doc["users"][0]["user"]["token"], "s3cret");
        assert_eq!(doc["current-context"], "e2e");
    }

    #[test]
    fn token_file_puts_admin_in_system_masters() {
        assert_eq!(
            token_auth_file("abc"),
            "abc,e2e-admin,e2e-admin,\"system:masters\"\n"
        );
    }
}
