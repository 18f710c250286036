//! strait-gateway: one end of a WireGuard tunnel between two clusters.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context as _;
use clap::Parser as _;
use strait_gateway::{
    cli::Cli,
    run::{run, Controls, RunOptions},
    GatewayConfig,
};

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
