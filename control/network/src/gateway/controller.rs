//! Reconciles GatewayServers and GatewayClients (one generic reconciler,
//! [`GatewayKind`] says what differs between the two).

use std::{
    collections::BTreeMap,
    fmt::Debug,
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures::StreamExt as _;
use ipnet::IpNet;
use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams},
    runtime::{
        controller::{Action, Controller},
        finalizer::{finalizer, Event},
        reflector::ObjectRef,
        watcher, WatchStreamExt as _,
    },
    Api, Client, Resource, ResourceExt as _,
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::json;
use strait_api::{
    condition::{set_condition, ConditionStatus, ConditionUpdate},
    names::{finalizer::GATEWAY, label::REMOTE_CLUSTER_ID, SYSTEM_NAMESPACE},
    networking::{
        ClusterNetwork, Configuration, Connection, ConnectionState, ConnectionStatus,
        ConnectionType, GatewayClient, GatewayClientSpec, GatewayServer, GatewayServerSpec,
        PublicEndpoint, PublicKey,
    },
    Condition, ObjectReference, SecretReference,
};
use strait_gateway::{config::TunnelConfig, status::GatewayStatus, GatewayConfig};
use tracing::{info, warn};

use super::{
    in_cluster,
    local::{LocalError, LocalGateways, NatAgentSpec, NatAgents, ProcessState},
    local_key_name, nat_host,
    readiness::{self, GatewayView},
    remote_key_name,
    template::{self, TemplateError},
    DEFAULT_TUNNEL_CIDR, TUNNEL_CIDR_ANNOTATION,
};
use crate::ipam::parse_cidr;

/// Field manager of the objects this controller writes.
pub const FIELD_MANAGER: &str = "strait-network-gateway";
const READY: &str = "Ready";
/// Condition: the gateway's NAT agent runs (it remaps the peer's CIDRs on
/// the tunnel interface, following the peering's NatConfigurations).
pub const NAT_READY: &str = "NatReady";
/// A status file older than this means the gateway stopped refreshing it.
const STATUS_STALE_AFTER: Duration = Duration::from_secs(3);
/// Local gateways are looked at this often (their status is a file).
const LOCAL_POLL: Duration = Duration::from_secs(1);
const CLUSTER_POLL: Duration = Duration::from_secs(15);
/// How long a reconcile waits for a starting gateway's public key.
const KEY_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("{0} has no namespace")]
    NotNamespaced(String),
    #[error(transparent)]
    Local(#[from] LocalError),
    #[error("serializing: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// How gateways run.
pub enum GatewayMode {
    /// Child processes of the controller (local simulation).
    Local {
        gateways: Box<LocalGateways>,
        /// Address a GatewayServer is reachable at from the peer, published
        /// in its `status.endpoint` (the address of the gateways' netns).
        advertise_address: Option<String>,
    },
    /// Rendered from the chart's template ConfigMaps, which live in
    /// `release_namespace` unless a `spec.templateRef` says otherwise.
    Cluster { release_namespace: String },
}

impl GatewayMode {
    /// Local simulation: runs a NAT agent next to every gateway (in a
    /// cluster the gateway template's `nat` container does).
    pub fn with_nat_agents(self, nat: NatAgents) -> Self {
        match self {
            GatewayMode::Local {
                gateways,
                advertise_address,
            } => GatewayMode::Local {
                gateways: Box::new(gateways.with_nat_agents(nat)),
                advertise_address,
            },
            cluster => cluster,
        }
    }
}

pub struct Settings {
    pub mode: GatewayMode,
    /// This cluster's ID, for the `${REMOTE_CLUSTER_ID}`-less fallbacks in messages.
    pub cluster_id: Option<String>,
}

impl Default for GatewayMode {
    fn default() -> Self {
        GatewayMode::Cluster {
            release_namespace: SYSTEM_NAMESPACE.to_owned(),
        }
    }
}

struct Context {
    client: Client,
    settings: Settings,
}

/// What differs between the two kinds of gateway.
pub trait GatewayKind:
    Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const ROLE: ConnectionType;
    const DEFAULT_TEMPLATE: &'static str;
    fn mtu(&self) -> i32;
    fn template_ref(&self) -> Option<&ObjectReference>;
    fn secret_ref(&self) -> Option<&SecretReference>;
    /// Puts this gateway's spec into the gateway's configuration.
    fn configure(&self, config: &mut GatewayConfig);
    /// The kind-specific template placeholders.
    fn placeholders(&self, values: &mut BTreeMap<&'static str, String>);
    /// The status this controller writes, as a JSON `status` object.
    fn status(&self, conditions: Vec<Condition>, advertise: Option<&str>) -> serde_json::Value;
    fn conditions(&self) -> Vec<Condition>;
}

impl GatewayKind for GatewayServer {
    const ROLE: ConnectionType = ConnectionType::Server;
    const DEFAULT_TEMPLATE: &'static str = template::SERVER_TEMPLATE;
    fn mtu(&self) -> i32 {
        self.spec.mtu
    }
    fn template_ref(&self) -> Option<&ObjectReference> {
        self.spec.template_ref.as_ref()
    }
    fn secret_ref(&self) -> Option<&SecretReference> {
        self.spec.secret_ref.as_ref()
    }
    fn configure(&self, config: &mut GatewayConfig) {
        config.server = Some(GatewayServerSpec {
            // The key comes from `privateKeyFile` or is generated; the
            // template is the controller's business, not the gateway's.
            secret_ref: None,
            template_ref: None,
            ..self.spec.clone()
        });
    }
    fn placeholders(&self, values: &mut BTreeMap<&'static str, String>) {
        values.insert("PORT", self.spec.endpoint.port.to_string());
    }
    fn status(&self, conditions: Vec<Condition>, advertise: Option<&str>) -> serde_json::Value {
        let endpoint = advertise.map(|address| PublicEndpoint {
            addresses: vec![address.to_owned()],
            port: self.spec.endpoint.port,
        });
        json!({ "endpoint": endpoint, "conditions": conditions })
    }
    fn conditions(&self) -> Vec<Condition> {
        self.status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default()
    }
}

impl GatewayKind for GatewayClient {
    const ROLE: ConnectionType = ConnectionType::Client;
    const DEFAULT_TEMPLATE: &'static str = template::CLIENT_TEMPLATE;
    fn mtu(&self) -> i32 {
        self.spec.mtu
    }
    fn template_ref(&self) -> Option<&ObjectReference> {
        self.spec.template_ref.as_ref()
    }
    fn secret_ref(&self) -> Option<&SecretReference> {
        self.spec.secret_ref.as_ref()
    }
    fn configure(&self, config: &mut GatewayConfig) {
        config.client = Some(GatewayClientSpec {
            secret_ref: None,
            template_ref: None,
            ..self.spec.clone()
        });
    }
    fn placeholders(&self, values: &mut BTreeMap<&'static str, String>) {
        let endpoint = &self.spec.endpoint;
        let host = endpoint.addresses.first().cloned().unwrap_or_default();
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        values.insert("ENDPOINT", format!("{host}:{}", endpoint.port));
    }
    fn status(&self, conditions: Vec<Condition>, _: Option<&str>) -> serde_json::Value {
        json!({ "conditions": conditions })
    }
    fn conditions(&self) -> Vec<Condition> {
        self.status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default()
    }
}

/// Runs both gateway controllers until the API goes away.
pub async fn run(client: Client, settings: Settings) {
    let context = Arc::new(Context { client, settings });
    tokio::join!(
        run_kind::<GatewayServer>(context.clone()),
        run_kind::<GatewayClient>(context.clone()),
        super::key_exchange::run(context.client.clone(), context.settings.cluster_id.clone())
    );
}

async fn run_kind<K: GatewayKind>(context: Arc<Context>) {
    let client = context.client.clone();
    // The peer's key arriving is the moment to (re)configure the gateway.
    let peer_keys = Api::<PublicKey>::all(client.clone());
    // A Configuration's status.remote decides what the tunnel routes; any
    // change to one looks at every gateway again (they are few).
    let configurations = watcher(
        Api::<Configuration>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|_| ());
    Controller::new(Api::<K>::all(client), watcher::Config::default())
        .watches(peer_keys, watcher::Config::default(), |key| {
            let gateway = key.name_any().strip_prefix("remote-")?.to_owned();
            Some(ObjectRef::<K>::new(&gateway).within(&key.namespace()?))
        })
        .reconcile_all_on(configurations)
        .run(reconcile::<K>, error_policy::<K>, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, kind = %K::kind(&()), "gateway reconcile failed");
            }
        })
        .await;
}

fn error_policy<K: GatewayKind>(_: Arc<K>, error: &Error, _: Arc<Context>) -> Action {
    warn!(%error, "gateway reconcile error");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile<K: GatewayKind>(gateway: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = gateway
        .namespace()
        .ok_or_else(|| Error::NotNamespaced(gateway.name_any()))?;
    let api = Api::<K>::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, GATEWAY, gateway, |event| async {
        match event {
            Event::Apply(gateway) => apply(gateway.as_ref(), &ctx).await,
            Event::Cleanup(gateway) => cleanup(gateway.as_ref(), &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// `GatewayServer/name` for messages.
fn describe<K: GatewayKind>(gateway: &K) -> String {
    format!("{}/{}", K::kind(&()), gateway.name_any())
}

async fn apply<K: GatewayKind>(gateway: &K, ctx: &Context) -> Result<Action, Error> {
    let namespace = gateway.namespace().unwrap_or_default();
    let name = gateway.name_any();
    let remote = gateway.labels().get(REMOTE_CLUSTER_ID).cloned();
    let (ready, view, action) = match &ctx.settings.mode {
        GatewayMode::Local { gateways, .. } => {
            run_locally(gateway, gateways, ctx, &namespace, &name).await?
        }
        GatewayMode::Cluster { release_namespace } => {
            deploy(gateway, ctx, release_namespace, &namespace, &name).await?
        }
    };
    let nat = match &ctx.settings.mode {
        GatewayMode::Local { gateways, .. } => {
            local_nat(gateway, gateways, &namespace, &name).await?
        }
        GatewayMode::Cluster { release_namespace } => Some(
            in_cluster::nat_condition(&ctx.client, release_namespace, &name, &nat_host(&name))
                .await?,
        ),
    };
    let advertise = match &ctx.settings.mode {
        GatewayMode::Local {
            advertise_address, ..
        } => advertise_address.as_deref(),
        GatewayMode::Cluster { .. } => None,
    };
    write_status(gateway, ctx, &namespace, [Some(ready), nat], advertise).await?;
    if let Some(remote) = remote {
        readiness::publish(&ctx.client, &remote, readiness::network_ready(&view)).await?;
    }
    Ok(action)
}

async fn write_status<K: GatewayKind>(
    gateway: &K,
    ctx: &Context,
    namespace: &str,
    updates: [Option<ConditionUpdate<'_>>; 2],
    advertise: Option<&str>,
) -> Result<(), Error> {
    let mut conditions = gateway.conditions();
    let now = Time(Timestamp::now());
    let mut changed = false;
    for update in updates.into_iter().flatten() {
        changed |= set_condition(&mut conditions, update, gateway.meta().generation, &now);
    }
    let mut status = gateway.status(conditions, advertise);
    let current = serde_json::to_value(gateway)?;
    if !changed
        && current
            .get("status")
            .is_some_and(|s| same_endpoint(s, &status))
    {
        return Ok(());
    }
    if let Some(map) = status.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    Api::<K>::namespaced(ctx.client.clone(), namespace)
        .patch_status(
            &gateway.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    Ok(())
}

fn same_endpoint(current: &serde_json::Value, wanted: &serde_json::Value) -> bool {
    current.get("endpoint") == wanted.get("endpoint").filter(|v| !v.is_null())
}

/// The peer's CIDRs the tunnel carries, from every Configuration of the
/// gateway's namespace (of the same remote cluster, when the gateway is
/// labelled with one); `Err` is a reason and message for the Ready condition.
async fn tunnel_cidrs<K: GatewayKind>(
    gateway: &K,
    ctx: &Context,
    namespace: &str,
) -> Result<Result<TunnelCidrs, (&'static str, String)>, Error> {
    let mut params = ListParams::default();
    if let Some(remote) = gateway.labels().get(REMOTE_CLUSTER_ID) {
        params = params.labels(&format!("{REMOTE_CLUSTER_ID}={remote}"));
    }
    let configurations = Api::<Configuration>::namespaced(ctx.client.clone(), namespace)
        .list(&params)
        .await?;
    Ok(TunnelCidrs::from_configurations(&configurations.items))
}

/// What the tunnel carries for the peer. Inside the tunnel packets carry
/// both clusters' real addresses (each gateway's NAT translates the peer's
/// remapped ranges on the tunnel interface), so the two lists differ when
/// the peer's CIDRs overlap this cluster's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TunnelCidrs {
    /// Accepted from the peer: its real pod and external CIDRs.
    pub allowed: Vec<String>,
    /// Routed into the tunnel: the peer's CIDRs as this cluster addresses
    /// them (the Configuration's `status.remote`).
    pub routes: Vec<String>,
}

impl TunnelCidrs {
    /// Reads the Configurations; refuses to route anything while one has
    /// no `status.remote` yet (the peer's real ranges might be this
    /// cluster's own) or when a route would overlap a local range.
    pub fn from_configurations(
        configurations: &[Configuration],
    ) -> Result<TunnelCidrs, (&'static str, String)> {
        let ranges = |network: &ClusterNetwork| -> Vec<IpNet> {
            network
                .cidr
                .pod
                .iter()
                .chain(&network.cidr.external)
                .filter_map(|c| parse_cidr(c).ok())
                .collect()
        };
        let mut cidrs = TunnelCidrs::default();
        for configuration in configurations {
            let name = configuration.name_any();
            let Some(seen) = configuration
                .status
                .as_ref()
                .and_then(|s| s.remote.as_ref())
            else {
                return Err((
                    "WaitingForRemap",
                    format!(
                        "Configuration {name} has no status.remote yet: the network module has \
                         not decided how this cluster addresses the peer's CIDRs (remapped when \
                         they overlap local ones); see that Configuration's conditions"
                    ),
                ));
            };
            let routes = ranges(seen);
            let local = configuration
                .spec
                .local
                .as_ref()
                .map(ranges)
                .unwrap_or_default();
            let overlap = routes.iter().find_map(|r| {
                local
                    .iter()
                    .find(|l| l.contains(&r.network()) || r.contains(&l.network()))
                    .map(|l| (r, l))
            });
            if let Some((route, local)) = overlap {
                return Err((
                    "RouteOverlapsLocal",
                    format!(
                        "Configuration {name}: the peer's range {route}, as this cluster \
                         addresses it, overlaps this cluster's own {local}; routing it into the \
                         tunnel would cut the gateway off from local pods, so the gateway is not \
                         started. Remap it (status.remote) or fix spec.local"
                    ),
                ));
            }
            cidrs.routes.extend(routes.iter().map(ToString::to_string));
            cidrs.allowed.extend(
                ranges(&configuration.spec.remote)
                    .iter()
                    .map(ToString::to_string),
            );
        }
        for list in [&mut cidrs.allowed, &mut cidrs.routes] {
            list.sort();
            list.dedup();
        }
        Ok(cidrs)
    }
}

/// This end's and the peer's tunnel addresses, from the tunnel CIDR.
pub fn tunnel_addresses(cidr: &str, role: ConnectionType) -> Result<(String, IpAddr), String> {
    let net: IpNet = cidr
        .parse()
        .map_err(|_| format!("{TUNNEL_CIDR_ANNOTATION} {cidr:?} is not a CIDR"))?;
    let host_bits = net.max_prefix_len() - net.prefix_len();
    if host_bits < 1 {
        return Err(format!(
            "{TUNNEL_CIDR_ANNOTATION} {cidr} has room for one address; the tunnel needs two"
        ));
    }
    // Point-to-point prefixes use both addresses; larger ones skip the
    // network address.
    let first = if host_bits == 1 { 0 } else { 1 };
    let nth = |n: u128| -> IpAddr {
        match net.network() {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) + n as u32).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) + n).into()),
        }
    };
    let (mine, peer) = match role {
        ConnectionType::Server => (nth(first), nth(first + 1)),
        ConnectionType::Client => (nth(first + 1), nth(first)),
    };
    Ok((format!("{mine}/{}", net.prefix_len()), peer))
}

/// Linux interface name for a gateway: at most 15 bytes, stable, distinct
/// per namespace and name.
pub fn interface_name(namespace: &str, name: &str) -> String {
    // FNV-1a: stable across runs and platforms, unlike the std hasher.
    let hash = format!("{namespace}/{name}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("stgw{:011x}", hash & 0xfff_ffff_ffff)
}

/// The gateway's `--config`, from its CR and the peering's Configurations.
/// `peer_key_file` and `public_key_file` are where the gateway finds the
/// peer's key and writes its own, as it sees them.
pub fn gateway_config<K: GatewayKind>(
    gateway: &K,
    peer_key_file: &std::path::Path,
    public_key_file: &std::path::Path,
    cidrs: TunnelCidrs,
) -> Result<GatewayConfig, String> {
    let namespace = gateway.namespace().unwrap_or_default();
    let cidr = gateway
        .annotations()
        .get(TUNNEL_CIDR_ANNOTATION)
        .map(String::as_str)
        .unwrap_or(DEFAULT_TUNNEL_CIDR);
    let (address, peer) = tunnel_addresses(cidr, K::ROLE)?;
    let mut config = GatewayConfig {
        interface: interface_name(&namespace, &gateway.name_any()),
        server: None,
        client: None,
        peer_public_key: None,
        peer_public_key_file: Some(peer_key_file.to_owned()),
        private_key_file: None,
        public_key_file: Some(public_key_file.to_owned()),
        tunnel: TunnelConfig {
            addresses: vec![address],
            peer_addresses: vec![peer],
            allowed_ips: cidrs.allowed,
            routes: Some(cidrs.routes),
            persistent_keepalive: None,
        },
    };
    gateway.configure(&mut config);
    config.plan().map_err(|e| e.to_string())?;
    Ok(config)
}

type Outcome = (ConditionUpdate<'static>, GatewayView, Action);

async fn run_locally<K: GatewayKind>(
    gateway: &K,
    gateways: &LocalGateways,
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Outcome, Error> {
    let peer_key = Api::<PublicKey>::namespaced(ctx.client.clone(), namespace)
        .get_opt(&remote_key_name(name))
        .await?;
    let mut view = GatewayView {
        gateway: describe(gateway),
        not_ready: None,
        peer_key_present: Some(peer_key.is_some()),
        peer_key_name: remote_key_name(name),
        connection: None,
        up_for: None,
        mtu: None,
    };
    let files = gateways.files(namespace, name);
    let cidrs = match tunnel_cidrs(gateway, ctx, namespace).await? {
        Ok(cidrs) => cidrs,
        Err((reason, message)) => {
            view.not_ready = Some(message.clone());
            return Ok((
                not_ready(reason, message),
                view,
                Action::requeue(LOCAL_POLL),
            ));
        }
    };
    let config = match gateway_config(gateway, &files.peer_key, &files.public_key, cidrs) {
        Ok(config) => config,
        Err(message) => {
            view.not_ready = Some(message.clone());
            let ready = not_ready("InvalidSpec", message);
            return Ok((ready, view, Action::await_change()));
        }
    };
    let mut config = config;
    if let Some(secret) = gateway.secret_ref() {
        match private_key(ctx, secret, namespace).await? {
            Ok(key) => {
                config.private_key_file = Some(gateways.write_private_key(namespace, name, &key)?);
            }
            Err(message) => {
                view.not_ready = Some(message.clone());
                let ready = not_ready("PrivateKeyNotFound", message);
                return Ok((ready, view, Action::requeue(Duration::from_secs(5))));
            }
        }
    }
    if let Some(key) = &peer_key {
        gateways.write_peer_key(namespace, name, &key.spec.public_key)?;
    }
    let yaml = serde_norway::to_string(&config)
        .map_err(|e| Error::Serialize(serde::ser::Error::custom(format!("gateway config: {e}"))))?;
    gateways.ensure(namespace, name, &yaml)?;

    let process = gateways.state(namespace, name).unwrap_or_default();
    view.up_for = process
        .started
        .filter(|_| process.running())
        .and_then(|s| SystemTime::now().duration_since(s).ok());
    if !process.running() {
        view.not_ready = Some(match &process.last_exit {
            Some(exit) => format!("the gateway process {exit}; restarting it"),
            None => "the gateway process is starting".to_owned(),
        });
    }
    // The gateway writes its key before waiting for the peer's, so ours is
    // published even while the peer's is missing (each side needs the
    // other's). A gateway that just started gets a moment to write it: the
    // peer cannot start its side before it has our key.
    let deadline = tokio::time::Instant::now() + KEY_WAIT;
    while process.running() && !files.public_key.exists() && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let published = match strait_gateway::PublicKey::from_file(&files.public_key) {
        Ok(key) => {
            publish_key(gateway, ctx, namespace, name, &key.to_string()).await?;
            true
        }
        Err(_) => false,
    };
    let connection = connection_status(&files.status, &process, peer_key.is_some());
    view.mtu = reported_mtu(gateway, &files.status);
    write_connection(gateway, ctx, namespace, name, &connection).await?;
    view.connection = Some(connection);
    let ready = match (&view.not_ready, published) {
        (Some(why), _) => not_ready("GatewayNotRunning", why.clone()),
        (None, false) => not_ready(
            "WaitingForKey",
            "the gateway runs but has not written its public key yet".to_owned(),
        ),
        (None, true) => ConditionUpdate {
            type_: READY,
            status: ConditionStatus::True,
            reason: "Running",
            message: format!(
                "gateway process {} running; public key in PublicKey {}",
                process.pid.unwrap_or_default(),
                local_key_name(name)
            ),
        },
    };
    Ok((ready, view, Action::requeue(LOCAL_POLL)))
}

/// Starts (or restarts, for a new gateway process) the gateway's NAT agent
/// once the gateway's interface is up, and says how it is doing; `None`
/// when this controller runs no NAT agents.
async fn local_nat<K: GatewayKind>(
    gateway: &K,
    gateways: &LocalGateways,
    namespace: &str,
    name: &str,
) -> Result<Option<ConditionUpdate<'static>>, Error> {
    let Some(agents) = gateways.nat_agents() else {
        return Ok(None);
    };
    let interface = interface_name(namespace, name);
    let host = nat_host(name);
    let selector = nat_selector(gateway);
    let files = gateways.files(namespace, name);
    let process = gateways.state(namespace, name).unwrap_or_default();
    // The gateway writes its status file only once its interface exists
    // (and each new gateway process starts without one).
    let interface_up = GatewayStatus::read(&files.status).is_ok();
    if let (true, Some(gateway_pid)) = (interface_up, process.pid) {
        let spec = NatAgentSpec {
            interface: interface.clone(),
            namespace: namespace.to_owned(),
            selector: selector.clone(),
            host: host.clone(),
            gateway_pid,
        };
        gateways.ensure_nat(namespace, name, &spec).await?;
    }
    Ok(Some(nat_condition(
        agents,
        gateways.nat_state(namespace, name).as_ref(),
        &interface,
        &host,
        &files.nat_log,
    )))
}

/// The label selector of the NatConfigurations of the gateway's peering
/// (none when the gateway has no remote cluster label: then every one of
/// its namespace).
fn nat_selector<K: GatewayKind>(gateway: &K) -> Option<String> {
    gateway
        .labels()
        .get(REMOTE_CLUSTER_ID)
        .map(|remote| format!("{REMOTE_CLUSTER_ID}={remote}"))
}

/// The NatReady condition of a local gateway from its NAT agent's supervisor.
fn nat_condition(
    agents: &NatAgents,
    state: Option<&ProcessState>,
    interface: &str,
    host: &str,
    log: &std::path::Path,
) -> ConditionUpdate<'static> {
    let Some(state) = state else {
        return ConditionUpdate {
            type_: NAT_READY,
            status: ConditionStatus::False,
            reason: "WaitingForGateway",
            message: format!(
                "the NAT agent starts once the gateway process runs and its interface {interface} is up"
            ),
        };
    };
    let restarts = match (&state.last_exit, state.crashes) {
        (Some(exit), n) if n > 0 => format!("; restarted {n} times, last time it {exit}"),
        _ => String::new(),
    };
    match state.pid {
        Some(pid) => ConditionUpdate {
            type_: NAT_READY,
            status: ConditionStatus::True,
            reason: "Running",
            message: format!(
                "NAT agent {} nat run (pid {pid}) attached to {interface}, pins in {}; it reports \
                 as host {host} in the NatConfigurations' status.hosts{restarts}",
                agents.binary.display(),
                agents.pin_root.join(interface).display(),
            ),
        },
        None => ConditionUpdate {
            type_: NAT_READY,
            status: ConditionStatus::False,
            reason: "NatAgentNotRunning",
            message: format!(
                "the NAT agent {}; restarting it (its log: {}): until it runs, the peer's remapped \
                 addresses are not translated on {interface}",
                state
                    .last_exit
                    .as_deref()
                    .unwrap_or("is not running"),
                log.display()
            ),
        },
    }
}

/// The spec's MTU and the one the gateway reports using, from a fresh status file.
fn reported_mtu<K: GatewayKind>(
    gateway: &K,
    status_file: &std::path::Path,
) -> Option<readiness::MtuView> {
    let configured = u32::try_from(gateway.mtu()).ok()?;
    let fresh = std::fs::metadata(status_file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age <= STATUS_STALE_AFTER);
    let status = GatewayStatus::read(status_file).ok().filter(|_| fresh)?;
    // Full-size probes count only while small ones get through: otherwise
    // the tunnel is down, not narrow.
    let full_size_unanswered = if status.probes_failing == 0 {
        status.full_size_probes.consecutive_failures
    } else {
        0
    };
    Some(readiness::MtuView {
        configured,
        in_use: status.mtu,
        fitted: status.underlay.is_some(),
        peer_configured: status.peer_mtu,
        full_size_unanswered,
    })
}

/// Key of `spec.secretRef`'s Secret holding the private key (base64, as
/// `wg genkey` prints it).
pub const PRIVATE_KEY_SECRET_KEY: &str = "privateKey";

/// The private key from the gateway's Secret, or why it cannot be used.
async fn private_key(
    ctx: &Context,
    secret: &SecretReference,
    namespace: &str,
) -> Result<Result<String, String>, Error> {
    let secret_namespace = secret.namespace.as_deref().unwrap_or(namespace);
    let found = Api::<Secret>::namespaced(ctx.client.clone(), secret_namespace)
        .get_opt(&secret.name)
        .await?;
    let key = found
        .as_ref()
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get(PRIVATE_KEY_SECRET_KEY))
        .and_then(|v| String::from_utf8(v.0.clone()).ok());
    Ok(key.ok_or_else(|| {
        format!(
            "Secret {secret_namespace}/{} has no key {PRIVATE_KEY_SECRET_KEY} (a WireGuard private key as `wg genkey` prints it)",
            secret.name
        )
    }))
}

fn not_ready(reason: &'static str, message: String) -> ConditionUpdate<'static> {
    ConditionUpdate {
        type_: READY,
        status: ConditionStatus::False,
        reason,
        message,
    }
}

/// The Connection's status from the gateway's status file and the
/// supervisor: a dead or silent gateway is not reported as connected.
pub fn connection_status(
    status_file: &std::path::Path,
    process: &ProcessState,
    peer_key_present: bool,
) -> ConnectionStatus {
    let down = |message: String| ConnectionStatus {
        value: ConnectionState::Error,
        latency: None,
        last_handshake_time: None,
        message,
    };
    if !process.running() {
        return down(match &process.last_exit {
            Some(exit) => format!("the gateway process {exit}; restarting it"),
            None => "the gateway process is not running".to_owned(),
        });
    }
    let restarts = match (&process.last_exit, process.crashes) {
        (Some(exit), n) if n > 0 => format!(" (restarted {n} times; last time it {exit})"),
        _ => String::new(),
    };
    let age = std::fs::metadata(status_file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok());
    match (GatewayStatus::read(status_file), age) {
        (Ok(status), Some(age)) if age <= STATUS_STALE_AFTER => {
            let mut connection = status.connection;
            let traffic = format!("sent {} B, received {} B", status.tx_bytes, status.rx_bytes);
            connection.message = [connection.message.as_str(), traffic.as_str()]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("; ")
                + &restarts;
            connection
        }
        (Ok(_), Some(age)) => down(format!(
            "the gateway has not refreshed its status for {}s{restarts}",
            age.as_secs()
        )),
        _ => ConnectionStatus {
            value: ConnectionState::Connecting,
            latency: None,
            last_handshake_time: None,
            message: if peer_key_present {
                format!("the gateway is starting{restarts}")
            } else {
                format!("waiting for the peer's public key{restarts}")
            },
        },
    }
}

fn owner<K: GatewayKind>(gateway: &K) -> Vec<serde_json::Value> {
    gateway
        .controller_owner_ref(&())
        .and_then(|r| serde_json::to_value(r).ok())
        .into_iter()
        .collect()
}

fn labels<K: GatewayKind>(gateway: &K) -> serde_json::Value {
    match gateway.labels().get(REMOTE_CLUSTER_ID) {
        Some(remote) => json!({ REMOTE_CLUSTER_ID: remote }),
        None => json!({}),
    }
}

async fn publish_key<K: GatewayKind>(
    gateway: &K,
    ctx: &Context,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<(), Error> {
    let api = Api::<PublicKey>::namespaced(ctx.client.clone(), namespace);
    let key_name = local_key_name(name);
    if let Some(existing) = api.get_opt(&key_name).await? {
        if existing.spec.public_key == key {
            return Ok(());
        }
    }
    info!(%namespace, gateway = %name, "publishing the gateway's public key");
    let object = json!({
        "apiVersion": PublicKey::api_version(&()),
        "kind": "PublicKey",
        "metadata": { "name": key_name, "labels": labels(gateway), "ownerReferences": owner(gateway) },
        "spec": { "publicKey": key },
    });
    api.patch(
        &key_name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await?;
    Ok(())
}

async fn write_connection<K: GatewayKind>(
    gateway: &K,
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &ConnectionStatus,
) -> Result<(), Error> {
    let api = Api::<Connection>::namespaced(ctx.client.clone(), namespace);
    let existing = api.get_opt(name).await?;
    if existing.is_none() {
        let object = json!({
            "apiVersion": Connection::api_version(&()),
            "kind": "Connection",
            "metadata": { "name": name, "labels": labels(gateway), "ownerReferences": owner(gateway) },
            "spec": {
                "type": K::ROLE,
                "gatewayRef": {
                    "apiVersion": K::api_version(&()),
                    "kind": K::kind(&()),
                    "name": name,
                    "namespace": namespace,
                },
            },
        });
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await?;
    }
    if existing.as_ref().and_then(|c| c.status.as_ref()) == Some(status) {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": Connection::api_version(&()),
        "kind": "Connection",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(())
}

/// The template's values for this gateway (`${NAME}` → `values["NAME"]`).
pub fn placeholders<K: GatewayKind>(
    gateway: &K,
    namespace: &str,
    name: &str,
) -> BTreeMap<&'static str, String> {
    let mut values = BTreeMap::from([
        ("NAME", name.to_owned()),
        ("NAMESPACE", namespace.to_owned()),
        (
            "REMOTE_CLUSTER_ID",
            gateway
                .labels()
                .get(REMOTE_CLUSTER_ID)
                .cloned()
                .unwrap_or_else(|| "unknown".to_owned()),
        ),
        ("MTU", gateway.mtu().to_string()),
        ("CONFIG_MAP", in_cluster::config_map_name(name)),
        ("KEY_SECRET", key_secret_name(gateway, name)),
        ("INTERFACE", interface_name(namespace, name)),
        ("NAT_SELECTOR", nat_selector(gateway).unwrap_or_default()),
    ]);
    gateway.placeholders(&mut values);
    values
}

/// Renders the gateway's template; errors are for a person.
async fn rendered<K: GatewayKind>(
    gateway: &K,
    ctx: &Context,
    release_namespace: &str,
    namespace: &str,
    name: &str,
) -> Result<Result<Vec<template::Rendered>, (&'static str, String)>, Error> {
    let (cm_namespace, cm_name) = match gateway.template_ref() {
        Some(r) => (
            r.namespace
                .clone()
                .unwrap_or_else(|| release_namespace.to_owned()),
            r.name.clone(),
        ),
        None => (release_namespace.to_owned(), K::DEFAULT_TEMPLATE.to_owned()),
    };
    let Some(cm) = Api::<ConfigMap>::namespaced(ctx.client.clone(), &cm_namespace)
        .get_opt(&cm_name)
        .await?
    else {
        return Ok(Err((
            "TemplateNotFound",
            format!("ConfigMap {cm_namespace}/{cm_name} not found: install the chart with network.enabled or fix spec.templateRef"),
        )));
    };
    let Some(text) = cm.data.as_ref().and_then(|d| d.get(template::TEMPLATE_KEY)) else {
        return Ok(Err((
            "InvalidTemplate",
            format!(
                "ConfigMap {cm_namespace}/{cm_name} has no key {}",
                template::TEMPLATE_KEY
            ),
        )));
    };
    Ok(
        template::render(text, &placeholders(gateway, namespace, name)).map_err(
            |e: TemplateError| {
                (
                    "InvalidTemplate",
                    format!("ConfigMap {cm_namespace}/{cm_name}: {e}"),
                )
            },
        ),
    )
}

fn dynamic_api(
    ctx: &Context,
    object: &template::Rendered,
    fallback_namespace: &str,
) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&object.gvk);
    let namespace = object.namespace.as_deref().unwrap_or(fallback_namespace);
    Api::namespaced_with(ctx.client.clone(), namespace, &resource)
}

/// The Secret the gateway pod mounts its private key from: the CR's, or the
/// one the controller generates.
fn key_secret_name<K: GatewayKind>(gateway: &K, name: &str) -> String {
    match gateway.secret_ref() {
        Some(secret) => secret.name.clone(),
        None => in_cluster::generated_key_secret_name(name),
    }
}

/// The gateway's private key in a cluster, or why there is none (reason,
/// message). A pod mounts only Secrets of its own namespace, so the key
/// lives in the release namespace: the Secret `spec.secretRef` names (it
/// must be there), else one the controller generates once and keeps.
async fn cluster_key<K: GatewayKind>(
    gateway: &K,
    ctx: &Context,
    release_namespace: &str,
    namespace: &str,
    name: &str,
) -> Result<Result<strait_gateway::PrivateKey, (&'static str, String)>, Error> {
    let parse = |secret: &str, text: &str| {
        strait_gateway::PrivateKey::parse(text).map_err(|reason| {
            (
                "InvalidPrivateKey",
                format!(
                    "Secret {release_namespace}/{secret} key {PRIVATE_KEY_SECRET_KEY}: {reason}"
                ),
            )
        })
    };
    if let Some(secret) = gateway.secret_ref() {
        let secret_namespace = secret.namespace.as_deref().unwrap_or(namespace);
        if secret_namespace != release_namespace {
            return Ok(Err((
                "InvalidSpec",
                format!(
                    "spec.secretRef names Secret {secret_namespace}/{}, but the gateway pod runs in \
                     {release_namespace} and can mount only Secrets of its own namespace: create the \
                     Secret in {release_namespace} and set secretRef.namespace: {release_namespace}",
                    secret.name
                ),
            )));
        }
        return Ok(match private_key(ctx, secret, namespace).await? {
            Ok(text) => parse(&secret.name, &text),
            Err(message) => Err(("PrivateKeyNotFound", message)),
        });
    }
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), release_namespace);
    let secret_name = in_cluster::generated_key_secret_name(name);
    let stored = |secret: &Secret| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(PRIVATE_KEY_SECRET_KEY))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };
    if let Some(existing) = secrets.get_opt(&secret_name).await? {
        return Ok(match stored(&existing) {
            Some(text) => parse(&secret_name, &text),
            None => Err((
                "InvalidPrivateKey",
                format!(
                    "Secret {release_namespace}/{secret_name} has no key {PRIVATE_KEY_SECRET_KEY}: \
                     delete it and a new key is generated"
                ),
            )),
        });
    }
    let key = strait_gateway::PrivateKey::generate();
    let mut secret = Secret::default();
    secret.metadata.name = Some(secret_name.clone());
    secret.metadata.labels = serde_json::from_value(labels(gateway)).ok();
    secret.type_ = Some("Opaque".to_owned());
    secret.data = Some(BTreeMap::from([(
        PRIVATE_KEY_SECRET_KEY.to_owned(),
        k8s_openapi::ByteString(key.to_secret_text().into_bytes()),
    )]));
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            info!(%release_namespace, secret = %secret_name, gateway = %name, "generated the gateway's key");
            Ok(Ok(key))
        }
        // Another reconcile got there first: use its key.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = secrets.get(&secret_name).await?;
            Ok(stored(&existing)
                .ok_or(("InvalidPrivateKey", format!("Secret {release_namespace}/{secret_name} has no key {PRIVATE_KEY_SECRET_KEY}")))
                .and_then(|text| parse(&secret_name, &text)))
        }
        Err(e) => Err(e.into()),
    }
}

async fn deploy<K: GatewayKind>(
    gateway: &K,
    ctx: &Context,
    release_namespace: &str,
    namespace: &str,
    name: &str,
) -> Result<Outcome, Error> {
    let connection = Api::<Connection>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await?
        .and_then(|c| c.status);
    let peer_key = Api::<PublicKey>::namespaced(ctx.client.clone(), namespace)
        .get_opt(&remote_key_name(name))
        .await?;
    let mut view = GatewayView {
        gateway: describe(gateway),
        not_ready: None,
        peer_key_present: Some(peer_key.is_some()),
        peer_key_name: remote_key_name(name),
        connection,
        up_for: None,
        mtu: None,
    };
    let fail = |mut view: GatewayView, reason: &'static str, message: String| {
        view.not_ready = Some(message.clone());
        Ok((
            not_ready(reason, message),
            view,
            Action::requeue(CLUSTER_POLL),
        ))
    };
    // The template first: without it nothing else is worth creating.
    let objects = match rendered(gateway, ctx, release_namespace, namespace, name).await? {
        Ok(objects) => objects,
        Err((reason, message)) => return fail(view, reason, message),
    };
    let key = match cluster_key(gateway, ctx, release_namespace, namespace, name).await? {
        Ok(key) => key,
        Err((reason, message)) => return fail(view, reason, message),
    };
    publish_key(gateway, ctx, namespace, name, &key.public_key().to_string()).await?;
    // The gateway's --config, as its pod sees its files.
    let paths = in_cluster::pod_paths();
    let cidrs = match tunnel_cidrs(gateway, ctx, namespace).await? {
        Ok(cidrs) => cidrs,
        Err((reason, message)) => return fail(view, reason, message),
    };
    let mut config = match gateway_config(gateway, &paths.peer_key, &paths.public_key, cidrs) {
        Ok(config) => config,
        Err(message) => return fail(view, "InvalidSpec", message),
    };
    config.private_key_file = Some(paths.private_key);
    let yaml = serde_norway::to_string(&config)
        .map_err(|e| Error::Serialize(serde::ser::Error::custom(format!("gateway config: {e}"))))?;
    let config_map = in_cluster::config_map(
        name,
        release_namespace,
        labels(gateway),
        &yaml,
        peer_key.as_ref().map(|k| k.spec.public_key.as_str()),
    );
    Api::<ConfigMap>::namespaced(ctx.client.clone(), release_namespace)
        .patch(
            &in_cluster::config_map_name(name),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(config_map),
        )
        .await?;
    let mut applied = vec![format!("ConfigMap {}", in_cluster::config_map_name(name))];
    for object in &objects {
        dynamic_api(ctx, object, release_namespace)
            .patch(
                &object.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&object.object),
            )
            .await?;
        applied.push(format!("{} {}", object.gvk.kind, object.name));
    }
    // The gateway pod cannot write the Connection (it has no API client):
    // its status endpoint says what its status file would.
    let connection = in_cluster::pod_connection(
        &ctx.client,
        release_namespace,
        name,
        view.peer_key_present == Some(true),
    )
    .await?;
    write_connection(gateway, ctx, namespace, name, &connection).await?;
    view.connection = Some(connection);
    let ready = ConditionUpdate {
        type_: READY,
        status: ConditionStatus::True,
        reason: "Deployed",
        message: format!(
            "applied {}; public key in PublicKey {}",
            applied.join(", "),
            local_key_name(name)
        ),
    };
    Ok((ready, view, Action::requeue(CLUSTER_POLL)))
}

async fn cleanup<K: GatewayKind>(gateway: &K, ctx: &Context) -> Result<Action, Error> {
    let namespace = gateway.namespace().unwrap_or_default();
    let name = gateway.name_any();
    info!(%namespace, %name, kind = %K::kind(&()), "gateway deleted: removing it");
    match &ctx.settings.mode {
        GatewayMode::Local { gateways, .. } => {
            gateways
                .stop(&namespace, &name, &interface_name(&namespace, &name))
                .await?
        }
        GatewayMode::Cluster { release_namespace } => {
            if let Ok(objects) =
                rendered(gateway, ctx, release_namespace, &namespace, &name).await?
            {
                for object in &objects {
                    ignore_missing(
                        dynamic_api(ctx, object, release_namespace)
                            .delete(&object.name, &DeleteParams::default())
                            .await
                            .map(|_| ()),
                    )?;
                }
            }
            ignore_missing(
                Api::<ConfigMap>::namespaced(ctx.client.clone(), release_namespace)
                    .delete(
                        &in_cluster::config_map_name(&name),
                        &DeleteParams::default(),
                    )
                    .await
                    .map(|_| ()),
            )?;
            // A key this controller generated goes with the gateway; a
            // Secret the user named stays theirs.
            if gateway.secret_ref().is_none() {
                ignore_missing(
                    Api::<Secret>::namespaced(ctx.client.clone(), release_namespace)
                        .delete(
                            &in_cluster::generated_key_secret_name(&name),
                            &DeleteParams::default(),
                        )
                        .await
                        .map(|_| ()),
                )?;
            }
        }
    }
    // Owner references would do this on a real API server; deleting them
    // here also covers servers without garbage collection.
    ignore_missing(
        Api::<PublicKey>::namespaced(ctx.client.clone(), &namespace)
            .delete(&local_key_name(&name), &DeleteParams::default())
            .await
            .map(|_| ()),
    )?;
    ignore_missing(
        Api::<Connection>::namespaced(ctx.client.clone(), &namespace)
            .delete(&name, &DeleteParams::default())
            .await
            .map(|_| ()),
    )?;
    if let Some(remote) = gateway.labels().get(REMOTE_CLUSTER_ID) {
        let gone = ConditionUpdate {
            type_: readiness::NETWORK_READY,
            status: ConditionStatus::False,
            reason: "GatewayNotReady",
            message: format!(
                "{} was deleted; create a GatewayServer or GatewayClient for this peer",
                describe(gateway)
            ),
        };
        readiness::publish(&ctx.client, remote, gone).await?;
    }
    Ok(Action::await_change())
}

fn ignore_missing(result: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        other => other,
    }
}

/// Settings for the local simulation from the controller's flags.
pub fn local_settings(
    binary: PathBuf,
    state_dir: PathBuf,
    netns: Option<PathBuf>,
    advertise_address: Option<String>,
    args: Vec<String>,
) -> GatewayMode {
    GatewayMode::Local {
        gateways: Box::new(LocalGateways::new(binary, state_dir, netns).with_args(args)),
        advertise_address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_ends_take_distinct_addresses_of_the_prefix() {
        let (server, server_peer) =
            tunnel_addresses("fd00:5354::/127", ConnectionType::Server).expect("valid");
        let (client, client_peer) =
            tunnel_addresses("fd00:5354::/127", ConnectionType::Client).expect("valid");
        assert_eq!(server, "fd00:5354::/127");
        assert_eq!(client, "fd00:5354::1/127");
        assert_eq!(server_peer.to_string(), "fd00:5354::1");
        assert_eq!(client_peer.to_string(), "fd00:5354::");
        let (server, _) = tunnel_addresses("198.18.9.0/30", ConnectionType::Server).expect("valid");
        assert_eq!(server, "198.18.9.1/30");
        assert!(tunnel_addresses("198.18.9.1/32", ConnectionType::Server).is_err());
        assert!(tunnel_addresses("nope", ConnectionType::Server).is_err());
    }

    #[test]
    fn nat_ready_says_whether_the_local_nat_agent_runs() {
        let agents = NatAgents {
            binary: "/usr/bin/strait-fabric".into(),
            pin_root: "/sys/fs/bpf/strait/gateways".into(),
            kubeconfig: None,
            poll_interval: Duration::from_millis(500),
        };
        let log = std::path::Path::new("/run/gw/nat.log");
        let waiting = nat_condition(&agents, None, "stgw1", "gw-b", log);
        assert_eq!(
            (waiting.status, waiting.reason),
            (ConditionStatus::False, "WaitingForGateway")
        );
        let down = ProcessState {
            pid: None,
            crashes: 2,
            last_exit: Some("exited with exit status: 1".into()),
            ..ProcessState::default()
        };
        let not_running = nat_condition(&agents, Some(&down), "stgw1", "gw-b", log);
        assert_eq!(
            (not_running.status, not_running.reason),
            (ConditionStatus::False, "NatAgentNotRunning")
        );
        assert!(
            not_running
                .message
                .starts_with("the NAT agent exited with exit status: 1; restarting it (its log: /run/gw/nat.log)"),
            "{}",
            not_running.message
        );
        let up = ProcessState {
            pid: Some(42),
            ..down
        };
        let running = nat_condition(&agents, Some(&up), "stgw1", "gw-b", log);
        assert_eq!(running.status, ConditionStatus::True);
        assert!(
            running.message.contains("pid 42")
                && running
                    .message
                    .contains("/sys/fs/bpf/strait/gateways/stgw1")
                && running.message.contains("host gw-b")
                && running.message.contains("restarted 2 times"),
            "{}",
            running.message
        );
    }

    #[test]
    fn interface_names_fit_linux_and_differ() {
        let a = interface_name("strait-tenant-b", "to-b");
        assert!(a.len() <= 15, "{a}");
        assert_eq!(a, interface_name("strait-tenant-b", "to-b"));
        assert_ne!(a, interface_name("strait-tenant-c", "to-b"));
    }

    fn configuration(
        local: Option<&[&str]>,
        remote: &[&str],
        seen: Option<&[&str]>,
    ) -> Configuration {
        let network = |pod: &[&str]| ClusterNetwork {
            cidr: strait_api::networking::ClusterCidrs {
                pod: pod.iter().map(ToString::to_string).collect(),
                external: Vec::new(),
            },
        };
        let mut c = Configuration::new(
            "b",
            strait_api::networking::ConfigurationSpec {
                local: local.map(network),
                remote: network(remote),
            },
        );
        c.status = seen.map(|seen| strait_api::networking::ConfigurationStatus {
            remote: Some(network(seen)),
            conditions: Vec::new(),
            vni: None,
        });
        c
    }

    #[test]
    fn the_tunnel_accepts_the_real_ranges_and_routes_the_remapped_ones() {
        let same = ["10.244.0.0/16", "fd00:244::/64"];
        let remapped = configuration(Some(&same), &same, Some(&["10.70.0.0/16", "fd00:70::/64"]));
        let cidrs = TunnelCidrs::from_configurations(&[remapped]).unwrap();
        assert_eq!(cidrs.allowed, ["10.244.0.0/16", "fd00:244::/64"]);
        assert_eq!(cidrs.routes, ["10.70.0.0/16", "fd00:70::/64"]);
        // Not overlapping: seen as they are, routed as they are.
        let plain = configuration(None, &["10.9.0.0/16"], Some(&["10.9.0.0/16"]));
        let cidrs = TunnelCidrs::from_configurations(&[plain]).unwrap();
        assert_eq!(
            (cidrs.allowed, cidrs.routes),
            (
                vec!["10.9.0.0/16".to_owned()],
                vec!["10.9.0.0/16".to_owned()]
            )
        );
        assert_eq!(
            TunnelCidrs::from_configurations(&[]).unwrap(),
            TunnelCidrs::default()
        );
    }

    #[test]
    fn nothing_is_routed_before_the_remap_or_over_a_local_range() {
        let same = ["10.244.0.0/16"];
        let (reason, message) =
            TunnelCidrs::from_configurations(&[configuration(Some(&same), &same, None)])
                .unwrap_err();
        assert_eq!(reason, "WaitingForRemap");
        assert!(
            message.contains("Configuration b has no status.remote"),
            "{message}"
        );
        // A status that leaves the peer on top of a local range (a wrong
        // remap, or none) is refused, even when only part of it overlaps.
        let (reason, message) = TunnelCidrs::from_configurations(&[configuration(
            Some(&same),
            &["10.0.0.0/8"],
            Some(&["10.0.0.0/8"]),
        )])
        .unwrap_err();
        assert_eq!(reason, "RouteOverlapsLocal");
        assert!(
            message.contains("10.0.0.0/8") && message.contains("10.244.0.0/16"),
            "{message}"
        );
    }
}
