//! The pod reflector: each pod bound to the virtual node becomes a
//! ShadowPod in its namespace's remote namespace (same name, so a retry or
//! a restart never makes a second one); the ShadowPod's status comes back
//! to the local pod with its addresses translated; deleting the local pod
//! deletes the ShadowPod. A pod that does not fit the node's capacity is
//! refused as a kubelet refuses it (Failed, `OutOf<resource>`). Events of
//! the remote pods are copied back to the local pods.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{
    Event as CoreEvent, Pod, PodCondition, PodIP, PodSpec, PodStatus,
};
use kube::{
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{reflector, reflector::ObjectRef, watcher, WatchStreamExt as _},
    Api, ResourceExt as _,
};
use serde_json::json;
use strait_api::{
    condition::find_condition,
    names,
    offloading::{ShadowPod, VirtualNode},
    ConditionStatus,
};

use super::{
    generic::FIELD_MANAGER,
    tokens::{self, Deliveries},
    watch_into_queue, Reflection,
};
use crate::{
    placement::virtual_node_toleration,
    quantity::{pod_requests, Resources},
    status::ignore_not_found,
    workqueue::WorkQueue,
    Error,
};

type Key = (String, String);

/// Pod condition set False while the pod's addresses are withheld because
/// the provider's remap is not known.
pub const ADDRESSES_TRANSLATED: &str = "offloading.strait.dev/PodIPTranslated";

/// Requests of the pods admitted onto the node, by (namespace, name): the
/// node's allocatable is its capacity minus their sum.
#[derive(Default)]
pub struct Admitted(Mutex<HashMap<Key, Resources>>);

impl Admitted {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Resources>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn used(&self) -> Resources {
        let mut used = Resources::default();
        for requests in self.lock().values() {
            used.add(requests);
        }
        used
    }

    fn remember(&self, key: Key, requests: Resources) {
        self.lock().insert(key, requests);
    }

    fn forget(&self, key: &Key) {
        self.lock().remove(key);
    }

    /// Admits `key` if it fits `capacity` next to the others; else the
    /// resources it lacks.
    fn try_admit(
        &self,
        key: Key,
        requests: Resources,
        capacity: &Resources,
    ) -> Result<(), Vec<(String, i128, i128)>> {
        let mut admitted = self.lock();
        if admitted.contains_key(&key) {
            return Ok(());
        }
        let mut wanted = requests.clone();
        for (other, used) in admitted.iter() {
            if *other != key {
                wanted.add(used);
            }
        }
        let shortfall = capacity.shortfall(&wanted);
        if shortfall.is_empty() {
            admitted.insert(key, requests);
            Ok(())
        } else {
            Err(shortfall)
        }
    }
}

/// The capacity a VirtualNode announces: its own resources, else its
/// slice's grant (filled by the node loop), else unlimited.
pub type Capacity = tokio::sync::watch::Receiver<Resources>;

/// ShadowPod stores of the remote namespaces, one watch each (the
/// consumer's identity may only read the namespaces offloaded to it).
type RemoteStores =
    Arc<Mutex<HashMap<String, (reflector::Store<ShadowPod>, tokio::task::JoinHandle<()>)>>>;

pub async fn run(
    reflection: Arc<Reflection>,
    workers: usize,
    admitted: Arc<Admitted>,
    capacity: Capacity,
) {
    let queue = WorkQueue::new("pods");
    let config =
        watcher::Config::default().fields(&format!("spec.nodeName={}", reflection.node_name));
    let (local_store, watch) = watch_into_queue(
        Api::<Pod>::all(reflection.local.clone()),
        config,
        queue.clone(),
        reflection.namespaces.clone(),
    );
    let retranslate = super::requeue_on_change(
        reflection.translation.clone(),
        local_store.clone(),
        queue.clone(),
    );
    let remote_stores: RemoteStores = Arc::default();
    let deliveries = Arc::new(Deliveries::default());
    let renewals = queue_token_renewals(deliveries.clone(), queue.clone());
    let remote_watches = follow_remote_namespaces(
        reflection.clone(),
        queue.clone(),
        remote_stores.clone(),
        local_store.clone(),
    );
    let handle = {
        let reflection = reflection.clone();
        move |key: Key| {
            let reflection = reflection.clone();
            let local_store = local_store.clone();
            let remote_stores = remote_stores.clone();
            let admitted = admitted.clone();
            let deliveries = deliveries.clone();
            let capacity = capacity.borrow().clone();
            async move {
                let local = local_store.get(&ObjectRef::new(&key.1).within(&key.0));
                let remote_ns = reflection.remote_namespace(&key.0);
                let store = remote_ns.as_ref().and_then(|ns| {
                    remote_stores
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(ns)
                        .map(|(s, _)| s.clone())
                });
                let shadow = store.as_ref().and_then(|s| {
                    s.get(&ObjectRef::new(&key.1).within(remote_ns.as_deref().unwrap_or_default()))
                });
                reflect_pod(
                    &reflection,
                    &admitted,
                    &deliveries,
                    &capacity,
                    key,
                    local.as_deref(),
                    remote_ns,
                    store.is_some(),
                    shadow.as_deref(),
                )
                .await
            }
        }
    };
    tokio::join!(
        watch,
        remote_watches,
        retranslate,
        renewals,
        queue.run(workers, handle)
    );
}

/// Queues the pods whose service account tokens are due for renewal.
async fn queue_token_renewals(deliveries: Arc<Deliveries>, queue: Arc<WorkQueue<Key>>) {
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        for key in deliveries.renewals_due() {
            queue.add(key);
        }
    }
}

/// Starts and stops the per-namespace ShadowPod and Event watches as
/// namespaces are offloaded and withdrawn.
async fn follow_remote_namespaces(
    reflection: Arc<Reflection>,
    queue: Arc<WorkQueue<Key>>,
    stores: RemoteStores,
    local_pods: reflector::Store<Pod>,
) {
    let mut namespaces = reflection.namespaces.clone();
    loop {
        let current = namespaces.borrow_and_update().clone();
        start_remote_watches(&reflection, &queue, &stores, &local_pods, &current);
        if namespaces.changed().await.is_err() {
            return;
        }
    }
}

fn start_remote_watches(
    reflection: &Arc<Reflection>,
    queue: &Arc<WorkQueue<Key>>,
    stores: &RemoteStores,
    local_pods: &reflector::Store<Pod>,
    current: &super::NamespaceMapping,
) {
    {
        let mut stores_now = stores.lock().unwrap_or_else(|p| p.into_inner());
        stores_now.retain(|remote, (_, task)| {
            let keep = current.values().any(|r| r == remote);
            if !keep {
                task.abort();
            }
            keep
        });
        for (local, remote) in current {
            if stores_now.contains_key(remote) {
                continue;
            }
            let (store, writer) = reflector::store::<ShadowPod>();
            let selector = format!("{}={}", names::label::VIRTUAL_NODE, reflection.node_name);
            let api = Api::<ShadowPod>::namespaced(reflection.remote.clone(), remote);
            let shadow_queue = queue.clone();
            let local_namespace = local.clone();
            let events = copy_events(
                reflection.clone(),
                local.clone(),
                remote.clone(),
                local_pods.clone(),
            );
            let task = tokio::spawn(async move {
                let shadows = watcher(api, watcher::Config::default().labels(&selector))
                    .default_backoff()
                    .reflect(writer)
                    .touched_objects()
                    .for_each(|shadow| {
                        if let Ok(shadow) = shadow {
                            shadow_queue.add((local_namespace.clone(), shadow.name_any()));
                        }
                        futures::future::ready(())
                    });
                tokio::join!(shadows, events);
            });
            stores_now.insert(remote.clone(), (store, task));
            // Pods waiting for this namespace are looked at again.
            for pod in local_pods
                .state()
                .iter()
                .filter(|p| p.namespace().as_deref() == Some(local.as_str()))
            {
                queue.add((local.clone(), pod.name_any()));
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn reflect_pod(
    reflection: &Reflection,
    admitted: &Admitted,
    deliveries: &Deliveries,
    capacity: &Resources,
    key: Key,
    local: Option<&Pod>,
    remote_namespace: Option<String>,
    remote_synced: bool,
    shadow: Option<&ShadowPod>,
) -> Result<(), Error> {
    let Some(remote_namespace) = remote_namespace else {
        // Not offloaded (yet): the pod waits, and is queued again when its
        // namespace becomes ready on the provider.
        return Ok(());
    };
    if !remote_synced {
        return Err(Error::Waiting(format!(
            "the watch of {remote_namespace} on the provider is starting"
        )));
    }
    let shadows = Api::<ShadowPod>::namespaced(reflection.remote.clone(), &remote_namespace);
    let local_pods = Api::<Pod>::namespaced(reflection.local.clone(), &key.0);
    let Some(pod) = local.filter(|p| p.metadata.deletion_timestamp.is_none()) else {
        admitted.forget(&key);
        // Tokens delivered before a restart of this kubelet go with the
        // ShadowPod that owns their Secret.
        if deliveries.has(&key) {
            tokens::withdraw(reflection, deliveries, &key, &remote_namespace).await?;
        }
        if shadow.is_some() {
            ignore_not_found(shadows.delete(&key.1, &DeleteParams::default()).await)?;
        } else if local.is_some() {
            // The remote pod is gone: finish the local deletion, as a kubelet does.
            ignore_not_found(
                local_pods
                    .delete(&key.1, &DeleteParams::default().grace_period(0))
                    .await,
            )?;
        }
        return Ok(());
    };
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let finished = matches!(phase, Some("Succeeded") | Some("Failed"));
    if finished && deliveries.has(&key) {
        tokens::withdraw(reflection, deliveries, &key, &remote_namespace).await?;
    }
    let token_needs = tokens::redirect_token_volumes(
        &mut pod.spec.clone().unwrap_or_default(),
        &tokens::secret_name(&key.1),
    );
    let Some(shadow) = shadow else {
        if finished {
            // Completed pods stay completed; refused ones stay refused.
            admitted.forget(&key);
            return Ok(());
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let requests = pod_requests(&spec)?;
        if let Err(shortfall) = admitted.try_admit(key.clone(), requests, capacity) {
            let resource = shortfall
                .first()
                .map(|(name, _, _)| name.clone())
                .unwrap_or_default();
            let reason = format!("OutOf{resource}");
            let message = format!(
                "Node didn't have enough resource: {}",
                crate::quantity::describe_shortfall(&shortfall)
            );
            let status =
                json!({"status": {"phase": "Failed", "reason": reason, "message": message}});
            local_pods
                .patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&status))
                .await?;
            return Ok(());
        }
        let virtual_node = reflection.virtual_node.borrow().clone();
        let body = shadow_pod(reflection, pod, spec, virtual_node.as_ref());
        let created = shadows
            .patch(
                &key.1,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
        if !token_needs.is_empty() {
            tokens::deliver(
                reflection,
                deliveries,
                pod,
                &token_needs,
                &remote_namespace,
                &created,
            )
            .await?;
        }
        return Ok(());
    };
    let mut token_delivery = Ok(());
    if shadow.metadata.deletion_timestamp.is_none() && !finished {
        // Known to run there (also after a restart of this kubelet).
        admitted.remember(
            key.clone(),
            pod_requests(pod.spec.as_ref().unwrap_or(&PodSpec::default()))?,
        );
        let uid = pod.uid().unwrap_or_default();
        if !token_needs.is_empty() && deliveries.due(&key, &uid) {
            // A token that cannot be delivered does not hold the status back.
            token_delivery = tokens::deliver(
                reflection,
                deliveries,
                pod,
                &token_needs,
                &remote_namespace,
                shadow,
            )
            .await;
        }
    }
    let wanted = local_status(reflection, shadow, pod);
    let current = pod.status.clone().unwrap_or_default();
    if let Some(status) = wanted.filter(|w| *w != current) {
        if matches!(status.phase.as_deref(), Some("Succeeded") | Some("Failed")) {
            admitted.forget(&key);
        }
        let mut body = json!({"status": status});
        if status.pod_ip.is_none() {
            // A merge patch keeps absent fields: withdrawn addresses are nulled.
            body["status"]["podIP"] = serde_json::Value::Null;
            body["status"]["podIPs"] = serde_json::Value::Null;
        }
        local_pods
            .patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&body))
            .await?;
    }
    token_delivery
}

/// The ShadowPod of a local pod: the same spec without what ties it to
/// this cluster (node; the service account token volumes read the
/// delivered consumer token), with the VirtualNode's offloading patch.
fn shadow_pod(
    reflection: &Reflection,
    pod: &Pod,
    mut spec: PodSpec,
    virtual_node: Option<&VirtualNode>,
) -> serde_json::Value {
    spec.node_name = None;
    // Never the provider's own token: that identity is not the pod's.
    spec.automount_service_account_token = Some(false);
    // Its consumer token comes from a Secret instead (see `tokens`), and
    // the consumer's API is where that token is good.
    tokens::redirect_to_consumer(
        &mut spec,
        &tokens::secret_name(&pod.name_any()),
        reflection.consumer_api_address,
    );
    if let Some(tolerations) = spec.tolerations.as_mut() {
        let ours = virtual_node_toleration();
        tolerations.retain(|t| *t != ours);
    }
    if let Some(patch) = virtual_node.and_then(|vn| vn.spec.offloading_patch.as_ref()) {
        let selector = spec.node_selector.get_or_insert_with(BTreeMap::new);
        selector.extend(patch.node_selector.clone());
        spec.tolerations
            .get_or_insert_with(Vec::new)
            .extend(patch.tolerations.clone());
    }
    let mut labels = pod.labels().clone();
    labels.extend(reflection.origin_labels());
    labels.insert(
        names::label::VIRTUAL_NODE.to_owned(),
        reflection.node_name.clone(),
    );
    json!({
        "apiVersion": "offloading.strait.dev/v1beta1",
        "kind": "ShadowPod",
        "metadata": {"name": pod.name_any(), "labels": labels, "annotations": pod.annotations()},
        "spec": {"pod": spec},
    })
}

/// The local pod's status from its ShadowPod's: Pending with the reason
/// while the provider refuses it, else the real pod's status with the
/// provider's addresses translated.
fn local_status(reflection: &Reflection, shadow: &ShadowPod, pod: &Pod) -> Option<PodStatus> {
    let status = shadow.status.as_ref()?;
    if let Some(refused) = find_condition(&status.conditions, "Admitted")
        .filter(|c| c.status == ConditionStatus::False)
    {
        let mut waiting = pod.status.clone().unwrap_or_default();
        waiting.phase = Some("Pending".into());
        waiting.reason = Some(refused.reason.clone());
        waiting.message = Some(refused.message.clone());
        return Some(waiting);
    }
    let mut remote = status.pod_status.clone()?;
    match reflection.translation.borrow().usable() {
        Ok(translation) => {
            let translate = |ip: &str| translation.to_local(ip);
            remote.pod_ip = remote.pod_ip.as_deref().map(translate);
            remote.pod_ips = remote.pod_ips.map(|ips| {
                ips.into_iter()
                    .map(|p| PodIP {
                        ip: translate(&p.ip),
                    })
                    .collect()
            });
        }
        Err(reason) => {
            // Withheld rather than published untranslated: the provider's
            // own addresses may mean another pod (or nothing) here.
            remote.pod_ip = None;
            remote.pod_ips = None;
            remote
                .conditions
                .get_or_insert_with(Vec::new)
                .push(PodCondition {
                    type_: ADDRESSES_TRANSLATED.into(),
                    status: "False".into(),
                    reason: Some("RemapPending".into()),
                    message: Some(reason),
                    ..PodCondition::default()
                });
        }
    }
    // The pod runs "on" the virtual node.
    remote.host_ip = pod
        .status
        .as_ref()
        .and_then(|s| s.host_ip.clone())
        .or(remote.host_ip);
    remote.host_ips = None;
    remote.nominated_node_name = None;
    Some(remote)
}

/// Copies events about the provider's pods of `remote` to the local pods.
async fn copy_events(
    reflection: Arc<Reflection>,
    local: String,
    remote: String,
    local_pods: reflector::Store<Pod>,
) {
    let api = Api::<CoreEvent>::namespaced(reflection.remote.clone(), &remote);
    let local_events = Api::<CoreEvent>::namespaced(reflection.local.clone(), &local);
    let mut events = watcher(
        api,
        watcher::Config::default().fields("involvedObject.kind=Pod"),
    )
    .default_backoff()
    .applied_objects()
    .boxed();
    while let Some(event) = events.next().await {
        let Ok(event) = event else { continue };
        let pod_name = event.involved_object.name.clone().unwrap_or_default();
        let Some(pod) = local_pods.get(&ObjectRef::new(&pod_name).within(&local)) else {
            continue;
        };
        let mut copy = CoreEvent {
            involved_object: k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod_name),
                namespace: Some(local.clone()),
                uid: pod.uid(),
                field_path: event.involved_object.field_path.clone(),
                ..Default::default()
            },
            reason: event.reason.clone(),
            message: event.message.clone(),
            type_: event.type_.clone(),
            count: event.count,
            first_timestamp: event.first_timestamp.clone(),
            last_timestamp: event.last_timestamp.clone(),
            event_time: event.event_time.clone(),
            source: event.source.clone(),
            reporting_component: Some("strait-virtual-kubelet".into()),
            reporting_instance: Some(reflection.node_name.clone()),
            ..CoreEvent::default()
        };
        copy.metadata.name = Some(format!(
            "{}.{}",
            event.name_any(),
            reflection.provider_cluster_id
        ));
        copy.metadata.labels = Some(reflection.origin_labels());
        match local_events.create(&PostParams::default(), &copy).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let body = json!({"count": event.count, "lastTimestamp": event.last_timestamp, "message": event.message});
                if let Err(error) = local_events
                    .patch(
                        &copy.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&body),
                    )
                    .await
                {
                    tracing::debug!(%error, "updating a copied event failed");
                }
            }
            Err(error) => tracing::debug!(%error, "copying an event failed"),
        }
    }
}
