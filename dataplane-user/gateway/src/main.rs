//! strait-gateway: one end of a WireGuard tunnel between two clusters.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context as _;
use clap::Parser;
use strait_gateway::{
    backend::{UserspaceDatapath, WireguardMode},
    run::{run, Controls, RunOptions},
    GatewayConfig,
};

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
struct Cli {
    /// YAML: `server:` or `client:` (GatewayServer/GatewayClient spec),
    /// `peerPublicKey:` (PublicKey spec) or `peerPublicKeyFile:`, `tunnel:`
    /// addresses, optional `privateKeyFile:` and `publicKeyFile:`.
    #[arg(long)]
    config: PathBuf,
    /// kernel: kernel WireGuard or fail; userspace: never the kernel; auto:
    /// kernel where the module exists.
    #[arg(long, value_enum, default_value = "auto")]
    wireguard: WireguardMode,
    /// The userspace datapath: fast (Strait's, with offloads) or embedded
    /// (defguard's boringtun device).
    #[arg(long, value_enum, default_value = "fast")]
    datapath: UserspaceDatapath,
    /// Where to write the Connection-shaped status (JSON), refreshed 4 times a second.
    #[arg(long)]
    status_file: Option<PathBuf>,
    /// Address for GET /metrics (Prometheus) and /healthz.
    #[arg(long)]
    metrics_address: Option<SocketAddr>,
    /// Interval of the ICMP probes to the peer's tunnel address, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    probe_interval_ms: u64,
    /// How long a rotated public key is published before it is used, in
    /// milliseconds; the peer prepares a session for it meanwhile.
    #[arg(long, default_value_t = 2000)]
    rotation_notice_ms: u64,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = GatewayConfig::from_file(&cli.config)?;
    let plan = config.plan()?;
    let controls = Controls {
        stop: Arc::new(AtomicBool::new(false)),
        rotate: Arc::new(AtomicBool::new(false)),
    };
    // A thread of our own receives the signals, started before any datapath:
    // the embedded boringtun device blocks SIGTERM and SIGINT in the threads
    // created after it and would otherwise consume them and stop by itself,
    // leaving this process running and its interface behind.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .context("installing the signal handlers")?;
    let (stop, rotate) = (controls.stop.clone(), controls.rotate.clone());
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == signal_hook::consts::SIGHUP {
                    rotate.store(true, Ordering::Relaxed);
                } else {
                    stop.store(true, Ordering::Relaxed);
                }
            }
        })
        .context("starting the signal thread")?;
    let options = RunOptions {
        wireguard: cli.wireguard,
        datapath: cli.datapath,
        status_file: cli.status_file,
        metrics_address: cli.metrics_address,
        probe_interval: Duration::from_millis(cli.probe_interval_ms),
        rotation_notice: Duration::from_millis(cli.rotation_notice_ms),
    };
    run(&plan, &options, &controls)?;
    Ok(())
}
