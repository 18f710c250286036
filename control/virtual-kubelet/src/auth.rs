//! Authentication and authorization of the kubelet endpoint, as a kubelet
//! does them in webhook mode: a client certificate from the client CA, or
//! a bearer token the consumer's API server vouches for (TokenReview);
//! then a SubjectAccessReview on the consumer for the Node's subresource
//! the path maps to (`nodes/proxy` for logs, exec, attach, port-forward).

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{api::PostParams, Api, Client};
use rustls::pki_types::CertificateDer;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub name: String,
    pub groups: Vec<String>,
    pub uid: Option<String>,
}

/// Why a request is turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no usable credentials.
    Unauthenticated(String),
    /// 403: authenticated, not allowed.
    Forbidden(String),
    /// 503: the consumer's API server could not be asked.
    ReviewFailed(String),
}

/// The user a verified client certificate names: CN, and O as groups (as
/// the API server reads them).
pub fn requester_of_certificate(certificate: &CertificateDer<'_>) -> Option<Requester> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let subject = parsed.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    Some(Requester {
        name,
        groups,
        uid: None,
    })
}

/// What a kubelet request asks of the Node: the verb from the HTTP method
/// and the subresources it may be authorized by, in order (the kubelet's
/// fine-grained ones first, `proxy` as the fallback).
pub fn node_attributes(method: &http::Method, path: &str) -> (&'static str, Vec<&'static str>) {
    let verb = match *method {
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "get",
    };
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let subresources = match first {
        "stats" => vec!["stats"],
        "metrics" => vec!["metrics"],
        "logs" => vec!["log"],
        "spec" => vec!["spec"],
        "checkpoint" => vec!["checkpoint"],
        "healthz" => vec!["healthz", "proxy"],
        "pods" => vec!["pods", "proxy"],
        "configz" => vec!["configz", "proxy"],
        // containerLogs, exec, attach, portForward, run, ...
        _ => vec!["proxy"],
    };
    (verb, subresources)
}

/// Asks the consumer's API server.
#[derive(Clone)]
pub struct Gatekeeper {
    pub consumer: Client,
    pub node_name: String,
}

impl Gatekeeper {
    /// The requester, from its verified client certificate or its token.
    pub async fn authenticate(
        &self,
        certificate: Option<&CertificateDer<'_>>,
        authorization: Option<&str>,
    ) -> Result<Requester, Refusal> {
        if let Some(certificate) = certificate {
            return requester_of_certificate(certificate).ok_or_else(|| {
                Refusal::Unauthenticated(
                    "the client certificate names no user (common name)".into(),
                )
            });
        }
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Refusal::Unauthenticated(
                    "no client certificate from the cluster's client CA and no bearer token".into(),
                )
            })?;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.consumer.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Refusal::ReviewFailed(format!("TokenReview failed: {e}")))?;
        let status = answer.status.unwrap_or_default();
        match (status.authenticated, status.user) {
            (Some(true), Some(user)) => Ok(Requester {
                name: user.username.unwrap_or_default(),
                groups: user.groups.unwrap_or_default(),
                uid: user.uid,
            }),
            _ => Err(Refusal::Unauthenticated(format!(
                "the bearer token was not accepted by the cluster{}",
                status.error.map(|e| format!(": {e}")).unwrap_or_default()
            ))),
        }
    }

    /// Whether `requester` may `method` `path` on this node.
    pub async fn authorize(
        &self,
        requester: &Requester,
        method: &http::Method,
        path: &str,
    ) -> Result<(), Refusal> {
        let (verb, subresources) = node_attributes(method, path);
        let mut reasons = Vec::new();
        for subresource in &subresources {
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(requester.name.clone()),
                    groups: Some(requester.groups.clone()),
                    uid: requester.uid.clone(),
                    resource_attributes: Some(ResourceAttributes {
                        verb: Some(verb.to_owned()),
                        group: Some(String::new()),
                        version: Some("v1".to_owned()),
                        resource: Some("nodes".to_owned()),
                        subresource: Some((*subresource).to_owned()),
                        name: Some(self.node_name.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            let answer = Api::<SubjectAccessReview>::all(self.consumer.clone())
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| Refusal::ReviewFailed(format!("SubjectAccessReview failed: {e}")))?;
            let status = answer.status.unwrap_or_default();
            if status.allowed {
                return Ok(());
            }
            reasons.extend(status.reason);
        }
        Err(Refusal::Forbidden(format!(
            "Forbidden (user={}, verb={verb}, resource=nodes, subresource={}): {}",
            requester.name,
            subresources.join(" or "),
            if reasons.is_empty() {
                "no rule allows it".to_owned()
            } else {
                reasons.join("; ")
            }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_certificate_names_its_user_and_groups() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "kubeadm:cluster-admins");
        let certificate = params.self_signed(&key).expect("certificate");
        assert_eq!(
            requester_of_certificate(certificate.der()),
            Some(Requester {
                name: "kube-apiserver-kubelet-client".into(),
                groups: vec!["kubeadm:cluster-admins".into()],
                uid: None,
            })
        );
    }

    #[test]
    fn paths_map_to_node_subresources_as_the_kubelet_maps_them() {
        let get = http::Method::GET;
        let post = http::Method::POST;
        let cases = [
            (&get, "/containerLogs/a/b/c", ("get", vec!["proxy"])),
            (&post, "/exec/a/b/c", ("create", vec!["proxy"])),
            (&get, "/exec/a/b/c", ("get", vec!["proxy"])),
            (&get, "/portForward/a/b", ("get", vec!["proxy"])),
            (&get, "/stats/summary", ("get", vec!["stats"])),
            (&get, "/metrics/cadvisor", ("get", vec!["metrics"])),
            (&get, "/logs/syslog", ("get", vec!["log"])),
            (&get, "/healthz", ("get", vec!["healthz", "proxy"])),
            (&get, "/pods", ("get", vec!["pods", "proxy"])),
        ];
        for (method, path, expected) in cases {
            assert_eq!(node_attributes(method, path), expected, "{path}");
        }
    }
}
