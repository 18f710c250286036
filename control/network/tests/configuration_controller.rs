//! A peering's Configuration end to end against the test control plane: the
//! peer's overlapping CIDRs are remapped by IPAM, published in the status,
//! rendered into the gateway's NatConfiguration, and released on deletion.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    api::{DeleteParams, PostParams},
    Api,
};
use strait_api::{
    condition::is_condition_true,
    ipam::Network,
    names::label::REMOTE_CLUSTER_ID,
    networking::{
        ClusterCidrs, ClusterNetwork, Configuration, ConfigurationSpec, NatConfiguration,
        NatDirection, PrefixMapping,
    },
};
use strait_network::{
    configuration_controller,
    ipam::{parse_cidr, Allocator},
    ipam_controller,
};
use strait_testkit::{eventually, TestCluster};

const STEP: Duration = Duration::from_secs(20);

const NS: &str = "strait-tenant-cluster-b";

fn configuration(name: &str) -> Configuration {
    let list = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut config = Configuration::new(
        name,
        ConfigurationSpec {
            local: None,
            remote: ClusterNetwork {
                cidr: ClusterCidrs {
                    pod: list(&["10.244.0.0/16", "fd00:10:244::/56"]),
                    external: list(&["10.70.0.0/16"]),
                },
            },
        },
    );
    config.metadata.labels = Some([(REMOTE_CLUSTER_ID.to_owned(), name.to_owned())].into());
    config
}

async fn remote_seen(api: &Api<Configuration>, name: &str) -> Option<ClusterCidrs> {
    let config = api.get_opt(name).await.ok()??;
    let status = config.status?;
    is_condition_true(&status.conditions, "Ready").then_some(status.remote?.cidr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlapping_peer_is_remapped_published_and_natted_then_released() {
    let cluster = TestCluster::start("configuration")
        .await
        .expect("test cluster");
    let client = cluster.client();
    let mut ns = Namespace::default();
    ns.metadata.name = Some(NS.to_owned());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    let net = |s: &str| parse_cidr(s).expect("test CIDR");
    // This cluster uses the same pod CIDRs as the peer.
    let allocator = Allocator::new(
        vec![net("10.244.0.0/16"), net("fd00:10:244::/56")],
        vec![net("10.64.0.0/10"), net("fd00:ffff::/32")],
    );
    let ipam = tokio::spawn(ipam_controller::run(client.clone(), allocator));
    let configurations = tokio::spawn(configuration_controller::run(client.clone()));

    let api: Api<Configuration> = Api::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), &configuration("cluster-b"))
        .await
        .expect("create");
    eventually("Configuration ready", STEP, || async {
        remote_seen(&api, "cluster-b").await.is_some()
    })
    .await;
    let seen = remote_seen(&api, "cluster-b").await.expect("ready");
    assert_eq!(
        seen.pod,
        ["10.64.0.0/16", "fd00:ffff::/56"],
        "overlapping pod CIDRs remapped"
    );
    assert_eq!(seen.external, ["10.70.0.0/16"], "a free range is kept");

    let nat = Api::<NatConfiguration>::namespaced(client.clone(), NS)
        .get("cluster-b-gateway")
        .await
        .expect("rendered");
    let mapping = |from: &str, to: &str| PrefixMapping {
        direction: NatDirection::Destination,
        from: from.into(),
        to: to.into(),
    };
    assert_eq!(
        nat.spec.prefixes,
        [
            mapping("10.64.0.0/16", "10.244.0.0/16"),
            mapping("fd00:ffff::/56", "fd00:10:244::/56")
        ]
    );
    assert_eq!(
        nat.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REMOTE_CLUSTER_ID))
            .map(String::as_str),
        Some("cluster-b"),
        "the gateway's NAT agent selects it by the peering's label"
    );

    // Deleting the peering deletes its Networks (owned), which returns the ranges.
    api.delete("cluster-b", &DeleteParams::default())
        .await
        .expect("delete");
    let networks: Api<Network> = Api::namespaced(client.clone(), NS);
    eventually("Networks released and gone", STEP, || async {
        networks
            .list(&Default::default())
            .await
            .is_ok_and(|l| l.items.is_empty())
    })
    .await;
    api.create(&PostParams::default(), &configuration("cluster-c"))
        .await
        .expect("create");
    eventually("the next peering ready", STEP, || async {
        remote_seen(&api, "cluster-c").await.is_some()
    })
    .await;
    let seen = remote_seen(&api, "cluster-c").await.expect("ready");
    assert_eq!(seen.pod[0], "10.64.0.0/16", "the released range is reused");
    ipam.abort();
    configurations.abort();
}
