//! Strait's userspace dataplane: loads the eBPF programs built from
//! `dataplane-ebpf/`, attaches them to interfaces (tcx, or clsact where tcx is
//! missing), and owns the maps pinned under a bpffs directory so that an agent
//! restart neither drops traffic nor loses state.

pub mod bpffs;
pub mod cluster;
pub mod counter;
pub mod drops;
mod error;
pub mod fabric;
pub mod forward;
pub mod metrics;
pub mod nat;
pub mod programs;
pub mod tc;

pub use error::Error;

/// Default root of everything Strait pins.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/strait";
