//! The Strait demo (`cargo xtask demo`): acts that each build something on
//! simulated hosts, narrate what they do, and record every check they make.
//! The binary `strait-demo` only parses flags and calls [`run`].
//!
//! Everything the demo creates (namespaces, pin directories, processes, a
//! scratch directory with the kubeconfigs) is owned by guards dropped when
//! the acts are done, also when a check fails; what a killed earlier run
//! left is swept first.

pub mod control_plane;
mod counters;
mod fabric;
mod gateways;
pub mod k8s;
pub mod network;
pub mod process;
mod report;
mod service;
pub mod sweep;

use std::path::PathBuf;

pub use report::Report;

/// What the acts share: where the demo's files go, and how long it may wait.
pub struct Stage {
    /// A directory of this run's files (kubeconfigs, configs, logs), removed on drop.
    pub dir: crate::gateway::Scratch,
}

impl Stage {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path(name)
    }
}

/// Runs every act; returns the report (its last line is the verdict).
/// With `keep`, leaves everything running until Ctrl-C before cleaning up.
pub fn run(keep: bool) -> anyhow::Result<Report> {
    sweep::stale_runs();
    let stage = Stage {
        dir: crate::gateway::Scratch::new(sweep::SCRATCH_LABEL)?,
    };
    let mut report = Report::default();

    report.act("1. traffic counters");
    if let Err(error) = counters::act(&mut report) {
        report.failed("the counters act ran to its end", &error);
    }
    report.act("2. the Geneve fabric");
    if let Err(error) = fabric::act(&mut report) {
        report.failed("the fabric act ran to its end", &error);
    }

    report.act("3. two clusters peer with kubectl apply, and offload a pod");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The hosts of act 4 exist first: each controller is told where its
    // gateways run.
    let sites = match network::Sites::new() {
        Ok(sites) => Some(sites),
        Err(error) => {
            report.failed("the simulated hosts were created", &error);
            None
        }
    };
    let clusters = match sites.as_ref() {
        Some(sites) => match control_plane::act(&runtime, &stage, sites, &mut report) {
            Ok(clusters) => Some(clusters),
            Err(error) => {
                report.failed("the control-plane act ran to its end", &error);
                None
            }
        },
        None => None,
    };

    report.act("4. pods of two clusters with the same pod CIDR talk through Strait");
    let dataplane = match (clusters.as_ref(), sites.as_ref()) {
        (Some(clusters), Some(sites)) => {
            match network::act(&runtime, &stage, clusters, sites, &mut report) {
                Ok(dataplane) => Some(dataplane),
                Err(error) => {
                    report.failed("the network act ran to its end", &error);
                    None
                }
            }
        }
        _ => {
            report.failed(
                "the network act could start",
                &anyhow::anyhow!("it needs the clusters of act 3"),
            );
            None
        }
    };

    if keep {
        if let Some(clusters) = clusters.as_ref() {
            clusters.print_access();
        }
        if let Some(sites) = sites.as_ref() {
            sites.print_access();
        }
        println!("\n--keep: everything stays up; press Ctrl-C to clean up and exit.");
        process::wait_for_interrupt();
        println!("cleaning up...");
    }
    // The fabric agents, then the controllers (with their gateways and
    // virtual kubelets), then the namespaces they ran in.
    drop(dataplane);
    drop(clusters);
    drop(runtime);
    // Children of the children (virtual kubelets, gateways) that outlived their parent.
    sweep::processes_using(&stage.dir.dir);
    drop(sites);
    drop(stage);
    Ok(report)
}
