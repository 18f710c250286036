//! The Strait demo, run by `cargo xtask demo`, in two acts on simulated
//! hosts (network namespaces), all of which it removes when done:
//!
//! 1. traffic counters: strait-fabric attaches its TC counters to a node's
//!    interface; bounded dual-stack UDP is counted exactly, read from pins;
//! 2. the Geneve fabric: two nodes with a pod each and a gateway on an
//!    underlay bridge, a remote cluster behind the gateway; pods reach it
//!    through eBPF Geneve encapsulation, visible on the wire with tcpdump.
use std::net::SocketAddr;

use anyhow::{bail, Result};
use strait_common::fabric::FabricCounter;
use strait_common::{Counter, Direction, TrafficClass};
use strait_testbed::{
    bpffs::TestPinDir,
    capture::Capture,
    fabric_topology::{FabricCluster, REMOTE_V4, REMOTE_V6},
    netns::run,
    traffic::{tcp_transfer, udp_burst},
    FabricAgent, FabricCli, NodePair,
};

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
    println!("== 1. traffic counters ==");
    counters()?;
    println!("\n== 2. the Geneve fabric ==");
    fabric()
}

fn fabric() -> Result<()> {
    let cluster = FabricCluster::new(2)?;
    println!(
        "nodes {} and {} (pods {} and {}), gateway {}, remote cluster {} ({} / {})",
        cluster.nodes[0].ns.name(),
        cluster.nodes[1].ns.name(),
        cluster.nodes[0].pod_v4,
        cluster.nodes[1].pod_v4,
        cluster.gateway.name(),
        cluster.remote.name(),
        REMOTE_V4,
        REMOTE_V6
    );
    let mut agents = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let agent = FabricAgent::new(&node.ns, &format!("demo-node{}", i + 1))?;
        print!("node{}: {}", i + 1, agent.apply(&cluster.node_config(i))?);
        agents.push(agent);
    }
    let gateway = FabricAgent::new(&cluster.gateway, "demo-gw")?;
    print!("gateway: {}", gateway.apply(&cluster.gateway_config())?);

    let tcpdump = Capture::start(&cluster.underlay, "br0", "udp port 6081", 2, 10)?;
    for target in [REMOTE_V4.to_string(), REMOTE_V6.to_string()] {
        let out = run(cluster.nodes[0]
            .pod
            .command("ping")
            .args(["-c", "3", "-i", "0.2", "-W", "2", &target]))?;
        let summary = String::from_utf8_lossy(&out.stdout);
        println!(
            "pod1 $ ping {target}: {}",
            summary.lines().rev().nth(1).unwrap_or("").trim()
        );
    }
    println!("on the underlay (tcpdump -v):");
    for line in tcpdump.finish()?.lines() {
        println!("  {}", line.trim());
    }
    let bytes = 16 << 20;
    let acked = tcp_transfer(
        &cluster.nodes[1].pod,
        &cluster.remote,
        SocketAddr::new(REMOTE_V6.into(), 7100),
        bytes,
    )?;
    println!("pod2 -> remote over TCP/IPv6: {acked} of {bytes} bytes acknowledged");
    println!("\nnode2 $ strait-fabric stats");
    print!("{}", agents[1].cli()?.run(&["stats"])?);
    let node2 = agents[1].stats()?;
    let gw = gateway.stats()?;
    let drops: u64 = agents
        .iter()
        .chain([&gateway])
        .map(|a| a.stats().map(|s| s.drops.total()).unwrap_or(1))
        .sum();
    if acked != bytes as u64
        || node2.counter(FabricCounter::Encapsulated).packets == 0
        || gw.counter(FabricCounter::Decapsulated).packets == 0
        || drops != 0
    {
        bail!("the fabric did not carry the traffic as expected (node2 {node2:?}, gateway {gw:?})");
    }
    println!("\nOK: pods reached the remote cluster through eBPF Geneve, both ways, with no drops");
    Ok(())
}

fn counters() -> Result<()> {
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
