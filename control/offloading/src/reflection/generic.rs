//! Reflectors of namespaced objects copied one way, consumer → provider:
//! ConfigMaps, Secrets, ServiceAccounts, PersistentVolumeClaims, Services,
//! and EndpointSlices (as ShadowEndpointSlices). Each type says what its
//! remote copy holds; the machinery (watch, queue, workers, apply, delete
//! of copies whose original is gone or opted out) is shared.

use std::{fmt::Debug, sync::Arc};

use k8s_openapi::{
    api::{
        core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount},
        discovery::v1::EndpointSlice,
    },
    NamespaceResourceScope,
};
use kube::{
    api::{DeleteParams, ListParams, Patch, PatchParams},
    runtime::{reflector::ObjectRef, watcher},
    Api, Resource, ResourceExt as _,
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Value};
use strait_api::{names, offloading::ShadowEndpointSlice};

use super::{requeue_on_change, skips_reflection, watch_into_queue, Reflection};
use crate::{status::ignore_not_found, workqueue::WorkQueue, Error};

/// Field manager of everything reflection writes on the provider.
pub const FIELD_MANAGER: &str = "strait-reflection";

/// A local kind and how its remote copy looks.
pub trait Reflect:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The kind the copy is on the provider (the same kind, or a shadow kind).
    type Remote: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug
        + Send
        + Sync
        + 'static;
    const NAME: &'static str;
    /// Whether the copy depends on the pod address translation (its
    /// objects are looked at again when the translation changes).
    const FOLLOWS_TRANSLATION: bool = false;

    /// The remote copy's content besides metadata (`spec`, `data`, ...);
    /// `None` for objects of this kind that are never reflected.
    fn remote_content(&self, reflection: &Reflection) -> Option<Value>;

    /// Remote objects of this kind another reflector writes (never deleted
    /// as copies of a missing local object).
    fn written_elsewhere(_remote: &Self::Remote) -> bool {
        false
    }
}

/// Fields that name the local cluster's objects or state and mean nothing remotely.
fn remote_metadata<K: Resource>(object: &K, reflection: &Reflection) -> Value {
    let mut labels = object.labels().clone();
    labels.extend(reflection.origin_labels());
    let mut annotations = object.annotations().clone();
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    json!({"name": object.name_any(), "labels": labels, "annotations": annotations})
}

impl Reflect for ConfigMap {
    type Remote = ConfigMap;
    const NAME: &'static str = "configmaps";
    fn remote_content(&self, _: &Reflection) -> Option<Value> {
        // Every namespace gets its own root CA bundle from its own cluster.
        if self.name_any() == "kube-root-ca.crt" {
            return None;
        }
        Some(json!({"data": self.data, "binaryData": self.binary_data}))
    }
}

impl Reflect for Secret {
    type Remote = Secret;
    const NAME: &'static str = "secrets";
    fn remote_content(&self, _: &Reflection) -> Option<Value> {
        // Tokens of local service accounts are useless (and sensitive) there.
        if self.type_.as_deref() == Some("kubernetes.io/service-account-token") {
            return None;
        }
        Some(json!({"type": self.type_, "data": self.data}))
    }
    fn written_elsewhere(remote: &Secret) -> bool {
        // Delivered service account tokens belong to the pod reflector.
        remote.type_.as_deref() == Some(super::tokens::SECRET_TYPE)
    }
}

impl Reflect for ServiceAccount {
    type Remote = ServiceAccount;
    const NAME: &'static str = "serviceaccounts";
    fn remote_content(&self, _: &Reflection) -> Option<Value> {
        // The provider makes its own `default`.
        (self.name_any() != "default").then(|| json!({}))
    }
}

impl Reflect for PersistentVolumeClaim {
    type Remote = PersistentVolumeClaim;
    const NAME: &'static str = "persistentvolumeclaims";
    fn remote_content(&self, _: &Reflection) -> Option<Value> {
        let spec = self.spec.as_ref()?;
        // The volume binding is the provider's own.
        Some(json!({"spec": {
            "accessModes": spec.access_modes,
            "resources": spec.resources,
            "storageClassName": spec.storage_class_name,
            "volumeMode": spec.volume_mode,
            "selector": spec.selector,
        }}))
    }
}

impl Reflect for Service {
    type Remote = Service;
    const NAME: &'static str = "services";
    fn remote_content(&self, _: &Reflection) -> Option<Value> {
        let spec = self.spec.as_ref()?;
        if spec.type_.as_deref() == Some("ExternalName") {
            return Some(
                json!({"spec": {"type": "ExternalName", "externalName": spec.external_name}}),
            );
        }
        // No selector: the endpoints come from the reflected EndpointSlices.
        // Node ports and cluster IPs are allocated by the provider.
        let ports: Vec<Value> = spec
            .ports
            .iter()
            .flatten()
            .map(|p| json!({"name": p.name, "port": p.port, "protocol": p.protocol, "targetPort": p.target_port, "appProtocol": p.app_protocol}))
            .collect();
        Some(json!({"spec": {
            "type": "ClusterIP",
            "ports": ports,
            "sessionAffinity": spec.session_affinity,
            "ipFamilies": spec.ip_families,
            "ipFamilyPolicy": spec.ip_family_policy,
        }}))
    }
}

impl Reflect for EndpointSlice {
    type Remote = ShadowEndpointSlice;
    const NAME: &'static str = "endpointslices";
    const FOLLOWS_TRANSLATION: bool = true;
    fn remote_content(&self, reflection: &Reflection) -> Option<Value> {
        // Slices of a Service only, and never the ones reflection made here.
        self.labels().get("kubernetes.io/service-name")?;
        if self
            .labels()
            .get(names::label::MANAGED_BY)
            .map(String::as_str)
            == Some(names::label::MANAGED_BY_VALUE)
        {
            return None;
        }
        let translation = reflection.translation.borrow().clone();
        let endpoints: Vec<Value> = self
            .endpoints
            .iter()
            .filter_map(|endpoint| {
                // Pods on this virtual node run on the provider: there they
                // are known by their own addresses. Without a usable remap
                // their local addresses cannot be turned back, so they are
                // left out rather than published wrong.
                let on_this_node =
                    endpoint.node_name.as_deref() == Some(reflection.node_name.as_str());
                let addresses: Vec<String> = if on_this_node {
                    let translation = translation.usable().ok()?;
                    endpoint
                        .addresses
                        .iter()
                        .map(|a| translation.to_remote(a))
                        .collect()
                } else {
                    endpoint.addresses.clone()
                };
                let reflected = k8s_openapi::api::discovery::v1::Endpoint {
                    addresses,
                    conditions: endpoint.conditions.clone(),
                    hostname: endpoint.hostname.clone(),
                    ..Default::default()
                };
                serde_json::to_value(reflected).ok()
            })
            .collect();
        Some(json!({"spec": {"template": {
            "addressType": self.address_type,
            "endpoints": endpoints,
            "ports": self.ports.clone().unwrap_or_default(),
        }}}))
    }
}

/// Runs the reflector of `K` with `workers` workers, forever.
pub async fn run<K: Reflect>(reflection: Arc<Reflection>, workers: usize) {
    let queue = WorkQueue::new(K::NAME);
    let (store, watch) = watch_into_queue(
        Api::<K>::all(reflection.local.clone()),
        watcher::Config::default(),
        queue.clone(),
        reflection.namespaces.clone(),
    );
    let orphans = queue_remote_orphans::<K>(reflection.clone(), queue.clone());
    let retranslate = {
        let (changes, store, queue) =
            (reflection.translation.clone(), store.clone(), queue.clone());
        async move {
            if K::FOLLOWS_TRANSLATION {
                requeue_on_change(changes, store, queue).await;
            }
        }
    };
    let handle = move |key: (String, String)| {
        let reflection = reflection.clone();
        let store = store.clone();
        async move {
            let local = store.get(&ObjectRef::new(&key.1).within(&key.0));
            reflect_one::<K>(&reflection, &key.0, &key.1, local.as_deref()).await
        }
    };
    tokio::join!(watch, orphans, retranslate, queue.run(workers, handle));
}

/// Brings the remote copy of one object in line with the local one.
async fn reflect_one<K: Reflect>(
    reflection: &Reflection,
    namespace: &str,
    name: &str,
    local: Option<&K>,
) -> Result<(), Error> {
    let Some(remote_namespace) = reflection.remote_namespace(namespace) else {
        return Ok(());
    };
    let api = Api::<K::Remote>::namespaced(reflection.remote.clone(), &remote_namespace);
    let wanted = local
        .filter(|object| object.meta().deletion_timestamp.is_none() && !skips_reflection(*object))
        .and_then(|object| Some((object, object.remote_content(reflection)?)));
    match wanted {
        Some((object, content)) => {
            let mut body = content;
            body["apiVersion"] = json!(K::Remote::api_version(&()));
            body["kind"] = json!(K::Remote::kind(&()));
            body["metadata"] = remote_metadata(object, reflection);
            api.patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
        }
        None => {
            if let Some(remote) = ignore_not_found(api.get(name).await)? {
                if reflection.is_reflected(&remote) && !K::written_elsewhere(&remote) {
                    ignore_not_found(api.delete(name, &DeleteParams::default()).await)?;
                }
            }
        }
    }
    Ok(())
}

/// Copies whose original went away while nobody watched: queued once per
/// newly offloaded namespace, so the worker deletes them.
async fn queue_remote_orphans<K: Reflect>(
    reflection: Arc<Reflection>,
    queue: Arc<WorkQueue<(String, String)>>,
) {
    let mut namespaces = reflection.namespaces.clone();
    let mut swept = std::collections::BTreeSet::new();
    let selector = format!(
        "{}={}",
        names::label::ORIGIN_CLUSTER_ID,
        reflection.local_cluster_id
    );
    loop {
        let current = namespaces.borrow_and_update().clone();
        for (local, remote) in current {
            if swept.contains(&remote) {
                continue;
            }
            let api = Api::<K::Remote>::namespaced(reflection.remote.clone(), &remote);
            match api.list(&ListParams::default().labels(&selector)).await {
                Ok(list) => {
                    for object in list {
                        queue.add((local.clone(), object.name_any()));
                    }
                    swept.insert(remote);
                }
                Err(error) => {
                    tracing::debug!(%error, namespace = %remote, kind = K::NAME, "listing remote copies failed; retried on the next change")
                }
            }
        }
        if namespaces.changed().await.is_err() {
            return;
        }
    }
}
