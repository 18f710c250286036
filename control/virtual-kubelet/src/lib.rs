//! strait-virtual-kubelet: one virtual node of a consumer cluster backed by
//! a provider. Registers the Node and its Lease, runs the reflectors (pods
//! as ShadowPods, Services and EndpointSlices, ConfigMaps, Secrets,
//! ServiceAccounts, PersistentVolumeClaims; events back), and serves the
//! kubelet endpoints (container logs, exec, attach, port-forward) over
//! HTTPS, authenticated and authorized as a kubelet does it, by asking the
//! provider.

pub mod auth;
pub mod node;
pub mod server;
pub mod spdy;
pub mod spdy_streams;
pub mod streams;
pub mod tls;

use std::{sync::Arc, time::Duration};

use futures::StreamExt as _;
use k8s_openapi::api::{
    core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount},
    discovery::v1::EndpointSlice,
};
use kube::{runtime::watcher, Api, Client};
use strait_api::offloading::VirtualNode;
use strait_offloading::{
    ipmap::IpTranslation,
    reflection::{self, addresses, generic, pods, Reflection},
    remote,
};
use tokio::{net::TcpListener, sync::watch};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API of the consumer: {0}")]
    Kube(#[from] kube::Error),
    #[error("listening on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("TLS of the kubelet endpoint: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("--virtual-node must be NAMESPACE/NAME, not {0:?}")]
    VirtualNodeReference(String),
}

/// Everything the kubelet is told on its command line.
#[derive(Debug, Clone)]
pub struct Config {
    pub virtual_node_namespace: String,
    pub virtual_node_name: String,
    pub node_name: String,
    pub local_cluster_id: String,
    pub not_ready_grace: Duration,
    pub status_interval: Duration,
    pub listen_address: String,
    pub node_ip: String,
    pub pod_workers: usize,
    pub reflection_workers: usize,
    /// The provider pod CIDR remaps of the flags: used while the network
    /// module has no Configuration for the provider.
    pub translation: IpTranslation,
    /// The kubelet endpoint's serving certificate and client CA.
    pub tls: tls::TlsSettings,
    /// How long review answers are kept.
    pub review_ttls: auth::ReviewTtls,
    /// Where provider pods reach the consumer's API server.
    pub consumer_api_address: Option<std::net::SocketAddr>,
}

/// Splits `namespace/name`.
pub fn parse_virtual_node(reference: &str) -> Result<(String, String), Error> {
    match reference.split_once('/') {
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
        {
            Ok((namespace.to_owned(), name.to_owned()))
        }
        _ => Err(Error::VirtualNodeReference(reference.to_owned())),
    }
}

/// Runs the virtual node until the process is stopped.
pub async fn run(local: Client, config: Config) -> Result<(), Error> {
    let virtual_nodes =
        Api::<VirtualNode>::namespaced(local.clone(), &config.virtual_node_namespace);
    let (virtual_node_tx, virtual_node_rx) = watch::channel(None);
    let follow_virtual_node = {
        let api = virtual_nodes.clone();
        let name = config.virtual_node_name.clone();
        async move {
            let mut changes = watcher::watch_object(api, &name).boxed();
            while let Some(change) = changes.next().await {
                match change {
                    Ok(vn) => {
                        virtual_node_tx.send_replace(vn);
                    }
                    Err(error) => {
                        tracing::debug!(%error, "VirtualNode watch interrupted");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    };
    // The provider's credentials: retried until the Secret is there.
    let (provider, cluster_id) = loop {
        match virtual_nodes.get(&config.virtual_node_name).await {
            Ok(vn) => match remote::client_from_secret(
                &local,
                &vn.spec.kubeconfig_secret_ref,
                &config.virtual_node_namespace,
            )
            .await
            {
                Ok(client) => break (client, vn.spec.cluster_id.clone()),
                Err(error) => tracing::warn!(%error, "no usable provider credentials yet"),
            },
            Err(error) => tracing::warn!(%error, "reading the VirtualNode failed"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let (mapping_tx, mapping_rx) = watch::channel(Default::default());
    let follow_namespaces =
        reflection::follow_namespace_offloadings(local.clone(), cluster_id.clone(), mapping_tx);
    let (translation_tx, translation_rx) =
        watch::channel(addresses::Translation::Static(config.translation.clone()));
    let follow_configurations = addresses::follow_configurations(
        local.clone(),
        cluster_id.clone(),
        config.translation.clone(),
        translation_tx,
    );
    let reflection = Arc::new(Reflection {
        local: local.clone(),
        remote: provider.clone(),
        node_name: config.node_name.clone(),
        local_cluster_id: config.local_cluster_id.clone(),
        provider_cluster_id: cluster_id,
        translation: translation_rx,
        namespaces: mapping_rx,
        virtual_node: virtual_node_rx.clone(),
        consumer_api_address: config.consumer_api_address,
    });
    // Checked before anything listens: a bad certificate file stops the start.
    let tls_config = tls::server_config(
        &config.tls,
        &[
            config.node_name.clone(),
            config.node_ip.clone(),
            "localhost".to_owned(),
        ],
    )?;
    let listener = TcpListener::bind(&config.listen_address)
        .await
        .map_err(|source| Error::Listen {
            address: config.listen_address.clone(),
            source,
        })?;
    let port = listener
        .local_addr()
        .map_err(|source| Error::Listen {
            address: config.listen_address.clone(),
            source,
        })?
        .port();
    tracing::info!(node = %config.node_name, port, "virtual kubelet serving");
    let admitted = Arc::new(pods::Admitted::default());
    let (capacity_tx, capacity_rx) = watch::channel(Default::default());
    let node_settings = node::NodeSettings {
        node_name: config.node_name.clone(),
        node_ip: config.node_ip.clone(),
        kubelet_port: port,
        not_ready_grace: config.not_ready_grace,
        status_interval: config.status_interval,
    };
    let endpoint = Arc::new(server::Endpoint {
        reflection: reflection.clone(),
        gatekeeper: auth::Gatekeeper::new(
            local.clone(),
            config.node_name.clone(),
            config.review_ttls,
        ),
        tls: tokio_rustls::TlsAcceptor::from(tls_config),
    });
    let workers = config.reflection_workers;
    tokio::join!(
        follow_virtual_node,
        follow_namespaces,
        follow_configurations,
        node::run(
            local,
            provider,
            node_settings,
            virtual_node_rx,
            admitted.clone(),
            capacity_tx
        ),
        server::serve(listener, endpoint),
        pods::run(
            reflection.clone(),
            config.pod_workers,
            admitted,
            capacity_rx
        ),
        generic::run::<ConfigMap>(reflection.clone(), workers),
        generic::run::<Secret>(reflection.clone(), workers),
        generic::run::<ServiceAccount>(reflection.clone(), workers),
        generic::run::<PersistentVolumeClaim>(reflection.clone(), workers),
        generic::run::<Service>(reflection.clone(), workers),
        generic::run::<EndpointSlice>(reflection, workers),
    );
    Ok(())
}

/// Resolves when the process that started this one is gone (the kubelet
/// was re-parented), so a killed controller leaves no kubelet behind.
pub async fn parent_gone() {
    let parent = std::os::unix::process::parent_id();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if std::os::unix::process::parent_id() != parent {
            return;
        }
    }
}
