//! Turns a request path into what it addresses.

use crate::error::ApiError;
use crate::registry::{Registry, TypeId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Version,
    CoreVersions,
    Groups,
    Group(String),
    Resources {
        group: String,
        version: String,
    },
    Object(Target),
    /// `pods/<name>/log` in a namespace.
    PodLog {
        namespace: String,
        name: String,
    },
    /// `serviceaccounts/<name>/token` in a namespace: a TokenRequest (create only).
    ServiceAccountToken {
        namespace: String,
        name: String,
    },
    /// `authentication.k8s.io/v1` TokenReview (create only).
    TokenReview,
    /// `authorization.k8s.io/v1` SubjectAccessReview (create only).
    SubjectAccessReview,
    /// The OpenAPI v3 index and one group/version document (see `openapi`).
    OpenApiRoot,
    OpenApiGroupVersion {
        group: String,
        version: String,
    },
}

/// A collection (no name) or one object, possibly its `/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub type_id: TypeId,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub status: bool,
}

pub fn parse(registry: &Registry, path: &str) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let not_found = || ApiError::path_not_found(path);
    match segments.as_slice() {
        ["version"] => Ok(Route::Version),
        ["openapi", "v3"] => Ok(Route::OpenApiRoot),
        ["openapi", "v3", "api", version] => Ok(Route::OpenApiGroupVersion {
            group: String::new(),
            version: (*version).to_owned(),
        }),
        ["openapi", "v3", "apis", group, version] => Ok(Route::OpenApiGroupVersion {
            group: (*group).to_owned(),
            version: (*version).to_owned(),
        }),
        ["api"] => Ok(Route::CoreVersions),
        ["api", "v1"] => Ok(Route::Resources {
            group: String::new(),
            version: "v1".to_owned(),
        }),
        ["api", "v1", "namespaces", namespace, "pods", name, "log"] => Ok(Route::PodLog {
            namespace: (*namespace).to_owned(),
            name: (*name).to_owned(),
        }),
        ["api", "v1", "namespaces", namespace, "serviceaccounts", name, "token"] => {
            Ok(Route::ServiceAccountToken {
                namespace: (*namespace).to_owned(),
                name: (*name).to_owned(),
            })
        }
        ["api", "v1", rest @ ..] => object_route(registry, "", "v1", rest).ok_or_else(not_found),
        ["apis"] => Ok(Route::Groups),
        ["apis", "authentication.k8s.io", "v1", "tokenreviews"] => Ok(Route::TokenReview),
        ["apis", "authorization.k8s.io", "v1", "subjectaccessreviews"] => {
            Ok(Route::SubjectAccessReview)
        }
        ["apis", group] if registry.groups().iter().any(|(g, _)| g == group) => {
            Ok(Route::Group((*group).to_owned()))
        }
        ["apis", group, version]
            if registry
                .groups()
                .iter()
                .any(|(g, v)| g == group && v == version) =>
        {
            Ok(Route::Resources {
                group: (*group).to_owned(),
                version: (*version).to_owned(),
            })
        }
        ["apis", group, version, rest @ ..] => {
            object_route(registry, group, version, rest).ok_or_else(not_found)
        }
        _ => Err(not_found()),
    }
}

fn object_route(registry: &Registry, group: &str, version: &str, rest: &[&str]) -> Option<Route> {
    // `namespaces/<ns>/<plural>...` addresses namespaced content, except the
    // Namespace kind's own `namespaces/<name>/status`.
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] if *plural != "status" && *plural != "finalize" => {
            (Some((*ns).to_owned()), [&[*plural][..], tail].concat())
        }
        _ => (None, rest.to_vec()),
    };
    let (plural, name, status) = match rest.as_slice() {
        [plural] => (*plural, None, false),
        [plural, name] => (*plural, Some((*name).to_owned()), false),
        [plural, name, "status"] => (*plural, Some((*name).to_owned()), true),
        // A CSR's approval subresource writes its status (the conditions)
        // like `/status` does; see the README.
        ["certificatesigningrequests", name, "approval"] if group == "certificates.k8s.io" => {
            ("certificatesigningrequests", Some((*name).to_owned()), true)
        }
        _ => return None,
    };
    let type_id = registry.find(group, version, plural)?;
    let resource = registry.get(type_id);
    if namespace.is_some() && !resource.namespaced {
        return None;
    }
    if status && !resource.has_status {
        return None;
    }
    Some(Route::Object(Target {
        type_id,
        namespace,
        name,
        status,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let registry = Registry::standard();
        let pods = registry.find("", "v1", "pods").expect("pods");
        let namespaces = registry.namespace_type();
        let networks = registry
            .find("ipam.strait.dev", "v1beta1", "networks")
            .expect("networks");
        let cases = [
            (
                "/api/v1/namespaces/a/pods",
                Target {
                    type_id: pods,
                    namespace: Some("a".into()),
                    name: None,
                    status: false,
                },
            ),
            (
                "/api/v1/pods",
                Target {
                    type_id: pods,
                    namespace: None,
                    name: None,
                    status: false,
                },
            ),
            (
                "/api/v1/namespaces/a/pods/p/status",
                Target {
                    type_id: pods,
                    namespace: Some("a".into()),
                    name: Some("p".into()),
                    status: true,
                },
            ),
            (
                "/api/v1/namespaces/a",
                Target {
                    type_id: namespaces,
                    namespace: None,
                    name: Some("a".into()),
                    status: false,
                },
            ),
            (
                "/api/v1/namespaces/a/status",
                Target {
                    type_id: namespaces,
                    namespace: None,
                    name: Some("a".into()),
                    status: true,
                },
            ),
            (
                "/apis/ipam.strait.dev/v1beta1/namespaces/n/networks/x",
                Target {
                    type_id: networks,
                    namespace: Some("n".into()),
                    name: Some("x".into()),
                    status: false,
                },
            ),
        ];
        for (path, expected) in cases {
            assert_eq!(
                parse(&registry, path),
                Ok(Route::Object(expected)),
                "{path}"
            );
        }
        for missing in [
            "/api/v2/pods",
            "/apis/nope.dev/v1/things",
            "/api/v1/namespaces/a/nodes",
            "/api/v1/secrets/a/status",
            "/x",
        ] {
            assert_eq!(
                parse(&registry, missing).unwrap_err().code,
                404,
                "{missing}"
            );
        }
    }
}
