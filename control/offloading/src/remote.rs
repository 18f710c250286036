//! Clients to a provider cluster, from the kubeconfig Secret a VirtualNode
//! points to (written from an Identity, by the authentication module or by hand).

use k8s_openapi::api::core::v1::Secret;
use kube::{config::Kubeconfig, Api, Client, Config};
use strait_api::SecretReference;

use crate::Error;

/// The key of the kubeconfig in the Secret.
pub const KUBECONFIG_KEY: &str = "kubeconfig";

/// A client for the provider whose kubeconfig is in `secret` (in
/// `default_namespace` when the reference names none).
pub async fn client_from_secret(
    local: &Client,
    secret: &SecretReference,
    default_namespace: &str,
) -> Result<Client, Error> {
    let namespace = secret.namespace.as_deref().unwrap_or(default_namespace);
    let object = Api::<Secret>::namespaced(local.clone(), namespace)
        .get(&secret.name)
        .await?;
    let missing = || Error::KubeconfigMissing {
        namespace: namespace.to_owned(),
        name: secret.name.clone(),
    };
    let bytes = object
        .data
        .as_ref()
        .and_then(|d| d.get(KUBECONFIG_KEY))
        .map(|b| b.0.clone())
        .or_else(|| {
            object
                .string_data
                .as_ref()
                .and_then(|d| d.get(KUBECONFIG_KEY))
                .map(|s| s.clone().into_bytes())
        })
        .ok_or_else(missing)?;
    let invalid = |message: String| Error::KubeconfigInvalid {
        namespace: namespace.to_owned(),
        name: secret.name.clone(),
        message,
    };
    let text = String::from_utf8(bytes).map_err(|e| invalid(e.to_string()))?;
    client_from_kubeconfig(&text).await.map_err(invalid)
}

/// A client from kubeconfig YAML.
pub async fn client_from_kubeconfig(yaml: &str) -> Result<Client, String> {
    let kubeconfig = Kubeconfig::from_yaml(yaml).map_err(|e| e.to_string())?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    Client::try_from(config).map_err(|e| e.to_string())
}
