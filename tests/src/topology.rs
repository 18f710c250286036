//! Ready-made topologies.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{netns::Error, NetNs, Veth};

/// Two namespaces, `node` and `peer`, joined by a veth named `eth0` on both
/// sides, dual-stack.
pub struct NodePair {
    pub node: NetNs,
    pub peer: NetNs,
}

impl NodePair {
    pub const IFACE: &'static str = "eth0";
    pub const NODE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    pub const NODE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 5, 0, 0, 0, 0, 0, 1);
    pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 5, 0, 0, 0, 0, 0, 2);

    pub fn new() -> Result<Self, Error> {
        let node = NetNs::new("node")?;
        let peer = NetNs::new("peer")?;
        let cidr = |ip: IpAddr, len: u8| format!("{ip}/{len}");
        let node_addrs = [
            cidr(Self::NODE_V4.into(), 30),
            cidr(Self::NODE_V6.into(), 64),
        ];
        let peer_addrs = [
            cidr(Self::PEER_V4.into(), 30),
            cidr(Self::PEER_V6.into(), 64),
        ];
        Veth::pair(
            (
                &node,
                Self::IFACE,
                &node_addrs.each_ref().map(String::as_str),
            ),
            (
                &peer,
                Self::IFACE,
                &peer_addrs.each_ref().map(String::as_str),
            ),
        )?;
        Ok(NodePair { node, peer })
    }
}
