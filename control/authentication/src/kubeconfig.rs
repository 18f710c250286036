//! Kubeconfigs: rendering one from an Identity's credentials, and a client
//! from one (the user's bootstrap Secret or an Identity's).

use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::json;

use crate::Error;

pub const KUBECONFIG_KEY: &str = "kubeconfig";

/// Remote calls give up quickly, so a dead provider shows as unreachable
/// instead of stalling the reconcile.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// A kubeconfig with one context: `server` verified with `ca_pem`, the
/// client certificate and key, and `namespace` as the default.
pub fn render(
    name: &str,
    server: &str,
    ca_pem: &str,
    certificate_pem: &str,
    key_pem: &str,
    namespace: &str,
) -> Result<String, Error> {
    let encode = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
    let mut cluster = json!({"server": server});
    if !ca_pem.is_empty() {
        cluster["certificate-authority-data"] = json!(encode(ca_pem));
    }
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": {
            "client-certificate-data": encode(certificate_pem),
            "client-key-data": encode(key_pem),
        }}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
        "current-context": name,
    });
    serde_norway::to_string(&config).map_err(|e| Error::Kubeconfig(e.to_string()))
}

/// A client for the cluster a kubeconfig points at.
pub async fn client(yaml: &str) -> Result<Client, Error> {
    let kubeconfig =
        Kubeconfig::from_yaml(yaml).map_err(|e| Error::Kubeconfig(format!("unreadable: {e}")))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Kubeconfig(format!("unusable: {e}")))?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    Client::try_from(config).map_err(Error::Kube)
}

/// The `kubeconfig` key of a Secret, or None when the Secret or key is missing.
pub async fn from_secret(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let Some(secret) = secrets.get_opt(name).await? else {
        return Ok(None);
    };
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(KUBECONFIG_KEY))
        .and_then(|b| String::from_utf8(b.0.clone()).ok());
    let from_string_data = secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(KUBECONFIG_KEY))
        .cloned();
    Ok(from_data.or(from_string_data))
}
