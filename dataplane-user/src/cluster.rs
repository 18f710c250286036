//! The fabric's routes and nodes from the API (`strait-fabric run
//! --from-cluster`): every RouteConfiguration's routes and every
//! InternalNode, laid over the host-local part of the `--config` file.
//! Deleting a CR drops its entries from the next applied config, and
//! [`crate::fabric::apply_tables`] removes them from the pinned maps.

use kube::{api::ListParams, Api, Client, ResourceExt as _};
use strait_api::networking::{InternalNode, RouteConfiguration};

use crate::fabric::{FabricConfig, NamedInternalNode};

/// Which CRs a fabric agent follows: a node needs the routes toward
/// gateways, a gateway the InternalNodes behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Follow {
    /// RouteConfigurations (a node's view).
    Routes,
    /// InternalNodes (a gateway's view; the config needs `nodeVni`).
    InternalNodes,
    /// Both.
    All,
}

/// What the fabric takes from the CRs, in a stable order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterFabric {
    pub routes: Vec<strait_api::networking::FabricRoute>,
    pub internal_nodes: Vec<NamedInternalNode>,
}

impl ClusterFabric {
    /// Lists the CRs of `kinds` (RouteConfigurations of every namespace).
    pub async fn fetch(client: &Client, kinds: Follow) -> Result<Self, kube::Error> {
        let mut configurations = Vec::new();
        if kinds != Follow::InternalNodes {
            configurations = Api::<RouteConfiguration>::all(client.clone())
                .list(&ListParams::default())
                .await?
                .items;
        }
        configurations.sort_by_key(|c| (c.namespace(), c.name_any()));
        let mut nodes = Vec::new();
        if kinds != Follow::Routes {
            nodes = Api::<InternalNode>::all(client.clone())
                .list(&ListParams::default())
                .await?
                .items;
        }
        nodes.sort_by_key(|n| n.name_any());
        Ok(Self {
            routes: configurations
                .into_iter()
                .flat_map(|c| c.spec.routes)
                .collect(),
            internal_nodes: nodes
                .into_iter()
                .map(|n| NamedInternalNode {
                    name: n.name_any(),
                    spec: n.spec,
                })
                .collect(),
        })
    }

    /// `base` (the file: interfaces, endpoints, VNI, and any static
    /// routes or nodes) with the CRs' routes and nodes added.
    pub fn over(&self, base: &FabricConfig) -> FabricConfig {
        let mut config = base.clone();
        config.routes.extend(self.routes.iter().cloned());
        config
            .internal_nodes
            .extend(self.internal_nodes.iter().cloned());
        config
    }
}

#[cfg(test)]
mod tests {
    use strait_api::networking::{FabricRoute, InternalNodeSpec};

    use super::*;

    #[test]
    fn crs_are_added_to_the_file() {
        let base = FabricConfig::from_yaml(
            "underlay: eth0\nlocalEndpoints: [198.18.0.1]\nnodeVni: 7\nroutes:\n  - destinations: [10.1.0.0/16]\n    gateways: [198.18.0.9]\n    vni: 5\n",
        )
        .expect("base");
        let crs = ClusterFabric {
            routes: vec![FabricRoute {
                destinations: vec!["10.2.0.0/16".into()],
                gateways: vec!["198.18.0.9".into()],
                vni: 5,
            }],
            internal_nodes: vec![NamedInternalNode {
                name: "node-1".into(),
                spec: InternalNodeSpec {
                    endpoints: vec!["198.18.0.2".into()],
                    pod_cidrs: vec!["10.244.1.0/24".into()],
                },
            }],
        };
        let merged = crs.over(&base);
        assert_eq!(merged.routes.len(), 2);
        assert_eq!(merged.routes[1].destinations, ["10.2.0.0/16"]);
        assert_eq!(merged.internal_nodes[0].name, "node-1");
        assert_eq!(merged.underlay, "eth0");
        assert_eq!(ClusterFabric::default().over(&base), base);
    }
}
