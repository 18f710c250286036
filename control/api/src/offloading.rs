//! offloading.strait.dev: virtual nodes, namespace offloading and the
//! shadow objects a provider turns into real pods and endpoints.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    core::v1::{NodeSelector, PodSpec, PodStatus, Taint, Toleration},
    discovery::v1::{Endpoint, EndpointPort},
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{authentication::ResourceList, rules, Condition, SecretReference};

/// A node of this cluster backed by a provider cluster. Several may target
/// the same provider (split a pool, GPU nodes, per-architecture nodes); each
/// runs its own virtual kubelet.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    derive = "PartialEq",
    group = "offloading.strait.dev",
    version = "v1beta1",
    kind = "VirtualNode",
    plural = "virtualnodes",
    shortname = "vn",
    namespaced,
    category = "strait",
    status = "VirtualNodeStatus",
    doc = "A virtual node backed by a provider cluster, run by its own virtual kubelet.",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.clusterID"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".status.nodeName"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualNodeSpec {
    /// Cluster ID of the provider. Immutable.
    #[schemars(length(min = 1, max = 63), regex(pattern = rules::CLUSTER_ID_PATTERN))]
    #[x_kube(validation = rules::immutable("clusterID"))]
    #[serde(rename = "clusterID")]
    pub cluster_id: String,
    /// Secret with a kubeconfig for the provider, normally the one generated
    /// from a ResourceSlice Identity (or an Identity made by hand).
    pub kubeconfig_secret_ref: SecretReference,
    /// The ResourceSlice this node draws on; its grant is the default capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_slice_name: Option<String>,
    /// Capacity announced by the node; the slice's grant when empty. Amounts must be zero or more.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = rules::non_negative_quantities("resources"))]
    pub resources: ResourceList,
    /// Whether to register a Node object (false runs only the reflection).
    #[serde(default = "default_true")]
    pub create_node: bool,
    /// Extra labels on the Node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on the Node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Extra taints on the Node, besides the virtual-node taint every virtual node has.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub taints: Vec<Taint>,
    /// Constraints added to every pod offloaded through this node, to target
    /// a subset of the provider's nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offloading_patch: Option<OffloadingPatch>,
}

fn default_true() -> bool {
    true
}

/// Scheduling constraints added to offloaded pods on the provider.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OffloadingPatch {
    /// Node selector merged into the offloaded pods'.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations added to the offloaded pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub tolerations: Vec<Toleration>,
}

/// Observed state of a VirtualNode.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualNodeStatus {
    /// Name of the Node registered for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// KubeletRunning, NodeRegistered and Ready (False while the provider is unreachable or draining).
    #[serde(default)]
    #[x_kube(merge_strategy = rules::conditions_merge())]
    pub conditions: Vec<Condition>,
}

/// How the remote namespace is named.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NamespaceMappingStrategy {
    /// The same name as the local namespace (may clash on the provider).
    EnforceSameName,
    /// `<namespace>-<local cluster ID>`.
    #[default]
    DefaultName,
    /// `remoteNamespaceName`.
    SelectedName,
}

/// Where pods of an offloaded namespace may run.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PodOffloadingStrategy {
    Local,
    Remote,
    #[default]
    LocalAndRemote,
}

/// Offloads the namespace it lives in to the clusters whose virtual nodes
/// match `clusterSelector`. One per namespace, named `offloading`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    derive = "PartialEq",
    group = "offloading.strait.dev",
    version = "v1beta1",
    kind = "NamespaceOffloading",
    plural = "namespaceoffloadings",
    shortname = "nsoff",
    namespaced,
    category = "strait",
    status = "NamespaceOffloadingStatus",
    doc = "Offloads its namespace to the provider clusters selected by clusterSelector.",
    validation = rules::singleton_offloading(),
    printcolumn = r#"{"name":"Mapping","type":"string","jsonPath":".spec.namespaceMappingStrategy"}"#,
    printcolumn = r#"{"name":"Pods","type":"string","jsonPath":".spec.podOffloadingStrategy"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Remote Namespace","type":"string","jsonPath":".status.remoteNamespaceName","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::selected_name_needs_name())]
pub struct NamespaceOffloadingSpec {
    /// EnforceSameName, DefaultName (`<namespace>-<cluster ID>`) or SelectedName. Immutable.
    #[serde(default)]
    #[x_kube(validation = rules::immutable("namespaceMappingStrategy"))]
    pub namespace_mapping_strategy: NamespaceMappingStrategy,
    /// Remote namespace name; required with SelectedName and forbidden otherwise. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = rules::CLUSTER_ID_PATTERN))]
    #[x_kube(validation = rules::immutable("remoteNamespaceName"))]
    pub remote_namespace_name: Option<String>,
    /// Local, Remote or LocalAndRemote: where the namespace's pods may be scheduled.
    #[serde(default)]
    pub pod_offloading_strategy: PodOffloadingStrategy,
    /// Selects virtual nodes (by their labels) whose providers get the
    /// namespace; every virtual node when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<NodeSelector>,
}

/// Summary of a namespace's offloading.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffloadingPhase {
    Ready,
    NoClusterSelected,
    InProgress,
    SomeFailed,
    AllFailed,
    Terminating,
}

/// Observed state of a NamespaceOffloading.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceOffloadingStatus {
    /// Ready, NoClusterSelected, InProgress, SomeFailed, AllFailed or Terminating.
    pub phase: OffloadingPhase,
    /// Name of the namespace on the providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_namespace_name: Option<String>,
    /// One entry per selected provider.
    #[serde(default)]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["clusterID".into()]))]
    pub remote_namespaces: Vec<RemoteNamespaceStatus>,
    /// metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The offloaded namespace on one provider.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RemoteNamespaceStatus {
    /// Cluster ID of the provider.
    #[serde(rename = "clusterID")]
    pub cluster_id: String,
    /// Ready once the namespace exists there with its RBAC.
    #[serde(default)]
    #[x_kube(merge_strategy = rules::conditions_merge())]
    pub conditions: Vec<Condition>,
}

/// A pod a consumer's virtual kubelet asks the provider to run; the provider
/// checks it against the slice's quota and creates the real pod.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    derive = "PartialEq",
    group = "offloading.strait.dev",
    version = "v1beta1",
    kind = "ShadowPod",
    plural = "shadowpods",
    shortname = "shpod",
    namespaced,
    category = "strait",
    status = "ShadowPodStatus",
    doc = "An offloaded pod as the consumer asked for it; the provider runs the real one.",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ShadowPodSpec {
    /// The pod to run, as reflected by the virtual kubelet.
    pub pod: PodSpec,
}

/// Pod phase, mirrored from the real pod.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    #[default]
    Unknown,
}

/// Observed state of a ShadowPod.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShadowPodStatus {
    /// Phase of the real pod.
    #[serde(default)]
    pub phase: PodPhase,
    /// Admitted (within the slice's quota) or False with QuotaExceeded.
    #[serde(default)]
    #[x_kube(merge_strategy = rules::conditions_merge())]
    pub conditions: Vec<Condition>,
    /// The real pod's status as the provider reports it (addresses are the
    /// provider's; the consumer translates them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_status: Option<PodStatus>,
}

/// Address family of an endpoint slice.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressType {
    IPv4,
    IPv6,
    #[serde(rename = "FQDN")]
    Fqdn,
}

/// An EndpointSlice reflected to a provider, which turns it into a real one
/// (its endpoints marked not ready while the tunnel is down).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    derive = "PartialEq",
    group = "offloading.strait.dev",
    version = "v1beta1",
    kind = "ShadowEndpointSlice",
    plural = "shadowendpointslices",
    shortname = "sheps",
    namespaced,
    category = "strait",
    doc = "An EndpointSlice reflected from a consumer; the provider creates the real one.",
    printcolumn = r#"{"name":"Address Type","type":"string","jsonPath":".spec.template.addressType"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ShadowEndpointSliceSpec {
    /// What the real EndpointSlice will hold.
    pub template: EndpointSliceTemplate,
}

/// The reflected content of an EndpointSlice.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSliceTemplate {
    /// IPv4, IPv6 or FQDN. Immutable, as in EndpointSlice.
    #[x_kube(validation = rules::immutable("addressType"))]
    pub address_type: AddressType,
    /// The endpoints (at most 1000, as in EndpointSlice).
    #[serde(default)]
    #[schemars(length(max = 1000))]
    pub endpoints: Vec<Endpoint>,
    /// The ports, shared by every endpoint (at most 100).
    #[serde(default)]
    #[schemars(length(max = 100))]
    pub ports: Vec<EndpointPort>,
}

/// The namespaces a consumer asks a provider to create for it, living in the
/// consumer's tenant namespace on the provider. The consumer's identity can
/// only write here; the provider creates each namespace and grants the
/// consumer's subjects access to it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    derive = "PartialEq",
    group = "offloading.strait.dev",
    version = "v1beta1",
    kind = "NamespaceMap",
    plural = "namespacemaps",
    shortname = "nm",
    namespaced,
    category = "strait",
    status = "NamespaceMapStatus",
    doc = "Namespaces a consumer asks its provider to create (in the tenant namespace on the provider).",
    printcolumn = r#"{"name":"Consumer","type":"string","jsonPath":".spec.consumerClusterID"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceMapSpec {
    /// Cluster ID of the consumer asking. Immutable.
    #[schemars(length(min = 1, max = 63), regex(pattern = rules::CLUSTER_ID_PATTERN))]
    #[x_kube(validation = rules::immutable("consumerClusterID"))]
    #[serde(rename = "consumerClusterID")]
    pub consumer_cluster_id: String,
    /// Remote namespace wanted for each local namespace, by local name.
    #[serde(default)]
    pub desired_mapping: BTreeMap<String, String>,
}

/// What the provider made of a NamespaceMap.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceMapStatus {
    /// The state of each desired mapping, by local namespace name.
    #[serde(default)]
    pub current_mapping: BTreeMap<String, RemoteNamespaceState>,
}

/// One remote namespace as the provider reports it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RemoteNamespaceState {
    /// Name of the namespace on the provider.
    pub remote_namespace: String,
    /// Ready (created, consumer granted access) or Failed (see message).
    pub phase: RemoteNamespacePhase,
    /// Why it failed, for a person.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Whether a remote namespace could be set up.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteNamespacePhase {
    Ready,
    Failed,
}
