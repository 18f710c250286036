//! Two error types: `ApiError` is what a client sees (rendered as a Kubernetes
//! `Status`), `Error` is what starting or describing a test cluster fails with.

use serde_json::{json, Value};

/// A request the server refuses, rendered as a `Status` with the API server's
/// code and reason so that kube-rs and kubectl react to it as they would in
/// a real cluster (for example a watcher relists on 410 Expired).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} ({code}): {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// Boxed: errors travel in every `Result` of the request path.
    pub details: Option<Box<Details>>,
}

/// `Status.details`: which object the error is about and, for 422, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Details {
    pub name: String,
    pub group: String,
    pub kind: String,
    pub causes: Vec<Cause>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn about(mut self, group: &str, resource: &str, name: &str) -> Self {
        self.details = Some(Box::new(Details {
            name: name.to_owned(),
            group: group.to_owned(),
            kind: resource.to_owned(),
            causes: Vec::new(),
        }));
        self
    }

    /// `group_resource` is `plural.group` (just `plural` for the core group),
    /// the way the API server names a resource in messages.
    pub fn not_found(group: &str, resource: &str, group_resource: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{group_resource} {name:?} not found"),
        )
        .about(group, resource, name)
    }

    pub fn already_exists(group: &str, resource: &str, group_resource: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{group_resource} {name:?} already exists"),
        )
        .about(group, resource, name)
    }

    /// The optimistic-concurrency failure of an update with a stale resourceVersion.
    pub fn stale(group: &str, resource: &str, group_resource: &str, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {group_resource} {name:?}: the object has been \
                 modified; please apply your changes to the latest version and try again"
            ),
        )
        .about(group, resource, name)
    }

    /// A server-side apply that would take fields owned by other managers.
    pub fn apply_conflict(
        group: &str,
        resource: &str,
        name: &str,
        conflicts: Vec<(String, String)>,
    ) -> Self {
        let lines: Vec<String> = conflicts
            .iter()
            .map(|(manager, field)| format!("conflict with {manager:?}: {field}"))
            .collect();
        let mut error = Self::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {} conflict{}: {}",
                conflicts.len(),
                if conflicts.len() == 1 { "" } else { "s" },
                lines.join("; ")
            ),
        )
        .about(group, resource, name);
        if let Some(details) = error.details.as_mut() {
            details.causes = conflicts
                .into_iter()
                .map(|(manager, field)| Cause {
                    reason: "FieldManagerConflict",
                    message: format!("conflict with {manager:?}"),
                    field,
                })
                .collect();
        }
        error
    }

    /// 422 with one cause per problem; `problems` are `path: message` lines.
    pub fn invalid(group: &str, kind: &str, name: &str, problems: &[String]) -> Self {
        let qualified = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{group}")
        };
        let mut error = Self::new(
            422,
            "Invalid",
            format!("{qualified} {name:?} is invalid: {}", problems.join(", ")),
        )
        .about(group, kind, name);
        if let Some(details) = error.details.as_mut() {
            details.causes = problems
                .iter()
                .map(|problem| {
                    let (field, message) = problem.split_once(": ").unwrap_or(("", problem));
                    Cause {
                        reason: "FieldValueInvalid",
                        field: field.to_owned(),
                        message: message.to_owned(),
                    }
                })
                .collect();
        }
        error
    }

    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// An RBAC refusal, about `name` when the request names an object.
    pub fn forbidden_by_rbac(
        group: &str,
        resource: &str,
        group_resource: &str,
        name: Option<&str>,
        why: String,
    ) -> Self {
        let subject = match name {
            Some(name) => format!("{group_resource} {name:?}"),
            None => group_resource.to_owned(),
        };
        Self::new(403, "Forbidden", format!("{subject} is forbidden: {why}")).about(
            group,
            resource,
            name.unwrap_or(""),
        )
    }

    pub fn method_not_allowed(method: &str, what: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow {method} on {what}"),
        )
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format: {content_type}"),
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    pub fn path_not_found(path: &str) -> Self {
        Self::new(404, "NotFound", format!("the server could not find {path}"))
    }

    /// The `Status` object a client receives.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            let causes: Vec<Value> = details
                .causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect();
            let mut rendered = json!({
                "name": details.name,
                "group": details.group,
                "kind": details.kind,
            });
            if !causes.is_empty() {
                rendered["causes"] = Value::Array(causes);
            }
            status["details"] = rendered;
        }
        status
    }
}

/// Why a test cluster could not start or describe itself.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cluster name {0:?} must be a non-empty DNS label")]
    InvalidName(String),
    #[error("binding the test API server to 127.0.0.1: {0}")]
    Bind(#[source] std::io::Error),
    #[error("writing the kubeconfig {path}: {source}")]
    WriteKubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("rendering the kubeconfig: {0}")]
    RenderKubeconfig(#[from] serde_norway::Error),
    #[error("building a kube client for the test API server: {0}")]
    Client(#[from] kube::Error),
    #[error("setting up the test cluster's certificates: {0}")]
    Pki(#[from] crate::pki::PkiError),
    #[error("loading the generated kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("cluster {0:?} was started without TLS, so it has no users")]
    NotTls(String),
    #[error("the test API server URL {url:?} is not a valid URI: {message}")]
    Url { url: String, message: String },
}
