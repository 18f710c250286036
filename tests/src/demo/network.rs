//! Act 4: the dataplane between the two clusters of act 3, whose pods use
//! the same CIDRs. Each cluster, in network namespaces:
//!
//! ```text
//!  pod ─ node ═Geneve═ gateway node ─ gateway pod (strait-gateway) ══WireGuard══ (the other cluster)
//!    (strait-fabric run)  (strait-fabric run)   (strait-fabric nat run)   internet bridge
//! ```
//! Everything a cluster's network module decides comes from its CRs: the
//! remap of the peer's pods (a Configuration, applied with kubectl), the
//! gateways (GatewayServer/GatewayClient: the controller runs
//! `strait-gateway`, see [`gateways`](super::gateways)), the fabric
//! (`strait-fabric run --from-cluster` follows the RouteConfiguration the
//! network module writes from the Configuration and the gateway's internal
//! endpoint, and the InternalNodes derived from the Nodes), and the
//! gateways' NAT (the controller runs `strait-fabric nat run --from-cluster`
//! next to each gateway, following the NatConfiguration the network module
//! renders from the Configuration).

use std::{net::SocketAddr, process::Command, time::Duration};

use anyhow::{bail, Context as _, Result};
use kube::Api;
use serde_json::Value;
use strait_api::{
    names::{self, label::REMOTE_CLUSTER_ID},
    networking::{
        ApplyState, Configuration, GatewayClient, GatewayServer, InternalNode, NatConfiguration,
        RouteConfiguration,
    },
};
use strait_common::fabric::FabricCounter;
use strait_dataplane::{
    bpffs::PinDir,
    drops::DropCounts,
    fabric::{pinned_routes_v4, FabricStats},
};
use strait_network::gateway::{controller::NAT_READY, nat_host};
use tokio::runtime::Runtime;

use super::{
    control_plane::{Cluster, Clusters, NODE_POD_CIDRS, NODE_UNDERLAY, POD_CIDRS, REMAP_POOLS},
    gateways,
    k8s::{get_json, kubectl, wait_condition, wait_for, STEP},
    process, service, Report, Stage,
};
use crate::{
    bins,
    bpffs::TestPinDir,
    capture::Capture,
    gateway::{self, Internet, Process},
    netns::run,
    probe::Prober,
    relay::ApiRelay,
    traffic::tcp_transfer_translated,
    NetNs, Veth,
};

/// The pod of each cluster's node (the same address in both clusters).
pub const PROVIDER_POD_V4: &str = "198.18.65.10";
pub const POD_V4: &str = "198.18.65.10";
pub const POD_V6: &str = "fd00:6:1::10";
const GATEWAY_NODE: [&str; 2] = ["198.18.0.2", "fd00:f::2"];
/// The veth between the gateway node and the gateway pod.
const GATEWAY_NODE_LAN: [&str; 2] = ["198.18.1.1", "fd00:1::1"];
const GATEWAY_POD_LAN: [&str; 2] = ["198.18.1.2", "fd00:1::2"];
/// The fabric's VNI from the gateway node back to the nodes; each peering's
/// routes toward the gateway get their own VNI from the network module.
const NODE_VNI: u32 = 7001;
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
pub struct Site {
    pub underlay: NetNs,
    pub node: NetNs,
    pub pod: NetNs,
    pub gateway_node: NetNs,
    pub gateway_pod: NetNs,
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
        // The gateway pod sends this cluster's pods back to the gateway
        // node, by the node's pod CIDRs (the gateway itself refuses to route
        // anything overlapping them into the tunnel).
        for (pods, via) in NODE_POD_CIDRS.iter().zip(GATEWAY_NODE_LAN) {
            site.gateway_pod.ip(&["route", "add", pods, "via", via])?;
        }
        Ok(site)
    }
}

impl Site {
    /// The gateway routes the peer's pods as seen here (`seen`, the
    /// remapped ranges) into the tunnel itself; the gateway node sends
    /// them to it (as a cluster's own routing to its gateway pod would).
    pub fn route_to_gateway_pod(&self, seen: &[String]) -> Result<()> {
        for (seen, via) in seen.iter().zip(GATEWAY_POD_LAN) {
            self.gateway_node.ip(&["route", "add", seen, "via", via])?;
        }
        Ok(())
    }

    /// The fabric agents of this cluster (`id`: "a" or "b"): on the node,
    /// following the RouteConfigurations; on the gateway node, following
    /// the InternalNodes and the routes toward itself. Each: the host, its
    /// role, `--from-cluster=` what, its `--config` file, and a destination
    /// its pinned routes must come to include (`seen_v4`: the peer's
    /// remapped IPv4 pods).
    pub fn fabric_agents(
        &self,
        seen_v4: &str,
    ) -> [(&NetNs, &'static str, &'static str, String, String); 2] {
        [
            (
                &self.node,
                "node",
                "routes",
                format!(
                    "underlay: eth0\nencapInterfaces: [pod]\nlocalEndpoints: ['{}', '{}']\nnodeVni: {NODE_VNI}\n",
                    NODE_UNDERLAY[0], NODE_UNDERLAY[1]
                ),
                seen_v4.to_owned(),
            ),
            (
                &self.gateway_node,
                "gateway node",
                "all",
                format!(
                    "underlay: eth0\nencapInterfaces: [tun0]\nlocalEndpoints: ['{}', '{}']\nnodeVni: {NODE_VNI}\n",
                    GATEWAY_NODE[0], GATEWAY_NODE[1]
                ),
                NODE_POD_CIDRS[0].to_owned(),
            ),
        ]
    }
}

/// Both clusters' hosts, made before the controllers start (a controller is
/// told which namespace its gateways run in).
pub struct Sites {
    /// Cluster-a's, then cluster-b's.
    pub sites: Vec<Site>,
    /// Per cluster, where its controller's gateway NAT agents pin their maps.
    gateway_nat_pins: Vec<TestPinDir>,
    _internet: Internet,
}

impl Sites {
    pub fn new() -> Result<Sites> {
        let internet = Internet::new()?;
        let sites = vec![Site::new("a", &internet, 1)?, Site::new("b", &internet, 2)?];
        Ok(Sites {
            sites,
            gateway_nat_pins: vec![
                TestPinDir::new("demo-a-gwnat")?,
                TestPinDir::new("demo-b-gwnat")?,
            ],
            _internet: internet,
        })
    }

    /// The kubeconfig cluster `index`'s gateway NAT agents use: written in
    /// act 4, pointing at a relay in the gateway pod's namespace.
    fn gateway_nat_kubeconfig(stage: &Stage, index: usize) -> std::path::PathBuf {
        stage.path(&format!("{}-gwnat.kubeconfig", ["a", "b"][index]))
    }

    /// The network module's gateway flags for cluster `index`'s controller.
    pub fn controller_args(&self, stage: &Stage, index: usize) -> Result<Vec<String>> {
        let binary = bins::path("strait-gateway").map_err(anyhow::Error::msg)?;
        let fabric = bins::path("strait-fabric").map_err(anyhow::Error::msg)?;
        Ok(vec![
            "--gateway-binary".into(),
            binary.display().to_string(),
            // Each gateway's NAT agent, run by the controller next to it.
            "--gateway-nat-binary".into(),
            fabric.display().to_string(),
            "--gateway-nat-pin-dir".into(),
            self.gateway_nat_pins[index].path().display().to_string(),
            "--gateway-nat-kubeconfig".into(),
            Self::gateway_nat_kubeconfig(stage, index)
                .display()
                .to_string(),
            "--gateway-state-dir".into(),
            gateways::state_dir(stage, index).display().to_string(),
            "--gateway-netns".into(),
            self.sites[index].gateway_pod.path().display().to_string(),
            "--gateway-advertise-address".into(),
            gateways::advertise_address(index),
            // Nodes reach the gateway pod through the gateway node.
            "--gateway-internal-address".into(),
            GATEWAY_NODE[0].into(),
            "--gateway-internal-address".into(),
            GATEWAY_NODE[1].into(),
            "--fabric-node-vni".into(),
            NODE_VNI.to_string(),
        ])
    }

    /// The way from each cluster's gateway pod to its API server that the
    /// gateways' NAT agents (started by the controllers) take, as a pod
    /// reaches its control plane: needed before the gateways start, kept
    /// while they run.
    pub fn relay_gateway_nat_agents(
        &self,
        stage: &Stage,
        clusters: [&Cluster; 2],
    ) -> Result<Vec<ApiRelay>> {
        clusters
            .into_iter()
            .enumerate()
            .map(|(index, cluster)| {
                relay_to_api(
                    cluster,
                    &self.sites[index].gateway_pod,
                    &Self::gateway_nat_kubeconfig(stage, index),
                )
            })
            .collect()
    }

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

/// What act 4 started, kept running until dropped. Fields drop in order:
/// the fabric agents, their relays, then the pinned programs.
pub struct Dataplane {
    _agents: Vec<Process>,
    _relays: Vec<ApiRelay>,
    fabric_pins: Vec<TestPinDir>,
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
    sites: &Sites,
    report: &mut Report,
) -> Result<Dataplane> {
    let pair = [(&clusters.a, clusters.b.id), (&clusters.b, clusters.a.id)];
    report.say(format!(
        "both clusters use pod CIDRs {} and {}: each remaps the other's (network module, Configuration)",
        POD_CIDRS[0], POD_CIDRS[1]
    ));
    let mut views = Vec::new();
    // From before the first network CR, a pod of cluster-a pings cluster-b's
    // pod where cluster-a will see it (the remap pools leave one choice).
    let first_applied = std::time::SystemTime::now();
    let mut prober = Prober::start(
        &sites.sites[0].pod,
        &remap(POD_V4, POD_CIDRS[0], REMAP_POOLS[0])?,
        Duration::from_millis(50),
        1200,
    )?;
    for (cluster, peer) in pair {
        let yaml = format!(
            "apiVersion: networking.strait.dev/v1beta1\nkind: Configuration\nmetadata:\n  name: {peer}\n  namespace: {ns}\n  labels:\n    {REMOTE_CLUSTER_ID}: {peer}\nspec:\n  local:\n    cidr:\n      pod: [{l4}, \"{l6}\"]\n  remote:\n    cidr:\n      pod: [{l4}, \"{l6}\"]\n",
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
    report.check(
        &format!(
            "{}: its virtual kubelet translates pod addresses with this remap",
            clusters.a.id
        ),
        if views[0] == REMAP_POOLS {
            Ok(format!(
                "--virtual-kubelet-pod-cidr-remap {}={} (act 3) is what the network module allocated",
                POD_CIDRS[0], REMAP_POOLS[0]
            ))
        } else {
            Err(format!(
                "the network module allocated {:?}, the virtual kubelet was given {REMAP_POOLS:?}",
                views[0]
            ))
        },
    );
    for cluster in [&clusters.a, &clusters.b] {
        let api: Api<InternalNode> = Api::all(cluster.client());
        let node = cluster.node_name();
        let found = runtime.block_on(wait_for(STEP, || get_json(&api, &node)));
        report.check(
            &format!("{}: InternalNode {node} derived from the Node", cluster.id),
            found.map(|n| format!("spec {}", n["spec"])),
        );
    }

    let mut dataplane = Dataplane {
        _agents: Vec::new(),
        _relays: sites.relay_gateway_nat_agents(stage, [&clusters.a, &clusters.b])?,
        fabric_pins: Vec::new(),
    };
    let nat_pin_roots: Vec<std::path::PathBuf> = sites
        .gateway_nat_pins
        .iter()
        .map(|p| p.path().to_owned())
        .collect();
    let sites = &sites.sites;
    report.say(format!(
        "namespaces: per cluster a pod, a node, a gateway node and a gateway pod; the gateway pods meet on an internet bridge ({} and {})",
        gateway::underlay_v4(1),
        gateway::underlay_v4(2)
    ));
    let tunnel = gateways::act(runtime, stage, clusters, report)?;
    let mut interfaces = Vec::new();
    for gw in &tunnel.gateways {
        let status = gw.status().map_err(anyhow::Error::msg)?;
        interfaces.push(status.interface);
    }

    let mut nat_pins = Vec::new();
    for (own, site) in sites.iter().enumerate() {
        let id = ["a", "b"][own];
        let cluster = [&clusters.a, &clusters.b][own];
        let peer = [&clusters.b, &clusters.a][own];
        // The gateway routes the peer's pods as seen here (the remapped
        // ranges) into the tunnel itself; the gateway node sends them to it.
        site.route_to_gateway_pod(&views[own])?;
        // The tunnel carries real addresses (the gateway accepts the peer's
        // real pod CIDRs), so the NAT sits on the tunnel interface: the
        // controller runs the gateway's NAT agent, which follows the network
        // module's own-view remap of the peer (its NatConfiguration) and
        // rewrites destinations on the way out and sources on the way in.
        let namespace = names::tenant_namespace(peer.id);
        let label = nat_host(&tunnel.gateways[own].name);
        let gateway = &tunnel.gateways[own];
        // cluster-a dials (GatewayClient), cluster-b listens (GatewayServer).
        let nat_ready = if own == 0 {
            let api: Api<GatewayClient> = Api::namespaced(cluster.client(), &gateway.namespace);
            runtime.block_on(wait_condition(&api, &gateway.name, NAT_READY))
        } else {
            let api: Api<GatewayServer> = Api::namespaced(cluster.client(), &gateway.namespace);
            runtime.block_on(wait_condition(&api, &gateway.name, NAT_READY))
        };
        report.check(
            &format!(
                "{}: the controller runs the gateway's NAT agent (strait-fabric nat run --from-cluster --iface {})",
                cluster.id, interfaces[own]
            ),
            nat_ready,
        );
        let pins = nat_pin_roots[own].join(&interfaces[own]);
        let nats: Api<NatConfiguration> = Api::namespaced(cluster.client(), &namespace);
        let applied = runtime.block_on(wait_for(STEP, || async {
            let list = nats
                .list(&Default::default())
                .await
                .map_err(|e| format!("listing NatConfigurations: {e}"))?;
            let mut seen = Vec::new();
            for nat in list.items {
                let name = nat.metadata.name.clone().unwrap_or_default();
                let host = nat
                    .status
                    .and_then(|s| s.hosts.into_iter().find(|h| h.host == label));
                match host {
                    Some(h) if h.state == ApplyState::Applied => {
                        let mappings = nat
                            .spec
                            .prefixes
                            .iter()
                            .map(|p| format!("{:?} {} -> {}", p.direction, p.from, p.to))
                            .collect::<Vec<_>>();
                        return Ok(format!("{name} Applied: {}", mappings.join(", ")));
                    }
                    Some(h) => seen.push(format!("{name}: {:?} {}", h.state, h.message)),
                    None => seen.push(format!("{name}: no status from {label} yet")),
                }
            }
            Err(format!("NatConfigurations in {namespace}: {seen:?}"))
        }));
        report.check(
            &format!(
                "{}: the gateway's NAT agent (started by the controller) applied the network module's NatConfiguration",
                cluster.id
            ),
            applied,
        );
        nat_pins.push(pins);

        // The nodes' routes toward the gateway: the network module writes
        // them once the peer is remapped and the gateway has an internal
        // endpoint.
        let routes: Api<RouteConfiguration> =
            Api::namespaced(cluster.client(), &names::tenant_namespace(peer.id));
        let written = runtime.block_on(wait_for(STEP, || get_json(&routes, peer.id)));
        report.check(
            &format!(
                "{}: the network module wrote RouteConfiguration {} (the peer's remapped pods -> the gateway's internal endpoint)",
                cluster.id, peer.id
            ),
            written.and_then(|object| describe_routes(&object, &views[own])),
        );

        // The fabric agents follow the cluster: routes on the node;
        // InternalNodes on the gateway node, and the routes toward it, whose
        // VNIs it terminates.
        for (host, role, follow, config, expect) in site.fabric_agents(&views[own][0]) {
            let label = format!("{id}-{}", role.replace(' ', ""));
            let (agent, relay, pins) = start_fabric(stage, cluster, host, &label, follow, &config)?;
            report.say(format!(
                "{role} {id} $ strait-fabric run --from-cluster={follow} --config fabric-{label}.yaml   # {}",
                config.trim().replace('\n', "; ")
            ));
            let seen = wait_route(&pins, &expect);
            report.check(
                &format!(
                    "{}: strait-fabric on the {role} loads {expect} from the cluster's {}",
                    cluster.id,
                    if follow == "routes" {
                        "RouteConfiguration"
                    } else {
                        "InternalNodes"
                    }
                ),
                seen,
            );
            dataplane._agents.push(agent);
            dataplane._relays.push(relay);
            dataplane.fabric_pins.push(pins);
        }
    }
    let (site_a, site_b) = (&sites[0], &sites[1]);

    // Pod A reaches pod B at the address cluster-a gives it.
    let remote_v4 = remap(POD_V4, POD_CIDRS[0], &views[0][0])?;
    let remote_v6 = remap(POD_V6, POD_CIDRS[1], &views[0][1])?;
    let a_as_seen_by_b = remap(POD_V4, POD_CIDRS[0], &views[1][0])?;
    report.say(format!(
        "pod {POD_V4} of cluster-a -> pod {POD_V4} of cluster-b, which cluster-a knows as {remote_v4} / {remote_v6}"
    ));
    if let Ok(after) = prober
        .first_reply()
        .map(|at| at.duration_since(first_applied).unwrap_or_default())
    {
        report.say(format!(
            "pod to pod: first echo {after:.1?} after the first network CR was applied (the demo checks every step in between; tests/tests/network_apply_to_first_packet.rs measures it alone)"
        ));
    }
    drop(prober);
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
    for pins in &dataplane.fabric_pins {
        let stats = FabricStats::read_pinned(&PinDir::open(pins.path())?)?;
        encapsulated += stats.counter(FabricCounter::Encapsulated).packets;
        drops += stats.drops.total();
    }
    for pins in &nat_pins {
        drops += DropCounts::read_pinned(&PinDir::open(pins)?)?.total();
    }
    // The receiving gateway's counters include the TCP transfer once its
    // status file has been rewritten (4 times a second).
    let carried =
        tunnel.gateways[1].wait_status(Duration::from_secs(5), |s| s.rx_bytes >= bytes as u64);
    let through = match &carried {
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
                "{encapsulated} packets Geneve-encapsulated; {through}; 0 drops"
            ))
        } else {
            Err(format!(
                "{encapsulated} encapsulated, {drops} drops; {through}"
            ))
        },
    );

    let pods = service::Pods {
        consumer: &site_a.pod,
        provider: &site_b.pod,
        provider_ip: PROVIDER_POD_V4,
        remapped: &remote_v4,
    };
    service::act(runtime, stage, clusters, &pods, report)?;
    Ok(dataplane)
}

/// `strait-fabric run --from-cluster=<follow>` in `host`: see [`start_agent`].
pub fn start_fabric(
    stage: &Stage,
    cluster: &Cluster,
    host: &NetNs,
    label: &str,
    follow: &str,
    config: &str,
) -> Result<(Process, ApiRelay, TestPinDir)> {
    let config_file = stage.path(&format!("fabric-{label}.yaml"));
    std::fs::write(&config_file, config)?;
    let follow = format!("--from-cluster={follow}");
    let config_file = config_file.display().to_string();
    let args = [
        "run",
        "--poll-interval",
        "200ms",
        &follow,
        "--config",
        &config_file,
    ];
    start_agent(stage, cluster, host, label, &args)
}

/// A relay from `host` to the cluster's API server, and a kubeconfig
/// through it written to `kubeconfig`.
fn relay_to_api(cluster: &Cluster, host: &NetNs, kubeconfig: &std::path::Path) -> Result<ApiRelay> {
    let target: SocketAddr = cluster
        .api
        .url()
        .split("://")
        .nth(1)
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("the API server address in {}", cluster.api.url()))?;
    let relay = ApiRelay::start(host, target)?;
    relay.kubeconfig(&cluster.api.kubeconfig_yaml()?, target, kubeconfig)?;
    Ok(relay)
}

/// `strait-fabric <args>` in `host` with its own pin directory, reaching
/// its cluster's API server through a relay; logs to `fabric-<label>.log`.
pub fn start_agent(
    stage: &Stage,
    cluster: &Cluster,
    host: &NetNs,
    label: &str,
    args: &[&str],
) -> Result<(Process, ApiRelay, TestPinDir)> {
    let kubeconfig = stage.path(&format!("fabric-{label}.kubeconfig"));
    let relay = relay_to_api(cluster, host, &kubeconfig)?;
    let pins = TestPinDir::new(&format!("demo-{label}"))?;
    let binary = bins::path("strait-fabric").map_err(anyhow::Error::msg)?;
    let mut command: Command = host.command(&binary);
    command
        .arg("--pin-dir")
        .arg(pins.path())
        .args(args)
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info");
    let agent = process::spawn(command, stage.path(&format!("fabric-{label}.log")))?;
    Ok((agent, relay, pins))
}

/// What the controller's RouteConfiguration says, if it routes the peer's
/// pods as `seen` here to the gateway node on a VNI of the peering's own.
fn describe_routes(object: &Value, seen: &[String]) -> Result<String, String> {
    let routes = object
        .pointer("/spec/routes")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("no spec.routes in {object}"))?;
    let mut destinations = Vec::new();
    let mut vnis = Vec::new();
    for route in routes {
        let gateways = route["gateways"].as_array().cloned().unwrap_or_default();
        if gateways.first().and_then(Value::as_str) != Some(GATEWAY_NODE[0]) {
            return Err(format!("a route not via the gateway node: {route}"));
        }
        destinations.extend(
            route["destinations"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(String::from),
        );
        vnis.extend(route["vni"].as_u64());
    }
    vnis.dedup();
    match vnis.as_slice() {
        [vni] if u64::from(NODE_VNI) != *vni && seen.iter().all(|s| destinations.contains(s)) => {
            Ok(format!(
                "{} via {} on VNI {vni}",
                destinations.join(", "),
                GATEWAY_NODE.join(" / ")
            ))
        }
        _ => Err(format!(
            "destinations {destinations:?} (wanted {seen:?}), VNIs {vnis:?} (node VNI {NODE_VNI})"
        )),
    }
}

/// Waits until the pinned IPv4 routes of `pins` include `destination`.
pub fn wait_route(pins: &TestPinDir, destination: &str) -> Result<String, String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let routes = PinDir::open(pins.path())
            .map_err(|e| e.to_string())
            .and_then(|dir| pinned_routes_v4(&dir).map_err(|e| e.to_string()));
        match routes {
            Ok(routes) if routes.iter().any(|r| r == destination) => {
                return Ok(format!("pinned routes {routes:?}"))
            }
            last if std::time::Instant::now() >= deadline => {
                return Err(format!("after 20 s, pinned routes: {last:?}"))
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// `address` of `real` moved to the same offset in `seen`.
pub fn remap(address: &str, real: &str, seen: &str) -> Result<String> {
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
