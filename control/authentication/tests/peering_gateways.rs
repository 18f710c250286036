//! The peering's gateways made by the network module: after the documented
//! YAML peered cluster-a (consumer) with cluster-b (provider) and the
//! consumer's ForeignCluster selected the network module, the provider has
//! a GatewayServer in the consumer's tenant namespace and the consumer a
//! GatewayClient dialling what that server publishes, followed when it
//! changes; deselecting the network module or unpeering leaves no gateway
//! on either side, and a hand-made gateway is left alone.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;
use strait_api::condition::ConditionStatus;
use strait_api::core::ForeignCluster;
use strait_api::names::{
    finalizer::PEERING_GATEWAYS,
    label::{PEERING_GATEWAY, REMOTE_CLUSTER_ID},
    tenant_namespace,
};
use strait_api::networking::{
    GatewayClient, GatewayClientSpec, GatewayServer, PublicEndpoint, PublicKey,
};
use strait_network::gateway::{key_exchange, peering_gateways};
use strait_testkit::eventually;

/// The network module's peering controller on both clusters.
fn run_network(a: &Peer, b: &Peer) -> [tokio::task::JoinHandle<()>; 2] {
    [
        tokio::spawn(key_exchange::run(a.client(), Some(a.id.clone()))),
        tokio::spawn(key_exchange::run(b.client(), Some(b.id.clone()))),
    ]
}

async fn select_network(client: &Client, remote: &str, on: bool) {
    Api::<ForeignCluster>::all(client.clone())
        .patch(
            remote,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"modules": {"network": on}}})),
        )
        .await
        .expect("spec.modules.network");
}

async fn gateways_condition(client: &Client, remote: &str) -> Option<(ConditionStatus, String)> {
    foreign_cluster_condition(client, remote, peering_gateways::CONDITION).await
}

/// Every gateway and PublicKey in a cluster, as `Kind/namespace/name`.
async fn network_objects(client: &Client) -> BTreeSet<String> {
    let lp = ListParams::default();
    let mut found = BTreeSet::new();
    let describe = |kind: &str, ns: Option<String>, name: String| {
        format!("{kind}/{}/{name}", ns.unwrap_or_default())
    };
    for s in Api::<GatewayServer>::all(client.clone())
        .list(&lp)
        .await
        .expect("servers")
    {
        found.insert(describe("GatewayServer", s.namespace(), s.name_any()));
    }
    for c in Api::<GatewayClient>::all(client.clone())
        .list(&lp)
        .await
        .expect("clients")
    {
        found.insert(describe("GatewayClient", c.namespace(), c.name_any()));
    }
    for k in Api::<PublicKey>::all(client.clone())
        .list(&lp)
        .await
        .expect("keys")
    {
        found.insert(describe("PublicKey", k.namespace(), k.name_any()));
    }
    found
}

async fn wait_no_gateways(peer: &Peer, when: &str) {
    let client = peer.client();
    let mut last = BTreeSet::new();
    let cleared = tokio::time::timeout(STEP, async {
        loop {
            last = network_objects(&client).await;
            if last.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(cleared.is_ok(), "{} still holds {when}: {last:?}", peer.id);
}

/// What the provider's gateway controller does once its gateway runs:
/// publish where the server can be dialled.
async fn publish_endpoint(
    provider: &Client,
    namespace: &str,
    name: &str,
    address: &str,
    port: i32,
) {
    Api::<GatewayServer>::namespaced(provider.clone(), namespace)
        .patch_status(
            name,
            &PatchParams::apply("strait-network-gateway").force(),
            &Patch::Apply(json!({
                "apiVersion": "networking.strait.dev/v1beta1",
                "kind": "GatewayServer",
                "status": {"endpoint": {"addresses": [address], "port": port}},
            })),
        )
        .await
        .expect("server status");
}

async fn client_endpoint(
    consumer: &Client,
    namespace: &str,
    name: &str,
) -> Option<(PublicEndpoint, i32)> {
    Api::<GatewayClient>::namespaced(consumer.clone(), namespace)
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .map(|c| (c.spec.endpoint, c.spec.mtu))
}

fn endpoint(address: &str, port: i32) -> PublicEndpoint {
    PublicEndpoint {
        addresses: vec![address.to_owned()],
        port,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peering_makes_both_gateways_follows_the_server_and_removes_them() {
    let a = Peer::start("cluster-a").await;
    let b = Peer::start("cluster-b").await;
    peer(&a, &b).await;
    wait_authenticated(&a, "cluster-b").await;
    let network = run_network(&a, &b);
    let (ca, cb) = (a.client(), b.client());
    // The provider's gateway for the peering lives in the consumer's tenant
    // namespace there; the consumer's in the provider's here.
    let (on_a, on_b) = (tenant_namespace("cluster-b"), tenant_namespace("cluster-a"));
    select_network(&ca, "cluster-b", true).await;

    // The server is made on the provider, named and labelled after the
    // consumer; the client waits for its endpoint, and the condition says so.
    let servers: Api<GatewayServer> = Api::namespaced(cb.clone(), &on_b);
    eventually("the provider's GatewayServer cluster-a", STEP, || async {
        servers.get_opt("cluster-a").await.ok().flatten().is_some()
    })
    .await;
    let server = servers.get("cluster-a").await.expect("server");
    assert_eq!(
        server.labels().get(REMOTE_CLUSTER_ID).map(String::as_str),
        Some("cluster-a")
    );
    assert_eq!(
        server.spec.endpoint.port,
        peering_gateways::SERVER_PORT,
        "the server listens on the default port"
    );
    eventually(
        "GatewaysProvisioned WaitingForProviderGateway",
        STEP,
        || async {
            gateways_condition(&ca, "cluster-b").await
                == Some((ConditionStatus::False, "WaitingForProviderGateway".into()))
        },
    )
    .await;
    assert_eq!(
        client_endpoint(&ca, &on_a, "cluster-b").await,
        None,
        "no GatewayClient before the server has an endpoint"
    );

    // The endpoint is published: the client dials it with the server's MTU.
    publish_endpoint(&cb, &on_b, "cluster-a", "198.18.10.2", 51820).await;
    eventually(
        "the GatewayClient dials the server's endpoint",
        STEP,
        || async {
            client_endpoint(&ca, &on_a, "cluster-b").await
                == Some((endpoint("198.18.10.2", 51820), server.spec.mtu))
        },
    )
    .await;
    let client = Api::<GatewayClient>::namespaced(ca.clone(), &on_a)
        .get("cluster-b")
        .await
        .expect("client");
    assert_eq!(
        client.labels().get(REMOTE_CLUSTER_ID).map(String::as_str),
        Some("cluster-b")
    );
    eventually("GatewaysProvisioned Provisioned", STEP, || async {
        gateways_condition(&ca, "cluster-b").await
            == Some((ConditionStatus::True, "Provisioned".into()))
    })
    .await;

    // The server moves: the client follows.
    publish_endpoint(&cb, &on_b, "cluster-a", "198.18.10.3", 51821).await;
    eventually(
        "the GatewayClient follows the new endpoint",
        STEP,
        || async {
            client_endpoint(&ca, &on_a, "cluster-b").await
                == Some((endpoint("198.18.10.3", 51821), server.spec.mtu))
        },
    )
    .await;

    // The network module deselected: both sides' gateways go (and the
    // keys the exchange wrote for them), the peering stays.
    select_network(&ca, "cluster-b", false).await;
    wait_no_gateways(&a, "after the network module was deselected").await;
    wait_no_gateways(&b, "after the network module was deselected").await;
    eventually("no GatewaysProvisioned once deselected", STEP, || async {
        gateways_condition(&ca, "cluster-b").await.is_none()
    })
    .await;
    let fc = Api::<ForeignCluster>::all(ca.clone())
        .get("cluster-b")
        .await
        .expect("fc");
    assert!(
        !fc.finalizers().iter().any(|f| f == PEERING_GATEWAYS),
        "the finalizer is released: {:?}",
        fc.finalizers()
    );

    // Selected again, then unpeered: nothing is left on either side.
    select_network(&ca, "cluster-b", true).await;
    eventually("the server made again", STEP, || async {
        servers.get_opt("cluster-a").await.ok().flatten().is_some()
    })
    .await;
    publish_endpoint(&cb, &on_b, "cluster-a", "198.18.10.2", 51820).await;
    eventually("the client made again", STEP, || async {
        client_endpoint(&ca, &on_a, "cluster-b").await.is_some()
    })
    .await;
    unpeer(&a, &b).await;
    wait_no_gateways(&a, "after unpeering").await;
    wait_no_gateways(&b, "after unpeering").await;
    eventually("the ForeignCluster is gone", STEP, || async {
        Api::<ForeignCluster>::all(ca.clone())
            .get_opt("cluster-b")
            .await
            .ok()
            .flatten()
            .is_none()
    })
    .await;
    for task in network {
        task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_made_gateway_is_used_and_never_touched() {
    let a = Peer::start("cluster-a").await;
    let b = Peer::start("cluster-b").await;
    peer(&a, &b).await;
    wait_authenticated(&a, "cluster-b").await;
    let network = run_network(&a, &b);
    let (ca, cb) = (a.client(), b.client());
    let on_a = tenant_namespace("cluster-b");

    // A person's GatewayClient for the provider, before the network module
    // is selected.
    let mut own = GatewayClient::new(
        "by-hand",
        GatewayClientSpec {
            mtu: 1380,
            endpoint: endpoint("198.18.20.2", 40000),
            secret_ref: None,
            template_ref: None,
        },
    );
    own.metadata.labels = Some([(REMOTE_CLUSTER_ID.to_owned(), "cluster-b".to_owned())].into());
    let clients: Api<GatewayClient> = Api::namespaced(ca.clone(), &on_a);
    clients
        .create(&PostParams::default(), &own)
        .await
        .expect("hand-made client");
    select_network(&ca, "cluster-b", true).await;
    eventually("GatewaysProvisioned UserGateway", STEP, || async {
        gateways_condition(&ca, "cluster-b").await
            == Some((ConditionStatus::True, "UserGateway".into()))
    })
    .await;
    // A few reconciles later: no server made on the provider, no second
    // client here, the person's client as it was.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let servers = Api::<GatewayServer>::all(cb.clone())
        .list(&ListParams::default())
        .await
        .expect("servers");
    assert!(
        servers.items.is_empty(),
        "no GatewayServer made on the provider"
    );
    let names: Vec<String> = clients
        .list(&ListParams::default())
        .await
        .expect("clients")
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(names, ["by-hand"]);
    let kept = clients.get("by-hand").await.expect("kept");
    assert_eq!(kept.spec, own.spec);
    assert!(!kept.labels().contains_key(PEERING_GATEWAY));

    // Deselecting the network module does not remove it either.
    select_network(&ca, "cluster-b", false).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        clients.get_opt("by-hand").await.expect("get").is_some(),
        "the hand-made GatewayClient is the person's to remove"
    );
    for task in network {
        task.abort();
    }
}
