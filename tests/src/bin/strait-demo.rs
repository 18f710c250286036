//! The Strait demo, run by `cargo xtask demo`.
//!
//! For now: a node and a peer as network namespaces joined by a veth, the
//! strait-fabric agent attaching its TC counters to the node's interface,
//! bounded dual-stack UDP traffic, and the counters read back from their pins.
use std::net::SocketAddr;

use anyhow::{bail, Result};
use strait_common::{Counter, Direction, TrafficClass};
use strait_testbed::{bpffs::TestPinDir, traffic::udp_burst, FabricCli, NodePair};

const DATAGRAMS: usize = 10;
const PAYLOAD: usize = 100;
const UDP: u8 = 17;
/// Ethernet + IPv4 + UDP headers.
const V4_OVERHEAD: usize = 14 + 20 + 8;
/// Ethernet + IPv6 + UDP headers.
const V6_OVERHEAD: usize = 14 + 40 + 8;

fn main() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates network namespaces and loads eBPF: run it as root");
    }
    let pair = NodePair::new()?;
    let pins = TestPinDir::new("demo")?;
    let fabric = FabricCli::new(&pair.node, pins.path())?;
    println!(
        "Strait demo: node {} <-> peer {} over a veth ({} / {})",
        pair.node.name(),
        pair.peer.name(),
        NodePair::NODE_V4,
        NodePair::NODE_V6
    );
    print!("{}", fabric.run(&["attach", "--iface", NodePair::IFACE])?);

    let got_v4 = udp_burst(
        &pair.peer,
        &pair.node,
        SocketAddr::new(NodePair::NODE_V4.into(), 7000),
        DATAGRAMS,
        PAYLOAD,
    )?;
    let got_v6 = udp_burst(
        &pair.peer,
        &pair.node,
        SocketAddr::new(NodePair::NODE_V6.into(), 7000),
        DATAGRAMS,
        PAYLOAD,
    )?;
    println!(
        "peer -> node: {DATAGRAMS} IPv4 and {DATAGRAMS} IPv6 UDP datagrams of {PAYLOAD} bytes sent, {got_v4} + {got_v6} received\n"
    );
    println!("{}", fabric.run(&["stats"])?);

    let snapshot = fabric.snapshot()?;
    let eth0 = pair.node.ifindex(NodePair::IFACE)?;
    let ingress_v4 = snapshot.get(eth0, Direction::Ingress, TrafficClass::Ipv4, UDP);
    let ingress_v6 = snapshot.get(eth0, Direction::Ingress, TrafficClass::Ipv6, UDP);
    print!("{}", fabric.run(&["detach", "--iface", NodePair::IFACE])?);

    let expected = |overhead: usize| Counter {
        packets: DATAGRAMS as u64,
        bytes: (DATAGRAMS * (PAYLOAD + overhead)) as u64,
    };
    if ingress_v4 != expected(V4_OVERHEAD)
        || ingress_v6 != expected(V6_OVERHEAD)
        || got_v4 != DATAGRAMS
        || got_v6 != DATAGRAMS
    {
        bail!("the counters do not account for the traffic sent (ipv4 {ingress_v4:?}, ipv6 {ingress_v6:?})");
    }
    println!(
        "OK: every datagram arrived and was counted exactly by the eBPF program on the node's eth0 \
         (UDP: {} IPv4 packets / {} bytes, {} IPv6 packets / {} bytes)",
        ingress_v4.packets, ingress_v4.bytes, ingress_v6.packets, ingress_v6.bytes,
    );
    Ok(())
}
