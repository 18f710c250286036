//! Bearer tokens the cluster issued, and the `TokenReview` and
//! `SubjectAccessReview` APIs a kubelet uses to authenticate and authorize
//! the requests it serves (webhook mode), answered from these tokens and
//! the cluster's RBAC objects. Service account tokens come from the
//! `serviceaccounts/<name>/token` subresource (TokenRequest), with an
//! audience, an expiry and optionally a pod they are bound to.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::pki::User;
use crate::rbac;
use crate::store::State;

/// Tokens by value. The API server itself does not read them (it
/// authenticates by client certificate); only a TokenReview does.
#[derive(Default)]
pub struct Tokens {
    plain: Mutex<HashMap<String, User>>,
    service_accounts: Mutex<HashMap<String, ServiceAccountToken>>,
}

/// What a TokenRequest issued.
#[derive(Clone, Debug)]
struct ServiceAccountToken {
    user: User,
    audiences: Vec<String>,
    expires: Timestamp,
    /// The pod (namespace, name, uid) the token dies with.
    pod: Option<(String, String, String)>,
}

/// The audience of tokens requested without one: the API server's own.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc";
/// Lifetime of a requested token that names none (the API server's default).
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

fn new_token() -> String {
    format!(
        "strait-testkit.{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Tokens {
    /// A new random token that authenticates `user`.
    pub fn issue(&self, user: User) -> String {
        let token = new_token();
        self.plain
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(token.clone(), user);
        token
    }

    pub fn user_of(&self, token: &str) -> Option<User> {
        self.plain
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(token)
            .cloned()
    }

    fn service_account_token(&self, token: &str) -> Option<ServiceAccountToken> {
        self.service_accounts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(token)
            .cloned()
    }
}

/// `POST /api/v1/namespaces/<namespace>/serviceaccounts/<name>/token`: a
/// token of that ServiceAccount (TokenRequest), for `spec.audiences`
/// (default: the API server's) and `spec.expirationSeconds` (default one
/// hour; values under Kubernetes' 600 s minimum are honoured so tests can
/// watch tokens expire), bound to the pod of `spec.boundObjectRef` if any
/// (it must exist, with that uid; the token stops authenticating when the
/// pod is gone).
pub fn token_request(
    tokens: &Tokens,
    state: &State,
    namespace: &str,
    name: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    let mut request = parse(body, "TokenRequest")?;
    let registry = state.registry();
    let accounts = registry
        .find("", "v1", "serviceaccounts")
        .ok_or_else(|| ApiError::path_not_found("serviceaccounts"))?;
    if state.get(accounts, namespace, name).is_none() {
        return Err(ApiError::not_found(
            "",
            "serviceaccounts",
            "serviceaccounts",
            name,
        ));
    }
    let spec = &request["spec"];
    let audiences = Some(strings(&spec["audiences"]))
        .filter(|list| !list.is_empty())
        .unwrap_or_else(|| vec![API_AUDIENCE.to_owned()]);
    let seconds = spec
        .get("expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
    if seconds <= 0 {
        return Err(ApiError::bad_request(
            "spec.expirationSeconds must be positive",
        ));
    }
    let pod = match spec.get("boundObjectRef").filter(|r| !r.is_null()) {
        None => None,
        Some(bound) => Some(bound_pod(state, namespace, bound)?),
    };
    let user = User {
        name: format!("system:serviceaccount:{namespace}:{name}"),
        groups: vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".to_owned(),
        ],
    };
    let expires = Timestamp::now()
        .checked_add(SignedDuration::from_secs(seconds))
        .map_err(|_| ApiError::bad_request("spec.expirationSeconds is too large"))?;
    let token = new_token();
    tokens
        .service_accounts
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(
            token.clone(),
            ServiceAccountToken {
                user,
                audiences: audiences.clone(),
                expires,
                pod,
            },
        );
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["kind"] = json!("TokenRequest");
    request["metadata"] = json!({"name": name, "namespace": namespace});
    request["spec"]["audiences"] = json!(audiences);
    request["spec"]["expirationSeconds"] = json!(seconds);
    request["status"] = json!({
        "token": token,
        "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    });
    Ok(request)
}

/// The pod a TokenRequest binds its token to: (namespace, name, uid).
fn bound_pod(
    state: &State,
    namespace: &str,
    bound: &Value,
) -> Result<(String, String, String), ApiError> {
    let text = |key: &str| bound.get(key).and_then(Value::as_str).unwrap_or("");
    if text("kind") != "Pod" {
        return Err(ApiError::bad_request(format!(
            "boundObjectRef.kind {:?} is not supported here (only Pod)",
            text("kind")
        )));
    }
    let pods = state
        .registry()
        .find("", "v1", "pods")
        .ok_or_else(|| ApiError::path_not_found("pods"))?;
    let pod = state
        .get(pods, namespace, text("name"))
        .ok_or_else(|| ApiError::not_found("", "pods", "pods", text("name")))?;
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !text("uid").is_empty() && text("uid") != uid {
        return Err(ApiError::bad_request(format!(
            "the UID in the bound object reference ({}) does not match the UID in record ({uid}); the object might have been deleted and then recreated",
            text("uid")
        )));
    }
    Ok((
        namespace.to_owned(),
        text("name").to_owned(),
        uid.to_owned(),
    ))
}

/// Who a TokenRequest's token is, if it still authenticates for `wanted`
/// audiences (none: the API server's).
fn review_service_account_token(
    state: &State,
    issued: &ServiceAccountToken,
    wanted: &[String],
) -> Value {
    let unauthenticated = |why: &str| json!({"authenticated": false, "error": why});
    if Timestamp::now() >= issued.expires {
        return unauthenticated("the service account token has expired");
    }
    let wanted = if wanted.is_empty() {
        vec![API_AUDIENCE.to_owned()]
    } else {
        wanted.to_vec()
    };
    let audiences: Vec<&String> = wanted
        .iter()
        .filter(|a| issued.audiences.contains(a))
        .collect();
    if audiences.is_empty() {
        return unauthenticated("the token is not for the requested audiences");
    }
    let mut extra = serde_json::Map::new();
    if let Some((namespace, name, uid)) = &issued.pod {
        let live = state
            .registry()
            .find("", "v1", "pods")
            .and_then(|pods| state.get(pods, namespace, name))
            .and_then(|pod| pod.pointer("/metadata/uid").and_then(Value::as_str))
            == Some(uid.as_str());
        if !live {
            return unauthenticated(&format!(
                "the pod {namespace}/{name} the token is bound to no longer exists"
            ));
        }
        extra.insert(
            "authentication.kubernetes.io/pod-name".into(),
            json!([name]),
        );
        extra.insert("authentication.kubernetes.io/pod-uid".into(), json!([uid]));
    }
    json!({
        "authenticated": true,
        "user": {"username": issued.user.name, "groups": issued.user.groups, "extra": extra},
        "audiences": audiences,
    })
}

fn parse(body: &[u8], kind: &str) -> Result<Value, ApiError> {
    let review: Value = serde_json::from_slice(body)
        .map_err(|error| ApiError::bad_request(format!("a {kind} must be JSON: {error}")))?;
    if review.get("spec").is_none_or(|spec| !spec.is_object()) {
        return Err(ApiError::bad_request(format!("a {kind} needs a spec")));
    }
    Ok(review)
}

/// The strings of a JSON array (none when it is absent or not an array).
fn strings(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`: who a token is.
pub fn token_review(tokens: &Tokens, state: &State, body: &[u8]) -> Result<Value, ApiError> {
    let mut review = parse(body, "TokenReview")?;
    let token = review
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or("");
    let wanted = strings(&review["spec"]["audiences"]);
    let status = match (tokens.user_of(token), tokens.service_account_token(token)) {
        (Some(user), _) => json!({
            "authenticated": true,
            "user": {"username": user.name, "groups": user.groups},
        }),
        (None, Some(issued)) => review_service_account_token(state, &issued, &wanted),
        (None, None) => {
            json!({"authenticated": false, "error": "the token is not one this cluster issued"})
        }
    };
    review["apiVersion"] = json!("authentication.k8s.io/v1");
    review["kind"] = json!("TokenReview");
    review["status"] = status;
    Ok(review)
}

/// `POST /apis/authorization.k8s.io/v1/subjectaccessreviews`: whether the
/// user in the spec may do what its `resourceAttributes` say, by RBAC.
pub fn subject_access_review(state: &State, body: &[u8]) -> Result<Value, ApiError> {
    let mut review = parse(body, "SubjectAccessReview")?;
    let spec = &review["spec"];
    let text = |pointer: &str| spec.pointer(pointer).and_then(Value::as_str).unwrap_or("");
    let user = User {
        name: text("/user").to_owned(),
        groups: spec
            .get("groups")
            .and_then(Value::as_array)
            .map(|groups| {
                groups
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
    };
    if user.name.is_empty() && user.groups.is_empty() {
        return Err(ApiError::bad_request(
            "a SubjectAccessReview needs a user or groups",
        ));
    }
    let status = if spec.get("resourceAttributes").is_some() {
        let resource = match text("/resourceAttributes/subresource") {
            "" => text("/resourceAttributes/resource").to_owned(),
            sub => format!("{}/{sub}", text("/resourceAttributes/resource")),
        };
        let namespace = text("/resourceAttributes/namespace");
        let name = text("/resourceAttributes/name");
        let attributes = rbac::Attributes {
            verb: text("/resourceAttributes/verb"),
            group: text("/resourceAttributes/group"),
            resource: &resource,
            namespace: (!namespace.is_empty()).then_some(namespace),
            name: (!name.is_empty()).then_some(name),
        };
        if rbac::allowed(state, &user, &attributes) {
            json!({"allowed": true, "reason": "allowed by RBAC"})
        } else {
            json!({"allowed": false, "reason": rbac::refusal(&user, &attributes)})
        }
    } else if user.groups.iter().any(|g| g == rbac::SUPERUSER_GROUP) {
        json!({"allowed": true, "reason": "allowed by RBAC"})
    } else {
        // RBAC rules on nonResourceURLs are not evaluated (see the README).
        json!({"allowed": false, "reason": "non-resource requests are allowed only to system:masters here"})
    };
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!("SubjectAccessReview");
    review["status"] = status;
    Ok(review)
}
