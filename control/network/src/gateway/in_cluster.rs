//! What a gateway pod in a cluster is given, and where: the chart's gateway
//! template mounts the ConfigMap [`config_map_name`] (the gateway's
//! `--config` and the peer's public key) at [`CONFIG_DIR`], the key Secret at
//! [`KEY_DIR`], and a writable directory at [`RUN_DIR`]; the container runs
//! `strait-gateway --config=<CONFIG_DIR>/config.yaml`. The controller
//! renders both files from the CRs, as it does for a local gateway.

use std::path::PathBuf;

use serde_json::json;

/// Mount point of the gateway's ConfigMap.
pub const CONFIG_DIR: &str = "/etc/strait-gateway/config";
/// ConfigMap key of the gateway's `--config`.
pub const CONFIG_KEY: &str = "config.yaml";
/// ConfigMap key of the peer's public key (absent until the peer's
/// PublicKey exists; the gateway waits for the file).
pub const PEER_KEY_KEY: &str = "peer.key";
/// Mount point of the Secret with the private key (key `privateKey`).
pub const KEY_DIR: &str = "/etc/strait-gateway/key";
/// A writable directory (emptyDir) for the status and public key files.
pub const RUN_DIR: &str = "/run/strait-gateway";

/// The ConfigMap holding gateway `name`'s configuration, in the release namespace.
pub fn config_map_name(name: &str) -> String {
    format!("gw-{name}-config")
}

/// The Secret the controller generates a key into when the gateway's CR
/// names none, in the release namespace.
pub fn generated_key_secret_name(name: &str) -> String {
    format!("gw-{name}-key")
}

/// The gateway's files as seen inside its pod.
pub struct PodPaths {
    pub config: PathBuf,
    pub peer_key: PathBuf,
    pub private_key: PathBuf,
    pub public_key: PathBuf,
    pub status: PathBuf,
}

pub fn pod_paths() -> PodPaths {
    let config_dir = PathBuf::from(CONFIG_DIR);
    PodPaths {
        config: config_dir.join(CONFIG_KEY),
        peer_key: config_dir.join(PEER_KEY_KEY),
        private_key: PathBuf::from(KEY_DIR).join(super::controller::PRIVATE_KEY_SECRET_KEY),
        public_key: PathBuf::from(RUN_DIR).join("public.key"),
        status: PathBuf::from(RUN_DIR).join("status.json"),
    }
}

/// The gateway's ConfigMap: its `--config` YAML and, once known, the
/// peer's public key.
pub fn config_map(
    name: &str,
    release_namespace: &str,
    labels: serde_json::Value,
    config_yaml: &str,
    peer_key: Option<&str>,
) -> serde_json::Value {
    let mut data = serde_json::Map::new();
    data.insert(CONFIG_KEY.to_owned(), json!(config_yaml));
    if let Some(key) = peer_key {
        data.insert(PEER_KEY_KEY.to_owned(), json!(format!("{}\n", key.trim())));
    }
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(name),
            "namespace": release_namespace,
            "labels": labels,
        },
        "data": data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_map_holds_the_config_and_the_peer_key_once_known() {
        let without = config_map("to-b", "strait", json!({}), "tunnel: {}\n", None);
        assert_eq!(without["metadata"]["name"], "gw-to-b-config");
        assert_eq!(without["data"][CONFIG_KEY], "tunnel: {}\n");
        assert!(without["data"].get(PEER_KEY_KEY).is_none());
        let with = config_map("to-b", "strait", json!({}), "x", Some(" KEY= "));
        assert_eq!(with["data"][PEER_KEY_KEY], "KEY=\n");
    }

    #[test]
    fn pod_paths_are_under_the_template_mounts() {
        let paths = pod_paths();
        assert!(paths.config.starts_with(CONFIG_DIR));
        assert!(paths.peer_key.starts_with(CONFIG_DIR));
        assert!(paths.private_key.starts_with(KEY_DIR));
        assert!(paths.status.starts_with(RUN_DIR));
    }
}
