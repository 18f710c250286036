//! The offloading module's errors.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serializing an object: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("Secret {namespace}/{name} has no `kubeconfig` key: it must hold the kubeconfig of the provider (from the Identity's kubeconfigSecretRef)")]
    KubeconfigMissing { namespace: String, name: String },
    #[error("kubeconfig in Secret {namespace}/{name} is unusable: {message}")]
    KubeconfigInvalid {
        namespace: String,
        name: String,
        message: String,
    },
    #[error(transparent)]
    Quantity(#[from] crate::quantity::QuantityError),
    #[error("starting the virtual kubelet {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("{0} has no namespace or name")]
    Unnamed(&'static str),
    #[error("waiting: {0}")]
    Waiting(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    /// The reconcile failed on something that may work on a retry.
    pub fn finalizer<E: std::error::Error>(error: kube::runtime::finalizer::Error<E>) -> Self {
        Self::Finalizer(error.to_string())
    }
}
