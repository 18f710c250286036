//! strait-controller: runs the controllers of the modules it is told to,
//! against the cluster of its kubeconfig (in-cluster config in a pod).
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use futures::future::BoxFuture;
use strait_authentication::ApiServerEndpoint;
use strait_controller::leader::{LeaderElection, Timing};
use strait_network::{
    configuration_controller, gateway, internal_node_controller,
    ipam::{parse_cidr, Allocator},
    ipam_controller, route_controller,
};
use tracing_subscriber::EnvFilter;

/// Strait's module controllers. Modules are independent: enable the ones
/// this cluster uses.
#[derive(Parser, Debug)]
#[command(name = "strait-controller", version, about)]
struct Cli {
    /// This cluster's ID (a DNS label). Default: the stored one (ConfigMap
    /// strait-cluster-identity), else one derived from the kube-system
    /// namespace. It never changes once stored.
    #[arg(long = "cluster-id", value_name = "ID", global = true)]
    cluster_id: Option<String>,
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    authentication: AuthenticationArgs,
    #[command(flatten)]
    offloading: OffloadingArgs,
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

/// The network module's flags.
#[derive(clap::Args, Debug)]
struct NetworkArgs {
    /// Run the network module: IPAM of remapped CIDRs, peering
    /// Configurations, the nodes' routes toward gateways, and InternalNodes
    /// from Nodes.
    // Explicit ids: clap names an argument after its field, and the three
    // module groups' `enabled` fields would collide.
    #[arg(long = "network", id = "network")]
    enabled: bool,
    /// CIDRs this cluster uses itself (pods, services, nodes): peers that
    /// overlap them are remapped. Repeatable, dual-stack.
    #[arg(long = "reserved-cidr", value_name = "CIDR")]
    reserved: Vec<String>,
    /// Pools remapped ranges are taken from. Repeatable, one or more per family.
    #[arg(long = "remap-pool", value_name = "CIDR")]
    pools: Vec<String>,
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(flatten)]
    routes: RouteArgs,
}

/// How the nodes' routes toward peers' gateways are written.
#[derive(clap::Args, Debug)]
struct RouteArgs {
    /// The fabric agents' `nodeVni` (the VNI gateways use toward nodes):
    /// never given to a peering.
    #[arg(long, value_name = "VNI", default_value_t = route_controller::DEFAULT_NODE_VNI,
          value_parser = clap::value_parser!(u32).range(1..=16_777_215))]
    fabric_node_vni: u32,
    /// The lowest VNI a peering's routes get (each peering its own, kept in
    /// its Configuration's status.vni).
    #[arg(long, value_name = "VNI", default_value_t = route_controller::DEFAULT_FIRST_PEER_VNI,
          value_parser = clap::value_parser!(u32).range(1..=16_777_215))]
    first_peer_vni: u32,
    /// Local simulation: the address nodes send Geneve to for this cluster's
    /// gateways (the gateway node's), published in every GatewayServer and
    /// GatewayClient `status.internalEndpoint`. One per family, repeatable.
    /// In a cluster the gateway pod's addresses are published instead.
    #[arg(long, value_name = "IP")]
    gateway_internal_address: Vec<std::net::IpAddr>,
}

impl NetworkArgs {
    fn route_settings(&self) -> route_controller::Settings {
        let endpoints = if self.gateway.gateway_binary.is_some() {
            route_controller::EndpointSource::Fixed(self.routes.gateway_internal_address.clone())
        } else {
            route_controller::EndpointSource::GatewayPods {
                namespace: self.gateway.release_namespace.clone(),
            }
        };
        route_controller::Settings {
            node_vni: self.routes.fabric_node_vni,
            first_peer_vni: self.routes.first_peer_vni,
            endpoints,
        }
    }
}

/// How the network module runs gateways.
#[derive(clap::Args, Debug)]
struct GatewayArgs {
    /// Run each gateway as a `strait-gateway --config` child process of this
    /// binary (local simulation) instead of rendering the chart's templates.
    #[arg(long, value_name = "PATH")]
    gateway_binary: Option<std::path::PathBuf>,
    /// Local simulation: where each gateway's config, key and status files
    /// go (`DIR/<namespace>.<name>/`).
    #[arg(long, value_name = "DIR", default_value = "/run/strait/gateways")]
    gateway_state_dir: std::path::PathBuf,
    /// Local simulation: run the gateways in this network namespace
    /// (`nsenter --net=PATH`), for example `/run/netns/cluster-a-gw`.
    #[arg(long, value_name = "PATH")]
    gateway_netns: Option<std::path::PathBuf>,
    /// Local simulation: the address peers reach this cluster's gateway
    /// servers at, published in GatewayServer `status.endpoint`.
    #[arg(long, value_name = "ADDRESS")]
    gateway_advertise_address: Option<String>,
    /// Local simulation: an extra argument for every gateway, for example
    /// `--wireguard=userspace`. Repeatable.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    gateway_arg: Vec<String>,
    /// Local simulation: also run each gateway's NAT agent, `PATH nat run
    /// --from-cluster` (the strait-fabric binary), in the gateway's network
    /// namespace: attached to the gateway's tunnel interface, it follows the
    /// NatConfigurations of the gateway's namespace (and remote cluster
    /// label) and reports in their status.hosts as `gw-<gateway name>`. It is
    /// restarted when it exits or the gateway restarts; the gateway's
    /// NatReady condition says whether it runs. Without this flag local
    /// gateways have no NAT (in a cluster the gateway pod's `nat` container
    /// is the agent).
    #[arg(long, value_name = "PATH", requires = "gateway_binary")]
    gateway_nat_binary: Option<std::path::PathBuf>,
    /// Local simulation: bpffs directory under which each gateway's NAT
    /// agent pins its maps and links (`DIR/<gateway interface>`, removed
    /// with the gateway).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/sys/fs/bpf/strait/gateways"
    )]
    gateway_nat_pin_dir: std::path::PathBuf,
    /// Local simulation: the kubeconfig the NAT agents use, as seen from the
    /// gateways' network namespace (default: this controller's own
    /// KUBECONFIG, which must then reach the API server from there too).
    #[arg(long, value_name = "PATH")]
    gateway_nat_kubeconfig: Option<std::path::PathBuf>,
    /// In a cluster: the namespace of the gateway template ConfigMaps (the
    /// chart's release namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "strait")]
    release_namespace: String,
}

impl GatewayArgs {
    fn settings(&self, cluster_id: Option<String>) -> gateway::Settings {
        let mode = match &self.gateway_binary {
            Some(binary) => {
                let mode = gateway::controller::local_settings(
                    binary.clone(),
                    self.gateway_state_dir.clone(),
                    self.gateway_netns.clone(),
                    self.gateway_advertise_address.clone(),
                    self.gateway_arg.clone(),
                );
                match self.nat_agents() {
                    Some(nat) => mode.with_nat_agents(nat),
                    None => mode,
                }
            }
            None => gateway::GatewayMode::Cluster {
                release_namespace: self.release_namespace.clone(),
            },
        };
        gateway::Settings { mode, cluster_id }
    }

    fn nat_agents(&self) -> Option<gateway::local::NatAgents> {
        Some(gateway::local::NatAgents {
            binary: self.gateway_nat_binary.clone()?,
            pin_root: self.gateway_nat_pin_dir.clone(),
            kubeconfig: self.gateway_nat_kubeconfig.clone(),
            poll_interval: std::time::Duration::from_millis(500),
        })
    }
}

/// The authentication module's flags.
#[derive(clap::Args, Debug)]
struct AuthenticationArgs {
    /// Run the authentication module: this cluster's identity, the
    /// declarative peering handshake (Tenant / Identity) and ResourceSlices.
    #[arg(long = "authentication", id = "authentication")]
    enabled: bool,
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

/// The offloading module's flags.
#[derive(clap::Args, Debug)]
struct OffloadingArgs {
    /// Run the offloading module: VirtualNodes (one virtual kubelet each),
    /// NamespaceOffloadings, and the provider side (NamespaceMaps,
    /// ShadowPods with tenant quota, ShadowEndpointSlices).
    #[arg(long = "offloading", id = "offloading")]
    enabled: bool,
    /// Run each virtual kubelet as a child process of this binary (local
    /// simulation) instead of as a Deployment.
    #[arg(long, value_name = "PATH")]
    virtual_kubelet_binary: Option<std::path::PathBuf>,
    /// The client CA the child-process virtual kubelets trust (their
    /// --client-ca-file: the CA of the API server's kubelet client
    /// certificate). Deployments always trust the cluster's kube-root-ca.crt.
    #[arg(long, value_name = "FILE", requires = "virtual_kubelet_binary")]
    virtual_kubelet_client_ca_file: Option<String>,
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
    /// A provider's pod CIDR and the range this cluster sees it as, for the
    /// virtual kubelets to translate pod addresses with, for example
    /// `10.0.0.0/16=10.70.0.0/16`, used for a provider without a network
    /// module Configuration (whose remap wins). Repeatable.
    #[arg(long = "virtual-kubelet-pod-cidr-remap", value_name = "REMOTE=LOCAL")]
    pod_cidr_remaps: Vec<strait_offloading::ipmap::CidrRemap>,
    /// IP:PORT at which pods on the providers reach this cluster's API
    /// server (an address the network module routes, or a load balancer):
    /// the virtual kubelets' --consumer-api-address. Offloaded pods given a
    /// consumer token are pointed there instead of the provider's API.
    #[arg(
        long = "virtual-kubelet-consumer-api-address",
        value_name = "IP:PORT",
        value_parser = strait_offloading::reflection::tokens::parse_consumer_api_address
    )]
    consumer_api_address: Option<std::net::SocketAddr>,
}

impl OffloadingArgs {
    /// `release_namespace`: where the virtual kubelet Deployments run.
    fn module(
        &self,
        cluster_id: Option<String>,
        release_namespace: &str,
    ) -> strait_offloading::module::ModuleConfig {
        use strait_offloading::kubelet::{KubeletSettings, Launcher, ProcessLauncher};
        let local = self.virtual_kubelet_binary.is_some();
        let launcher = match &self.virtual_kubelet_binary {
            Some(binary) => Launcher::Process(ProcessLauncher::new(binary.clone())),
            None => Launcher::Deployment {
                image: self.virtual_kubelet_image.clone(),
                service_account: "strait-virtual-kubelet".into(),
                namespace: release_namespace.to_owned(),
            },
        };
        let mut kubelet = KubeletSettings {
            not_ready_grace: Duration::from_secs(self.not_ready_grace_seconds),
            status_interval: Duration::from_millis(self.node_status_interval_ms),
            pod_cidr_remaps: self.pod_cidr_remaps.clone(),
            client_ca_file: self.virtual_kubelet_client_ca_file.clone(),
            consumer_api_address: self.consumer_api_address,
            ..KubeletSettings::default()
        };
        if local {
            kubelet.listen_address = "127.0.0.1:0".into();
            kubelet.node_ip = "127.0.0.1".into();
        }
        strait_offloading::module::ModuleConfig {
            cluster_id,
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
    if !cli.network.enabled && !cli.authentication.enabled && !cli.offloading.enabled {
        bail!("no module enabled: pass one or more of --network, --authentication, --offloading");
    }
    // Flags are checked before connecting, so a mistake is reported as such.
    let allocator = cli
        .network
        .enabled
        .then(|| network_allocator(&cli.network))
        .transpose()?;
    let share = cli.authentication.share_fraction;
    if cli.authentication.enabled && !(share > 0.0 && share <= 1.0) {
        bail!("--share-fraction must be in (0, 1], not {share}");
    }
    let config = kube::Config::infer()
        .await
        .context("reading the Kubernetes client configuration (kubeconfig or in-cluster)")?;
    let client = kube::Client::try_from(config.clone())
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

    let mut modules: Vec<BoxFuture<'static, Result<()>>> = Vec::new();
    if let Some(allocator) = allocator {
        tracing::info!(reserved = ?cli.network.reserved, pools = ?cli.network.pools, "network module starting");
        let gateways = cli.network.gateway.settings(cli.cluster_id.clone());
        let routes = cli.network.route_settings();
        modules.push(network_module(client.clone(), allocator, gateways, routes));
    }
    if cli.authentication.enabled {
        let settings = authentication_settings(&cli, &config)?;
        let client = client.clone();
        modules.push(Box::pin(async move {
            strait_authentication::run(client, settings)
                .await
                .context("authentication module")
        }));
    }
    if cli.offloading.enabled {
        let settings = cli.offloading.module(
            cli.cluster_id.clone(),
            &cli.network.gateway.release_namespace,
        );
        let client = client.clone();
        modules.push(Box::pin(async move {
            strait_offloading::module::run(client, settings)
                .await
                .context("offloading module")
        }));
    }
    tokio::select! {
        error = lost => bail!("stopping, no longer leader: {error}"),
        (result, _, _) = futures::future::select_all(modules) => result?,
        _ = tokio::signal::ctrl_c() => tracing::info!("stopping"),
    }
    Ok(())
}

/// The network module's IPAM allocator from its flags.
fn network_allocator(args: &NetworkArgs) -> Result<Allocator> {
    let parse_all = |what: &str, list: &[String]| -> Result<Vec<_>> {
        list.iter()
            .map(|c| parse_cidr(c).with_context(|| format!("--{what} {c}")))
            .collect()
    };
    let reserved = parse_all("reserved-cidr", &args.reserved)?;
    let pools = parse_all("remap-pool", &args.pools)?;
    if pools.is_empty() {
        bail!("--network needs at least one --remap-pool to take remapped ranges from");
    }
    Ok(Allocator::new(reserved, pools))
}

/// The network module's controllers.
fn network_module(
    client: kube::Client,
    allocator: Allocator,
    gateways: gateway::Settings,
    routes: route_controller::Settings,
) -> BoxFuture<'static, Result<()>> {
    Box::pin(async move {
        tokio::select! {
            result = ipam_controller::run(client.clone(), allocator) => result.context("IPAM controller")?,
            () = configuration_controller::run(client.clone()) => {}
            () = internal_node_controller::run(client.clone()) => {}
            () = route_controller::run(client.clone(), routes) => {}
            () = gateway::run(client, gateways) => {}
        }
        Ok(())
    })
}

fn authentication_settings(
    cli: &Cli,
    config: &kube::Config,
) -> Result<strait_authentication::Config> {
    let args = &cli.authentication;
    let mut api_server = ApiServerEndpoint::from_kube_config(config);
    if let Some(address) = &args.api_server_address {
        api_server.address = address.clone();
    }
    if let Some(path) = &args.api_server_ca_file {
        api_server.ca_pem = std::fs::read_to_string(path)
            .with_context(|| format!("--api-server-ca-file {}", path.display()))?;
    }
    Ok(strait_authentication::Config {
        cluster_id: cli.cluster_id.clone(),
        api_server,
        identity_lifetime: Duration::from_secs(args.identity_lifetime_seconds),
        share_fraction: args.share_fraction,
        identity_check_interval: strait_authentication::Config::DEFAULT_IDENTITY_CHECK_INTERVAL,
    })
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks (duplicate ids, bad defaults), which a
    /// debug build otherwise only runs when the binary starts.
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }

    #[test]
    fn the_consumer_api_address_reaches_the_virtual_kubelets_and_must_be_ip_and_port() {
        use clap::Parser as _;
        let parse = |address: &str| {
            super::Cli::try_parse_from([
                "strait-controller",
                "--offloading",
                "--virtual-kubelet-consumer-api-address",
                address,
            ])
        };
        let cli = parse("198.18.0.10:6443").expect("an IP:PORT is accepted");
        let module = cli.offloading.module(Some("consumer".into()), "strait");
        assert_eq!(
            module.kubelet.consumer_api_address,
            Some("198.18.0.10:6443".parse().expect("address"))
        );
        let refused = parse("kubernetes.default.svc:443")
            .expect_err("a name is refused")
            .to_string();
        assert!(refused.contains("must be IP:PORT"), "{refused}");
    }
}
