//! The strait-controller binary with only the offloading module (no
//! network module, no cluster identity: --cluster-id given), against the
//! test control plane through a kubeconfig.

mod common;

use std::time::Duration;

use common::{create_namespace, Controller};
use kube::{api::PostParams, Api};
use strait_api::offloading::{NamespaceOffloading, OffloadingPhase};
use strait_testkit::{eventually, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offloading_module_runs_alone_and_reports_an_unselected_namespace() {
    let cluster = TestCluster::start("controller-offloading")
        .await
        .expect("test cluster");
    let _controller = Controller::start(
        &cluster,
        "offloading",
        &[
            "--offloading",
            "--cluster-id",
            "cluster-a",
            "--virtual-kubelet-binary",
            "/nonexistent",
        ],
        &[],
    );
    let client = cluster.client();
    create_namespace(&client, "apps").await;
    let offloading: NamespaceOffloading = serde_json::from_value(serde_json::json!({
        "apiVersion": "offloading.strait.dev/v1beta1", "kind": "NamespaceOffloading",
        "metadata": {"name": "offloading", "namespace": "apps"},
        "spec": {"podOffloadingStrategy": "Remote"},
    }))
    .expect("object");
    let api: Api<NamespaceOffloading> = Api::namespaced(client, "apps");
    api.create(&PostParams::default(), &offloading)
        .await
        .expect("create");
    eventually(
        "NoClusterSelected with no virtual node",
        Duration::from_secs(30),
        || async {
            api.get("offloading").await.is_ok_and(|o| {
                o.status.is_some_and(|s| {
                    s.phase == OffloadingPhase::NoClusterSelected
                        && s.remote_namespace_name.as_deref() == Some("apps-cluster-a")
                })
            })
        },
    )
    .await;
}
