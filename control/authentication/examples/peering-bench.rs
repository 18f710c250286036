//! `cargo xtask bench peering`: time from applying the documented peering
//! YAML (provider and consumer sides at once) to the consumer's
//! ResourceSlice being Accepted, on two TLS test control planes with the
//! authentication module running in process. Fresh clusters every round.
//! Last line: `apply_to_accepted_ms=N` (the median).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use kube::Api;
use strait_api::authentication::ResourceSlice;
use strait_api::condition::{find_condition, ConditionStatus};
use strait_api::names::tenant_namespace;

const ROUNDS: usize = 7;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut samples = Vec::with_capacity(ROUNDS);
    for round in 1..=ROUNDS {
        let a = Peer::start("cluster-a").await;
        let b = Peer::start("cluster-b").await;
        let provider = [
            documented("provider-bootstrap-rbac.yaml", "cluster-a", "cluster-b"),
            documented("provider.yaml", "cluster-a", "cluster-b"),
        ]
        .join("---\n");
        let consumer = consumer_yaml(&a, &b);
        let slices: Api<ResourceSlice> =
            Api::namespaced(a.client(), &tenant_namespace("cluster-b"));
        let (client_a, client_b) = (a.client(), b.client());
        let started = Instant::now();
        tokio::join!(
            apply_yaml(&client_b, &provider),
            apply_yaml(&client_a, &consumer)
        );
        loop {
            let accepted = slices
                .get_opt("cluster-b-compute")
                .await
                .ok()
                .flatten()
                .and_then(|s| s.status)
                .and_then(|s| find_condition(&s.conditions, "Accepted").cloned())
                .is_some_and(|c| c.status == ConditionStatus::True);
            if accepted {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "round {round}: no Accepted slice after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = started.elapsed().as_millis();
        println!("round {round}: apply -> ResourceSlice Accepted in {elapsed} ms");
        samples.push(elapsed);
    }
    samples.sort_unstable();
    let (min, median, max) = (samples[0], samples[ROUNDS / 2], samples[ROUNDS - 1]);
    println!(
        "min {min} ms, median {median} ms, max {max} ms over {ROUNDS} rounds (target < 2000 ms)"
    );
    println!("apply_to_accepted_ms={median}");
}
