//! The command line.
use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Strait joins Kubernetes clusters. This CLI checks a machine before
/// install, writes the CRs of a peering (the same ones `kubectl apply`
/// would), and shows what the controllers report.
#[derive(Parser, Debug)]
#[command(name = "strait", version, about)]
pub struct Cli {
    /// Kubeconfig of the cluster to talk to (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long, global = true, env = "STRAIT_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Context in the kubeconfig (default: its current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check this machine for what Strait needs (kernel, BPF, bpffs,
    /// WireGuard) and write Helm values for the chart.
    Install(InstallArgs),
    /// Peer a consumer with a provider: write the peering CRs in both
    /// clusters, then wait for the controllers to report it ready.
    Peer(PeerArgs),
    /// Undo `strait peer`: delete its CRs and wait until they are gone.
    Unpeer(UnpeerArgs),
    /// ForeignClusters and the state of each module of each peering.
    Status(StatusArgs),
    /// This cluster's ID, CIDRs and versions.
    Info,
    /// Offloading: let workloads run on virtual nodes.
    Offload {
        #[command(subcommand)]
        command: OffloadCommand,
    },
    /// Network module diagnostics.
    Network {
        #[command(subcommand)]
        command: NetworkCommand,
    },
    /// Print shell completions: `strait completion bash > /etc/bash_completion.d/strait`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// Modules to enable (comma-separated).
    #[arg(long, value_delimiter = ',', default_values = ["network", "authentication", "offloading"])]
    pub modules: Vec<Module>,
    /// CIDRs this cluster uses itself (pods, services, nodes). Repeatable.
    #[arg(long = "reserved-cidr", value_name = "CIDR")]
    pub reserved_cidrs: Vec<String>,
    /// Pools remapped ranges are taken from. Repeatable.
    #[arg(long = "remap-pool", value_name = "CIDR")]
    pub remap_pools: Vec<String>,
    /// Write the values here instead of standard output.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Write the values even when a check fails.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct PeerArgs {
    /// Kubeconfig of the consumer (the cluster that borrows resources).
    #[arg(long)]
    pub consumer_kubeconfig: PathBuf,
    /// Kubeconfig of the provider; stored in the consumer as the Secret its
    /// controller uses once to create its Tenant there.
    #[arg(long)]
    pub provider_kubeconfig: PathBuf,
    /// Resources to ask the provider for, e.g. cpu=4,memory=8Gi,nvidia.com/gpu=1.
    #[arg(long, value_delimiter = ',', value_parser = parse_resource)]
    pub resource_slice: Vec<(String, String)>,
    /// Name of the ResourceSlice (default: the provider's cluster ID).
    #[arg(long)]
    pub slice_name: Option<String>,
    /// Modules of the peering (comma-separated).
    #[arg(long, value_delimiter = ',', default_values = ["network", "authentication", "offloading"])]
    pub modules: Vec<Module>,
    /// How long to wait for the peering to be ready.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print the YAML instead of applying it (apply it with kubectl apply -f).
    #[arg(long)]
    pub dry_run: bool,
    /// Skip reading the consumer's cluster ID from its cluster.
    #[arg(long)]
    pub consumer_cluster_id: Option<String>,
    /// Skip reading the provider's cluster ID from its cluster.
    #[arg(long)]
    pub provider_cluster_id: Option<String>,
}

#[derive(Args, Debug)]
pub struct UnpeerArgs {
    #[arg(long)]
    pub consumer_kubeconfig: PathBuf,
    #[arg(long)]
    pub provider_kubeconfig: PathBuf,
    /// Name of the ResourceSlice `strait peer` created (default: the provider's cluster ID).
    #[arg(long)]
    pub slice_name: Option<String>,
    /// How long to wait for the controllers to tear the peering down.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Subcommand, Debug)]
pub enum OffloadCommand {
    /// Offload a namespace: write its NamespaceOffloading.
    Namespace(OffloadNamespaceArgs),
}

#[derive(Args, Debug)]
pub struct OffloadNamespaceArgs {
    /// The namespace to offload.
    pub namespace: String,
    /// Where its pods may run.
    #[arg(long, value_enum, default_value_t = PodOffloading::LocalAndRemote)]
    pub pod_offloading_strategy: PodOffloading,
    /// How the namespace is named on the providers.
    #[arg(long, value_enum, default_value_t = NamespaceMapping::DefaultName)]
    pub namespace_mapping_strategy: NamespaceMapping,
    /// Remote name, with --namespace-mapping-strategy selected-name.
    #[arg(long)]
    pub remote_namespace_name: Option<String>,
    /// Only virtual nodes with these labels (key=value, repeatable).
    #[arg(long = "selector", value_parser = parse_label)]
    pub selector: Vec<(String, String)>,
    /// Print the YAML instead of applying it.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Probe each peer through its tunnel (from the gateways' Connections).
    Test {
        /// Only this peer's cluster ID.
        #[arg(long)]
        remote: Option<String>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Module {
    Network,
    Authentication,
    Offloading,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum PodOffloading {
    Local,
    Remote,
    LocalAndRemote,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum NamespaceMapping {
    EnforceSameName,
    DefaultName,
    SelectedName,
}

fn parse_resource(pair: &str) -> Result<(String, String), String> {
    let (name, quantity) = pair
        .split_once('=')
        .ok_or_else(|| format!("{pair:?}: expected name=quantity, e.g. cpu=4"))?;
    if name.is_empty() || quantity.is_empty() {
        return Err(format!("{pair:?}: expected name=quantity, e.g. memory=8Gi"));
    }
    Ok((name.to_owned(), quantity.to_owned()))
}

fn parse_label(pair: &str) -> Result<(String, String), String> {
    pair.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{pair:?}: expected key=value"))
}

/// `90s`, `2m`, `1h` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |i| text.split_at(i));
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a duration like 90s, 2m or 1h"))?;
    let seconds = match unit {
        "s" => value,
        "m" => value * 60,
        "h" => value * 3600,
        _ => return Err(format!("{text:?}: unit must be s, m or h")),
    };
    Ok(Duration::from_secs(seconds))
}
