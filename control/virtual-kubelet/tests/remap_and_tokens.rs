//! What offloaded pods get from the consumer besides their spec: addresses
//! translated by the network module's remap of their provider (read from
//! its `Configuration`, the `--pod-cidr-remap` flags when there is none),
//! and a token of their consumer service account in place of the
//! projected one, with the consumer's API (`--consumer-api-address`) as
//! the API server that token is used with.

mod support;

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    core::v1::{ConfigMap, Pod, Secret, ServiceAccount},
    discovery::v1::EndpointSlice,
};
use kube::{
    api::{DeleteParams, Patch, PatchParams, PostParams},
    Api,
};
use serde_json::{json, Value};
use strait_api::{
    names,
    networking::Configuration,
    offloading::{NamespaceOffloading, OffloadingPhase},
};
use strait_offloading::{kubelet::KubeletSettings, reflection::pods::ADDRESSES_TRANSLATED};
use strait_testkit::eventually;
use support::*;

fn offload_everywhere() -> Value {
    json!({
        "apiVersion": "offloading.strait.dev/v1beta1", "kind": "NamespaceOffloading",
        "metadata": {"name": "offloading"},
        "spec": {"podOffloadingStrategy": "Remote"},
    })
}

async fn wait_offloaded(local: &kube::Client, namespace: &str) {
    let api: Api<NamespaceOffloading> = Api::namespaced(local.clone(), namespace);
    eventually(&format!("{namespace} offloaded"), WAIT, || async {
        api.get("offloading")
            .await
            .is_ok_and(|o| o.status.is_some_and(|s| s.phase == OffloadingPhase::Ready))
    })
    .await;
}

/// The network module's Configuration of a provider, as its IPAM would
/// leave it: the provider's pod CIDR, and its remap once decided.
async fn configuration(local: &kube::Client, provider: &str, remapped: Option<&str>) {
    let _: Configuration = create(
        local,
        Some(names::SYSTEM_NAMESPACE),
        json!({
            "apiVersion": "networking.strait.dev/v1beta1", "kind": "Configuration",
            "metadata": {"name": provider, "labels": {names::label::REMOTE_CLUSTER_ID: provider}},
            "spec": {"remote": {"cidr": {"pod": ["198.18.0.0/24"]}}},
        }),
    )
    .await;
    if let Some(remapped) = remapped {
        remap(local, provider, remapped).await;
    }
}

async fn remap(local: &kube::Client, provider: &str, remapped: &str) {
    let api: Api<Configuration> = Api::namespaced(local.clone(), names::SYSTEM_NAMESPACE);
    api.patch_status(
        provider,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"remote": {"cidr": {"pod": [remapped]}}}})),
    )
    .within("writing the remap")
    .await
    .expect("remap");
}

async fn local_pod(local: &kube::Client, namespace: &str, name: &str) -> Option<Pod> {
    Api::<Pod>::namespaced(local.clone(), namespace)
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

/// Waits until the local pod shows `ip` as its podIP and only podIPs.
async fn wait_pod_ip(local: &kube::Client, name: &str, ip: Option<&str>) {
    let mut last = None;
    let reached = tokio::time::timeout(WAIT, async {
        loop {
            let status = local_pod(local, "shop", name)
                .await
                .and_then(|p| p.status)
                .unwrap_or_default();
            let ips: Vec<String> = status
                .pod_ips
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|p| p.ip)
                .collect();
            let wanted: Vec<String> = ip.iter().map(|i| (*i).to_owned()).collect();
            if status.phase.as_deref() == Some("Running")
                && status.pod_ip.as_deref() == ip
                && ips == wanted
            {
                return;
            }
            last = Some((status.pod_ip, ips));
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "pod {name} never showed {ip:?}; last (podIP, podIPs): {last:?}"
    );
}

fn translated_condition(pod: &Pod) -> Option<(String, String, String)> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == ADDRESSES_TRANSLATED)
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn providers_with_the_same_pod_cidr_are_told_apart_by_their_configurations() {
    let mut consumer = Consumer::start("consumer-r").await;
    let grant = json!({"cpu": "8", "memory": "16Gi", "pods": "100"});
    let provider_b = Provider::start(
        "provider-rb",
        "consumer-r",
        grant.clone(),
        consumer.dir.path(),
    )
    .await;
    let provider_c = Provider::start("provider-rc", "consumer-r", grant, consumer.dir.path()).await;
    // The flag: what applies to a provider without a Configuration.
    consumer.start_module(KubeletSettings {
        pod_cidr_remaps: vec!["198.18.0.0/16=198.19.0.0/16".parse().expect("remap")],
        ..KubeletSettings::default()
    });
    let local = consumer.client();
    for provider in [&provider_b, &provider_c] {
        let secret = consumer.add_provider_secret(provider).await;
        consumer
            .add_virtual_node(&provider.id, provider, &secret, json!({}))
            .await;
    }
    consumer.wait_node_ready("provider-rb", true).await;
    consumer.wait_node_ready("provider-rc", true).await;
    // b's remap is decided; c's Configuration waits for IPAM.
    configuration(&local, "provider-rb", Some("198.19.1.0/24")).await;
    configuration(&local, "provider-rc", None).await;

    namespace(&local, "shop").await;
    let _: NamespaceOffloading = create(&local, Some("shop"), offload_everywhere()).await;
    wait_offloaded(&local, "shop").await;
    for (pod, node) in [("on-b", "provider-rb"), ("on-c", "provider-rc")] {
        let _: Pod = create(
            &local,
            Some("shop"),
            json!({"metadata": {"name": pod}, "spec": {"containers": [{"name": "app", "image": "registry.example/app:1", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}),
        )
        .await;
        bind(&local, "shop", pod, node).await;
    }
    // Both providers' kubelets gave their first pod 198.18.0.1.
    wait_pod_ip(&local, "on-b", Some("198.19.1.1")).await;
    wait_pod_ip(&local, "on-c", None).await;
    let waiting = local_pod(&local, "shop", "on-c").await.expect("pod on-c");
    let (status, reason, message) = translated_condition(&waiting).expect("condition");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "RemapPending")
    );
    assert!(message.contains("strait/provider-rc"), "{message}");

    // IPAM decides c's remap: the address appears, distinct from b's pod.
    remap(&local, "provider-rc", "198.19.2.0/24").await;
    wait_pod_ip(&local, "on-c", Some("198.19.2.1")).await;
    let running = local_pod(&local, "shop", "on-c").await.expect("pod on-c");
    assert_eq!(translated_condition(&running), None, "the warning is gone");

    // b's remap changes: its pod's address follows, and so do the
    // endpoints reflected to the provider (back to the provider's own).
    let _: EndpointSlice = create(&local, Some("shop"), json!({
        "metadata": {"name": "on-b-slice", "labels": {"kubernetes.io/service-name": "on-b"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["198.19.3.1"], "conditions": {"ready": true}, "nodeName": "provider-rb"}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    })).await;
    let remote_slices: Api<EndpointSlice> =
        Api::namespaced(provider_b.cluster.client(), "shop-consumer-r");
    let remote_addresses = || async {
        remote_slices
            .get_opt("on-b-slice")
            .await
            .ok()
            .flatten()
            .map(|s| {
                s.endpoints
                    .iter()
                    .flat_map(|e| e.addresses.clone())
                    .collect::<Vec<_>>()
            })
    };
    // 198.19.3.1 is no pod of b's under the current remap (198.19.1.0/24):
    // translated back it stays as it is.
    eventually("the slice reflected to provider b", WAIT, || async {
        remote_addresses().await == Some(vec!["198.19.3.1".to_owned()])
    })
    .await;
    remap(&local, "provider-rb", "198.19.3.0/24").await;
    wait_pod_ip(&local, "on-b", Some("198.19.3.1")).await;
    eventually(
        "the endpoint on provider b is its own pod address again",
        WAIT,
        || async { remote_addresses().await == Some(vec!["198.18.0.1".to_owned()]) },
    )
    .await;

    // Without c's Configuration (network module gone) the flag applies.
    Api::<Configuration>::namespaced(local.clone(), names::SYSTEM_NAMESPACE)
        .delete("provider-rc", &DeleteParams::default())
        .within("deleting c's Configuration")
        .await
        .expect("delete configuration");
    wait_pod_ip(&local, "on-c", Some("198.19.0.1")).await;
    wait_pod_ip(&local, "on-b", Some("198.19.3.1")).await;
}

/// Where the provider's pods reach the consumer's API in the token test.
const CONSUMER_API: &str = "198.18.0.10:6443";

#[test]
fn the_virtual_kubelet_refuses_a_consumer_api_address_that_is_no_ip_and_port() {
    let output = std::process::Command::new(virtual_kubelet_binary())
        .args([
            "--virtual-node",
            "tenant/vn",
            "--node-name",
            "vn",
            "--local-cluster-id",
            "consumer",
            "--consumer-api-address",
            "kubernetes.default.svc:443",
        ])
        // Were the flag accepted, no API to connect to either.
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .expect("run strait-virtual-kubelet");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--consumer-api-address") && stderr.contains("must be IP:PORT"),
        "{stderr}"
    );
}

async fn review(local: &kube::Client, token: &str) -> (bool, Option<String>, Option<String>) {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    let status = Api::<TokenReview>::all(local.clone())
        .create(&PostParams::default(), &review)
        .within("reviewing a token")
        .await
        .expect("review")
        .status
        .expect("status");
    let user = status.user.unwrap_or_default();
    let pod = user
        .extra
        .unwrap_or_default()
        .get("authentication.kubernetes.io/pod-name")
        .and_then(|names| names.first().cloned());
    (status.authenticated == Some(true), user.username, pod)
}

fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_offloaded_pod_gets_a_renewed_consumer_token_that_goes_away_with_it() {
    let mut consumer = Consumer::start("consumer-t").await;
    let provider = Provider::start(
        "provider-t",
        "consumer-t",
        json!({"cpu": "8", "memory": "16Gi", "pods": "100"}),
        consumer.dir.path(),
    )
    .await;
    consumer.start_module(KubeletSettings {
        consumer_api_address: Some(CONSUMER_API.parse().expect("address")),
        ..KubeletSettings::default()
    });
    let local = consumer.client();
    let remote = provider.cluster.client();
    let secret = consumer.add_provider_secret(&provider).await;
    consumer
        .add_virtual_node("provider-t", &provider, &secret, json!({}))
        .await;
    consumer.wait_node_ready("provider-t", true).await;
    namespace(&local, "shop").await;
    let _: ServiceAccount =
        create(&local, Some("shop"), json!({"metadata": {"name": "api"}})).await;
    // What kube-controller-manager publishes in every namespace.
    let _: ConfigMap = create(
        &local,
        Some("shop"),
        json!({"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": "CONSUMER CA"}}),
    )
    .await;
    let _: NamespaceOffloading = create(&local, Some("shop"), offload_everywhere()).await;
    wait_offloaded(&local, "shop").await;
    // The volume the API server's ServiceAccount admission adds, with a
    // short expiry (the API server's minimum is 10 minutes; the test
    // control plane honours less) so the renewal shows.
    let _: Pod = create(&local, Some("shop"), json!({
        "metadata": {"name": "api"},
        "spec": {
            "serviceAccountName": "api",
            "initContainers": [{"name": "setup", "image": "registry.example/setup:1"}],
            "containers": [{"name": "app", "image": "registry.example/app:1", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                "env": [{"name": "KUBERNETES_SERVICE_PORT", "value": "443"}, {"name": "MODE", "value": "prod"}],
                "volumeMounts": [{"name": "kube-api-access-x1", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]}],
            "volumes": [{"name": "kube-api-access-x1", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 4, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ]}}],
        },
    })).await;
    let _: Pod = create(&local, Some("shop"), json!({
        "metadata": {"name": "quiet"},
        "spec": {"automountServiceAccountToken": false, "containers": [{"name": "app", "image": "registry.example/app:1", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
    })).await;
    for pod in ["api", "quiet"] {
        bind(&local, "shop", pod, "provider-t").await;
        wait_phase(&local, "shop", pod, "Running").await;
    }

    let remote_ns = "shop-consumer-t";
    let secrets: Api<Secret> = Api::namespaced(remote.clone(), remote_ns);
    let delivered = secrets
        .get("strait-token-api")
        .within("reading the delivered token")
        .await
        .expect("the token Secret is on the provider");
    assert_eq!(
        delivered.type_.as_deref(),
        Some(strait_offloading::reflection::tokens::SECRET_TYPE)
    );
    assert_eq!(
        secret_text(&delivered, "ca.crt").as_deref(),
        Some("CONSUMER CA")
    );
    assert_eq!(
        secret_text(&delivered, "namespace").as_deref(),
        Some("shop")
    );
    let first = secret_text(&delivered, "token").expect("token");
    assert_eq!(
        review(&local, &first).await,
        (
            true,
            Some("system:serviceaccount:shop:api".to_owned()),
            Some("api".to_owned())
        ),
        "the consumer accepts the token as the pod's service account"
    );

    // The provider's pod reads it from the Secret, never its own token.
    let real = Api::<Pod>::namespaced(remote.clone(), remote_ns)
        .get("api")
        .within("reading the provider's pod")
        .await
        .expect("pod");
    let spec = serde_json::to_value(real.spec.expect("spec")).expect("json");
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(
        spec["volumes"][0]["projected"]["sources"],
        json!([{"secret": {"name": "strait-token-api", "items": [
            {"key": "token", "path": "token"},
            {"key": "ca.crt", "path": "ca.crt"},
            {"key": "namespace", "path": "namespace"},
        ]}}])
    );
    assert_eq!(
        spec["containers"][0]["volumeMounts"][0]["name"],
        "kube-api-access-x1"
    );
    // ... and uses it with the consumer's API server, by the name its
    // certificate carries.
    let pointed = json!([
        {"name": "KUBERNETES_SERVICE_HOST", "value": "kubernetes.default.svc"},
        {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"},
        {"name": "KUBERNETES_SERVICE_PORT_HTTPS", "value": "6443"},
    ]);
    let mut app_env = pointed.as_array().cloned().unwrap_or_default();
    app_env.push(json!({"name": "MODE", "value": "prod"}));
    assert_eq!(spec["containers"][0]["env"], Value::Array(app_env));
    assert_eq!(spec["initContainers"][0]["env"], pointed);
    assert_eq!(
        spec["hostAliases"],
        json!([{"ip": "198.18.0.10", "hostnames": ["kubernetes.default.svc", "kubernetes.default", "kubernetes"]}])
    );

    // Renewed before it expires (80% of 4 s), and the new one is valid.
    let renewed = bounded("the token renewed", async {
        loop {
            let current = secrets
                .get_opt("strait-token-api")
                .await
                .ok()
                .flatten()
                .and_then(|s| secret_text(&s, "token"));
            if let Some(fresh) = current.filter(|t| *t != first) {
                return fresh;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        review(&local, &renewed).await.0,
        "the renewed token is valid"
    );

    // A pod that does not mount its token gets nothing.
    assert!(secrets
        .get_opt("strait-token-quiet")
        .await
        .expect("read")
        .is_none());
    let quiet = Api::<Pod>::namespaced(remote.clone(), remote_ns)
        .get("quiet")
        .within("reading the provider's quiet pod")
        .await
        .expect("pod");
    let quiet = quiet.spec.expect("spec");
    assert!(quiet.volumes.unwrap_or_default().is_empty());
    assert_eq!(quiet.host_aliases, None, "no token, no consumer API");
    assert_eq!(quiet.containers[0].env, None);

    // Deleted with the pod; the consumer no longer accepts its token.
    Api::<Pod>::namespaced(local.clone(), "shop")
        .delete("api", &DeleteParams::default())
        .within("deleting pod api")
        .await
        .expect("delete");
    eventually("the token Secret is gone", WAIT, || async {
        secrets
            .get_opt("strait-token-api")
            .await
            .is_ok_and(|s| s.is_none())
    })
    .await;
    eventually("the consumer refuses the pod's token", WAIT, || async {
        !review(&local, &renewed).await.0
    })
    .await;
}
