//! The IPAM controller against the test control plane: allocations are
//! distinct, released on deletion, survive a controller restart, and a full
//! pool is reported in the status, not hidden.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    api::{DeleteParams, PostParams},
    Api, Client,
};
use strait_api::{
    condition::find_condition,
    ipam::{Network, NetworkSpec},
};
use strait_network::{
    ipam::{parse_cidr, Allocator},
    ipam_controller,
};
use strait_testkit::{eventually, TestCluster};

const NS: &str = "strait-tenant-cluster-b";
const STEP: Duration = Duration::from_secs(20);

/// The local cluster uses 10.244.0.0/16; peers that do too are remapped
/// into a pool of three /16s.
fn allocator() -> Allocator {
    let net = |s: &str| parse_cidr(s).expect("test CIDR");
    Allocator::new(
        vec![net("10.244.0.0/16")],
        vec![net("10.64.0.0/15"), net("10.66.0.0/16")],
    )
}

async fn create(api: &Api<Network>, name: &str, cidr: &str) {
    let network = Network::new(
        name,
        NetworkSpec {
            cidrs: vec![cidr.to_owned()],
            pre_allocated: 0,
        },
    );
    api.create(&PostParams::default(), &network)
        .await
        .expect("created");
}

async fn allocated(api: &Api<Network>, name: &str) -> Option<String> {
    let network = api.get_opt(name).await.ok()??;
    network.status?.cidrs.first().cloned()
}

async fn setup() -> (TestCluster, Api<Network>) {
    let cluster = TestCluster::start("ipam").await.expect("test cluster");
    let client: Client = cluster.client();
    let mut ns = Namespace::default();
    ns.metadata.name = Some(NS.to_owned());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    (cluster, Api::namespaced(client, NS))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_networks_get_distinct_ranges_released_on_deletion() {
    let (cluster, api) = setup().await;
    let controller = tokio::spawn(ipam_controller::run(cluster.client(), allocator()));

    create(&api, "free", "10.245.0.0/16").await;
    for name in ["peer-1", "peer-2", "peer-3"] {
        create(&api, name, "10.244.0.0/16").await;
    }
    let mut seen = Vec::new();
    for name in ["peer-1", "peer-2", "peer-3"] {
        eventually(&format!("{name} allocated"), STEP, || async {
            allocated(&api, name).await.is_some()
        })
        .await;
        seen.push(allocated(&api, name).await.expect("allocated"));
    }
    seen.sort();
    assert_eq!(
        seen,
        ["10.64.0.0/16", "10.65.0.0/16", "10.66.0.0/16"],
        "distinct ranges from the pool"
    );
    eventually("free allocated", STEP, || async {
        allocated(&api, "free").await.is_some()
    })
    .await;
    let free = api.get("free").await.expect("get");
    assert_eq!(
        free.status.as_ref().map(|s| s.cidrs.clone()),
        Some(vec!["10.245.0.0/16".to_owned()])
    );
    let condition = find_condition(&free.status.expect("status").conditions, "Allocated")
        .cloned()
        .expect("condition");
    assert_eq!(
        (condition.reason.as_str(), condition.observed_generation),
        ("AsRequested", Some(1))
    );

    // The pool is exhausted: said in the status.
    create(&api, "peer-4", "10.244.0.0/16").await;
    eventually("exhaustion reported", STEP, || async {
        api.get("peer-4")
            .await
            .ok()
            .and_then(|n| n.status)
            .is_some_and(|s| {
                find_condition(&s.conditions, "Allocated")
                    .is_some_and(|c| c.reason == "PoolExhausted")
            })
    })
    .await;

    // Deleting a peer returns its range; the waiting Network gets it.
    let freed = allocated(&api, "peer-2").await.expect("allocated");
    api.delete("peer-2", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("peer-2 gone (finalizer released)", STEP, || async {
        api.get_opt("peer-2").await.ok().flatten().is_none()
    })
    .await;
    eventually("peer-4 allocated after the release", STEP, || async {
        allocated(&api, "peer-4").await.is_some()
    })
    .await;
    assert_eq!(allocated(&api, "peer-4").await, Some(freed));
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_never_hands_out_a_range_twice() {
    let (cluster, api) = setup().await;
    let first = tokio::spawn(ipam_controller::run(cluster.client(), allocator()));
    create(&api, "before", "10.244.0.0/16").await;
    eventually("allocated", STEP, || async {
        allocated(&api, "before").await.is_some()
    })
    .await;
    first.abort();
    let _ = first.await;

    // A new controller with an empty allocator restores from the statuses.
    let second = tokio::spawn(ipam_controller::run(cluster.client(), allocator()));
    create(&api, "after", "10.244.0.0/16").await;
    eventually("allocated after restart", STEP, || async {
        allocated(&api, "after").await.is_some()
    })
    .await;
    assert_ne!(
        allocated(&api, "before").await,
        allocated(&api, "after").await
    );
    second.abort();
}
