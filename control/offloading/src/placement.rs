//! Which virtual nodes a NamespaceOffloading selects, and what its pod
//! offloading strategy adds to the pods of the namespace.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Toleration,
};
use kube::ResourceExt as _;
use strait_api::{
    names,
    offloading::{
        NamespaceMappingStrategy, NamespaceOffloadingSpec, PodOffloadingStrategy, VirtualNode,
    },
};

/// The labels of a virtual node's Node: the spec's, plus the type and the
/// provider's cluster ID (which cluster selectors can match on).
pub fn node_labels(virtual_node: &VirtualNode) -> BTreeMap<String, String> {
    let mut labels = virtual_node.spec.labels.clone();
    labels.insert(
        names::label::NODE_TYPE.to_owned(),
        names::label::NODE_TYPE_VIRTUAL.to_owned(),
    );
    labels.insert(
        names::label::REMOTE_CLUSTER_ID.to_owned(),
        virtual_node.spec.cluster_id.clone(),
    );
    labels.insert("kubernetes.io/hostname".to_owned(), virtual_node.name_any());
    labels
}

/// Whether `labels` satisfy a node selector (terms ORed, expressions ANDed);
/// no selector selects everything.
pub fn selects(selector: Option<&NodeSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    selector.node_selector_terms.iter().any(|term| {
        term.match_expressions
            .iter()
            .flatten()
            .all(|requirement| requirement_holds(requirement, labels))
    })
}

fn requirement_holds(
    requirement: &NodeSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> bool {
    let value = labels.get(&requirement.key);
    let values = requirement.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(|v| number(v)), values.first().and_then(|v| number(v))), (Some(a), Some(b)) if a > b)
        }
        "Lt" => {
            matches!((value.and_then(|v| number(v)), values.first().and_then(|v| number(v))), (Some(a), Some(b)) if a < b)
        }
        _ => false,
    }
}

/// The name the namespace gets on the providers.
pub fn remote_namespace_name(
    spec: &NamespaceOffloadingSpec,
    local_namespace: &str,
    local_cluster_id: &str,
) -> String {
    match spec.namespace_mapping_strategy {
        NamespaceMappingStrategy::EnforceSameName => local_namespace.to_owned(),
        NamespaceMappingStrategy::DefaultName => format!("{local_namespace}-{local_cluster_id}"),
        NamespaceMappingStrategy::SelectedName => spec
            .remote_namespace_name
            .clone()
            .unwrap_or_else(|| local_namespace.to_owned()),
    }
}

/// The toleration that lets a pod onto virtual nodes.
pub fn virtual_node_toleration() -> Toleration {
    Toleration {
        key: Some(names::VIRTUAL_NODE_TAINT.to_owned()),
        operator: Some("Exists".to_owned()),
        ..Toleration::default()
    }
}

/// What a namespace's strategy adds to its pods: a toleration of the
/// virtual-node taint (Remote, LocalAndRemote) and a required node affinity
/// (Remote: only selected virtual nodes; LocalAndRemote with a selector:
/// local nodes or selected virtual nodes). Local adds nothing: the taint
/// already keeps pods off virtual nodes.
pub fn pod_placement(spec: &NamespaceOffloadingSpec) -> (Option<Toleration>, Option<Affinity>) {
    let virtual_type = |operator: &str| NodeSelectorRequirement {
        key: names::label::NODE_TYPE.to_owned(),
        operator: operator.to_owned(),
        values: Some(vec![names::label::NODE_TYPE_VIRTUAL.to_owned()]),
    };
    let selected_virtual_terms = || -> Vec<NodeSelectorTerm> {
        let terms = spec
            .cluster_selector
            .as_ref()
            .map(|s| s.node_selector_terms.clone())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| vec![NodeSelectorTerm::default()]);
        terms
            .into_iter()
            .map(|mut term| {
                term.match_expressions
                    .get_or_insert_with(Vec::new)
                    .push(virtual_type("In"));
                term
            })
            .collect()
    };
    let required = |terms: Vec<NodeSelectorTerm>| Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: terms,
            }),
            ..NodeAffinity::default()
        }),
        ..Affinity::default()
    };
    match spec.pod_offloading_strategy {
        PodOffloadingStrategy::Local => (None, None),
        PodOffloadingStrategy::Remote => (
            Some(virtual_node_toleration()),
            Some(required(selected_virtual_terms())),
        ),
        PodOffloadingStrategy::LocalAndRemote => {
            let affinity = spec.cluster_selector.as_ref().map(|_| {
                let mut terms = vec![NodeSelectorTerm {
                    match_expressions: Some(vec![virtual_type("NotIn")]),
                    ..NodeSelectorTerm::default()
                }];
                terms.extend(selected_virtual_terms());
                required(terms)
            });
            (Some(virtual_node_toleration()), affinity)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(
        strategy: PodOffloadingStrategy,
        selector: Option<serde_json::Value>,
    ) -> NamespaceOffloadingSpec {
        NamespaceOffloadingSpec {
            namespace_mapping_strategy: NamespaceMappingStrategy::DefaultName,
            remote_namespace_name: None,
            pod_offloading_strategy: strategy,
            cluster_selector: selector.map(|s| serde_json::from_value(s).expect("selector")),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_or_their_terms_and_and_their_expressions() {
        let selector: NodeSelector = serde_json::from_value(serde_json::json!({"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["true"]}, {"key": "arch", "operator": "NotIn", "values": ["arm64"]}]},
            {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["63"]}]},
        ]}))
        .expect("selector");
        assert!(selects(Some(&selector), &labels(&[("gpu", "true")])));
        assert!(!selects(
            Some(&selector),
            &labels(&[("gpu", "true"), ("arch", "arm64")])
        ));
        assert!(selects(Some(&selector), &labels(&[("cores", "64")])));
        assert!(!selects(Some(&selector), &labels(&[("cores", "8")])));
        assert!(selects(None, &labels(&[])));
    }

    #[test]
    fn namespaces_are_named_by_the_mapping_strategy() {
        let mut s = spec(PodOffloadingStrategy::Remote, None);
        assert_eq!(remote_namespace_name(&s, "ml", "cluster-a"), "ml-cluster-a");
        s.namespace_mapping_strategy = NamespaceMappingStrategy::EnforceSameName;
        assert_eq!(remote_namespace_name(&s, "ml", "cluster-a"), "ml");
        s.namespace_mapping_strategy = NamespaceMappingStrategy::SelectedName;
        s.remote_namespace_name = Some("ml-elsewhere".into());
        assert_eq!(remote_namespace_name(&s, "ml", "cluster-a"), "ml-elsewhere");
    }

    #[test]
    fn strategies_imply_tolerations_and_affinities() {
        assert_eq!(
            pod_placement(&spec(PodOffloadingStrategy::Local, None)),
            (None, None)
        );
        let (toleration, affinity) =
            pod_placement(&spec(PodOffloadingStrategy::LocalAndRemote, None));
        assert_eq!(toleration, Some(virtual_node_toleration()));
        assert_eq!(affinity, None, "anywhere");
        let gpu = serde_json::json!({"nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["true"]}]}]});
        let (_, affinity) = pod_placement(&spec(PodOffloadingStrategy::Remote, Some(gpu.clone())));
        let terms = affinity
            .and_then(|a| a.node_affinity)
            .and_then(|n| n.required_during_scheduling_ignored_during_execution)
            .expect("required")
            .node_selector_terms;
        assert_eq!(terms.len(), 1);
        let node = |pairs: &[(&str, &str)]| {
            selects(
                Some(&NodeSelector {
                    node_selector_terms: terms.clone(),
                }),
                &labels(pairs),
            )
        };
        assert!(node(&[
            ("gpu", "true"),
            (names::label::NODE_TYPE, names::label::NODE_TYPE_VIRTUAL)
        ]));
        assert!(
            !node(&[("gpu", "true")]),
            "a local node with the label is not remote"
        );
        let (_, affinity) = pod_placement(&spec(PodOffloadingStrategy::LocalAndRemote, Some(gpu)));
        let terms = affinity
            .and_then(|a| a.node_affinity)
            .and_then(|n| n.required_during_scheduling_ignored_during_execution)
            .expect("required")
            .node_selector_terms;
        let node = |pairs: &[(&str, &str)]| {
            selects(
                Some(&NodeSelector {
                    node_selector_terms: terms.clone(),
                }),
                &labels(pairs),
            )
        };
        assert!(node(&[]), "local nodes");
        assert!(node(&[
            ("gpu", "true"),
            (names::label::NODE_TYPE, names::label::NODE_TYPE_VIRTUAL)
        ]));
        assert!(
            !node(&[(names::label::NODE_TYPE, names::label::NODE_TYPE_VIRTUAL)]),
            "unselected virtual node"
        );
    }
}
