//! A simulated cluster for the Geneve fabric: node namespaces on an underlay
//! bridge, one pod per node on a veth, a gateway on the same underlay, and a
//! "remote cluster" namespace behind the gateway.
//!
//! ```text
//!  pod1   pod2   pod3                                    remote
//!   |      |      |                                        |
//!  node1  node2  node3 --eth0-- [br0 in "ul"] --eth0-- gateway --tun0
//! ```
//! Addresses: underlay 198.18.0.0/24 + fd00:f::/64 (gateway .2, node i .1i),
//! pods of node i 198.18.(64+i).0/24 + fd00:6:i::/64, remote 198.19.0.0/24 +
//! fd00:19::/64.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{netns::Error, NetNs, Veth};

pub const VNI: u32 = 4242;
pub const REMOTE_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
pub const REMOTE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x19, 0, 0, 0, 0, 0, 0x10);
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xf, 0, 0, 0, 0, 0, 2);
/// Interface MTU of the underlay, and of pods (underlay minus the IPv6 outer headers).
pub const UNDERLAY_MTU: u32 = 1500;
pub const POD_MTU: u32 = 1500 - 56;

pub struct Node {
    pub ns: NetNs,
    pub pod: NetNs,
    pub underlay_v4: Ipv4Addr,
    pub underlay_v6: Ipv6Addr,
    pub pod_v4: Ipv4Addr,
    pub pod_v6: Ipv6Addr,
}

pub struct FabricCluster {
    pub nodes: Vec<Node>,
    pub gateway: NetNs,
    pub remote: NetNs,
    /// Holds the underlay bridge.
    pub underlay: NetNs,
}

fn sysctl(ns: &NetNs, settings: &[&str]) -> Result<(), Error> {
    let mut cmd = ns.command("sysctl");
    cmd.arg("-q");
    for s in settings {
        cmd.args(["-w", s]);
    }
    crate::netns::run(&mut cmd).map(|_| ())
}

const ROUTER: &[&str] = &[
    "net.ipv4.ip_forward=1",
    "net.ipv6.conf.all.forwarding=1",
    "net.ipv4.conf.all.rp_filter=0",
    "net.ipv4.conf.default.rp_filter=0",
];

impl FabricCluster {
    pub fn new(node_count: u8) -> Result<Self, Error> {
        let underlay = NetNs::new("ul")?;
        underlay.ip(&["link", "add", "br0", "type", "bridge"])?;
        underlay.ip(&["link", "set", "br0", "up"])?;
        let attach = |host: &NetNs, port: &str, v4: Ipv4Addr, v6: Ipv6Addr| -> Result<(), Error> {
            let addrs = [format!("{v4}/24"), format!("{v6}/64")];
            Veth::pair(
                (host, "eth0", &addrs.each_ref().map(String::as_str)),
                (&underlay, port, &[]),
            )?;
            underlay.ip(&["link", "set", port, "master", "br0"])?;
            Ok(())
        };
        let gateway = NetNs::new("gw")?;
        sysctl(&gateway, ROUTER)?;
        attach(&gateway, "gw", GATEWAY_V4, GATEWAY_V6)?;
        let remote = NetNs::new("remote")?;
        Veth::pair(
            (&gateway, "tun0", &["198.19.0.1/24", "fd00:19::1/64"]),
            (
                &remote,
                "eth0",
                &[&format!("{REMOTE_V4}/24"), &format!("{REMOTE_V6}/64")],
            ),
        )?;
        remote.ip(&["route", "add", "198.18.64.0/18", "via", "198.19.0.1"])?;
        remote.ip(&["-6", "route", "add", "fd00:6::/32", "via", "fd00:19::1"])?;

        let mut nodes = Vec::new();
        for i in 1..=node_count {
            let ns = NetNs::new(&format!("node{i}"))?;
            sysctl(&ns, ROUTER)?;
            let underlay_v4 = Ipv4Addr::new(198, 18, 0, 10 + i);
            let underlay_v6 = Ipv6Addr::new(0xfd00, 0xf, 0, 0, 0, 0, 0, 0x10 + u16::from(i));
            attach(&ns, &format!("n{i}"), underlay_v4, underlay_v6)?;
            let pod = NetNs::new(&format!("pod{i}"))?;
            let pod_v4 = Ipv4Addr::new(198, 18, 64 + i, 10);
            let pod_v6 = Ipv6Addr::new(0xfd00, 6, u16::from(i), 0, 0, 0, 0, 0x10);
            Veth::pair(
                (
                    &ns,
                    "pod",
                    &[
                        &format!("198.18.{}.1/24", 64 + i),
                        &format!("fd00:6:{i}::1/64"),
                    ],
                ),
                (
                    &pod,
                    "eth0",
                    &[&format!("{pod_v4}/24"), &format!("{pod_v6}/64")],
                ),
            )?;
            for (host, iface) in [(&ns, "pod"), (&pod, "eth0")] {
                host.ip(&["link", "set", iface, "mtu", &POD_MTU.to_string()])?;
            }
            pod.ip(&[
                "route",
                "add",
                "default",
                "via",
                &format!("198.18.{}.1", 64 + i),
            ])?;
            pod.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &format!("fd00:6:{i}::1"),
            ])?;
            nodes.push(Node {
                ns,
                pod,
                underlay_v4,
                underlay_v6,
                pod_v4,
                pod_v6,
            });
        }
        Ok(FabricCluster {
            nodes,
            gateway,
            remote,
            underlay,
        })
    }

    /// The fabric config of node `i` (0-based): route the remote cluster to the gateway.
    pub fn node_config(&self, i: usize) -> String {
        let node = &self.nodes[i];
        format!(
            "underlay: eth0\nencapInterfaces: [pod]\nlocalEndpoints: ['{}', '{}']\nroutes:\n  - destinations: [198.19.0.0/24, 'fd00:19::/64']\n    gateways: ['{GATEWAY_V4}', '{GATEWAY_V6}']\n    vni: {VNI}\n",
            node.underlay_v4, node.underlay_v6
        )
    }

    /// The gateway's fabric config: every node's pod CIDRs back to that node.
    pub fn gateway_config(&self) -> String {
        let mut yaml = format!(
            "underlay: eth0\nencapInterfaces: [tun0]\nlocalEndpoints: ['{GATEWAY_V4}', '{GATEWAY_V6}']\nnodeVni: {VNI}\ninternalNodes:\n"
        );
        for (i, node) in self.nodes.iter().enumerate() {
            let n = i + 1;
            yaml.push_str(&format!(
                "  - name: node{n}\n    endpoints: ['{}', '{}']\n    podCIDRs: [198.18.{}.0/24, 'fd00:6:{n}::/64']\n",
                node.underlay_v4,
                node.underlay_v6,
                64 + n
            ));
        }
        yaml
    }

    pub fn remote_addr(v6: bool) -> IpAddr {
        if v6 {
            REMOTE_V6.into()
        } else {
            REMOTE_V4.into()
        }
    }
}
