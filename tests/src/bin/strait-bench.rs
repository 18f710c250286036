//! Benchmarks, run by `cargo xtask bench NAME`. Each prints its numbers and,
//! last, one line of `key=value` ratios against baselines measured in the
//! same run (these machines are noisy; absolute numbers are not comparable
//! across runs).
use std::{
    process::{Child, Command, Stdio},
    thread::sleep,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use strait_testbed::{
    fabric_topology::{FabricCluster, GATEWAY_V4, REMOTE_V4},
    netns::run,
    FabricAgent, NetNs,
};

const ROUNDS: usize = 3;
const IPERF_SECONDS: u32 = 4;
const SOCKPERF_SECONDS: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// Plain IP routing node → gateway on the underlay: the floor.
    Routed,
    /// A kernel VXLAN device between node and gateway (Liqo's former model).
    Vxlan,
    /// Strait's eBPF Geneve fabric.
    Strait,
}

impl Path {
    const ALL: [Path; 3] = [Path::Routed, Path::Vxlan, Path::Strait];

    fn name(self) -> &'static str {
        match self {
            Path::Routed => "routed veth",
            Path::Vxlan => "kernel vxlan",
            Path::Strait => "strait geneve",
        }
    }
}

fn main() -> Result<()> {
    let name = std::env::args().nth(1).unwrap_or_default();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("benchmarks create network namespaces and load eBPF: run them as root");
    }
    match name.as_str() {
        "fabric" => fabric(),
        other => bail!("unknown benchmark {other:?}; available: fabric"),
    }
}

#[derive(Default, Clone, Copy)]
struct Sample {
    gbit_per_s: f64,
    latency_us: f64,
}

fn fabric() -> Result<()> {
    let mut samples: Vec<(Path, Sample)> = Vec::new();
    for round in 1..=ROUNDS {
        for path in Path::ALL {
            let sample = measure(path).with_context(|| format!("measuring {}", path.name()))?;
            println!(
                "round {round}: {:<14} {:>7.2} Gbit/s TCP   {:>7.1} us ping-pong latency",
                path.name(),
                sample.gbit_per_s,
                sample.latency_us
            );
            samples.push((path, sample));
        }
    }
    let median = |path: Path, pick: fn(&Sample) -> f64| {
        let mut values: Vec<f64> = samples
            .iter()
            .filter(|(p, _)| *p == path)
            .map(|(_, s)| pick(s))
            .collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let tput = |p| median(p, |s| s.gbit_per_s);
    let lat = |p| median(p, |s| s.latency_us);
    println!("\nmedians of {ROUNDS} interleaved rounds (pod on a node -> remote cluster behind the gateway):");
    for path in Path::ALL {
        println!(
            "  {:<14} {:>7.2} Gbit/s   {:>7.1} us",
            path.name(),
            tput(path),
            lat(path)
        );
    }
    println!(
        "fabric_vs_routed={:.3} fabric_vs_vxlan={:.3} latency_vs_routed={:.3}",
        tput(Path::Strait) / tput(Path::Routed),
        tput(Path::Strait) / tput(Path::Vxlan),
        lat(Path::Strait) / lat(Path::Routed)
    );
    Ok(())
}

/// Builds a fresh one-node cluster wired for `path`, then measures pod →
/// remote TCP throughput (iperf3) and UDP ping-pong latency (sockperf).
fn measure(path: Path) -> Result<Sample> {
    let cluster = FabricCluster::new(1)?;
    let node = &cluster.nodes[0];
    let pod_cidr = format!("198.18.{}.0/24", 65);
    let mut agents = Vec::new();
    match path {
        Path::Routed => {
            node.ns.ip(&[
                "route",
                "add",
                "198.19.0.0/24",
                "via",
                &GATEWAY_V4.to_string(),
            ])?;
            cluster.gateway.ip(&[
                "route",
                "add",
                &pod_cidr,
                "via",
                &node.underlay_v4.to_string(),
            ])?;
        }
        Path::Vxlan => {
            for (ns, local, remote, addr) in [
                (
                    &node.ns,
                    node.underlay_v4.to_string(),
                    GATEWAY_V4.to_string(),
                    "198.18.200.1/30",
                ),
                (
                    &cluster.gateway,
                    GATEWAY_V4.to_string(),
                    node.underlay_v4.to_string(),
                    "198.18.200.2/30",
                ),
            ] {
                ns.ip(&[
                    "link", "add", "vx0", "type", "vxlan", "id", "42", "local", &local, "remote",
                    &remote, "dstport", "4789", "dev", "eth0",
                ])?;
                ns.ip(&["addr", "add", addr, "dev", "vx0"])?;
                ns.ip(&["link", "set", "vx0", "up"])?;
            }
            node.ns
                .ip(&["route", "add", "198.19.0.0/24", "via", "198.18.200.2"])?;
            cluster
                .gateway
                .ip(&["route", "add", &pod_cidr, "via", "198.18.200.1"])?;
        }
        Path::Strait => {
            for (ns, label, config) in [
                (&node.ns, "bench-node", cluster.node_config(0)),
                (&cluster.gateway, "bench-gw", cluster.gateway_config()),
            ] {
                let agent = FabricAgent::new(ns, label)?;
                agent.apply(&config)?;
                agents.push(agent);
            }
        }
    }
    let gbit_per_s = iperf3(&node.pod, &cluster.remote)?;
    let latency_us = sockperf(&node.pod, &cluster.remote)?;
    drop(agents);
    Ok(Sample {
        gbit_per_s,
        latency_us,
    })
}

/// Kills and reaps a server process when the measurement is done or fails.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server(ns: &NetNs, program: &str, args: &[&str]) -> Result<Server> {
    let child = ns
        .command("timeout")
        .arg("60")
        .arg(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {program} (installed by cargo xtask bootstrap)"))?;
    // Give it a moment to bind before the client connects.
    sleep(Duration::from_millis(300));
    Ok(Server(child))
}

fn iperf3(client: &NetNs, server_ns: &NetNs) -> Result<f64> {
    let _server = server(
        server_ns,
        "iperf3",
        &["-s", "-1", "-B", &REMOTE_V4.to_string()],
    )?;
    let out = run(client.command("iperf3").args([
        "-c",
        &REMOTE_V4.to_string(),
        "-t",
        &IPERF_SECONDS.to_string(),
        "-J",
    ]))?;
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
    let bps = report
        .pointer("/end/sum_received/bits_per_second")
        .and_then(serde_json::Value::as_f64)
        .context("iperf3 report has no end.sum_received.bits_per_second")?;
    Ok(bps / 1e9)
}

fn sockperf(client: &NetNs, server_ns: &NetNs) -> Result<f64> {
    let _server = server(
        server_ns,
        "sockperf",
        &["sr", "-i", &REMOTE_V4.to_string(), "-p", "11111"],
    )?;
    let mut cmd: Command = client.command("sockperf");
    cmd.args([
        "pp",
        "-i",
        &REMOTE_V4.to_string(),
        "-p",
        "11111",
        "-t",
        &SOCKPERF_SECONDS.to_string(),
    ]);
    let out = run(&mut cmd)?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let latency = text
        .split("avg-latency=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("no avg-latency in sockperf output:\n{text}"))?;
    Ok(latency)
}
