//! The authentication module: this cluster's identity, the declarative
//! peering handshake (a consumer's `Tenant` on the provider, answered with a
//! control-plane `Identity`) and the negotiation of `ResourceSlice`s.
//!
//! One process serves both roles: a `ForeignCluster` with
//! `modules.authentication` makes this cluster expect the remote one as a
//! consumer (it publishes a nonce for it), and with a `kubeconfigSecretRef`
//! it also peers with the remote one as its consumer. See README.md.

pub mod cluster_identity;
mod consumer;
mod discovery;
pub mod foreign_cluster;
pub mod handshake;
mod kubeconfig;
pub mod policy;
mod provider;
pub mod quantity;
pub mod slices;
pub mod tenant;

use std::sync::Arc;
use std::time::Duration;

use kube::Client;

pub use cluster_identity::ClusterIdentity;
pub use policy::{FractionOfFree, Policy};

/// Field manager of every write this module makes.
pub const FIELD_MANAGER: &str = "strait-authentication";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serializing: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("cluster identity: {0}")]
    Identity(String),
    #[error("cryptography: {0}")]
    Crypto(String),
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// A short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Serialize(_) => "serialize",
            Error::Identity(_) => "identity",
            Error::Crypto(_) => "crypto",
            Error::Kubeconfig(_) => "kubeconfig",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

/// How this cluster's API server is reached by its consumers.
#[derive(Debug, Clone)]
pub struct ApiServerEndpoint {
    /// HTTPS URL consumers dial.
    pub address: String,
    /// PEM CA bundle that signed the API server's certificate and the
    /// client certificates it issues.
    pub ca_pem: String,
}

/// Settings of the module.
#[derive(Debug, Clone)]
pub struct Config {
    /// This cluster's ID; when unset, the stored identity's or one derived
    /// from the kube-system namespace's uid.
    pub cluster_id: Option<String>,
    /// Where consumers reach this cluster (written into the Identities it issues).
    pub api_server: ApiServerEndpoint,
    /// Validity of the client certificates issued to consumers; they are
    /// reissued at half of it and picked up by consumers before two thirds.
    pub identity_lifetime: Duration,
    /// Share of the free capacity (Nodes' allocatable minus Pods' requests
    /// minus other grants) a ResourceSlice may be granted, 0 < f <= 1.
    pub share_fraction: f64,
    /// How often a consumer checks that the provider still accepts its
    /// Identity (a revoked one is replaced through a new handshake).
    pub identity_check_interval: Duration,
}

impl Config {
    pub const DEFAULT_IDENTITY_CHECK_INTERVAL: Duration = Duration::from_secs(30);
    pub const DEFAULT_IDENTITY_LIFETIME: Duration = Duration::from_secs(24 * 3600);
    pub const DEFAULT_SHARE_FRACTION: f64 = 0.5;
}

/// What every controller of the module shares.
pub struct Context {
    pub client: Client,
    pub identity: ClusterIdentity,
    pub config: Config,
    pub policy: Box<dyn Policy>,
}

/// Ensures this cluster's identity, then runs the module's controllers
/// until one of them stops.
pub async fn run(client: Client, config: Config) -> Result<(), Error> {
    let identity = cluster_identity::ensure(&client, config.cluster_id.as_deref()).await?;
    tracing::info!(cluster_id = %identity.cluster_id, "authentication module starting");
    let policy = Box::new(FractionOfFree::new(config.share_fraction));
    let context = Arc::new(Context {
        client,
        identity,
        config,
        policy,
    });
    tokio::select! {
        () = foreign_cluster::run(context.clone()) => {}
        () = tenant::run(context.clone()) => {}
        () = slices::run(context.clone()) => {}
        () = discovery::run(context) => {}
    }
    Ok(())
}

/// Whether a Kubernetes error is an API answer with `code`.
pub(crate) fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// `existing` with `updates` merged in (transition times kept where the
/// status did not change), for a status write.
pub(crate) fn merged_conditions(
    existing: &[strait_api::Condition],
    updates: &[strait_api::ConditionUpdate<'_>],
    observed_generation: Option<i64>,
) -> Vec<strait_api::Condition> {
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let mut conditions = existing.to_vec();
    for update in updates {
        strait_api::condition::set_condition(
            &mut conditions,
            update.clone(),
            observed_generation,
            &now,
        );
    }
    conditions
}

/// Well-known names of the objects this module creates.
pub mod object_names {
    /// Secret (in the consumer's tenant namespace on the provider) holding
    /// the nonce the consumer must sign; labelled `authentication.strait.dev/nonce`.
    pub const NONCE_SECRET: &str = "strait-nonce";
    pub const NONCE_KEY: &str = "nonce";
    /// Role and RoleBinding giving a consumer's control-plane identity its
    /// tenant namespace on the provider.
    pub const CONSUMER_ROLE: &str = "strait-consumer";

    /// The provider's CertificateSigningRequest for a consumer's control plane.
    pub fn control_plane_csr(consumer_id: &str) -> String {
        format!("strait-{consumer_id}-control-plane")
    }

    /// The consumer's control-plane Identity for a provider (in the tenant namespace).
    pub fn control_plane_identity(provider_id: &str) -> String {
        format!("{provider_id}-control-plane")
    }

    /// The provider's CertificateSigningRequest for a slice's identity.
    pub fn slice_csr(consumer_id: &str, slice: &str) -> String {
        format!("strait-{consumer_id}-slice-{slice}")
    }

    /// Role and RoleBinding of a slice's identity on the provider.
    pub fn slice_role(slice: &str) -> String {
        format!("strait-slice-{slice}")
    }

    /// The consumer's ResourceSlice-scoped Identity for one of its slices.
    pub fn slice_identity(slice: &str) -> String {
        format!("{slice}-slice")
    }

    /// Secret with an Identity's private key and CSR (keys `key`, `csr`).
    pub fn identity_key_secret(identity: &str) -> String {
        format!("{identity}-key")
    }

    /// Secret with the kubeconfig generated from an Identity (key `kubeconfig`).
    pub fn identity_kubeconfig_secret(identity: &str) -> String {
        format!("{identity}-kubeconfig")
    }
}

impl ApiServerEndpoint {
    /// The API server a client config points at, with the CA it trusts
    /// (in a pod: the service account's CA). Consumers need an address they
    /// can reach, so in-cluster the address is normally given explicitly.
    pub fn from_kube_config(config: &kube::Config) -> Self {
        use base64::Engine as _;
        let ca_pem = config
            .root_cert
            .iter()
            .flatten()
            .map(|der| {
                let encoded = base64::engine::general_purpose::STANDARD.encode(der);
                let lines: Vec<&str> = encoded
                    .as_bytes()
                    .chunks(64)
                    .filter_map(|c| std::str::from_utf8(c).ok())
                    .collect();
                format!(
                    "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                    lines.join("\n")
                )
            })
            .collect();
        Self {
            address: config
                .cluster_url
                .to_string()
                .trim_end_matches('/')
                .to_owned(),
            ca_pem,
        }
    }
}

/// The object as the API server has it now, or None when the one a
/// reconcile was handed is gone: the controller's cache can still hold a
/// deleted incarnation after the object was re-created under the same name
/// (unpeer then re-peer), and tearing down from it would destroy the new
/// one's resources. The new incarnation gets its own reconcile.
pub(crate) async fn live<K>(api: &kube::Api<K>, cached: &K) -> Result<Option<Arc<K>>, Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    use kube::ResourceExt as _;
    let Some(live) = api.get_opt(&cached.name_any()).await? else {
        return Ok(None);
    };
    if live.uid() != cached.uid() {
        return Ok(None);
    }
    Ok(Some(Arc::new(live)))
}

/// How soon to look again at an object whose cached copy was stale.
pub(crate) const STALE_RETRY: Duration = Duration::from_millis(200);
