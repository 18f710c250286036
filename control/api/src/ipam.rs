//! ipam.strait.dev: allocation of remapped CIDRs and single addresses.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::{rules, Condition, ObjectReference};

/// A range to reserve: granted as asked when free, else remapped to a free
/// range of the same size from the configured pool.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    derive = "PartialEq",
    group = "ipam.strait.dev",
    version = "v1beta1",
    kind = "Network",
    plural = "networks",
    shortname = "net",
    namespaced,
    category = "strait",
    status = "NetworkStatus",
    doc = "A CIDR reservation, remapped to a free range when it overlaps one already in use.",
    printcolumn = r#"{"name":"Desired","type":"string","jsonPath":".spec.cidrs"}"#,
    printcolumn = r#"{"name":"Allocated","type":"string","jsonPath":".status.cidrs"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// The desired CIDRs, at most one IPv4 and one IPv6. Immutable.
    #[schemars(length(min = 1, max = 2), inner(length(max = 64)))]
    #[x_kube(validation = rules::cidr_list("cidrs"), validation = rules::immutable("cidrs"))]
    pub cidrs: Vec<String>,
    /// Addresses reserved at the start of each allocated range (for gateways
    /// and other well-known addresses), never handed out by IP. Immutable.
    #[serde(default)]
    #[schemars(range(min = 0, max = 65536))]
    #[x_kube(validation = rules::immutable("preAllocated"))]
    pub pre_allocated: i64,
}

/// Observed state of a Network.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStatus {
    /// The allocated CIDRs, in the order of spec.cidrs; never change once set.
    #[serde(default)]
    #[schemars(length(max = 2), inner(length(max = 64)))]
    #[x_kube(validation = rules::cidr_list("status.cidrs"), validation = rules::immutable_once_set("status.cidrs"))]
    pub cidrs: Vec<String>,
    /// Allocated (with reason Remapped or AsRequested), or False with PoolExhausted.
    #[serde(default)]
    #[x_kube(merge_strategy = rules::conditions_merge())]
    pub conditions: Vec<Condition>,
}

/// One local address exposed to peers under an address of a Network (by
/// default the cluster's external CIDR), for example a node or an external
/// service.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    derive = "PartialEq",
    group = "ipam.strait.dev",
    version = "v1beta1",
    kind = "IP",
    plural = "ips",
    namespaced,
    category = "strait",
    status = "IpStatus",
    doc = "A local address exposed to peers under an allocated, remapped address.",
    printcolumn = r#"{"name":"Local","type":"string","jsonPath":".spec.ips"}"#,
    printcolumn = r#"{"name":"Remapped","type":"string","jsonPath":".status.ips"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IpSpec {
    /// The local addresses to expose, at most one IPv4 and one IPv6. Immutable.
    #[schemars(length(min = 1, max = 2), inner(length(max = 64)))]
    #[x_kube(validation = rules::ip_list("ips"), validation = rules::immutable("ips"))]
    pub ips: Vec<String>,
    /// The Network to allocate from; the cluster's external Network when omitted. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::immutable("networkRef"), validation = rules::network_kind())]
    pub network_ref: Option<ObjectReference>,
}

/// Observed state of an IP.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IpStatus {
    /// The allocated addresses, in the order of spec.ips; never change once set.
    #[serde(default)]
    #[schemars(length(max = 2), inner(length(max = 64)))]
    #[x_kube(validation = rules::ip_list("status.ips"), validation = rules::immutable_once_set("status.ips"))]
    pub ips: Vec<String>,
    /// The CIDRs the addresses were allocated from.
    #[serde(default)]
    #[schemars(length(max = 2), inner(length(max = 64)))]
    #[x_kube(validation = rules::cidr_list("status.cidrs"))]
    pub cidrs: Vec<String>,
    /// Allocated, or False with NetworkNotReady / PoolExhausted.
    #[serde(default)]
    #[x_kube(merge_strategy = rules::conditions_merge())]
    pub conditions: Vec<Condition>,
}
