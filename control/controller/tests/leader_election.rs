//! Leader election against the test control plane: one holder at a time,
//! takeover only after the holder stops renewing, the old holder told.
use std::time::Duration;

use k8s_openapi::api::{coordination::v1::Lease, core::v1::Namespace};
use kube::{api::PostParams, Api};
use strait_controller::leader::{Error, LeaderElection, Timing};
use strait_testkit::TestCluster;

const TIMING: Timing = Timing {
    // The Lease's granularity is a second.
    lease_duration: Duration::from_secs(1),
    renew_every: Duration::from_millis(200),
    retry_every: Duration::from_millis(100),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_a_takeover_only_after_it_stops_renewing() {
    let cluster = TestCluster::start("leader").await.expect("test cluster");
    let client = cluster.client();
    let mut ns = Namespace::default();
    ns.metadata.name = Some("strait".into());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    let mut first = LeaderElection::new(
        client.clone(),
        "strait",
        "strait-controller",
        "replica-1",
        TIMING,
    );
    let mut second = LeaderElection::new(
        client.clone(),
        "strait",
        "strait-controller",
        "replica-2",
        TIMING,
    );

    assert!(first.try_acquire_or_renew().await.expect("first"));
    // While the first renews, the second never gets it, however long it tries.
    for _ in 0..8 {
        assert!(!second.try_acquire_or_renew().await.expect("second"));
        tokio::time::sleep(TIMING.renew_every).await;
        assert!(first.try_acquire_or_renew().await.expect("renew"));
    }
    let leases: Api<Lease> = Api::namespaced(client, "strait");
    let holder = |lease: Lease| lease.spec.and_then(|s| s.holder_identity);
    assert_eq!(
        holder(leases.get("strait-controller").await.expect("lease")).as_deref(),
        Some("replica-1")
    );

    // The first stops renewing: the second takes over once the lease expired.
    let started = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), second.acquire())
        .await
        .expect("takeover in time")
        .expect("acquire");
    assert!(
        started.elapsed() >= TIMING.lease_duration,
        "taken over before expiry: {:?}",
        started.elapsed()
    );
    let lease = leases.get("strait-controller").await.expect("lease");
    assert_eq!(
        lease.spec.as_ref().and_then(|s| s.lease_transitions),
        Some(1)
    );
    assert_eq!(holder(lease).as_deref(), Some("replica-2"));

    // The old leader learns it lost the lease instead of reconciling on.
    let (lost, ()) = tokio::join!(first.hold(), async {
        for _ in 0..3 {
            assert!(second.try_acquire_or_renew().await.expect("renew"));
            tokio::time::sleep(TIMING.renew_every).await;
        }
    });
    assert!(matches!(lost, Error::Lost { .. }), "{lost}");
}
