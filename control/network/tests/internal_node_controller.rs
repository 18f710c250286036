//! InternalNodes follow Nodes, against the test control plane.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::{
    api::{DeleteParams, Patch, PatchParams, PostParams},
    Api,
};
use strait_api::networking::InternalNode;
use strait_network::internal_node_controller;
use strait_testkit::{eventually, TestCluster};

const STEP: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_gets_an_internal_node_that_goes_with_it() {
    let cluster = TestCluster::start("inodes").await.expect("test cluster");
    let client = cluster.client();
    let controller = tokio::spawn(internal_node_controller::run(client.clone()));
    let nodes: Api<Node> = Api::all(client.clone());
    let internal: Api<InternalNode> = Api::all(client);

    let node: Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "worker-1"},
        "spec": {"podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"]},
    }))
    .expect("node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
    // The kubelet reports addresses in the status.
    let status = serde_json::json!({"status": {"addresses": [
        {"type": "Hostname", "address": "worker-1"},
        {"type": "InternalIP", "address": "192.168.10.21"},
        {"type": "InternalIP", "address": "fd00:192:168:10::21"},
    ]}});
    nodes
        .patch_status("worker-1", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");

    eventually("InternalNode created", STEP, || async {
        internal.get_opt("worker-1").await.ok().flatten().is_some()
    })
    .await;
    let inode = internal.get("worker-1").await.expect("get");
    assert_eq!(
        inode.spec.endpoints,
        ["192.168.10.21", "fd00:192:168:10::21"]
    );
    assert_eq!(
        inode.spec.pod_cidrs,
        ["10.244.1.0/24", "fd00:10:244:1::/64"]
    );

    // A changed address is followed.
    let moved = serde_json::json!({"status": {"addresses": [{"type": "InternalIP", "address": "192.168.10.22"}]}});
    nodes
        .patch_status("worker-1", &PatchParams::default(), &Patch::Merge(&moved))
        .await
        .expect("status");
    eventually("endpoint updated", STEP, || async {
        internal
            .get("worker-1")
            .await
            .is_ok_and(|n| n.spec.endpoints == ["192.168.10.22"])
    })
    .await;

    nodes
        .delete("worker-1", &DeleteParams::default())
        .await
        .expect("delete node");
    eventually("InternalNode removed with its Node", STEP, || async {
        internal.get_opt("worker-1").await.ok().flatten().is_none()
    })
    .await;
    controller.abort();
}
