//! The chart's offloading parts against the code: the controller's and the
//! virtual kubelet's RBAC grant exactly what `strait_offloading::rbac` lists
//! (what their calls need, no more), and the virtual kubelet template runs
//! the binary with the arguments the controller renders for it.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use strait_api::{offloading::VirtualNode, rbac::Rule};
use strait_chart_tests::{expand_placeholders, find, Helm, NAMESPACE};
use strait_offloading::{
    kubelet::{render_deployment, KubeletSettings},
    rbac,
};

type Rights = BTreeSet<rbac::Right>;

fn offloading_only_objects() -> Vec<Value> {
    let helm = Helm::locate().unwrap_or_else(|e| panic!("{e}"));
    let values = json!({"network": {"enabled": false}, "authentication": {"enabled": false}});
    helm.render(&values)
        .and_then(|r| r.objects())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Every right a rendered Role or ClusterRole grants, as `rbac::rights`
/// spells them.
fn granted(role: &Value) -> Rights {
    let mut rights = Rights::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
        let strings = |key: &str| -> Vec<String> {
            rule[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        };
        let mut names = strings("resourceNames");
        names.sort_unstable();
        let names = names.join(",");
        for group in strings("apiGroups") {
            for resource in strings("resources") {
                for verb in strings("verbs") {
                    rights.insert((group.clone(), resource.clone(), verb, names.clone()));
                }
            }
        }
    }
    rights
}

fn assert_exactly(role: &Value, expected: &[Rule], what: &str) {
    let granted = granted(role);
    let needed = rbac::rights(expected);
    let missing: Vec<_> = needed.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&needed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: the chart misses {missing:?} and grants more than the code uses: {extra:?} \
         (strait_offloading::rbac lists what the code calls)"
    );
}

fn role<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    find(objects, kind, name).unwrap_or_else(|| panic!("{kind} {name} not rendered"))
}

#[test]
fn the_controller_and_the_virtual_kubelet_get_exactly_the_rights_their_calls_need() {
    let objects = offloading_only_objects();
    assert_exactly(
        role(&objects, "ClusterRole", "strait-controller-offloading"),
        rbac::CONTROLLER,
        "ClusterRole strait-controller-offloading",
    );
    assert_exactly(
        role(&objects, "ClusterRole", "strait-virtual-kubelet"),
        rbac::VIRTUAL_KUBELET,
        "ClusterRole strait-virtual-kubelet",
    );
    // The release namespace's Role is shared with the network module's
    // gateways: it must hold the Deployments the virtual kubelets run as.
    let workloads = granted(role(&objects, "Role", "strait-controller-workloads"));
    let needed = rbac::rights(rbac::CONTROLLER_IN_RELEASE_NAMESPACE);
    let missing: Vec<_> = needed.difference(&workloads).collect();
    assert!(
        missing.is_empty(),
        "Role strait-controller-workloads misses {missing:?}"
    );
    let bound = |kind: &str, name: &str, role_kind: &str, role_name: &str, account: &str| {
        let binding = role(&objects, kind, name);
        assert_eq!(binding["roleRef"]["kind"], role_kind, "{name}");
        assert_eq!(binding["roleRef"]["name"], role_name, "{name}");
        assert!(
            binding["subjects"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| {
                    s["kind"] == "ServiceAccount"
                        && s["name"] == account
                        && s["namespace"] == NAMESPACE
                }),
            "{kind} {name} binds {account}: {}",
            binding["subjects"]
        );
    };
    bound(
        "ClusterRoleBinding",
        "strait-controller-offloading",
        "ClusterRole",
        "strait-controller-offloading",
        "strait-controller",
    );
    bound(
        "ClusterRoleBinding",
        "strait-virtual-kubelet",
        "ClusterRole",
        "strait-virtual-kubelet",
        "strait-virtual-kubelet",
    );
}

/// `--flag=value` and `--flag value` as a map (repeated flags keep the last).
fn flags(args: &[String]) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        let Some(flag) = arg.strip_prefix("--") else {
            panic!("{arg:?} is not a flag");
        };
        match flag.split_once('=') {
            Some((name, value)) => found.insert(name.to_owned(), value.to_owned()),
            None => {
                let value = match iter.peek() {
                    Some(next) if !next.starts_with("--") => iter.next().cloned(),
                    _ => None,
                };
                found.insert(flag.to_owned(), value.unwrap_or_default())
            }
        };
    }
    found
}

#[test]
fn the_virtual_kubelet_template_runs_the_arguments_the_controller_renders() {
    let objects = offloading_only_objects();
    let config = role(&objects, "ConfigMap", "strait-virtual-kubelet-template");
    let template = config["data"]["template.yaml"]
        .as_str()
        .expect("template.yaml");
    let filled = expand_placeholders(
        template,
        &[
            ("NAME", "cluster-b-gpu"),
            ("NAMESPACE", "strait-tenant-cluster-b"),
            ("NODE_NAME", "cluster-b-gpu"),
            ("REMOTE_CLUSTER_ID", "cluster-b"),
            ("LOCAL_CLUSTER_ID", "cluster-a"),
        ],
    );
    assert!(!filled.contains("${"), "a placeholder is left: {filled}");
    let deployment: Value = serde_norway::from_str(&filled).expect("template YAML");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let template_args: Vec<String> =
        serde_json::from_value(container["args"].clone()).expect("the container has args");

    let virtual_node: VirtualNode = serde_json::from_value(json!({
        "apiVersion": "offloading.strait.dev/v1beta1", "kind": "VirtualNode",
        "metadata": {"name": "cluster-b-gpu", "namespace": "strait-tenant-cluster-b"},
        "spec": {"clusterID": "cluster-b", "kubeconfigSecretRef": {"name": "cluster-b-kubeconfig"}},
    }))
    .expect("virtual node");
    let settings = KubeletSettings {
        local_cluster_id: "cluster-a".into(),
        ..KubeletSettings::default()
    };
    // The controller's rendering is the one the offloading tests run the
    // binary with (as child processes): it parses with the real flags.
    let controller_deployment = serde_json::to_value(
        render_deployment(
            &virtual_node,
            &settings,
            "image",
            "strait-virtual-kubelet",
            NAMESPACE,
        )
        .expect("the controller renders a Deployment"),
    )
    .expect("deployment JSON");
    let controller_container = &controller_deployment["spec"]["template"]["spec"]["containers"][0];
    let controller_args: Vec<String> =
        serde_json::from_value(controller_container["args"].clone()).expect("args");
    let rendered = flags(&controller_args);
    let template = flags(&template_args);
    for (flag, value) in &template {
        assert_eq!(
            rendered.get(flag),
            Some(value),
            "--{flag} in the chart's template is not what the controller passes"
        );
    }
    for required in [
        "virtual-node",
        "node-name",
        "local-cluster-id",
        "node-ip",
        "client-ca-file",
    ] {
        assert!(
            template.contains_key(required),
            "the chart's template does not pass --{required}: {template_args:?}"
        );
    }
    // The client CA file is the cluster's CA, mounted where both say.
    let template_pod = &deployment["spec"]["template"]["spec"];
    let controller_pod = &controller_deployment["spec"]["template"]["spec"];
    assert_eq!(
        template_pod["volumes"], controller_pod["volumes"],
        "volumes"
    );
    assert_eq!(
        template_pod["volumes"][0]["configMap"]["name"], "kube-root-ca.crt",
        "the cluster CA's ConfigMap is mounted"
    );
    assert_eq!(
        container["volumeMounts"], controller_container["volumeMounts"],
        "volume mounts"
    );
    // --node-ip $(POD_IP) is expanded by the kubelet from this variable.
    assert!(
        container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["name"] == "POD_IP"),
        "POD_IP is set"
    );
}
