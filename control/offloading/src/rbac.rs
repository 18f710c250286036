//! Every right the offloading module's own calls need in the cluster it
//! runs in, in one place: the chart's Roles are checked against these
//! lists (charts/tests), in both directions. Server-side apply that may
//! create an object needs create and patch; kube-runtime's finalizer helper
//! patches the object; a Controller lists and watches.
//!
//! Rights used on *another* cluster (through an Identity) are not here: the
//! tenant namespace's are `strait_api::rbac::OFFLOADING_IN_TENANT_NAMESPACE`,
//! the offloaded namespaces' are [`OFFLOADED_NAMESPACE`].

use strait_api::{names::group, rbac::Rule};

const fn rule(
    api_group: &'static str,
    resources: &'static [&'static str],
    verbs: &'static [&'static str],
) -> Rule {
    Rule {
        api_group,
        resources,
        verbs,
        resource_names: &[],
    }
}

const fn named(rule: Rule, resource_names: &'static [&'static str]) -> Rule {
    Rule {
        resource_names,
        ..rule
    }
}

/// strait-controller with `--offloading`, cluster-wide: the consumer side
/// (VirtualNodes, NamespaceOffloadings, pod placement) and the provider side
/// (NamespaceMaps, ShadowPods, ShadowEndpointSlices).
pub const CONTROLLER: &[Rule] = &[
    rule(
        group::OFFLOADING,
        &[
            "virtualnodes",
            "namespaceoffloadings",
            "namespacemaps",
            "shadowpods",
        ],
        &["list", "watch", "patch"],
    ),
    rule(
        group::OFFLOADING,
        &[
            "virtualnodes/status",
            "namespaceoffloadings/status",
            "namespacemaps/status",
            "shadowpods/status",
        ],
        &["patch"],
    ),
    rule(
        group::OFFLOADING,
        &["shadowendpointslices"],
        &["list", "watch"],
    ),
    // The tenant's grant, summed for its quota.
    rule(
        group::AUTHENTICATION,
        &["resourceslices"],
        &["list", "watch"],
    ),
    // Virtual nodes: read for status, deleted with their VirtualNode.
    rule("", &["nodes"], &["get", "list", "watch", "delete"]),
    rule("coordination.k8s.io", &["leases"], &["delete"]),
    // Pod placement (consumer), draining, and ShadowPods' real pods (provider).
    rule(
        "",
        &["pods"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    // Namespaces made for consumers, and which tenant a namespace is for.
    rule(
        "",
        &["namespaces"],
        &["get", "list", "watch", "create", "delete"],
    ),
    // The provider's kubeconfig Secret of a VirtualNode; the cluster ID.
    rule("", &["secrets", "configmaps"], &["get"]),
    rule(
        "discovery.k8s.io",
        &["endpointslices"],
        &["list", "watch", "create", "patch"],
    ),
    // Consumers' rights in the namespaces made for them: the ClusterRole
    // is applied (escalate: it grants what the controller does not hold)
    // and bound (bind) in each namespace to the tenant's subjects.
    rule("rbac.authorization.k8s.io", &["clusterroles"], &["create"]),
    named(
        rule(
            "rbac.authorization.k8s.io",
            &["clusterroles"],
            &["patch", "escalate", "bind"],
        ),
        &[crate::namespace_map_controller::OFFLOADED_NAMESPACE_ROLE],
    ),
    rule(
        "rbac.authorization.k8s.io",
        &["rolebindings"],
        &["list", "create", "patch"],
    ),
];

/// strait-controller with `--offloading`, in its own (release) namespace:
/// one virtual kubelet Deployment per VirtualNode.
pub const CONTROLLER_IN_RELEASE_NAMESPACE: &[Rule] = &[rule(
    "apps",
    &["deployments"],
    &["create", "patch", "delete"],
)];

/// strait-virtual-kubelet, on the consumer, cluster-wide.
pub const VIRTUAL_KUBELET: &[Rule] = &[
    rule(
        group::OFFLOADING,
        &["virtualnodes"],
        &["get", "list", "watch"],
    ),
    rule(
        group::OFFLOADING,
        &["namespaceoffloadings"],
        &["list", "watch"],
    ),
    // Capacity from the slice's grant.
    rule(group::AUTHENTICATION, &["resourceslices"], &["get"]),
    // Its Node and Lease (server-side apply), the Node's status.
    rule("", &["nodes"], &["create", "patch"]),
    rule("", &["nodes/status"], &["patch"]),
    rule("coordination.k8s.io", &["leases"], &["create", "patch"]),
    // Pods bound to it: status from the provider, deletion finished.
    rule("", &["pods"], &["list", "watch", "delete"]),
    rule("", &["pods/status"], &["patch"]),
    // Reflected kinds (and the kubeconfig Secret of its VirtualNode).
    rule("", &["secrets"], &["get", "list", "watch"]),
    rule(
        "",
        &[
            "configmaps",
            "services",
            "serviceaccounts",
            "persistentvolumeclaims",
        ],
        &["list", "watch"],
    ),
    rule("discovery.k8s.io", &["endpointslices"], &["list", "watch"]),
    // The provider's events, copied to the local pods.
    rule("", &["events"], &["create", "patch"]),
    // Authenticating and authorizing callers of its kubelet endpoint, as
    // a kubelet does (webhook mode).
    rule("authentication.k8s.io", &["tokenreviews"], &["create"]),
    rule(
        "authorization.k8s.io",
        &["subjectaccessreviews"],
        &["create"],
    ),
    // The network module's remap of its provider's pod CIDRs, when it runs.
    rule(group::NETWORKING, &["configurations"], &["list", "watch"]),
    // Tokens of offloaded pods' service accounts, bound to the pods, with
    // the namespace's root CA (kube-root-ca.crt) next to them.
    rule("", &["serviceaccounts/token"], &["create"]),
    rule("", &["configmaps"], &["get"]),
];

/// A consumer's rights in a namespace offloaded to this cluster (the
/// ClusterRole the NamespaceMap controller binds there): what its virtual
/// kubelets and its VirtualNode controller do in it through its Identity.
pub const OFFLOADED_NAMESPACE: &[Rule] = &[
    rule(
        group::OFFLOADING,
        &["shadowpods"],
        &["list", "watch", "create", "patch", "delete"],
    ),
    rule(
        group::OFFLOADING,
        &["shadowendpointslices"],
        &["get", "list", "create", "patch", "delete"],
    ),
    rule(
        "",
        &[
            "configmaps",
            "secrets",
            "services",
            "serviceaccounts",
            "persistentvolumeclaims",
        ],
        &["get", "list", "create", "patch", "delete"],
    ),
    rule("", &["events"], &["list", "watch"]),
    rule("", &["pods/log"], &["get"]),
    // kubectl exec / attach / port-forward relayed by the virtual kubelet
    // (websocket upgrades are authorized as get before 1.30, create after).
    rule(
        "",
        &["pods/exec", "pods/attach", "pods/portforward"],
        &["get", "create"],
    ),
];

/// One right: `(apiGroup, resource, verb, resourceNames joined by ",")`.
pub type Right = (String, String, String, String);

/// Every right in `rules`.
pub fn rights(rules: &[Rule]) -> std::collections::BTreeSet<Right> {
    rules
        .iter()
        .flat_map(|rule| {
            let mut names = rule.resource_names.to_vec();
            names.sort_unstable();
            let names = names.join(",");
            rule.resources.iter().flat_map(move |resource| {
                let names = names.clone();
                rule.verbs.iter().map(move |verb| {
                    (
                        rule.api_group.to_owned(),
                        (*resource).to_owned(),
                        (*verb).to_owned(),
                        names.clone(),
                    )
                })
            })
        })
        .collect()
}
