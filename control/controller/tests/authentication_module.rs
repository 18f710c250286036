//! The strait-controller binary with only the authentication module, against
//! a TLS test control plane through a kubeconfig: it creates the cluster
//! identity and, for an expected consumer, publishes a nonce and reports the
//! peering as pending on the ForeignCluster.

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};
use strait_api::{
    condition::find_condition,
    core::{ForeignCluster, ForeignClusterSpec, ModuleSelection},
    names::{identity, tenant_namespace, SYSTEM_NAMESPACE},
};
use strait_testkit::{eventually, Options, TestCluster};

use common::Controller;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authentication_module_runs_alone_and_expects_a_consumer() {
    let options = Options {
        tls: true,
        ..Options::default()
    };
    let cluster = TestCluster::start_with("controller-auth", options)
        .await
        .expect("test cluster");
    let _controller = Controller::start(
        &cluster,
        "auth",
        &["--authentication", "--cluster-id", "cluster-b"],
        &[],
    );
    let client = cluster.client();
    let limit = Duration::from_secs(30);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    eventually("the cluster identity", limit, || async {
        config_maps
            .get_opt(identity::CLUSTER_IDENTITY_CONFIGMAP)
            .await
            .ok()
            .flatten()
            .and_then(|cm| cm.data)
            .is_some_and(|d| {
                d.get(identity::CLUSTER_ID_KEY).map(String::as_str) == Some("cluster-b")
            })
    })
    .await;

    let spec = ForeignClusterSpec {
        cluster_id: "cluster-a".into(),
        modules: ModuleSelection {
            authentication: true,
            ..Default::default()
        },
        kubeconfig_secret_ref: None,
    };
    let fcs: Api<ForeignCluster> = Api::all(client.clone());
    fcs.create(
        &PostParams::default(),
        &ForeignCluster::new("cluster-a", spec),
    )
    .await
    .expect("foreign cluster");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &tenant_namespace("cluster-a"));
    eventually("a nonce for cluster-a", limit, || async {
        secrets
            .get_opt("strait-nonce")
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    eventually(
        "AuthenticationReady False, TenantPending",
        limit,
        || async {
            fcs.get("cluster-a")
                .await
                .ok()
                .and_then(|fc| fc.status)
                .and_then(|s| find_condition(&s.conditions, "AuthenticationReady").cloned())
                .is_some_and(|c| c.reason == "TenantPending")
        },
    )
    .await;
}
