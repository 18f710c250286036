//! NamespaceMap controller (provider side): creates the namespaces a
//! consumer asks for in its tenant namespace, grants the consumer's subjects
//! (those bound in its tenant namespace) the offloading rights there, and
//! deletes them when the consumer withdraws them or the map goes away.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::StreamExt as _;
use k8s_openapi::api::{
    core::v1::Namespace,
    rbac::v1::{ClusterRole, RoleBinding, Subject},
};
use kube::{
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{
        controller::Action,
        finalizer::{finalizer, Event},
        watcher, Controller,
    },
    Api, Client, ResourceExt as _,
};
use serde_json::json;
use strait_api::{
    names,
    offloading::{NamespaceMap, NamespaceMapStatus, RemoteNamespacePhase, RemoteNamespaceState},
};
use tracing::warn;

use crate::{status::ignore_not_found, Error};

pub const FIELD_MANAGER: &str = "strait-offloading-namespacemap";
/// What a consumer may do in the namespaces offloaded to this cluster.
pub const OFFLOADED_NAMESPACE_ROLE: &str = "strait-offloaded-namespace";

pub struct Context {
    pub client: Client,
}

pub async fn run(client: Client) {
    if let Err(error) = ensure_offloaded_namespace_role(&client).await {
        warn!(%error, "could not write the {OFFLOADED_NAMESPACE_ROLE} ClusterRole; consumers will be refused in their namespaces");
    }
    let context = Arc::new(Context {
        client: client.clone(),
    });
    Controller::new(Api::<NamespaceMap>::all(client), watcher::Config::default())
        .run(
            reconcile,
            |_, _: &Error, _| Action::requeue(Duration::from_secs(2)),
            context,
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "NamespaceMap reconcile failed");
            }
        })
        .await;
}

/// Rights of a consumer in a namespace offloaded to this cluster: write the
/// objects its virtual kubelets reflect, read its pods and their logs and events,
/// open exec, attach and port-forward streams into its pods.
pub async fn ensure_offloaded_namespace_role(client: &Client) -> Result<(), Error> {
    let all = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    let read = ["get", "list", "watch"];
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": OFFLOADED_NAMESPACE_ROLE, "labels": {names::label::MANAGED_BY: names::label::MANAGED_BY_VALUE}},
        "rules": [
            {"apiGroups": [names::group::OFFLOADING], "resources": ["shadowpods", "shadowendpointslices"], "verbs": all},
            {"apiGroups": [""], "resources": ["configmaps", "secrets", "services", "serviceaccounts", "persistentvolumeclaims"], "verbs": all},
            {"apiGroups": [""], "resources": ["pods", "events"], "verbs": read},
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
            // kubectl exec / attach / port-forward through the virtual kubelet.
            {"apiGroups": [""], "resources": ["pods/exec", "pods/attach", "pods/portforward"], "verbs": ["get", "create"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": read},
        ],
    });
    Api::<ClusterRole>::all(client.clone())
        .patch(
            OFFLOADED_NAMESPACE_ROLE,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&role),
        )
        .await?;
    Ok(())
}

async fn reconcile(map: Arc<NamespaceMap>, context: Arc<Context>) -> Result<Action, Error> {
    let namespace = map.namespace().ok_or(Error::Unnamed("NamespaceMap"))?;
    let api = Api::<NamespaceMap>::namespaced(context.client.clone(), &namespace);
    finalizer(&api, names::finalizer::NAMESPACE_MAP, map, |event| async {
        match event {
            Event::Apply(map) => apply(&map, &context, &api, &namespace).await,
            Event::Cleanup(map) => cleanup(&map, &context).await,
        }
    })
    .await
    .map_err(Error::finalizer)
}

fn failed(remote_namespace: &str, message: String) -> RemoteNamespaceState {
    RemoteNamespaceState {
        remote_namespace: remote_namespace.to_owned(),
        phase: RemoteNamespacePhase::Failed,
        message,
    }
}

async fn apply(
    map: &NamespaceMap,
    context: &Context,
    api: &Api<NamespaceMap>,
    namespace: &str,
) -> Result<Action, Error> {
    let consumer = &map.spec.consumer_cluster_id;
    let expected = names::tenant_namespace(consumer);
    let previous = map.status.clone().unwrap_or_default().current_mapping;
    let mut current = BTreeMap::new();
    if namespace != expected {
        for (local, remote) in &map.spec.desired_mapping {
            current.insert(local.clone(), failed(remote, format!("a NamespaceMap of consumer {consumer} must live in its tenant namespace {expected}, not {namespace}")));
        }
    } else {
        let subjects = tenant_subjects(&context.client, namespace).await?;
        for (local, remote) in &map.spec.desired_mapping {
            let state =
                ensure_namespace(&context.client, consumer, local, remote, &subjects).await?;
            if let Some(state) = state {
                current.insert(local.clone(), state);
            }
        }
    }
    // Withdrawn entries: delete their namespace, and keep reporting them
    // until it is gone so the consumer knows when cleanup is over.
    for (local, state) in previous {
        if current.contains_key(&local) || map.spec.desired_mapping.contains_key(&local) {
            continue;
        }
        if state.phase == RemoteNamespacePhase::Ready
            && delete_owned_namespace(&context.client, consumer, &state.remote_namespace).await?
        {
            current.insert(local, state);
        }
    }
    let status = NamespaceMapStatus {
        current_mapping: current,
    };
    let waiting = status.current_mapping.len() != map.spec.desired_mapping.len();
    if map.status.as_ref() != Some(&status) {
        // A merge patch with explicit nulls: the entries withdrawn must go,
        // not just the fields inside them.
        let mut mapping = serde_json::Map::new();
        for local in map.status.iter().flat_map(|s| s.current_mapping.keys()) {
            mapping.insert(local.clone(), serde_json::Value::Null);
        }
        for (local, state) in &status.current_mapping {
            mapping.insert(local.clone(), serde_json::to_value(state)?);
        }
        let patch = json!({"status": {"currentMapping": mapping}});
        api.patch_status(
            &map.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    Ok(if waiting {
        Action::requeue(Duration::from_millis(500))
    } else {
        Action::requeue(Duration::from_secs(60))
    })
}

/// Who the consumer is here: the subjects of the RoleBindings of its tenant namespace.
async fn tenant_subjects(client: &Client, tenant_namespace: &str) -> Result<Vec<Subject>, Error> {
    let bindings = Api::<RoleBinding>::namespaced(client.clone(), tenant_namespace)
        .list(&Default::default())
        .await?;
    let mut subjects: Vec<Subject> = Vec::new();
    for subject in bindings
        .items
        .into_iter()
        .flat_map(|b| b.subjects.unwrap_or_default())
    {
        if !subjects.contains(&subject) {
            subjects.push(subject);
        }
    }
    Ok(subjects)
}

/// Creates `remote` for `consumer` (or finds it already theirs) and binds
/// the consumer's subjects; `None` while it is still being deleted.
async fn ensure_namespace(
    client: &Client,
    consumer: &str,
    local: &str,
    remote: &str,
    subjects: &[Subject],
) -> Result<Option<RemoteNamespaceState>, Error> {
    if remote.starts_with("kube-") || remote.starts_with("strait-") || remote == "default" {
        return Ok(Some(failed(
            remote,
            format!("namespace {remote} is reserved on the provider: choose another name"),
        )));
    }
    let namespaces = Api::<Namespace>::all(client.clone());
    let existing = namespaces.get_opt(remote).await?;
    match existing {
        Some(ns)
            if ns
                .labels()
                .get(names::label::REMOTE_CLUSTER_ID)
                .map(String::as_str)
                != Some(consumer) =>
        {
            return Ok(Some(failed(remote, format!("namespace {remote} already exists here and does not belong to {consumer}: choose another name (SelectedName) or the DefaultName strategy"))));
        }
        Some(ns) if ns.metadata.deletion_timestamp.is_some() => return Ok(None),
        Some(_) => {}
        None => {
            let ns: Namespace = serde_json::from_value(json!({
                "metadata": {
                    "name": remote,
                    "labels": {
                        names::label::REMOTE_CLUSTER_ID: consumer,
                        names::label::MANAGED_BY: names::label::MANAGED_BY_VALUE,
                    },
                    "annotations": {names::label::ORIGIN_NAMESPACE: local},
                },
            }))?;
            match namespaces.create(&PostParams::default(), &ns).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": format!("strait-tenant-{consumer}"), "namespace": remote},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": OFFLOADED_NAMESPACE_ROLE},
        "subjects": subjects,
    });
    Api::<RoleBinding>::namespaced(client.clone(), remote)
        .patch(
            &format!("strait-tenant-{consumer}"),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&binding),
        )
        .await?;
    Ok(Some(RemoteNamespaceState {
        remote_namespace: remote.to_owned(),
        phase: RemoteNamespacePhase::Ready,
        message: String::new(),
    }))
}

/// Deletes `remote` if `consumer` owns it; whether it still exists.
async fn delete_owned_namespace(
    client: &Client,
    consumer: &str,
    remote: &str,
) -> Result<bool, Error> {
    let namespaces = Api::<Namespace>::all(client.clone());
    let Some(ns) = namespaces.get_opt(remote).await? else {
        return Ok(false);
    };
    if ns
        .labels()
        .get(names::label::REMOTE_CLUSTER_ID)
        .map(String::as_str)
        != Some(consumer)
    {
        return Ok(false);
    }
    if ns.metadata.deletion_timestamp.is_none() {
        ignore_not_found(namespaces.delete(remote, &DeleteParams::default()).await)?;
    }
    Ok(namespaces.get_opt(remote).await?.is_some())
}

async fn cleanup(map: &NamespaceMap, context: &Context) -> Result<Action, Error> {
    let consumer = &map.spec.consumer_cluster_id;
    let mut remaining = Vec::new();
    let status = map.status.clone().unwrap_or_default();
    let remotes = status
        .current_mapping
        .values()
        .map(|s| s.remote_namespace.clone())
        .chain(map.spec.desired_mapping.values().cloned());
    for remote in remotes {
        if delete_owned_namespace(&context.client, consumer, &remote).await? {
            remaining.push(remote);
        }
    }
    if remaining.is_empty() {
        Ok(Action::await_change())
    } else {
        Err(Error::Waiting(format!(
            "namespaces {} are being deleted",
            remaining.join(", ")
        )))
    }
}
