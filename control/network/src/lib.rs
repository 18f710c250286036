//! The network module's decisions, as pure functions of their inputs so
//! controllers stay thin: which range a peer's CIDR is known by locally
//! (IPAM), and which NAT mappings and fabric routes follow from a peering's
//! Configuration.

pub mod configuration_controller;
pub mod gateway;
pub mod internal_node_controller;
pub mod ipam;
pub mod ipam_controller;
pub mod render;
pub mod route_controller;
