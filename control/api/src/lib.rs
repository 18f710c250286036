//! Strait's API: one Rust type per custom resource, from which the CRDs in
//! charts/strait/crds/ are generated (`cargo xtask crdgen`).

pub mod admission;
pub mod authentication;
mod common;
pub mod condition;
pub mod core;
pub mod ipam;
pub mod names;
pub mod networking;
pub mod offloading;
pub mod rbac;
pub mod rules;

pub use common::{ObjectReference, SecretReference};
pub use condition::{Condition, ConditionStatus, ConditionUpdate};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD of Strait, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        core::ForeignCluster::crd(),
        authentication::Tenant::crd(),
        authentication::Identity::crd(),
        authentication::ResourceSlice::crd(),
        networking::Configuration::crd(),
        networking::GatewayServer::crd(),
        networking::GatewayClient::crd(),
        networking::PublicKey::crd(),
        networking::Connection::crd(),
        networking::InternalNode::crd(),
        networking::RouteConfiguration::crd(),
        networking::NatConfiguration::crd(),
        ipam::Network::crd(),
        ipam::IP::crd(),
        offloading::VirtualNode::crd(),
        offloading::NamespaceOffloading::crd(),
        offloading::ShadowPod::crd(),
        offloading::ShadowEndpointSlice::crd(),
        offloading::NamespaceMap::crd(),
    ]
}

/// The file a CRD is written to under charts/strait/crds/: `<group>_<plural>.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}
