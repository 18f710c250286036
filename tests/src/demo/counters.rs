//! Act 1: strait-fabric attaches its TC counters to a node's interface;
//! bounded dual-stack UDP is counted exactly, read back from the pins.

use std::net::SocketAddr;

use anyhow::Result;
use strait_common::{Counter, Direction, TrafficClass};

use super::Report;
use crate::{bpffs::TestPinDir, traffic::udp_burst, FabricCli, NodePair};

const DATAGRAMS: usize = 10;
const PAYLOAD: usize = 100;
const UDP: u8 = 17;
/// Ethernet + IPv4 + UDP headers.
const V4_OVERHEAD: usize = 14 + 20 + 8;
/// Ethernet + IPv6 + UDP headers.
const V6_OVERHEAD: usize = 14 + 40 + 8;

pub fn act(report: &mut Report) -> Result<()> {
    let pair = NodePair::new()?;
    let pins = TestPinDir::new("demo")?;
    let fabric = FabricCli::new(&pair.node, pins.path())?;
    report.say(format!(
        "node {} <-> peer {} over a veth ({} / {})\n$ strait-fabric attach --iface {}",
        pair.node.name(),
        pair.peer.name(),
        NodePair::NODE_V4,
        NodePair::NODE_V6,
        NodePair::IFACE
    ));
    report.say(fabric.run(&["attach", "--iface", NodePair::IFACE])?);

    let mut received = Vec::new();
    for address in [NodePair::NODE_V4.into(), NodePair::NODE_V6.into()] {
        received.push(udp_burst(
            &pair.peer,
            &pair.node,
            SocketAddr::new(address, 7000),
            DATAGRAMS,
            PAYLOAD,
        )?);
    }
    report.say(format!(
        "peer -> node: {DATAGRAMS} IPv4 and {DATAGRAMS} IPv6 UDP datagrams of {PAYLOAD} bytes sent\n$ strait-fabric stats"
    ));
    report.say(fabric.run(&["stats"])?);
    let snapshot = fabric.snapshot()?;
    let eth0 = pair.node.ifindex(NodePair::IFACE)?;
    report.say(fabric.run(&["detach", "--iface", NodePair::IFACE])?);

    for ((class, overhead), got) in [
        (TrafficClass::Ipv4, V4_OVERHEAD),
        (TrafficClass::Ipv6, V6_OVERHEAD),
    ]
    .into_iter()
    .zip(received)
    {
        let counted = snapshot.get(eth0, Direction::Ingress, class, UDP);
        let expected = Counter {
            packets: DATAGRAMS as u64,
            bytes: (DATAGRAMS * (PAYLOAD + overhead)) as u64,
        };
        let family = if class == TrafficClass::Ipv4 {
            "IPv4"
        } else {
            "IPv6"
        };
        report.check(
            &format!("every {family} UDP datagram arrived and was counted exactly by eBPF"),
            if counted == expected && got == DATAGRAMS {
                Ok(format!(
                    "{got}/{DATAGRAMS} received; counted {} packets, {} bytes",
                    counted.packets, counted.bytes
                ))
            } else {
                Err(format!(
                    "{got}/{DATAGRAMS} received; counted {counted:?}, expected {expected:?}"
                ))
            },
        );
    }
    Ok(())
}
