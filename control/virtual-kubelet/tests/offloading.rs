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
        .within("reading node provider-b")
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
    // The Lease is written right after the status that made the node Ready.
    let leases = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        local.clone(),
        "kube-node-lease",
    );
    eventually("the node's Lease renewed", WAIT, || async {
        leases
            .get_opt("provider-b")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec)
            .is_some_and(|s| s.renew_time.is_some())
    })
    .await;
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
        .within("reading the remote namespace")
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
        .within("reading ShadowPod web")
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
        .within("reading the provider's pod web")
        .await
        .expect("real pod");
    let remote_ip = real.status.and_then(|s| s.pod_ip).expect("provider pod IP");
    let local_ip = pods
        .get("web")
        .within("reading pod web")
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

    // Events of the provider's pod come back to the local pod.
    let _: k8s_openapi::api::core::v1::Event = create(
        &remote,
        Some(remote_namespace),
        json!({
            "metadata": {"name": "web.pulled"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": remote_namespace},
            "reason": "Pulled", "message": "image pulled", "type": "Normal",
        }),
    )
    .await;
    let local_events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(local.clone(), "shop");
    eventually(
        "the provider's event is copied to the local pod",
        WAIT,
        || async {
            local_events.list(&Default::default()).await.is_ok_and(|l| {
                l.items.iter().any(|e| {
                    e.reason.as_deref() == Some("Pulled")
                        && e.involved_object.name.as_deref() == Some("web")
                        && e.involved_object.uid.is_some()
                })
            })
        },
    )
    .await;
    provider
        .cluster
        .set_pod_log(remote_namespace, "web", "app", "listening on :8080\n");
    let (code, body) = kubelet_get(&local, "provider-b", "/containerLogs/shop/web/app").await;
    assert_eq!((code, body.as_str()), (200, "listening on :8080\n"));
    let (code, _) = kubelet_get(&local, "provider-b", "/containerLogs/elsewhere/web/app").await;
    assert_eq!(code, 404, "a namespace not offloaded through this node");

    pods.delete("web", &DeleteParams::default())
        .within("deleting pod web")
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
        .within("deleting the NamespaceOffloading")
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
        .within("deleting VirtualNode provider-b")
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

async fn offloaded(
    local: &kube::Client,
    namespace: &str,
    phase: OffloadingPhase,
) -> NamespaceOffloading {
    let api: Api<NamespaceOffloading> = Api::namespaced(local.clone(), namespace);
    let mut last = None;
    let found = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(o) = api.get("offloading").await {
                if o.status.as_ref().is_some_and(|s| s.phase == phase) {
                    return o;
                }
                last = Some(o);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "namespace {namespace} never reached {phase:?}: {:?}",
            last.and_then(|o| o.status)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_virtual_nodes_of_one_provider_get_the_pods_their_labels_select_within_capacity() {
    let mut consumer = Consumer::start("consumer-c").await;
    let provider = Provider::start(
        "provider-d",
        "consumer-c",
        json!({"cpu": "16", "memory": "32Gi", "pods": "100"}),
        consumer.dir.path(),
    )
    .await;
    consumer.start_module(KubeletSettings::default());
    let local = consumer.client();
    let secret = consumer.add_provider_secret(&provider).await;
    consumer
        .add_virtual_node(
            "provider-d-cpu",
            &provider,
            &secret,
            json!({"resources": {"cpu": "4", "memory": "8Gi", "pods": "10"}}),
        )
        .await;
    consumer
        .add_virtual_node("provider-d-gpu", &provider, &secret, json!({"resources": {"cpu": "2", "memory": "8Gi", "pods": "10"}, "labels": {"gpu": "true"}}))
        .await;
    consumer.wait_node_ready("provider-d-cpu", true).await;
    consumer.wait_node_ready("provider-d-gpu", true).await;

    namespace(&local, "ml").await;
    let gpu_only = json!({"nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["true"]}]}]});
    let _: NamespaceOffloading =
        create(&local, Some("ml"), offloading("Remote", Some(gpu_only))).await;
    let status = offloaded(&local, "ml", OffloadingPhase::Ready)
        .await
        .status
        .expect("status");
    assert_eq!(
        status.remote_namespaces.len(),
        1,
        "one provider behind both nodes"
    );

    for (name, cpu) in [("train-0", "1"), ("train-1", "1"), ("train-2", "1")] {
        let _: Pod = create(&local, Some("ml"), pod(name, cpu)).await;
        let pods: Api<Pod> = Api::namespaced(local.clone(), "ml");
        eventually("placement", WAIT, || async {
            pods.get(name)
                .await
                .is_ok_and(|p| p.spec.and_then(|s| s.affinity).is_some())
        })
        .await;
        assert_eq!(
            schedule(&local, "ml", name).await.as_deref(),
            Some("provider-d-gpu"),
            "{name} goes to the GPU node"
        );
    }
    wait_phase(&local, "ml", "train-0", "Running").await;
    wait_phase(&local, "ml", "train-1", "Running").await;
    // The GPU node has 2 cpus: the third pod is refused as a kubelet refuses it.
    wait_phase(&local, "ml", "train-2", "Failed").await;
    let refused = Api::<Pod>::namespaced(local.clone(), "ml")
        .get("train-2")
        .within("reading pod train-2")
        .await
        .expect("pod");
    assert_eq!(
        refused.status.and_then(|s| s.reason).as_deref(),
        Some("OutOfcpu")
    );
    let remote_namespace = "ml-consumer-c";
    let remote_pods: Api<Pod> = Api::namespaced(provider.cluster.client(), remote_namespace);
    assert!(
        remote_pods
            .get_opt("train-2")
            .within("reading the provider's pod train-2")
            .await
            .expect("get")
            .is_none(),
        "a refused pod never reaches the provider"
    );
    eventually("allocatable shrinks by what runs", WAIT, || async {
        Api::<Node>::all(local.clone())
            .get("provider-d-gpu")
            .await
            .is_ok_and(|n| {
                n.status
                    .and_then(|s| s.allocatable)
                    .is_some_and(|a| a["cpu"].0 == "0" && a["pods"].0 == "8")
            })
    })
    .await;
    let shadow = Api::<ShadowPod>::namespaced(provider.cluster.client(), remote_namespace)
        .get("train-0")
        .within("reading ShadowPod train-0")
        .await
        .expect("shadow");
    assert_eq!(
        shadow.labels()[names::label::VIRTUAL_NODE],
        "provider-d-gpu"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_provider_makes_the_node_not_ready_and_its_return_ready_without_duplicates()
{
    let mut consumer = Consumer::start("consumer-e").await;
    let provider = Provider::start(
        "provider-f",
        "consumer-e",
        json!({"cpu": "8", "memory": "16Gi", "pods": "100"}),
        consumer.dir.path(),
    )
    .await;
    consumer.start_module(KubeletSettings {
        not_ready_grace: std::time::Duration::from_secs(2),
        ..KubeletSettings::default()
    });
    let local = consumer.client();
    let target = provider
        .cluster
        .url()
        .trim_start_matches("https://")
        .parse()
        .expect("provider address");
    let relay = Relay::start(target).await;
    consumer
        .add_secret(
            "provider-f-kubeconfig",
            &through(&provider.consumer_kubeconfig, relay.address),
        )
        .await;
    consumer
        .add_virtual_node(
            "provider-f",
            &provider,
            "provider-f-kubeconfig",
            json!({"resources": {"cpu": "4", "memory": "8Gi", "pods": "10"}}),
        )
        .await;
    consumer.wait_node_ready("provider-f", true).await;
    namespace(&local, "jobs").await;
    let _: NamespaceOffloading =
        create(&local, Some("jobs"), offloading("LocalAndRemote", None)).await;
    offloaded(&local, "jobs", OffloadingPhase::Ready).await;
    let _: Pod = create(&local, Some("jobs"), pod("before", "1")).await;
    bind(&local, "jobs", "before", "provider-f").await;
    wait_phase(&local, "jobs", "before", "Running").await;

    relay.cut();
    let cut_at = std::time::Instant::now();
    consumer.wait_node_ready("provider-f", false).await;
    let noticed = cut_at.elapsed();
    assert!(
        noticed < std::time::Duration::from_secs(10),
        "NotReady after {noticed:?} with a 2 s grace"
    );
    let node = Api::<Node>::all(local.clone())
        .get("provider-f")
        .within("reading node provider-f")
        .await
        .expect("node");
    let ready = node
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(ready.reason.as_deref(), Some("ProviderUnreachable"));
    // A pod bound while the provider is away waits, then runs once.
    let _: Pod = create(&local, Some("jobs"), pod("during", "1")).await;
    bind(&local, "jobs", "during", "provider-f").await;

    relay.restore();
    consumer.wait_node_ready("provider-f", true).await;
    wait_phase(&local, "jobs", "during", "Running").await;
    let remote_pods: Api<Pod> = Api::namespaced(provider.cluster.client(), "jobs-consumer-e");
    let names: Vec<String> = remote_pods
        .list(&Default::default())
        .within("listing the provider's pods")
        .await
        .expect("list")
        .into_iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(
        names,
        ["before", "during"],
        "one provider pod per local pod"
    );
    let shadows = Api::<ShadowPod>::namespaced(provider.cluster.client(), "jobs-consumer-e")
        .list(&Default::default())
        .within("listing the provider's ShadowPods")
        .await
        .expect("list");
    assert_eq!(shadows.items.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn services_endpoints_configmaps_and_secrets_are_reflected_and_follow_updates() {
    use k8s_openapi::api::{
        core::v1::{ConfigMap, Secret, Service},
        discovery::v1::EndpointSlice,
    };
    let mut consumer = Consumer::start("consumer-g").await;
    let provider = Provider::start(
        "provider-h",
        "consumer-g",
        json!({"cpu": "8", "memory": "16Gi", "pods": "100"}),
        consumer.dir.path(),
    )
    .await;
    consumer.start_module(KubeletSettings::default());
    let local = consumer.client();
    let remote = provider.cluster.client();
    let secret = consumer.add_provider_secret(&provider).await;
    consumer
        .add_virtual_node(
            "provider-h",
            &provider,
            &secret,
            json!({"resources": {"cpu": "4", "memory": "8Gi", "pods": "10"}}),
        )
        .await;
    consumer.wait_node_ready("provider-h", true).await;
    namespace(&local, "web").await;
    let _: ConfigMap = create(
        &local,
        Some("web"),
        json!({"metadata": {"name": "settings"}, "data": {"mode": "blue"}}),
    )
    .await;
    let _: ConfigMap = create(&local, Some("web"), json!({"metadata": {"name": "private", "annotations": {names::annotation::SKIP_REFLECTION: "true"}}, "data": {"k": "v"}})).await;
    let _: Secret = create(
        &local,
        Some("web"),
        json!({"metadata": {"name": "token"}, "data": {"password": "b25l"}}),
    )
    .await;
    let _: Service = create(&local, Some("web"), json!({"metadata": {"name": "frontend"}, "spec": {"selector": {"app": "frontend"}, "clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}})).await;
    let _: EndpointSlice = create(&local, Some("web"), json!({
        "metadata": {"name": "frontend-abc", "labels": {"kubernetes.io/service-name": "frontend"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["198.18.7.7"], "conditions": {"ready": true}, "nodeName": "local-worker"}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    })).await;
    let _: NamespaceOffloading =
        create(&local, Some("web"), offloading("LocalAndRemote", None)).await;
    offloaded(&local, "web", OffloadingPhase::Ready).await;
    let remote_ns = "web-consumer-g";
    let remote_cms: Api<ConfigMap> = Api::namespaced(remote.clone(), remote_ns);
    let remote_secrets: Api<Secret> = Api::namespaced(remote.clone(), remote_ns);
    eventually(
        "ConfigMap, Secret, Service and endpoints reflected",
        WAIT,
        || async {
            let cm = remote_cms.get_opt("settings").await.ok().flatten();
            let endpoints = Api::<EndpointSlice>::namespaced(remote.clone(), remote_ns)
                .get_opt("frontend-abc")
                .await
                .ok()
                .flatten();
            cm.and_then(|c| c.data).is_some_and(|d| d["mode"] == "blue")
                && remote_secrets
                    .get_opt("token")
                    .await
                    .ok()
                    .flatten()
                    .is_some()
                && Api::<Service>::namespaced(remote.clone(), remote_ns)
                    .get_opt("frontend")
                    .await
                    .ok()
                    .flatten()
                    .is_some()
                && endpoints.is_some_and(|e| {
                    e.endpoints
                        .first()
                        .is_some_and(|ep| ep.addresses == ["198.18.7.7"])
                })
        },
    )
    .await;
    let service = Api::<Service>::namespaced(remote.clone(), remote_ns)
        .get("frontend")
        .within("reading the reflected Service")
        .await
        .expect("service");
    let spec = service.spec.expect("spec");
    assert_eq!(
        spec.selector, None,
        "endpoints come from the reflected slices"
    );
    assert_ne!(
        spec.cluster_ip.as_deref(),
        Some("10.96.0.10"),
        "the provider allocates its own address"
    );
    let slice = Api::<EndpointSlice>::namespaced(remote.clone(), remote_ns)
        .get("frontend-abc")
        .within("reading the reflected EndpointSlice")
        .await
        .expect("slice");
    assert_eq!(
        slice
            .labels()
            .get("kubernetes.io/service-name")
            .map(String::as_str),
        Some("frontend")
    );
    assert!(
        remote_cms
            .get_opt("private")
            .within("reading the provider's ConfigMap private")
            .await
            .expect("get")
            .is_none(),
        "opted out"
    );

    let local_cms: Api<ConfigMap> = Api::namespaced(local.clone(), "web");
    local_cms
        .patch(
            "settings",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"mode": "green"}})),
        )
        .within("updating ConfigMap settings")
        .await
        .expect("update");
    Api::<Secret>::namespaced(local.clone(), "web")
        .patch(
            "token",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"password": "dHdv"}})),
        )
        .within("updating Secret token")
        .await
        .expect("update");
    eventually("updates propagate", WAIT, || async {
        let cm = remote_cms.get("settings").await.ok().and_then(|c| c.data);
        let secret = remote_secrets.get("token").await.ok().and_then(|s| s.data);
        cm.is_some_and(|d| d["mode"] == "green")
            && secret.is_some_and(|d| d["password"].0 == b"two")
    })
    .await;
    // Opting out later removes the copy; deleting the original removes it too.
    local_cms
        .patch(
            "settings",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {names::annotation::SKIP_REFLECTION: "true"}}}),
            ),
        )
        .within("opting ConfigMap settings out")
        .await
        .expect("opt out");
    Api::<Secret>::namespaced(local.clone(), "web")
        .delete("token", &DeleteParams::default())
        .within("deleting Secret token")
        .await
        .expect("delete");
    eventually("copies removed", WAIT, || async {
        remote_cms
            .get_opt("settings")
            .await
            .is_ok_and(|c| c.is_none())
            && remote_secrets
                .get_opt("token")
                .await
                .is_ok_and(|s| s.is_none())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strategies_name_and_place_and_report_per_cluster_and_the_provider_enforces_quota() {
    let mut consumer = Consumer::start("consumer-i").await;
    let provider = Provider::start(
        "provider-j",
        "consumer-i",
        json!({"cpu": "2", "memory": "4Gi", "pods": "10"}),
        consumer.dir.path(),
    )
    .await;
    consumer.start_module(KubeletSettings::default());
    let local = consumer.client();
    let remote = provider.cluster.client();
    let secret = consumer.add_provider_secret(&provider).await;
    // The node announces more than the provider grants: the provider's quota decides.
    consumer
        .add_virtual_node(
            "provider-j",
            &provider,
            &secret,
            json!({"resources": {"cpu": "8", "memory": "16Gi", "pods": "20"}}),
        )
        .await;
    consumer.wait_node_ready("provider-j", true).await;

    // Nothing selected.
    namespace(&local, "nowhere").await;
    let arm = json!({"nodeSelectorTerms": [{"matchExpressions": [{"key": "arch", "operator": "In", "values": ["arm64"]}]}]});
    let _: NamespaceOffloading =
        create(&local, Some("nowhere"), offloading("Remote", Some(arm))).await;
    let status = offloaded(&local, "nowhere", OffloadingPhase::NoClusterSelected)
        .await
        .status
        .expect("status");
    assert!(status.remote_namespaces.is_empty());

    // EnforceSameName onto a namespace the provider already has for itself: AllFailed, with why.
    namespace(&local, "taken").await;
    namespace(&remote, "taken").await;
    let mut same = offloading("Remote", None);
    same["spec"]["namespaceMappingStrategy"] = json!("EnforceSameName");
    let _: NamespaceOffloading = create(&local, Some("taken"), same).await;
    let status = offloaded(&local, "taken", OffloadingPhase::AllFailed)
        .await
        .status
        .expect("status");
    let ready =
        strait_offloading::namespace_offloading_controller::provider_ready(&status, "provider-j")
            .expect("per-cluster condition");
    assert!(
        ready.message.contains("already exists"),
        "{}",
        ready.message
    );

    // SelectedName; Local keeps pods off virtual nodes.
    namespace(&local, "local-only").await;
    let _: NamespaceOffloading =
        create(&local, Some("local-only"), offloading("Local", None)).await;
    offloaded(&local, "local-only", OffloadingPhase::Ready).await;
    let _: Pod = create(&local, Some("local-only"), pod("stay", "1")).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        schedule(&local, "local-only", "stay").await,
        None,
        "no local node, and the virtual node is tainted"
    );

    namespace(&local, "batch").await;
    let mut selected = offloading("Remote", None);
    selected["spec"]["namespaceMappingStrategy"] = json!("SelectedName");
    selected["spec"]["remoteNamespaceName"] = json!("batch-from-i");
    let _: NamespaceOffloading = create(&local, Some("batch"), selected).await;
    let status = offloaded(&local, "batch", OffloadingPhase::Ready)
        .await
        .status
        .expect("status");
    assert_eq!(
        status.remote_namespace_name.as_deref(),
        Some("batch-from-i")
    );
    // The grant is 2 cpus: the third 1-cpu pod waits for quota, then runs when one finishes.
    for name in ["a", "b", "c"] {
        let _: Pod = create(&local, Some("batch"), pod(name, "1")).await;
        bind(&local, "batch", name, "provider-j").await;
        if name != "c" {
            wait_phase(&local, "batch", name, "Running").await;
        }
    }
    let pods: Api<Pod> = Api::namespaced(local.clone(), "batch");
    eventually("c waits for quota", WAIT, || async {
        pods.get("c")
            .await
            .is_ok_and(|p| p.status.and_then(|s| s.reason).as_deref() == Some("QuotaExceeded"))
    })
    .await;
    let remote_pods: Api<Pod> = Api::namespaced(remote.clone(), "batch-from-i");
    assert!(remote_pods
        .get_opt("c")
        .within("reading the provider's pod c")
        .await
        .expect("get")
        .is_none());
    remote_pods
        .patch_status(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
        )
        .within("completing the provider's pod a")
        .await
        .expect("a completes");
    wait_phase(&local, "batch", "a", "Succeeded").await;
    wait_phase(&local, "batch", "c", "Running").await;
    // A completed pod is never started again.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let a = remote_pods
        .get("a")
        .within("reading the provider's pod a")
        .await
        .expect("a stays");
    assert_eq!(a.status.and_then(|s| s.phase).as_deref(), Some("Succeeded"));
}
