//! The chart's RBAC is enough and no more: its Roles and bindings, admitted
//! into a test control plane with RBAC on, let the real network controllers
//! do their whole job as the strait-controller ServiceAccount, and refuse
//! what a component has no business doing.
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Secret};
use kube::{
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
    Api, Client,
};
use serde_json::{json, Value};
use strait_api::{
    condition::is_condition_true,
    networking::{
        ClusterCidrs, ClusterNetwork, Configuration, ConfigurationSpec, GatewayServer,
        InternalNode, NatConfiguration, RouteConfiguration,
    },
};
use strait_chart_tests::{Helm, NAMESPACE};
use strait_network::{
    configuration_controller, internal_node_controller,
    ipam::{parse_cidr, Allocator},
    ipam_controller, route_controller,
};
use strait_testkit::{eventually, Options, TestCluster};

const STEP: Duration = Duration::from_secs(20);
const TENANT: &str = "strait-tenant-cluster-b";

/// The chart rendered with the network module alone.
fn network_only_objects() -> Vec<Value> {
    let helm = Helm::locate().unwrap_or_else(|e| panic!("{e}"));
    let values = json!({"authentication": {"enabled": false}, "offloading": {"enabled": false}});
    helm.render(&values)
        .and_then(|r| r.objects())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Creates the chart's RBAC objects (and ServiceAccounts) as the admin.
async fn admit_rbac(client: &Client, objects: &[Value]) {
    for object in objects {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let plural = match kind {
            "ClusterRole" => "clusterroles",
            "ClusterRoleBinding" => "clusterrolebindings",
            "Role" => "roles",
            "RoleBinding" => "rolebindings",
            "ServiceAccount" => "serviceaccounts",
            _ => continue,
        };
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let typed: DynamicObject = serde_json::from_value(object.clone()).expect("object");
        api.create(&PostParams::default(), &typed)
            .await
            .unwrap_or_else(|e| panic!("admitting {kind} {}: {e}", object["metadata"]["name"]));
    }
}

async fn create_namespace(client: &Client, name: &str) {
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.to_owned());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
}

fn service_account(name: &str) -> String {
    format!("system:serviceaccount:{NAMESPACE}:{name}")
}

/// Whether the API server answered 403 Forbidden.
fn refused<T>(result: Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == 403)
}

const SA_GROUPS: &[&str] = &["system:serviceaccounts", "system:authenticated"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_module_runs_on_the_chart_rbac_and_nothing_more() {
    let cluster = TestCluster::start_with(
        "chart-rbac",
        Options {
            tls: true,
            ..Options::default()
        },
    )
    .await
    .expect("test cluster");
    let admin = cluster.client();
    create_namespace(&admin, NAMESPACE).await;
    create_namespace(&admin, TENANT).await;
    admit_rbac(&admin, &network_only_objects()).await;

    let controller = cluster
        .client_as(&service_account("strait-controller"), SA_GROUPS)
        .await
        .expect("controller client");
    let net = |s: &str| parse_cidr(s).expect("test CIDR");
    let allocator = Allocator::new(vec![net("10.244.0.0/16")], vec![net("10.64.0.0/10")]);
    let tasks = [
        tokio::spawn(async move {
            let _ = ipam_controller::run(controller.clone(), allocator).await;
        }),
        tokio::spawn(configuration_controller::run(
            cluster
                .client_as(&service_account("strait-controller"), SA_GROUPS)
                .await
                .expect("controller client"),
        )),
        tokio::spawn(internal_node_controller::run(
            cluster
                .client_as(&service_account("strait-controller"), SA_GROUPS)
                .await
                .expect("controller client"),
        )),
        tokio::spawn(route_controller::run(
            cluster
                .client_as(&service_account("strait-controller"), SA_GROUPS)
                .await
                .expect("controller client"),
            route_controller::Settings {
                endpoints: route_controller::EndpointSource::Fixed(vec!["198.18.0.2"
                    .parse()
                    .expect("address")]),
                ..route_controller::Settings::default()
            },
        )),
    ];

    // A peer with our own pod CIDR: IPAM remaps it, the NAT is rendered.
    let configuration = Configuration::new(
        "cluster-b",
        ConfigurationSpec {
            local: None,
            remote: ClusterNetwork {
                cidr: ClusterCidrs {
                    pod: vec!["10.244.0.0/16".to_owned()],
                    external: vec![],
                },
            },
        },
    );
    let configurations: Api<Configuration> = Api::namespaced(admin.clone(), TENANT);
    configurations
        .create(&PostParams::default(), &configuration)
        .await
        .expect("Configuration");
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-1"},
        "spec": {"podCIDRs": ["10.244.1.0/24"]},
    }))
    .expect("node");
    let nodes: Api<Node> = Api::all(admin.clone());
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("Node");
    // The kubelet reports addresses in the status.
    let status =
        json!({"status": {"addresses": [{"type": "InternalIP", "address": "198.18.0.11"}]}});
    nodes
        .patch_status("node-1", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("Node status");

    eventually(
        "Configuration Ready as the controller's ServiceAccount",
        STEP,
        || async {
            configurations
                .get_opt("cluster-b")
                .await
                .ok()
                .flatten()
                .and_then(|c| c.status)
                .is_some_and(|s| is_condition_true(&s.conditions, "Ready"))
        },
    )
    .await;
    let nat: Api<NatConfiguration> = Api::namespaced(admin.clone(), TENANT);
    assert!(nat
        .get_opt("cluster-b-gateway")
        .await
        .expect("get")
        .is_some());
    // Its gateway gets an internal endpoint, the nodes their routes.
    let gateway: GatewayServer = serde_json::from_value(json!({
        "apiVersion": "networking.strait.dev/v1beta1", "kind": "GatewayServer",
        "metadata": {"name": "gw-b"},
        "spec": {"endpoint": {"port": 51820}},
    }))
    .expect("gateway");
    Api::<GatewayServer>::namespaced(admin.clone(), TENANT)
        .create(&PostParams::default(), &gateway)
        .await
        .expect("GatewayServer");
    let routes: Api<RouteConfiguration> = Api::namespaced(admin.clone(), TENANT);
    eventually("RouteConfiguration cluster-b", STEP, || async {
        routes
            .get_opt("cluster-b")
            .await
            .ok()
            .flatten()
            .is_some_and(|r| r.spec.routes.iter().all(|r| r.gateways == ["198.18.0.2"]))
    })
    .await;
    let internal_nodes: Api<InternalNode> = Api::all(admin.clone());
    eventually("InternalNode for node-1", STEP, || async {
        internal_nodes
            .get_opt("node-1")
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    for task in tasks {
        task.abort();
    }
    // Leader election on the chart's Lease role.
    let mut election = strait_controller::leader::LeaderElection::new(
        cluster
            .client_as(&service_account("strait-controller"), SA_GROUPS)
            .await
            .expect("controller client"),
        NAMESPACE,
        "strait-controller",
        "strait-controller-0",
        strait_controller::leader::Timing::default(),
    );
    assert!(election
        .try_acquire_or_renew()
        .await
        .expect("create the Lease"));
    assert!(election
        .try_acquire_or_renew()
        .await
        .expect("renew the Lease"));

    // Least privilege: what the components never do is refused.
    let controller = cluster
        .client_as(&service_account("strait-controller"), SA_GROUPS)
        .await
        .expect("client");
    assert!(
        refused(
            Api::<Secret>::namespaced(controller.clone(), "kube-system")
                .list(&Default::default())
                .await
        ),
        "the network module's controller must not read Secrets"
    );
    assert!(
        refused(
            Api::<Node>::all(controller.clone())
                .delete("node-1", &Default::default())
                .await
        ),
        "the controller must not delete Nodes"
    );
    let fabric = cluster
        .client_as(&service_account("strait-fabric"), SA_GROUPS)
        .await
        .expect("client");
    let fabric_nodes: Api<InternalNode> = Api::all(fabric);
    assert!(fabric_nodes
        .get_opt("node-1")
        .await
        .expect("fabric reads")
        .is_some());
    assert!(
        refused(fabric_nodes.delete("node-1", &Default::default()).await),
        "the fabric only reads"
    );
    let nobody = cluster
        .client_as("system:serviceaccount:default:default", SA_GROUPS)
        .await
        .expect("client");
    assert!(
        refused(
            Api::<Configuration>::all(nobody)
                .list(&Default::default())
                .await
        ),
        "a ServiceAccount the chart did not bind gets nothing"
    );
}

/// The gateway controllers in a cluster, as the chart's controller
/// ServiceAccount and from the chart's own templates: they render each
/// gateway's Deployment (and a server's Service), its --config ConfigMap
/// and key Secret, publish its key, and remove it all again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_controllers_deploy_from_the_chart_templates_on_the_chart_rbac() {
    use k8s_openapi::api::core::v1::{ConfigMap, Service};
    use kube::api::DeleteParams;
    use strait_api::networking::{
        GatewayClient, GatewayClientSpec, GatewayServer, GatewayServerSpec, PublicEndpoint,
        PublicKey, ServerEndpoint, ServiceType,
    };
    use strait_network::gateway::{self, GatewayMode, Settings};

    let cluster = TestCluster::start_with(
        "chart-rbac-gateway",
        Options {
            tls: true,
            ..Options::default()
        },
    )
    .await
    .expect("test cluster");
    let admin = cluster.client();
    create_namespace(&admin, NAMESPACE).await;
    create_namespace(&admin, TENANT).await;
    let objects = network_only_objects();
    admit_rbac(&admin, &objects).await;
    // The chart's gateway templates, as helm installs them.
    let configmaps = Api::<ConfigMap>::namespaced(admin.clone(), NAMESPACE);
    for name in [
        gateway::template::SERVER_TEMPLATE,
        gateway::template::CLIENT_TEMPLATE,
    ] {
        let Some(object) = strait_chart_tests::find(&objects, "ConfigMap", name) else {
            panic!("the chart has no ConfigMap {name}")
        };
        let configmap: ConfigMap = serde_json::from_value(object.clone()).expect("ConfigMap");
        configmaps
            .create(&PostParams::default(), &configmap)
            .await
            .expect("template");
    }
    let controller = cluster
        .client_as(&service_account("strait-controller"), SA_GROUPS)
        .await
        .expect("controller client");
    let task = tokio::spawn(gateway::run(
        controller,
        Settings {
            mode: GatewayMode::Cluster {
                release_namespace: NAMESPACE.to_owned(),
            },
            cluster_id: None,
        },
    ));
    let servers = Api::<GatewayServer>::namespaced(admin.clone(), TENANT);
    servers
        .create(
            &PostParams::default(),
            &GatewayServer::new(
                "to-b",
                GatewayServerSpec {
                    mtu: 1420,
                    endpoint: ServerEndpoint {
                        port: 51840,
                        service_type: ServiceType::LoadBalancer,
                        node_port: None,
                        load_balancer_ips: Vec::new(),
                    },
                    secret_ref: None,
                    template_ref: None,
                },
            ),
        )
        .await
        .expect("GatewayServer");
    let clients = Api::<GatewayClient>::namespaced(admin.clone(), TENANT);
    clients
        .create(
            &PostParams::default(),
            &GatewayClient::new(
                "to-c",
                GatewayClientSpec {
                    mtu: 1420,
                    endpoint: PublicEndpoint {
                        addresses: vec!["198.18.0.1".to_owned()],
                        port: 51840,
                    },
                    secret_ref: None,
                    template_ref: None,
                },
            ),
        )
        .await
        .expect("GatewayClient");
    let deployed = |conditions: &[strait_api::Condition]| {
        strait_api::condition::find_condition(conditions, "Ready")
            .is_some_and(|c| c.reason == "Deployed")
    };
    eventually("both gateways Deployed", STEP, || async {
        let server = servers.get_opt("to-b").await.ok().flatten();
        let client = clients.get_opt("to-c").await.ok().flatten();
        server
            .and_then(|s| s.status)
            .is_some_and(|s| deployed(&s.conditions))
            && client
                .and_then(|c| c.status)
                .is_some_and(|s| deployed(&s.conditions))
    })
    .await;
    let deployments: Api<DynamicObject> = Api::namespaced_with(
        admin.clone(),
        NAMESPACE,
        &ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment")),
    );
    for name in ["gw-to-b", "gw-to-c"] {
        assert!(
            deployments.get_opt(name).await.expect("get").is_some(),
            "{name}"
        );
        let config = format!("{name}-config");
        assert!(
            configmaps.get_opt(&config).await.expect("get").is_some(),
            "{config}"
        );
        let key = format!("{name}-key");
        assert!(
            Api::<Secret>::namespaced(admin.clone(), NAMESPACE)
                .get_opt(&key)
                .await
                .expect("get")
                .is_some(),
            "{key}"
        );
    }
    let services = Api::<Service>::namespaced(admin.clone(), NAMESPACE);
    assert!(services.get_opt("gw-to-b").await.expect("get").is_some());
    let keys = Api::<PublicKey>::namespaced(admin.clone(), TENANT);
    assert!(keys.get_opt("local-to-b").await.expect("get").is_some());

    servers
        .delete("to-b", &DeleteParams::default())
        .await
        .expect("delete");
    clients
        .delete("to-c", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("everything removed", STEP, || async {
        deployments
            .get_opt("gw-to-b")
            .await
            .is_ok_and(|d| d.is_none())
            && deployments
                .get_opt("gw-to-c")
                .await
                .is_ok_and(|d| d.is_none())
            && services.get_opt("gw-to-b").await.is_ok_and(|s| s.is_none())
            && configmaps
                .get_opt("gw-to-b-config")
                .await
                .is_ok_and(|c| c.is_none())
            && Api::<Secret>::namespaced(admin.clone(), NAMESPACE)
                .get_opt("gw-to-c-key")
                .await
                .is_ok_and(|s| s.is_none())
            && keys.get_opt("local-to-b").await.is_ok_and(|k| k.is_none())
    })
    .await;
    task.abort();
}
