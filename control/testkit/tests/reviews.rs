//! TokenReview and SubjectAccessReview: what a kubelet asks the API server
//! about the requests it serves.

mod common;

use common::{api_error, within};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, PostParams};
use serde_json::json;
use strait_testkit::{Options, TestCluster};

fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

async fn review_token(client: &kube::Client, token: &str) -> Result<TokenReview, kube::Error> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
}

async fn may_proxy(client: &kube::Client, user: &str, groups: &[&str], node: &str) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            groups: Some(groups.iter().map(|g| (*g).to_owned()).collect()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some("get".into()),
                resource: Some("nodes".into()),
                subresource: Some("proxy".into()),
                name: Some(node.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("review")
        .status
        .expect("status")
        .allowed
}

#[tokio::test]
async fn tokens_are_reviewed_and_access_is_reviewed_by_rbac() {
    let options = Options {
        tls: true,
        ..Options::default()
    };
    let cluster = within("start", TestCluster::start_with("reviews", options))
        .await
        .expect("starts");
    let admin = cluster.client();

    let token = cluster.issue_token("alice", &["team"]);
    let status = review_token(&admin, &token)
        .await
        .expect("review")
        .status
        .expect("status");
    assert_eq!(status.authenticated, Some(true));
    let user = status.user.expect("user");
    assert_eq!(
        (user.username.as_deref(), user.groups),
        (Some("alice"), Some(vec!["team".to_owned()]))
    );
    let forged = review_token(&admin, "forged")
        .await
        .expect("review")
        .status
        .expect("status");
    assert_eq!(forged.authenticated, Some(false));

    assert!(!may_proxy(&admin, "alice", &["team"], "node-a").await);
    let _: ClusterRole = Api::all(admin.clone())
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": "proxy-node-a"},
                "rules": [{"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"], "resourceNames": ["node-a"]}],
            })),
        )
        .await
        .expect("role");
    let _: ClusterRoleBinding = Api::all(admin.clone())
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": "team-proxy"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "proxy-node-a"},
                "subjects": [{"kind": "Group", "name": "team"}],
            })),
        )
        .await
        .expect("binding");
    assert!(may_proxy(&admin, "alice", &["team"], "node-a").await);
    assert!(!may_proxy(&admin, "alice", &["team"], "node-b").await);
    assert!(!may_proxy(&admin, "alice", &[], "node-a").await);

    // Asking is itself authorized: a user without `create` on tokenreviews.
    let nobody = cluster.client_as("nobody", &[]).await.expect("client");
    let refused = review_token(&nobody, &token).await;
    assert_eq!(api_error(refused).code, 403);
}
