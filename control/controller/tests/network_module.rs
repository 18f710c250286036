//! The strait-controller binary with only the network module, against the
//! test control plane through a kubeconfig, as it would run in a cluster.

use std::{process::Stdio, time::Duration};

use k8s_openapi::api::core::v1::Namespace;
use kube::{api::PostParams, Api};
use strait_api::{
    condition::is_condition_true,
    networking::{ClusterCidrs, ClusterNetwork, Configuration, ConfigurationSpec},
};
use strait_testkit::TestCluster;

/// Kills the controller process when the test ends, whatever its outcome.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_module_remaps_a_peering_through_the_api() {
    let cluster = TestCluster::start("controller-bin")
        .await
        .expect("test cluster");
    let dir = std::env::temp_dir().join(format!("strait-controller-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = dir.join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let _controller = Running(
        std::process::Command::new(env!("CARGO_BIN_EXE_strait-controller"))
            .args([
                "--network",
                "--reserved-cidr",
                "10.244.0.0/16",
                "--remap-pool",
                "10.64.0.0/10",
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
    ns.metadata.name = Some("peering".into());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    let api: Api<Configuration> = Api::namespaced(client, "peering");
    let spec = ConfigurationSpec {
        local: None,
        remote: ClusterNetwork {
            cidr: ClusterCidrs {
                pod: vec!["10.244.0.0/16".into()],
                external: Vec::new(),
            },
        },
    };
    api.create(
        &PostParams::default(),
        &Configuration::new("cluster-b", spec),
    )
    .await
    .expect("create");
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(Some(config)) = api.get_opt("cluster-b").await {
                if let Some(status) = config.status {
                    if is_condition_true(&status.conditions, "Ready") {
                        return status.remote.map(|r| r.cidr.pod);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        ready.expect("ready in time"),
        Some(vec!["10.64.0.0/16".to_owned()])
    );
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
    let dir = std::env::temp_dir().join(format!("strait-controller-leader-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = dir.join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let client = cluster.client();
    for name in ["strait", "peering"] {
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.into());
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("namespace");
    }
    let replica = |pod: &str| {
        Running(
            std::process::Command::new(env!("CARGO_BIN_EXE_strait-controller"))
                .args(["--network", "--remap-pool", "10.64.0.0/10"])
                .args(["--leader-election-namespace", "strait"])
                .env("POD_NAME", pod)
                .env("KUBECONFIG", &kubeconfig)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("strait-controller starts"),
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
    strait_testkit::eventually("replica-1 leads", Duration::from_secs(20), || async {
        holder().await.as_deref() == Some("replica-1")
    })
    .await;
    let _second = replica("replica-2");
    let api: Api<Configuration> = Api::namespaced(client, "peering");
    let spec = ConfigurationSpec {
        local: None,
        remote: ClusterNetwork {
            cidr: ClusterCidrs {
                pod: vec!["10.70.0.0/16".into()],
                external: Vec::new(),
            },
        },
    };
    api.create(
        &PostParams::default(),
        &Configuration::new("cluster-b", spec),
    )
    .await
    .expect("create");
    strait_testkit::eventually(
        "Configuration reconciled by the leader",
        Duration::from_secs(30),
        || async {
            api.get_opt("cluster-b")
                .await
                .ok()
                .flatten()
                .and_then(|c| c.status)
                .is_some_and(|s| is_condition_true(&s.conditions, "Ready"))
        },
    )
    .await;
    // The second replica stays a candidate while the first renews.
    assert_eq!(holder().await.as_deref(), Some("replica-1"));
    let _ = std::fs::remove_dir_all(&dir);
}
