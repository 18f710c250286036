//! The network module's gateway key exchange over a real peering: after the
//! documented YAML peered cluster-a (consumer) with cluster-b (provider),
//! each side's gateway finds the other's PublicKey with no key copied by
//! hand, a rotated key follows, and once the provider revokes the Identity
//! the exchange stops and the consumer's ForeignCluster says why.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use strait_api::condition::ConditionStatus;
use strait_api::names::{label::REMOTE_CLUSTER_ID, tenant_namespace};
use strait_api::networking::{
    GatewayClient, GatewayClientSpec, GatewayServer, GatewayServerSpec, PublicEndpoint, PublicKey,
    ServerEndpoint, ServiceType,
};
use strait_authentication::object_names::CONSUMER_ROLE;
use strait_network::gateway::{key_exchange, local_key_name, remote_key_name};
use strait_testkit::eventually;

const KEY_A: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
const KEY_A_ROTATED: &str = "KCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRkc=";
const KEY_A_AFTER_REVOKE: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
const KEY_B: &str = "YGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn8=";

fn labelled(remote: &str) -> Option<BTreeMap<String, String>> {
    Some(BTreeMap::from([(
        REMOTE_CLUSTER_ID.to_owned(),
        remote.to_owned(),
    )]))
}

/// What a gateway controller publishes: its key as PublicKey `local-<name>`.
async fn publish(client: &Client, namespace: &str, gateway: &str, key: &str) {
    let object = json!({
        "apiVersion": "networking.strait.dev/v1beta1",
        "kind": "PublicKey",
        "metadata": { "name": local_key_name(gateway) },
        "spec": { "publicKey": key },
    });
    Api::<PublicKey>::namespaced(client.clone(), namespace)
        .patch(
            &local_key_name(gateway),
            &PatchParams::apply("strait-network-gateway").force(),
            &Patch::Apply(object),
        )
        .await
        .expect("published key");
}

async fn key(client: &Client, namespace: &str, name: &str) -> Option<String> {
    Api::<PublicKey>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .map(|k| k.spec.public_key)
}

async fn exchange_condition(client: &Client, remote: &str) -> Option<(ConditionStatus, String)> {
    foreign_cluster_condition(client, remote, key_exchange::CONDITION).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peered_clusters_exchange_gateway_keys_until_the_identity_is_revoked() {
    let a = Peer::start("cluster-a").await;
    let b = Peer::start("cluster-b").await;
    peer(&a, &b).await;
    wait_authenticated(&a, "cluster-b").await;

    // The network module on both sides; the peering selects it.
    let exchanges = [
        tokio::spawn(key_exchange::run(a.client(), Some("cluster-a".into()))),
        tokio::spawn(key_exchange::run(b.client(), Some("cluster-b".into()))),
    ];
    Api::<strait_api::core::ForeignCluster>::all(a.client())
        .patch(
            "cluster-b",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"modules": {"network": true}}})),
        )
        .await
        .expect("network selected");

    // Each side's gateway for the peering, and the key it publishes. The
    // provider's lives in the consumer's tenant namespace.
    let (on_a, on_b) = (tenant_namespace("cluster-b"), tenant_namespace("cluster-a"));
    let mut server = GatewayServer::new(
        "cluster-a",
        GatewayServerSpec {
            mtu: 1420,
            endpoint: ServerEndpoint {
                port: 51820,
                service_type: ServiceType::ClusterIP,
                node_port: None,
                load_balancer_ips: Vec::new(),
            },
            secret_ref: None,
            template_ref: None,
        },
    );
    server.metadata.labels = labelled("cluster-a");
    Api::<GatewayServer>::namespaced(b.client(), &on_b)
        .create(&PostParams::default(), &server)
        .await
        .expect("server");
    let mut client = GatewayClient::new(
        "cluster-b",
        GatewayClientSpec {
            mtu: 1420,
            endpoint: PublicEndpoint {
                addresses: vec!["198.18.10.2".into()],
                port: 51820,
            },
            secret_ref: None,
            template_ref: None,
        },
    );
    client.metadata.labels = labelled("cluster-b");
    Api::<GatewayClient>::namespaced(a.client(), &on_a)
        .create(&PostParams::default(), &client)
        .await
        .expect("client");
    publish(&a.client(), &on_a, "cluster-b", KEY_A).await;
    publish(&b.client(), &on_b, "cluster-a", KEY_B).await;

    let (ca, cb) = (a.client(), b.client());
    eventually("keys exchanged both ways", STEP, || async {
        key(&cb, &on_b, &remote_key_name("cluster-a"))
            .await
            .as_deref()
            == Some(KEY_A)
            && key(&ca, &on_a, &remote_key_name("cluster-b"))
                .await
                .as_deref()
                == Some(KEY_B)
    })
    .await;
    eventually("GatewayKeysExchanged True", STEP, || async {
        exchange_condition(&ca, "cluster-b").await
            == Some((ConditionStatus::True, "Exchanged".into()))
    })
    .await;
    // Only the PublicKeys the gateways published and the exchange wrote:
    // nothing else appeared on either side.
    for (client, namespace) in [(&ca, &on_a), (&cb, &on_b)] {
        let mut names: Vec<String> = Api::<PublicKey>::namespaced(client.clone(), namespace)
            .list(&Default::default())
            .await
            .expect("keys")
            .items
            .into_iter()
            .map(|k| kube::ResourceExt::name_any(&k))
            .collect();
        names.sort();
        let gateway = if namespace == &on_a {
            "cluster-b"
        } else {
            "cluster-a"
        };
        assert_eq!(names, [local_key_name(gateway), remote_key_name(gateway)]);
    }

    // A rotated key reaches the provider.
    publish(&ca, &on_a, "cluster-b", KEY_A_ROTATED).await;
    eventually("the rotated key on the provider", STEP, || async {
        key(&cb, &on_b, &remote_key_name("cluster-a"))
            .await
            .as_deref()
            == Some(KEY_A_ROTATED)
    })
    .await;

    // The provider revokes the Identity's access (its authentication
    // module stopped so nothing grants it again): the exchange stops, and
    // the consumer's ForeignCluster says so.
    a.stop_controller();
    b.stop_controller();
    Api::<RoleBinding>::namespaced(cb.clone(), &on_b)
        .delete(CONSUMER_ROLE, &Default::default())
        .await
        .expect("revoke");
    eventually("GatewayKeysExchanged IdentityRejected", STEP, || async {
        exchange_condition(&ca, "cluster-b").await
            == Some((ConditionStatus::False, "IdentityRejected".into()))
    })
    .await;
    publish(&ca, &on_a, "cluster-b", KEY_A_AFTER_REVOKE).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        key(&cb, &on_b, &remote_key_name("cluster-a"))
            .await
            .as_deref(),
        Some(KEY_A_ROTATED),
        "nothing reaches the provider after the revocation"
    );
    for exchange in exchanges {
        exchange.abort();
    }
}
