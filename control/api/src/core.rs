//! core.strait.dev: ForeignCluster, one per known remote cluster.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{rules, Condition, SecretReference};

/// Desired state of a ForeignCluster. Writing one is the declarative entry
/// point of a peering; controllers also create one for every remote cluster
/// ID they find on lower-level resources.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    derive = "PartialEq",
    group = "core.strait.dev",
    version = "v1beta1",
    kind = "ForeignCluster",
    plural = "foreignclusters",
    shortname = "fc",
    category = "strait",
    status = "ForeignClusterStatus",
    doc = "A remote cluster known to this one: the declarative entry point of a peering, and where each module reports on it.",
    printcolumn = r#"{"name":"Role","type":"string","jsonPath":".status.role"}"#,
    printcolumn = r#"{"name":"Network","type":"string","jsonPath":".status.modules.network.state"}"#,
    printcolumn = r#"{"name":"Auth","type":"string","jsonPath":".status.modules.authentication.state"}"#,
    printcolumn = r#"{"name":"Offloading","type":"string","jsonPath":".status.modules.offloading.state"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ForeignClusterSpec {
    /// Cluster ID of the remote cluster (a DNS label, 1-63 characters). Immutable.
    #[schemars(length(min = 1, max = 63), regex(pattern = rules::CLUSTER_ID_PATTERN))]
    #[x_kube(validation = rules::immutable("clusterID"))]
    #[serde(rename = "clusterID")]
    pub cluster_id: String,
    /// Which modules to peer with this cluster. A module left out is neither
    /// set up nor torn down by this ForeignCluster.
    #[serde(default)]
    pub modules: ModuleSelection,
    /// Secret (key `kubeconfig`) with credentials for the remote cluster's API
    /// server, used once by the consumer to create its Tenant there. Not
    /// needed on the provider side, nor for network-only peerings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret_ref: Option<SecretReference>,
}

/// Which modules a peering uses.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ModuleSelection {
    /// Connect the two clusters' pod networks through a gateway.
    #[serde(default)]
    pub network: bool,
    /// Run the Tenant / Identity handshake with the remote cluster.
    #[serde(default)]
    pub authentication: bool,
    /// Create virtual nodes backed by the remote cluster (needs an Identity).
    #[serde(default)]
    pub offloading: bool,
}

/// What the remote cluster is to this one.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeeringRole {
    /// It uses resources of this cluster.
    Consumer,
    /// It provides resources to this cluster.
    Provider,
    ConsumerAndProvider,
    /// No Tenant or Identity links the two clusters yet.
    Unknown,
}

/// Summary of one module's state, for `kubectl get`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleState {
    /// Not selected for this peering.
    Disabled,
    /// Selected, still being set up or torn down.
    Pending,
    Ready,
    /// Selected and broken: see the module's conditions.
    Error,
}

/// Observed state of a ForeignCluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ForeignClusterStatus {
    /// What the remote cluster is to this one, derived from Tenants and Identities.
    pub role: PeeringRole,
    /// State of each module of the peering.
    #[serde(default)]
    pub modules: ModulesStatus,
    /// Namespaces holding this peering's resources, here and on the remote side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_namespace: Option<TenantNamespaces>,
    /// Aggregated conditions: NetworkReady, AuthenticationReady, OffloadingReady.
    /// Merged by type: each module applies only its own.
    #[serde(default)]
    #[x_kube(merge_strategy = rules::conditions_merge())]
    pub conditions: Vec<Condition>,
}

/// Per-module status of a ForeignCluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModulesStatus {
    /// The network module: gateway, tunnel, remapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<ModuleStatus>,
    /// The authentication module: Tenant and Identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<ModuleStatus>,
    /// The offloading module: virtual nodes and reflection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offloading: Option<ModuleStatus>,
}

/// Status of one module of a peering.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModuleStatus {
    /// One-word summary shown by `kubectl get foreignclusters`.
    pub state: ModuleState,
    /// The module's own conditions, with reasons (for example GatewayNotReady).
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// Where a peering's resources live.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TenantNamespaces {
    /// Namespace in this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    /// Namespace in the remote cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}
