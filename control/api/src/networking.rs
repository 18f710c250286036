//! networking.strait.dev: the network module's resources, from a peer's
//! CIDRs to the routes and NAT mappings the eBPF dataplane enforces.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{rules, Condition, ObjectReference, SecretReference};

/// Pod and external CIDRs of one cluster, each list dual-stack.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterCidrs {
    /// The cluster's pod CIDRs: at most one IPv4 and one IPv6.
    #[schemars(length(min = 1, max = 2), inner(length(max = 64)))]
    #[x_kube(validation = rules::cidr_list("pod"))]
    pub pod: Vec<String>,
    /// CIDRs under which the cluster exposes addresses outside its pod
    /// network (nodes, external services) to peers: at most one per family.
    #[serde(default)]
    #[schemars(length(max = 2), inner(length(max = 64)))]
    #[x_kube(validation = rules::cidr_list("external"))]
    pub external: Vec<String>,
}

/// One cluster's network parameters.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetwork {
    /// The cluster's CIDRs.
    pub cidr: ClusterCidrs,
}

/// The network parameters of one peering, kept on each side: both clusters'
/// CIDRs and, in the status, how the remote ones are remapped here when they
/// overlap with local ones.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    derive = "PartialEq",
    group = "networking.strait.dev",
    version = "v1beta1",
    kind = "Configuration",
    plural = "configurations",
    shortname = "netcfg",
    namespaced,
    category = "strait",
    status = "ConfigurationStatus",
    doc = "Both clusters' CIDRs for one peering, and the remapping chosen for the remote ones.",
    printcolumn = r#"{"name":"Remote Pod CIDR","type":"string","jsonPath":".spec.remote.cidr.pod"}"#,
    printcolumn = r#"{"name":"Remapped Pod CIDR","type":"string","jsonPath":".status.remote.cidr.pod"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationSpec {
    /// This cluster's CIDRs; discovered from the cluster when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<ClusterNetwork>,
    /// The remote cluster's CIDRs as it declares them. Immutable: a peer that
    /// changes its CIDRs is a new peering.
    #[x_kube(validation = rules::immutable("remote"))]
    pub remote: ClusterNetwork,
}

/// Observed state of a Configuration.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationStatus {
    /// The remote CIDRs as this cluster sees them: equal to the spec when they
    /// do not overlap a local range, else a free range of the same size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<ClusterNetwork>,
    /// The Geneve VNI (1-16777215) of this peering's fabric routes, allocated
    /// once by the route controller and unique among the cluster's peerings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16777215))]
    pub vni: Option<i64>,
    /// Ready once the remapping is allocated and routes and NAT are rendered;
    /// RoutesReady once the nodes' RouteConfiguration is written.
    #[serde(default)]
    #[x_kube(merge_strategy = rules::conditions_merge())]
    pub conditions: Vec<Condition>,
}

/// How a gateway server is exposed outside its cluster.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceType {
    ClusterIP,
    NodePort,
    #[default]
    LoadBalancer,
}

/// The server side's listening endpoint.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::node_port_needs_node_port_service())]
pub struct ServerEndpoint {
    /// UDP port the gateway listens on (1-65535).
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// How the gateway's Service is exposed: ClusterIP, NodePort or LoadBalancer.
    #[serde(default)]
    pub service_type: ServiceType,
    /// Fixed node port (30000-32767); only with serviceType NodePort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub node_port: Option<i32>,
    /// Addresses to request for a LoadBalancer Service, at most one per family.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2), inner(length(max = 64)))]
    #[x_kube(validation = rules::ip_list("loadBalancerIPs"))]
    pub load_balancer_ips: Vec<String>,
}

/// Where a gateway can be reached from the other cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PublicEndpoint {
    /// IP addresses or DNS names of the server, tried in order.
    #[schemars(length(min = 1, max = 8), inner(length(min = 1, max = 253)))]
    #[x_kube(validation = rules::hosts("addresses"))]
    pub addresses: Vec<String>,
    /// UDP port of the server (1-65535).
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

/// Where a gateway sits inside its own cluster (its Geneve endpoint).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InternalEndpoint {
    /// The gateway pod's addresses, at most one per family.
    #[serde(default)]
    #[schemars(length(max = 2), inner(length(max = 64)))]
    #[x_kube(validation = rules::ip_list("ips"))]
    pub ips: Vec<String>,
    /// The node the gateway pod runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The side of a peering that listens for the tunnel.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    derive = "PartialEq",
    group = "networking.strait.dev",
    version = "v1beta1",
    kind = "GatewayServer",
    plural = "gatewayservers",
    shortname = "gws",
    namespaced,
    category = "strait",
    status = "GatewayServerStatus",
    doc = "The listening side of a WireGuard tunnel to one remote cluster.",
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".status.endpoint.addresses"}"#,
    printcolumn = r#"{"name":"Port","type":"integer","jsonPath":".status.endpoint.port"}"#,
    printcolumn = r#"{"name":"MTU","type":"integer","jsonPath":".spec.mtu","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct GatewayServerSpec {
    /// MTU of the tunnel (1280-9000); both sides must agree.
    #[serde(default = "default_mtu")]
    #[schemars(range(min = 1280, max = 9000))]
    pub mtu: i32,
    /// How the server listens and is exposed.
    pub endpoint: ServerEndpoint,
    /// Secret with the WireGuard private key; generated in the gateway pod when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,
    /// Template the gateway Deployment and Service are rendered from; the chart's default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<ObjectReference>,
}

/// Observed state of a GatewayServer.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayServerStatus {
    /// Where the client must dial, once the Service has an address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<PublicEndpoint>,
    /// The gateway inside this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_endpoint: Option<InternalEndpoint>,
    /// Ready once the gateway runs and its public key is published.
    #[serde(default)]
    #[x_kube(merge_strategy = rules::conditions_merge())]
    pub conditions: Vec<Condition>,
}

/// The side of a peering that dials the remote gateway server.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    derive = "PartialEq",
    group = "networking.strait.dev",
    version = "v1beta1",
    kind = "GatewayClient",
    plural = "gatewayclients",
    shortname = "gwc",
    namespaced,
    category = "strait",
    status = "GatewayClientStatus",
    doc = "The dialling side of a WireGuard tunnel to one remote cluster.",
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.endpoint.addresses"}"#,
    printcolumn = r#"{"name":"Port","type":"integer","jsonPath":".spec.endpoint.port"}"#,
    printcolumn = r#"{"name":"MTU","type":"integer","jsonPath":".spec.mtu","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClientSpec {
    /// MTU of the tunnel (1280-9000); both sides must agree.
    #[serde(default = "default_mtu")]
    #[schemars(range(min = 1280, max = 9000))]
    pub mtu: i32,
    /// The remote gateway server to dial.
    pub endpoint: PublicEndpoint,
    /// Secret with the WireGuard private key; generated in the gateway pod when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,
    /// Template the gateway Deployment is rendered from; the chart's default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<ObjectReference>,
}

/// Observed state of a GatewayClient.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClientStatus {
    /// The gateway inside this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_endpoint: Option<InternalEndpoint>,
    /// Ready once the gateway runs and its public key is published.
    #[serde(default)]
    #[x_kube(merge_strategy = rules::conditions_merge())]
    pub conditions: Vec<Condition>,
}

fn default_mtu() -> i32 {
    1420
}

/// The WireGuard public key of the remote cluster's gateway. Only public
/// keys ever leave a gateway.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    derive = "PartialEq",
    group = "networking.strait.dev",
    version = "v1beta1",
    kind = "PublicKey",
    plural = "publickeys",
    shortname = "pubkey",
    namespaced,
    category = "strait",
    doc = "The remote gateway's WireGuard public key.",
    printcolumn = r#"{"name":"Key","type":"string","jsonPath":".spec.publicKey"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PublicKeySpec {
    /// Curve25519 public key, base64 (44 characters, as `wg pubkey` prints it).
    #[schemars(regex(pattern = r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$"))]
    pub public_key: String,
}

/// Which end of a tunnel a Connection reports on.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionType {
    Server,
    Client,
}

/// The state of a tunnel, written by its gateway.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    derive = "PartialEq",
    group = "networking.strait.dev",
    version = "v1beta1",
    kind = "Connection",
    plural = "connections",
    shortname = "conn",
    namespaced,
    category = "strait",
    status = "ConnectionStatus",
    doc = "The state of one WireGuard tunnel, as its gateway sees it.",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.value"}"#,
    printcolumn = r#"{"name":"Latency","type":"string","jsonPath":".status.latency.value"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSpec {
    /// Server or Client: which end this gateway is. Immutable.
    #[serde(rename = "type")]
    #[x_kube(validation = rules::immutable("type"))]
    pub type_: ConnectionType,
    /// The GatewayServer or GatewayClient the tunnel belongs to. Immutable.
    #[x_kube(validation = rules::immutable("gatewayRef"))]
    #[x_kube(validation = rules::gateway_kind())]
    pub gateway_ref: ObjectReference,
}

/// Tunnel state.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    Connecting,
    Connected,
    Error,
}

/// Observed state of a tunnel.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    /// Connecting, Connected or Error.
    pub value: ConnectionState,
    /// Round-trip time through the tunnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// When the last WireGuard handshake completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handshake_time: Option<Time>,
    /// Why the tunnel is in Error, for a person.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A latency measurement.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    /// Round-trip time as a duration, for example 1.2ms.
    #[x_kube(validation = rules::duration("latency.value"))]
    pub value: String,
    /// When it was measured.
    pub timestamp: Time,
}

/// A cluster node's place in the Geneve fabric between nodes and gateways.
/// One per node, maintained from the Node objects.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    derive = "PartialEq",
    group = "networking.strait.dev",
    version = "v1beta1",
    kind = "InternalNode",
    plural = "internalnodes",
    shortname = "inode",
    category = "strait",
    status = "InternalNodeStatus",
    doc = "A node's Geneve endpoint and the pod CIDRs it owns, for the fabric between nodes and gateways.",
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".spec.endpoints"}"#,
    printcolumn = r#"{"name":"Pod CIDRs","type":"string","jsonPath":".spec.podCIDRs"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct InternalNodeSpec {
    /// The node's underlay addresses that Geneve packets are sent to, at most one per family.
    #[schemars(length(min = 1, max = 2), inner(length(max = 64)))]
    #[x_kube(validation = rules::ip_list("endpoints"))]
    pub endpoints: Vec<String>,
    /// Pod CIDRs allocated to the node: return traffic for them is sent to this node.
    #[serde(default, rename = "podCIDRs")]
    #[schemars(length(max = 2), inner(length(max = 64)))]
    #[x_kube(validation = rules::cidr_list("podCIDRs"))]
    pub pod_cidrs: Vec<String>,
}

/// Observed state of an InternalNode.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InternalNodeStatus {
    /// Ready once the node's fabric agent has programmed its maps.
    #[serde(default)]
    #[x_kube(merge_strategy = rules::conditions_merge())]
    pub conditions: Vec<Condition>,
}

/// A route of the fabric: traffic to `destinations` goes through Geneve to
/// one of `gateways`, tagged with `vni`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FabricRoute {
    /// Destination CIDRs (for example a peer's remapped pod CIDRs), at most one per family.
    #[schemars(length(min = 1, max = 2), inner(length(max = 64)))]
    #[x_kube(validation = rules::cidr_list("destinations"))]
    pub destinations: Vec<String>,
    /// Geneve endpoints of the gateway serving these destinations, at most one per family.
    #[schemars(length(min = 1, max = 2), inner(length(max = 64)))]
    #[x_kube(validation = rules::ip_list("gateways"))]
    pub gateways: Vec<String>,
    /// Geneve virtual network identifier (1-16777215) of the peering.
    #[schemars(range(min = 1, max = 16777215))]
    pub vni: i64,
}

/// Routes the fabric agents and gateways load into their eBPF maps.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    derive = "PartialEq",
    group = "networking.strait.dev",
    version = "v1beta1",
    kind = "RouteConfiguration",
    plural = "routeconfigurations",
    shortname = "routecfg",
    namespaced,
    category = "strait",
    status = "ApplyStatus",
    doc = "Routes of the Geneve fabric toward a peer's gateway, applied by every node's fabric agent.",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RouteConfigurationSpec {
    /// The routes (at most 16); a destination must not repeat across routes.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(validation = rules::unique_destinations())]
    pub routes: Vec<FabricRoute>,
}

/// What a NAT mapping remaps. Every mapping is a stateless, bidirectional
/// 1:1 translation on the gateway's interface toward the peer: it rewrites
/// one address of the packets leaving toward the peer and the opposite
/// address of the packets arriving from it, so replies (and ICMP errors,
/// whose quoted packet is translated too) find their way back.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatDirection {
    /// A peer's range as this cluster sees it: packets leaving toward the
    /// peer with a destination in `from` get it rewritten into `to` (the
    /// peer's real range), and packets arriving from the peer with a source
    /// in `to` get it rewritten into `from`. This is how a cluster remaps an
    /// overlapping peer range with only its own IPAM decision.
    Destination,
    /// A local range exposed under another one: packets leaving toward the
    /// peer with a source in `from` get it rewritten into `to`, and packets
    /// arriving from the peer with a destination in `to` get it rewritten
    /// into `from`.
    Source,
}

/// A stateless 1:1 prefix translation, both ways (see NatDirection): host
/// bits are kept. Within one gateway's mappings of one direction, the `to`
/// ranges must not overlap, or translating back would be ambiguous (the
/// agent refuses such a configuration and says so in its status).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::same_prefix_length())]
pub struct PrefixMapping {
    /// Destination (remap a peer's range) or Source (expose a local range).
    pub direction: NatDirection,
    /// The CIDR packets carry on this cluster's side of the gateway.
    #[x_kube(validation = rules::cidr("from"))]
    pub from: String,
    /// The CIDR they carry on the peer's side; same family and prefix
    /// length as `from`.
    #[x_kube(validation = rules::cidr("to"))]
    pub to: String,
}

/// A single-address translation exposing one local address (a node, an
/// external service) under a remapped address: the Source mapping of
/// `local` to `remapped` as a /32 (/128), both ways.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::same_ip_family())]
pub struct AddressMapping {
    /// The address as the peer sees it: what the local address's packets
    /// leave from, and what the peer's packets to it arrive for.
    #[x_kube(validation = rules::ip("remapped"))]
    pub remapped: String,
    /// The real local address.
    #[x_kube(validation = rules::ip("local"))]
    pub local: String,
}

/// The eBPF NAT tables of a gateway: CIDR remapping for overlapping pod
/// networks, without iptables or nftables. The gateway's NAT agent merges
/// every NatConfiguration it follows into one table and reports, per host,
/// whether it applied each one in `status.hosts`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    derive = "PartialEq",
    group = "networking.strait.dev",
    version = "v1beta1",
    kind = "NatConfiguration",
    plural = "natconfigurations",
    shortname = "natcfg",
    namespaced,
    category = "strait",
    status = "ApplyStatus",
    doc = "Stateless bidirectional prefix and address translations a gateway's eBPF programs apply on its interface toward the peer.",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NatConfigurationSpec {
    /// Prefix translations, each both ways.
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub prefixes: Vec<PrefixMapping>,
    /// Single-address translations (Source mappings of one address).
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub addresses: Vec<AddressMapping>,
}

/// Where a configuration has been applied, reported by each agent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApplyStatus {
    /// One entry per node or gateway that applies this configuration.
    #[serde(default)]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["host".into()]))]
    pub hosts: Vec<HostApplyStatus>,
}

/// One host's application of a configuration.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HostApplyStatus {
    /// Node or gateway name.
    pub host: String,
    /// metadata.generation that was applied.
    pub observed_generation: i64,
    /// Applied, or Error with `message`.
    pub state: ApplyState,
    /// What went wrong, for a person.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When the host last wrote this entry.
    pub last_update_time: Time,
}

/// Outcome of applying a configuration on one host.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyState {
    Applied,
    Error,
}
