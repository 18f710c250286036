//! The nodes' routes toward a peer's gateway, against the test control
//! plane: a Configuration whose remote CIDRs are allocated and a gateway
//! with an internal endpoint give the RouteConfiguration `<remote cluster>`;
//! it follows the gateway, goes with the Configuration or the gateway, and
//! each peering keeps its own VNI across restarts of the controller.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    api::{DeleteParams, Patch, PatchParams, PostParams},
    Api, Client,
};
use serde_json::json;
use strait_api::{
    condition::find_condition,
    names::label::REMOTE_CLUSTER_ID,
    networking::{
        ClusterCidrs, ClusterNetwork, Configuration, ConfigurationSpec, FabricRoute, GatewayServer,
        GatewayServerSpec, RouteConfiguration, ServerEndpoint, ServiceType,
    },
};
use strait_network::route_controller::{self, EndpointSource, Settings, ROUTES_READY};
use strait_testkit::{eventually, TestCluster};

const STEP: Duration = Duration::from_secs(20);
const NODE_VNI: u32 = 4096;
const FIRST_PEER_VNI: u32 = 4096;

fn list(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn namespace(client: &Client, name: &str) {
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.to_owned());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
}

/// The peering with `remote`, its pod CIDRs overlapping ours.
async fn configuration(client: &Client, namespace: &str, remote: &str) -> Api<Configuration> {
    let api: Api<Configuration> = Api::namespaced(client.clone(), namespace);
    let mut config = Configuration::new(
        remote,
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
    config
        .metadata
        .labels
        .get_or_insert_default()
        .insert(REMOTE_CLUSTER_ID.into(), remote.into());
    api.create(&PostParams::default(), &config)
        .await
        .expect("Configuration");
    api
}

/// What IPAM would have published: the pod CIDRs remapped, the external kept.
async fn remap(api: &Api<Configuration>, name: &str, pod_v4: &str) {
    let patch = json!({
        "apiVersion": "networking.strait.dev/v1beta1",
        "kind": "Configuration",
        "status": { "remote": { "cidr": { "pod": [pod_v4, "fd00:ffff::/56"], "external": ["10.70.0.0/16"] } } },
    });
    api.patch_status(
        name,
        &PatchParams::apply("test-ipam").force(),
        &Patch::Apply(&patch),
    )
    .await
    .expect("status.remote");
}

async fn gateway(client: &Client, namespace: &str, name: &str, remote: &str) -> Api<GatewayServer> {
    let api: Api<GatewayServer> = Api::namespaced(client.clone(), namespace);
    let mut gateway = GatewayServer::new(
        name,
        GatewayServerSpec {
            mtu: 1420,
            endpoint: ServerEndpoint {
                port: 51820,
                service_type: ServiceType::LoadBalancer,
                node_port: None,
                load_balancer_ips: Vec::new(),
            },
            secret_ref: None,
            template_ref: None,
        },
    );
    gateway
        .metadata
        .labels
        .get_or_insert_default()
        .insert(REMOTE_CLUSTER_ID.into(), remote.into());
    api.create(&PostParams::default(), &gateway)
        .await
        .expect("GatewayServer");
    api
}

/// Sets the gateway's internal endpoint, as its pod moving would.
async fn endpoint(api: &Api<GatewayServer>, name: &str, ips: &[&str]) {
    let patch = json!({
        "apiVersion": "networking.strait.dev/v1beta1",
        "kind": "GatewayServer",
        "status": { "internalEndpoint": { "ips": ips } },
    });
    api.patch_status(
        name,
        &PatchParams::apply("test-gateway").force(),
        &Patch::Apply(&patch),
    )
    .await
    .expect("status.internalEndpoint");
}

async fn reason(api: &Api<Configuration>, name: &str) -> Option<String> {
    let config = api.get_opt(name).await.ok()??;
    find_condition(&config.status?.conditions, ROUTES_READY).map(|c| c.reason.clone())
}

async fn wait_reason(api: &Api<Configuration>, name: &str, wanted: &str) {
    eventually(
        &format!("{name}: {ROUTES_READY} {wanted}"),
        STEP,
        || async { reason(api, name).await.as_deref() == Some(wanted) },
    )
    .await;
}

async fn vni(api: &Api<Configuration>, name: &str) -> u32 {
    let config = api.get(name).await.expect("Configuration");
    let vni = config.status.and_then(|s| s.vni).expect("status.vni");
    u32::try_from(vni).expect("a VNI")
}

/// Waits for RouteConfiguration `name` to route through `gateways`.
async fn routes_via(
    api: &Api<RouteConfiguration>,
    name: &str,
    gateways: &[&str],
) -> Vec<FabricRoute> {
    eventually(
        &format!("RouteConfiguration {name} via {gateways:?}"),
        STEP,
        || async {
            api.get_opt(name)
                .await
                .ok()
                .flatten()
                .is_some_and(|r| r.spec.routes.iter().all(|route| route.gateways == gateways))
        },
    )
    .await;
    api.get(name).await.expect("RouteConfiguration").spec.routes
}

fn settings(endpoints: EndpointSource) -> Settings {
    Settings {
        node_vni: NODE_VNI,
        first_peer_vni: FIRST_PEER_VNI,
        endpoints,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_wait_for_the_gateway_follow_it_and_go_with_the_peering() {
    let cluster = TestCluster::start("routes").await.expect("test cluster");
    let client = cluster.client();
    let ns = "strait-tenant-cluster-b";
    namespace(&client, ns).await;
    let controller = tokio::spawn(route_controller::run(
        client.clone(),
        settings(EndpointSource::Fixed(Vec::new())),
    ));
    let configurations = configuration(&client, ns, "cluster-b").await;
    let routes: Api<RouteConfiguration> = Api::namespaced(client.clone(), ns);

    wait_reason(&configurations, "cluster-b", "WaitingForGateway").await;
    let gateways = gateway(&client, ns, "gw-b", "cluster-b").await;
    wait_reason(&configurations, "cluster-b", "WaitingForGatewayEndpoint").await;
    let message = api_message(&configurations, "cluster-b").await;
    assert!(
        message.contains("GatewayServer gw-b") && message.contains("--gateway-internal-address"),
        "the condition says which gateway and how to fix it: {message}"
    );
    endpoint(&gateways, "gw-b", &["198.18.0.2", "fd00:f::2"]).await;
    wait_reason(&configurations, "cluster-b", "WaitingForRemap").await;
    assert!(
        routes.get_opt("cluster-b").await.expect("get").is_none(),
        "no routes before the remap"
    );

    remap(&configurations, "cluster-b", "10.64.0.0/16").await;
    let written = routes_via(&routes, "cluster-b", &["198.18.0.2", "fd00:f::2"]).await;
    let vni = vni(&configurations, "cluster-b").await;
    assert!(vni > NODE_VNI, "the node VNI {NODE_VNI} is skipped: {vni}");
    let route = |destination: &str| FabricRoute {
        destinations: vec![destination.into()],
        gateways: list(&["198.18.0.2", "fd00:f::2"]),
        vni: i64::from(vni),
    };
    assert_eq!(
        written,
        [
            route("10.64.0.0/16"),
            route("10.70.0.0/16"),
            route("fd00:ffff::/56")
        ],
        "the peer's ranges as this cluster sees them, to the gateway, on the peering's VNI"
    );
    wait_reason(&configurations, "cluster-b", "Routed").await;
    let object = routes.get("cluster-b").await.expect("RouteConfiguration");
    let config = configurations
        .get("cluster-b")
        .await
        .expect("Configuration");
    assert!(
        object
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| Some(&o.uid) == config.metadata.uid.as_ref() && o.controller == Some(true)),
        "owned by the Configuration: {:?}",
        object.metadata.owner_references
    );

    // The gateway pod moved: the routes follow, on the same VNI.
    endpoint(&gateways, "gw-b", &["198.18.0.9"]).await;
    let moved = routes_via(&routes, "cluster-b", &["198.18.0.9"]).await;
    assert!(moved.iter().all(|r| r.vni == i64::from(vni)), "{moved:?}");

    // A RouteConfiguration deleted by hand comes back.
    routes
        .delete("cluster-b", &DeleteParams::default())
        .await
        .expect("delete routes");
    routes_via(&routes, "cluster-b", &["198.18.0.9"]).await;

    // No gateway left: no routes.
    gateways
        .delete("gw-b", &DeleteParams::default())
        .await
        .expect("delete gateway");
    eventually("routes removed with the gateway", STEP, || async {
        routes.get_opt("cluster-b").await.is_ok_and(|r| r.is_none())
    })
    .await;
    wait_reason(&configurations, "cluster-b", "WaitingForGateway").await;

    // Back with a gateway, then the peering is deleted: the routes go with it.
    let gateways = gateway(&client, ns, "gw-b", "cluster-b").await;
    endpoint(&gateways, "gw-b", &["198.18.0.2"]).await;
    routes_via(&routes, "cluster-b", &["198.18.0.2"]).await;
    configurations
        .delete("cluster-b", &DeleteParams::default())
        .await
        .expect("delete Configuration");
    eventually("routes removed with the Configuration", STEP, || async {
        routes.get_opt("cluster-b").await.is_ok_and(|r| r.is_none())
    })
    .await;
    controller.abort();
}

async fn api_message(api: &Api<Configuration>, name: &str) -> String {
    let config = api.get(name).await.expect("Configuration");
    config
        .status
        .and_then(|s| find_condition(&s.conditions, ROUTES_READY).map(|c| c.message.clone()))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_peer_gets_its_own_vni_kept_across_restarts() {
    let cluster = TestCluster::start("route-vnis")
        .await
        .expect("test cluster");
    let client = cluster.client();
    // The local simulation's way: the controller publishes the gateways'
    // internal endpoint from its flag.
    let local = || {
        settings(EndpointSource::Fixed(vec![
            "fd00:f::2".parse().expect("address"),
            "198.18.0.2".parse().expect("address"),
        ]))
    };
    let controller = tokio::spawn(route_controller::run(client.clone(), local()));
    let mut peers = Vec::new();
    for peer in ["cluster-b", "cluster-c"] {
        let ns = format!("strait-tenant-{peer}");
        namespace(&client, &ns).await;
        let configurations = configuration(&client, &ns, peer).await;
        remap(&configurations, peer, "10.64.0.0/16").await;
        gateway(&client, &ns, &format!("gw-{peer}"), peer).await;
        let routes: Api<RouteConfiguration> = Api::namespaced(client.clone(), &ns);
        routes_via(&routes, peer, &["198.18.0.2", "fd00:f::2"]).await;
        peers.push((peer, configurations, routes));
    }
    let gateway = Api::<GatewayServer>::namespaced(client.clone(), "strait-tenant-cluster-b")
        .get("gw-cluster-b")
        .await
        .expect("gateway");
    assert_eq!(
        gateway
            .status
            .and_then(|s| s.internal_endpoint)
            .map(|e| e.ips),
        Some(list(&["198.18.0.2", "fd00:f::2"])),
        "the flag's addresses, IPv4 first, published on the gateway"
    );
    let mut vnis = Vec::new();
    for (peer, configurations, routes) in &peers {
        let vni = vni(configurations, peer).await;
        let written = routes.get(peer).await.expect("routes");
        assert!(written.spec.routes.iter().all(|r| r.vni == i64::from(vni)));
        vnis.push(vni);
    }
    assert_ne!(vnis[0], vnis[1], "two peerings, two VNIs");
    assert!(
        vnis.iter().all(|v| *v != NODE_VNI && *v >= FIRST_PEER_VNI),
        "{vnis:?}"
    );

    // A new controller reads the allocations back: the routes it rewrites
    // keep their VNIs, and a new peering gets a third one.
    controller.abort();
    let _ = controller.await;
    for (peer, _, routes) in &peers {
        routes
            .delete(peer, &DeleteParams::default())
            .await
            .expect("delete routes");
    }
    let controller = tokio::spawn(route_controller::run(client.clone(), local()));
    for ((peer, _, routes), vni) in peers.iter().zip(&vnis) {
        let written = routes_via(routes, peer, &["198.18.0.2", "fd00:f::2"]).await;
        assert!(
            written.iter().all(|r| r.vni == i64::from(*vni)),
            "{peer} kept VNI {vni}: {written:?}"
        );
    }
    namespace(&client, "strait-tenant-cluster-d").await;
    let configurations = configuration(&client, "strait-tenant-cluster-d", "cluster-d").await;
    remap(&configurations, "cluster-d", "10.65.0.0/16").await;
    eventually("cluster-d has a VNI", STEP, || async {
        configurations
            .get("cluster-d")
            .await
            .is_ok_and(|c| c.status.and_then(|s| s.vni).is_some())
    })
    .await;
    let third = vni(&configurations, "cluster-d").await;
    assert!(
        !vnis.contains(&third) && third != NODE_VNI,
        "{third} vs {vnis:?}"
    );
    controller.abort();
}
