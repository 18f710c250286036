//! Every error says what went wrong and what to do next.
use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to a cluster failed.
    #[error("{action}: {source}\n  next: {next}")]
    Api {
        action: String,
        source: kube::Error,
        next: String,
    },
    /// A kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {problem}\n  next: {next}")]
    Kubeconfig {
        path: String,
        problem: String,
        next: String,
    },
    /// The clusters are not in a state the command can work with.
    #[error("{problem}\n  next: {next}")]
    Failed { problem: String, next: String },
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

impl Error {
    pub fn failed(problem: impl fmt::Display, next: impl fmt::Display) -> Self {
        Self::Failed {
            problem: problem.to_string(),
            next: next.to_string(),
        }
    }

    pub fn api(action: impl fmt::Display, source: kube::Error, next: impl fmt::Display) -> Self {
        Self::Api {
            action: action.to_string(),
            source,
            next: next.to_string(),
        }
    }
}

/// The advice for a failed request, by what the API server answered.
pub fn next_for(error: &kube::Error, cluster: &str) -> String {
    match error {
        kube::Error::Api(status) if status.code == 401 || status.code == 403 => format!(
            "the credentials for {cluster} lack this permission: use a kubeconfig of a cluster admin"
        ),
        kube::Error::Api(status) if status.code == 404 => format!(
            "Strait's CRDs are missing in {cluster}: install the chart (helm install strait charts/strait -n strait --create-namespace)"
        ),
        kube::Error::Api(status) if status.code == 422 => {
            "the API server refused the object: fix the flag its message names and re-run".to_owned()
        }
        _ => format!("check that {cluster} is reachable: kubectl get namespaces with the same kubeconfig"),
    }
}

/// Encoding our own structures cannot fail in practice; keep it an error anyway.
pub fn encode_error(what: &str, error: impl fmt::Display) -> Error {
    Error::failed(
        format!("encoding {what}: {error}"),
        "report this as a bug in strait",
    )
}
