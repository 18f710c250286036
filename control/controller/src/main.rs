//! strait-controller: runs the controllers of the modules it is told to,
//! against the cluster of its kubeconfig (in-cluster config in a pod).
use anyhow::{bail, Context as _, Result};
use clap::Parser;
use std::time::Duration;
use strait_authentication::ApiServerEndpoint;
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
    /// Run the authentication module: this cluster's identity, the
    /// declarative peering handshake (Tenant / Identity) and ResourceSlices.
    #[arg(long)]
    authentication: bool,
    /// This cluster's ID (a DNS label). Default: the stored one, else one
    /// derived from the kube-system namespace. It never changes once stored.
    #[arg(long = "cluster-id", value_name = "ID")]
    cluster_id: Option<String>,
    /// HTTPS address consumers reach this cluster's API server at, written
    /// into the Identities it issues. Default: the address this controller uses.
    #[arg(long = "api-server-address", value_name = "URL")]
    api_server_address: Option<String>,
    /// PEM CA of that API server, handed to consumers. Default: the CA this
    /// controller trusts (in a pod, the service account's).
    #[arg(long = "api-server-ca-file", value_name = "FILE")]
    api_server_ca_file: Option<std::path::PathBuf>,
    /// Validity of the client certificates issued to consumers, in seconds;
    /// reissued at half of it. Kubernetes' CSR API refuses less than 600.
    #[arg(long = "identity-lifetime-seconds", value_name = "SECONDS", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(2..))]
    identity_lifetime_seconds: u64,
    /// Share of the free capacity one ResourceSlice may be granted (0 < f <= 1).
    #[arg(
        long = "share-fraction",
        value_name = "FRACTION",
        default_value_t = 0.5
    )]
    share_fraction: f64,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    if !cli.network && !cli.authentication {
        bail!("no module enabled: pass --network and/or --authentication");
    }
    if !(cli.share_fraction > 0.0 && cli.share_fraction <= 1.0) {
        bail!(
            "--share-fraction must be in (0, 1], not {}",
            cli.share_fraction
        );
    }
    // Flags are checked before connecting, so a mistake is reported at once.
    let network_settings = if cli.network {
        Some(network_settings(&cli)?)
    } else {
        None
    };
    let config = kube::Config::infer()
        .await
        .context("reading the Kubernetes client configuration (kubeconfig or in-cluster)")?;
    let client = kube::Client::try_from(config.clone())
        .context("connecting to the Kubernetes API (kubeconfig or in-cluster config)")?;
    let network = async {
        if let Some((reserved, pools)) = network_settings {
            network_module(&cli, reserved, pools, client.clone()).await
        } else {
            std::future::pending().await
        }
    };
    let authentication = async {
        if cli.authentication {
            authentication_module(&cli, &config, client.clone()).await
        } else {
            std::future::pending().await
        }
    };
    tokio::select! {
        result = network => result?,
        result = authentication => result?,
        _ = tokio::signal::ctrl_c() => tracing::info!("stopping"),
    }
    Ok(())
}

type Cidrs = Vec<ipnet::IpNet>;

fn network_settings(cli: &Cli) -> Result<(Cidrs, Cidrs)> {
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
    Ok((reserved, pools))
}

async fn network_module(
    cli: &Cli,
    reserved: Cidrs,
    pools: Cidrs,
    client: kube::Client,
) -> Result<()> {
    tracing::info!(reserved = ?cli.reserved, pools = ?cli.pools, "network module starting");
    tokio::select! {
        result = ipam_controller::run(client.clone(), Allocator::new(reserved, pools)) => result.context("IPAM controller")?,
        () = configuration_controller::run(client.clone()) => {}
        () = internal_node_controller::run(client) => {}
    }
    Ok(())
}

async fn authentication_module(
    cli: &Cli,
    config: &kube::Config,
    client: kube::Client,
) -> Result<()> {
    let mut api_server = ApiServerEndpoint::from_kube_config(config);
    if let Some(address) = &cli.api_server_address {
        api_server.address = address.clone();
    }
    if let Some(path) = &cli.api_server_ca_file {
        api_server.ca_pem = std::fs::read_to_string(path)
            .with_context(|| format!("--api-server-ca-file {}", path.display()))?;
    }
    let settings = strait_authentication::Config {
        cluster_id: cli.cluster_id.clone(),
        api_server,
        identity_lifetime: Duration::from_secs(cli.identity_lifetime_seconds),
        share_fraction: cli.share_fraction,
        identity_check_interval: strait_authentication::Config::DEFAULT_IDENTITY_CHECK_INTERVAL,
    };
    strait_authentication::run(client, settings)
        .await
        .context("authentication module")
}
