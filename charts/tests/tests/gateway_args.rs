//! The gateway Deployment the network controller renders from the chart's
//! templates runs `strait-gateway` with arguments its real command line
//! accepts, and with files where the controller's rendered `--config` says
//! they are: the template, the controller and the binary agree. Its `nat`
//! container runs the gateway's NAT agent the way the local supervisor does
//! (same interface, NatConfigurations and host name), and only that
//! container gets the API token, whose role grants what the agent calls.
use std::collections::BTreeMap;

use serde_json::{json, Value};
use strait_api::networking::{
    GatewayClient, GatewayClientSpec, GatewayServer, GatewayServerSpec, PublicEndpoint,
    ServerEndpoint, ServiceType,
};
use strait_chart_tests::{find, Helm};
use strait_network::gateway::{
    controller::{gateway_config, interface_name, placeholders, GatewayKind},
    in_cluster, nat_host, template,
};

const TENANT: &str = "strait-tenant-cluster-b";

fn server() -> GatewayServer {
    let mut server = GatewayServer::new(
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
    );
    server.metadata.namespace = Some(TENANT.to_owned());
    server
}

fn client() -> GatewayClient {
    let mut client = GatewayClient::new(
        "to-a",
        GatewayClientSpec {
            mtu: 1420,
            endpoint: PublicEndpoint {
                addresses: vec!["198.18.0.1".to_owned()],
                port: 51840,
            },
            secret_ref: Some(strait_api::SecretReference {
                name: "my-gateway-key".to_owned(),
                namespace: Some("strait".to_owned()),
            }),
            template_ref: None,
        },
    );
    client.metadata.namespace = Some(TENANT.to_owned());
    client
}

/// The gateway container of the Deployment the controller renders for
/// `gateway` from the chart's template ConfigMap `template_name`, and the
/// Deployment's pod spec.
fn rendered_pod<K: GatewayKind>(objects: &[Value], template_name: &str, gateway: &K) -> Value {
    let Some(configmap) = find(objects, "ConfigMap", template_name) else {
        panic!("no ConfigMap {template_name} in the chart")
    };
    let text = configmap["data"][template::TEMPLATE_KEY]
        .as_str()
        .unwrap_or_default();
    let name = kube::ResourceExt::name_any(gateway);
    let values = placeholders(gateway, TENANT, &name);
    let rendered = template::render(text, &values)
        .unwrap_or_else(|e| panic!("the controller cannot render {template_name}: {e}"));
    let Some(deployment) = rendered.iter().find(|o| o.gvk.kind == "Deployment") else {
        panic!("{template_name} renders no Deployment")
    };
    deployment.object.data["spec"]["template"]["spec"].clone()
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    let containers = pod["containers"].as_array();
    let Some(container) = containers.into_iter().flatten().find(|c| c["name"] == name) else {
        panic!("no container `{name}` in {pod}")
    };
    container
}

fn gateway_container(pod: &Value) -> &Value {
    container(pod, "gateway")
}

/// Where the API token is mounted in a container, if it is.
const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The `nat` container follows the gateway's peering on its interface,
/// reports as the host the controller reads, and alone holds the token.
fn check_nat<K: GatewayKind>(pod: &Value, template_name: &str, gateway: &K) {
    let name = kube::ResourceExt::name_any(gateway);
    let nat = container(pod, in_cluster::NAT_CONTAINER);
    assert!(
        nat["image"]
            .as_str()
            .is_some_and(|i| i.contains("/strait-fabric:")),
        "{template_name}: the nat container runs {}",
        nat["image"]
    );
    let args = args(nat);
    let interface = interface_name(TENANT, &name);
    let remote = kube::ResourceExt::labels(gateway)
        .get("strait.dev/remote-cluster-id")
        .map(|r| format!("strait.dev/remote-cluster-id={r}"))
        .unwrap_or_default();
    for wanted in [
        "nat".to_owned(),
        "run".to_owned(),
        "--from-cluster".to_owned(),
        format!("--namespace={TENANT}"),
        format!("--iface={interface}"),
        format!("--host={}", nat_host(&name)),
        format!("--selector={remote}"),
    ] {
        assert!(
            args.contains(&wanted),
            "{template_name}: the nat container's args {args:?} lack {wanted}"
        );
    }
    let pin_dir = args
        .iter()
        .find_map(|a| a.strip_prefix("--pin-dir="))
        .unwrap_or_else(|| panic!("{template_name}: no --pin-dir in {args:?}"));
    assert!(
        pin_dir.ends_with(&format!("/{interface}")),
        "{template_name}: pins {pin_dir} are not per gateway"
    );
    let bpffs = volume_for(pod, nat, std::path::Path::new(pin_dir));
    assert!(bpffs.get("hostPath").is_some(), "{template_name}: {bpffs}");
    assert_eq!(pod["automountServiceAccountToken"], false);
    let token = volume_for(pod, nat, &std::path::Path::new(TOKEN_DIR).join("token"));
    assert!(
        token["projected"]["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s.get("serviceAccountToken").is_some()),
        "{template_name}: the nat container's token volume {token}"
    );
    let gateway_mounts = gateway_container(pod)["volumeMounts"].clone();
    assert!(
        gateway_mounts
            .as_array()
            .into_iter()
            .flatten()
            .all(|m| m["name"] != token["name"]),
        "{template_name}: the gateway container must not get the API token"
    );
}

fn args(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect()
}

/// The volume mounted at the deepest mount point holding `path`.
fn volume_for<'a>(pod: &'a Value, container: &Value, path: &std::path::Path) -> &'a Value {
    let mount = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["mountPath"].as_str().is_some_and(|p| path.starts_with(p)))
        .max_by_key(|m| m["mountPath"].as_str().map_or(0, str::len));
    let Some(mount) = mount else {
        panic!(
            "nothing is mounted where the gateway finds {}",
            path.display()
        )
    };
    let volume = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == mount["name"]);
    let Some(volume) = volume else {
        panic!("volume {} is mounted but not declared", mount["name"])
    };
    volume
}

fn check<K: GatewayKind>(objects: &[Value], template_name: &str, gateway: &K) {
    let name = kube::ResourceExt::name_any(gateway);
    let pod = rendered_pod(objects, template_name, gateway);
    check_nat(&pod, template_name, gateway);
    let container = gateway_container(&pod);
    let args = args(container);
    // The binary's own clap definition judges the arguments.
    let matches = strait_gateway::cli::command()
        .try_get_matches_from(std::iter::once("strait-gateway".to_owned()).chain(args.clone()))
        .unwrap_or_else(|e| panic!("strait-gateway refuses {template_name}'s args {args:?}:\n{e}"));
    let paths = in_cluster::pod_paths();
    assert_eq!(
        matches.get_one::<std::path::PathBuf>("config"),
        Some(&paths.config),
        "{template_name}: --config is not where the controller's ConfigMap is mounted"
    );
    assert_eq!(
        matches.get_one::<std::path::PathBuf>("status_file"),
        Some(&paths.status),
        "{template_name}: --status-file"
    );
    // The files of the rendered --config are where the template mounts them.
    let config_volume = volume_for(&pod, container, &paths.config);
    assert_eq!(
        config_volume["configMap"]["name"].as_str(),
        Some(in_cluster::config_map_name(&name).as_str()),
        "{template_name}: the config volume"
    );
    assert_eq!(volume_for(&pod, container, &paths.peer_key), config_volume);
    let key_volume = volume_for(&pod, container, &paths.private_key);
    let wanted_secret = match gateway.secret_ref() {
        Some(secret) => secret.name.clone(),
        None => in_cluster::generated_key_secret_name(&name),
    };
    assert_eq!(
        key_volume["secret"]["secretName"].as_str(),
        Some(wanted_secret.as_str()),
        "{template_name}: the key volume"
    );
    let run_volume = volume_for(&pod, container, &paths.status);
    assert!(run_volume.get("emptyDir").is_some(), "{run_volume}");
    assert_eq!(volume_for(&pod, container, &paths.public_key), run_volume);
    // And the binary accepts the --config the controller renders for it.
    let mut config = gateway_config(
        gateway,
        &paths.peer_key,
        &paths.public_key,
        Default::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    config.private_key_file = Some(paths.private_key.clone());
    let yaml = serde_norway::to_string(&config).unwrap_or_else(|e| panic!("{e}"));
    let parsed: strait_gateway::GatewayConfig =
        serde_norway::from_str(&yaml).unwrap_or_else(|e| panic!("{e}: {yaml}"));
    parsed
        .plan()
        .unwrap_or_else(|e| panic!("strait-gateway refuses the rendered config {yaml}: {e}"));
}

#[test]
fn the_rendered_gateways_run_strait_gateway_with_arguments_it_accepts() {
    let helm = Helm::locate().unwrap_or_else(|e| panic!("{e}"));
    for values in [
        json!({}),
        json!({"network": {"gateway": {"serviceType": "NodePort"}}}),
    ] {
        let objects = helm
            .render(&values)
            .and_then(|r| r.objects())
            .unwrap_or_else(|e| panic!("{values}: {e}"));
        check(&objects, template::SERVER_TEMPLATE, &server());
        check(&objects, template::CLIENT_TEMPLATE, &client());
    }
}

#[test]
fn the_gateway_nat_agent_role_grants_exactly_what_the_agent_calls() {
    let helm = Helm::locate().unwrap_or_else(|e| panic!("{e}"));
    let objects = helm
        .render(&json!({}))
        .and_then(|r| r.objects())
        .unwrap_or_else(|e| panic!("{e}"));
    let Some(role) = find(&objects, "ClusterRole", "strait-gateway-nat") else {
        panic!("no ClusterRole strait-gateway-nat")
    };
    let mut granted = std::collections::BTreeSet::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
        let list = |key: &str| -> Vec<String> {
            serde_json::from_value(rule[key].clone()).unwrap_or_default()
        };
        assert!(list("resourceNames").is_empty(), "{rule}");
        for group in list("apiGroups") {
            for resource in list("resources") {
                for verb in list("verbs") {
                    granted.insert((group.clone(), resource.clone(), verb, String::new()));
                }
            }
        }
    }
    assert_eq!(
        granted,
        strait_offloading::rbac::rights(strait_dataplane::nat::follow::RBAC),
        "ClusterRole strait-gateway-nat against strait_dataplane::nat::follow::RBAC"
    );
    let Some(binding) = find(&objects, "ClusterRoleBinding", "strait-gateway-nat") else {
        panic!("no ClusterRoleBinding strait-gateway-nat")
    };
    assert_eq!(binding["roleRef"]["name"], "strait-gateway-nat");
    assert_eq!(binding["subjects"][0]["name"], "strait-gateway");
}

#[test]
fn the_check_catches_an_argument_the_binary_does_not_have() {
    // The arguments the chart once passed: the same check refuses them.
    let old: BTreeMap<&str, &str> =
        BTreeMap::from([("--mode", "server"), ("--listen-port", "51840")]);
    for (flag, value) in old {
        let result = strait_gateway::cli::command().try_get_matches_from([
            "strait-gateway",
            "--config=/etc/strait-gateway/config/config.yaml",
            &format!("{flag}={value}"),
        ]);
        assert!(result.is_err(), "{flag} accepted");
    }
}
