//! Strait's offloading module. Consumer side: the VirtualNode controller
//! (one virtual kubelet per VirtualNode) and the NamespaceOffloading
//! controller (remote namespaces, pod placement). Provider side: the
//! NamespaceMap controller (namespaces for a tenant), the ShadowPod
//! controller (tenant quota, real pods, status back) and the
//! ShadowEndpointSlice controller. The reflectors the virtual kubelet runs
//! live in [`reflection`]. It needs an Identity's kubeconfig (from the
//! authentication module or made by hand) and nothing of the network module.

mod error;
pub mod ipmap;
pub mod kubelet;
pub mod module;
pub mod namespace_map_controller;
pub mod namespace_offloading_controller;
pub mod placement;
pub mod quantity;
pub mod rbac;
pub mod reflection;
pub mod remote;
pub mod shadow_endpointslice_controller;
pub mod shadow_pod_controller;
pub mod status;
pub mod virtual_node_controller;
pub mod workqueue;

pub use error::Error;
