//! Connecting to a cluster and the few reads and writes every command shares.
use std::path::Path;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::{
    api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    Api, Client, Config,
};
use serde_json::Value;
use strait_api::{
    authentication::ResourceSlice,
    core::ForeignCluster,
    names::{identity, SYSTEM_NAMESPACE},
    offloading::NamespaceOffloading,
};

use crate::error::{next_for, Error};

/// Field manager of everything the CLI writes.
pub const FIELD_MANAGER: &str = "strait-cli";

/// A client for `kubeconfig` (or the default one), with a label for messages.
pub async fn connect(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Client, Error> {
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..KubeConfigOptions::default()
    };
    let shown = kubeconfig.map_or("(default)".to_owned(), |p| p.display().to_string());
    let bad = |problem: String, next: &str| Error::Kubeconfig {
        path: shown.clone(),
        problem,
        next: next.to_owned(),
    };
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| bad(e.to_string(), "pass the path of a readable kubeconfig file"))?;
            Config::from_custom_kubeconfig(file, &options).await
        }
        None => Config::from_kubeconfig(&options).await,
    }
    .map_err(|e| {
        bad(
            e.to_string(),
            "pass --kubeconfig, set KUBECONFIG, or check the context name",
        )
    })?;
    Client::try_from(config).map_err(|e| bad(e.to_string(), "check the kubeconfig's credentials"))
}

/// The cluster ID the authentication controller published at install.
pub async fn cluster_id(client: &Client, cluster: &str) -> Result<String, Error> {
    let name = identity::CLUSTER_IDENTITY_CONFIGMAP;
    let configmap = Api::<ConfigMap>::namespaced(client.clone(), SYSTEM_NAMESPACE)
        .get_opt(name)
        .await
        .map_err(|e| {
            let next = next_for(&e, cluster);
            Error::api(format!("reading the identity of {cluster}"), e, next)
        })?;
    let not_installed = || {
        Error::failed(
            format!("{cluster} has no cluster ID (ConfigMap {SYSTEM_NAMESPACE}/{name}, key {})", identity::CLUSTER_ID_KEY),
            "install Strait there with the authentication module (helm install strait charts/strait -n strait --create-namespace); its controller writes the ID at start, or pass the ID with --consumer-cluster-id/--provider-cluster-id",
        )
    };
    configmap
        .and_then(|c| c.data)
        .and_then(|mut data| data.remove(identity::CLUSTER_ID_KEY))
        .filter(|id| !id.is_empty())
        .ok_or_else(not_installed)
}

/// The API resource of each kind the CLI writes, and whether it is namespaced.
fn resource_of(kind: &str) -> Option<(ApiResource, bool)> {
    Some(match kind {
        "ForeignCluster" => (ApiResource::erase::<ForeignCluster>(&()), false),
        "ResourceSlice" => (ApiResource::erase::<ResourceSlice>(&()), true),
        "NamespaceOffloading" => (ApiResource::erase::<NamespaceOffloading>(&()), true),
        "Secret" => (ApiResource::erase::<Secret>(&()), true),
        "Namespace" => (ApiResource::erase::<Namespace>(&()), false),
        _ => return None,
    })
}

fn api_for(client: &Client, object: &Value) -> Result<(Api<DynamicObject>, String), Error> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let (resource, namespaced) = resource_of(kind).ok_or_else(|| {
        Error::failed(
            format!("strait cannot write a {kind}"),
            "report this as a bug in strait",
        )
    })?;
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let api = match object["metadata"]["namespace"].as_str() {
        Some(namespace) if namespaced => Api::namespaced_with(client.clone(), namespace, &resource),
        _ => Api::all_with(client.clone(), &resource),
    };
    Ok((api, name))
}

/// `kind namespace/name` for messages.
pub fn describe(object: &Value) -> String {
    let name = object["metadata"]["name"].as_str().unwrap_or("?");
    let kind = object["kind"].as_str().unwrap_or("?");
    match object["metadata"]["namespace"].as_str() {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Server-side apply: the same object twice is no change, so re-running a
/// command converges instead of failing.
pub async fn apply(client: &Client, object: &Value, cluster: &str) -> Result<(), Error> {
    let (api, name) = api_for(client, object)?;
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(|e| {
        let next = next_for(&e, cluster);
        Error::api(
            format!("applying {} in {cluster}", describe(object)),
            e,
            next,
        )
    })?;
    Ok(())
}

/// Deletes the object if it exists; true when it is (already) gone.
pub async fn delete(client: &Client, object: &Value, cluster: &str) -> Result<bool, Error> {
    let (api, name) = api_for(client, object)?;
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(either) => Ok(either.is_right()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(true),
        Err(e) => {
            let next = next_for(&e, cluster);
            Err(Error::api(
                format!("deleting {} in {cluster}", describe(object)),
                e,
                next,
            ))
        }
    }
}

/// Whether the object still exists (a deleted object waits for its finalizers).
pub async fn exists(client: &Client, object: &Value, cluster: &str) -> Result<bool, Error> {
    let (api, name) = api_for(client, object)?;
    api.get_opt(&name).await.map(|o| o.is_some()).map_err(|e| {
        let next = next_for(&e, cluster);
        Error::api(
            format!("reading {} in {cluster}", describe(object)),
            e,
            next,
        )
    })
}
