//! The Geneve fabric end to end: three nodes and a gateway on an underlay
//! bridge, pods on the nodes, a remote cluster behind the gateway. Needs root.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use strait_common::fabric::FabricCounter;
use strait_dataplane::{bpffs::PinDir, fabric::FabricStats};
use strait_testbed::{
    bpffs::TestPinDir,
    capture::Capture,
    fabric_topology::{FabricCluster, REMOTE_V4, REMOTE_V6},
    traffic::{tcp_transfer, udp_burst, udp_stream},
    FabricCli, NetNs,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// One host's agent: its own pin directory and config file.
struct Agent<'a> {
    ns: &'a NetNs,
    pins: TestPinDir,
    config: PathBuf,
}

impl Drop for Agent<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}

impl<'a> Agent<'a> {
    fn new(ns: &'a NetNs, label: &str) -> Result<Self, Box<dyn std::error::Error>> {
        let pins = TestPinDir::new(label)?;
        let config = std::env::temp_dir().join(format!("strait-{}-{label}.yaml", ns.name()));
        Ok(Agent { ns, pins, config })
    }

    fn apply(&self, yaml: &str) -> Result<String, Box<dyn std::error::Error>> {
        std::fs::write(&self.config, yaml)?;
        let cli = FabricCli::new(self.ns, self.pins.path())?;
        let config = self.config.to_string_lossy().into_owned();
        Ok(cli.run(&["apply", "--config", &config])?)
    }

    fn stats(&self) -> Result<FabricStats, Box<dyn std::error::Error>> {
        Ok(FabricStats::read_pinned(&PinDir::open(self.pins.path())?)?)
    }
}

/// Starts the fabric on every node and on the gateway.
fn start(
    cluster: &FabricCluster,
) -> Result<(Vec<Agent<'_>>, Agent<'_>), Box<dyn std::error::Error>> {
    let mut nodes = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let agent = Agent::new(&node.ns, &format!("node{}", i + 1))?;
        let out = agent.apply(&cluster.node_config(i))?;
        assert!(out.contains("steering pod into the fabric"), "{out}");
        nodes.push(agent);
    }
    let gateway = Agent::new(&cluster.gateway, "gw")?;
    let out = gateway.apply(&cluster.gateway_config())?;
    assert!(out.contains("decapsulating Geneve on eth0"), "{out}");
    assert!(out.contains("overlay MTU 1444"), "{out}");
    Ok((nodes, gateway))
}

fn remote(v6: bool, port: u16) -> SocketAddr {
    SocketAddr::new(FabricCluster::remote_addr(v6), port)
}

#[test]
fn pods_reach_the_remote_cluster_through_the_gateway_and_back() -> TestResult {
    let cluster = FabricCluster::new(3)?;
    let (nodes, gateway) = start(&cluster)?;

    for v6 in [false, true] {
        let got = udp_burst(
            &cluster.nodes[0].pod,
            &cluster.remote,
            remote(v6, 7000),
            20,
            1000,
        )?;
        assert_eq!(
            got,
            20,
            "UDP over the fabric (v6: {v6}); node {:?} gateway {:?}",
            nodes[0].stats()?,
            gateway.stats()?
        );
    }
    let node1 = nodes[0].stats()?;
    assert_eq!(
        node1.counter(FabricCounter::Encapsulated).packets,
        40,
        "{node1:?}"
    );
    assert!(
        gateway
            .stats()?
            .counter(FabricCounter::Decapsulated)
            .packets
            >= 40
    );

    // TCP needs the way back too: the gateway encapsulates replies to node 2.
    for v6 in [false, true] {
        let acked = tcp_transfer(
            &cluster.nodes[1].pod,
            &cluster.remote,
            remote(v6, 7001),
            4 << 20,
        )?;
        assert_eq!(acked, 4 << 20, "TCP over the fabric (v6: {v6})");
    }
    let node2 = nodes[1].stats()?;
    assert!(
        node2.counter(FabricCounter::Decapsulated).packets > 0,
        "ACKs came back encapsulated: {node2:?}"
    );
    assert!(
        gateway
            .stats()?
            .counter(FabricCounter::Encapsulated)
            .packets
            > 0
    );

    // ICMP echo from the third node's pod, both families.
    for target in [REMOTE_V4.to_string(), REMOTE_V6.to_string()] {
        let out = cluster.nodes[2]
            .pod
            .command("ping")
            .args(["-c", "3", "-i", "0.2", "-W", "2", &target])
            .output()?;
        assert!(
            out.status.success(),
            "ping {target}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    for agent in nodes.iter().chain([&gateway]) {
        let drops: u64 = agent.stats()?.drops.iter().map(|(_, n)| n).sum();
        assert_eq!(drops, 0, "no drops on {}", agent.ns.name());
    }
    Ok(())
}

#[test]
fn the_underlay_carries_rfc8926_geneve_with_our_vni() -> TestResult {
    let cluster = FabricCluster::new(1)?;
    let (_nodes, _gateway) = start(&cluster)?;
    let tcpdump = Capture::start(&cluster.underlay, "br0", "udp port 6081", 4, 10)?;
    let got = udp_burst(
        &cluster.nodes[0].pod,
        &cluster.remote,
        remote(false, 7002),
        4,
        100,
    )?;
    assert_eq!(got, 4);
    let text = tcpdump.finish()?;
    let pod = cluster.nodes[0].pod_v4.to_string();
    let geneve_lines = text
        .lines()
        .filter(|l| l.contains("Geneve") && l.contains("vni 0x1092"))
        .count();
    assert_eq!(geneve_lines, 4, "tcpdump decoded:\n{text}");
    assert!(
        text.contains(&format!("{pod}.")) && text.contains("198.19.0.10.7002"),
        "inner packet decoded:\n{text}"
    );
    assert!(
        text.contains("198.18.0.11.") && text.contains("198.18.0.2.6081"),
        "outer node -> gateway:\n{text}"
    );
    Ok(())
}

#[test]
fn destinations_without_a_fabric_route_are_left_alone() -> TestResult {
    let cluster = FabricCluster::new(2)?;
    let (nodes, _gateway) = start(&cluster)?;
    // Node 2's underlay address is reachable by plain routing from pod 1.
    let node2 = SocketAddr::new(IpAddr::V4(cluster.nodes[1].underlay_v4), 7003);
    assert_eq!(
        udp_burst(&cluster.nodes[0].pod, &cluster.nodes[1].ns, node2, 10, 200)?,
        10
    );
    let stats = nodes[0].stats()?;
    assert_eq!(
        stats.counter(FabricCounter::Encapsulated).packets,
        0,
        "{stats:?}"
    );
    assert!(stats.counter(FabricCounter::NotRouted).packets >= 10);
    Ok(())
}

#[test]
fn agent_restarts_and_route_changes_lose_no_packet() -> TestResult {
    let cluster = FabricCluster::new(1)?;
    let (nodes, gateway) = start(&cluster)?;
    let node = &nodes[0];
    let base = cluster.node_config(0);
    let with_extra_route = format!(
        "{base}  - destinations: [198.19.128.0/24]\n    gateways: ['198.18.0.2']\n    vni: 7\n"
    );
    let (sent, received, changes) = udp_stream(
        &cluster.nodes[0].pod,
        &cluster.remote,
        remote(false, 7004),
        3000,
        Duration::from_micros(700),
        || -> Result<Vec<String>, String> {
            let mut outputs = Vec::new();
            for yaml in [&base, &with_extra_route, &base, &with_extra_route, &base] {
                outputs.push(node.apply(yaml).map_err(|e| e.to_string())?);
                outputs.push(
                    gateway
                        .apply(&cluster.gateway_config())
                        .map_err(|e| e.to_string())?,
                );
            }
            Ok(outputs)
        },
    )?;
    let changes = changes?;
    assert!(
        changes.iter().any(|o| o.contains("1 written")),
        "the extra route was added: {changes:?}"
    );
    assert!(
        changes.iter().any(|o| o.contains("1 removed")),
        "and removed: {changes:?}"
    );
    assert!(changes
        .iter()
        .all(|o| !o.contains("steering") || o.contains("tcx")));
    assert_eq!(sent, 3000);
    assert_eq!(
        received, sent,
        "packets lost while the agents were re-applied"
    );
    Ok(())
}

#[test]
fn the_agent_refuses_configs_it_cannot_serve_and_says_why() -> TestResult {
    let pair = strait_testbed::NodePair::new()?;
    let agent = Agent::new(&pair.node, "refuse")?;
    let config = |gateway: &str, destination: &str| {
        format!(
            "underlay: eth0\nlocalEndpoints: [198.18.0.1]\nroutes:\n  - destinations: ['{destination}']\n    gateways: ['{gateway}']\n    vni: 5\n"
        )
    };
    let refusal = |yaml: String| -> Result<String, Box<dyn std::error::Error>> {
        let Err(e) = agent.apply(&yaml) else {
            return Err("config accepted".into());
        };
        Ok(e.to_string())
    };
    // NodePair's namespaces do not forward: outer packets could not be routed.
    assert!(
        refusal(config("198.18.0.2", "198.19.0.0/24"))?.contains("ipv4 forwarding is off on eth0")
    );
    assert!(refusal(config("198.18.0.2", "198.19.0.1/24"))?
        .contains("host bits are set; did you mean 198.19.0.0/24?"));
    assert!(refusal(config("fd00:5::2", "198.19.0.0/24"))?
        .contains("no gateway/endpoint of a family this host has a local endpoint for"));
    assert!(refusal(
        config("198.18.0.2", "198.19.0.0/24").replace("underlay: eth0", "underlay: eth9")
    )?
    .contains("no interface named eth9"));
    assert!(!pins_exist(&agent), "a refused config pins nothing");
    Ok(())
}

fn pins_exist(agent: &Agent<'_>) -> bool {
    agent.pins.path().exists()
}

#[test]
fn path_mtu_discovery_works_across_the_fabric() -> TestResult {
    let cluster = FabricCluster::new(1)?;
    let (nodes, _gateway) = start(&cluster)?;
    // A pod whose interface MTU ignores the overlay: the fabric must tell it.
    let node = &cluster.nodes[0];
    node.ns.ip(&["link", "set", "pod", "mtu", "1500"])?;
    node.pod.ip(&["link", "set", "eth0", "mtu", "1500"])?;
    for (target, size, expected) in [
        (REMOTE_V4.to_string(), "1472", "mtu = 1444"),
        (REMOTE_V6.to_string(), "1452", "mtu=1444"),
    ] {
        let out = node
            .pod
            .command("ping")
            .args([
                "-c", "2", "-i", "0.3", "-W", "1", "-M", "do", "-s", size, &target,
            ])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(text.contains(expected), "ping {target} -s {size}:\n{text}");
        // Having learnt the path MTU, a fitting ping goes through.
        let fits = node
            .pod
            .command("ping")
            .args(["-c", "1", "-W", "2", "-s", "1000", &target])
            .output()?;
        assert!(fits.status.success(), "ping {target} -s 1000");
    }
    assert!(
        nodes[0]
            .stats()?
            .counter(FabricCounter::AnsweredTooBig)
            .packets
            >= 2
    );
    Ok(())
}
