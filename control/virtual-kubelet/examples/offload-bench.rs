//! `cargo xtask bench offload`: 1,000 pods across 2 virtual nodes of one
//! provider, on the test control plane. The consumer's strait-controller
//! and its virtual kubelets are processes (their peak RSS is measured); the
//! provider's module and its kubelet (the bench sets pods Running) run in
//! this process. Baseline, measured in the same run: the same pods created
//! directly on the provider and set Running by the same fake kubelet.
//!
//! Usage: offload-bench <strait-controller binary>

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use kube::{api::ListParams, Api, Client};
use serde_json::json;
use support::*;

const PODS: usize = 1000;
const NODES: [&str; 2] = ["bench-1", "bench-2"];

/// Kills a process when the bench ends, whatever happens.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    stat.rsplit_once(')')
                        .map(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_owned))
                })
                .flatten()
                .and_then(|ppid| ppid.parse::<u32>().ok())
                == Some(parent)
        })
        .collect()
}

fn bench_pod(name: &str, node: Option<&str>) -> serde_json::Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "tolerations": [{"key": strait_api::names::VIRTUAL_NODE_TAINT, "operator": "Exists"}],
            "containers": [{"name": "app", "image": "registry.example/app:1", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}],
        },
    })
}

async fn running(client: &Client, namespace: &str) -> usize {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count()
        })
        .unwrap_or(0)
}

/// Creates PODS pods with `create` (16 at a time) and waits until all are Running.
async fn time_to_running(
    client: &Client,
    namespace: &str,
    node_of: impl Fn(usize) -> Option<&'static str>,
) -> Duration {
    let started = Instant::now();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut batch = Vec::new();
    for i in 0..PODS {
        let pods = pods.clone();
        let pod: Pod = object(bench_pod(&format!("pod-{i}"), node_of(i)));
        batch.push(async move { pods.create(&Default::default(), &pod).await.map(|_| ()) });
        if batch.len() == 16 || i + 1 == PODS {
            for result in futures::future::join_all(batch.drain(..)).await {
                result.expect("create pod");
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while running(client, namespace).await < PODS {
        assert!(
            Instant::now() < deadline,
            "pods did not all run within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    started.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let controller_binary = std::env::args()
        .nth(1)
        .expect("usage: offload-bench <strait-controller binary>");
    let consumer = Consumer::start("bench-consumer").await;
    let grant = json!({"cpu": "1000", "memory": "1000Gi", "pods": "5000"});
    let provider = Provider::start(
        "bench-provider",
        "bench-consumer",
        grant,
        consumer.dir.path(),
    )
    .await;
    let remote = provider.cluster.client();

    // Baseline: the provider alone, pods created directly and set Running.
    namespace(&remote, "baseline").await;
    let baseline = time_to_running(&remote, "baseline", |_| None).await;
    let baseline_rate = PODS as f64 / baseline.as_secs_f64();
    println!("baseline: {PODS} pods created on the provider and Running in {baseline:.2?} ({baseline_rate:.0} pods/s)");

    let kubeconfig = consumer.dir.path().join("consumer.kubeconfig");
    consumer
        .cluster
        .write_kubeconfig(&kubeconfig)
        .expect("kubeconfig");
    let controller = Running(
        std::process::Command::new(&controller_binary)
            .args([
                "--offloading",
                "--cluster-id",
                "bench-consumer",
                "--virtual-kubelet-binary",
            ])
            .arg(virtual_kubelet_binary())
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .expect("strait-controller starts"),
    );
    let local = consumer.client();
    let secret = consumer.add_provider_secret(&provider).await;
    for node in NODES {
        consumer
            .add_virtual_node(
                node,
                &provider,
                &secret,
                json!({"resources": {"cpu": "500", "memory": "500Gi", "pods": "600"}}),
            )
            .await;
    }
    for node in NODES {
        consumer.wait_node_ready(node, true).await;
    }
    namespace(&local, "bench").await;
    let _: strait_api::offloading::NamespaceOffloading = create(
        &local,
        Some("bench"),
        json!({
            "apiVersion": "offloading.strait.dev/v1beta1", "kind": "NamespaceOffloading",
            "metadata": {"name": "offloading"}, "spec": {"podOffloadingStrategy": "Remote"},
        }),
    )
    .await;
    let offloadings: Api<strait_api::offloading::NamespaceOffloading> =
        Api::namespaced(local.clone(), "bench");
    strait_testkit::eventually("namespace offloaded", WAIT, || async {
        offloadings.get("offloading").await.is_ok_and(|o| {
            o.status
                .is_some_and(|s| s.phase == strait_api::offloading::OffloadingPhase::Ready)
        })
    })
    .await;
    // Let both kubelets see the namespace before the clock starts.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let progress = {
        let (local, remote) = (local.clone(), remote.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let shadow_list = Api::<strait_api::offloading::ShadowPod>::namespaced(
                    remote.clone(),
                    "bench-bench-consumer",
                )
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default();
                let shadows = shadow_list.len();
                let mut reasons = std::collections::BTreeMap::<String, usize>::new();
                for shadow in &shadow_list {
                    let reason = shadow
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Admitted"))
                        .map(|c| c.reason.clone())
                        .unwrap_or_else(|| "none".into());
                    *reasons.entry(reason).or_default() += 1;
                }
                eprintln!("  admission: {reasons:?}");
                let provider_pods = Api::<Pod>::namespaced(remote.clone(), "bench-bench-consumer")
                    .list(&ListParams::default())
                    .await
                    .map(|l| l.items.len())
                    .unwrap_or(0);
                eprintln!(
                    "  progress: {shadows} ShadowPods, {provider_pods} pods on the provider, {} of them running, {} running locally",
                    running(&remote, "bench-bench-consumer").await,
                    running(&local, "bench").await
                );
            }
        })
    };
    let elapsed = time_to_running(&local, "bench", |i| Some(NODES[i % NODES.len()])).await;
    progress.abort();
    let rate = PODS as f64 / elapsed.as_secs_f64();
    let controller_pid = controller.0.id();
    let kubelets = children_of(controller_pid);
    let vk_rss = kubelets
        .iter()
        .map(|pid| peak_rss_kib(*pid))
        .max()
        .unwrap_or(0);
    let controller_rss = peak_rss_kib(controller_pid);
    println!(
        "offloaded: {PODS} pods across {} virtual nodes Running in {elapsed:.2?} ({rate:.0} pods/s, {:.2}x the baseline); {} virtual kubelet processes",
        NODES.len(),
        rate / baseline_rate,
        kubelets.len()
    );
    println!(
        "pods_per_s={} vk_rss_mib={} controller_rss_mib={}",
        rate.round() as u64,
        vk_rss.div_ceil(1024),
        controller_rss.div_ceil(1024)
    );
}
