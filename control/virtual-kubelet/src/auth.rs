//! Authentication and authorization of the kubelet endpoint, as a kubelet
//! does them in webhook mode: a client certificate from the client CA, or
//! a bearer token the consumer's API server vouches for (TokenReview);
//! then a SubjectAccessReview on the consumer for the Node's subresource
//! the path maps to (`nodes/proxy` for logs, exec, attach, port-forward).
//! Answers are kept for a while, as the kubelet's webhook modes keep them
//! (authenticated tokens 2 minutes; allowed 5 minutes, denied 30 seconds),
//! so a burst of requests does not become a burst of reviews.

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::{api::PostParams, Api, Client};
use rustls::pki_types::CertificateDer;
use tokio::time::Instant;

/// How long review answers are kept (zero: not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReviewTtls {
    /// A token the cluster vouched for.
    pub authenticated: Duration,
    /// An allowed request.
    pub allowed: Duration,
    /// A denied request.
    pub denied: Duration,
}

impl Default for ReviewTtls {
    /// The kubelet's webhook defaults.
    fn default() -> Self {
        Self {
            authenticated: Duration::from_secs(120),
            allowed: Duration::from_secs(300),
            denied: Duration::from_secs(30),
        }
    }
}
/// Answers kept per kind of review.
const CACHE_CAPACITY: usize = 1024;

/// A bounded map whose entries expire.
struct ExpiringCache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash + Clone, V: Clone> ExpiringCache<K, V> {
    fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(key) {
            Some((value, expires)) if *expires > Instant::now() => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn insert(&self, key: K, value: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CACHE_CAPACITY && !entries.contains_key(&key) {
            entries.retain(|_, (_, expires)| *expires > now);
            // Still full: the entry closest to expiring makes room.
            if entries.len() >= CACHE_CAPACITY {
                let soonest = entries
                    .iter()
                    .min_by_key(|(_, (_, expires))| *expires)
                    .map(|(k, _)| k.clone());
                if let Some(soonest) = soonest {
                    entries.remove(&soonest);
                }
            }
        }
        entries.insert(key, (value, now + ttl));
    }
}

/// What an access review is about: user, groups, uid, verb and the Node
/// subresources the path maps to.
type AccessQuestion = (
    String,
    Vec<String>,
    Option<String>,
    &'static str,
    Vec<&'static str>,
);

/// Review answers kept between requests.
struct Reviews {
    tokens: ExpiringCache<String, Requester>,
    /// Allowed, or why not.
    access: ExpiringCache<AccessQuestion, Result<(), String>>,
}

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

/// Asks the consumer's API server, and remembers its answers.
#[derive(Clone)]
pub struct Gatekeeper {
    consumer: Client,
    node_name: String,
    reviews: Arc<Reviews>,
    ttls: ReviewTtls,
}

impl Gatekeeper {
    pub fn new(consumer: Client, node_name: String, ttls: ReviewTtls) -> Self {
        Self {
            consumer,
            node_name,
            ttls,
            reviews: Arc::new(Reviews {
                tokens: ExpiringCache::new(),
                access: ExpiringCache::new(),
            }),
        }
    }

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
        if let Some(requester) = self.reviews.tokens.get(&token.to_owned()) {
            return Ok(requester);
        }
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
            (Some(true), Some(user)) => {
                let requester = Requester {
                    name: user.username.unwrap_or_default(),
                    groups: user.groups.unwrap_or_default(),
                    uid: user.uid,
                };
                self.reviews.tokens.insert(
                    token.to_owned(),
                    requester.clone(),
                    self.ttls.authenticated,
                );
                Ok(requester)
            }
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
        let key = (
            requester.name.clone(),
            requester.groups.clone(),
            requester.uid.clone(),
            verb,
            subresources.clone(),
        );
        let answer = match self.reviews.access.get(&key) {
            Some(answer) => answer,
            None => {
                let answer = self.review_access(requester, verb, &subresources).await?;
                let ttl = if answer.is_ok() {
                    self.ttls.allowed
                } else {
                    self.ttls.denied
                };
                self.reviews.access.insert(key, answer.clone(), ttl);
                answer
            }
        };
        answer.map_err(Refusal::Forbidden)
    }

    /// Asks the cluster whether any of `subresources` allows `verb`:
    /// `Ok(Err(why not))` when none does.
    async fn review_access(
        &self,
        requester: &Requester,
        verb: &'static str,
        subresources: &[&'static str],
    ) -> Result<Result<(), String>, Refusal> {
        let mut reasons = Vec::new();
        for subresource in subresources {
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
                return Ok(Ok(()));
            }
            reasons.extend(status.reason);
        }
        Ok(Err(format!(
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

    /// A consumer API server that answers reviews and counts them: every
    /// token is `alice`'s; `create` on anything is allowed, the rest denied.
    fn counting_consumer() -> (Client, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let log = log.clone();
            async move {
                use http_body_util::BodyExt as _;
                let path = request.uri().path().to_owned();
                let body = request.into_body().collect().await?.to_bytes();
                let mut review: serde_json::Value = serde_json::from_slice(&body)?;
                log.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(path.clone());
                review["status"] = if path.ends_with("/tokenreviews") {
                    serde_json::json!({"authenticated": true, "user": {"username": "alice", "groups": ["staff"]}})
                } else {
                    let verb = review["spec"]["resourceAttributes"]["verb"].clone();
                    serde_json::json!({"allowed": verb == "create", "reason": "the test says so"})
                };
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(http::Response::new(
                    http_body_util::Full::new(bytes::Bytes::from(serde_json::to_vec(&review)?)),
                ))
            }
        });
        (Client::new(service, "default"), seen)
    }

    #[tokio::test(start_paused = true)]
    async fn review_answers_are_kept_for_their_time_and_not_asked_again() {
        let (consumer, seen) = counting_consumer();
        let ttls = ReviewTtls::default();
        let gatekeeper = Gatekeeper::new(consumer, "node-a".into(), ttls);
        let asked = |kind: &str| {
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|p| p.ends_with(kind))
                .count()
        };
        let alice = gatekeeper
            .authenticate(None, Some("Bearer t0ken"))
            .await
            .expect("authenticated");
        assert_eq!(alice.name, "alice");
        let again = gatekeeper
            .authenticate(None, Some("Bearer t0ken"))
            .await
            .expect("authenticated");
        assert_eq!((again, asked("tokenreviews")), (alice.clone(), 1));

        let post = http::Method::POST;
        let get = http::Method::GET;
        for _ in 0..3 {
            gatekeeper
                .authorize(&alice, &post, "/exec/a/b/c")
                .await
                .expect("allowed");
            assert!(matches!(
                gatekeeper.authorize(&alice, &get, "/exec/a/b/c").await,
                Err(Refusal::Forbidden(why)) if why.contains("the test says so")
            ));
        }
        assert_eq!(asked("subjectaccessreviews"), 2, "one review per question");

        // A denial is kept 30 s, an allowance 5 min, a token 2 min.
        tokio::time::advance(ttls.denied + Duration::from_secs(1)).await;
        let _ = gatekeeper.authorize(&alice, &get, "/exec/a/b/c").await;
        gatekeeper
            .authorize(&alice, &post, "/exec/a/b/c")
            .await
            .expect("allowed");
        assert_eq!(asked("subjectaccessreviews"), 3, "only the denial expired");
        tokio::time::advance(ttls.authenticated).await;
        gatekeeper
            .authenticate(None, Some("Bearer t0ken"))
            .await
            .expect("authenticated");
        assert_eq!(asked("tokenreviews"), 2, "the token was reviewed again");
        tokio::time::advance(ttls.allowed).await;
        gatekeeper
            .authorize(&alice, &post, "/exec/a/b/c")
            .await
            .expect("allowed");
        assert_eq!(asked("subjectaccessreviews"), 4, "the allowance expired");
    }

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
