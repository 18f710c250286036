//! The CertificateSigningRequest API of a TLS test cluster: approved
//! requests for `kubernetes.io/kube-apiserver-client` are signed by the
//! cluster's CA and authenticate their subject; others are not signed.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{api_error, within};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use strait_testkit::{eventually, Options, TestCluster, CLIENT_SIGNER};

fn request(user: &str, group: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, user);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, group);
    let csr = params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    (key.serialize_pem(), csr)
}

async fn submit(
    api: &Api<CertificateSigningRequest>,
    name: &str,
    pem: &str,
    signer: &str,
    seconds: Option<i64>,
) {
    let csr: CertificateSigningRequest = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
            "signerName": signer,
            "expirationSeconds": seconds,
            "usages": ["client auth"],
        },
    }))
    .expect("csr");
    api.create(&PostParams::default(), &csr)
        .await
        .expect("create csr");
}

async fn approve(api: &Api<CertificateSigningRequest>, name: &str) {
    let approval = json!({"status": {"conditions": [{"type": "Approved", "status": "True", "reason": "Test", "message": "approved by the test"}]}});
    api.patch_approval(name, &PatchParams::default(), &Patch::Merge(approval))
        .await
        .expect("approve");
}

async fn certificate(api: &Api<CertificateSigningRequest>, name: &str) -> Option<String> {
    let csr = api.get(name).await.ok()?;
    String::from_utf8(csr.status?.certificate?.0).ok()
}

/// A client presenting `certificate_pem` and `key_pem` to the cluster.
async fn client_with(cluster: &TestCluster, certificate_pem: &str, key_pem: &str) -> kube::Client {
    let encode = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
    let mut config: Value =
        serde_norway::from_str(&cluster.kubeconfig_yaml().expect("kubeconfig")).expect("yaml");
    config["users"][0]["user"] = json!({
        "client-certificate-data": encode(certificate_pem),
        "client-key-data": encode(key_pem),
    });
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(&serde_norway::to_string(&config).expect("yaml"))
            .expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    kube::Client::try_from(config).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_requests_are_signed_and_authenticate_their_subject_until_they_expire() {
    let options = Options {
        tls: true,
        ..Options::default()
    };
    let cluster = within("start", TestCluster::start_with("csr", options))
        .await
        .expect("cluster");
    let csrs: Api<CertificateSigningRequest> = Api::all(cluster.client());
    let limit = Duration::from_secs(10);

    // Not approved, or for another signer: never signed.
    let (_, pending) = request("dave", "readers");
    submit(&csrs, "pending", &pending, CLIENT_SIGNER, None).await;
    submit(
        &csrs,
        "elsewhere",
        &pending,
        "example.com/other-signer",
        None,
    )
    .await;
    approve(&csrs, "elsewhere").await;

    let (key, carol) = request("carol", "readers");
    submit(&csrs, "carol", &carol, CLIENT_SIGNER, Some(8)).await;
    approve(&csrs, "carol").await;
    eventually("carol's certificate", limit, || async {
        certificate(&csrs, "carol").await.is_some()
    })
    .await;
    assert!(
        certificate(&csrs, "pending").await.is_none(),
        "unapproved requests stay unsigned"
    );
    assert!(
        certificate(&csrs, "elsewhere").await.is_none(),
        "other signers' requests stay unsigned"
    );

    // Authenticated as carol in group readers: RBAC decides.
    let carol_client = client_with(
        &cluster,
        &certificate(&csrs, "carol").await.expect("cert"),
        &key,
    )
    .await;
    let config_maps: Api<ConfigMap> = Api::namespaced(carol_client.clone(), "default");
    let refused = api_error(config_maps.list(&ListParams::default()).await);
    assert_eq!(
        refused.code, 403,
        "authenticated, not yet authorized: {}",
        refused.message
    );
    assert!(refused.message.contains("\"carol\""), "{}", refused.message);
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "reader", "namespace": "default"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
    }))
    .expect("role");
    Api::<Role>::namespaced(cluster.client(), "default")
        .create(&PostParams::default(), &role)
        .await
        .expect("role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "readers", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [{"kind": "Group", "name": "readers", "apiGroup": "rbac.authorization.k8s.io"}],
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(cluster.client(), "default")
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");
    config_maps
        .list(&ListParams::default())
        .await
        .expect("the group's role applies");

    // A request that is not a CSR fails, with a condition.
    submit(&csrs, "garbage", "not a request", CLIENT_SIGNER, None).await;
    approve(&csrs, "garbage").await;
    eventually("the garbage request failed", limit, || async {
        csrs.get("garbage")
            .await
            .ok()
            .and_then(|c| c.status)
            .and_then(|s| s.conditions)
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_ == "Failed" && c.reason.as_deref() == Some("SignerValidationFailure")
                })
            })
    })
    .await;

    // expirationSeconds is honoured: after it, the certificate is refused.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let expired = client_with(
        &cluster,
        &certificate(&csrs, "carol").await.expect("cert"),
        &key,
    )
    .await;
    let result = Api::<ConfigMap>::namespaced(expired, "default")
        .list(&ListParams::default())
        .await;
    assert!(
        result.is_err(),
        "an expired certificate must not authenticate: {result:?}"
    );
}
