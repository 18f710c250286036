//! The ForeignCluster controller of the authentication module: expects the
//! remote cluster as a consumer (nonce), peers with it as its consumer when
//! a kubeconfig Secret is referenced, aggregates both into
//! `status.modules.authentication` and the `AuthenticationReady` condition,
//! and tears both down when the ForeignCluster is deleted.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, ResourceExt as _};
use serde_json::json;
use strait_api::authentication::{Identity, Tenant};
use strait_api::condition::owned_conditions;
use strait_api::condition::ConditionStatus::{False, True};
use strait_api::core::{ForeignCluster, ModuleState, PeeringRole};
use strait_api::names::{finalizer::FOREIGN_CLUSTER_AUTHENTICATION, tenant_namespace};
use strait_api::ConditionUpdate;

use crate::{
    consumer, live, merged_conditions, provider, Context, Error, FIELD_MANAGER, STALE_RETRY,
};

/// The condition `strait peer` and `kubectl wait` look for.
pub const AUTHENTICATION_READY: &str = "AuthenticationReady";
/// Module conditions: this cluster as the remote's consumer, and as its provider.
pub const IDENTITY_READY: &str = "IdentityReady";
pub const TENANT_READY: &str = "TenantReady";

/// Reasons that need a person (or the other cluster) to act, shown as state Error.
const ERROR_REASONS: &[&str] = &[
    "SignatureInvalid",
    "PublicKeyInvalid",
    "CSRInvalid",
    "ClusterIDMismatch",
    "NotExpected",
    "CertificateExpired",
    "KubeconfigInvalid",
    "KubeconfigSecretMissing",
    "BootstrapForbidden",
    "TenantRejected",
    "IdentityRejected",
    "ProviderUnreachable",
];

pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    Controller::new(
        Api::<ForeignCluster>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<Tenant>::all(client.clone()),
        watcher::Config::default(),
        |tenant| Some(ObjectRef::new(&tenant.spec.cluster_id)),
    )
    .watches(
        Api::<Identity>::all(client),
        watcher::Config::default(),
        |identity| Some(ObjectRef::new(&identity.spec.cluster_id)),
    )
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        if let Err(error) = result {
            tracing::warn!(%error, "ForeignCluster reconcile failed");
        }
    })
    .await;
}

fn error_policy(_: Arc<ForeignCluster>, error: &Error, _: Arc<Context>) -> Action {
    tracing::debug!(
        error = error.metric_label(),
        "ForeignCluster requeued after an error"
    );
    Action::requeue(Duration::from_secs(1))
}

async fn reconcile(fc: Arc<ForeignCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<ForeignCluster> = Api::all(ctx.client.clone());
    let Some(fc) = live(&api, &fc).await? else {
        return Ok(Action::requeue(STALE_RETRY));
    };
    finalizer(&api, FOREIGN_CLUSTER_AUTHENTICATION, fc, |event| async {
        match event {
            Event::Apply(fc) => apply(&fc, &ctx).await,
            Event::Cleanup(fc) => cleanup(&fc, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

async fn apply(fc: &ForeignCluster, ctx: &Context) -> Result<Action, Error> {
    let remote = fc.spec.cluster_id.as_str();
    if fc.name_any() != remote {
        let message = format!("a ForeignCluster must be named after its spec.clusterID ({remote})");
        write_status(
            fc,
            ctx,
            PeeringRole::Unknown,
            ModuleState::Error,
            &[],
            ConditionUpdate {
                type_: AUTHENTICATION_READY,
                status: False,
                reason: "ClusterIDMismatch",
                message,
            },
        )
        .await?;
        return Ok(Action::await_change());
    }
    if remote == ctx.identity.cluster_id {
        let message = format!("{remote} is this cluster's own ID");
        write_status(
            fc,
            ctx,
            PeeringRole::Unknown,
            ModuleState::Error,
            &[],
            ConditionUpdate {
                type_: AUTHENTICATION_READY,
                status: False,
                reason: "ClusterIDMismatch",
                message,
            },
        )
        .await?;
        return Ok(Action::await_change());
    }
    if !fc.spec.modules.authentication {
        return Ok(Action::await_change());
    }
    let as_provider = provider::expect(remote, ctx).await?;
    let as_consumer = match fc.spec.kubeconfig_secret_ref {
        Some(_) => Some(consumer::peer(fc, ctx).await?),
        None => None,
    };
    let tenant_ready = ConditionUpdate {
        type_: TENANT_READY,
        status: as_provider.status,
        reason: &as_provider.reason,
        message: as_provider.message.clone(),
    };
    let mut module_conditions = vec![tenant_ready.clone()];
    let (aggregate, retry) = match &as_consumer {
        Some(view) => {
            let identity_ready = ConditionUpdate {
                type_: IDENTITY_READY,
                status: if view.ready { True } else { False },
                reason: &view.reason,
                message: view.message.clone(),
            };
            module_conditions.push(identity_ready.clone());
            // The remote cluster consuming from us too only counts once it asked.
            let aggregate = if view.ready && as_provider.tenant_exists && as_provider.status != True
            {
                tenant_ready.clone()
            } else {
                identity_ready
            };
            (aggregate, view.retry)
        }
        None => (tenant_ready.clone(), Duration::from_secs(10)),
    };
    let role = match (
        as_consumer.as_ref().is_some_and(|v| v.ready),
        as_provider.tenant_exists && as_provider.status == True,
    ) {
        (true, true) => PeeringRole::ConsumerAndProvider,
        (true, false) => PeeringRole::Provider,
        (false, true) => PeeringRole::Consumer,
        (false, false) => PeeringRole::Unknown,
    };
    let state = if aggregate.status == True {
        ModuleState::Ready
    } else if ERROR_REASONS.contains(&aggregate.reason) {
        ModuleState::Error
    } else {
        ModuleState::Pending
    };
    let aggregate = ConditionUpdate {
        type_: AUTHENTICATION_READY,
        ..aggregate
    };
    write_status(fc, ctx, role, state, &module_conditions, aggregate).await?;
    Ok(Action::requeue(retry))
}

async fn write_status(
    fc: &ForeignCluster,
    ctx: &Context,
    role: PeeringRole,
    state: ModuleState,
    module_conditions: &[ConditionUpdate<'_>],
    aggregate: ConditionUpdate<'_>,
) -> Result<(), Error> {
    let generation = fc.metadata.generation;
    let status = fc.status.as_ref();
    let existing_module = status
        .and_then(|s| s.modules.authentication.as_ref())
        .map(|m| m.conditions.clone())
        .unwrap_or_default();
    let module = merged_conditions(&existing_module, module_conditions, generation);
    let existing = status.map(|s| s.conditions.clone()).unwrap_or_default();
    // Only AuthenticationReady: the other modules apply their own.
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let (conditions, _) = owned_conditions(&existing, [aggregate], generation, &now);
    let remote = &fc.spec.cluster_id;
    let patch = json!({
        "apiVersion": "core.strait.dev/v1beta1",
        "kind": "ForeignCluster",
        "status": {
            "role": role,
            "modules": {"authentication": {"state": state, "conditions": module}},
            "tenantNamespace": {"local": tenant_namespace(remote), "remote": tenant_namespace(&ctx.identity.cluster_id)},
            "conditions": conditions,
        },
    });
    Api::<ForeignCluster>::all(ctx.client.clone())
        .patch_status(
            &fc.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    Ok(())
}

async fn cleanup(fc: &ForeignCluster, ctx: &Context) -> Result<Action, Error> {
    let remote = fc.spec.cluster_id.as_str();
    if !fc.spec.modules.authentication || fc.name_any() != remote {
        return Ok(Action::await_change());
    }
    tracing::info!(%remote, "ForeignCluster deleted: unpeering");
    if fc.spec.kubeconfig_secret_ref.is_some() {
        consumer::unpeer(fc, ctx).await?;
    }
    provider::forget(remote, ctx).await?;
    Ok(Action::await_change())
}
