//! The Geneve fabric end to end: three nodes and a gateway on an underlay
//! bridge, pods on the nodes, a remote cluster behind the gateway. Needs root.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use strait_common::fabric::FabricCounter;
use strait_testbed::{
    capture::Capture,
    fabric_topology::{FabricCluster, REMOTE_V4, REMOTE_V6},
    traffic::{tcp_transfer, udp_burst, udp_stream},
    FabricAgent, NetNs,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Starts the fabric on every node and on the gateway.
fn start(
    cluster: &FabricCluster,
) -> Result<(Vec<FabricAgent<'_>>, FabricAgent<'_>), Box<dyn std::error::Error>> {
    let mut nodes = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let agent = FabricAgent::new(&node.ns, &format!("node{}", i + 1))?;
        let out = agent.apply(&cluster.node_config(i))?;
        assert!(out.contains("steering pod into the fabric"), "{out}");
        nodes.push(agent);
    }
    let gateway = FabricAgent::new(&cluster.gateway, "gw")?;
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
        let drops = agent.stats()?.drops.total();
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
    let agent = FabricAgent::new(&pair.node, "refuse")?;
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

fn pins_exist(agent: &FabricAgent<'_>) -> bool {
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

/// GET `path` from the agent's metrics server inside `ns`.
fn http_get(ns: &NetNs, port: u16, path: &str) -> Result<String, Box<dyn std::error::Error>> {
    use std::io::{Read, Write};
    let response = ns.enter(|| -> std::io::Result<String> {
        let mut conn = std::net::TcpStream::connect_timeout(
            &([127, 0, 0, 1], port).into(),
            Duration::from_secs(1),
        )?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(conn, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
        let mut body = String::new();
        conn.read_to_string(&mut body)?;
        Ok(body)
    })??;
    Ok(response)
}

/// Polls `check` every 100 ms for at most `limit`.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

/// The agent process, stopped (SIGTERM, then SIGKILL) when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        if !eventually(Duration::from_secs(3), || {
            matches!(self.0.try_wait(), Ok(Some(_)))
        }) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

#[test]
fn the_agent_follows_its_config_file_and_exports_metrics() -> TestResult {
    let cluster = FabricCluster::new(1)?;
    let gateway = FabricAgent::new(&cluster.gateway, "gw")?;
    gateway.apply(&cluster.gateway_config())?;
    // The node's agent runs as a daemon (one agent per host and pin directory).
    let node = &cluster.nodes[0];
    let agent = FabricAgent::new(&node.ns, "daemon")?;
    std::fs::write(&agent.config, cluster.node_config(0))?;
    let bin = strait_testbed::bins::path("strait-fabric")?;
    let mut cmd = node.ns.command("timeout");
    cmd.args(["60"])
        .arg(&bin)
        .arg("--pin-dir")
        .arg(agent.pins.path());
    cmd.args([
        "run",
        "--metrics-address",
        "127.0.0.1:9464",
        "--poll-interval",
        "200ms",
        "--config",
    ])
    .arg(&agent.config);
    let mut running = Running(
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?,
    );
    assert!(
        eventually(Duration::from_secs(10), || http_get(
            &node.ns, 9464, "/healthz"
        )
        .is_ok_and(|r| r.contains("200 OK"))),
        "the agent did not come up"
    );

    assert_eq!(
        udp_burst(&node.pod, &cluster.remote, remote(false, 7005), 10, 64)?,
        10
    );
    let metrics = http_get(&node.ns, 9464, "/metrics")?;
    assert!(
        metrics.contains("strait_fabric_packets_total{action=\"encapsulated\"} 10"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE strait_drops_total counter"),
        "{metrics}"
    );
    assert!(
        metrics.contains("strait_drops_total{reason=\"unknown_vni\"} 0"),
        "{metrics}"
    );

    // A new route in the file is picked up without a restart.
    let encapsulated = || {
        agent
            .stats()
            .map(|s| s.counter(FabricCounter::Encapsulated).packets)
            .unwrap_or(0)
    };
    let extra = SocketAddr::new(IpAddr::V4([198, 19, 128, 5].into()), 7006);
    let with_extra = format!(
        "{}  - destinations: [198.19.128.0/24]\n    gateways: ['198.18.0.2']\n    vni: 4242\n",
        cluster.node_config(0)
    );
    std::fs::write(&agent.config, with_extra)?;
    assert!(
        eventually(Duration::from_secs(5), || {
            let before = encapsulated();
            // Nobody listens there: only whether the node encapsulates it matters.
            let sent = node.pod.enter(|| {
                std::net::UdpSocket::bind("0.0.0.0:0").and_then(|s| s.send_to(b"ping", extra))
            });
            sent.is_ok() && eventually(Duration::from_millis(200), || encapsulated() > before)
        }),
        "the route added to the file was not applied"
    );

    // A broken edit is refused; the agent and the datapath keep going.
    std::fs::write(&agent.config, "underlay: eth0\nroutes: [nonsense\n")?;
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        matches!(running.0.try_wait(), Ok(None)),
        "the agent survived a bad config"
    );
    assert_eq!(
        udp_burst(&node.pod, &cluster.remote, remote(false, 7007), 5, 64)?,
        5
    );

    // Stopping the agent leaves the fabric running.
    // SAFETY: kill(2) on the pid of our child.
    unsafe { libc::kill(running.0.id() as i32, libc::SIGTERM) };
    assert!(
        eventually(
            Duration::from_secs(3),
            || matches!(running.0.try_wait(), Ok(Some(s)) if s.success())
        ),
        "clean exit on SIGTERM"
    );
    assert_eq!(
        udp_burst(&node.pod, &cluster.remote, remote(false, 7008), 5, 64)?,
        5,
        "traffic flows without the agent"
    );
    Ok(())
}
