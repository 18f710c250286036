//! The command line of `strait-gateway`, in the library so that what
//! renders it (the chart's gateway template, the controllers) can be
//! checked against it.

use std::{net::SocketAddr, path::PathBuf};

use clap::{CommandFactory as _, Parser};

use crate::backend::{UserspaceDatapath, WireguardMode};

#[derive(Parser)]
#[command(
    name = "strait-gateway",
    about = "Strait's WireGuard gateway: one end of the tunnel to a peered cluster",
    long_about = "Runs one end of a WireGuard tunnel to a peered cluster, as server (listens) or \
client (dials), from a GatewayServer or GatewayClient spec and the peer's PublicKey spec. The \
private key is generated in memory (or read from a mounted Secret) and never written; only the \
public key is published. SIGHUP rotates a generated key; SIGTERM/SIGINT stop and remove the \
interface."
)]
pub struct Cli {
    /// YAML: `server:` or `client:` (GatewayServer/GatewayClient spec),
    /// `peerPublicKey:` (PublicKey spec) or `peerPublicKeyFile:`, `tunnel:`
    /// addresses, optional `privateKeyFile:` and `publicKeyFile:`.
    #[arg(long)]
    pub config: PathBuf,
    /// kernel: kernel WireGuard or fail; userspace: never the kernel; auto:
    /// kernel where the module exists.
    #[arg(long, value_enum, default_value = "auto")]
    pub wireguard: WireguardMode,
    /// The userspace datapath: fast (Strait's, with offloads) or embedded
    /// (defguard's boringtun device).
    #[arg(long, value_enum, default_value = "fast")]
    pub datapath: UserspaceDatapath,
    /// Where to write the Connection-shaped status (JSON), refreshed 4 times a second.
    #[arg(long)]
    pub status_file: Option<PathBuf>,
    /// Address for GET /metrics (Prometheus), /status (the status file's
    /// JSON) and /healthz.
    #[arg(long)]
    pub metrics_address: Option<SocketAddr>,
    /// Interval of the ICMP probes to the peer's tunnel address, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub probe_interval_ms: u64,
    /// How long a rotated public key is published before it is used, in
    /// milliseconds; the peer prepares a session for it meanwhile.
    #[arg(long, default_value_t = 2000)]
    pub rotation_notice_ms: u64,
}

/// The clap definition, for checking rendered arguments:
/// `command().try_get_matches_from(args)`.
pub fn command() -> clap::Command {
    Cli::command()
}
