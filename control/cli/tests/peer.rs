//! `strait peer` / `strait unpeer` against two test clusters. The test plays
//! the controllers: it sets the conditions the CLI waits for, and holds a
//! finalizer as the authentication controller would.
mod common;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use common::{condition, installed, strait, Installed};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    api::{Patch, PatchParams},
    Api, Client,
};
use serde_json::json;
use strait_api::{authentication::ResourceSlice, core::ForeignCluster};
use strait_testkit::eventually;

const STEP: Duration = Duration::from_secs(20);

struct Pair {
    consumer: Installed,
    provider: Installed,
    _dir: tempfile::TempDir,
}

impl Pair {
    async fn start(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self {
            consumer: installed(&format!("{name}-a"), Some("cluster-a"), dir.path()).await,
            provider: installed(&format!("{name}-b"), Some("cluster-b"), dir.path()).await,
            _dir: dir,
        }
    }

    fn args<'a>(&'a self, command: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            command,
            "--consumer-kubeconfig",
            self.consumer.kubeconfig.to_str().expect("path"),
            "--provider-kubeconfig",
            self.provider.kubeconfig.to_str().expect("path"),
        ];
        args.extend(extra);
        args
    }
}

/// Sets a status on the consumer's objects once they appear, as the
/// authentication controllers would.
async fn play_controllers(consumer: Client, slice_answer: serde_json::Value) {
    let foreign_clusters: Api<ForeignCluster> = Api::all(consumer.clone());
    eventually("the consumer's ForeignCluster", STEP, || async {
        foreign_clusters
            .get_opt("cluster-b")
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    let status = json!({"status": {"role": "Provider", "conditions": [
        condition("AuthenticationReady", "True", "IdentityIssued", "control-plane Identity valid until 2026-02-01")
    ]}});
    foreign_clusters
        .patch_status("cluster-b", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("FC status");
    let slices: Api<ResourceSlice> = Api::namespaced(consumer, "strait-tenant-cluster-b");
    eventually("the ResourceSlice", STEP, || async {
        slices.get_opt("cluster-b").await.ok().flatten().is_some()
    })
    .await;
    slices
        .patch_status(
            "cluster-b",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": slice_answer})),
        )
        .await
        .expect("slice status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_writes_the_contract_objects_waits_for_the_controllers_and_unpeer_removes_them() {
    let pair = Pair::start("peer").await;
    let consumer = pair.consumer.cluster.client();
    let provider = pair.provider.cluster.client();
    let accepted = json!({
        "resources": {"cpu": "4", "memory": "8Gi"},
        "conditions": [condition("Accepted", "True", "Accepted", "within the provider's share")],
    });
    let controllers = tokio::spawn(play_controllers(consumer.clone(), accepted));
    let (output, result) = strait(&pair.args(
        "peer",
        &[
            "--resource-slice",
            "cpu=4,memory=8Gi",
            "--modules",
            "authentication,offloading",
            "--timeout",
            "20s",
        ],
    ))
    .await;
    assert!(result.is_ok(), "{result:?}\n{output}");
    controllers.await.expect("controllers");
    for line in [
        "provider: applied ForeignCluster cluster-a",
        "consumer: applied Secret strait/cluster-b-kubeconfig",
        "consumer: applied ForeignCluster cluster-b",
        "consumer: applied ResourceSlice strait-tenant-cluster-b/cluster-b",
        "AuthenticationReady=True (IdentityIssued)",
        "ResourceSlice cluster-b accepted, granted: cpu=4,memory=8Gi",
        "peered: cluster-a consumes cluster-b",
    ] {
        assert!(output.contains(line), "missing {line:?} in:\n{output}");
    }

    // The provider: a ForeignCluster for the consumer, authentication only, no credentials.
    let on_provider = Api::<ForeignCluster>::all(provider.clone())
        .get("cluster-a")
        .await
        .expect("provider FC");
    assert_eq!(on_provider.spec.cluster_id, "cluster-a");
    assert!(on_provider.spec.modules.authentication);
    assert!(!on_provider.spec.modules.network && !on_provider.spec.modules.offloading);
    assert!(on_provider.spec.kubeconfig_secret_ref.is_none());
    // The consumer: the provider's kubeconfig, its ForeignCluster pointing at it, the slice.
    let secret = Api::<Secret>::namespaced(consumer.clone(), "strait")
        .get("cluster-b-kubeconfig")
        .await
        .expect("kubeconfig Secret");
    let stored = secret
        .data
        .and_then(|mut d| d.remove("kubeconfig"))
        .expect("key kubeconfig");
    let written = std::fs::read(&pair.provider.kubeconfig).expect("provider kubeconfig");
    assert_eq!(stored.0, written);
    let on_consumer = Api::<ForeignCluster>::all(consumer.clone())
        .get("cluster-b")
        .await
        .expect("consumer FC");
    assert_eq!(on_consumer.spec.cluster_id, "cluster-b");
    assert!(on_consumer.spec.modules.authentication && on_consumer.spec.modules.offloading);
    assert!(!on_consumer.spec.modules.network);
    let secret_ref = on_consumer.spec.kubeconfig_secret_ref.expect("secret ref");
    assert_eq!(
        (secret_ref.name.as_str(), secret_ref.namespace.as_deref()),
        ("cluster-b-kubeconfig", Some("strait"))
    );
    let slice = Api::<ResourceSlice>::namespaced(consumer.clone(), "strait-tenant-cluster-b")
        .get("cluster-b")
        .await
        .expect("slice");
    assert_eq!(slice.spec.consumer_cluster_id, "cluster-a");
    assert_eq!(slice.spec.provider_cluster_id, "cluster-b");
    assert_eq!(
        slice.spec.resources.get("memory").map(|q| q.0.as_str()),
        Some("8Gi")
    );

    // Re-running converges: the same objects, no error.
    let (again, result) = strait(&pair.args(
        "peer",
        &[
            "--resource-slice",
            "cpu=4,memory=8Gi",
            "--modules",
            "authentication,offloading",
            "--timeout",
            "5s",
        ],
    ))
    .await;
    assert!(result.is_ok(), "{result:?}\n{again}");

    // Unpeer, with the authentication controller's finalizer on the
    // consumer's ForeignCluster: it must still find the kubeconfig Secret
    // while it tears down, and the CLI must wait for it.
    let foreign_clusters: Api<ForeignCluster> = Api::all(consumer.clone());
    foreign_clusters
        .patch(
            "cluster-b",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({"metadata": {"finalizers": ["core.strait.dev/peering-teardown"]}}),
            ),
        )
        .await
        .expect("finalizer");
    let secret_seen_during_teardown = Arc::new(AtomicBool::new(false));
    let teardown = {
        let seen = secret_seen_during_teardown.clone();
        let consumer = consumer.clone();
        tokio::spawn(async move {
            let foreign_clusters: Api<ForeignCluster> = Api::all(consumer.clone());
            eventually("ForeignCluster marked for deletion", STEP, || async {
                foreign_clusters
                    .get_opt("cluster-b")
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|fc| fc.metadata.deletion_timestamp.is_some())
            })
            .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let secrets: Api<Secret> = Api::namespaced(consumer, "strait");
            seen.store(
                secrets
                    .get_opt("cluster-b-kubeconfig")
                    .await
                    .ok()
                    .flatten()
                    .is_some(),
                Ordering::SeqCst,
            );
            foreign_clusters
                .patch(
                    "cluster-b",
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
                )
                .await
                .expect("remove finalizer");
        })
    };
    let (output, result) = strait(&pair.args("unpeer", &["--timeout", "20s"])).await;
    assert!(result.is_ok(), "{result:?}\n{output}");
    teardown.await.expect("teardown");
    assert!(
        secret_seen_during_teardown.load(Ordering::SeqCst),
        "the Secret went before the ForeignCluster"
    );
    assert!(
        output.contains("still there (a controller's finalizer is tearing it down)"),
        "{output}"
    );
    assert!(Api::<ForeignCluster>::all(consumer.clone())
        .get_opt("cluster-b")
        .await
        .expect("get")
        .is_none());
    assert!(Api::<Secret>::namespaced(consumer.clone(), "strait")
        .get_opt("cluster-b-kubeconfig")
        .await
        .expect("get")
        .is_none());
    assert!(Api::<ResourceSlice>::all(consumer.clone())
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .is_empty());
    assert!(Api::<Namespace>::all(consumer.clone())
        .get_opt("strait-tenant-cluster-b")
        .await
        .expect("get")
        .is_none());
    assert!(Api::<ForeignCluster>::all(provider)
        .get_opt("cluster-a")
        .await
        .expect("get")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_fails_clearly_when_the_controllers_do_not_answer_or_the_slice_is_denied() {
    let pair = Pair::start("silent").await;
    // Nobody answers: a timeout naming the condition and the last state.
    let (output, result) = strait(&pair.args("peer", &["--timeout", "1s"])).await;
    let message = result.expect_err("times out").to_string();
    assert!(
        message.contains(
            "timed out after 1s waiting for AuthenticationReady on ForeignCluster cluster-b"
        ),
        "{message}"
    );
    assert!(
        message.contains("is strait-controller running with --authentication"),
        "{message}"
    );
    assert!(message.contains("next: see `strait status`"), "{message}");
    assert!(
        output.contains("consumer: applied ForeignCluster cluster-b"),
        "{output}"
    );

    // The provider refuses the slice: fails at once with its reason.
    let denied =
        json!({"conditions": [condition("Resources", "False", "Denied", "only 2 cpu free")]});
    let controllers = tokio::spawn(play_controllers(pair.consumer.cluster.client(), denied));
    let (_, result) =
        strait(&pair.args("peer", &["--resource-slice", "cpu=64", "--timeout", "20s"])).await;
    controllers.await.expect("controllers");
    let message = result.expect_err("denied").to_string();
    assert!(
        message.contains(
            "the provider denied ResourceSlice strait-tenant-cluster-b/cluster-b: only 2 cpu free"
        ),
        "{message}"
    );
    assert!(
        message.contains("next: ask for less with --resource-slice"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_refuses_clusters_without_identity_or_the_same_cluster_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bare = installed("bare", None, dir.path()).await;
    let alpha = installed("alpha", Some("cluster-a"), dir.path()).await;
    let path = |i: &Installed| i.kubeconfig.to_str().expect("path").to_owned();
    let (bare_path, alpha_path) = (path(&bare), path(&alpha));
    let (_, result) = strait(&[
        "peer",
        "--consumer-kubeconfig",
        &alpha_path,
        "--provider-kubeconfig",
        &bare_path,
    ])
    .await;
    let message = result.expect_err("no identity").to_string();
    assert!(
        message
            .contains("the provider has no cluster ID (ConfigMap strait/strait-cluster-identity"),
        "{message}"
    );
    assert!(message.contains("next: install Strait there"), "{message}");
    let (_, result) = strait(&[
        "peer",
        "--consumer-kubeconfig",
        &alpha_path,
        "--provider-kubeconfig",
        &alpha_path,
    ])
    .await;
    assert!(result
        .expect_err("same")
        .to_string()
        .contains("both kubeconfigs are of cluster cluster-a"));
    // Nothing was written anywhere.
    assert!(Api::<ForeignCluster>::all(alpha.cluster.client())
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_yaml_that_kubectl_apply_would_turn_into_the_same_objects() {
    let pair = Pair::start("dry").await;
    let (yaml, result) = strait(&pair.args(
        "peer",
        &[
            "--dry-run",
            "--resource-slice",
            "cpu=2",
            "--consumer-cluster-id",
            "cluster-a",
            "--provider-cluster-id",
            "cluster-b",
        ],
    ))
    .await;
    assert!(result.is_ok(), "{result:?}");
    assert!(yaml.contains(
        "# On the provider (cluster-b): kubectl --kubeconfig <provider kubeconfig> apply -f -"
    ));
    // Nothing written by a dry run.
    assert!(Api::<ForeignCluster>::all(pair.consumer.cluster.client())
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .is_empty());
    // Applying the printed documents (what kubectl apply does) in the
    // cluster each section names gives the peering's objects.
    let (provider_part, consumer_part) =
        yaml.split_once("# On the consumer").expect("two sections");
    for (part, client) in [
        (provider_part, pair.provider.cluster.client()),
        (consumer_part, pair.consumer.cluster.client()),
    ] {
        for document in part.split("\n---\n").skip(1) {
            let object: serde_json::Value =
                serde_norway::from_str(document).expect("YAML document");
            strait_cli::cluster::apply(&client, &object, "test")
                .await
                .expect("apply");
        }
    }
    let fc = Api::<ForeignCluster>::all(pair.consumer.cluster.client())
        .get("cluster-b")
        .await
        .expect("FC");
    assert_eq!(
        fc.spec.kubeconfig_secret_ref.map(|r| r.name),
        Some("cluster-b-kubeconfig".to_owned())
    );
    assert!(Api::<ForeignCluster>::all(pair.provider.cluster.client())
        .get_opt("cluster-a")
        .await
        .expect("get")
        .is_some());
    let slice =
        Api::<ResourceSlice>::namespaced(pair.consumer.cluster.client(), "strait-tenant-cluster-b")
            .get("cluster-b")
            .await
            .expect("slice");
    assert_eq!(
        slice.spec.resources.get("cpu").map(|q| q.0.as_str()),
        Some("2")
    );
}
