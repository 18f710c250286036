//! The provider's side of a ForeignCluster: expecting the remote cluster as
//! a consumer means a tenant namespace with a nonce Secret it can sign;
//! forgetting it removes its Tenant and that namespace.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::Api;
use strait_api::authentication::Tenant;
use strait_api::condition::{find_condition, ConditionStatus};
use strait_api::names::{label, tenant_namespace};

use crate::cluster_identity::{ensure_namespace, managed_labels};
use crate::handshake::new_nonce;
use crate::object_names::{NONCE_KEY, NONCE_SECRET};
use crate::tenant::{ignore_missing, READY};
use crate::{is_status, Context, Error};

/// The state of the remote cluster as this cluster's consumer.
pub struct ProviderView {
    /// The remote cluster's Tenant here, if it created one.
    pub tenant_exists: bool,
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
}

/// Publishes a nonce for `consumer` (once) and reports on its Tenant.
pub async fn expect(consumer: &str, ctx: &Context) -> Result<ProviderView, Error> {
    let namespace = tenant_namespace(consumer);
    let labels = BTreeMap::from([(label::REMOTE_CLUSTER_ID.to_owned(), consumer.to_owned())]);
    ensure_namespace(&ctx.client, &namespace, labels).await?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    if secrets.get_opt(NONCE_SECRET).await?.is_none() {
        let mut labels = managed_labels();
        labels.insert(label::NONCE_SECRET.to_owned(), consumer.to_owned());
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(NONCE_SECRET.to_owned()),
                labels: Some(labels),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                NONCE_KEY.to_owned(),
                ByteString(new_nonce()?.into_bytes()),
            )])),
            ..Default::default()
        };
        match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(%consumer, %namespace, "nonce published for an expected consumer")
            }
            Err(e) if is_status(&e, 409) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let tenant = Api::<Tenant>::all(ctx.client.clone())
        .get_opt(consumer)
        .await?;
    let ready = tenant
        .as_ref()
        .and_then(|t| t.status.as_ref())
        .and_then(|s| find_condition(&s.conditions, READY).cloned());
    Ok(match (tenant.is_some(), ready) {
        (false, _) => ProviderView {
            tenant_exists: false,
            status: ConditionStatus::False,
            reason: "TenantPending".into(),
            message: format!("waiting for {consumer} to sign the nonce in {namespace}/{NONCE_SECRET} and create its Tenant here"),
        },
        (true, None) => ProviderView {
            tenant_exists: true,
            status: ConditionStatus::False,
            reason: "TenantPending".into(),
            message: format!("the Tenant of {consumer} is not verified yet"),
        },
        (true, Some(condition)) => ProviderView {
            tenant_exists: true,
            status: condition.status,
            reason: condition.reason,
            message: format!("Tenant {consumer}: {}", condition.message),
        },
    })
}

/// Removes the remote cluster's Tenant (its finalizer revokes the identity
/// and slices) and its tenant namespace with the nonce.
pub async fn forget(consumer: &str, ctx: &Context) -> Result<(), Error> {
    ignore_missing(
        Api::<Tenant>::all(ctx.client.clone())
            .delete(consumer, &DeleteParams::default())
            .await,
    )?;
    ignore_missing(
        Api::<Namespace>::all(ctx.client.clone())
            .delete(&tenant_namespace(consumer), &DeleteParams::default())
            .await,
    )
}
