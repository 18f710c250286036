//! The whole offloading module, as strait-controller runs it: the consumer
//! side and the provider side together (a cluster may be both).

use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use strait_api::names;

use crate::{
    kubelet::{KubeletSettings, Launcher},
    namespace_map_controller, namespace_offloading_controller, shadow_endpointslice_controller,
    shadow_pod_controller::{self, Enforcement},
    virtual_node_controller, Error,
};

pub struct ModuleConfig {
    /// This cluster's ID; read from the cluster identity ConfigMap when None.
    pub cluster_id: Option<String>,
    pub launcher: Launcher,
    /// Settings of the virtual kubelets (the cluster ID is filled in here).
    pub kubelet: KubeletSettings,
    /// Quota enforcement for tenants whose namespace does not say.
    pub quota_enforcement: Enforcement,
}

/// This cluster's ID: given, or from the identity the authentication module writes.
pub async fn cluster_id(client: &Client, given: Option<String>) -> Result<String, Error> {
    if let Some(id) = given {
        return Ok(id);
    }
    let configmap = Api::<ConfigMap>::namespaced(client.clone(), names::SYSTEM_NAMESPACE)
        .get_opt(names::identity::CLUSTER_IDENTITY_CONFIGMAP)
        .await?;
    configmap
        .and_then(|c| c.data)
        .and_then(|d| d.get(names::identity::CLUSTER_ID_KEY).cloned())
        .ok_or_else(|| {
            Error::Waiting(format!(
                "no cluster ID: pass --cluster-id, or let the authentication module write ConfigMap {}/{}",
                names::SYSTEM_NAMESPACE,
                names::identity::CLUSTER_IDENTITY_CONFIGMAP
            ))
        })
}

pub async fn run(client: Client, config: ModuleConfig) -> Result<(), Error> {
    let local_cluster_id = cluster_id(&client, config.cluster_id).await?;
    tracing::info!(cluster_id = %local_cluster_id, "offloading module starting");
    let mut kubelet = config.kubelet;
    kubelet.local_cluster_id = local_cluster_id.clone();
    let virtual_nodes = virtual_node_controller::run(Arc::new(virtual_node_controller::Context {
        client: client.clone(),
        launcher: config.launcher,
        settings: kubelet,
    }));
    let offloadings =
        namespace_offloading_controller::run(Arc::new(namespace_offloading_controller::Context {
            client: client.clone(),
            local_cluster_id,
        }));
    let shadow_pods = shadow_pod_controller::run(Arc::new(shadow_pod_controller::Context::new(
        client.clone(),
        config.quota_enforcement,
    )));
    let (_, _, _, shadow_pods, _) = tokio::join!(
        virtual_nodes,
        offloadings,
        namespace_map_controller::run(client.clone()),
        shadow_pods,
        shadow_endpointslice_controller::run(client),
    );
    shadow_pods
}
