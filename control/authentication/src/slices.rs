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
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::{watcher, Controller};
use kube::{Api, ResourceExt as _};
use serde_json::json;
use strait_api::authentication::{
    ApiServer, AuthParams, Identity, ResourceSlice, Tenant, TenantCondition,
};
use strait_api::condition::{find_condition, is_condition_true, ConditionStatus};
use strait_api::names::{finalizer::RESOURCE_SLICE, label, tenant_namespace};
use strait_api::{rbac, Condition, ConditionUpdate};

use crate::consumer::{client_key, identity_client, identity_ready, store_identity, IdentityKind};
use crate::handshake::{self, slice_user};
use crate::object_names::{
    identity_key_secret, identity_kubeconfig_secret, slice_csr, slice_identity, slice_role,
};
use crate::policy::Amounts;
use crate::quantity::{format_milli, parse_milli};
use crate::tenant::issue_certificate;
use crate::tenant::{ignore_missing, READY};
use crate::{live, merged_conditions, Context, Error, FIELD_MANAGER, STALE_RETRY};

/// The condition `strait peer` waits for on a slice.
pub const ACCEPTED: &str = "Accepted";
/// The condition the printer column shows (reason Accepted or Denied).
pub const RESOURCES: &str = "Resources";
/// Whether the slice-scoped identity is issued.
pub const AUTHENTICATION: &str = "Authentication";

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
    // The same object is the consumer's request on one side and the
    // provider's copy on the other; a slice of neither side is not ours.
    let consumer = slice.spec.consumer_cluster_id == local;
    if !consumer && slice.spec.provider_cluster_id != local {
        return Ok(Action::await_change());
    }
    let namespace = slice.namespace().unwrap_or_default();
    let api: Api<ResourceSlice> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(slice) = live(&api, &slice).await? else {
        return Ok(Action::requeue(STALE_RETRY));
    };
    finalizer(&api, RESOURCE_SLICE, slice, |event| async {
        match (event, consumer) {
            (Event::Apply(slice), true) => mirror(&slice, &ctx).await,
            (Event::Cleanup(slice), true) => withdraw(&slice, &ctx).await,
            (Event::Apply(slice), false) => answer(&slice, &ctx).await,
            (Event::Cleanup(slice), false) => revoke(&slice, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
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
        return Ok(Action::requeue(POLL_PENDING));
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
        return Ok(Action::requeue(POLL_PENDING));
    };
    let remote_slices: Api<ResourceSlice> = Api::namespaced(remote, &identity.spec.namespace);
    let kind = slice_identity_kind(slice, ctx);
    let mut spec = serde_json::to_value(&slice.spec)?;
    if slice.spec.csr.is_empty() {
        // The slice's virtual kubelets get an identity of their own; this
        // cluster keeps its key.
        spec["csr"] = json!(client_key(ctx, &kind).await?.1);
    }
    let desired = json!({
        "apiVersion": "authentication.strait.dev/v1beta1",
        "kind": "ResourceSlice",
        "metadata": {"name": slice.name_any(), "labels": {
            label::MANAGED_BY: label::MANAGED_BY_VALUE,
            label::REMOTE_CLUSTER_ID: slice.spec.consumer_cluster_id,
        }},
        "spec": spec,
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
    if let Some(auth) = answer
        .auth_params
        .clone()
        .filter(|a| !a.signed_crt.is_empty())
    {
        if slice.spec.csr.is_empty() {
            let stored = Api::<Identity>::namespaced(ctx.client.clone(), &namespace)
                .get_opt(&kind.name)
                .await?
                .map(|i| i.spec.auth_params.signed_crt);
            if stored.as_deref() != Some(auth.signed_crt.as_str()) {
                store_identity(ctx, &kind, auth, &identity.spec.namespace).await?;
            }
        }
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
    let namespace = slice.namespace().unwrap_or_default();
    let kind = slice_identity_kind(slice, ctx);
    ignore_missing(
        Api::<Identity>::namespaced(ctx.client.clone(), &namespace)
            .delete(&kind.name, &DeleteParams::default())
            .await,
    )?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    for secret in [
        identity_key_secret(&kind.name),
        identity_kubeconfig_secret(&kind.name),
    ] {
        ignore_missing(secrets.delete(&secret, &DeleteParams::default()).await)?;
    }
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
    // Grants are stable: only a change of the slice (a resize) re-decides.
    let (resources, conditions) = if decided {
        (existing.resources.clone(), existing.conditions.clone())
    } else {
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
        (granted, decide(status, decision.reason, decision.message))
    };
    let accepted = is_condition_true(&conditions, ACCEPTED);
    let issued = issue_slice_identity(slice, ctx, accepted).await?;
    let conditions = merged_conditions(
        &conditions,
        &[ConditionUpdate {
            type_: AUTHENTICATION,
            status: issued.status,
            reason: issued.reason,
            message: issued.message,
        }],
        generation,
    );
    write_status(
        slice,
        ctx,
        Some(&resources),
        issued.auth.as_ref(),
        conditions,
    )
    .await?;
    Ok(Action::requeue(issued.retry))
}

fn slice_identity_kind<'a>(slice: &'a ResourceSlice, ctx: &Context) -> IdentityKind<'a> {
    IdentityKind {
        provider: &slice.spec.provider_cluster_id,
        name: slice_identity(&slice.name_any()),
        user: slice_user(&ctx.identity.cluster_id, &slice.name_any()),
        type_: "ResourceSlice",
    }
}

struct SliceIdentity {
    auth: Option<AuthParams>,
    status: ConditionStatus,
    reason: &'static str,
    message: String,
    retry: Duration,
}

/// Provider: the slice-scoped identity of an accepted slice with a CSR,
/// allowed by RBAC to read that slice only (the offloading module grants
/// its virtual kubelets more).
async fn issue_slice_identity(
    slice: &ResourceSlice,
    ctx: &Context,
    accepted: bool,
) -> Result<SliceIdentity, Error> {
    let consumer = slice.spec.consumer_cluster_id.as_str();
    let name = slice.name_any();
    let not_issued = |reason, message: String, retry| SliceIdentity {
        auth: None,
        status: ConditionStatus::False,
        reason,
        message,
        retry,
    };
    if !accepted {
        return Ok(not_issued(
            "NotAccepted",
            "no identity for a slice that is not accepted".into(),
            Duration::from_secs(60),
        ));
    }
    if slice.spec.csr.is_empty() {
        return Ok(not_issued(
            "NoCSR",
            "spec.csr is empty: no slice identity was asked for".into(),
            Duration::from_secs(60),
        ));
    }
    let user = slice_user(consumer, &name);
    if let Err(refusal) = handshake::check_client_request(&slice.spec.csr, &user) {
        return Ok(not_issued(
            "CSRInvalid",
            refusal.message().to_owned(),
            Duration::from_secs(60),
        ));
    }
    let namespace = slice.namespace().unwrap_or_default();
    let role = slice_role(&name);
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let labels =
        json!({label::MANAGED_BY: label::MANAGED_BY_VALUE, label::REMOTE_CLUSTER_ID: consumer});
    // Its slice, and what the offloading module asks for through a
    // VirtualNode made from this slice (its NamespaceMap).
    let mut rules = vec![
        json!({"apiGroups": ["authentication.strait.dev"], "resources": ["resourceslices"], "resourceNames": [name], "verbs": ["get", "watch"]}),
    ];
    rules.extend(rbac::policy_rules(rbac::OFFLOADING_IN_TENANT_NAMESPACE));
    Api::<Role>::namespaced(ctx.client.clone(), &namespace)
        .patch(
            &role,
            &apply,
            &Patch::Apply(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": role, "namespace": namespace, "labels": labels},
                "rules": rules,
            })),
        )
        .await?;
    Api::<RoleBinding>::namespaced(ctx.client.clone(), &namespace)
        .patch(&role, &apply, &Patch::Apply(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": role, "namespace": namespace, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        })))
        .await?;
    let csr_labels = BTreeMap::from([(label::REMOTE_CLUSTER_ID.to_owned(), consumer.to_owned())]);
    let Some((certificate, validity)) = issue_certificate(
        ctx,
        &slice_csr(consumer, &name),
        &slice.spec.csr,
        csr_labels,
        Vec::new(),
    )
    .await?
    else {
        return Ok(not_issued(
            "CertificatePending",
            "waiting for the cluster's signer".into(),
            Duration::from_millis(200),
        ));
    };
    let renew_in = (validity.at_fraction(0.5) - handshake::now()).max(1) as u64;
    Ok(SliceIdentity {
        auth: Some(AuthParams {
            ca: ctx.config.api_server.ca_pem.clone(),
            signed_crt: certificate,
            api_server: Some(ApiServer {
                address: ctx.config.api_server.address.clone(),
                ..Default::default()
            }),
            proxy_url: None,
        }),
        status: ConditionStatus::True,
        reason: "IdentityIssued",
        message: format!("identity {user} issued for this slice"),
        retry: Duration::from_secs(renew_in.min(60)),
    })
}

/// Provider: a slice is gone; so are its identity's CSR and RBAC.
async fn revoke(slice: &ResourceSlice, ctx: &Context) -> Result<Action, Error> {
    let consumer = slice.spec.consumer_cluster_id.as_str();
    let name = slice.name_any();
    let namespace = slice.namespace().unwrap_or_default();
    ignore_missing(
        Api::<CertificateSigningRequest>::all(ctx.client.clone())
            .delete(&slice_csr(consumer, &name), &DeleteParams::default())
            .await,
    )?;
    let role = slice_role(&name);
    ignore_missing(
        Api::<RoleBinding>::namespaced(ctx.client.clone(), &namespace)
            .delete(&role, &DeleteParams::default())
            .await,
    )?;
    ignore_missing(
        Api::<Role>::namespaced(ctx.client.clone(), &namespace)
            .delete(&role, &DeleteParams::default())
            .await,
    )?;
    Ok(Action::await_change())
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
