//! The routes a gateway adds into its tunnel, and the guard that keeps them
//! off the cluster's own ranges.
//!
//! Peered clusters may use the same CIDRs (both 10.244.0.0/16): what the
//! gateway routes into the tunnel is the peer's ranges as *this* cluster
//! addresses them (`tunnel.routes`, remapped when they overlap), never the
//! peer's real ranges. A route that overlaps one the namespace already has
//! on another interface would take the gateway's way back to its own pods,
//! so it is refused before anything is changed.

use std::{net::IpAddr, process::Command};

use serde::Deserialize;

use crate::{config::Cidr, Error};

/// One entry of `ip -j route show`.
#[derive(Deserialize)]
struct RouteEntry {
    dst: String,
    #[serde(default)]
    dev: Option<String>,
}

/// The main table's routes on interfaces other than `interface`, default
/// routes left out (every range is inside them, that is what they are for).
fn routes_elsewhere(interface: &str, family: &str) -> Result<Vec<(Cidr, String)>, Error> {
    let output = Command::new("ip")
        .args(["-j", family, "route", "show", "table", "main"])
        .output()
        .map_err(Error::io("running ip route show"))?;
    if !output.status.success() {
        return Err(Error::Config(format!(
            "`ip -j {family} route show` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let entries: Vec<RouteEntry> = serde_json::from_slice(&output.stdout)
        .map_err(|e| Error::Config(format!("reading `ip -j {family} route show` output: {e}")))?;
    Ok(entries
        .into_iter()
        .filter(|e| e.dev.as_deref() != Some(interface))
        .filter_map(|e| {
            let cidr = match e.dst.parse::<Cidr>() {
                Ok(cidr) => cidr,
                Err(_) => Cidr::host(e.dst.parse::<IpAddr>().ok()?),
            };
            (cidr.len > 0).then(|| (cidr, e.dev.unwrap_or_default()))
        })
        .collect())
}

/// The first of `routes` that overlaps one of `existing`, with it.
pub fn first_overlap<'a>(
    routes: &'a [Cidr],
    existing: &'a [(Cidr, String)],
) -> Option<(&'a Cidr, &'a (Cidr, String))> {
    routes
        .iter()
        .find_map(|r| existing.iter().find(|(e, _)| r.overlaps(e)).map(|e| (r, e)))
}

/// Refuses `routes` when one overlaps a route the namespace already has on
/// another interface (the cluster's own pods, the underlay).
pub fn refuse_local_overlaps(interface: &str, routes: &[Cidr]) -> Result<(), Error> {
    if routes.is_empty() {
        return Ok(());
    }
    let mut existing = routes_elsewhere(interface, "-4")?;
    existing.extend(routes_elsewhere(interface, "-6")?);
    match first_overlap(routes, &existing) {
        None => Ok(()),
        Some((route, (local, dev))) => Err(Error::Config(format!(
            "tunnel.routes: {route} overlaps {local} (dev {dev}), a range this namespace \
             already reaches outside the tunnel; routing it into the tunnel would cut it off. \
             Route the peer's ranges as this cluster sees them (remapped), not its real ones"
        ))),
    }
}

/// Routes `routes` into `interface` (its own subnets are routed by the
/// interface addresses).
pub fn add_routes(interface: &str, routes: &[Cidr]) -> Result<(), Error> {
    for route in routes {
        let family = if route.addr.is_ipv4() { "-4" } else { "-6" };
        let status = Command::new("ip")
            .args([
                family,
                "route",
                "replace",
                &route.to_string(),
                "dev",
                interface,
            ])
            .status()
            .map_err(Error::io("running ip route"))?;
        if !status.success() {
            return Err(Error::Wireguard {
                interface: interface.to_owned(),
                detail: format!("`ip route replace {route} dev {interface}` failed: {status}"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn overlaps_are_found_in_either_direction_and_per_family() {
        let existing = vec![
            (cidr("198.18.65.0/24"), "lan0".to_owned()),
            (cidr("fd00:65::/64"), "lan0".to_owned()),
        ];
        let same = [cidr("198.18.65.0/24")];
        let wider = [cidr("198.18.0.0/16")];
        let narrower = [cidr("198.18.65.128/25")];
        let remapped = [cidr("198.19.65.0/24"), cidr("fd00:66::/64")];
        let v6_inside = [cidr("fd00:65::/80")];
        for routes in [&same[..], &wider, &narrower, &v6_inside] {
            assert!(
                first_overlap(routes, &existing).is_some(),
                "{routes:?} should overlap"
            );
        }
        assert!(first_overlap(&remapped, &existing).is_none());
        let (route, (local, dev)) = first_overlap(&wider, &existing).unwrap();
        assert_eq!(
            (route.to_string(), local.to_string(), dev.as_str()),
            ("198.18.0.0/16".into(), "198.18.65.0/24".into(), "lan0")
        );
    }
}
