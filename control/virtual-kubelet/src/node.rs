//! The Node and its Lease: registered from the VirtualNode, its Ready
//! condition honest about the provider (NotReady once it has been
//! unreachable for the grace period), its allocatable the capacity minus
//! what the admitted pods request.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{coordination::v1::Lease, core::v1::Node},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    api::{Patch, PatchParams},
    Api, Client,
};
use serde_json::{json, Value};
use strait_api::{authentication::ResourceSlice, names, offloading::VirtualNode};
use strait_offloading::{
    placement::node_labels, quantity::Resources, reflection::pods::Admitted, status::now,
};
use tokio::sync::watch;

pub const FIELD_MANAGER: &str = "strait-virtual-kubelet";

/// Where and how the node reports.
pub struct NodeSettings {
    pub node_name: String,
    pub node_ip: String,
    pub kubelet_port: u16,
    pub not_ready_grace: Duration,
    pub status_interval: Duration,
}

/// The capacity of the node: the VirtualNode's resources, else its slice's grant.
pub async fn capacity(local: &Client, virtual_node: &VirtualNode) -> Resources {
    let namespace = virtual_node.metadata.namespace.clone().unwrap_or_default();
    let declared = if virtual_node.spec.resources.is_empty() {
        match &virtual_node.spec.resource_slice_name {
            Some(slice) => Api::<ResourceSlice>::namespaced(local.clone(), &namespace)
                .get_opt(slice)
                .await
                .ok()
                .flatten()
                .and_then(|s| s.status)
                .map(|s| s.resources)
                .unwrap_or_default(),
            None => Default::default(),
        }
    } else {
        virtual_node.spec.resources.clone()
    };
    Resources::from_list(&declared).unwrap_or_else(|error| {
        tracing::warn!(%error, "capacity unreadable; announcing none");
        Resources::default()
    })
}

/// Keeps the Node, its status and its Lease up to date, forever.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    local: Client,
    remote: Client,
    settings: NodeSettings,
    mut virtual_node: watch::Receiver<Option<VirtualNode>>,
    admitted: Arc<Admitted>,
    capacity_out: watch::Sender<Resources>,
) {
    let nodes = Api::<Node>::all(local.clone());
    let leases = Api::<Lease>::namespaced(local.clone(), "kube-node-lease");
    let mut last_reachable: Option<Instant> = None;
    let mut last_error = String::from("not probed yet");
    let mut last_body: Option<Value> = None;
    let mut last_status: Option<(Value, Instant)> = None;
    let mut ready_since = now();
    let mut was_ready: Option<bool> = None;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    loop {
        let vn = virtual_node.borrow_and_update().clone();
        let probe = tokio::time::timeout(
            settings.status_interval.max(Duration::from_secs(1)),
            remote.apiserver_version(),
        )
        .await;
        match probe {
            Ok(Ok(_)) => last_reachable = Some(Instant::now()),
            Ok(Err(error)) => last_error = error.to_string(),
            Err(_) => last_error = "the provider's API server did not answer in time".into(),
        }
        let reachable = last_reachable.is_some_and(|at| at.elapsed() < settings.not_ready_grace);
        if let Some(vn) = vn.filter(|vn| vn.spec.create_node) {
            let capacity = capacity(&local, &vn).await;
            capacity_out.send_if_modified(|c| {
                let changed = *c != capacity;
                *c = capacity.clone();
                changed
            });
            let body = node_body(&vn, &settings);
            if last_body.as_ref() != Some(&body) {
                match nodes
                    .patch(&settings.node_name, &params, &Patch::Apply(&body))
                    .await
                {
                    Ok(_) => last_body = Some(body),
                    Err(error) => tracing::warn!(%error, "registering the node failed"),
                }
            }
            if was_ready != Some(reachable) {
                ready_since = now();
                was_ready = Some(reachable);
                tracing::info!(ready = reachable, "node readiness changed");
            }
            let allocatable = capacity.minus(&admitted.used());
            let (reason, message) = if reachable {
                (
                    "KubeletReady",
                    format!("the provider {} is reachable", vn.spec.cluster_id),
                )
            } else {
                (
                    "ProviderUnreachable",
                    format!(
                        "the provider {} has not answered for over {:?}: {last_error}",
                        vn.spec.cluster_id, settings.not_ready_grace
                    ),
                )
            };
            let condition = |heartbeat: &Value| {
                json!({
                    "type": "Ready",
                    "status": if reachable { "True" } else { "False" },
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": ready_since,
                    "lastHeartbeatTime": heartbeat,
                })
            };
            let status_without_heartbeat = json!({
                "capacity": capacity.to_list(),
                "allocatable": allocatable.to_list(),
                "condition": condition(&Value::Null),
            });
            // Written when something changes, and as a heartbeat every 10 s.
            let stale = last_status.as_ref().is_none_or(|(previous, at)| {
                *previous != status_without_heartbeat || at.elapsed() > Duration::from_secs(10)
            });
            if stale {
                let status = json!({
                    "apiVersion": "v1",
                    "kind": "Node",
                    "status": {
                        "capacity": capacity.to_list(),
                        "allocatable": allocatable.to_list(),
                        "conditions": [condition(&json!(now()))],
                        "addresses": [{"type": "InternalIP", "address": settings.node_ip}, {"type": "Hostname", "address": settings.node_name}],
                        "daemonEndpoints": {"kubeletEndpoint": {"Port": settings.kubelet_port}},
                        "nodeInfo": {
                            "kubeletVersion": concat!("strait-", env!("CARGO_PKG_VERSION")),
                            "operatingSystem": "linux", "architecture": "amd64",
                            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "",
                            "containerRuntimeVersion": "", "kubeProxyVersion": "",
                        },
                    },
                });
                match nodes
                    .patch_status(&settings.node_name, &params, &Patch::Apply(&status))
                    .await
                {
                    Ok(_) => last_status = Some((status_without_heartbeat, Instant::now())),
                    Err(error) => tracing::warn!(%error, "updating the node status failed"),
                }
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": settings.node_name},
                    "spec": {
                        "holderIdentity": settings.node_name,
                        "leaseDurationSeconds": 40,
                        "renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now()),
                    },
                });
                if let Err(error) = leases
                    .patch(&settings.node_name, &params, &Patch::Apply(&lease))
                    .await
                {
                    tracing::warn!(%error, "renewing the lease failed");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.status_interval) => {}
            _ = virtual_node.changed() => {}
        }
    }
}

fn node_body(vn: &VirtualNode, settings: &NodeSettings) -> Value {
    let mut taints =
        vec![json!({"key": names::VIRTUAL_NODE_TAINT, "value": "true", "effect": "NoExecute"})];
    taints.extend(
        vn.spec
            .taints
            .iter()
            .filter_map(|t| serde_json::to_value(t).ok()),
    );
    let mut annotations = vn.spec.annotations.clone();
    annotations.insert(
        names::annotation::VIRTUAL_NODE.to_owned(),
        format!(
            "{}/{}",
            vn.metadata.namespace.clone().unwrap_or_default(),
            vn.metadata.name.clone().unwrap_or_default()
        ),
    );
    let mut labels = node_labels(vn);
    labels.insert("kubernetes.io/role".into(), "agent".into());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert(
        names::label::MANAGED_BY.into(),
        names::label::MANAGED_BY_VALUE.into(),
    );
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": settings.node_name, "labels": labels, "annotations": annotations},
        "spec": {"taints": taints},
    })
}
