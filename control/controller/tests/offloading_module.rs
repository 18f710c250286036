//! The strait-controller binary with only the offloading module (no
//! network module, no cluster identity: --cluster-id given), against the
//! test control plane through a kubeconfig.

use std::{process::Stdio, time::Duration};

use k8s_openapi::api::core::v1::Namespace;
use kube::{api::PostParams, Api};
use strait_api::offloading::{NamespaceOffloading, OffloadingPhase};
use strait_testkit::{eventually, TestCluster};

/// Kills the controller process when the test ends, whatever its outcome.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offloading_module_runs_alone_and_reports_an_unselected_namespace() {
    let cluster = TestCluster::start("controller-offloading")
        .await
        .expect("test cluster");
    let dir = std::env::temp_dir().join(format!(
        "strait-controller-offloading-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = dir.join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let _controller = Running(
        std::process::Command::new(env!("CARGO_BIN_EXE_strait-controller"))
            .args([
                "--offloading",
                "--cluster-id",
                "cluster-a",
                "--virtual-kubelet-binary",
                "/nonexistent",
            ])
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("strait-controller starts"),
    );
    let client = cluster.client();
    let mut ns = Namespace::default();
    ns.metadata.name = Some("apps".into());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
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
    let _ = std::fs::remove_dir_all(&dir);
}
