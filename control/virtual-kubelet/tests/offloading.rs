//! The offloading module end to end on the test control plane: a consumer,
//! providers reached only through hand-made identities (no network or
//! authentication module), virtual kubelets as processes, and the test as
//! the consumer's scheduler and the provider's kubelet.

mod support;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::{
    api::{DeleteParams, Patch, PatchParams},
    Api, ResourceExt as _,
};
use serde_json::json;
use strait_api::{
    names,
    offloading::{NamespaceOffloading, OffloadingPhase, ShadowPod, VirtualNode},
};
use strait_offloading::kubelet::KubeletSettings;
use strait_testkit::eventually;
use support::*;

fn offloading(strategy: &str, selector: Option<serde_json::Value>) -> serde_json::Value {
    let mut spec = json!({"podOffloadingStrategy": strategy});
    if let Some(selector) = selector {
        spec["clusterSelector"] = selector;
    }
    json!({
        "apiVersion": "offloading.strait.dev/v1beta1", "kind": "NamespaceOffloading",
        "metadata": {"name": "offloading"},
        "spec": spec,
    })
}

fn pod(name: &str, cpu: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1",
            "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pod_on_a_virtual_node_runs_on_the_provider_and_everything_goes_away_after() {
    let mut consumer = Consumer::start("consumer-a").await;
    let provider = Provider::start(
        "provider-b",
        "consumer-a",
        json!({"cpu": "8", "memory": "16Gi", "pods": "100"}),
        consumer.dir.path(),
    )
    .await;
    consumer.start_module(KubeletSettings {
        pod_cidr_remaps: vec!["198.18.0.0/16=198.19.0.0/16".parse().expect("remap")],
        ..KubeletSettings::default()
    });
    let local = consumer.client();
    let remote = provider.cluster.client();
    let secret = consumer.add_provider_secret(&provider).await;
    consumer
        .add_virtual_node(
            "provider-b",
            &provider,
            &secret,
            json!({"resources": {"cpu": "4", "memory": "8Gi", "pods": "10"}}),
        )
        .await;
    consumer.wait_node_ready("provider-b", true).await;
    let node = Api::<Node>::all(local.clone())
        .get("provider-b")
        .await
        .expect("node");
    assert_eq!(
        node.labels()
            .get(names::label::NODE_TYPE)
            .map(String::as_str),
        Some(names::label::NODE_TYPE_VIRTUAL)
    );
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    assert!(
        taints
            .iter()
            .any(|t| t.key == names::VIRTUAL_NODE_TAINT && t.effect == "NoExecute"),
        "{taints:?}"
    );
    let allocatable = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.clone())
        .expect("allocatable");
    assert_eq!(allocatable["cpu"].0, "4");
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        local.clone(),
        "kube-node-lease",
    )
    .get("provider-b")
    .await
    .expect("lease");
    assert!(lease.spec.and_then(|s| s.renew_time).is_some());
    let vns: Api<VirtualNode> = Api::namespaced(local.clone(), names::SYSTEM_NAMESPACE);
    eventually("VirtualNode Ready", WAIT, || async {
        vns.get("provider-b")
            .await
            .is_ok_and(|vn| strait_offloading::virtual_node_controller::is_ready(&vn))
    })
    .await;

    namespace(&local, "shop").await;
    let _: NamespaceOffloading = create(&local, Some("shop"), offloading("Remote", None)).await;
    let offloadings: Api<NamespaceOffloading> = Api::namespaced(local.clone(), "shop");
    eventually("namespace offloaded", WAIT, || async {
        offloadings
            .get("offloading")
            .await
            .is_ok_and(|o| o.status.is_some_and(|s| s.phase == OffloadingPhase::Ready))
    })
    .await;
    let remote_namespace = "shop-consumer-a";
    Api::<Namespace>::all(remote.clone())
        .get(remote_namespace)
        .await
        .expect("remote namespace on the provider");

    let _: Pod = create(&local, Some("shop"), pod("web", "1")).await;
    let pods: Api<Pod> = Api::namespaced(local.clone(), "shop");
    eventually(
        "the Remote strategy lets the pod onto virtual nodes",
        WAIT,
        || async {
            pods.get("web").await.is_ok_and(|p| {
                let spec = p.spec.unwrap_or_default();
                spec.tolerations
                    .unwrap_or_default()
                    .iter()
                    .any(|t| t.key.as_deref() == Some(names::VIRTUAL_NODE_TAINT))
                    && spec.affinity.is_some()
            })
        },
    )
    .await;
    bind(&local, "shop", "web", "provider-b").await;
    wait_phase(&local, "shop", "web", "Running").await;
    let shadow = Api::<ShadowPod>::namespaced(remote.clone(), remote_namespace)
        .get("web")
        .await
        .expect("ShadowPod");
    assert_eq!(
        shadow
            .labels()
            .get(names::label::VIRTUAL_NODE)
            .map(String::as_str),
        Some("provider-b")
    );
    let real = Api::<Pod>::namespaced(remote.clone(), remote_namespace)
        .get("web")
        .await
        .expect("real pod");
    let remote_ip = real.status.and_then(|s| s.pod_ip).expect("provider pod IP");
    let local_ip = pods
        .get("web")
        .await
        .expect("pod")
        .status
        .and_then(|s| s.pod_ip)
        .expect("local pod IP");
    assert_eq!(
        local_ip,
        remote_ip.replacen("198.18.", "198.19.", 1),
        "the pod IP is translated to the remapped range"
    );

    provider
        .cluster
        .set_pod_log(remote_namespace, "web", "app", "listening on :8080\n");
    let (code, body) = kubelet_get(&local, "provider-b", "/containerLogs/shop/web/app").await;
    assert_eq!((code, body.as_str()), (200, "listening on :8080\n"));
    let (code, _) = kubelet_get(&local, "provider-b", "/containerLogs/elsewhere/web/app").await;
    assert_eq!(code, 404, "a namespace not offloaded through this node");

    pods.delete("web", &DeleteParams::default())
        .await
        .expect("delete pod");
    let remote_pods: Api<Pod> = Api::namespaced(remote.clone(), remote_namespace);
    eventually(
        "the provider's pod and ShadowPod are gone",
        WAIT,
        || async {
            remote_pods.get_opt("web").await.is_ok_and(|p| p.is_none())
                && Api::<ShadowPod>::namespaced(remote.clone(), remote_namespace)
                    .get_opt("web")
                    .await
                    .is_ok_and(|p| p.is_none())
        },
    )
    .await;

    offloadings
        .delete("offloading", &DeleteParams::default())
        .await
        .expect("delete offloading");
    eventually("the remote namespace is gone", WAIT, || async {
        Api::<Namespace>::all(remote.clone())
            .get_opt(remote_namespace)
            .await
            .is_ok_and(|n| n.is_none())
            && offloadings
                .get_opt("offloading")
                .await
                .is_ok_and(|o| o.is_none())
    })
    .await;
    vns.delete("provider-b", &DeleteParams::default())
        .await
        .expect("delete virtual node");
    eventually("the VirtualNode is drained and gone", WAIT, || async {
        vns.get_opt("provider-b").await.is_ok_and(|v| v.is_none())
    })
    .await;
    let tenant = names::tenant_namespace("consumer-a");
    assert_eq!(
        leftovers(&local, &["shop", names::SYSTEM_NAMESPACE]).await,
        Default::default(),
        "consumer leftovers"
    );
    assert_eq!(
        leftovers(&remote, &[&tenant]).await,
        Default::default(),
        "provider leftovers"
    );
    let _ = Patch::<()>::Merge(());
    let _ = PatchParams::default();
}
