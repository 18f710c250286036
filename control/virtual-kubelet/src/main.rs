//! strait-virtual-kubelet: the virtual node of one VirtualNode.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result};
use clap::Parser;
use strait_offloading::{
    ipmap::{CidrRemap, IpTranslation},
    reflection::tokens::parse_consumer_api_address,
};
use strait_virtual_kubelet::{
    auth::ReviewTtls, parent_gone, parse_virtual_node, run, tls::TlsSettings, Config,
};
use tracing_subscriber::EnvFilter;

/// A virtual node backed by a provider cluster: registers the Node, runs
/// pods there as ShadowPods, reflects what they need, serves their logs,
/// exec, attach and port-forward (HTTPS, authenticated and authorized as a
/// kubelet does it) by asking the provider.
/// Started by strait-controller --offloading, one per VirtualNode.
#[derive(Parser, Debug)]
#[command(name = "strait-virtual-kubelet", version, about)]
struct Cli {
    /// The VirtualNode to run, as NAMESPACE/NAME.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    virtual_node: String,
    /// Name of the Node to register.
    #[arg(long)]
    node_name: String,
    /// This (consumer) cluster's ID.
    #[arg(long)]
    local_cluster_id: String,
    /// Seconds the provider may be unreachable before the node is NotReady.
    #[arg(long, default_value_t = 10)]
    not_ready_grace_seconds: u64,
    /// Milliseconds between two looks at the provider and the node status.
    #[arg(long, default_value_t = 1000)]
    node_status_interval_ms: u64,
    /// Address of the kubelet endpoints (HTTPS: container logs, exec,
    /// attach, port-forward), published on the Node as its kubelet port.
    #[arg(long, default_value = "0.0.0.0:10250")]
    listen_address: String,
    /// PEM certificate (chain, leaf first) the kubelet endpoint serves, as
    /// a kubelet's --tls-cert-file. Without it and --tls-private-key-file,
    /// a self-signed certificate for --node-name, --node-ip and localhost
    /// is generated in memory at every start (the API server does not
    /// verify kubelet certificates unless given --kubelet-certificate-authority).
    #[arg(long, value_name = "FILE", requires = "tls_private_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// PEM CA bundle of the cluster's client certificates: one it signed
    /// authenticates as its CN (user) and O (groups), as the API server's
    /// --kubelet-client-certificate does. Bearer tokens are always accepted
    /// when the consumer's API server vouches for them (TokenReview); a
    /// request with neither gets 401. Every request is then authorized
    /// with a SubjectAccessReview on the Node (nodes/proxy for logs, exec,
    /// attach and port-forward): 403 when refused.
    #[arg(long, value_name = "FILE")]
    client_ca_file: Option<PathBuf>,
    /// Seconds a bearer token the cluster vouched for is believed without
    /// asking again (the kubelet's webhook cache TTL).
    #[arg(long, default_value_t = 120)]
    authentication_cache_ttl_seconds: u64,
    /// Seconds an allowed request stays allowed without asking again.
    #[arg(long, default_value_t = 300)]
    authorization_cache_allowed_ttl_seconds: u64,
    /// Seconds a denied request stays denied without asking again.
    #[arg(long, default_value_t = 30)]
    authorization_cache_denied_ttl_seconds: u64,
    /// Address published on the Node for reaching those endpoints.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: String,
    /// Workers reflecting pods.
    #[arg(long, default_value_t = 8)]
    pod_workers: usize,
    /// Workers of each other reflector.
    #[arg(long, default_value_t = 2)]
    reflection_workers: usize,
    /// A provider pod CIDR seen locally under another prefix, REMOTE=LOCAL.
    /// Used only while the consumer has no network module Configuration
    /// labelled with the provider's cluster ID (its remap wins). Repeatable.
    #[arg(long = "pod-cidr-remap", value_name = "REMOTE=LOCAL")]
    pod_cidr_remaps: Vec<CidrRemap>,
    /// Where pods on the provider reach this (consumer) cluster's API
    /// server, IP:PORT: an address the network module routes there (the
    /// consumer API's address as the provider sees it) or a load balancer.
    /// Pods given a consumer service account token then get
    /// KUBERNETES_SERVICE_HOST=kubernetes.default.svc and
    /// KUBERNETES_SERVICE_PORT(_HTTPS)=PORT, and a host alias of
    /// kubernetes.default.svc to IP, so the API server's certificate
    /// verifies against the consumer CA they are given. Without it they
    /// keep the provider's API server.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_consumer_api_address)]
    consumer_api_address: Option<SocketAddr>,
    /// Exit when the parent process exits (set by the controller when it
    /// runs kubelets as processes).
    #[arg(long)]
    exit_with_parent: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let (virtual_node_namespace, virtual_node_name) = parse_virtual_node(&cli.virtual_node)?;
    let config = Config {
        virtual_node_namespace,
        virtual_node_name,
        node_name: cli.node_name,
        local_cluster_id: cli.local_cluster_id,
        not_ready_grace: Duration::from_secs(cli.not_ready_grace_seconds),
        status_interval: Duration::from_millis(cli.node_status_interval_ms.max(50)),
        listen_address: cli.listen_address,
        node_ip: cli.node_ip,
        pod_workers: cli.pod_workers,
        reflection_workers: cli.reflection_workers,
        translation: IpTranslation {
            remaps: cli.pod_cidr_remaps,
        },
        review_ttls: ReviewTtls {
            authenticated: Duration::from_secs(cli.authentication_cache_ttl_seconds),
            allowed: Duration::from_secs(cli.authorization_cache_allowed_ttl_seconds),
            denied: Duration::from_secs(cli.authorization_cache_denied_ttl_seconds),
        },
        tls: TlsSettings {
            cert_file: cli.tls_cert_file,
            key_file: cli.tls_private_key_file,
            client_ca_file: cli.client_ca_file,
        },
        consumer_api_address: cli.consumer_api_address,
    };
    let local = kube::Client::try_default()
        .await
        .context("connecting to the consumer's API (kubeconfig or in-cluster config)")?;
    let watch_parent = cli.exit_with_parent;
    tokio::select! {
        result = run(local, config) => result.context("virtual kubelet")?,
        () = parent_gone(), if watch_parent => tracing::info!("parent exited; stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("stopping"),
    }
    Ok(())
}
