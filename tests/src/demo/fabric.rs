//! Act 2: the Geneve fabric of one cluster: two nodes with a pod each and a
//! gateway on an underlay bridge, a remote network behind the gateway; pods
//! reach it through eBPF Geneve encapsulation, visible on the wire.

use std::net::SocketAddr;

use anyhow::Result;
use strait_common::fabric::FabricCounter;

use super::Report;
use crate::{
    capture::Capture,
    fabric_topology::{FabricCluster, REMOTE_V4, REMOTE_V6},
    gateway::ping,
    traffic::tcp_transfer,
    FabricAgent,
};

pub fn act(report: &mut Report) -> Result<()> {
    let cluster = FabricCluster::new(2)?;
    report.say(format!(
        "nodes {} and {} (pods {} and {}), gateway {}, remote network {} ({} / {})",
        cluster.nodes[0].ns.name(),
        cluster.nodes[1].ns.name(),
        cluster.nodes[0].pod_v4,
        cluster.nodes[1].pod_v4,
        cluster.gateway.name(),
        cluster.remote.name(),
        REMOTE_V4,
        REMOTE_V6
    ));
    let mut agents = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let agent = FabricAgent::new(&node.ns, &format!("demo-node{}", i + 1))?;
        report.say(format!(
            "node{} $ strait-fabric apply: {}",
            i + 1,
            agent.apply(&cluster.node_config(i))?
        ));
        agents.push(agent);
    }
    let gateway = FabricAgent::new(&cluster.gateway, "demo-gw")?;
    report.say(format!(
        "gateway $ strait-fabric apply: {}",
        gateway.apply(&cluster.gateway_config())?
    ));

    let tcpdump = Capture::start(&cluster.underlay, "br0", "udp port 6081", 2, 10)?;
    for target in [REMOTE_V4.to_string(), REMOTE_V6.to_string()] {
        let replies = ping(&cluster.nodes[0].pod, &target, 3, "0.2");
        report.check(
            &format!("pod1 pings {target} through the fabric"),
            if replies == 3 {
                Ok("3/3 echo replies".into())
            } else {
                Err(format!("{replies}/3 echo replies"))
            },
        );
    }
    let wire = tcpdump.finish()?;
    report.say("on the underlay (tcpdump -v):");
    for line in wire.lines() {
        report.say(format!("  {}", line.trim()));
    }
    report.check(
        "the underlay carries Geneve (UDP 6081) that tcpdump decodes",
        if wire.contains("Geneve") {
            Ok(format!("{} lines captured", wire.lines().count()))
        } else {
            Err(format!("no Geneve header in the capture:\n{wire}"))
        },
    );
    let bytes = 16 << 20;
    let acked = tcp_transfer(
        &cluster.nodes[1].pod,
        &cluster.remote,
        SocketAddr::new(REMOTE_V6.into(), 7100),
        bytes,
    )?;
    report.check(
        "pod2 sends 16 MiB over TCP/IPv6 through the fabric",
        if acked == bytes as u64 {
            Ok(format!("{acked} bytes acknowledged"))
        } else {
            Err(format!("{acked} of {bytes} bytes acknowledged"))
        },
    );
    report.say(format!(
        "node2 $ strait-fabric stats\n{}",
        agents[1].cli()?.run(&["stats"])?
    ));
    let node2 = agents[1].stats()?;
    let gw = gateway.stats()?;
    let drops: u64 = agents
        .iter()
        .chain([&gateway])
        .map(|a| a.stats().map(|s| s.drops.total()).unwrap_or(1))
        .sum();
    let encapsulated = node2.counter(FabricCounter::Encapsulated).packets;
    let decapsulated = gw.counter(FabricCounter::Decapsulated).packets;
    report.check(
        "node2 encapsulated and the gateway decapsulated, with no drops",
        if encapsulated > 0 && decapsulated > 0 && drops == 0 {
            Ok(format!(
                "{encapsulated} packets encapsulated on node2, {decapsulated} decapsulated on the gateway, 0 drops"
            ))
        } else {
            Err(format!("node2 {node2:?}, gateway {gw:?}, drops {drops}"))
        },
    );
    Ok(())
}
