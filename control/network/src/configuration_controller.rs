//! The Configuration controller: for each peering it asks IPAM for the
//! peer's CIDRs (one `Network` per kind of range, owned by the
//! Configuration so deleting it releases them), publishes how this cluster
//! sees the peer in `status.remote`, and renders the gateway's
//! `NatConfiguration` from it (labelled with the peering's remote cluster
//! ID, for the gateway's NAT agent to select).

use std::{sync::Arc, time::Duration};

use futures::StreamExt as _;
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    api::{Patch, PatchParams},
    runtime::{controller::Action, watcher, Controller},
    Api, Client, Resource as _, ResourceExt as _,
};
use strait_api::{
    condition::{owned_conditions, ConditionStatus, ConditionUpdate},
    ipam::Network,
    names::label::REMOTE_CLUSTER_ID,
    networking::{ClusterCidrs, ClusterNetwork, Configuration, NatConfiguration},
};
use tracing::warn;

use crate::render::{gateway_nat, RenderError};

pub const FIELD_MANAGER: &str = "strait-network-configuration";
const READY: &str = "Ready";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0} has no namespace")]
    NotNamespaced(String),
    #[error("serializing a patch: {0}")]
    Serialize(#[from] serde_json::Error),
}

pub struct Context {
    pub client: Client,
}

/// Reconciles Configurations, and wakes one up when one of its Networks changes.
pub async fn run(client: Client) {
    let context = Arc::new(Context {
        client: client.clone(),
    });
    Controller::new(
        Api::<Configuration>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Network>::all(client), watcher::Config::default())
    .run(reconcile, error_policy, context)
    .for_each(|result| async move {
        if let Err(error) = result {
            warn!(%error, "Configuration reconcile failed");
        }
    })
    .await;
}

fn error_policy(_: Arc<Configuration>, _: &Error, _: Arc<Context>) -> Action {
    Action::requeue(Duration::from_secs(2))
}

/// The Network holding one kind of the peer's ranges.
fn network_name(config: &Configuration, kind: &str) -> String {
    format!("{}-{kind}", config.name_any())
}

async fn reconcile(config: Arc<Configuration>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = config
        .namespace()
        .ok_or_else(|| Error::NotNamespaced(config.name_any()))?;
    let networks: Api<Network> = Api::namespaced(ctx.client.clone(), &namespace);
    let owner = config
        .controller_owner_ref(&())
        .map(|r| vec![r])
        .unwrap_or_default();
    let apply = PatchParams::apply(FIELD_MANAGER).force();

    // Ask IPAM for the peer's ranges; allocations happen in Network statuses.
    let wanted = &config.spec.remote.cidr;
    let mut seen = ClusterCidrs::default();
    let mut pending = Vec::new();
    for (kind, cidrs) in [("pod", &wanted.pod), ("external", &wanted.external)] {
        if cidrs.is_empty() {
            continue;
        }
        let name = network_name(&config, kind);
        let desired = serde_json::json!({
            "apiVersion": "ipam.strait.dev/v1beta1",
            "kind": "Network",
            "metadata": { "name": name, "ownerReferences": owner },
            "spec": { "cidrs": cidrs },
        });
        let network = networks
            .patch(&name, &apply, &Patch::Apply(&desired))
            .await?;
        let allocated = network.status.map(|s| s.cidrs).unwrap_or_default();
        if allocated.len() == cidrs.len() {
            match kind {
                "pod" => seen.pod = allocated,
                _ => seen.external = allocated,
            }
        } else {
            pending.push(name);
        }
    }

    let mut status = config.status.clone().unwrap_or_default();
    let condition = if pending.is_empty() {
        status.remote = Some(ClusterNetwork { cidr: seen });
        let rendered = Configuration {
            metadata: config.metadata.clone(),
            spec: config.spec.clone(),
            status: Some(status.clone()),
        };
        match gateway_nat(&rendered) {
            Ok(nat) => {
                let nat_name = format!("{}-gateway", config.name_any());
                // The peering's label lets the gateway's NAT agent select
                // the NatConfigurations of its peer (`nat run --selector`).
                let labels: std::collections::BTreeMap<&str, &String> = config
                    .labels()
                    .get(REMOTE_CLUSTER_ID)
                    .map(|id| (REMOTE_CLUSTER_ID, id))
                    .into_iter()
                    .collect();
                let object = serde_json::json!({
                    "apiVersion": "networking.strait.dev/v1beta1",
                    "kind": "NatConfiguration",
                    "metadata": { "name": nat_name, "ownerReferences": owner, "labels": labels },
                    "spec": serde_json::to_value(&nat)?,
                });
                Api::<NatConfiguration>::namespaced(ctx.client.clone(), &namespace)
                    .patch(&nat_name, &apply, &Patch::Apply(&object))
                    .await?;
                ConditionUpdate {
                    type_: READY,
                    status: ConditionStatus::True,
                    reason: "Rendered",
                    message: format!("remote CIDRs allocated; NAT in NatConfiguration {nat_name}"),
                }
            }
            Err(e @ (RenderError::RemapMismatch { .. } | RenderError::Cidr(_))) => {
                ConditionUpdate {
                    type_: READY,
                    status: ConditionStatus::False,
                    reason: "InvalidRemap",
                    message: e.to_string(),
                }
            }
            Err(e) => ConditionUpdate {
                type_: READY,
                status: ConditionStatus::False,
                reason: "Pending",
                message: e.to_string(),
            },
        }
    } else {
        ConditionUpdate {
            type_: READY,
            status: ConditionStatus::False,
            reason: "WaitingForIPAM",
            message: format!("waiting for allocations of {}", pending.join(", ")),
        }
    };
    let ready = condition.status == ConditionStatus::True;
    // Only this controller's fields: `status.conditions` merges by type, so
    // the route controller's RoutesReady (and its `vni`) stay as they are.
    let (conditions, condition_changed) = owned_conditions(
        &status.conditions,
        [condition],
        config.metadata.generation,
        &Time(Timestamp::now()),
    );
    let action = if ready {
        Action::await_change()
    } else {
        Action::requeue(Duration::from_secs(5))
    };
    // An unchanged write would still wake the route controller (and through
    // it this one) again.
    let remote_changed =
        config.status.as_ref().and_then(|s| s.remote.as_ref()) != status.remote.as_ref();
    if !condition_changed && !remote_changed {
        return Ok(action);
    }
    let mut own_status = serde_json::json!({ "conditions": conditions });
    if let Some(remote) = &status.remote {
        own_status["remote"] = serde_json::to_value(remote)?;
    }
    let patch = serde_json::json!({
        "apiVersion": "networking.strait.dev/v1beta1",
        "kind": "Configuration",
        "status": own_status,
    });
    Api::<Configuration>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(&config.name_any(), &apply, &Patch::Apply(&patch))
        .await?;
    // Network changes wake us through `owns`; a slow allocation is retried too.
    Ok(action)
}
