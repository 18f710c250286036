//! The nodes' routes toward a peer: for every Configuration whose remote
//! CIDRs are allocated, and whose gateway (a GatewayServer or GatewayClient
//! for the same remote cluster) publishes where it sits inside the cluster,
//! the RouteConfiguration `<remote cluster>` that sends the peer's ranges as
//! this cluster sees them to that gateway over Geneve, tagged with the
//! peering's VNI. Every node's `strait-fabric run --from-cluster=routes`
//! loads it.
//!
//! The VNI is allocated once per Configuration, kept in its `status.vni`:
//! the lowest free one from `first_peer_vni` up, never the fabric's node VNI
//! (the one gateways use back toward nodes). Allocations are serialized in
//! this process (one active controller, by leader election) and checked
//! against every Configuration the API holds, so two peerings never share
//! one; a restart reads them back instead of choosing again.
//!
//! The RouteConfiguration is owned by the Configuration (deleting the
//! peering deletes it) and removed when the peer's last gateway goes away.
//!
//! The gateways' `status.internalEndpoint` is published here too
//! ([`run_endpoints`]): a fixed address in the local simulation, the gateway
//! pod's addresses and node in a cluster.

use std::{collections::BTreeSet, net::IpAddr, sync::Arc, time::Duration};

use futures::StreamExt as _;
use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    api::{DeleteParams, ListParams, Patch, PatchParams},
    runtime::{controller::Action, reflector::ObjectRef, watcher, Controller},
    Api, Client, Resource, ResourceExt as _,
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::json;
use strait_api::{
    condition::{owned_conditions, ConditionStatus, ConditionUpdate},
    names::label::REMOTE_CLUSTER_ID,
    networking::{
        Configuration, GatewayClient, GatewayServer, InternalEndpoint, RouteConfiguration,
    },
};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::render::{node_routes, RenderError};

/// Field manager of what this controller writes.
pub const FIELD_MANAGER: &str = "strait-network-routes";
/// Field manager of `status.vni` alone: an apply that left it out (the
/// condition's) would otherwise remove it.
pub const VNI_FIELD_MANAGER: &str = "strait-network-routes-vni";
/// The Configuration condition this controller owns.
pub const ROUTES_READY: &str = "RoutesReady";
/// The fabric's VNI toward nodes when the chart's `fabric.config.nodeVni`
/// is not changed.
pub const DEFAULT_NODE_VNI: u32 = 1;
/// Peerings' VNIs are allocated from here up.
pub const DEFAULT_FIRST_PEER_VNI: u32 = 4096;
const MAX_VNI: u32 = 0x00ff_ffff;
/// Label of the gateway pods the chart's template renders: the gateway's name.
pub const GATEWAY_POD_LABEL: &str = "strait.dev/gateway";
/// How often a gateway pod's addresses are looked at again.
const POD_POLL: Duration = Duration::from_secs(5);
/// A peering waiting for something is looked at again this often, in case
/// an event was missed.
const WAITING_POLL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0} has no namespace")]
    NotNamespaced(String),
    #[error("serializing a patch: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// Where the gateways' internal endpoints come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointSource {
    /// The local simulation: every gateway sits behind these addresses (at
    /// most one per family), given on the controller's command line. Empty:
    /// nothing is published and routes wait.
    Fixed(Vec<IpAddr>),
    /// In a cluster: the addresses and node of the gateway's pod, found by
    /// its `strait.dev/gateway` label in this namespace.
    GatewayPods { namespace: String },
}

/// The route controller's settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The fabric's VNI toward nodes (`nodeVni` of the agents' config): never
    /// given to a peering.
    pub node_vni: u32,
    /// The lowest VNI a peering gets.
    pub first_peer_vni: u32,
    pub endpoints: EndpointSource,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            node_vni: DEFAULT_NODE_VNI,
            first_peer_vni: DEFAULT_FIRST_PEER_VNI,
            endpoints: EndpointSource::Fixed(Vec::new()),
        }
    }
}

struct Context {
    client: Client,
    settings: Settings,
    /// Held from choosing a VNI until it is written, so two peerings
    /// reconciled at once cannot pick the same one.
    allocating: Mutex<()>,
}

/// Runs the route controller and the gateways' endpoint publisher.
pub async fn run(client: Client, settings: Settings) {
    let context = Arc::new(Context {
        client,
        settings,
        allocating: Mutex::new(()),
    });
    tokio::join!(
        run_routes(context.clone()),
        run_endpoints::<GatewayServer>(context.clone()),
        run_endpoints::<GatewayClient>(context),
    );
}

/// The remote cluster a Configuration is for: its `strait.dev/remote-cluster-id`
/// label, else its name.
pub fn remote_cluster(config: &Configuration) -> String {
    config
        .labels()
        .get(REMOTE_CLUSTER_ID)
        .cloned()
        .unwrap_or_else(|| config.name_any())
}

/// Whether `gateway` (in the Configuration's namespace) serves the remote
/// cluster `remote`: labelled with it, or not labelled at all (a namespace
/// per peer).
fn serves(gateway_labels: &std::collections::BTreeMap<String, String>, remote: &str) -> bool {
    gateway_labels
        .get(REMOTE_CLUSTER_ID)
        .is_none_or(|label| label == remote)
}

async fn run_routes(context: Arc<Context>) {
    let client = context.client.clone();
    let controller = Controller::new(
        Api::<Configuration>::all(client.clone()),
        watcher::Config::default(),
    );
    let configurations = controller.store();
    let for_gateway =
        move |namespace: Option<String>, labels: &std::collections::BTreeMap<String, String>| {
            configurations
                .state()
                .into_iter()
                .filter(|c| c.namespace() == namespace && serves(labels, &remote_cluster(c)))
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        };
    let servers = for_gateway.clone();
    controller
        .owns(
            Api::<RouteConfiguration>::all(client.clone()),
            watcher::Config::default(),
        )
        .watches(
            Api::<GatewayServer>::all(client.clone()),
            watcher::Config::default(),
            move |gateway| servers(gateway.namespace(), gateway.labels()),
        )
        .watches(
            Api::<GatewayClient>::all(client),
            watcher::Config::default(),
            move |gateway| for_gateway(gateway.namespace(), gateway.labels()),
        )
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "RouteConfiguration reconcile failed");
            }
        })
        .await;
}

fn error_policy(_: Arc<Configuration>, _: &Error, _: Arc<Context>) -> Action {
    Action::requeue(Duration::from_secs(2))
}

/// The lowest VNI from `first` up that is neither `node_vni` nor in `used`.
pub fn pick_vni(used: &BTreeSet<u32>, node_vni: u32, first: u32) -> Option<u32> {
    (first.max(1)..=MAX_VNI).find(|v| *v != node_vni && !used.contains(v))
}

/// The peering's VNI: the one in its status, else a newly allocated one,
/// written before the lock is released. Err is a message for a person.
async fn vni(
    config: &Configuration,
    ctx: &Context,
    namespace: &str,
) -> Result<Result<u32, String>, Error> {
    let settings = &ctx.settings;
    let check = |vni: i64| -> Result<u32, String> {
        match u32::try_from(vni) {
            Ok(v) if (1..=MAX_VNI).contains(&v) && v != settings.node_vni => Ok(v),
            _ => Err(format!(
                "status.vni {vni} is not a peering VNI (1-{MAX_VNI}, not the fabric's node VNI {}): remove status.vni to have a new one allocated",
                settings.node_vni
            )),
        }
    };
    if let Some(vni) = config.status.as_ref().and_then(|s| s.vni) {
        return Ok(check(vni));
    }
    let _allocating = ctx.allocating.lock().await;
    let all = Api::<Configuration>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?;
    // The live object may have been given one since this reconcile's copy.
    if let Some(vni) = all
        .items
        .iter()
        .find(|c| c.metadata.uid == config.metadata.uid)
        .and_then(|c| c.status.as_ref()?.vni)
    {
        return Ok(check(vni));
    }
    let used: BTreeSet<u32> = all
        .items
        .iter()
        .filter_map(|c| c.status.as_ref()?.vni)
        .filter_map(|v| u32::try_from(v).ok())
        .collect();
    let Some(vni) = pick_vni(&used, settings.node_vni, settings.first_peer_vni) else {
        return Ok(Err(format!(
            "no free VNI from {} to {MAX_VNI}: delete unused Configurations",
            settings.first_peer_vni
        )));
    };
    let patch = json!({
        "apiVersion": Configuration::api_version(&()),
        "kind": "Configuration",
        "status": { "vni": vni },
    });
    Api::<Configuration>::namespaced(ctx.client.clone(), namespace)
        .patch_status(
            &config.name_any(),
            &PatchParams::apply(VNI_FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    info!(%namespace, configuration = %config.name_any(), vni, "allocated the peering's VNI");
    Ok(Ok(vni))
}

/// A gateway of the peer and where it sits in the cluster.
struct Gateway {
    describe: String,
    endpoint: Option<InternalEndpoint>,
}

/// The live gateways of `remote` in `namespace`, servers then clients, by name.
async fn gateways(client: &Client, namespace: &str, remote: &str) -> Result<Vec<Gateway>, Error> {
    let mut found = Vec::new();
    let servers = Api::<GatewayServer>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    for gateway in servers.items {
        if gateway.metadata.deletion_timestamp.is_none() && serves(gateway.labels(), remote) {
            found.push(Gateway {
                describe: format!("GatewayServer {}", gateway.name_any()),
                endpoint: gateway.status.and_then(|s| s.internal_endpoint),
            });
        }
    }
    let clients = Api::<GatewayClient>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    for gateway in clients.items {
        if gateway.metadata.deletion_timestamp.is_none() && serves(gateway.labels(), remote) {
            found.push(Gateway {
                describe: format!("GatewayClient {}", gateway.name_any()),
                endpoint: gateway.status.and_then(|s| s.internal_endpoint),
            });
        }
    }
    Ok(found)
}

fn waiting(reason: &'static str, message: String) -> ConditionUpdate<'static> {
    ConditionUpdate {
        type_: ROUTES_READY,
        status: ConditionStatus::False,
        reason,
        message,
    }
}

async fn reconcile(cached: Arc<Configuration>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = cached
        .namespace()
        .ok_or_else(|| Error::NotNamespaced(cached.name_any()))?;
    // The watch cache can still hold a Configuration that was just deleted,
    // whose RouteConfiguration the garbage collector has already removed:
    // writing it again from the cache would leave routes with no peering.
    let live = Api::<Configuration>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&cached.name_any())
        .await?;
    let Some(config) = live.filter(|l| l.metadata.uid == cached.metadata.uid) else {
        return Ok(Action::await_change());
    };
    if config.metadata.deletion_timestamp.is_some() {
        // The RouteConfiguration is owned: it goes with the Configuration.
        return Ok(Action::await_change());
    }
    let remote = remote_cluster(&config);
    let routes_api = Api::<RouteConfiguration>::namespaced(ctx.client.clone(), &namespace);
    let vni = vni(&config, &ctx, &namespace).await?;
    let gateways = gateways(&ctx.client, &namespace, &remote).await?;
    let with_endpoint = gateways
        .iter()
        .find(|g| g.endpoint.as_ref().is_some_and(|e| !e.ips.is_empty()));

    let condition = match (&vni, with_endpoint) {
        (Err(message), _) => waiting("InvalidVni", message.clone()),
        (Ok(_), _) if gateways.is_empty() => {
            remove_routes(&routes_api, &remote).await?;
            waiting(
                "WaitingForGateway",
                format!(
                    "no GatewayServer or GatewayClient for {remote} in {namespace} (labelled {REMOTE_CLUSTER_ID}={remote}, or unlabelled): create one; the nodes' routes point at it"
                ),
            )
        }
        (Ok(_), None) => {
            let names: Vec<&str> = gateways.iter().map(|g| g.describe.as_str()).collect();
            waiting(
                "WaitingForGatewayEndpoint",
                format!(
                    "{} has no status.internalEndpoint yet: in a cluster it is the gateway pod's address once the pod runs; in the local simulation start strait-controller with --gateway-internal-address",
                    names.join(" and ")
                ),
            )
        }
        (Ok(vni), Some(gateway)) => {
            let ips = gateway
                .endpoint
                .as_ref()
                .map(|e| e.ips.clone())
                .unwrap_or_default();
            match node_routes(&config, &ips, *vni) {
                Ok(spec) => {
                    let owner = config
                        .controller_owner_ref(&())
                        .map(|r| vec![r])
                        .unwrap_or_default();
                    let object = json!({
                        "apiVersion": RouteConfiguration::api_version(&()),
                        "kind": "RouteConfiguration",
                        "metadata": {
                            "name": remote,
                            "labels": { REMOTE_CLUSTER_ID: remote },
                            "ownerReferences": owner,
                        },
                        "spec": serde_json::to_value(&spec)?,
                    });
                    routes_api
                        .patch(
                            &remote,
                            &PatchParams::apply(FIELD_MANAGER).force(),
                            &Patch::Apply(&object),
                        )
                        .await?;
                    // Deleted meanwhile: the garbage collector may have run
                    // before this write created the routes again.
                    let still = Api::<Configuration>::namespaced(ctx.client.clone(), &namespace)
                        .get_opt(&config.name_any())
                        .await?;
                    if still.is_none_or(|c| c.metadata.uid != config.metadata.uid) {
                        remove_routes(&routes_api, &remote).await?;
                        return Ok(Action::await_change());
                    }
                    let destinations: Vec<&str> = spec
                        .routes
                        .iter()
                        .flat_map(|r| r.destinations.iter().map(String::as_str))
                        .collect();
                    ConditionUpdate {
                        type_: ROUTES_READY,
                        status: ConditionStatus::True,
                        reason: "Routed",
                        message: format!(
                            "RouteConfiguration {remote}: {} to {} at {} on VNI {vni}",
                            destinations.join(", "),
                            gateway.describe,
                            ips.join(", ")
                        ),
                    }
                }
                Err(RenderError::NotRemapped) => waiting(
                    "WaitingForRemap",
                    "the remote CIDRs are not allocated yet (status.remote is empty): see the Ready condition and the peering's Networks".to_owned(),
                ),
                Err(e) => waiting("InvalidRoutes", e.to_string()),
            }
        }
    };
    let routed = condition.status == ConditionStatus::True;
    write_condition(&config, &ctx, &namespace, condition).await?;
    Ok(if routed {
        Action::await_change()
    } else {
        Action::requeue(WAITING_POLL)
    })
}

async fn remove_routes(api: &Api<RouteConfiguration>, name: &str) -> Result<(), Error> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            info!(routes = %name, "RouteConfiguration deleted");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes `RoutesReady` when it changed. Only that condition is applied:
/// the list merges by type, so the Configuration controller's `Ready` stays.
async fn write_condition(
    config: &Configuration,
    ctx: &Context,
    namespace: &str,
    condition: ConditionUpdate<'_>,
) -> Result<(), Error> {
    let existing = config
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let (conditions, changed) = owned_conditions(
        existing,
        [condition],
        config.metadata.generation,
        &Time(Timestamp::now()),
    );
    if !changed {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": Configuration::api_version(&()),
        "kind": "Configuration",
        "status": { "conditions": conditions },
    });
    Api::<Configuration>::namespaced(ctx.client.clone(), namespace)
        .patch_status(
            &config.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(())
}

/// A gateway kind whose status has an `internalEndpoint`.
pub trait GatewayWithEndpoint:
    Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    fn internal_endpoint(&self) -> Option<&InternalEndpoint>;
}

impl GatewayWithEndpoint for GatewayServer {
    fn internal_endpoint(&self) -> Option<&InternalEndpoint> {
        self.status.as_ref()?.internal_endpoint.as_ref()
    }
}

impl GatewayWithEndpoint for GatewayClient {
    fn internal_endpoint(&self) -> Option<&InternalEndpoint> {
        self.status.as_ref()?.internal_endpoint.as_ref()
    }
}

async fn run_endpoints<K: GatewayWithEndpoint>(context: Arc<Context>) {
    Controller::new(
        Api::<K>::all(context.client.clone()),
        watcher::Config::default(),
    )
    .run(
        publish_endpoint::<K>,
        |_, _, _| Action::requeue(Duration::from_secs(2)),
        context,
    )
    .for_each(|result| async move {
        if let Err(error) = result {
            warn!(%error, kind = %K::kind(&()), "gateway internal endpoint not published");
        }
    })
    .await;
}

/// At most one address per family, IPv4 first.
fn one_per_family(addresses: impl IntoIterator<Item = IpAddr>) -> Vec<String> {
    let addresses: Vec<IpAddr> = addresses.into_iter().collect();
    [true, false]
        .into_iter()
        .filter_map(|v4| addresses.iter().find(|a| a.is_ipv4() == v4))
        .map(ToString::to_string)
        .collect()
}

/// Where a running pod sits: its addresses and node.
pub fn pod_endpoint(pod: &Pod) -> Option<InternalEndpoint> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let listed = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .chain(status.pod_ip.as_deref());
    let ips = one_per_family(listed.filter_map(|a| a.parse().ok()));
    if ips.is_empty() {
        return None;
    }
    Some(InternalEndpoint {
        ips,
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
    })
}

async fn publish_endpoint<K: GatewayWithEndpoint>(
    gateway: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    if gateway.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = gateway
        .namespace()
        .ok_or_else(|| Error::NotNamespaced(gateway.name_any()))?;
    let (wanted, action) = match &ctx.settings.endpoints {
        EndpointSource::Fixed(addresses) if addresses.is_empty() => {
            return Ok(Action::await_change())
        }
        EndpointSource::Fixed(addresses) => (
            Some(InternalEndpoint {
                ips: one_per_family(addresses.iter().copied()),
                node: None,
            }),
            Action::await_change(),
        ),
        EndpointSource::GatewayPods {
            namespace: pod_namespace,
        } => {
            let pods = Api::<Pod>::namespaced(ctx.client.clone(), pod_namespace)
                .list(
                    &ListParams::default()
                        .labels(&format!("{GATEWAY_POD_LABEL}={}", gateway.name_any())),
                )
                .await?;
            // A gateway whose pod is being replaced keeps its last endpoint
            // until the new pod runs: routes do not flap meanwhile.
            (
                pods.items.iter().find_map(pod_endpoint),
                Action::requeue(POD_POLL),
            )
        }
    };
    let Some(wanted) = wanted else {
        return Ok(action);
    };
    if gateway.internal_endpoint() == Some(&wanted) {
        return Ok(action);
    }
    info!(%namespace, gateway = %gateway.name_any(), ips = ?wanted.ips, "publishing the gateway's internal endpoint");
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": { "internalEndpoint": wanted },
    });
    Api::<K>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(
            &gateway.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(action)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodIP, PodSpec, PodStatus};

    use super::*;

    #[test]
    fn vnis_skip_the_node_vni_and_those_in_use() {
        let used = BTreeSet::from([4096, 4098]);
        assert_eq!(pick_vni(&used, 4097, 4096), Some(4099));
        assert_eq!(pick_vni(&BTreeSet::new(), 1, 4096), Some(4096));
        assert_eq!(pick_vni(&BTreeSet::new(), 1, 0), Some(2));
        let full: BTreeSet<u32> = (MAX_VNI - 1..=MAX_VNI).collect();
        assert_eq!(pick_vni(&full, 1, MAX_VNI - 1), None);
    }

    #[test]
    fn a_running_pod_gives_its_addresses_one_per_family_and_its_node() {
        let pod = |phase: &str| Pod {
            spec: Some(PodSpec {
                node_name: Some("worker-2".into()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                pod_ip: Some("10.244.2.7".into()),
                pod_ips: Some(vec![
                    PodIP {
                        ip: "fd00:10:244:2::7".into(),
                    },
                    PodIP {
                        ip: "10.244.2.7".into(),
                    },
                    PodIP {
                        ip: "fd00:10:244:2::8".into(),
                    },
                ]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        assert_eq!(
            pod_endpoint(&pod("Running")),
            Some(InternalEndpoint {
                ips: vec!["10.244.2.7".into(), "fd00:10:244:2::7".into()],
                node: Some("worker-2".into()),
            })
        );
        assert_eq!(pod_endpoint(&pod("Pending")), None);
    }
}
