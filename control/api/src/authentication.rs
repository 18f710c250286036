//! authentication.strait.dev: Tenant, Identity and ResourceSlice, the
//! declarative peering handshake (see DESIGN.md, "Declarative peering").

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{rules, Condition, SecretReference};

/// Resource amounts by name (cpu, memory, pods, ephemeral-storage, nvidia.com/gpu, ...).
pub type ResourceList = BTreeMap<String, Quantity>;

/// Credentials a provider hands to a consumer: where its API server is and
/// the client certificate to reach it with.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuthParams {
    /// PEM bundle of the CA that signed `signedCRT` and the API server's certificate.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca: String,
    /// PEM client certificate issued for the consumer's CSR; short-lived, renewed before expiry.
    #[serde(
        default,
        rename = "signedCRT",
        skip_serializing_if = "String::is_empty"
    )]
    pub signed_crt: String,
    /// The provider's API server as the consumer must reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<ApiServer>,
    /// HTTP CONNECT proxy to reach the API server through, if any.
    #[serde(default, rename = "proxyURL", skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::url("proxyURL"))]
    pub proxy_url: Option<String>,
}

/// How to reach an API server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApiServer {
    /// HTTPS URL of the API server.
    #[x_kube(validation = rules::url("apiServer.address"))]
    pub address: String,
    /// PEM CA to verify the API server with, when it differs from `ca`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca: String,
    /// Whether the API server's certificate is signed by a publicly trusted CA.
    #[serde(default)]
    pub trusted_ca: bool,
}

/// A consumer's request to peer, created on the provider. The provider
/// verifies the signed nonce and answers with a tenant namespace and a
/// control-plane Identity.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    derive = "PartialEq",
    group = "authentication.strait.dev",
    version = "v1beta1",
    kind = "Tenant",
    plural = "tenants",
    shortname = "tn",
    category = "strait",
    status = "TenantStatus",
    doc = "A consumer cluster's request to peer, living on the provider (cluster-scoped).",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.clusterID"}"#,
    printcolumn = r#"{"name":"Condition","type":"string","jsonPath":".spec.tenantCondition"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// Cluster ID of the consumer. Immutable.
    #[schemars(length(min = 1, max = 63), regex(pattern = rules::CLUSTER_ID_PATTERN))]
    #[x_kube(validation = rules::immutable("clusterID"))]
    #[serde(rename = "clusterID")]
    pub cluster_id: String,
    /// The consumer's Ed25519 public key, base64, used to verify `signature`. Immutable.
    #[schemars(length(min = 1))]
    #[x_kube(validation = rules::immutable("publicKey"))]
    pub public_key: String,
    /// The provider's nonce for this consumer, signed with the consumer's private key, base64.
    #[schemars(length(min = 1))]
    pub signature: String,
    /// PEM certificate signing request for the consumer's control-plane identity.
    #[serde(rename = "csr")]
    #[schemars(length(min = 1))]
    pub csr: String,
    /// Active: the consumer may create ResourceSlices. Cordoned: existing slices
    /// stay, new ones are refused. Drained: existing grants are withdrawn.
    #[serde(default)]
    pub tenant_condition: TenantCondition,
}

/// Whether a tenant may use resources.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TenantCondition {
    #[default]
    Active,
    Cordoned,
    Drained,
}

/// Observed state of a Tenant.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// Credentials issued to the consumer once the handshake is verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_params: Option<AuthParams>,
    /// Namespace on the provider dedicated to this consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_namespace: Option<String>,
    /// Verified (signature and CSR checked) and Ready (identity issued).
    #[serde(default)]
    #[x_kube(merge_strategy = rules::conditions_merge())]
    pub conditions: Vec<Condition>,
}

/// Credentials a provider issued to this (consumer) cluster: the consumer
/// applies it, and controllers reach the provider only through it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    derive = "PartialEq",
    group = "authentication.strait.dev",
    version = "v1beta1",
    kind = "Identity",
    plural = "identities",
    shortname = "id",
    namespaced,
    category = "strait",
    status = "IdentityStatus",
    doc = "Credentials to a provider cluster's API server, scoped to the control plane or to one ResourceSlice.",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.clusterID"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IdentitySpec {
    /// Cluster ID of the provider that issued the credentials. Immutable.
    #[schemars(length(min = 1, max = 63), regex(pattern = rules::CLUSTER_ID_PATTERN))]
    #[x_kube(validation = rules::immutable("clusterID"))]
    #[serde(rename = "clusterID")]
    pub cluster_id: String,
    /// ControlPlane: for peering controllers. ResourceSlice: for the virtual kubelets of one slice. Immutable.
    #[x_kube(validation = rules::immutable("type"))]
    #[serde(rename = "type")]
    pub type_: IdentityType,
    /// The certificate, CA and API server address to use.
    pub auth_params: AuthParams,
    /// Tenant namespace on the provider that these credentials are limited to.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
}

/// What an Identity may be used for.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityType {
    ControlPlane,
    ResourceSlice,
}

/// Observed state of an Identity.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IdentityStatus {
    /// Secret holding the kubeconfig generated from this Identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret_ref: Option<SecretReference>,
    /// Ready (kubeconfig written) and Expiring (certificate close to expiry).
    #[serde(default)]
    #[x_kube(merge_strategy = rules::conditions_merge())]
    pub conditions: Vec<Condition>,
}

/// Resources a consumer asks a provider for. Created on the consumer,
/// mirrored to the provider through the control-plane Identity; the provider
/// answers in the status.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    derive = "PartialEq",
    group = "authentication.strait.dev",
    version = "v1beta1",
    kind = "ResourceSlice",
    plural = "resourceslices",
    shortname = "rslice",
    namespaced,
    category = "strait",
    status = "ResourceSliceStatus",
    doc = "Resources a consumer cluster asks a provider for; the provider's answer is in the status.",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.providerClusterID"}"#,
    printcolumn = r#"{"name":"Class","type":"string","jsonPath":".spec.class"}"#,
    printcolumn = r#"{"name":"Resources","type":"string","jsonPath":".status.conditions[?(@.type==\"Resources\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSliceSpec {
    /// Cluster ID of the consumer asking. Immutable.
    #[schemars(length(min = 1, max = 63), regex(pattern = rules::CLUSTER_ID_PATTERN))]
    #[x_kube(validation = rules::immutable("consumerClusterID"))]
    #[serde(rename = "consumerClusterID")]
    pub consumer_cluster_id: String,
    /// Cluster ID of the provider asked. Immutable.
    #[schemars(length(min = 1, max = 63), regex(pattern = rules::CLUSTER_ID_PATTERN))]
    #[x_kube(validation = rules::immutable("providerClusterID"))]
    #[serde(rename = "providerClusterID")]
    pub provider_cluster_id: String,
    /// Free-form class the provider's policy may act on (for example `gpu`, `arm64`).
    #[serde(default = "default_class")]
    #[schemars(length(min = 1, max = 63), regex(pattern = rules::CLUSTER_ID_PATTERN))]
    pub class: String,
    /// Amounts asked for, by resource name; each must be zero or more.
    #[serde(default)]
    #[x_kube(validation = rules::non_negative_quantities("resources"))]
    pub resources: ResourceList,
    /// PEM certificate signing request for the slice-scoped Identity.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub csr: String,
    /// Labels the consumer wants on virtual nodes created from this slice.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_labels: BTreeMap<String, String>,
}

fn default_class() -> String {
    "default".into()
}

/// The provider's answer to a ResourceSlice.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSliceStatus {
    /// Amounts granted, possibly less than asked.
    #[serde(default)]
    pub resources: ResourceList,
    /// Credentials for the virtual kubelets of this slice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_params: Option<AuthParams>,
    /// Authentication (slice identity issued) and Resources (reason Accepted or
    /// Denied, with the policy's message).
    #[serde(default)]
    #[x_kube(merge_strategy = rules::conditions_merge())]
    pub conditions: Vec<Condition>,
}
