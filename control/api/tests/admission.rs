//! Every example is admitted; every rule refuses what it should, with a
//! message a person understands. Rules run in a real CEL interpreter.

mod support;

use serde_json::{json, Value};
use strait_api::admission::admit;
use support::{crd, example, examples, merge_patch};

const KINDS: [&str; 19] = [
    "ForeignCluster",
    "Tenant",
    "Identity",
    "ResourceSlice",
    "Configuration",
    "GatewayServer",
    "GatewayClient",
    "PublicKey",
    "Connection",
    "InternalNode",
    "RouteConfiguration",
    "NatConfiguration",
    "Network",
    "IP",
    "VirtualNode",
    "NamespaceOffloading",
    "ShadowPod",
    "ShadowEndpointSlice",
    "NamespaceMap",
];

#[test]
fn every_kind_has_an_example_and_every_example_is_admitted() {
    let examples = examples();
    for kind in KINDS {
        let docs = examples
            .get(kind)
            .unwrap_or_else(|| panic!("examples/ has no {kind}"));
        for doc in docs {
            if let Err(rejected) = admit(&crd(kind), doc, None) {
                panic!("example refused: {rejected}");
            }
        }
    }
    assert_eq!(
        examples.len(),
        KINDS.len(),
        "examples of unknown kinds: {:?}",
        examples.keys()
    );
    assert_eq!(strait_api::crds().len(), KINDS.len());
}

/// (kind, merge patch onto the kind's example, text the refusal must contain)
const INVALID: &[(&str, &str, &str)] = &[
    (
        "ForeignCluster",
        r#"{"spec":{"clusterID":"Cluster_B"}}"#,
        "spec.clusterID: Invalid value",
    ),
    (
        "ForeignCluster",
        r#"{"spec":{"clusterID":null}}"#,
        "spec.clusterID: Required value",
    ),
    (
        "ForeignCluster",
        r#"{"spec":{"modules":{"network":"yes"}}}"#,
        "spec.modules.network: Invalid value: \"yes\": must be of type boolean",
    ),
    (
        "ForeignCluster",
        r#"{"metadata":{"namespace":"default"}}"#,
        "not allowed on a cluster-scoped kind",
    ),
    (
        "ForeignCluster",
        r#"{"spec":{"peering":true}}"#,
        "spec.peering: unknown field",
    ),
    (
        "Tenant",
        r#"{"spec":{"tenantCondition":"Paused"}}"#,
        "supported values: \"Active\", \"Cordoned\", \"Drained\"",
    ),
    (
        "Tenant",
        r#"{"spec":{"csr":""}}"#,
        "spec.csr: Invalid value: should have at least 1 characters",
    ),
    (
        "Tenant",
        r#"{"spec":{"signature":null}}"#,
        "spec.signature: Required value",
    ),
    (
        "Identity",
        r#"{"spec":{"type":"Admin"}}"#,
        "supported values: \"ControlPlane\", \"ResourceSlice\"",
    ),
    (
        "Identity",
        r#"{"spec":{"authParams":{"apiServer":{"address":"cluster-b:6443"}}}}"#,
        "apiServer.address must be an http(s) URL",
    ),
    (
        "Identity",
        r#"{"spec":{"authParams":{"proxyURL":"ftp://proxy"}}}"#,
        "proxyURL must be an http(s) URL",
    ),
    (
        "Identity",
        r#"{"spec":{"namespace":null}}"#,
        "spec.namespace: Required value",
    ),
    (
        "ResourceSlice",
        r#"{"spec":{"resources":{"cpu":"-2"}}}"#,
        "every amount in resources must be a quantity of zero or more",
    ),
    (
        "ResourceSlice",
        r#"{"spec":{"resources":{"memory":"lots"}}}"#,
        "every amount in resources must be a quantity of zero or more",
    ),
    (
        "ResourceSlice",
        r#"{"spec":{"providerClusterID":"-b"}}"#,
        "spec.providerClusterID: Invalid value",
    ),
    (
        "ResourceSlice",
        r#"{"spec":{"class":"GPU!"}}"#,
        "spec.class: Invalid value",
    ),
    (
        "Configuration",
        r#"{"spec":{"remote":{"cidr":{"pod":["10.244.0.0/33"]}}}}"#,
        "pod must list CIDRs such as 10.0.0.0/16",
    ),
    (
        "Configuration",
        r#"{"spec":{"remote":{"cidr":{"pod":["10.244.0.0/16","10.245.0.0/16"]}}}}"#,
        "at most one IPv4 and one IPv6",
    ),
    (
        "Configuration",
        r#"{"spec":{"remote":{"cidr":{"pod":[]}}}}"#,
        "spec.remote.cidr.pod: Invalid value: should have at least 1 items",
    ),
    (
        "Configuration",
        r#"{"spec":{"local":{"cidr":{"external":["a","b","c"]}}}}"#,
        "Too many: 3: must have at most 2 items",
    ),
    (
        "GatewayServer",
        r#"{"spec":{"mtu":9001}}"#,
        "spec.mtu: Invalid value: 9001: should be less than or equal to 9000",
    ),
    (
        "GatewayServer",
        r#"{"spec":{"mtu":576}}"#,
        "should be greater than or equal to 1280",
    ),
    (
        "GatewayServer",
        r#"{"spec":{"endpoint":{"port":70000}}}"#,
        "spec.endpoint.port: Invalid value: 70000",
    ),
    (
        "GatewayServer",
        r#"{"spec":{"endpoint":{"serviceType":"LoadBalancer"}}}"#,
        "nodePort can only be set when serviceType is NodePort",
    ),
    (
        "GatewayServer",
        r#"{"spec":{"endpoint":{"serviceType":"ExternalName"}}}"#,
        "supported values: \"ClusterIP\", \"NodePort\", \"LoadBalancer\"",
    ),
    (
        "GatewayClient",
        r#"{"spec":{"endpoint":{"addresses":[]}}}"#,
        "should have at least 1 items",
    ),
    (
        "GatewayClient",
        r#"{"spec":{"endpoint":{"addresses":["under_score.example"]}}}"#,
        "every entry of addresses must be an IP address or a DNS name",
    ),
    (
        "GatewayClient",
        r#"{"spec":{"endpoint":{"port":0}}}"#,
        "spec.endpoint.port: Invalid value: 0",
    ),
    (
        "GatewayClient",
        r#"{"spec":{"mtu":"1420"}}"#,
        "must be of type integer",
    ),
    (
        "PublicKey",
        r#"{"spec":{"publicKey":"not-a-key"}}"#,
        "spec.publicKey: Invalid value",
    ),
    (
        "PublicKey",
        r#"{"spec":{"publicKey":"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg"}}"#,
        "spec.publicKey: Invalid value",
    ),
    ("PublicKey", r#"{"spec":null}"#, "spec: Required value"),
    (
        "Connection",
        r#"{"spec":{"type":"Peer"}}"#,
        "supported values: \"Server\", \"Client\"",
    ),
    (
        "Connection",
        r#"{"spec":{"gatewayRef":{"kind":"Deployment"}}}"#,
        "gatewayRef must point to a GatewayServer or a GatewayClient",
    ),
    (
        "Connection",
        r#"{"spec":{"gatewayRef":{"name":""}}}"#,
        "spec.gatewayRef.name: Invalid value: should have at least 1 characters",
    ),
    (
        "InternalNode",
        r#"{"spec":{"endpoints":["192.168.10.300"]}}"#,
        "endpoints must list IP addresses",
    ),
    (
        "InternalNode",
        r#"{"spec":{"endpoints":["192.168.10.21","192.168.10.22"]}}"#,
        "at most one IPv4 and one IPv6",
    ),
    (
        "InternalNode",
        r#"{"spec":{"podCIDRs":["10.244.1.7"]}}"#,
        "podCIDRs must list CIDRs",
    ),
    (
        "RouteConfiguration",
        r#"{"spec":{"routes":[{"destinations":["10.71.0.0/16"],"gateways":["10.244.3.17"],"vni":0}]}}"#,
        "vni: Invalid value: 0",
    ),
    (
        "RouteConfiguration",
        r#"{"spec":{"routes":[{"destinations":["10.71.0.0/16"],"gateways":["10.244.3.17"],"vni":16777216}]}}"#,
        "should be less than or equal to 16777215",
    ),
    (
        "RouteConfiguration",
        r#"{"spec":{"routes":[{"destinations":["10.71.0.0/16"],"gateways":["10.244.3.17"],"vni":1},{"destinations":["10.71.0.0/16"],"gateways":["10.244.3.18"],"vni":2}]}}"#,
        "a destination CIDR may appear in one route only",
    ),
    (
        "RouteConfiguration",
        r#"{"spec":{"routes":[]}}"#,
        "spec.routes: Invalid value: should have at least 1 items",
    ),
    (
        "NatConfiguration",
        r#"{"spec":{"prefixes":[{"direction":"Destination","from":"10.71.0.0/16","to":"10.244.0.0/24"}]}}"#,
        "from and to must have the same IP family and prefix length",
    ),
    (
        "NatConfiguration",
        r#"{"spec":{"prefixes":[{"direction":"Destination","from":"10.71.0.0/16","to":"fd00:71::/16"}]}}"#,
        "from and to must have the same IP family and prefix length",
    ),
    (
        "NatConfiguration",
        r#"{"spec":{"prefixes":[{"direction":"Both","from":"10.71.0.0/16","to":"10.244.0.0/16"}]}}"#,
        "supported values: \"Destination\", \"Source\"",
    ),
    (
        "NatConfiguration",
        r#"{"spec":{"addresses":[{"remapped":"10.70.0.10","local":"fd00::5"}]}}"#,
        "remapped and local must be of the same IP family",
    ),
    (
        "NatConfiguration",
        r#"{"spec":{"addresses":[{"remapped":"10.70.0.x","local":"10.0.0.5"}]}}"#,
        "remapped must be an IP address",
    ),
    (
        "Network",
        r#"{"spec":{"cidrs":["10.244.0.0"]}}"#,
        "cidrs must list CIDRs",
    ),
    (
        "Network",
        r#"{"spec":{"cidrs":["fd00:1::/64","fd00:2::/64"]}}"#,
        "at most one IPv4 and one IPv6",
    ),
    (
        "Network",
        r#"{"spec":{"preAllocated":-1}}"#,
        "spec.preAllocated: Invalid value: -1",
    ),
    (
        "IP",
        r#"{"spec":{"ips":["300.1.1.1"]}}"#,
        "ips must list IP addresses",
    ),
    (
        "IP",
        r#"{"spec":{"ips":[]}}"#,
        "should have at least 1 items",
    ),
    (
        "IP",
        r#"{"spec":{"networkRef":{"kind":"Service"}}}"#,
        "networkRef must point to a Network",
    ),
    (
        "VirtualNode",
        r#"{"spec":{"resources":{"cpu":"-1"}}}"#,
        "every amount in resources must be a quantity of zero or more",
    ),
    (
        "VirtualNode",
        r#"{"spec":{"kubeconfigSecretRef":null}}"#,
        "spec.kubeconfigSecretRef: Required value",
    ),
    (
        "VirtualNode",
        r#"{"spec":{"clusterID":"cluster.b"}}"#,
        "spec.clusterID: Invalid value",
    ),
    (
        "VirtualNode",
        r#"{"spec":{"taints":[{"key":"k"}]}}"#,
        "spec.taints[0].effect: Required value",
    ),
    (
        "NamespaceOffloading",
        r#"{"metadata":{"name":"offload-ml"}}"#,
        "must be named offloading",
    ),
    (
        "NamespaceOffloading",
        r#"{"spec":{"remoteNamespaceName":null}}"#,
        "remoteNamespaceName is required with namespaceMappingStrategy SelectedName",
    ),
    (
        "NamespaceOffloading",
        r#"{"spec":{"namespaceMappingStrategy":"DefaultName"}}"#,
        "not allowed otherwise",
    ),
    (
        "NamespaceOffloading",
        r#"{"spec":{"podOffloadingStrategy":"Anywhere"}}"#,
        "supported values: \"Local\", \"Remote\", \"LocalAndRemote\"",
    ),
    (
        "ShadowPod",
        r#"{"spec":{"pod":{"containers":null}}}"#,
        "spec.pod.containers: Required value",
    ),
    (
        "ShadowPod",
        r#"{"spec":{"pod":{"containers":[{"image":"x"}]}}}"#,
        "spec.pod.containers[0].name: Required value",
    ),
    (
        "ShadowPod",
        r#"{"spec":{"pod":{"restartPolicy":7}}}"#,
        "spec.pod.restartPolicy: Invalid value: 7: must be of type string",
    ),
    (
        "ShadowEndpointSlice",
        r#"{"spec":{"template":{"addressType":"IPv5"}}}"#,
        "supported values: \"IPv4\", \"IPv6\", \"FQDN\"",
    ),
    (
        "ShadowEndpointSlice",
        r#"{"spec":{"template":{"endpoints":[{"conditions":{}}]}}}"#,
        "spec.template.endpoints[0].addresses: Required value",
    ),
    (
        "ShadowEndpointSlice",
        r#"{"spec":{"template":{"ports":[{"port":"http"}]}}}"#,
        "spec.template.ports[0].port: Invalid value: \"http\": must be of type integer",
    ),
    (
        "NamespaceMap",
        r#"{"spec":{"consumerClusterID":"Cluster_A"}}"#,
        "spec.consumerClusterID: Invalid value",
    ),
    (
        "NamespaceMap",
        r#"{"spec":{"desiredMapping":{"ml":7}}}"#,
        "must be of type string",
    ),
    (
        "NamespaceMap",
        r#"{"status":{"currentMapping":{"ml":{"remoteNamespace":"ml-a","phase":"Lost"}}}}"#,
        "supported values: \"Ready\", \"Failed\"",
    ),
];

#[test]
fn invalid_objects_are_refused_with_the_expected_message() {
    let mut failures = Vec::new();
    for (kind, patch, expected) in INVALID {
        let mut object = example(kind);
        merge_patch(
            &mut object,
            &serde_json::from_str(patch).expect("patch is JSON"),
        );
        match admit(&crd(kind), &object, None) {
            Ok(_) => failures.push(format!("{kind} {patch}: admitted, expected `{expected}`")),
            Err(rejected) if rejected.problems.iter().any(|p| p.contains(expected)) => {}
            Err(rejected) => failures.push(format!(
                "{kind} {patch}: expected `{expected}`, got {:?}",
                rejected.problems
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        INVALID.len(),
        failures.join("\n")
    );
}

#[test]
fn every_kind_has_at_least_three_invalid_cases() {
    for kind in KINDS {
        let cases = INVALID.iter().filter(|(k, _, _)| *k == kind).count();
        assert!(cases >= 3, "{kind} has {cases} invalid cases");
    }
}

/// (kind, merge patch applied as an update of the example, refusal text)
const IMMUTABLE: &[(&str, &str, &str)] = &[
    (
        "ForeignCluster",
        r#"{"spec":{"clusterID":"cluster-c"}}"#,
        "clusterID is immutable once set",
    ),
    (
        "Tenant",
        r#"{"spec":{"publicKey":"b3RoZXI="}}"#,
        "publicKey is immutable once set",
    ),
    (
        "Identity",
        r#"{"spec":{"type":"ResourceSlice"}}"#,
        "type is immutable once set",
    ),
    (
        "ResourceSlice",
        r#"{"spec":{"providerClusterID":"cluster-c"}}"#,
        "providerClusterID is immutable once set",
    ),
    (
        "Configuration",
        r#"{"spec":{"remote":{"cidr":{"pod":["10.245.0.0/16"]}}}}"#,
        "remote is immutable once set",
    ),
    (
        "Connection",
        r#"{"spec":{"type":"Server"}}"#,
        "type is immutable once set",
    ),
    (
        "Network",
        r#"{"spec":{"cidrs":["10.245.0.0/16"]}}"#,
        "cidrs is immutable once set",
    ),
    (
        "IP",
        r#"{"spec":{"ips":["192.168.10.6"]}}"#,
        "ips is immutable once set",
    ),
    (
        "VirtualNode",
        r#"{"spec":{"clusterID":"cluster-c"}}"#,
        "clusterID is immutable once set",
    ),
    (
        "NamespaceOffloading",
        r#"{"spec":{"remoteNamespaceName":"other"}}"#,
        "remoteNamespaceName is immutable once set",
    ),
    (
        "ShadowEndpointSlice",
        r#"{"spec":{"template":{"addressType":"IPv6"}}}"#,
        "addressType is immutable once set",
    ),
];

#[test]
fn immutable_fields_refuse_changes_but_allow_other_updates() {
    let mut failures = Vec::new();
    for (kind, patch, expected) in IMMUTABLE {
        let old = example(kind);
        // Creating the changed object is fine: only the update is refused.
        let mut new = old.clone();
        merge_patch(
            &mut new,
            &serde_json::from_str(patch).expect("patch is JSON"),
        );
        if let Err(rejected) = admit(&crd(kind), &new, None) {
            failures.push(format!("{kind} {patch}: refused on create: {rejected}"));
        }
        match admit(&crd(kind), &new, Some(&old)) {
            Ok(_) => failures.push(format!("{kind} {patch}: update admitted")),
            Err(r) if r.problems.iter().any(|p| p.contains(expected)) => {}
            Err(r) => failures.push(format!(
                "{kind} {patch}: expected `{expected}`, got {:?}",
                r.problems
            )),
        }
        // Re-applying the same object is always fine.
        if let Err(rejected) = admit(&crd(kind), &old, Some(&old)) {
            failures.push(format!("{kind}: no-op update refused: {rejected}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn allocations_in_status_are_settable_once_then_frozen() {
    let crd = crd("Network");
    let mut empty = example("Network");
    merge_patch(&mut empty, &json!({"status": {"cidrs": []}}));
    let mut allocated = empty.clone();
    merge_patch(
        &mut allocated,
        &json!({"status": {"cidrs": ["10.71.0.0/16", "fd00:71::/56"]}}),
    );
    admit(&crd, &allocated, Some(&empty)).expect("first allocation is allowed");
    let mut moved = allocated.clone();
    merge_patch(
        &mut moved,
        &json!({"status": {"cidrs": ["10.72.0.0/16", "fd00:71::/56"]}}),
    );
    let refused = admit(&crd, &moved, Some(&allocated)).expect_err("an allocation never moves");
    assert!(
        refused
            .problems
            .iter()
            .any(|p| p.contains("status.cidrs is immutable once set")),
        "{refused}"
    );
}

#[test]
fn defaults_are_applied_before_validation() {
    let mut minimal = example("GatewayClient");
    merge_patch(&mut minimal, &json!({"spec": {"mtu": null}}));
    let admitted = admit(&crd("GatewayClient"), &minimal, None).expect("mtu has a default");
    assert_eq!(admitted["spec"]["mtu"], Value::from(1420));
}
