//! From a peering's Configuration to what the dataplane must do: the routes
//! every node loads (RouteConfiguration) and the remapping the gateway
//! applies (NatConfiguration). Pure functions: the controller only fetches
//! inputs and writes outputs.

use strait_api::networking::{
    ClusterCidrs, Configuration, FabricRoute, NatConfigurationSpec, NatDirection, PrefixMapping,
    RouteConfigurationSpec,
};

use crate::ipam::{parse_cidr, IpamError};

/// Why a Configuration cannot be rendered yet, or at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("the remote CIDRs are not remapped yet (status.remote is empty)")]
    NotRemapped,
    #[error("the gateway has no internal endpoint yet")]
    NoGatewayEndpoint,
    #[error("status.remote.cidr.{field} has {remapped} entries for {wanted} in spec")]
    RemapMismatch {
        field: &'static str,
        wanted: usize,
        remapped: usize,
    },
    #[error(transparent)]
    Cidr(#[from] IpamError),
}

/// The peer's CIDRs as this cluster sees them (remapped where they
/// overlapped), pod ranges first then external ones.
fn seen_locally(config: &Configuration) -> Result<&ClusterCidrs, RenderError> {
    config
        .status
        .as_ref()
        .and_then(|s| s.remote.as_ref())
        .map(|r| &r.cidr)
        .ok_or(RenderError::NotRemapped)
}

/// The route every node loads: the peer's (remapped) CIDRs are behind the
/// gateway's internal endpoint, on the peering's VNI.
pub fn node_routes(
    config: &Configuration,
    gateway_ips: &[String],
    vni: u32,
) -> Result<RouteConfigurationSpec, RenderError> {
    if gateway_ips.is_empty() {
        return Err(RenderError::NoGatewayEndpoint);
    }
    let seen = seen_locally(config)?;
    let mut destinations = Vec::new();
    for cidr in seen.pod.iter().chain(&seen.external) {
        destinations.push(parse_cidr(cidr)?.to_string());
    }
    // A route holds at most one CIDR per family (the CRD enforces it): one
    // route per destination, IPv4 first, keeps within that.
    destinations.sort_by_key(|d| !d.contains('.'));
    let routes = destinations
        .into_iter()
        .map(|destination| FabricRoute {
            destinations: vec![destination],
            gateways: gateway_ips.to_vec(),
            vni: i64::from(vni),
        })
        .collect();
    Ok(RouteConfigurationSpec { routes })
}

/// The gateway's remapping of the peer's ranges, this cluster's own view
/// only: one Destination mapping per remapped range, which the gateway
/// applies both ways (what this cluster sends to the remapped range leaves
/// for the peer's real addresses, and the peer's packets from those arrive
/// from the remapped range). The peer's own choices are never needed.
/// Ranges used as requested need no mapping.
pub fn gateway_nat(config: &Configuration) -> Result<NatConfigurationSpec, RenderError> {
    let wanted = &config.spec.remote.cidr;
    let seen = seen_locally(config)?;
    let mut prefixes = Vec::new();
    for (field, real, remapped) in [
        ("pod", &wanted.pod, &seen.pod),
        ("external", &wanted.external, &seen.external),
    ] {
        if real.len() != remapped.len() {
            return Err(RenderError::RemapMismatch {
                field,
                wanted: real.len(),
                remapped: remapped.len(),
            });
        }
        for (real, remapped) in real.iter().zip(remapped) {
            let (real, remapped) = (parse_cidr(real)?, parse_cidr(remapped)?);
            if real != remapped {
                prefixes.push(PrefixMapping {
                    direction: NatDirection::Destination,
                    from: remapped.to_string(),
                    to: real.to_string(),
                });
            }
        }
    }
    Ok(NatConfigurationSpec {
        prefixes,
        addresses: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use strait_api::networking::{ClusterNetwork, ConfigurationSpec, ConfigurationStatus};

    use super::*;

    fn cidrs(pod: &[&str], external: &[&str]) -> ClusterNetwork {
        ClusterNetwork {
            cidr: ClusterCidrs {
                pod: pod.iter().map(|s| s.to_string()).collect(),
                external: external.iter().map(|s| s.to_string()).collect(),
            },
        }
    }

    fn configuration(remapped: Option<ClusterNetwork>) -> Configuration {
        let mut config = Configuration::new(
            "cluster-b",
            ConfigurationSpec {
                local: None,
                remote: cidrs(&["10.244.0.0/16", "fd00:10:244::/56"], &["10.70.0.0/16"]),
            },
        );
        config.status = remapped.map(|remote| ConfigurationStatus {
            remote: Some(remote),
            conditions: Vec::new(),
            vni: None,
        });
        config
    }

    #[test]
    fn nodes_route_the_remapped_ranges_to_the_gateway() {
        let config = configuration(Some(cidrs(
            &["10.71.0.0/16", "fd00:10:244::/56"],
            &["10.70.0.0/16"],
        )));
        let spec = node_routes(&config, &["10.244.3.17".into()], 4242).expect("renders");
        let destinations: Vec<&str> = spec
            .routes
            .iter()
            .flat_map(|r| r.destinations.iter().map(String::as_str))
            .collect();
        assert_eq!(
            destinations,
            ["10.71.0.0/16", "10.70.0.0/16", "fd00:10:244::/56"]
        );
        assert!(spec
            .routes
            .iter()
            .all(|r| r.vni == 4242 && r.gateways == ["10.244.3.17"]));
    }

    #[test]
    fn the_gateway_maps_only_what_was_remapped() {
        let config = configuration(Some(cidrs(
            &["10.71.0.0/16", "fd00:10:244::/56"],
            &["10.70.0.0/16"],
        )));
        let nat = gateway_nat(&config).expect("renders");
        assert_eq!(
            nat.prefixes,
            [PrefixMapping {
                direction: NatDirection::Destination,
                from: "10.71.0.0/16".into(),
                to: "10.244.0.0/16".into()
            }]
        );
    }

    #[test]
    fn rendering_waits_for_ipam_and_the_gateway_and_says_so() {
        let pending = configuration(None);
        assert_eq!(
            node_routes(&pending, &["10.0.0.1".into()], 1),
            Err(RenderError::NotRemapped)
        );
        assert_eq!(gateway_nat(&pending), Err(RenderError::NotRemapped));
        let done = configuration(Some(cidrs(
            &["10.71.0.0/16", "fd00:10:244::/56"],
            &["10.70.0.0/16"],
        )));
        assert_eq!(
            node_routes(&done, &[], 1),
            Err(RenderError::NoGatewayEndpoint)
        );
        let short = configuration(Some(cidrs(&["10.71.0.0/16"], &["10.70.0.0/16"])));
        assert_eq!(
            gateway_nat(&short).expect_err("mismatch").to_string(),
            "status.remote.cidr.pod has 1 entries for 2 in spec"
        );
    }
}
