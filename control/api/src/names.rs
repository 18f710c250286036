//! Well-known names: API groups, finalizers, labels and annotations. Every
//! controller takes them from here, so a rename is one change.

/// API version shared by every Strait kind.
pub const VERSION: &str = "v1beta1";

pub mod group {
    pub const CORE: &str = "core.strait.dev";
    pub const AUTHENTICATION: &str = "authentication.strait.dev";
    pub const NETWORKING: &str = "networking.strait.dev";
    pub const IPAM: &str = "ipam.strait.dev";
    pub const OFFLOADING: &str = "offloading.strait.dev";
}

/// The `kubectl get strait` category every kind belongs to.
pub const CATEGORY: &str = "strait";

pub mod finalizer {
    /// Held by a ForeignCluster until every module has torn its peering down.
    pub const FOREIGN_CLUSTER: &str = "core.strait.dev/peering-teardown";
    /// Held by a ForeignCluster until the authentication module has torn its
    /// side of the peering down (Tenant, Identity, tenant namespace).
    pub const FOREIGN_CLUSTER_AUTHENTICATION: &str = "authentication.strait.dev/peering-teardown";
    /// Held by a Tenant until its namespace, identities and RBAC are removed.
    pub const TENANT: &str = "authentication.strait.dev/tenant-cleanup";
    /// Held by a ResourceSlice until its grant and slice identity are revoked.
    pub const RESOURCE_SLICE: &str = "authentication.strait.dev/slice-cleanup";
    /// Held by gateways until their tunnel and keys are gone.
    pub const GATEWAY: &str = "networking.strait.dev/gateway-cleanup";
    /// Held by a consumer's ForeignCluster while the gateways its peering
    /// created (a GatewayClient here, a GatewayServer on the provider) exist.
    pub const PEERING_GATEWAYS: &str = "networking.strait.dev/peering-gateways";
    /// Held by Network and IP until their allocation is released.
    pub const IPAM: &str = "ipam.strait.dev/release-allocation";
    /// Held by a VirtualNode until its node is drained and its kubelet removed.
    pub const VIRTUAL_NODE: &str = "offloading.strait.dev/virtual-node-drain";
    /// Held by a NamespaceOffloading until remote namespaces are deleted.
    pub const NAMESPACE_OFFLOADING: &str = "offloading.strait.dev/remote-namespaces";
    /// Held by a NamespaceMap until the namespaces it asked for are deleted.
    pub const NAMESPACE_MAP: &str = "offloading.strait.dev/remote-namespace-cleanup";
    /// Held by a ShadowPod until its pod is gone.
    pub const SHADOW_POD: &str = "offloading.strait.dev/shadow-pod";
}

pub mod label {
    /// Cluster ID of the remote cluster a resource belongs to. Controllers
    /// create the ForeignCluster of any ID they find here.
    pub const REMOTE_CLUSTER_ID: &str = "strait.dev/remote-cluster-id";
    /// Cluster ID of the cluster that created a reflected resource.
    pub const ORIGIN_CLUSTER_ID: &str = "strait.dev/origin-cluster-id";
    /// Set to "strait" on everything Strait creates on its own.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const MANAGED_BY_VALUE: &str = "strait";
    /// Node label of virtual nodes: `strait.dev/type=virtual-node`.
    pub const NODE_TYPE: &str = "strait.dev/type";
    pub const NODE_TYPE_VIRTUAL: &str = "virtual-node";
    /// On ShadowPods and Nodes: the virtual node an offloaded pod runs on.
    pub const VIRTUAL_NODE: &str = "offloading.strait.dev/virtual-node";
    /// On reflected objects: the namespace they come from on the consumer.
    pub const ORIGIN_NAMESPACE: &str = "offloading.strait.dev/origin-namespace";
    /// On a GatewayServer/GatewayClient the network module created from a
    /// peering (value "true"): only these does it update and remove; a
    /// gateway without it is the user's.
    pub const PEERING_GATEWAY: &str = "networking.strait.dev/peering-gateway";
    /// Marks a Secret as a tenant nonce.
    pub const NONCE_SECRET: &str = "authentication.strait.dev/nonce";
}

pub mod annotation {
    /// Set by the user to keep a resource out of reflection.
    pub const SKIP_REFLECTION: &str = "offloading.strait.dev/skip-reflection";
    /// On a virtual node's Node: `<namespace>/<name>` of its VirtualNode.
    pub const VIRTUAL_NODE: &str = "offloading.strait.dev/virtual-node";
    /// On a provider's tenant namespace: None, Soft or Hard (the controller's
    /// default when absent), how the tenant's quota is enforced.
    pub const QUOTA_ENFORCEMENT: &str = "offloading.strait.dev/quota-enforcement";
}

/// Taint key on virtual nodes; only pods tolerating it are offloaded.
pub const VIRTUAL_NODE_TAINT: &str = "virtual-node.strait.dev/not-allowed";

/// Namespace Strait's own components and per-cluster objects live in (the
/// chart's release namespace by default).
pub const SYSTEM_NAMESPACE: &str = "strait";

/// Where a cluster keeps its identity, created at install by the
/// authentication controller.
pub mod identity {
    /// ConfigMap in [`super::SYSTEM_NAMESPACE`] holding the cluster ID
    /// (key [`CLUSTER_ID_KEY`]) and the public key (key [`PUBLIC_KEY_KEY`]).
    pub const CLUSTER_IDENTITY_CONFIGMAP: &str = "strait-cluster-identity";
    pub const CLUSTER_ID_KEY: &str = "clusterID";
    pub const PUBLIC_KEY_KEY: &str = "publicKey";
    /// Secret in [`super::SYSTEM_NAMESPACE`] with the cluster's private key;
    /// only the authentication controller reads it.
    pub const CLUSTER_KEY_SECRET: &str = "strait-cluster-key";
}

/// Namespace that holds everything about one peer: on a provider, the
/// consumer's tenant namespace; on a consumer, the provider's Identities and
/// ResourceSlices.
pub fn tenant_namespace(remote_cluster_id: &str) -> String {
    format!("strait-tenant-{remote_cluster_id}")
}

/// Name of the Secret (key `kubeconfig`, in [`SYSTEM_NAMESPACE`]) with the
/// credentials a user supplies once for peering with `remote_cluster_id`.
pub fn peering_kubeconfig_secret(remote_cluster_id: &str) -> String {
    format!("{remote_cluster_id}-kubeconfig")
}
