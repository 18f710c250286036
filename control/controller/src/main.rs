//! strait-controller: runs the controllers of the modules it is told to,
//! against the cluster of its kubeconfig (in-cluster config in a pod).
use anyhow::{bail, Context as _, Result};
use clap::Parser;
use strait_controller::leader::{LeaderElection, Timing};
use strait_network::{
    configuration_controller, internal_node_controller,
    ipam::{parse_cidr, Allocator},
    ipam_controller,
};
use tracing_subscriber::EnvFilter;

/// Strait's module controllers. Modules are independent: enable the ones
/// this cluster uses.
#[derive(Parser, Debug)]
#[command(name = "strait-controller", version, about)]
struct Cli {
    /// Run the network module: IPAM of remapped CIDRs, peering
    /// Configurations, and InternalNodes from Nodes.
    #[arg(long)]
    network: bool,
    /// CIDRs this cluster uses itself (pods, services, nodes): peers that
    /// overlap them are remapped. Repeatable, dual-stack.
    #[arg(long = "reserved-cidr", value_name = "CIDR")]
    reserved: Vec<String>,
    /// Pools remapped ranges are taken from. Repeatable, one or more per family.
    #[arg(long = "remap-pool", value_name = "CIDR")]
    pools: Vec<String>,
    /// Reconcile only while holding the Lease `strait-controller` in this
    /// namespace, so several replicas can run with one active (the chart
    /// passes its release namespace). Without it, this process always runs.
    #[arg(
        long,
        env = "STRAIT_LEADER_ELECTION_NAMESPACE",
        value_name = "NAMESPACE"
    )]
    leader_election_namespace: Option<String>,
    /// This replica's name in the Lease (the chart passes the pod name).
    #[arg(long, env = "POD_NAME", default_value = "strait-controller")]
    leader_identity: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    if !cli.network {
        bail!("no module enabled: pass --network (the only module served so far)");
    }
    let parse_all = |what: &str, list: &[String]| -> Result<Vec<_>> {
        list.iter()
            .map(|c| parse_cidr(c).with_context(|| format!("--{what} {c}")))
            .collect()
    };
    let reserved = parse_all("reserved-cidr", &cli.reserved)?;
    let pools = parse_all("remap-pool", &cli.pools)?;
    if pools.is_empty() {
        bail!("--network needs at least one --remap-pool to take remapped ranges from");
    }
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (kubeconfig or in-cluster config)")?;
    let mut election = cli.leader_election_namespace.as_deref().map(|namespace| {
        LeaderElection::new(
            client.clone(),
            namespace,
            "strait-controller",
            &cli.leader_identity,
            Timing::default(),
        )
    });
    if let Some(election) = election.as_mut() {
        tracing::info!(identity = %cli.leader_identity, "waiting to become leader");
        election.acquire().await.context("leader election")?;
    }
    // Without election, `hold` never returns.
    let lost = async {
        match election.as_mut() {
            Some(election) => election.hold().await,
            None => std::future::pending().await,
        }
    };
    tracing::info!(reserved = ?cli.reserved, pools = ?cli.pools, "network module starting");
    tokio::select! {
        error = lost => bail!("stopping, no longer leader: {error}"),
        result = ipam_controller::run(client.clone(), Allocator::new(reserved, pools)) => result.context("IPAM controller")?,
        () = configuration_controller::run(client.clone()) => {}
        () = internal_node_controller::run(client) => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("stopping"),
    }
    Ok(())
}
