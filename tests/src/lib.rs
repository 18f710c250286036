//! Test bed for Strait: network namespaces standing in for nodes and pods,
//! veths between them, and helpers to run Strait's binaries inside them.
//!
//! Everything created here has a name unique to this process and is removed
//! on drop, also when a test panics; namespaces left by a killed run are swept
//! by the next one. Addresses come from 198.18.0.0/15 and fd00::/8 only.

pub mod bins;
pub mod bpffs;
pub mod capture;
pub mod demo;
pub mod fabric;
pub mod fabric_topology;
pub mod gateway;
pub mod icmp_errors;
pub mod netns;
pub mod packets;
pub mod probe;
pub mod relay;
pub mod topology;
pub mod traffic;

pub use fabric::{FabricAgent, FabricCli};
pub use netns::{NetNs, Veth};
pub use topology::NodePair;
