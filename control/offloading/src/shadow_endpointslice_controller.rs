//! ShadowEndpointSlice controller (provider side): each ShadowEndpointSlice
//! a consumer reflected becomes a real EndpointSlice (owned by it) of the
//! reflected Service, so the provider's pods reach the consumer's endpoints.

use std::{sync::Arc, time::Duration};

use futures::StreamExt as _;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{
    api::{Patch, PatchParams},
    runtime::{controller::Action, watcher, Controller},
    Api, Client, Resource as _, ResourceExt as _,
};
use serde_json::json;
use strait_api::{names, offloading::ShadowEndpointSlice};
use tracing::warn;

use crate::Error;

pub const FIELD_MANAGER: &str = "strait-offloading-endpointslice";
/// `endpointslice.kubernetes.io/managed-by` of the slices made here, so the
/// provider's own EndpointSlice controller leaves them alone.
pub const MANAGED_BY: &str = "endpointslice.strait.dev";

pub async fn run(client: Client) {
    Controller::new(
        Api::<ShadowEndpointSlice>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default(),
    )
    .run(
        reconcile,
        |_, _: &Error, _| Action::requeue(Duration::from_secs(2)),
        Arc::new(client),
    )
    .for_each(|result| async move {
        if let Err(error) = result {
            warn!(%error, "ShadowEndpointSlice reconcile failed");
        }
    })
    .await;
}

/// The EndpointSlice a ShadowEndpointSlice stands for.
pub fn desired(shadow: &ShadowEndpointSlice) -> serde_json::Value {
    let mut labels = shadow.labels().clone();
    labels.insert(
        "endpointslice.kubernetes.io/managed-by".into(),
        MANAGED_BY.into(),
    );
    labels.insert(
        names::label::MANAGED_BY.into(),
        names::label::MANAGED_BY_VALUE.into(),
    );
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": shadow.name_any(),
            "labels": labels,
            "ownerReferences": shadow.controller_owner_ref(&()).into_iter().collect::<Vec<_>>(),
        },
        "addressType": shadow.spec.template.address_type,
        "endpoints": shadow.spec.template.endpoints,
        "ports": shadow.spec.template.ports,
    })
}

async fn reconcile(shadow: Arc<ShadowEndpointSlice>, client: Arc<Client>) -> Result<Action, Error> {
    if shadow.metadata.deletion_timestamp.is_some() {
        // The owner reference takes the EndpointSlice away.
        return Ok(Action::await_change());
    }
    let namespace = shadow
        .namespace()
        .ok_or(Error::Unnamed("ShadowEndpointSlice"))?;
    Api::<EndpointSlice>::namespaced((*client).clone(), &namespace)
        .patch(
            &shadow.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired(&shadow)),
        )
        .await?;
    Ok(Action::await_change())
}
