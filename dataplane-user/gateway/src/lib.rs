//! strait-gateway: one end of the WireGuard tunnel between two clusters.
//!
//! The gateway is configured from a GatewayServer or GatewayClient spec plus
//! the peer's PublicKey spec (`--config FILE`, later from the CRs), owns its
//! private key (generated in memory or read from a mounted Secret, never
//! logged nor written), publishes only its public key, and runs one of three
//! datapaths: kernel WireGuard, defguard's embedded boringtun device, or
//! Strait's fast userspace datapath (TUN offloads, UDP GSO/GRO, batches).
//! It reports a Connection-shaped status as a file and Prometheus metrics.

pub mod backend;
pub mod cli;
pub mod config;
pub mod defguard;
pub mod error;
pub mod fast;
pub mod first_handshake;
pub mod keys;
pub mod metrics;
pub mod mtu;
pub mod probe;
pub mod routes;
pub mod run;
pub mod status;

pub use config::{GatewayConfig, Plan, Role};
pub use error::Error;
pub use keys::{PrivateKey, PublicKey};
pub use status::{GatewayStatus, PeerStats};
