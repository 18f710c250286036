//! `strait status` against a test cluster seeded with ForeignClusters in
//! the states a user meets: ready, broken with a reason, not reported yet.
mod common;

use common::{assert_golden, condition, installed, strait};
use kube::{
    api::{Patch, PatchParams, PostParams},
    Api,
};
use serde_json::json;
use strait_api::core::ForeignCluster;

async fn seed(client: &kube::Client) {
    let api: Api<ForeignCluster> = Api::all(client.clone());
    let foreign_cluster = |name: &str, modules: serde_json::Value| -> ForeignCluster {
        serde_json::from_value(json!({
            "apiVersion": "core.strait.dev/v1beta1", "kind": "ForeignCluster",
            "metadata": {"name": name},
            "spec": {"clusterID": name, "modules": modules},
        }))
        .expect("ForeignCluster")
    };
    let all = json!({"network": true, "authentication": true, "offloading": true});
    for (name, modules) in [
        ("cluster-b", all.clone()),
        ("cluster-c", all.clone()),
        ("cluster-d", json!({"authentication": true})),
    ] {
        api.create(&PostParams::default(), &foreign_cluster(name, modules))
            .await
            .expect("create");
    }
    let ready = |module: &str| json!({"state": "Ready", "conditions": [condition(&format!("{module}Ready"), "True", "Ready", "")]});
    let statuses = [
        (
            "cluster-b",
            json!({
                "role": "Provider",
                "modules": {"network": ready("Network"), "authentication": ready("Authentication"), "offloading": ready("Offloading")},
                "conditions": [condition("NetworkReady", "True", "Connected", ""), condition("AuthenticationReady", "True", "IdentityIssued", "")],
            }),
        ),
        (
            "cluster-c",
            json!({
                "role": "ConsumerAndProvider",
                "modules": {
                    "network": {"state": "Error", "conditions": [condition("GatewayReady", "False", "GatewayNotReady", "the gateway pod gw-cluster-c is in CrashLoopBackOff: kubectl -n strait logs deploy/gw-cluster-c")]},
                    "authentication": ready("Authentication"),
                    "offloading": {"state": "Pending", "conditions": []},
                },
                "conditions": [condition("NetworkReady", "False", "GatewayNotReady", "see the network module")],
            }),
        ),
    ];
    for (name, status) in statuses {
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await
        .expect("status");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_module_and_what_is_wrong_in_every_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alpha = installed("alpha", Some("cluster-a"), dir.path()).await;
    let kubeconfig = alpha.kubeconfig.to_str().expect("path");

    let (empty, result) = strait(&["--kubeconfig", kubeconfig, "status"]).await;
    assert!(result.is_ok(), "{result:?}");
    assert_golden("status-empty.txt", &empty);

    seed(&alpha.cluster.client()).await;
    for (format, golden) in [
        ("table", "status.txt"),
        ("json", "status.json"),
        ("yaml", "status.yaml"),
    ] {
        let (output, result) = strait(&["--kubeconfig", kubeconfig, "status", "-o", format]).await;
        assert!(result.is_ok(), "{format}: {result:?}");
        assert_golden(golden, &output);
    }
}

#[tokio::test]
async fn status_of_an_unreachable_cluster_says_what_to_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = {
        let gone = installed("gone", None, dir.path()).await;
        gone.kubeconfig.clone()
        // dropped: the server stops
    };
    let (_, result) = strait(&["--kubeconfig", kubeconfig.to_str().expect("path"), "status"]).await;
    let message = result.expect_err("unreachable").to_string();
    assert!(message.contains("listing ForeignClusters"), "{message}");
    assert!(
        message.contains("next: check that this cluster is reachable"),
        "{message}"
    );
}
