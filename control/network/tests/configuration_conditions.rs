//! Two controllers write a Configuration's `status.conditions`: the
//! Configuration controller `Ready`, the route controller `RoutesReady`.
//! Each applies only its own condition under its own field manager, and the
//! list merges by type, so neither removes or rewrites the other's.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    api::{DeleteParams, Patch, PatchParams, PostParams},
    Api, Client,
};
use serde_json::{json, Value};
use strait_api::{
    condition::find_condition,
    names::label::REMOTE_CLUSTER_ID,
    networking::{
        ClusterCidrs, ClusterNetwork, Configuration, ConfigurationSpec, GatewayServer,
        GatewayServerSpec, ServerEndpoint, ServiceType,
    },
};
use strait_network::{
    configuration_controller,
    ipam::{parse_cidr, Allocator},
    ipam_controller,
    route_controller::{self, EndpointSource, Settings, ROUTES_READY},
};
use strait_testkit::{eventually, TestCluster};

const STEP: Duration = Duration::from_secs(20);
const NS: &str = "strait-tenant-cluster-b";

fn list(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn setup(client: &Client) {
    let mut ns = Namespace::default();
    ns.metadata.name = Some(NS.to_owned());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    let mut config = Configuration::new(
        "cluster-b",
        ConfigurationSpec {
            local: None,
            remote: ClusterNetwork {
                cidr: ClusterCidrs {
                    pod: list(&["10.244.0.0/16"]),
                    external: Vec::new(),
                },
            },
        },
    );
    config.metadata.labels = Some([(REMOTE_CLUSTER_ID.to_owned(), "cluster-b".to_owned())].into());
    Api::<Configuration>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &config)
        .await
        .expect("Configuration");
    let mut gateway = GatewayServer::new(
        "gw-b",
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
    gateway.metadata.labels = Some([(REMOTE_CLUSTER_ID.to_owned(), "cluster-b".to_owned())].into());
    let gateways = Api::<GatewayServer>::namespaced(client.clone(), NS);
    gateways
        .create(&PostParams::default(), &gateway)
        .await
        .expect("GatewayServer");
    let patch = json!({
        "apiVersion": "networking.strait.dev/v1beta1",
        "kind": "GatewayServer",
        "status": { "internalEndpoint": { "ips": ["198.18.0.2"] } },
    });
    gateways
        .patch_status(
            "gw-b",
            &PatchParams::apply("test-gateway").force(),
            &Patch::Apply(&patch),
        )
        .await
        .expect("status.internalEndpoint");
}

/// `(type, status, reason)` of every condition, in order.
async fn conditions(api: &Api<Configuration>) -> Vec<(String, String, String)> {
    let Ok(config) = api.get("cluster-b").await else {
        return Vec::new();
    };
    config
        .status
        .map(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_, format!("{:?}", c.status), c.reason))
        .collect()
}

fn triple(type_: &str, status: &str, reason: &str) -> (String, String, String) {
    (type_.into(), status.into(), reason.into())
}

/// The condition types `manager` owns in the status, from managedFields.
async fn owned_condition_types(api: &Api<Configuration>, manager: &str) -> Vec<String> {
    let config = api.get("cluster-b").await.expect("Configuration");
    let entry = config
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .find(|e| {
            e.manager.as_deref() == Some(manager) && e.subresource.as_deref() == Some("status")
        });
    let fields = entry
        .and_then(|e| e.fields_v1)
        .map(|f| f.0)
        .unwrap_or(Value::Null);
    fields
        .pointer("/f:status/f:conditions")
        .and_then(Value::as_object)
        .map(|items| {
            items
                .keys()
                .filter_map(|k| k.strip_prefix("k:"))
                .filter_map(|k| serde_json::from_str::<Value>(k).ok())
                .filter_map(|k| k.get("type").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_controller_owns_its_conditions_and_keeps_the_others() {
    let cluster = TestCluster::start("conditions")
        .await
        .expect("test cluster");
    let client = cluster.client();
    setup(&client).await;
    let net = |s: &str| parse_cidr(s).expect("test CIDR");
    let allocator = Allocator::new(vec![net("10.244.0.0/16")], vec![net("10.64.0.0/10")]);
    let ipam = tokio::spawn(ipam_controller::run(client.clone(), allocator));
    let configurations = tokio::spawn(configuration_controller::run(client.clone()));
    let routes = tokio::spawn(route_controller::run(
        client.clone(),
        Settings {
            node_vni: 4096,
            first_peer_vni: 4097,
            endpoints: EndpointSource::Fixed(Vec::new()),
        },
    ));
    let api: Api<Configuration> = Api::namespaced(client.clone(), NS);

    eventually("Ready and RoutesReady side by side", STEP, || async {
        let all = conditions(&api).await;
        all.contains(&triple("Ready", "True", "Rendered"))
            && all.contains(&triple(ROUTES_READY, "True", "Routed"))
    })
    .await;
    assert_eq!(
        owned_condition_types(&api, configuration_controller::FIELD_MANAGER).await,
        ["Ready"],
        "the Configuration controller owns Ready only"
    );
    assert_eq!(
        owned_condition_types(&api, route_controller::FIELD_MANAGER).await,
        [ROUTES_READY],
        "the route controller owns RoutesReady only"
    );
    let ready_since = api
        .get("cluster-b")
        .await
        .ok()
        .and_then(|c| find_condition(&c.status?.conditions, "Ready").cloned())
        .map(|c| c.last_transition_time)
        .expect("Ready");

    // RoutesReady changes many times; Ready stays as it was.
    let gateways = Api::<GatewayServer>::namespaced(client.clone(), NS);
    gateways
        .delete("gw-b", &DeleteParams::default())
        .await
        .expect("delete gateway");
    eventually(
        "RoutesReady WaitingForGateway, Ready kept",
        STEP,
        || async {
            let all = conditions(&api).await;
            all.contains(&triple(ROUTES_READY, "False", "WaitingForGateway"))
                && all.contains(&triple("Ready", "True", "Rendered"))
        },
    )
    .await;
    let ready = api
        .get("cluster-b")
        .await
        .ok()
        .and_then(|c| find_condition(&c.status?.conditions, "Ready").cloned())
        .expect("Ready");
    assert_eq!(ready.last_transition_time, ready_since, "Ready untouched");

    // The Configuration controller rewrites its status (a label change
    // wakes it): RoutesReady stays.
    let relabel = json!({"metadata": {"labels": {"touched": "yes"}}});
    api.patch(
        "cluster-b",
        &PatchParams::default(),
        &Patch::Merge(&relabel),
    )
    .await
    .expect("relabel");
    routes.abort();
    // The route controller gone, its condition withdrawn under its manager:
    // only that item leaves.
    let withdraw = json!({
        "apiVersion": "networking.strait.dev/v1beta1",
        "kind": "Configuration",
        "status": { "conditions": [] },
    });
    api.patch_status(
        "cluster-b",
        &PatchParams::apply(route_controller::FIELD_MANAGER).force(),
        &Patch::Apply(&withdraw),
    )
    .await
    .expect("withdraw RoutesReady");
    let left = conditions(&api).await;
    assert_eq!(left, [triple("Ready", "True", "Rendered")], "{left:?}");
    configurations.abort();
    ipam.abort();
}
