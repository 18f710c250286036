//! The strait-controller binary with only the network module, against the
//! test control plane through a kubeconfig, as it would run in a cluster.

mod common;

use std::time::Duration;

use common::{create_configuration, create_namespace, Controller};
use kube::Api;
use strait_api::{condition::is_condition_true, networking::Configuration};
use strait_testkit::{eventually, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_module_remaps_a_peering_through_the_api() {
    let cluster = TestCluster::start("controller-bin")
        .await
        .expect("test cluster");
    let _controller = Controller::start(
        &cluster,
        "network",
        &[
            "--network",
            "--reserved-cidr",
            "10.244.0.0/16",
            "--remap-pool",
            "10.64.0.0/10",
        ],
        &[],
    );
    let client = cluster.client();
    create_namespace(&client, "peering").await;
    let api: Api<Configuration> = Api::namespaced(client, "peering");
    create_configuration(&api, "cluster-b", "10.244.0.0/16").await;
    eventually(
        "cluster-b's pods remapped to 10.64.0.0/16",
        Duration::from_secs(30),
        || async {
            ready_remote_pods(&api, "cluster-b").await == Some(vec!["10.64.0.0/16".to_owned()])
        },
    )
    .await;
}

/// The remote pod CIDRs of a Ready Configuration.
async fn ready_remote_pods(api: &Api<Configuration>, name: &str) -> Option<Vec<String>> {
    let status = api.get_opt(name).await.ok().flatten()?.status?;
    is_condition_true(&status.conditions, "Ready").then_some(status.remote?.cidr.pod)
}

#[test]
fn refuses_to_start_without_a_module_or_a_pool_and_says_why() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_strait-controller"))
            .args(args)
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{args:?} must fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&[]).contains(
        "no module enabled: pass one or more of --network, --authentication, --offloading"
    ));
    assert!(run(&["--network"]).contains("needs at least one --remap-pool"));
    assert!(run(&["--network", "--remap-pool", "10.64.0.1/10"]).contains("host bits are set"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_leader_election_one_replica_holds_the_lease_and_reconciles() {
    use k8s_openapi::api::coordination::v1::Lease;
    let cluster = TestCluster::start("controller-leader")
        .await
        .expect("test cluster");
    let client = cluster.client();
    for name in ["strait", "peering"] {
        create_namespace(&client, name).await;
    }
    let replica = |pod: &str| {
        Controller::start(
            &cluster,
            &format!("leader-{pod}"),
            &[
                "--network",
                "--remap-pool",
                "10.64.0.0/10",
                "--leader-election-namespace",
                "strait",
            ],
            &[("POD_NAME", pod)],
        )
    };
    let _first = replica("replica-1");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "strait");
    let holder = || async {
        leases
            .get_opt("strait-controller")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
    };
    eventually("replica-1 leads", Duration::from_secs(20), || async {
        holder().await.as_deref() == Some("replica-1")
    })
    .await;
    let _second = replica("replica-2");
    let api: Api<Configuration> = Api::namespaced(client, "peering");
    create_configuration(&api, "cluster-b", "10.70.0.0/16").await;
    eventually(
        "Configuration reconciled by the leader",
        Duration::from_secs(30),
        || async { ready_remote_pods(&api, "cluster-b").await.is_some() },
    )
    .await;
    // The second replica stays a candidate while the first renews.
    assert_eq!(holder().await.as_deref(), Some("replica-1"));
}
