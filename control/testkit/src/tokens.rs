//! Bearer tokens the cluster issued, and the `TokenReview` and
//! `SubjectAccessReview` APIs a kubelet uses to authenticate and authorize
//! the requests it serves (webhook mode), answered from these tokens and
//! the cluster's RBAC objects.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::pki::User;
use crate::rbac;
use crate::store::State;

/// Tokens by value. The API server itself does not read them (it
/// authenticates by client certificate); only a TokenReview does.
#[derive(Default)]
pub struct Tokens(Mutex<HashMap<String, User>>);

impl Tokens {
    /// A new random token that authenticates `user`.
    pub fn issue(&self, user: User) -> String {
        let token = format!(
            "strait-testkit.{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(token.clone(), user);
        token
    }

    pub fn user_of(&self, token: &str) -> Option<User> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(token)
            .cloned()
    }
}

fn parse(body: &[u8], kind: &str) -> Result<Value, ApiError> {
    let review: Value = serde_json::from_slice(body)
        .map_err(|error| ApiError::bad_request(format!("a {kind} must be JSON: {error}")))?;
    if review.get("spec").is_none_or(|spec| !spec.is_object()) {
        return Err(ApiError::bad_request(format!("a {kind} needs a spec")));
    }
    Ok(review)
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`: who a token is.
pub fn token_review(tokens: &Tokens, body: &[u8]) -> Result<Value, ApiError> {
    let mut review = parse(body, "TokenReview")?;
    let token = review
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or("");
    let status = match tokens.user_of(token) {
        Some(user) => json!({
            "authenticated": true,
            "user": {"username": user.name, "groups": user.groups},
        }),
        None => {
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
