//! Issue #9's acceptance test: two clusters whose pods use the SAME CIDRs
//! (dual-stack), each a test control plane with `strait-controller
//! --network` only (no authentication, no offloading) and the demo's
//! simulated hosts, connected by `kubectl apply` of the network CRs of
//! `control/network/examples/network-only/` and nothing else. A prober in
//! cluster A's pod, started before the apply, pings cluster B's pod at its
//! remapped address (pod → Geneve → gateway → WireGuard → gateway → Geneve
//! → pod, and back); the time from the apply to the first echo reply is
//! printed and asserted under 3 s, for IPv4 and IPv6. Then B's pod must see
//! A's pod by its remapped address (the return path's NAT) and a TCP
//! transfer must complete both ways of addressing (IPv4 and IPv6).

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, ensure, Context as _, Result};
use kube::Api;
use serde_json::Value;
use strait_api::networking::{Configuration, Connection};
use strait_dataplane::{bpffs::PinDir, fabric::pinned_routes_v4};
use strait_testbed::{
    bpffs::TestPinDir,
    capture::Capture,
    demo::{
        control_plane::{
            network_module_args, start_cluster, Cluster, CONSUMER, NODE_POD_CIDRS, POD_CIDRS,
            PROVIDER, REMAP_POOLS,
        },
        k8s::{get_json, kubectl},
        network::{remap, start_fabric, wait_route, Site, Sites, POD_V4, POD_V6},
        sweep, Report, Stage,
    },
    gateway::{Process, Scratch},
    probe::Prober,
    relay::ApiRelay,
    traffic::tcp_transfer_translated,
};
use tokio::runtime::Runtime;

/// Issue #9: from applying the network CRs to the first packet through.
const TARGET: Duration = Duration::from_secs(3);
/// How long the prober waits for a first reply at most: one echo request
/// every 20 ms, 1,000 at most.
const PROBE_LIMIT: Duration = Duration::from_secs(20);
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
const PROBE_COUNT: u32 = 1000;

/// Each cluster's network-only peering file: its gateway, in the namespace
/// it names after the peer, and that gateway's name.
struct Peering {
    file: &'static str,
    namespace: &'static str,
    gateway: &'static str,
}

/// Cluster A (the consumer side of the demo, a GatewayClient) and cluster
/// B (the GatewayServer A dials).
const PEERINGS: [Peering; 2] = [
    Peering {
        file: "cluster-a.yaml",
        namespace: "peer-b",
        gateway: "to-b",
    },
    Peering {
        file: "cluster-b.yaml",
        namespace: "peer-a",
        gateway: "to-a",
    },
];

fn example(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../control/network/examples/network-only")
        .join(file)
}

/// Everything the test starts, stopped in order when dropped (also when
/// the test fails): the agents, then the controllers (their gateways die
/// with them), then whatever still runs with the scratch directory, then
/// the namespaces and the scratch directory itself.
struct Bed {
    agents: Vec<(Process, ApiRelay, TestPinDir)>,
    clusters: Vec<Cluster>,
    /// The way from each gateway pod to its API server, which the NAT
    /// agents the controllers start take.
    nat_relays: Vec<ApiRelay>,
    runtime: Option<Runtime>,
    sites: Option<Sites>,
    stage: Stage,
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.agents.clear();
        self.clusters.clear();
        self.nat_relays.clear();
        self.runtime.take();
        sweep::processes_using(&self.stage.dir.dir);
        self.sites.take();
    }
}

impl Bed {
    fn runtime(&self) -> &Runtime {
        self.runtime.as_ref().expect("the runtime lives until drop")
    }

    fn sites(&self) -> &[Site] {
        self.sites.as_ref().map_or(&[], |s| &s.sites)
    }
}

/// The fabric agents of `site` (node and gateway node), following the
/// cluster's CRs, each loaded before this returns.
fn start_fabric_agents(
    stage: &Stage,
    cluster: &Cluster,
    site: &Site,
) -> Result<Vec<(Process, ApiRelay, TestPinDir)>> {
    let mut agents = Vec::new();
    for (host, role, follow, config, _) in site.fabric_agents(REMAP_POOLS[0]) {
        let label = format!("{}-{}", cluster.id, role.replace(' ', ""));
        let agent = start_fabric(stage, cluster, host, &label, follow, &config)?;
        // The gateway node's routes back to the node come from the
        // InternalNode, there before any peering; the node's have nothing
        // to load yet but their maps.
        if follow == "all" {
            wait_route(&agent.2, NODE_POD_CIDRS[0]).map_err(anyhow::Error::msg)?;
        } else {
            wait_pinned(&agent.2)?;
        }
        agents.push(agent);
    }
    Ok(agents)
}

fn wait_pinned(pins: &TestPinDir) -> Result<()> {
    let started = Instant::now();
    loop {
        let routes = PinDir::open(pins.path())
            .map_err(|e| e.to_string())
            .and_then(|dir| pinned_routes_v4(&dir).map_err(|e| e.to_string()));
        match routes {
            Ok(_) => return Ok(()),
            Err(e) if started.elapsed() > PROBE_LIMIT => bail!("no pinned routes: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// What cluster `index` says about the peering when the probe failed.
fn diagnose(bed: &Bed, index: usize) -> String {
    let cluster = &bed.clusters[index];
    let peering = &PEERINGS[index];
    bed.runtime().block_on(async {
        let configurations: Api<Configuration> =
            Api::namespaced(cluster.client(), peering.namespace);
        let connections: Api<Connection> = Api::namespaced(cluster.client(), peering.namespace);
        let remote = match configurations.list(&Default::default()).await {
            Ok(list) => list
                .items
                .iter()
                .map(|c| format!("{:?}", c.status.as_ref().map(|s| &s.remote)))
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => e.to_string(),
        };
        let connection = get_json(&connections, peering.gateway)
            .await
            .map(|c| c["status"].to_string())
            .unwrap_or_else(|e| e);
        format!(
            "{}: Configuration status.remote {remote}; Connection {}: {connection}",
            cluster.id, peering.gateway
        )
    })
}

/// How cluster `index` addresses the peer's pods: its Configuration's
/// `status.remote.cidr.pod`.
fn remapped(bed: &Bed, index: usize) -> Result<Vec<String>> {
    let cluster = &bed.clusters[index];
    let configurations: Api<Configuration> =
        Api::namespaced(cluster.client(), PEERINGS[index].namespace);
    let name = ["cluster-b", "cluster-a"][index];
    let config = bed
        .runtime()
        .block_on(get_json(&configurations, name))
        .map_err(anyhow::Error::msg)?;
    let pods = config
        .pointer("/status/remote/cidr/pod")
        .and_then(Value::as_array)
        .with_context(|| format!("{}: no status.remote in {config}", cluster.id))?;
    Ok(pods
        .iter()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect())
}

#[test]
fn pods_with_the_same_cidr_reach_each_other_after_network_crs_alone() -> Result<()> {
    let stage = Stage {
        dir: Scratch::new("apply-first-packet")?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut bed = Bed {
        agents: Vec::new(),
        clusters: Vec::new(),
        nat_relays: Vec::new(),
        runtime: Some(runtime),
        sites: Some(Sites::new()?),
        stage,
    };
    let mut report = Report::default();
    for (index, id) in [CONSUMER, PROVIDER].into_iter().enumerate() {
        let mut args = network_module_args();
        args.extend(
            bed.sites
                .as_ref()
                .context("sites")?
                .controller_args(&bed.stage, index)?,
        );
        let cluster = bed
            .runtime()
            .block_on(start_cluster(&bed.stage, id, args, &mut report))?;
        bed.clusters.push(cluster);
    }
    bed.nat_relays = bed
        .sites
        .as_ref()
        .context("sites")?
        .relay_gateway_nat_agents(&bed.stage, [&bed.clusters[0], &bed.clusters[1]])?;
    for index in 0..2 {
        let agents = start_fabric_agents(&bed.stage, &bed.clusters[index], &bed.sites()[index])?;
        bed.agents.extend(agents);
        // Before any peering: the cluster's own routing to its gateway pod.
        bed.sites()[index].route_to_gateway_pod(&REMAP_POOLS.map(String::from))?;
    }

    // Both clusters see the other's pods as REMAP_POOLS (the only range the
    // pools, as big as the pod CIDRs, can give); the pods have the same
    // address in both.
    let remote_v4 = remap(POD_V4, POD_CIDRS[0], REMAP_POOLS[0])?;
    let remote_v6 = remap(POD_V6, POD_CIDRS[1], REMAP_POOLS[1])?;
    let sites = &bed.sites.as_ref().context("sites")?.sites;
    let (site_a, site_b) = (&sites[0], &sites[1]);
    let mut probers = [
        Prober::start(&site_a.pod, &remote_v4, PROBE_INTERVAL, PROBE_COUNT)?,
        Prober::start(&site_a.pod, &remote_v6, PROBE_INTERVAL, PROBE_COUNT)?,
    ];
    let files: Vec<String> = PEERINGS
        .iter()
        .map(|p| example(p.file).display().to_string())
        .collect();

    // Each cluster's admin applies its file, at the same time; the clock
    // starts with them.
    let applied = SystemTime::now();
    let applied_at = Instant::now();
    std::thread::scope(|scope| {
        let applying: Vec<_> = (0..2)
            .map(|index| {
                let (kubeconfig, file) = (&bed.clusters[index].kubeconfig, &files[index]);
                scope.spawn(move || {
                    kubectl(kubeconfig, &["apply", "--server-side", "-f", file])
                        .with_context(|| format!("applying {file}"))
                })
            })
            .collect();
        for apply in applying {
            apply
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the kubectl thread panicked")))?;
        }
        anyhow::Ok(())
    })?;
    let applies_took = applied_at.elapsed();
    let replies: Vec<_> = std::thread::scope(|scope| {
        let probing: Vec<_> = probers
            .iter_mut()
            .map(|prober| scope.spawn(move || prober.first_reply()))
            .collect();
        probing
            .into_iter()
            .map(|p| {
                p.join()
                    .unwrap_or_else(|_| Err("the thread panicked".to_owned()))
            })
            .collect()
    });
    drop(probers);
    let mut took = Vec::new();
    for (family, reply) in ["IPv4", "IPv6"].iter().zip(replies) {
        match reply {
            Ok(at) => took.push(at.duration_since(applied).unwrap_or_default()),
            Err(e) => bail!(
                "{family}: cluster-a's pod got no reply from cluster-b's pod: {e}\n{}\n{}",
                diagnose(&bed, 0),
                diagnose(&bed, 1)
            ),
        }
    }
    println!(
        "apply_to_first_packet_v4_ms={} apply_to_first_packet_v6_ms={} (the two kubectl applies took {} ms)",
        took[0].as_millis(),
        took[1].as_millis(),
        applies_took.as_millis()
    );

    // The prober's targets are what the network module allocated.
    for index in 0..2 {
        let seen = remapped(&bed, index)?;
        ensure!(
            seen == REMAP_POOLS,
            "{}: the network module remapped the peer's pods to {seen:?}, the test expected {REMAP_POOLS:?}",
            bed.clusters[index].id
        );
    }

    // The way back: B's pod sees A's pod as B remaps it, and answers it there.
    let a_as_seen_by_b = remap(POD_V4, POD_CIDRS[0], REMAP_POOLS[0])?;
    let sniff = Capture::start(&site_b.pod, "eth0", "icmp", 2, 10)?;
    let replies = strait_testbed::gateway::ping(&site_a.pod, &remote_v4, 3, "0.2");
    let seen = sniff.finish()?;
    ensure!(replies == 3, "{replies}/3 echo replies after the first one");
    ensure!(
        seen.lines()
            .any(|l| l.contains(&format!("{a_as_seen_by_b} > {POD_V4}"))),
        "cluster-b's pod did not see cluster-a's pod as {a_as_seen_by_b}; tcpdump there:\n{seen}"
    );

    // A TCP transfer over each family, to the remapped address.
    let bytes = 1 << 20;
    for (port, (remote, listen)) in [(&remote_v4, POD_V4), (&remote_v6, POD_V6)]
        .into_iter()
        .enumerate()
    {
        let port = 7300 + port as u16;
        let acked = tcp_transfer_translated(
            &site_a.pod,
            &site_b.pod,
            SocketAddr::new(remote.parse()?, port),
            SocketAddr::new(listen.parse()?, port),
            bytes,
        )?;
        ensure!(
            acked == bytes as u64,
            "TCP to {remote}: {acked} of {bytes} bytes acknowledged"
        );
    }

    let failed: Vec<_> = report.checks.iter().filter(|c| !c.passed).collect();
    ensure!(
        failed.is_empty(),
        "setup checks failed: {:?}",
        failed.iter().map(|c| &c.what).collect::<Vec<_>>()
    );
    for (family, took) in ["IPv4", "IPv6"].iter().zip(&took) {
        ensure!(
            *took < TARGET,
            "{family}: apply to first packet took {} ms (target < {} ms); what happened when, from the logs:\n{}",
            took.as_millis(),
            TARGET.as_millis(),
            timeline(&bed.stage.dir.dir, applied)
        );
    }
    Ok(())
}

/// The log lines (controllers, agents, gateways) that mark a step on the
/// way to the first packet.
const MILESTONES: &[&str] = &[
    "allocated network",
    "reconcile failed",
    "publishing the gateway's internal endpoint",
    "allocated the peering's VNI",
    "gateway process started",
    "TUN created",
    "peer endpoint",
    "fabric routes reconciled written=2",
    "NAT table applied",
    "NAT programs attached",
];

/// The milestones of the logs under `dir`, in order, as seconds after
/// `applied` (the logs stamp UTC times of day).
fn timeline(dir: &std::path::Path, applied: SystemTime) -> String {
    let seconds_of_day = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64() % 86_400.0)
            .unwrap_or_default()
    };
    let start = seconds_of_day(applied);
    let mut logs = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(next) = dirs.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "log") {
                logs.push(path);
            }
        }
    }
    let mut events = Vec::new();
    for log in logs {
        let name = log.strip_prefix(dir).unwrap_or(&log).display().to_string();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        for line in text.lines().map(strip_colours) {
            if !MILESTONES.iter().any(|m| line.contains(m)) {
                continue;
            }
            // 2026-11-26T02:58:11.344445Z ...
            let Some(at) = line
                .split_once('T')
                .and_then(|(_, rest)| rest.split_once('Z'))
                .and_then(|(time, _)| {
                    let mut parts = time.split(':').map(|p| p.parse::<f64>().ok());
                    Some(parts.next()?? * 3600.0 + parts.next()?? * 60.0 + parts.next()??)
                })
            else {
                continue;
            };
            let message = line
                .split_once("Z ")
                .map_or(line.as_str(), |(_, m)| m.trim());
            events.push((at - start, format!("{name}: {message}")));
        }
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    events
        .iter()
        .map(|(at, what)| {
            format!(
                "  {at:+7.3} s  {}",
                what.chars().take(160).collect::<String>()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `line` without its terminal colour codes (ESC [ ... m).
fn strip_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
