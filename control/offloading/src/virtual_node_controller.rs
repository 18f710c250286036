//! VirtualNode controller (consumer side): keeps one virtual kubelet running
//! per VirtualNode, reports whether it runs and whether its Node is Ready,
//! and on deletion drains the node: stops the kubelet, deletes the pods
//! bound to it here and their ShadowPods on the provider, the Node and its Lease.

use std::{sync::Arc, time::Duration};

use futures::StreamExt as _;
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Node, Pod},
};
use kube::{
    api::{DeleteParams, ListParams},
    runtime::{
        controller::Action,
        finalizer::{finalizer, Event},
        reflector::ObjectRef,
        watcher, Controller,
    },
    Api, Client, ResourceExt as _,
};
use strait_api::{
    condition::find_condition,
    names,
    offloading::{NamespaceMap, ShadowPod, VirtualNode, VirtualNodeStatus},
    ConditionStatus,
};
use tracing::{info, warn};

use crate::{
    kubelet::{node_name, KubeletSettings, Launcher},
    remote,
    status::{apply_status, condition, ignore_not_found, merge_conditions},
    Error,
};

pub const FIELD_MANAGER: &str = "strait-offloading-virtualnode";

pub struct Context {
    pub client: Client,
    pub launcher: Launcher,
    pub settings: KubeletSettings,
}

pub async fn run(context: Arc<Context>) {
    let client = context.client.clone();
    let nodes = watcher::Config::default().labels(&format!(
        "{}={}",
        names::label::NODE_TYPE,
        names::label::NODE_TYPE_VIRTUAL
    ));
    Controller::new(
        Api::<VirtualNode>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(Api::<Node>::all(client), nodes, |node: Node| {
        let reference = node.annotations().get(names::annotation::VIRTUAL_NODE)?;
        let (namespace, name) = reference.split_once('/')?;
        Some(ObjectRef::new(name).within(namespace))
    })
    .run(reconcile, error_policy, context)
    .for_each(|result| async move {
        if let Err(error) = result {
            warn!(%error, "VirtualNode reconcile failed");
        }
    })
    .await;
}

fn error_policy(_: Arc<VirtualNode>, _: &Error, _: Arc<Context>) -> Action {
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(virtual_node: Arc<VirtualNode>, context: Arc<Context>) -> Result<Action, Error> {
    let namespace = virtual_node
        .namespace()
        .ok_or(Error::Unnamed("VirtualNode"))?;
    let api = Api::<VirtualNode>::namespaced(context.client.clone(), &namespace);
    finalizer(
        &api,
        names::finalizer::VIRTUAL_NODE,
        virtual_node,
        |event| async {
            match event {
                Event::Apply(vn) => apply(&vn, &context, &api).await,
                Event::Cleanup(vn) => drain(&vn, &context).await,
            }
        },
    )
    .await
    .map_err(Error::finalizer)
}

async fn apply(
    vn: &VirtualNode,
    context: &Context,
    api: &Api<VirtualNode>,
) -> Result<Action, Error> {
    let node_name = node_name(vn);
    let launched = context
        .launcher
        .ensure(&context.client, vn, &context.settings)
        .await;
    let running = launched.is_ok() && context.launcher.is_running(vn);
    let node = Api::<Node>::all(context.client.clone())
        .get_opt(&node_name)
        .await?;
    let node_ready = node
        .as_ref()
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .cloned();
    let mut status = vn.status.clone().unwrap_or_default();
    let kubelet = match &launched {
        Err(error) => condition(
            "KubeletRunning",
            false,
            "StartFailed",
            format!("the virtual kubelet could not be started: {error}"),
        ),
        Ok(()) if running => condition(
            "KubeletRunning",
            true,
            "Running",
            "the virtual kubelet runs",
        ),
        Ok(()) => condition(
            "KubeletRunning",
            false,
            "Starting",
            "the virtual kubelet is starting",
        ),
    };
    let registered = if !vn.spec.create_node {
        condition(
            "NodeRegistered",
            false,
            "NodeDisabled",
            "spec.createNode is false: only reflection runs",
        )
    } else if node.is_some() {
        condition(
            "NodeRegistered",
            true,
            "Registered",
            format!("Node {node_name} is registered"),
        )
    } else {
        condition(
            "NodeRegistered",
            false,
            "NotRegistered",
            format!("Node {node_name} is not registered yet by the virtual kubelet"),
        )
    };
    let ready = match &node_ready {
        Some(c) if c.status == "True" => condition(
            "Ready",
            true,
            "NodeReady",
            "the node is Ready: pods run on the provider",
        ),
        Some(c) => condition(
            "Ready",
            false,
            "NodeNotReady",
            format!(
                "the node is NotReady ({}): {}",
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            ),
        ),
        None => condition(
            "Ready",
            false,
            "NodeNotReady",
            "the node has not reported readiness yet",
        ),
    };
    merge_conditions(
        &mut status.conditions,
        vec![kubelet, registered, ready],
        vn.metadata.generation,
    );
    status.node_name = Some(node_name);
    if vn.status.as_ref() != Some(&status) {
        apply_status(api, &vn.name_any(), FIELD_MANAGER, &status_body(&status)).await?;
    }
    launched?;
    // Process exits are not events: look again now and then.
    Ok(Action::requeue(Duration::from_secs(5)))
}

fn status_body(status: &VirtualNodeStatus) -> serde_json::Value {
    serde_json::to_value(status).unwrap_or_default()
}

/// Stops the kubelet, then removes what it left: the ShadowPods it created
/// on the provider, the local pods bound to its node, the Node and the Lease.
async fn drain(vn: &VirtualNode, context: &Context) -> Result<Action, Error> {
    let node_name = node_name(vn);
    info!(virtual_node = %vn.name_any(), node = %node_name, "draining virtual node");
    context.launcher.stop(&context.client, vn).await?;
    delete_remote_shadow_pods(vn, context, &node_name).await?;
    let pods = Api::<Pod>::all(context.client.clone())
        .list(&ListParams::default().fields(&format!("spec.nodeName={node_name}")))
        .await?;
    for pod in pods {
        let namespace = pod.namespace().unwrap_or_default();
        ignore_not_found(
            Api::<Pod>::namespaced(context.client.clone(), &namespace)
                .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
                .await,
        )?;
    }
    ignore_not_found(
        Api::<Node>::all(context.client.clone())
            .delete(&node_name, &DeleteParams::default())
            .await,
    )?;
    ignore_not_found(
        Api::<Lease>::namespaced(context.client.clone(), "kube-node-lease")
            .delete(&node_name, &DeleteParams::default())
            .await,
    )?;
    Ok(Action::await_change())
}

/// The provider's offloaded namespaces are those its NamespaceMap reports
/// for this cluster; the node's ShadowPods carry its label.
async fn delete_remote_shadow_pods(
    vn: &VirtualNode,
    context: &Context,
    node_name: &str,
) -> Result<(), Error> {
    let namespace = vn.namespace().unwrap_or_default();
    let provider =
        remote::client_from_secret(&context.client, &vn.spec.kubeconfig_secret_ref, &namespace)
            .await;
    let provider = match provider {
        Ok(client) => client,
        // Without credentials there is nothing this side can reach: the
        // provider's tenant cleanup owns what is left there.
        Err(Error::Kube(kube::Error::Api(status))) if status.code == 404 => return Ok(()),
        Err(error) => return Err(error),
    };
    let tenant = names::tenant_namespace(&context.settings.local_cluster_id);
    let map = ignore_not_found(
        Api::<NamespaceMap>::namespaced(provider.clone(), &tenant)
            .get(&context.settings.local_cluster_id)
            .await,
    )?;
    let remote_namespaces = map
        .and_then(|m| m.status)
        .map(|s| {
            s.current_mapping
                .into_values()
                .map(|r| r.remote_namespace)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let selector = format!("{}={node_name}", names::label::VIRTUAL_NODE);
    for remote_namespace in remote_namespaces {
        let api = Api::<ShadowPod>::namespaced(provider.clone(), &remote_namespace);
        let shadows = ignore_not_found(api.list(&ListParams::default().labels(&selector)).await)?;
        for shadow in shadows.into_iter().flatten() {
            ignore_not_found(
                api.delete(&shadow.name_any(), &DeleteParams::default())
                    .await,
            )?;
        }
    }
    Ok(())
}

/// Whether the VirtualNode reports its node Ready.
pub fn is_ready(vn: &VirtualNode) -> bool {
    vn.status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, "Ready"))
        .is_some_and(|c| c.status == ConditionStatus::True)
}
