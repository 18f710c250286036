//! TokenRequest (`serviceaccounts/<name>/token`): service account tokens
//! with an audience and an expiry, bound to a pod, that a TokenReview
//! accepts as the service account while they are valid.

mod common;

use common::within;
use k8s_openapi::api::authentication::v1::{
    BoundObjectReference, TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec, UserInfo,
};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use strait_testkit::{Options, TestCluster};

fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

async fn review(
    client: &kube::Client,
    token: &str,
    audiences: &[&str],
) -> (bool, Option<UserInfo>) {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences: Some(audiences.iter().map(|a| (*a).to_owned()).collect()),
        },
        ..Default::default()
    };
    let status = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("review")
        .status
        .expect("status");
    (status.authenticated == Some(true), status.user)
}

fn request(pod: Option<&Pod>, audience: Option<&str>, seconds: i64) -> TokenRequest {
    TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().map(str::to_owned).collect(),
            expiration_seconds: Some(seconds),
            bound_object_ref: pod.map(|pod| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn requested_tokens_authenticate_as_their_service_account_until_expiry_or_pod_deletion() {
    let options = Options {
        tls: true,
        ..Options::default()
    };
    let cluster = within("start", TestCluster::start_with("token-requests", options))
        .await
        .expect("starts");
    let admin = cluster.client();
    let pp = PostParams::default();
    Api::<Namespace>::all(admin.clone())
        .create(&pp, &object(json!({"metadata": {"name": "apps"}})))
        .await
        .expect("namespace");
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "apps");
    accounts
        .create(&pp, &object(json!({"metadata": {"name": "web"}})))
        .await
        .expect("service account");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "apps");
    let pod = pods
        .create(
            &pp,
            &object(json!({"metadata": {"name": "web-0"}, "spec": {"serviceAccountName": "web", "containers": [{"name": "c", "image": "i"}]}})),
        )
        .await
        .expect("pod");

    // Bound to the pod, for the API server's audience.
    let issued = accounts
        .create_token_request("web", &pp, &request(Some(&pod), None, 3600))
        .await
        .expect("token request");
    let token = issued.status.expect("status").token;
    let (ok, user) = review(&admin, &token, &[]).await;
    assert!(ok, "a fresh bound token authenticates");
    let user = user.expect("user");
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:apps:web")
    );
    assert!(user
        .groups
        .unwrap_or_default()
        .contains(&"system:serviceaccounts:apps".to_owned()));
    let extra = user.extra.unwrap_or_default();
    assert_eq!(
        extra.get("authentication.kubernetes.io/pod-name"),
        Some(&vec!["web-0".to_owned()])
    );
    assert!(
        !review(&admin, &token, &["vault"]).await.0,
        "wrong audience refused"
    );
    assert!(!review(&admin, "strait-testkit.forged", &[]).await.0);

    // A custom audience, and an expiry that passes.
    let short = accounts
        .create_token_request("web", &pp, &request(None, Some("vault"), 1))
        .await
        .expect("short token")
        .status
        .expect("status")
        .token;
    assert!(review(&admin, &short, &["vault"]).await.0);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert!(!review(&admin, &short, &["vault"]).await.0, "expired");

    // A wrong uid, a missing account, and no RBAC right are refused.
    let mut stale = pod.clone();
    stale.metadata.uid = Some("not-the-pod".into());
    let refused = accounts
        .create_token_request("web", &pp, &request(Some(&stale), None, 3600))
        .await;
    assert!(
        matches!(refused, Err(kube::Error::Api(ref s)) if s.code == 400),
        "{refused:?}"
    );
    let missing = accounts
        .create_token_request("nobody", &pp, &request(None, None, 3600))
        .await;
    assert!(
        matches!(missing, Err(kube::Error::Api(ref s)) if s.code == 404),
        "{missing:?}"
    );
    let stranger = cluster.client_as("stranger", &[]).await.expect("client");
    let forbidden = Api::<ServiceAccount>::namespaced(stranger, "apps")
        .create_token_request("web", &pp, &request(None, None, 3600))
        .await;
    assert!(
        matches!(forbidden, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{forbidden:?}"
    );

    // The bound token dies with its pod.
    pods.delete("web-0", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete pod");
    assert!(!review(&admin, &token, &[]).await.0, "the pod is gone");
}
