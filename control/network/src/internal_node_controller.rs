//! InternalNodes from Nodes: every node's Geneve endpoint (its internal
//! addresses) and pod CIDRs, for the gateways' return routes. An
//! InternalNode is owned by its Node, so it goes away with it.

use std::{sync::Arc, time::Duration};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Node;
use kube::{
    api::{Patch, PatchParams},
    runtime::{controller::Action, watcher, Controller},
    Api, Client, Resource as _, ResourceExt as _,
};
use strait_api::networking::{InternalNode, InternalNodeSpec};
use tracing::warn;

pub const FIELD_MANAGER: &str = "strait-network-internalnode";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serializing a patch: {0}")]
    Serialize(#[from] serde_json::Error),
}

pub struct Context {
    pub client: Client,
}

pub async fn run(client: Client) {
    let context = Arc::new(Context {
        client: client.clone(),
    });
    Controller::new(Api::<Node>::all(client.clone()), watcher::Config::default())
        .owns(Api::<InternalNode>::all(client), watcher::Config::default())
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "InternalNode reconcile failed");
            }
        })
        .await;
}

fn error_policy(_: Arc<Node>, _: &Error, _: Arc<Context>) -> Action {
    Action::requeue(Duration::from_secs(2))
}

/// The InternalNode a Node implies: its InternalIP addresses (at most one
/// per family, IPv4 first) and its pod CIDRs. None while the node has no
/// internal address yet.
pub fn desired(node: &Node) -> Option<InternalNodeSpec> {
    let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref())?;
    let internal: Vec<&str> = addresses
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .map(|a| a.address.as_str())
        .collect();
    let mut endpoints = Vec::new();
    for v4 in [true, false] {
        if let Some(first) = internal.iter().find(|a| {
            a.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_ipv4() == v4)
        }) {
            endpoints.push((*first).to_owned());
        }
    }
    if endpoints.is_empty() {
        return None;
    }
    let spec = node.spec.as_ref();
    let pod_cidrs = spec
        .and_then(|s| s.pod_cidrs.clone())
        .or_else(|| spec.and_then(|s| s.pod_cidr.clone()).map(|c| vec![c]))
        .unwrap_or_default();
    Some(InternalNodeSpec {
        endpoints,
        pod_cidrs,
    })
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(spec) = desired(&node) else {
        // Waiting for the kubelet to report an address; the Node update wakes us.
        return Ok(Action::await_change());
    };
    // The watch cache can still hold a Node that was just deleted, whose
    // InternalNode the garbage collector has already removed: writing it
    // again from the cache would leave an InternalNode with no Node.
    let live = Api::<Node>::all(ctx.client.clone())
        .get_opt(&node.name_any())
        .await?;
    if live.is_none_or(|live| live.metadata.uid != node.metadata.uid) {
        return Ok(Action::await_change());
    }
    let owner = node
        .controller_owner_ref(&())
        .map(|r| vec![r])
        .unwrap_or_default();
    let object = serde_json::json!({
        "apiVersion": "networking.strait.dev/v1beta1",
        "kind": "InternalNode",
        "metadata": { "name": node.name_any(), "ownerReferences": owner },
        "spec": serde_json::to_value(&spec)?,
    });
    Api::<InternalNode>::all(ctx.client.clone())
        .patch(
            &node.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};

    use super::*;

    fn node(addresses: &[(&str, &str)], pod_cidrs: &[&str]) -> Node {
        Node {
            spec: Some(NodeSpec {
                pod_cidrs: Some(pod_cidrs.iter().map(|s| s.to_string()).collect()),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(
                    addresses
                        .iter()
                        .map(|(kind, addr)| NodeAddress {
                            type_: kind.to_string(),
                            address: addr.to_string(),
                        })
                        .collect(),
                ),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    #[test]
    fn endpoints_are_the_internal_addresses_one_per_family() {
        let spec = desired(&node(
            &[
                ("Hostname", "worker-1"),
                ("InternalIP", "fd00::21"),
                ("ExternalIP", "203.0.113.4"),
                ("InternalIP", "192.168.10.21"),
                ("InternalIP", "192.168.10.99"),
            ],
            &["10.244.1.0/24", "fd00:10:244:1::/64"],
        ))
        .expect("has addresses");
        assert_eq!(spec.endpoints, ["192.168.10.21", "fd00::21"]);
        assert_eq!(spec.pod_cidrs, ["10.244.1.0/24", "fd00:10:244:1::/64"]);
    }

    #[test]
    fn a_node_without_internal_address_waits() {
        assert_eq!(desired(&node(&[("Hostname", "worker-1")], &[])), None);
    }
}
