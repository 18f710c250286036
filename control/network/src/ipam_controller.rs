//! The IPAM controller: gives every `Network` its allocation (the CIDRs it
//! asked for when free, else remapped ranges of the same size), records it
//! in the status with an `Allocated` condition, and returns it to the pool
//! when the Network is deleted (finalizer).
//!
//! The allocator lives in memory, rebuilt at start from every Network's
//! status ([`restore`]), so an allocation survives restarts and is never
//! handed out twice; allocation and status write happen under one lock.

use std::{sync::Arc, time::Duration};

use futures::StreamExt as _;
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    api::{ListParams, Patch, PatchParams},
    runtime::{
        controller::{Action, Controller},
        finalizer::{finalizer, Event},
        watcher,
    },
    Api, Client, ResourceExt as _,
};
use strait_api::{
    condition::{set_condition, ConditionStatus, ConditionUpdate},
    ipam::Network,
    names::finalizer::IPAM,
};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::ipam::{parse_cidr, Allocation, Allocator, IpamError};

/// The field manager of everything this controller writes.
pub const FIELD_MANAGER: &str = "strait-ipam";
const ALLOCATED: &str = "Allocated";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("restoring {network}: {source}")]
    Restore {
        network: String,
        #[source]
        source: IpamError,
    },
}

impl Error {
    /// A short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::Restore { .. } => "restore",
        }
    }
}

/// Shared by reconciles.
pub struct Context {
    pub client: Client,
    pub allocator: Mutex<Allocator>,
    /// Signalled when a range returns to the pool, so Networks waiting on a
    /// full pool are retried at once rather than at their next requeue.
    pub released: futures::channel::mpsc::UnboundedSender<()>,
}

/// Re-registers the allocations recorded in Network statuses.
pub async fn restore(client: &Client, allocator: &mut Allocator) -> Result<usize, Error> {
    let networks = Api::<Network>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    let mut restored = 0;
    for network in &networks {
        for cidr in network
            .status
            .as_ref()
            .map(|s| s.cidrs.as_slice())
            .unwrap_or_default()
        {
            let net = parse_cidr(cidr).map_err(|source| Error::Restore {
                network: key(network),
                source,
            })?;
            allocator.restore(net).map_err(|source| Error::Restore {
                network: key(network),
                source,
            })?;
            restored += 1;
        }
    }
    Ok(restored)
}

fn key(network: &Network) -> String {
    format!(
        "{}/{}",
        network.namespace().unwrap_or_default(),
        network.name_any()
    )
}

/// Restores the allocator, then reconciles Networks until the stream ends.
pub async fn run(client: Client, mut allocator: Allocator) -> Result<(), Error> {
    let restored = restore(&client, &mut allocator).await?;
    info!(restored, "IPAM allocations restored");
    let (released, on_release) = futures::channel::mpsc::unbounded();
    let context = Arc::new(Context {
        client: client.clone(),
        allocator: Mutex::new(allocator),
        released,
    });
    Controller::new(Api::<Network>::all(client), watcher::Config::default())
        .reconcile_all_on(on_release)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "IPAM reconcile failed");
            }
        })
        .await;
    Ok(())
}

async fn reconcile(network: Arc<Network>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<Network> =
        Api::namespaced(ctx.client.clone(), &network.namespace().unwrap_or_default());
    finalizer(&api, IPAM, network, |event| async {
        match event {
            Event::Apply(network) => allocate(&api, &network, &ctx).await,
            Event::Cleanup(network) => release(&network, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn error_policy(_: Arc<Network>, error: &Error, _: Arc<Context>) -> Action {
    warn!(error = error.metric_label(), "requeue after error");
    Action::requeue(Duration::from_secs(2))
}

async fn allocate(api: &Api<Network>, network: &Network, ctx: &Context) -> Result<Action, Error> {
    let status = network.status.clone().unwrap_or_default();
    if !status.cidrs.is_empty() {
        // Allocations never move (the CRD enforces it); nothing to do.
        return Ok(Action::await_change());
    }
    // One lock across allocation and status write: two Networks can never
    // be given the same range, and a failed write returns what it took.
    let mut allocator = ctx.allocator.lock().await;
    let mut taken: Vec<Allocation> = Vec::new();
    let mut failure = None;
    for cidr in &network.spec.cidrs {
        match parse_cidr(cidr).and_then(|net| allocator.allocate(net)) {
            Ok(allocation) => taken.push(allocation),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let (condition, cidrs) = match &failure {
        None => {
            let remapped = taken
                .iter()
                .any(|a| matches!(a, Allocation::Remapped { .. }));
            let listed: Vec<String> = taken.iter().map(|a| a.allocated().to_string()).collect();
            let update = ConditionUpdate {
                type_: ALLOCATED,
                status: ConditionStatus::True,
                reason: if remapped { "Remapped" } else { "AsRequested" },
                message: format!("allocated {}", listed.join(", ")),
            };
            (update, listed)
        }
        Some(e) => {
            let reason = match e {
                IpamError::PoolExhausted { .. } => "PoolExhausted",
                _ => "InvalidCIDR",
            };
            let update = ConditionUpdate {
                type_: ALLOCATED,
                status: ConditionStatus::False,
                reason,
                message: e.to_string(),
            };
            (update, Vec::new())
        }
    };
    let mut conditions = status.conditions.clone();
    set_condition(
        &mut conditions,
        condition,
        network.metadata.generation,
        &Time(Timestamp::now()),
    );
    let patch = serde_json::json!({
        "apiVersion": "ipam.strait.dev/v1beta1",
        "kind": "Network",
        "status": { "cidrs": cidrs, "conditions": conditions },
    });
    let written = api
        .patch_status(
            &network.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await;
    if written.is_err() || failure.is_some() {
        for allocation in &taken {
            allocator.release(&allocation.allocated());
        }
    }
    written?;
    match failure {
        None => {
            info!(network = %key(network), cidrs = ?cidrs, "allocated");
            Ok(Action::await_change())
        }
        // The pool may free up: try again later.
        Some(_) => Ok(Action::requeue(Duration::from_secs(30))),
    }
}

async fn release(network: &Network, ctx: &Context) -> Result<Action, Error> {
    let mut allocator = ctx.allocator.lock().await;
    for cidr in network
        .status
        .as_ref()
        .map(|s| s.cidrs.as_slice())
        .unwrap_or_default()
    {
        if let Ok(net) = parse_cidr(cidr) {
            allocator.release(&net);
        }
    }
    drop(allocator);
    info!(network = %key(network), "released");
    // The controller is gone only when the process stops; nothing to do then.
    let _ = ctx.released.unbounded_send(());
    Ok(Action::await_change())
}
