//! Act 4: the dataplane between the two clusters of act 3, whose pods use
//! the same CIDRs. Each cluster, in network namespaces:
//!
//! ```text
//!  pod ─ node ═Geneve═ gateway node ─ gateway pod (strait-gateway, NAT) ══WireGuard══ (the other cluster)
//!         (strait-fabric)  (strait-fabric)        (strait-fabric nat)       internet bridge
//! ```
//! The network module of each cluster's strait-controller remaps the peer's
//! pod CIDRs (Configuration, applied with kubectl) and derives InternalNodes
//! from the Nodes of act 3. Until the GatewayServer/GatewayClient
//! controllers drive strait-gateway and strait-fabric, the demo renders
//! their `--config` files from those same objects.

use std::{net::SocketAddr, time::Duration};

use anyhow::{bail, Context as _, Result};
use kube::Api;
use serde_json::Value;
use strait_api::{
    names,
    networking::{Configuration, ConnectionState, InternalNode},
};
use strait_common::fabric::FabricCounter;
use strait_dataplane::{bpffs::PinDir, drops::DropCounts, fabric::FabricStats};
use tokio::runtime::Runtime;

use super::{
    control_plane::{Cluster, Clusters, NODE_POD_CIDRS, NODE_UNDERLAY, POD_CIDRS},
    k8s::{get_json, kubectl, wait_condition, wait_for, STEP},
    Report, Stage,
};
use crate::{
    bpffs::TestPinDir,
    capture::Capture,
    gateway::{self, unique_ifname, Gateway, Internet, Tunnel},
    netns::run,
    traffic::tcp_transfer_translated,
    FabricCli, NetNs, Veth,
};

/// The pod of each cluster's node (the same address in both clusters).
pub const PROVIDER_POD_V4: &str = "198.18.65.10";
const POD_V4: &str = "198.18.65.10";
const POD_V6: &str = "fd00:6:1::10";
const GATEWAY_NODE: [&str; 2] = ["198.18.0.2", "fd00:f::2"];
/// The veth between the gateway node and the gateway pod.
const GATEWAY_NODE_LAN: [&str; 2] = ["198.18.1.1", "fd00:1::1"];
const GATEWAY_POD_LAN: [&str; 2] = ["198.18.1.2", "fd00:1::2"];
const VNI: u32 = 7001;
const WIREGUARD_PORT: u16 = 51_871;
/// Pod MTU: the underlay's 1500 minus Geneve over IPv6 and WireGuard over IPv6.
const POD_MTU: &str = "1360";

const ROUTER: &[&str] = &[
    "net.ipv4.ip_forward=1",
    "net.ipv6.conf.all.forwarding=1",
    "net.ipv6.conf.default.forwarding=1",
    "net.ipv4.conf.all.rp_filter=0",
    "net.ipv4.conf.default.rp_filter=0",
];

/// One cluster's hosts.
struct Site {
    underlay: NetNs,
    node: NetNs,
    pod: NetNs,
    gateway_node: NetNs,
    gateway_pod: NetNs,
}

fn sysctl(ns: &NetNs, settings: &[&str]) -> Result<()> {
    let mut cmd = ns.command("sysctl");
    cmd.arg("-q");
    for s in settings {
        cmd.args(["-w", s]);
    }
    run(&mut cmd)?;
    Ok(())
}

fn cidr(address: &str, v4_len: u8, v6_len: u8) -> String {
    if address.contains(':') {
        format!("{address}/{v6_len}")
    } else {
        format!("{address}/{v4_len}")
    }
}

impl Site {
    fn new(id: &str, internet: &Internet, internet_host: u8) -> Result<Site> {
        let site = Site {
            underlay: NetNs::new(&format!("{id}-ul"))?,
            node: NetNs::new(&format!("{id}-node1"))?,
            pod: NetNs::new(&format!("{id}-pod"))?,
            gateway_node: NetNs::new(&format!("{id}-gwnode"))?,
            gateway_pod: NetNs::new(&format!("{id}-gwpod"))?,
        };
        for router in [&site.node, &site.gateway_node, &site.gateway_pod] {
            sysctl(router, ROUTER)?;
        }
        let ul = &site.underlay;
        ul.ip(&["link", "add", "br0", "type", "bridge"])?;
        ul.ip(&["link", "set", "br0", "up"])?;
        for (host, iface, port, addresses) in [
            (&site.node, "eth0", "n1", NODE_UNDERLAY),
            (&site.gateway_node, "eth0", "gw", GATEWAY_NODE),
        ] {
            let addrs = addresses.map(|a| cidr(a, 24, 64));
            Veth::pair(
                (host, iface, &addrs.each_ref().map(String::as_str)),
                (ul, port, &[]),
            )?;
            ul.ip(&["link", "set", port, "master", "br0"])?;
        }
        let pod_gw = NODE_POD_CIDRS.map(|c| c.replace(".0/24", ".1/24").replace("::/64", "::1/64"));
        Veth::pair(
            (&site.node, "pod", &pod_gw.each_ref().map(String::as_str)),
            (
                &site.pod,
                "eth0",
                &[&cidr(POD_V4, 24, 64), &cidr(POD_V6, 24, 64)],
            ),
        )?;
        site.node.ip(&["link", "set", "pod", "mtu", POD_MTU])?;
        site.pod.ip(&["link", "set", "eth0", "mtu", POD_MTU])?;
        site.pod.ip(&[
            "route",
            "add",
            "default",
            "via",
            &pod_gw[0].replace("/24", ""),
        ])?;
        site.pod.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &pod_gw[1].replace("/64", ""),
        ])?;

        let node_lan = GATEWAY_NODE_LAN.map(|a| cidr(a, 30, 64));
        let pod_lan = GATEWAY_POD_LAN.map(|a| cidr(a, 30, 64));
        Veth::pair(
            (
                &site.gateway_node,
                "tun0",
                &node_lan.each_ref().map(String::as_str),
            ),
            (
                &site.gateway_pod,
                "lan0",
                &pod_lan.each_ref().map(String::as_str),
            ),
        )?;
        internet.attach(&site.gateway_pod, internet_host)?;
        // The gateway pod sends this cluster's pods back to the gateway node.
        for (pods, via) in POD_CIDRS.iter().zip(GATEWAY_NODE_LAN) {
            site.gateway_pod.ip(&["route", "add", pods, "via", via])?;
        }
        Ok(site)
    }
}

/// The dataplane, kept running until dropped. Fields drop in order:
/// processes, then pinned programs, then the namespaces they ran in.
pub struct Dataplane {
    gateways: Vec<Gateway>,
    fabric_pins: Vec<TestPinDir>,
    nat_pins: Vec<TestPinDir>,
    sites: Vec<Site>,
    _internet: Internet,
}

impl Dataplane {
    pub fn print_access(&self) {
        println!("\nthe dataplane's namespaces (nsenter --net=/run/netns/<name> ...):");
        for site in &self.sites {
            println!(
                "  pod {}  node {}  gateway node {}  gateway pod {}",
                site.pod.name(),
                site.node.name(),
                site.gateway_node.name(),
                site.gateway_pod.name()
            );
        }
    }
}

/// How this cluster sees the peer's pods: the Configuration's status.
async fn remapped(cluster: &Cluster, peer: &str) -> Result<Vec<String>, String> {
    let configurations: Api<Configuration> =
        Api::namespaced(cluster.client(), &names::tenant_namespace(peer));
    let config = get_json(&configurations, peer).await?;
    config
        .pointer("/status/remote/cidr/pod")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .ok_or_else(|| "no status.remote yet".into())
}

pub fn act(
    runtime: &Runtime,
    stage: &Stage,
    clusters: &Clusters,
    report: &mut Report,
) -> Result<Dataplane> {
    let pair = [(&clusters.a, clusters.b.id), (&clusters.b, clusters.a.id)];
    report.say(format!(
        "both clusters use pod CIDRs {} and {}: each remaps the other's (network module, Configuration)",
        POD_CIDRS[0], POD_CIDRS[1]
    ));
    let mut views = Vec::new();
    for (cluster, peer) in pair {
        let yaml = format!(
            "apiVersion: networking.strait.dev/v1beta1\nkind: Configuration\nmetadata:\n  name: {peer}\n  namespace: {ns}\nspec:\n  local:\n    cidr:\n      pod: [{l4}, \"{l6}\"]\n  remote:\n    cidr:\n      pod: [{l4}, \"{l6}\"]\n",
            ns = names::tenant_namespace(peer),
            l4 = POD_CIDRS[0],
            l6 = POD_CIDRS[1],
        );
        let file = stage.path(&format!("{}-network.yaml", cluster.id));
        std::fs::write(&file, yaml)?;
        report.say(format!(
            "{} $ kubectl apply --server-side -f {}-network.yaml",
            cluster.id, cluster.id
        ));
        report.say(kubectl(
            &cluster.kubeconfig,
            &["apply", "--server-side", "-f", &file.display().to_string()],
        )?);
        let configurations: Api<Configuration> =
            Api::namespaced(cluster.client(), &names::tenant_namespace(peer));
        let ready = runtime.block_on(wait_condition(&configurations, peer, "Ready"));
        let view = runtime.block_on(remapped(cluster, peer));
        let ok = report.check(
            &format!(
                "{}: the pods of {peer} are remapped away from its own",
                cluster.id
            ),
            match (&ready, &view) {
                (Ok(_), Ok(seen)) if seen.iter().zip(POD_CIDRS).all(|(s, p)| s != p) => {
                    Ok(format!(
                        "{peer}'s {} seen as {}",
                        POD_CIDRS.join(", "),
                        seen.join(", ")
                    ))
                }
                (Err(e), _) | (_, Err(e)) => Err(e.clone()),
                (_, Ok(seen)) => Err(format!("not remapped: {seen:?}")),
            },
        );
        if !ok {
            bail!("the network module did not remap the peer's pods");
        }
        views.push(view.map_err(anyhow::Error::msg)?);
    }
    let mut internal_nodes = Vec::new();
    for cluster in [&clusters.a, &clusters.b] {
        let api: Api<InternalNode> = Api::all(cluster.client());
        let node = cluster.node_name();
        let found = runtime.block_on(wait_for(STEP, || get_json(&api, &node)));
        let spec = found.as_ref().ok().and_then(|n| n.get("spec").cloned());
        report.check(
            &format!("{}: InternalNode {node} derived from the Node", cluster.id),
            found.map(|n| format!("spec {}", n["spec"])),
        );
        internal_nodes.push(spec.context("no InternalNode")?);
    }

    let internet = Internet::new()?;
    let sites = vec![Site::new("a", &internet, 1)?, Site::new("b", &internet, 2)?];
    let mut dataplane = Dataplane {
        gateways: Vec::new(),
        fabric_pins: Vec::new(),
        nat_pins: Vec::new(),
        sites,
        _internet: internet,
    };
    let sites = &dataplane.sites;
    report.say(format!(
        "namespaces: per cluster a pod, a node, a gateway node and a gateway pod; the gateway pods meet on an internet bridge ({} and {})",
        gateway::underlay_v4(1),
        gateway::underlay_v4(2)
    ));

    // The tunnel: cluster-b's gateway serves, cluster-a's dials it.
    let interfaces = [unique_ifname("wga"), unique_ifname("wgb")];
    let keys = [stage.path("gateway-a.pub"), stage.path("gateway-b.pub")];
    for i in 0..2 {
        let (own, peer) = (i, 1 - i);
        // What may arrive through the tunnel: the peer's pods as this cluster sees them.
        let allowed = format!(
            "  allowedIps: [{}]\n",
            views[own]
                .iter()
                .map(|c| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let config = if own == 1 {
            gateway::server_config(
                &interfaces[own],
                WIREGUARD_PORT,
                &keys[peer],
                &keys[own],
                &Tunnel,
                &allowed,
            )
        } else {
            gateway::client_config(
                &interfaces[own],
                &gateway::underlay_v4(2),
                WIREGUARD_PORT,
                &keys[peer],
                &keys[own],
                &Tunnel,
                &allowed,
            )
        };
        let name = if own == 1 { "gateway-b" } else { "gateway-a" };
        report.say(format!(
            "gateway pod {} $ strait-gateway --config {name}.yaml",
            ["a", "b"][own]
        ));
        dataplane.gateways.push(Gateway::start(
            &sites[own].gateway_pod,
            &stage.dir,
            name,
            &config,
            &[],
        )?);
    }
    for (i, gw) in dataplane.gateways.iter_mut().enumerate() {
        let connected = gw.wait_status(Duration::from_secs(20), |s| {
            s.connection.value == ConnectionState::Connected
        });
        report.check(
            &format!(
                "{}: strait-gateway's WireGuard tunnel is Connected",
                [clusters.a.id, clusters.b.id][i]
            ),
            connected.map(|s| {
                format!(
                    "{} backend on {}, peer {}",
                    s.backend,
                    s.interface,
                    s.peer_endpoint.unwrap_or_default()
                )
            }),
        );
    }

    let mut fabric_pins = Vec::new();
    let mut nat_pins = Vec::new();
    for (i, site) in sites.iter().enumerate() {
        let (own, peer) = (i, 1 - i);
        let pod = &site.gateway_pod;
        // Traffic to the peer's pods goes into the tunnel.
        for seen in &views[own] {
            pod.ip(&["route", "replace", seen, "dev", &interfaces[own]])?;
        }
        for (seen, via) in views[own].iter().zip(GATEWAY_POD_LAN) {
            site.gateway_node.ip(&["route", "add", seen, "via", via])?;
        }
        // The NAT of this gateway: this cluster's pods are exposed as the
        // peer sees them (the peer's Configuration status): their source
        // is translated on the way out, the destination back on the way in.
        let mut nat = String::from("prefixes:\n");
        for (real, as_seen) in POD_CIDRS.iter().zip(&views[peer]) {
            nat.push_str(&format!(
                "  - {{direction: Source, from: \"{real}\", to: \"{as_seen}\"}}\n"
            ));
        }
        let nat_file = stage.path(&format!("nat-{}.yaml", ["a", "b"][own]));
        std::fs::write(&nat_file, &nat)?;
        let pins = TestPinDir::new(&format!("demo-nat-{own}"))?;
        let cli = FabricCli::new(pod, pins.path())?;
        report.say(format!(
            "gateway pod {} $ strait-fabric nat apply --config nat-{}.yaml && strait-fabric nat attach --iface {}",
            ["a", "b"][own], ["a", "b"][own], interfaces[own]
        ));
        report.say(cli.run(&["nat", "apply", "--config", &nat_file.display().to_string()])?);
        report.say(cli.run(&["nat", "attach", "--iface", &interfaces[own]])?);
        nat_pins.push(pins);

        // Fabric on the node: the peer's pods (as seen here) are behind the gateway node.
        let destinations = views[own]
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let node_config = format!(
            "underlay: eth0\nencapInterfaces: [pod]\nlocalEndpoints: ['{}', '{}']\nroutes:\n  - destinations: [{destinations}]\n    gateways: ['{}', '{}']\n    vni: {VNI}\n",
            NODE_UNDERLAY[0], NODE_UNDERLAY[1], GATEWAY_NODE[0], GATEWAY_NODE[1]
        );
        let (pins, applied) =
            apply_fabric(stage, &site.node, &format!("demo-{own}-node"), &node_config)?;
        report.say(format!(
            "node {} $ strait-fabric apply: {}",
            ["a", "b"][own],
            applied.trim()
        ));
        fabric_pins.push(pins);
        // Fabric on the gateway node: this cluster's InternalNodes.
        let node_name = [&clusters.a, &clusters.b][own].node_name();
        let spec = &internal_nodes[own];
        let gateway_config = format!(
            "underlay: eth0\nencapInterfaces: [tun0]\nlocalEndpoints: ['{}', '{}']\nnodeVni: {VNI}\ninternalNodes:\n  - name: {node_name}\n    endpoints: {}\n    podCIDRs: {}\n",
            GATEWAY_NODE[0], GATEWAY_NODE[1], spec["endpoints"], spec["podCIDRs"]
        );
        let (pins, applied) = apply_fabric(
            stage,
            &site.gateway_node,
            &format!("demo-{own}-gwnode"),
            &gateway_config,
        )?;
        report.say(format!(
            "gateway node {} $ strait-fabric apply: {}",
            ["a", "b"][own],
            applied.trim()
        ));
        fabric_pins.push(pins);
    }
    let (site_a, site_b) = (&sites[0], &sites[1]);

    // Pod A reaches pod B at the address cluster-a gives it.
    let remote_v4 = remap(POD_V4, POD_CIDRS[0], &views[0][0])?;
    let remote_v6 = remap(POD_V6, POD_CIDRS[1], &views[0][1])?;
    let a_as_seen_by_b = remap(POD_V4, POD_CIDRS[0], &views[1][0])?;
    report.say(format!(
        "pod {POD_V4} of cluster-a -> pod {POD_V4} of cluster-b, which cluster-a knows as {remote_v4} / {remote_v6}"
    ));
    let sniff = Capture::start(&site_b.pod, "eth0", "icmp", 2, 10)?;
    for target in [&remote_v4, &remote_v6] {
        let replies = gateway::ping(&site_a.pod, target, 3, "0.2");
        report.check(
            &format!("cluster-a's pod pings cluster-b's pod at {target}"),
            if replies == 3 {
                Ok("3/3 echo replies over Geneve -> WireGuard -> Geneve".into())
            } else {
                Err(format!("{replies}/3 echo replies"))
            },
        );
    }
    let seen = sniff.finish()?;
    report.check(
        &format!("cluster-b's pod sees cluster-a's pod as {a_as_seen_by_b} (NAT both ways)"),
        if let Some(line) = seen
            .lines()
            .find(|l| l.contains(&format!("{a_as_seen_by_b} > {POD_V4}")))
        {
            Ok(line.trim().to_owned())
        } else {
            Err(format!("tcpdump in cluster-b's pod:\n{seen}"))
        },
    );
    let bytes = 4 << 20;
    let acked = tcp_transfer_translated(
        &site_a.pod,
        &site_b.pod,
        SocketAddr::new(remote_v6.parse()?, 7200),
        SocketAddr::new(POD_V6.parse()?, 7200),
        bytes,
    )?;
    report.check(
        "4 MiB over TCP/IPv6 from cluster-a's pod to cluster-b's (remapped)",
        if acked == bytes as u64 {
            Ok(format!("{acked} bytes acknowledged"))
        } else {
            Err(format!("{acked} of {bytes} bytes"))
        },
    );

    let mut encapsulated = 0;
    let mut drops = 0;
    for pins in &fabric_pins {
        let stats = FabricStats::read_pinned(&PinDir::open(pins.path())?)?;
        encapsulated += stats.counter(FabricCounter::Encapsulated).packets;
        drops += stats.drops.total();
    }
    for pins in &nat_pins {
        drops += DropCounts::read_pinned(&PinDir::open(pins.path())?)?.total();
    }
    // The receiving gateway's counters include the TCP transfer once its
    // status file has been rewritten (every probe interval).
    let carried =
        dataplane.gateways[1].wait_status(Duration::from_secs(5), |s| s.rx_bytes >= bytes as u64);
    let tunnel = match &carried {
        Ok(s) => format!(
            "{} received {} B through WireGuard",
            s.interface, s.rx_bytes
        ),
        Err(e) => e.lines().next().unwrap_or("").to_owned(),
    };
    report.check(
        "the fabrics encapsulated, the tunnel carried it, nothing was dropped",
        if encapsulated > 0 && drops == 0 && carried.is_ok() {
            Ok(format!(
                "{encapsulated} packets Geneve-encapsulated; {tunnel}; 0 drops"
            ))
        } else {
            Err(format!(
                "{encapsulated} encapsulated, {drops} drops; {tunnel}"
            ))
        },
    );
    dataplane.fabric_pins = fabric_pins;
    dataplane.nat_pins = nat_pins;
    Ok(dataplane)
}

/// `strait-fabric apply --config` of `yaml` in `ns`, with its own pin directory.
fn apply_fabric(
    stage: &Stage,
    ns: &NetNs,
    label: &str,
    yaml: &str,
) -> Result<(TestPinDir, String)> {
    let pins = TestPinDir::new(label)?;
    let file = stage.path(&format!("{label}.yaml"));
    std::fs::write(&file, yaml)?;
    let out = FabricCli::new(ns, pins.path())?.run(&[
        "apply",
        "--config",
        &file.display().to_string(),
    ])?;
    Ok((pins, out))
}

/// `address` of `real` moved to the same offset in `seen`.
fn remap(address: &str, real: &str, seen: &str) -> Result<String> {
    let network = |cidr: &str| -> Result<(std::net::IpAddr, u8)> {
        let (a, l) = cidr.split_once('/').context("not a CIDR")?;
        Ok((a.parse()?, l.parse()?))
    };
    let ((real_net, len), (seen_net, _)) = (network(real)?, network(seen)?);
    let addr: std::net::IpAddr = address.parse()?;
    Ok(match (addr, real_net, seen_net) {
        (std::net::IpAddr::V4(a), _, std::net::IpAddr::V4(s)) => {
            let host = u32::from(a) & (u32::MAX >> len);
            std::net::Ipv4Addr::from(u32::from(s) | host).to_string()
        }
        (std::net::IpAddr::V6(a), _, std::net::IpAddr::V6(s)) => {
            let host = u128::from(a) & (u128::MAX >> len);
            std::net::Ipv6Addr::from(u128::from(s) | host).to_string()
        }
        _ => bail!("{address} and {seen} are of different families"),
    })
}
