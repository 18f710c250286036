//! Reflection between a consumer and one provider, run by the virtual
//! kubelet. Each resource type has its own reflector: a shared watch of the
//! local objects (one store, bounded by what exists) feeding a
//! deduplicating queue drained by a fixed pool of workers, so a burst of
//! objects never becomes a burst of tasks. A reflector only acts in
//! namespaces offloaded to its provider; an object annotated
//! `offloading.strait.dev/skip-reflection: "true"` is kept out (and its
//! remote copy removed).

pub mod addresses;
pub mod generic;
pub mod pods;
pub mod tokens;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::StreamExt as _;
use kube::{
    runtime::{reflector, watcher, WatchStreamExt as _},
    Api, Client, Resource, ResourceExt as _,
};
use serde::de::DeserializeOwned;
use strait_api::{
    condition::is_condition_true,
    names,
    offloading::{NamespaceOffloading, VirtualNode},
};
use tokio::sync::watch;

use crate::workqueue::WorkQueue;

/// Local namespace → remote namespace, for namespaces offloaded to this
/// provider and Ready there.
pub type NamespaceMapping = BTreeMap<String, String>;

/// What every reflector of one virtual kubelet shares.
pub struct Reflection {
    pub local: Client,
    pub remote: Client,
    pub node_name: String,
    pub local_cluster_id: String,
    pub provider_cluster_id: String,
    /// How the provider's pod addresses are seen here (see [`addresses`]).
    pub translation: watch::Receiver<addresses::Translation>,
    pub namespaces: watch::Receiver<NamespaceMapping>,
    /// The VirtualNode as last seen (capacity, offloading patch).
    pub virtual_node: watch::Receiver<Option<VirtualNode>>,
    /// Where provider pods reach the consumer's API server: pods given a
    /// consumer token are pointed there (see [`tokens`]); without it they
    /// keep the provider's.
    pub consumer_api_address: Option<std::net::SocketAddr>,
}

impl Reflection {
    pub fn remote_namespace(&self, local_namespace: &str) -> Option<String> {
        self.namespaces.borrow().get(local_namespace).cloned()
    }

    pub fn local_namespace(&self, remote_namespace: &str) -> Option<String> {
        self.namespaces
            .borrow()
            .iter()
            .find(|(_, remote)| *remote == remote_namespace)
            .map(|(local, _)| local.clone())
    }

    /// Labels every reflected object carries on the provider.
    pub fn origin_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                names::label::MANAGED_BY.to_owned(),
                names::label::MANAGED_BY_VALUE.to_owned(),
            ),
            (
                names::label::ORIGIN_CLUSTER_ID.to_owned(),
                self.local_cluster_id.clone(),
            ),
        ])
    }

    /// Whether a remote object was made by this consumer's reflection.
    pub fn is_reflected<K: Resource>(&self, remote: &K) -> bool {
        let labels = remote.labels();
        labels.get(names::label::MANAGED_BY).map(String::as_str)
            == Some(names::label::MANAGED_BY_VALUE)
            && labels.get(names::label::ORIGIN_CLUSTER_ID) == Some(&self.local_cluster_id)
    }
}

/// Whether the user opted `object` out of reflection.
pub fn skips_reflection<K: Resource>(object: &K) -> bool {
    object
        .annotations()
        .get(names::annotation::SKIP_REFLECTION)
        .is_some_and(|v| v == "true")
}

/// Follows the NamespaceOffloadings of the consumer and publishes which
/// namespaces are offloaded to `provider_cluster_id` and Ready there.
pub async fn follow_namespace_offloadings(
    local: Client,
    provider_cluster_id: String,
    mapping: watch::Sender<NamespaceMapping>,
) {
    let (store, writer) = reflector::store::<NamespaceOffloading>();
    let mut changes = watcher(
        Api::<NamespaceOffloading>::all(local),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .boxed();
    while let Some(change) = changes.next().await {
        if let Err(error) = change {
            tracing::debug!(%error, "NamespaceOffloading watch interrupted");
            continue;
        }
        let mut offloaded = NamespaceMapping::new();
        for offloading in store.state() {
            let Some(status) = offloading.status.as_ref() else {
                continue;
            };
            let ready_here = status.remote_namespaces.iter().any(|r| {
                r.cluster_id == provider_cluster_id && is_condition_true(&r.conditions, "Ready")
            });
            if let (true, Some(remote), Some(local)) = (
                ready_here,
                status.remote_namespace_name.clone(),
                offloading.namespace(),
            ) {
                offloaded.insert(local, remote);
            }
        }
        mapping.send_if_modified(|current| {
            let changed = *current != offloaded;
            *current = offloaded;
            changed
        });
    }
}

/// Watches `api` into a store, queueing the key of every object that
/// changes (and of every object in a namespace that becomes offloaded).
pub fn watch_into_queue<K>(
    api: Api<K>,
    config: watcher::Config,
    queue: Arc<WorkQueue<(String, String)>>,
    mut namespaces: watch::Receiver<NamespaceMapping>,
) -> (reflector::Store<K>, impl std::future::Future<Output = ()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let reader = store.clone();
    let task = async move {
        let watch_queue = queue.clone();
        let objects = watcher(api, config)
            .default_backoff()
            .reflect(writer)
            .touched_objects()
            .for_each(move |object| {
                if let Ok(object) = object {
                    watch_queue.add((object.namespace().unwrap_or_default(), object.name_any()));
                }
                futures::future::ready(())
            });
        let resync = async move {
            let mut known = NamespaceMapping::new();
            loop {
                let current = namespaces.borrow_and_update().clone();
                for (local, remote) in &current {
                    if known.get(local) != Some(remote) {
                        for object in reader
                            .state()
                            .iter()
                            .filter(|o| o.namespace().as_deref() == Some(local))
                        {
                            queue.add((local.clone(), object.name_any()));
                        }
                    }
                }
                known = current;
                if namespaces.changed().await.is_err() {
                    break;
                }
            }
        };
        tokio::join!(objects, resync);
    };
    (store, task)
}

/// Queues every object of `store` each time `changes` changes: for the
/// reflectors whose output depends on it (the address translation).
pub async fn requeue_on_change<K, T>(
    mut changes: watch::Receiver<T>,
    store: reflector::Store<K>,
    queue: Arc<WorkQueue<(String, String)>>,
) where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    while changes.changed().await.is_ok() {
        for object in store.state() {
            queue.add((object.namespace().unwrap_or_default(), object.name_any()));
        }
    }
}

/// How long reflectors wait for the first list before serving.
pub const STORE_READY_TIMEOUT: Duration = Duration::from_secs(30);
