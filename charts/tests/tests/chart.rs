//! The chart rendered and linted by Helm's own library, for the default
//! values and each module alone; every object checked against the
//! Kubernetes types; the default render compared with a golden file; bad
//! values refused by values.schema.json.
//!
//! Update the golden file after an intended change:
//! `STRAIT_UPDATE_GOLDEN=1 cargo test -p strait-chart-tests --test chart`,
//! then review `git diff charts/tests/golden`.
use serde_json::{json, Value};
use strait_chart_tests::{expand_placeholders, find, validate_object, Error, Helm};

/// Values for each module alone, and for the defaults (all three).
fn module_cases() -> Vec<(&'static str, Value)> {
    let only = |module: &str| {
        let mut values = json!({
            "network": {"enabled": false},
            "authentication": {"enabled": false},
            "offloading": {"enabled": false},
        });
        values[module]["enabled"] = json!(true);
        values
    };
    vec![
        ("default", json!({})),
        ("network", only("network")),
        ("authentication", only("authentication")),
        ("offloading", only("offloading")),
        (
            "serviceMonitor",
            json!({"serviceMonitor": {"enabled": true}}),
        ),
    ]
}

fn helm() -> Helm {
    match Helm::locate() {
        Ok(helm) => helm,
        Err(e) => panic!("{e}"),
    }
}

fn render_objects(helm: &Helm, values: &Value) -> Vec<Value> {
    let rendered = helm
        .render(values)
        .unwrap_or_else(|e| panic!("rendering with {values}: {e}"));
    rendered
        .objects()
        .unwrap_or_else(|e| panic!("rendered YAML with {values}: {e}"))
}

#[test]
fn default_render_matches_the_golden_file() {
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/default.yaml");
    let stream = match helm().render(&json!({})) {
        Ok(rendered) => rendered.to_stream(),
        Err(e) => panic!("{e}"),
    };
    if std::env::var_os("STRAIT_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &stream).unwrap_or_else(|e| panic!("writing {golden:?}: {e}"));
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_default();
    assert!(
        stream == expected,
        "the default render differs from {}; if intended, run \
         STRAIT_UPDATE_GOLDEN=1 cargo test -p strait-chart-tests --test chart and review the diff",
        golden.display()
    );
}

#[test]
fn helm_lint_strict_finds_nothing_for_each_module_set() {
    let helm = helm();
    for (case, values) in module_cases() {
        let report = helm
            .lint(&values)
            .unwrap_or_else(|e| panic!("lint {case}: {e}"));
        let problems: Vec<_> = report
            .messages
            .iter()
            .filter(|m| m.severity >= 2)
            .map(|m| format!("{}: {}", m.path, m.error))
            .chain(report.errors.iter().cloned())
            .collect();
        assert!(problems.is_empty(), "lint {case}: {problems:#?}");
    }
}

#[test]
fn every_rendered_object_is_a_valid_kubernetes_object() {
    let helm = helm();
    for (case, values) in module_cases() {
        let objects = render_objects(&helm, &values);
        assert!(!objects.is_empty(), "{case}: nothing rendered");
        for object in &objects {
            if let Err(e) = validate_object(object) {
                panic!("{case}: {e}");
            }
        }
        // The workload templates held in ConfigMaps are objects too, once
        // the controller has filled them in.
        for object in objects.iter().filter(|o| {
            o["kind"] == "ConfigMap"
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-template"))
        }) {
            let template = object["data"]["template.yaml"].as_str().unwrap_or_default();
            let filled = expand_placeholders(
                template,
                &[
                    ("NAME", "cluster-b"),
                    ("NAMESPACE", "strait-tenant-cluster-b"),
                    ("REMOTE_CLUSTER_ID", "cluster-b"),
                    ("PORT", "51840"),
                    ("MTU", "1420"),
                    ("ENDPOINT", "198.18.0.1:51840"),
                    ("NODE_NAME", "strait-cluster-b"),
                    ("CONFIG_MAP", "gw-cluster-b-config"),
                    ("KEY_SECRET", "gw-cluster-b-key"),
                    ("INTERFACE", "stgw0123456789a"),
                    ("NAT_SELECTOR", "strait.dev/remote-cluster-id=cluster-b"),
                    ("LOCAL_CLUSTER_ID", "cluster-a"),
                ],
            );
            assert!(
                !filled.contains("${"),
                "{case}: unknown placeholder left in {filled}"
            );
            let rendered = strait_chart_tests::Rendered {
                manifests: [("template.yaml".to_owned(), filled)].into(),
            };
            let inner = rendered
                .objects()
                .unwrap_or_else(|e| panic!("{case}: {}: {e}", object["metadata"]["name"]));
            assert!(!inner.is_empty(), "{case}: empty template");
            for inner in &inner {
                if let Err(e) = validate_object(inner) {
                    panic!("{case}: in {}: {e}", object["metadata"]["name"]);
                }
            }
        }
    }
}

#[test]
fn each_module_adds_only_its_own_flag_and_permissions() {
    let helm = helm();
    let modules = ["network", "authentication", "offloading"];
    for (case, values) in module_cases()
        .into_iter()
        .filter(|(c, _)| modules.contains(c))
    {
        let objects = render_objects(&helm, &values);
        let Some(controller) = find(&objects, "Deployment", "strait-controller") else {
            panic!("{case}: no strait-controller Deployment");
        };
        let args: Vec<&str> = controller["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for module in modules {
            let flag = format!("--{module}");
            assert_eq!(
                args.contains(&flag.as_str()),
                module == case,
                "{case}: controller args {args:?} and {flag}"
            );
            let role = format!("strait-controller-{module}");
            assert_eq!(
                find(&objects, "ClusterRole", &role).is_some(),
                module == case,
                "{case}: ClusterRole {role}"
            );
        }
        assert_eq!(
            find(&objects, "DaemonSet", "strait-fabric").is_some(),
            case == "network",
            "{case}: the fabric belongs to the network module"
        );
        assert_eq!(
            find(&objects, "ConfigMap", "strait-virtual-kubelet-template").is_some(),
            case == "offloading",
            "{case}: the virtual kubelet belongs to the offloading module"
        );
        // No component is privileged; the fabric has only the capabilities it needs.
        for object in &objects {
            let pod = match object["kind"].as_str() {
                Some("Deployment" | "DaemonSet") => &object["spec"]["template"]["spec"],
                _ => continue,
            };
            for container in pod["containers"].as_array().into_iter().flatten() {
                let security = &container["securityContext"];
                assert_ne!(security["privileged"], true, "{case}: privileged container");
                assert_eq!(security["allowPrivilegeEscalation"], false, "{case}");
            }
        }
    }
    let objects = render_objects(&helm, &json!({}));
    let fabric =
        find(&objects, "DaemonSet", "strait-fabric").map(|d| &d["spec"]["template"]["spec"]);
    let Some(fabric) = fabric else {
        panic!("no fabric DaemonSet by default")
    };
    assert_eq!(fabric["hostNetwork"], true);
    assert_eq!(
        fabric["containers"][0]["securityContext"]["capabilities"]["add"],
        json!(["BPF", "PERFMON", "NET_ADMIN"])
    );
    assert_eq!(fabric["volumes"][0]["hostPath"]["path"], "/sys/fs/bpf");
}

#[test]
fn bad_values_are_refused_at_install_with_the_offending_key() {
    let helm = helm();
    let cases = [
        (
            json!({"network": {"gateway": {"mtu": 10}}}),
            "/network/gateway/mtu",
        ),
        (
            json!({"network": {"gateway": {"port": 70000}}}),
            "/network/gateway/port",
        ),
        (
            json!({"image": {"pullPolicy": "Sometimes"}}),
            "/image/pullPolicy",
        ),
        (json!({"netwrok": {"enabled": true}}), "netwrok"),
        (
            json!({"network": {"reservedCIDRs": ["10.0.0.0/33"]}}),
            "/network/reservedCIDRs/0",
        ),
        (
            json!({"network": {"remapPools": []}}),
            "/network/remapPools",
        ),
        (
            json!({"offloading": {"enabled": "yes"}}),
            "/offloading/enabled",
        ),
        (
            json!({"controller": {"replicas": 9}}),
            "/controller/replicas",
        ),
        (
            json!({"fabric": {"config": {"attachMode": "fast"}}}),
            "/fabric/config/attachMode",
        ),
        (
            json!({"network": {"enabled": false}, "authentication": {"enabled": false}, "offloading": {"enabled": false}}),
            "enable at least one module",
        ),
    ];
    for (values, expected) in cases {
        match helm.render(&values) {
            Err(Error::Refused(message)) => assert!(
                message.contains(expected),
                "{values}: refused, but the message does not name {expected:?}: {message}"
            ),
            Err(e) => panic!("{values}: {e}"),
            Ok(_) => panic!("{values}: accepted"),
        }
    }
}

#[test]
fn the_fabric_agent_accepts_the_config_the_chart_gives_it() {
    let helm = helm();
    let custom = json!({"fabric": {"config": {
        "underlay": "eth1",
        "encapInterfaces": ["cni0"],
        "localEndpoints": ["198.18.0.11"],
        "routes": [{"destinations": ["10.70.0.0/16"], "gateways": ["198.18.0.1"], "vni": 42}],
    }}});
    for values in [json!({}), custom] {
        let objects = render_objects(&helm, &values);
        let Some(configmap) = find(&objects, "ConfigMap", "strait-fabric") else {
            panic!("no strait-fabric ConfigMap")
        };
        let text = configmap["data"]["fabric.yaml"]
            .as_str()
            .unwrap_or_default();
        let config = strait_dataplane::fabric::FabricConfig::from_yaml(text)
            .unwrap_or_else(|e| panic!("strait-fabric refuses the chart's config {text}: {e}"));
        if let Err(e) = config.tables(1, 1500) {
            panic!("strait-fabric refuses the chart's config {text}: {e}");
        }
    }
}

#[test]
fn the_values_strait_install_writes_are_accepted_by_the_chart() {
    use strait_cli::cli::{InstallArgs, Module};
    let helm = helm();
    let cases = [
        (
            vec![Module::Network, Module::Authentication, Module::Offloading],
            vec![],
            vec![],
        ),
        (
            vec![Module::Network],
            vec!["10.42.0.0/16".to_owned(), "fd00:42::/56".to_owned()],
            vec!["10.64.0.0/10".to_owned(), "fd00:ffff::/32".to_owned()],
        ),
        (vec![Module::Offloading], vec![], vec![]),
    ];
    for (modules, reserved_cidrs, remap_pools) in cases {
        let args = InstallArgs {
            modules,
            reserved_cidrs,
            remap_pools,
            output: None,
            force: false,
        };
        let yaml = strait_cli::install::values(&args).unwrap_or_else(|e| panic!("{e}"));
        let values: Value = serde_norway::from_str(&yaml).unwrap_or_else(|e| panic!("{e}"));
        let objects = render_objects(&helm, &values);
        let Some(controller) = find(&objects, "Deployment", "strait-controller") else {
            panic!("no controller for {yaml}")
        };
        let args = controller["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
        for cidr in values["network"]["reservedCIDRs"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let flag = format!("--reserved-cidr={}", cidr.as_str().unwrap_or_default());
            assert!(args.contains(&flag), "{flag} not in {args}");
        }
    }
}
