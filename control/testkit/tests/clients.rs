//! Real clients against the test server: a kube-rs Controller with a
//! finalizer, a reflector under load, two isolated clusters, and kubectl.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{api_error, within};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use serde_json::json;
use strait_api::ipam::Network;
use strait_testkit::TestCluster;

const FINALIZER: &str = "ipam.strait.dev/test-allocator";

struct Context {
    client: kube::Client,
    cleanups: AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<kube::Error>>),
}

/// Allocates as asked: status.cidrs = spec.cidrs, written with server-side apply.
async fn reconcile(network: Arc<Network>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let namespace = network.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Network> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, network, |event| async {
        match event {
            Event::Apply(network) => {
                let name = network.metadata.name.clone().unwrap_or_default();
                let status = json!({
                    "apiVersion": "ipam.strait.dev/v1beta1",
                    "kind": "Network",
                    "status": {"cidrs": network.spec.cidrs},
                });
                api.patch_status(
                    &name,
                    &PatchParams::apply("test-allocator").force(),
                    &Patch::Apply(&status),
                )
                .await?;
                Ok(Action::await_change())
            }
            Event::Cleanup(_) => {
                ctx.cleanups.fetch_add(1, Ordering::SeqCst);
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| ReconcileError::Finalizer(Box::new(e)))
}

fn error_policy(_: Arc<Network>, _: &ReconcileError, _: Arc<Context>) -> Action {
    Action::requeue(Duration::from_millis(100))
}

/// Polls `check` every 20 ms until it holds, for at most `common::STEP`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn controller_with_finalizer_reconciles_a_network_through_deletion() {
    let cluster = within("start", TestCluster::start("controller"))
        .await
        .expect("started");
    let client = cluster.client();
    let ctx = Arc::new(Context {
        client: client.clone(),
        cleanups: AtomicUsize::new(0),
    });
    let controller = Controller::new(
        Api::<Network>::all(client.clone()),
        watcher::Config::default(),
    )
    .run(reconcile, error_policy, ctx.clone())
    .for_each(|_| async {});
    let controller = tokio::spawn(controller);

    let api: Api<Network> = Api::namespaced(client.clone(), "default");
    let network: Network = serde_json::from_value(json!({
        "apiVersion": "ipam.strait.dev/v1beta1", "kind": "Network",
        "metadata": {"name": "pods"},
        "spec": {"cidrs": ["10.244.0.0/16", "fd00:10:244::/56"]},
    }))
    .expect("a Network");
    api.create(&PostParams::default(), &network)
        .await
        .expect("created");

    eventually("allocated with a finalizer", || async {
        api.get("pods").await.is_ok_and(|n| {
            n.status.as_ref().is_some_and(|s| s.cidrs == n.spec.cidrs)
                && n.metadata.finalizers.as_deref() == Some(&[FINALIZER.to_owned()][..])
        })
    })
    .await;
    assert_eq!(
        api.get("pods").await.expect("stored").metadata.generation,
        Some(1)
    );

    api.delete("pods", &DeleteParams::default())
        .await
        .expect("delete accepted");
    eventually("removed after cleanup", || async {
        matches!(api.get("pods").await, Err(kube::Error::Api(status)) if status.code == 404)
    })
    .await;
    assert_eq!(
        ctx.cleanups.load(Ordering::SeqCst),
        1,
        "cleanup ran exactly once"
    );
    controller.abort();
}

#[tokio::test]
async fn a_reflector_survives_a_thousand_rapid_updates() {
    let cluster = within("start", TestCluster::start("rapid"))
        .await
        .expect("started");
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), "default");
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector(writer, watcher(api.clone(), watcher::Config::default()))
        .applied_objects()
        .for_each(|_| async {});
    let reflecting = tokio::spawn(stream);
    within("reflector ready", reader.wait_until_ready())
        .await
        .expect("ready");

    let initial: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "counter"}, "data": {"n": "0"}}))
            .expect("a ConfigMap");
    api.create(&PostParams::default(), &initial)
        .await
        .expect("created");
    let writes = async {
        for n in 1..=1000 {
            let patch = json!({"data": {"n": n.to_string()}});
            api.patch("counter", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("patched");
        }
    };
    tokio::time::timeout(Duration::from_secs(60), writes)
        .await
        .expect("1000 writes in time");
    let last_written = api
        .get("counter")
        .await
        .expect("stored")
        .metadata
        .resource_version;
    eventually("the reflector sees the final state", || async {
        reader.state().iter().any(|c| {
            c.metadata.name.as_deref() == Some("counter")
                && c.data.as_ref().and_then(|d| d.get("n")).map(String::as_str) == Some("1000")
                && c.metadata.resource_version == last_written
        })
    })
    .await;
    reflecting.abort();
}

#[tokio::test]
async fn two_clusters_are_isolated() {
    let (one, two) = within("start", async {
        (
            TestCluster::start("one").await,
            TestCluster::start("two").await,
        )
    })
    .await;
    let (one, two) = (one.expect("one"), two.expect("two"));
    assert_ne!(one.url(), two.url());
    let in_one: Api<ConfigMap> = Api::namespaced(one.client(), "default");
    let in_two: Api<ConfigMap> = Api::namespaced(two.client(), "default");
    let object = |value: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": "same"}, "data": {"v": value}}))
            .expect("a ConfigMap")
    };
    in_one
        .create(&PostParams::default(), &object("one"))
        .await
        .expect("created in one");
    assert_eq!(api_error(in_two.get("same").await).code, 404);
    in_two
        .create(&PostParams::default(), &object("two"))
        .await
        .expect("same name in two");
    let read = |c: ConfigMap| c.data.and_then(|d| d.get("v").cloned());
    assert_eq!(
        read(in_one.get("same").await.expect("one")),
        Some("one".to_owned())
    );
    assert_eq!(
        read(in_two.get("same").await.expect("two")),
        Some("two".to_owned())
    );

    // A dropped cluster stops serving; the other one is unaffected.
    let url = one.url().to_owned();
    drop(one);
    let gone = within("stopped", async {
        loop {
            if tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    gone.await;
    assert!(in_two.get("same").await.is_ok());
}

/// kubectl, bounded by its own --request-timeout and by a timeout here.
async fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let mut command = tokio::process::Command::new("kubectl");
    // The discovery cache next to the kubeconfig: nothing lands in $HOME.
    let cache = kubeconfig.with_extension("cache");
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .arg("--request-timeout=10s")
        .args(args)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .unwrap_or_else(|_| panic!("kubectl {args:?} timed out"))
        .expect("kubectl runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn kubectl_gets_applies_and_deletes_a_strait_object() {
    let cluster = within("start", TestCluster::start("kubectl"))
        .await
        .expect("started");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let kubeconfig = dir.path().join("kubeconfig");
    cluster
        .write_kubeconfig(&kubeconfig)
        .expect("kubeconfig written");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/core.yaml");

    let (ok, out, err) = kubectl(&kubeconfig, &["apply", "-f", example]).await;
    assert!(ok, "apply: {out}{err}");
    assert!(
        out.contains("foreignclusters.core.strait.dev/cluster-b created")
            || out.contains("foreigncluster.core.strait.dev/cluster-b created"),
        "{out}"
    );

    let (ok, out, err) = kubectl(
        &kubeconfig,
        &["get", "foreignclusters", "cluster-b", "-o", "json"],
    )
    .await;
    assert!(ok, "get: {out}{err}");
    let object: serde_json::Value = serde_json::from_str(&out).expect("kubectl prints JSON");
    assert_eq!(object["spec"]["clusterID"], "cluster-b");
    let api: Api<strait_api::core::ForeignCluster> = Api::all(cluster.client());
    assert!(
        api.get("cluster-b")
            .await
            .expect("visible to kube-rs")
            .spec
            .modules
            .network
    );

    let (ok, out, err) = kubectl(&kubeconfig, &["apply", "-f", example]).await;
    assert!(ok && out.contains("unchanged"), "re-apply: {out}{err}");

    // Human-readable get: a Table with the CRD's printer columns.
    let (ok, out, err) = kubectl(&kubeconfig, &["get", "foreignclusters"]).await;
    let header = out.lines().next().unwrap_or("");
    assert!(
        ok && header.contains("NAME") && header.contains("ROLE") && out.contains("cluster-b"),
        "get: {out}{err}"
    );
    let (ok, out, err) = kubectl(&kubeconfig, &["get", "namespaces"]).await;
    assert!(
        ok && out.contains("AGE") && out.contains("kube-system"),
        "get namespaces: {out}{err}"
    );

    let (ok, out, err) = kubectl(&kubeconfig, &["delete", "-f", example, "--timeout=10s"]).await;
    assert!(ok, "delete: {out}{err}");
    assert_eq!(api_error(api.get("cluster-b").await).code, 404);

    let (ok, _, err) = kubectl(&kubeconfig, &["get", "foreignclusters", "cluster-b"]).await;
    assert!(!ok && err.contains("NotFound"), "{err}");
}
