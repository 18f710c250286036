//! ForeignClusters for peerings built by hand: an Identity labelled
//! `strait.dev/remote-cluster-id` that this module did not make (say, one
//! written for offloading over a third-party network) gets a ForeignCluster
//! of that ID, with no module selected, so the peering shows in
//! `kubectl get foreignclusters`. An existing ForeignCluster is never changed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, ResourceExt as _};
use strait_api::authentication::Identity;
use strait_api::core::{ForeignCluster, ForeignClusterSpec};
use strait_api::names::label;

use crate::{is_status, Context, Error};

pub async fn run(ctx: Arc<Context>) {
    // Only what a person or another tool made: this module's own objects
    // come and go with their ForeignCluster.
    let selector = format!(
        "{},{}!={}",
        label::REMOTE_CLUSTER_ID,
        label::MANAGED_BY,
        label::MANAGED_BY_VALUE
    );
    Controller::new(
        Api::<Identity>::all(ctx.client.clone()),
        watcher::Config::default().labels(&selector),
    )
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        if let Err(error) = result {
            tracing::warn!(%error, "ForeignCluster discovery failed");
        }
    })
    .await;
}

fn error_policy(_: Arc<Identity>, _: &Error, _: Arc<Context>) -> Action {
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(identity: Arc<Identity>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(remote) = identity.labels().get(label::REMOTE_CLUSTER_ID).cloned() else {
        return Ok(Action::await_change());
    };
    if identity.metadata.deletion_timestamp.is_some() || remote == ctx.identity.cluster_id {
        return Ok(Action::await_change());
    }
    let foreign_clusters: Api<ForeignCluster> = Api::all(ctx.client.clone());
    if foreign_clusters.get_opt(&remote).await?.is_some() {
        return Ok(Action::await_change());
    }
    let mut labels = crate::cluster_identity::managed_labels();
    labels.insert(label::REMOTE_CLUSTER_ID.to_owned(), remote.clone());
    let foreign_cluster = ForeignCluster {
        metadata: ObjectMeta {
            name: Some(remote.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: ForeignClusterSpec {
            cluster_id: remote.clone(),
            modules: Default::default(),
            kubeconfig_secret_ref: None,
        },
        status: None,
    };
    match foreign_clusters
        .create(&PostParams::default(), &foreign_cluster)
        .await
    {
        Ok(_) => {
            tracing::info!(%remote, identity = %identity.name_any(), "ForeignCluster created for a hand-made Identity");
        }
        Err(e) if is_status(&e, 409) => {}
        Err(e) if is_status(&e, 422) => {
            tracing::warn!(%remote, "the remote-cluster-id label is not a valid cluster ID");
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}
