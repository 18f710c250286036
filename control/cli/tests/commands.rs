//! The smaller commands: info, offload namespace, network test, completions,
//! and the kubectl plugin binary.
mod common;

use std::process::Command;

use common::{create_namespace, installed, strait};
use kube::{api::PostParams, Api};
use serde_json::json;
use strait_api::{
    core::ForeignCluster,
    ipam::Network,
    offloading::{NamespaceOffloading, PodOffloadingStrategy},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_shows_the_cluster_id_ranges_and_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alpha = installed("info", Some("cluster-a"), dir.path()).await;
    let client = alpha.cluster.client();
    create_namespace(&client, "strait-tenant-cluster-b").await;
    let network: Network = serde_json::from_value(json!({
        "apiVersion": "ipam.strait.dev/v1beta1", "kind": "Network",
        "metadata": {"name": "cluster-b-pod", "namespace": "strait-tenant-cluster-b"},
        "spec": {"cidrs": ["10.244.0.0/16"]},
    }))
    .expect("network");
    Api::<Network>::namespaced(client, "strait-tenant-cluster-b")
        .create(&PostParams::default(), &network)
        .await
        .expect("create");
    let kubeconfig = alpha.kubeconfig.to_str().expect("path");
    let (output, result) = strait(&["--kubeconfig", kubeconfig, "info"]).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(
        output.contains("cluster ID:          cluster-a"),
        "{output}"
    );
    assert!(
        output.contains(&format!(
            "strait CLI:          {}",
            env!("CARGO_PKG_VERSION")
        )),
        "{output}"
    );
    assert!(
        output.contains("strait-controller:   not found in namespace strait"),
        "{output}"
    );
    assert!(
        output.contains("strait-tenant-cluster-b/cluster-b-pod: asked 10.244.0.0/16 -> (pending)"),
        "{output}"
    );

    let bare = installed("info-bare", None, dir.path()).await;
    let (output, result) = strait(&[
        "--kubeconfig",
        bare.kubeconfig.to_str().expect("path"),
        "info",
    ])
    .await;
    assert!(result.is_ok(), "{result:?}");
    assert!(
        output.contains("cluster ID:          unknown: this cluster has no cluster ID"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offload_namespace_writes_its_namespace_offloading() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alpha = installed("offload", Some("cluster-a"), dir.path()).await;
    create_namespace(&alpha.cluster.client(), "shop").await;
    let kubeconfig = alpha.kubeconfig.to_str().expect("path");
    let args = [
        "--kubeconfig",
        kubeconfig,
        "offload",
        "namespace",
        "shop",
        "--pod-offloading-strategy",
        "remote",
        "--selector",
        "gpu=true",
    ];
    let (output, result) = strait(&args).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(
        output.contains("applied NamespaceOffloading shop/offloading"),
        "{output}"
    );
    let written = Api::<NamespaceOffloading>::namespaced(alpha.cluster.client(), "shop")
        .get("offloading")
        .await
        .expect("NamespaceOffloading");
    assert_eq!(
        written.spec.pod_offloading_strategy,
        PodOffloadingStrategy::Remote
    );
    let selector = written.spec.cluster_selector.expect("selector");
    let expression = &selector.node_selector_terms[0]
        .match_expressions
        .as_ref()
        .expect("expressions")[0];
    assert_eq!(
        (expression.key.as_str(), expression.values.as_deref()),
        ("gpu", Some(&["true".to_owned()][..]))
    );

    let (_, result) = strait(&[
        "offload",
        "namespace",
        "shop",
        "--remote-namespace-name",
        "x",
        "--dry-run",
    ])
    .await;
    assert!(result
        .expect_err("mismatch")
        .to_string()
        .contains("--remote-namespace-name goes with"));
    let (yaml, result) = strait(&[
        "offload",
        "namespace",
        "shop",
        "--namespace-mapping-strategy",
        "selected-name",
        "--remote-namespace-name",
        "shop-b",
        "--dry-run",
    ])
    .await;
    assert!(result.is_ok(), "{result:?}");
    assert!(
        yaml.contains("remoteNamespaceName: shop-b") && yaml.contains("SelectedName"),
        "{yaml}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_test_without_a_tunnel_says_what_it_would_probe_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alpha = installed("nettest", Some("cluster-a"), dir.path()).await;
    let kubeconfig = alpha.kubeconfig.to_str().expect("path");
    let (_, result) = strait(&["--kubeconfig", kubeconfig, "network", "test"]).await;
    let message = result.expect_err("no peering").to_string();
    assert!(
        message.contains("no peering uses the network module"),
        "{message}"
    );

    let fc: ForeignCluster = serde_json::from_value(json!({
        "apiVersion": "core.strait.dev/v1beta1", "kind": "ForeignCluster",
        "metadata": {"name": "cluster-b"},
        "spec": {"clusterID": "cluster-b", "modules": {"network": true}},
    }))
    .expect("fc");
    Api::<ForeignCluster>::all(alpha.cluster.client())
        .create(&PostParams::default(), &fc)
        .await
        .expect("create");
    let (output, result) = strait(&["--kubeconfig", kubeconfig, "network", "test"]).await;
    assert!(output.contains("✗ cluster-b: no tunnel yet"), "{output}");
    assert!(
        output.contains("would probe the peer's pod CIDR (not allocated yet) through the gateway"),
        "{output}"
    );
    let message = result.expect_err("no tunnel").to_string();
    assert!(
        message.contains("no working tunnel to cluster-b"),
        "{message}"
    );
    assert!(message.contains("next: see `strait status`"), "{message}");
}

#[tokio::test]
async fn completions_are_generated_for_every_subcommand() {
    let (script, result) = strait(&["completion", "bash"]).await;
    assert!(result.is_ok(), "{result:?}");
    for word in [
        "peer",
        "unpeer",
        "status",
        "info",
        "offload",
        "network",
        "--resource-slice",
    ] {
        assert!(script.contains(word), "bash completion lacks {word}");
    }
}

#[test]
fn the_kubectl_plugin_binary_names_itself_kubectl_strait() {
    let output = Command::new(env!("CARGO_BIN_EXE_kubectl-strait"))
        .arg("--help")
        .output()
        .expect("run kubectl-strait");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("Usage: kubectl strait"), "{help}");
    let output = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(["status", "--kubeconfig", "/nonexistent/kubeconfig"])
        .output()
        .expect("run strait");
    assert_eq!(output.status.code(), Some(1));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.starts_with("error: kubeconfig /nonexistent/kubeconfig:"),
        "{error}"
    );
    assert!(
        error.contains("next: pass the path of a readable kubeconfig file"),
        "{error}"
    );
}
