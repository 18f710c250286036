//! The kubelet endpoint on its own, in process, with `--client-ca-file`:
//! a client certificate signed by the consumer's CA authenticates as its
//! CN/O and is authorized by a SubjectAccessReview; one from another CA
//! does not get through the TLS handshake.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::{api::PostParams, config::Kubeconfig, Api, Client};
use serde_json::json;
use strait_offloading::{
    ipmap::IpTranslation,
    reflection::{addresses::Translation, Reflection},
};
use strait_testkit::{Options, TestCluster};
use strait_virtual_kubelet::{
    auth::{Gatekeeper, ReviewTtls},
    server::{self, Endpoint},
    tls::{self, TlsSettings},
};

const NODE: &str = "virtual-a";

async fn tls_cluster(name: &str) -> TestCluster {
    TestCluster::start_with(
        name,
        Options {
            tls: true,
            ..Options::default()
        },
    )
    .await
    .expect("cluster starts")
}

/// A client of the endpoint at `port` with the credentials of `kubeconfig`
/// (the endpoint's self-signed certificate is not verified).
async fn client_for(kubeconfig: &str, port: u16) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(kubeconfig).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    config.cluster_url = format!("https://127.0.0.1:{port}").parse().expect("url");
    config.root_cert = None;
    config.accept_invalid_certs = true;
    Client::try_from(config).expect("client")
}

async fn get(client: &Client, path: &str) -> Result<(u16, String), kube::Error> {
    use http_body_util::BodyExt as _;
    let request = http::Request::get(path)
        .body(kube::client::Body::from(Vec::new()))
        .expect("request");
    let response = tokio::time::timeout(std::time::Duration::from_secs(20), client.send(request))
        .await
        .expect("answer in time")?;
    let code = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_from_the_client_ca_authenticate_and_are_authorized() {
    let consumer = tls_cluster("endpoint-consumer").await;
    let provider = tls_cluster("endpoint-provider").await;
    let stranger = tls_cluster("endpoint-stranger").await;
    let dir = tempfile::tempdir().expect("temp dir");

    // The consumer's CA, as the cluster's client CA bundle.
    let admin_config = Kubeconfig::from_yaml(&consumer.kubeconfig_yaml().expect("kubeconfig"))
        .expect("kubeconfig");
    let ca = admin_config.clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.certificate_authority_data.clone())
        .expect("CA data");
    let ca_path = dir.path().join("client-ca.crt");
    std::fs::write(
        &ca_path,
        base64::engine::general_purpose::STANDARD
            .decode(ca)
            .expect("base64"),
    )
    .expect("write CA");
    let settings = TlsSettings {
        client_ca_file: Some(ca_path),
        ..TlsSettings::default()
    };
    let config = tls::server_config(&settings, &[NODE.to_owned(), "127.0.0.1".to_owned()])
        .expect("TLS config");

    let (_namespaces_tx, namespaces) = tokio::sync::watch::channel(Default::default());
    let (_virtual_node_tx, virtual_node) = tokio::sync::watch::channel(None);
    let reflection = Arc::new(Reflection {
        local: consumer.client(),
        remote: provider.client(),
        node_name: NODE.to_owned(),
        local_cluster_id: "consumer".into(),
        provider_cluster_id: "provider".into(),
        translation: tokio::sync::watch::channel(Translation::Static(IpTranslation::default())).1,
        namespaces,
        virtual_node,
        consumer_api_address: None,
    });
    let endpoint = Arc::new(Endpoint {
        reflection,
        // Denials not kept: the test grants a right and asks again.
        gatekeeper: Gatekeeper::new(
            consumer.client(),
            NODE.to_owned(),
            ReviewTtls {
                denied: Duration::ZERO,
                ..ReviewTtls::default()
            },
        ),
        tls: tokio_rustls::TlsAcceptor::from(config),
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("listen");
    let port = listener.local_addr().expect("address").port();
    let serving = tokio::spawn(server::serve(listener, endpoint));

    let caller = client_for(
        &consumer
            .kubeconfig_yaml_as("probe", &["probes"])
            .expect("kubeconfig"),
        port,
    )
    .await;
    let (code, body) = get(&caller, "/healthz").await.expect("exchange");
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("user=probe") && body.contains("subresource=healthz or proxy"),
        "{body}"
    );

    let admin = consumer.client();
    let _: ClusterRole = Api::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "node-health"},
                "rules": [{"apiGroups": [""], "resources": ["nodes/healthz"], "verbs": ["get"]}],
            }))
            .expect("role"),
        )
        .await
        .expect("create role");
    let _: ClusterRoleBinding = Api::all(admin)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "probes-health"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "node-health"},
                "subjects": [{"kind": "Group", "name": "probes"}],
            }))
            .expect("binding"),
        )
        .await
        .expect("create binding");
    let (code, body) = get(&caller, "/healthz").await.expect("exchange");
    assert_eq!((code, body.as_str()), (200, "ok"));
    // nodes/healthz does not cover the pod endpoints (nodes/proxy).
    let (code, body) = get(&caller, "/containerLogs/a/b/c")
        .await
        .expect("exchange");
    assert_eq!(code, 403, "{body}");

    // A certificate of another CA is refused during the handshake.
    let outsider = client_for(
        &stranger
            .kubeconfig_yaml_as("probe", &["probes"])
            .expect("kubeconfig"),
        port,
    )
    .await;
    assert!(
        get(&outsider, "/healthz").await.is_err(),
        "a certificate from another CA must not be accepted"
    );
    serving.abort();
}
