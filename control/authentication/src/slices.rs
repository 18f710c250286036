//! ResourceSlices, on both sides. On the consumer (spec.consumerClusterID is
//! this cluster) a slice is mirrored to the provider through the
//! control-plane Identity and the provider's answer is copied back; a
//! finalizer withdraws it there. On the provider (spec.providerClusterID is
//! this cluster) the policy answers it: granted amounts and an `Accepted`
//! condition (plus `Resources` with reason Accepted or Denied).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::{watcher, Controller};
use kube::{Api, ResourceExt as _};
use serde_json::json;
use strait_api::authentication::{ResourceSlice, Tenant, TenantCondition};
use strait_api::condition::{find_condition, is_condition_true, ConditionStatus};
use strait_api::names::{finalizer::RESOURCE_SLICE, label, tenant_namespace};
use strait_api::{Condition, ConditionUpdate};

use crate::consumer::{identity_client, identity_ready};
use crate::policy::Amounts;
use crate::quantity::{format_milli, parse_milli};
use crate::tenant::{ignore_missing, READY};
use crate::{merged_conditions, Context, Error, FIELD_MANAGER};

/// The condition `strait peer` waits for on a slice.
pub const ACCEPTED: &str = "Accepted";
/// The condition the printer column shows (reason Accepted or Denied).
pub const RESOURCES: &str = "Resources";

/// How often a consumer looks at the provider's answer while it is pending,
/// and once it is settled (grants change when the provider re-decides).
const POLL_PENDING: Duration = Duration::from_millis(200);
const POLL_SETTLED: Duration = Duration::from_secs(10);

pub async fn run(ctx: Arc<Context>) {
    Controller::new(
        Api::<ResourceSlice>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        if let Err(error) = result {
            tracing::warn!(%error, "ResourceSlice reconcile failed");
        }
    })
    .await;
}

fn error_policy(_: Arc<ResourceSlice>, error: &Error, _: Arc<Context>) -> Action {
    tracing::debug!(
        error = error.metric_label(),
        "ResourceSlice requeued after an error"
    );
    Action::requeue(Duration::from_secs(1))
}

async fn reconcile(slice: Arc<ResourceSlice>, ctx: Arc<Context>) -> Result<Action, Error> {
    let local = ctx.identity.cluster_id.as_str();
    if slice.spec.consumer_cluster_id == local {
        let namespace = slice.namespace().unwrap_or_default();
        let api: Api<ResourceSlice> = Api::namespaced(ctx.client.clone(), &namespace);
        return finalizer(&api, RESOURCE_SLICE, slice, |event| async {
            match event {
                Event::Apply(slice) => mirror(&slice, &ctx).await,
                Event::Cleanup(slice) => withdraw(&slice, &ctx).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)));
    }
    if slice.spec.provider_cluster_id == local && slice.metadata.deletion_timestamp.is_none() {
        return answer(&slice, &ctx).await;
    }
    Ok(Action::await_change())
}

async fn write_status(
    slice: &ResourceSlice,
    ctx: &Context,
    resources: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    auth: Option<&strait_api::authentication::AuthParams>,
    conditions: Vec<Condition>,
) -> Result<(), Error> {
    let namespace = slice.namespace().unwrap_or_default();
    let mut status = json!({"conditions": conditions});
    if let Some(resources) = resources {
        status["resources"] = json!(resources);
    }
    if let Some(auth) = auth {
        status["authParams"] = json!(auth);
    }
    let patch = json!({
        "apiVersion": "authentication.strait.dev/v1beta1",
        "kind": "ResourceSlice",
        "status": status,
    });
    Api::<ResourceSlice>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(
            &slice.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    Ok(())
}

/// Consumer: copies the slice to the provider and its answer back.
async fn mirror(slice: &ResourceSlice, ctx: &Context) -> Result<Action, Error> {
    let provider = slice.spec.provider_cluster_id.as_str();
    let existing = slice.status.clone().unwrap_or_default();
    let pending = |reason: &str, message: String| {
        merged_conditions(
            &existing.conditions,
            &[ConditionUpdate {
                type_: ACCEPTED,
                status: ConditionStatus::False,
                reason,
                message,
            }],
            slice.metadata.generation,
        )
    };
    let namespace = slice.namespace().unwrap_or_default();
    if namespace != tenant_namespace(provider) {
        let message = format!(
            "a slice asking {provider} must live in namespace {}",
            tenant_namespace(provider)
        );
        write_status(slice, ctx, None, None, pending("WrongNamespace", message)).await?;
        return Ok(Action::await_change());
    }
    let Some(identity) = identity_ready(ctx, provider).await? else {
        let message = format!("waiting for the peering with {provider} (ForeignCluster {provider}, condition AuthenticationReady)");
        write_status(slice, ctx, None, None, pending("IdentityPending", message)).await?;
        return Ok(Action::requeue(Duration::from_millis(500)));
    };
    let Some(remote) = identity_client(ctx, &identity).await? else {
        write_status(
            slice,
            ctx,
            None,
            None,
            pending(
                "IdentityPending",
                "the Identity's kubeconfig is not written yet".into(),
            ),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_millis(500)));
    };
    let remote_slices: Api<ResourceSlice> = Api::namespaced(remote, &identity.spec.namespace);
    let desired = json!({
        "apiVersion": "authentication.strait.dev/v1beta1",
        "kind": "ResourceSlice",
        "metadata": {"name": slice.name_any(), "labels": {
            label::MANAGED_BY: label::MANAGED_BY_VALUE,
            label::REMOTE_CLUSTER_ID: slice.spec.consumer_cluster_id,
        }},
        "spec": slice.spec,
    });
    let mirrored = match remote_slices
        .patch(
            &slice.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(desired),
        )
        .await
    {
        Ok(mirrored) => mirrored,
        Err(kube::Error::Api(status)) => {
            let message = format!("{provider} refused the slice: {}", status.message);
            write_status(slice, ctx, None, None, pending("ProviderRefused", message)).await?;
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
        Err(other) => {
            let message = format!("cannot reach {provider}: {other}");
            write_status(
                slice,
                ctx,
                None,
                None,
                pending("ProviderUnreachable", message),
            )
            .await?;
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
    };
    let answer = mirrored.status.clone().unwrap_or_default();
    // The provider's conditions, restated for this copy's generation once
    // they answer the provider copy's current one.
    let current = find_condition(&answer.conditions, ACCEPTED)
        .is_some_and(|c| c.observed_generation == mirrored.metadata.generation);
    if !current {
        let message = format!("waiting for {provider} to answer");
        write_status(slice, ctx, None, None, pending("AnswerPending", message)).await?;
        return Ok(Action::requeue(POLL_PENDING));
    }
    let mut conditions = answer.conditions.clone();
    for condition in &mut conditions {
        condition.observed_generation = slice.metadata.generation;
    }
    write_status(
        slice,
        ctx,
        Some(&answer.resources),
        answer.auth_params.as_ref(),
        conditions,
    )
    .await?;
    Ok(Action::requeue(POLL_SETTLED))
}

/// Consumer: the slice is deleted; withdraw it from the provider (best
/// effort when the peering is already gone).
async fn withdraw(slice: &ResourceSlice, ctx: &Context) -> Result<Action, Error> {
    let provider = slice.spec.provider_cluster_id.as_str();
    let Ok(Some(identity)) = identity_ready(ctx, provider).await else {
        return Ok(Action::await_change());
    };
    if let Ok(Some(remote)) = identity_client(ctx, &identity).await {
        let remote_slices: Api<ResourceSlice> = Api::namespaced(remote, &identity.spec.namespace);
        if let Err(error) = ignore_missing(
            remote_slices
                .delete(&slice.name_any(), &DeleteParams::default())
                .await,
        ) {
            tracing::warn!(%provider, slice = %slice.name_any(), %error, "could not withdraw the slice from the provider");
        }
    }
    Ok(Action::await_change())
}

/// Provider: decides the grant of a consumer's slice.
async fn answer(slice: &ResourceSlice, ctx: &Context) -> Result<Action, Error> {
    let consumer = slice.spec.consumer_cluster_id.as_str();
    let existing = slice.status.clone().unwrap_or_default();
    let generation = slice.metadata.generation;
    let decide = |status: ConditionStatus, reason: &str, message: String| {
        let resources = if status == ConditionStatus::True {
            "Accepted"
        } else {
            "Denied"
        };
        merged_conditions(
            &existing.conditions,
            &[
                ConditionUpdate {
                    type_: ACCEPTED,
                    status,
                    reason,
                    message: message.clone(),
                },
                ConditionUpdate {
                    type_: RESOURCES,
                    status,
                    reason: resources,
                    message,
                },
            ],
            generation,
        )
    };
    let empty = BTreeMap::new();
    if slice.namespace().as_deref() != Some(tenant_namespace(consumer).as_str()) {
        let message = format!(
            "slices of {consumer} belong in namespace {}",
            tenant_namespace(consumer)
        );
        write_status(
            slice,
            ctx,
            Some(&empty),
            None,
            decide(ConditionStatus::False, "WrongNamespace", message),
        )
        .await?;
        return Ok(Action::await_change());
    }
    let tenant = Api::<Tenant>::all(ctx.client.clone())
        .get_opt(consumer)
        .await?;
    let tenant_ready = tenant
        .as_ref()
        .and_then(|t| t.status.as_ref())
        .is_some_and(|s| is_condition_true(&s.conditions, READY));
    let Some(tenant) = tenant.filter(|_| tenant_ready) else {
        let message = format!("{consumer} has no verified Tenant here");
        write_status(
            slice,
            ctx,
            Some(&empty),
            None,
            decide(ConditionStatus::False, "TenantNotReady", message),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(2)));
    };
    let decided = find_condition(&existing.conditions, ACCEPTED)
        .is_some_and(|c| c.observed_generation == generation && c.reason != "TenantNotReady");
    match tenant.spec.tenant_condition {
        TenantCondition::Drained => {
            let message = format!("the Tenant of {consumer} is Drained: grants withdrawn");
            write_status(
                slice,
                ctx,
                Some(&empty),
                None,
                decide(ConditionStatus::False, "TenantDrained", message),
            )
            .await?;
            return Ok(Action::requeue(Duration::from_secs(10)));
        }
        TenantCondition::Cordoned if !decided => {
            let message = format!("the Tenant of {consumer} is Cordoned: no new slices");
            write_status(
                slice,
                ctx,
                Some(&empty),
                None,
                decide(ConditionStatus::False, "TenantCordoned", message),
            )
            .await?;
            return Ok(Action::requeue(Duration::from_secs(10)));
        }
        _ => {}
    }
    if decided {
        // Grants are stable: only a change of the slice (a resize) re-decides.
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    let mut asked = Amounts::new();
    for (name, quantity) in &slice.spec.resources {
        match parse_milli(&quantity.0) {
            Some(milli) => asked.insert(name.clone(), milli),
            None => {
                let message = format!("resources.{name}: {:?} is not a quantity", quantity.0);
                write_status(
                    slice,
                    ctx,
                    Some(&empty),
                    None,
                    decide(ConditionStatus::False, "InvalidQuantity", message),
                )
                .await?;
                return Ok(Action::await_change());
            }
        };
    }
    let free = free_capacity(ctx, slice).await?;
    let decision = ctx.policy.decide(&asked, &free);
    let granted: BTreeMap<_, _> = decision
        .granted
        .iter()
        .map(|(name, milli)| (name.clone(), format_milli(*milli)))
        .collect();
    let status = if decision.accepted() {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    tracing::info!(%consumer, slice = %slice.name_any(), reason = decision.reason, "slice answered");
    write_status(
        slice,
        ctx,
        Some(&granted),
        None,
        decide(status, decision.reason, decision.message),
    )
    .await?;
    Ok(Action::requeue(Duration::from_secs(60)))
}

/// What this cluster has free for `slice`: Nodes' allocatable minus the
/// requests of Pods still running or pending, minus the grants of every
/// other slice.
async fn free_capacity(ctx: &Context, slice: &ResourceSlice) -> Result<Amounts, Error> {
    let mut free = Amounts::new();
    let mut add = |name: &str, milli: i128| *free.entry(name.to_owned()).or_insert(0) += milli;
    for node in Api::<Node>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
    {
        let allocatable = node
            .status
            .and_then(|s| s.allocatable.or(s.capacity))
            .unwrap_or_default();
        for (name, quantity) in allocatable {
            add(&name, parse_milli(&quantity.0).unwrap_or(0));
        }
    }
    for pod in Api::<Pod>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
    {
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            continue;
        }
        add("pods", -1000);
        for container in pod.spec.map(|s| s.containers).unwrap_or_default() {
            let requests = container
                .resources
                .and_then(|r| r.requests)
                .unwrap_or_default();
            for (name, quantity) in requests {
                add(&name, -parse_milli(&quantity.0).unwrap_or(0));
            }
        }
    }
    let local = ctx.identity.cluster_id.as_str();
    for other in Api::<ResourceSlice>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
    {
        let same = other.namespace() == slice.namespace() && other.name_any() == slice.name_any();
        if same || other.spec.provider_cluster_id != local {
            continue;
        }
        for (name, quantity) in other.status.map(|s| s.resources).unwrap_or_default() {
            add(&name, -parse_milli(&quantity.0).unwrap_or(0));
        }
    }
    Ok(free)
}
