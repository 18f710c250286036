//! The GatewayServer and GatewayClient controllers: one WireGuard gateway
//! per CR, run either as the chart's template (a Deployment, and a Service
//! for a server) in a cluster, or as a supervised `strait-gateway --config`
//! child process in the local simulation ([`local`]). In the local
//! simulation the controller also does what the gateway pod does in a
//! cluster: it publishes the gateway's public key as the PublicKey
//! `local-<name>`, feeds it the peer's key from the PublicKey
//! `remote-<name>`, and copies its status file into the Connection `<name>`.
//! Both ways report the peering's `NetworkReady` on its ForeignCluster
//! ([`readiness`]).

pub mod controller;
pub mod in_cluster;
pub mod key_exchange;
pub mod local;
pub mod peering_gateways;
pub mod readiness;
pub mod template;

pub use controller::{run, GatewayMode, Settings};

/// Name of the PublicKey this cluster publishes for gateway `name` (copy its
/// spec to the peer cluster as `remote-<peer gateway name>`).
pub fn local_key_name(gateway: &str) -> String {
    format!("local-{gateway}")
}

/// Name of the PublicKey holding the peer's key for gateway `name`.
pub fn remote_key_name(gateway: &str) -> String {
    format!("remote-{gateway}")
}

/// Name gateway `name`'s NAT agent reports under in its peering's
/// NatConfigurations' `status.hosts` (the gateway Deployment's name in a
/// cluster, so both ways read the same).
pub fn nat_host(gateway: &str) -> String {
    format!("gw-{gateway}")
}

/// Annotation on a GatewayServer/GatewayClient: the /31 or /127 (or any
/// prefix with two addresses to spare) the two tunnel ends take their
/// addresses from; both sides must carry the same value. The server takes
/// the first address, the client the second.
pub const TUNNEL_CIDR_ANNOTATION: &str = "networking.strait.dev/tunnel-cidr";
/// Tunnel addresses when the annotation is absent.
pub const DEFAULT_TUNNEL_CIDR: &str = "fd00:5354::/127";
