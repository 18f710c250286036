//! NamespaceOffloading controller (consumer side): asks every provider whose
//! virtual nodes the cluster selector picks for the remote namespace (a
//! NamespaceMap entry in the tenant namespace there, through the
//! VirtualNode's identity), reports each provider's answer, and gives the
//! namespace's pods the toleration and affinity the pod strategy implies.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        finalizer::{finalizer, Event},
        reflector::{self, ObjectRef},
        watcher, Controller, WatchStreamExt as _,
    },
    Api, Client, ResourceExt as _,
};
use strait_api::{
    names,
    offloading::{
        NamespaceMap, NamespaceOffloading, NamespaceOffloadingStatus, OffloadingPhase,
        RemoteNamespacePhase, RemoteNamespaceStatus, VirtualNode,
    },
    Condition,
};
use tracing::warn;

use crate::{
    placement::{node_labels, pod_placement, remote_namespace_name, selects},
    remote,
    status::{apply_status, condition, ignore_not_found, merge_conditions},
    Error,
};

pub const FIELD_MANAGER: &str = "strait-offloading-namespace";
/// The one NamespaceOffloading of a namespace.
pub const NAME: &str = "offloading";

pub struct Context {
    pub client: Client,
    pub local_cluster_id: String,
}

pub async fn run(context: Arc<Context>) {
    let client = context.client.clone();
    let offloadings = Api::<NamespaceOffloading>::all(client.clone());
    // Any VirtualNode change may change which providers are selected.
    // Watches that only trigger are backed off too: an error retried at
    // once never yields and spins while the API server is away.
    let virtual_nodes = watcher(
        Api::<VirtualNode>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects()
    .filter_map(|r| async move { r.ok().map(|_| ()) });
    let namespaces = Controller::new(offloadings.clone(), watcher::Config::default())
        .reconcile_all_on(virtual_nodes)
        .run(reconcile, error_policy, context.clone())
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "NamespaceOffloading reconcile failed");
            }
        });
    tokio::join!(namespaces, place_pods(client));
}

fn error_policy(_: Arc<NamespaceOffloading>, _: &Error, _: Arc<Context>) -> Action {
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(
    offloading: Arc<NamespaceOffloading>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let namespace = offloading
        .namespace()
        .ok_or(Error::Unnamed("NamespaceOffloading"))?;
    let api = Api::<NamespaceOffloading>::namespaced(context.client.clone(), &namespace);
    finalizer(
        &api,
        names::finalizer::NAMESPACE_OFFLOADING,
        offloading,
        |event| async {
            match event {
                Event::Apply(o) => apply(&o, &context, &api, &namespace).await,
                Event::Cleanup(o) => cleanup(&o, &context, &api, &namespace).await,
            }
        },
    )
    .await
    .map_err(Error::finalizer)
}

/// One VirtualNode per provider cluster (the first by name) whose identity
/// the controller uses there; `selected` says whether the selector picks it.
async fn providers(
    client: &Client,
    offloading: &NamespaceOffloading,
) -> Result<BTreeMap<String, (VirtualNode, bool)>, Error> {
    let mut providers: BTreeMap<String, (VirtualNode, bool)> = BTreeMap::new();
    let mut virtual_nodes = Api::<VirtualNode>::all(client.clone())
        .list(&Default::default())
        .await?
        .items;
    virtual_nodes.sort_by_key(|vn| (vn.namespace(), vn.name_any()));
    for vn in virtual_nodes
        .into_iter()
        .filter(|vn| vn.metadata.deletion_timestamp.is_none())
    {
        let selected = selects(offloading.spec.cluster_selector.as_ref(), &node_labels(&vn));
        let entry = providers
            .entry(vn.spec.cluster_id.clone())
            .or_insert((vn.clone(), selected));
        if selected && !entry.1 {
            *entry = (vn, true);
        }
    }
    Ok(providers)
}

/// Sets (or with `remote_namespace` None, withdraws) this namespace's entry
/// in the provider's NamespaceMap; returns the provider's answer for it.
async fn request_mapping(
    context: &Context,
    provider_node: &VirtualNode,
    local_namespace: &str,
    remote_namespace: Option<&str>,
) -> Result<Option<(RemoteNamespacePhase, String, String)>, Error> {
    let provider = remote::client_from_secret(
        &context.client,
        &provider_node.spec.kubeconfig_secret_ref,
        &provider_node.namespace().unwrap_or_default(),
    )
    .await?;
    let tenant = names::tenant_namespace(&context.local_cluster_id);
    let api = Api::<NamespaceMap>::namespaced(provider, &tenant);
    let mut mapping = serde_json::Map::new();
    if let Some(remote_namespace) = remote_namespace {
        mapping.insert(local_namespace.to_owned(), remote_namespace.into());
    }
    let body = serde_json::json!({
        "apiVersion": "offloading.strait.dev/v1beta1",
        "kind": "NamespaceMap",
        "metadata": {"name": context.local_cluster_id},
        "spec": {"consumerClusterID": context.local_cluster_id, "desiredMapping": mapping},
    });
    // One field manager per local namespace: each owns only its own entry.
    let manager = format!("{FIELD_MANAGER}-{local_namespace}");
    let map = api
        .patch(
            &context.local_cluster_id,
            &PatchParams::apply(&manager).force(),
            &Patch::Apply(&body),
        )
        .await?;
    Ok(map
        .status
        .and_then(|s| s.current_mapping.get(local_namespace).cloned())
        .map(|state| (state.phase, state.remote_namespace, state.message)))
}

async fn apply(
    offloading: &NamespaceOffloading,
    context: &Context,
    api: &Api<NamespaceOffloading>,
    namespace: &str,
) -> Result<Action, Error> {
    let remote_namespace =
        remote_namespace_name(&offloading.spec, namespace, &context.local_cluster_id);
    let previous = offloading
        .status
        .as_ref()
        .map(|s| s.remote_namespaces.clone())
        .unwrap_or_default();
    let mut remote_namespaces = Vec::new();
    let (mut ready, mut failed, mut pending) = (0, 0, 0);
    for (cluster_id, (provider_node, selected)) in providers(&context.client, offloading).await? {
        if !selected {
            if previous.iter().any(|p| p.cluster_id == cluster_id) {
                request_mapping(context, &provider_node, namespace, None).await?;
            }
            continue;
        }
        let mut conditions = previous
            .iter()
            .find(|p| p.cluster_id == cluster_id)
            .map(|p| p.conditions.clone())
            .unwrap_or_default();
        let update = match request_mapping(
            context,
            &provider_node,
            namespace,
            Some(&remote_namespace),
        )
        .await
        {
            Ok(Some((RemoteNamespacePhase::Ready, _, _))) => {
                ready += 1;
                condition(
                    "Ready",
                    true,
                    "NamespaceReady",
                    format!("namespace {remote_namespace} is ready on {cluster_id}"),
                )
            }
            Ok(Some((RemoteNamespacePhase::Failed, _, message))) => {
                failed += 1;
                condition(
                    "Ready",
                    false,
                    "CreationFailed",
                    format!(
                        "{cluster_id} could not create namespace {remote_namespace}: {message}"
                    ),
                )
            }
            Ok(None) => {
                pending += 1;
                condition(
                    "Ready",
                    false,
                    "Pending",
                    format!("waiting for {cluster_id} to create namespace {remote_namespace}"),
                )
            }
            Err(error) => {
                failed += 1;
                condition(
                    "Ready",
                    false,
                    "ProviderUnreachable",
                    format!("asking {cluster_id} for namespace {remote_namespace} failed: {error}"),
                )
            }
        };
        merge_conditions(
            &mut conditions,
            vec![update],
            offloading.metadata.generation,
        );
        remote_namespaces.push(RemoteNamespaceStatus {
            cluster_id,
            conditions,
        });
    }
    let phase = match (ready, failed, pending) {
        (0, 0, 0) => OffloadingPhase::NoClusterSelected,
        (_, 0, 0) => OffloadingPhase::Ready,
        (0, _, 0) => OffloadingPhase::AllFailed,
        (_, f, _) if f > 0 => OffloadingPhase::SomeFailed,
        _ => OffloadingPhase::InProgress,
    };
    let status = NamespaceOffloadingStatus {
        phase,
        remote_namespace_name: Some(remote_namespace),
        remote_namespaces,
        observed_generation: offloading.metadata.generation,
    };
    if offloading.status.as_ref() != Some(&status) {
        apply_status(api, NAME, FIELD_MANAGER, &status).await?;
    }
    Ok(Action::requeue(match phase {
        OffloadingPhase::Ready | OffloadingPhase::NoClusterSelected => Duration::from_secs(30),
        _ => Duration::from_secs(1),
    }))
}

/// Withdraws the namespace from every provider, and waits until each
/// reports it gone.
async fn cleanup(
    offloading: &NamespaceOffloading,
    context: &Context,
    api: &Api<NamespaceOffloading>,
    namespace: &str,
) -> Result<Action, Error> {
    let mut status = offloading
        .status
        .clone()
        .unwrap_or(NamespaceOffloadingStatus {
            phase: OffloadingPhase::Terminating,
            remote_namespace_name: None,
            remote_namespaces: Vec::new(),
            observed_generation: None,
        });
    if status.phase != OffloadingPhase::Terminating {
        status.phase = OffloadingPhase::Terminating;
        apply_status(api, NAME, FIELD_MANAGER, &status).await?;
    }
    let mut waiting = Vec::new();
    for (cluster_id, (provider_node, _)) in providers(&context.client, offloading).await? {
        if !status
            .remote_namespaces
            .iter()
            .any(|r| r.cluster_id == cluster_id)
        {
            continue;
        }
        if request_mapping(context, &provider_node, namespace, None)
            .await?
            .is_some()
        {
            waiting.push(cluster_id);
        }
    }
    if waiting.is_empty() {
        Ok(Action::await_change())
    } else {
        Err(Error::Waiting(format!(
            "the remote namespace is still being deleted on {}",
            waiting.join(", ")
        )))
    }
}

/// Adds the strategy's toleration and affinity to not-yet-scheduled pods of
/// offloaded namespaces (what a mutating webhook does in a cluster).
async fn place_pods(client: Client) {
    let (store, writer) = reflector::store::<NamespaceOffloading>();
    // A new or changed NamespaceOffloading re-places the pods waiting for it.
    let offloading_changes = reflector::reflector(
        writer,
        watcher(
            Api::<NamespaceOffloading>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .applied_objects()
    .filter_map(|r| async move { r.ok().map(|_| ()) });
    let context = Arc::new((client.clone(), store));
    Controller::new(Api::<Pod>::all(client), watcher::Config::default())
        .reconcile_all_on(offloading_changes)
        .run(
            place_pod,
            |_, _: &Error, _| Action::requeue(Duration::from_secs(2)),
            context,
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "pod placement failed");
            }
        })
        .await;
}

async fn place_pod(
    pod: Arc<Pod>,
    context: Arc<(Client, reflector::Store<NamespaceOffloading>)>,
) -> Result<Action, Error> {
    let (client, offloadings) = &*context;
    let namespace = pod.namespace().unwrap_or_default();
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some();
    let Some(offloading) = offloadings.get(&ObjectRef::new(NAME).within(&namespace)) else {
        return Ok(Action::await_change());
    };
    if scheduled || pod.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let (toleration, affinity) = pod_placement(&offloading.spec);
    let spec = pod.spec.clone().unwrap_or_default();
    let mut tolerations = spec.tolerations.clone().unwrap_or_default();
    let mut patch = serde_json::Map::new();
    if let Some(toleration) = toleration {
        if !tolerations.contains(&toleration) {
            tolerations.push(toleration);
            patch.insert("tolerations".into(), serde_json::to_value(&tolerations)?);
        }
    }
    if affinity.is_some() && spec.affinity != affinity {
        patch.insert("affinity".into(), serde_json::to_value(&affinity)?);
    }
    if !patch.is_empty() {
        ignore_not_found(
            Api::<Pod>::namespaced(client.clone(), &namespace)
                .patch(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"spec": patch})),
                )
                .await,
        )?;
    }
    Ok(Action::await_change())
}

/// The Ready condition of one provider's entry.
pub fn provider_ready(status: &NamespaceOffloadingStatus, cluster_id: &str) -> Option<Condition> {
    status
        .remote_namespaces
        .iter()
        .find(|r| r.cluster_id == cluster_id)
        .and_then(|r| r.conditions.iter().find(|c| c.type_ == "Ready").cloned())
}
