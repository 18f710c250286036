//! strait-controller: runs the controllers of the modules it is told to,
//! against the cluster of its kubeconfig (in-cluster config in a pod).
use anyhow::{bail, Context as _, Result};
use clap::Parser;
use futures::future::BoxFuture;
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
    #[command(flatten)]
    offloading: OffloadingArgs,
}

/// The offloading module's flags.
#[derive(clap::Args, Debug)]
struct OffloadingArgs {
    /// Run the offloading module: VirtualNodes (one virtual kubelet each),
    /// NamespaceOffloadings, and the provider side (NamespaceMaps,
    /// ShadowPods with tenant quota, ShadowEndpointSlices).
    #[arg(long)]
    offloading: bool,
    /// This cluster's ID (default: from the cluster identity ConfigMap).
    #[arg(long)]
    cluster_id: Option<String>,
    /// Run each virtual kubelet as a child process of this binary (local
    /// simulation) instead of as a Deployment.
    #[arg(long, value_name = "PATH")]
    virtual_kubelet_binary: Option<std::path::PathBuf>,
    /// Image of the virtual kubelet Deployments.
    #[arg(long, default_value = concat!("ghcr.io/strait-dev/strait-virtual-kubelet:", env!("CARGO_PKG_VERSION")))]
    virtual_kubelet_image: String,
    /// Seconds a provider may be unreachable before its virtual nodes are NotReady.
    #[arg(long, default_value_t = 10)]
    not_ready_grace_seconds: u64,
    /// Milliseconds between two node status checks of a virtual kubelet.
    #[arg(long, default_value_t = 1000)]
    node_status_interval_ms: u64,
    /// Quota enforcement of tenants whose namespace has no
    /// offloading.strait.dev/quota-enforcement annotation: None, Soft or Hard.
    #[arg(long, default_value = "Hard")]
    quota_enforcement: strait_offloading::shadow_pod_controller::Enforcement,
}

impl OffloadingArgs {
    fn module(&self) -> strait_offloading::module::ModuleConfig {
        use strait_offloading::kubelet::{KubeletSettings, Launcher, ProcessLauncher};
        let local = self.virtual_kubelet_binary.is_some();
        let launcher = match &self.virtual_kubelet_binary {
            Some(binary) => Launcher::Process(ProcessLauncher::new(binary.clone())),
            None => Launcher::Deployment {
                image: self.virtual_kubelet_image.clone(),
                service_account: "strait-virtual-kubelet".into(),
            },
        };
        let mut kubelet = KubeletSettings {
            not_ready_grace: std::time::Duration::from_secs(self.not_ready_grace_seconds),
            status_interval: std::time::Duration::from_millis(self.node_status_interval_ms),
            ..KubeletSettings::default()
        };
        if local {
            kubelet.listen_address = "127.0.0.1:0".into();
            kubelet.node_ip = "127.0.0.1".into();
        }
        strait_offloading::module::ModuleConfig {
            cluster_id: self.cluster_id.clone(),
            launcher,
            kubelet,
            quota_enforcement: self.quota_enforcement,
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    if !cli.network && !cli.offloading.offloading {
        bail!("no module enabled: pass --network and/or --offloading");
    }
    // Flags are checked before connecting, so a mistake is reported as such.
    let network = cli.network.then(|| network_flags(&cli)).transpose()?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (kubeconfig or in-cluster config)")?;
    let mut modules: Vec<BoxFuture<'static, Result<()>>> = Vec::new();
    if let Some(allocator) = network {
        modules.push(network_module(client.clone(), allocator));
    }
    if cli.offloading.offloading {
        let config = cli.offloading.module();
        let client = client.clone();
        modules.push(Box::pin(async move {
            strait_offloading::module::run(client, config)
                .await
                .context("offloading module")
        }));
    }
    tokio::select! {
        (result, _, _) = futures::future::select_all(modules) => result?,
        _ = tokio::signal::ctrl_c() => tracing::info!("stopping"),
    }
    Ok(())
}

/// The network module's IPAM allocator from its flags.
fn network_flags(cli: &Cli) -> Result<Allocator> {
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
    tracing::info!(reserved = ?cli.reserved, pools = ?cli.pools, "network module starting");
    Ok(Allocator::new(reserved, pools))
}

/// The network module's controllers.
fn network_module(client: kube::Client, allocator: Allocator) -> BoxFuture<'static, Result<()>> {
    Box::pin(async move {
        tokio::select! {
            result = ipam_controller::run(client.clone(), allocator) => result.context("IPAM controller")?,
            () = configuration_controller::run(client.clone()) => {}
            () = internal_node_controller::run(client) => {}
        }
        Ok(())
    })
}
