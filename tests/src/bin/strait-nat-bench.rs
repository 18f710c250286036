//! `cargo xtask bench nat`: what stateless eBPF remapping costs next to
//! netfilter NAT, on one gateway between a client and a server namespace.
//!
//! ```text
//! client 198.18.1.2 ─ gw (NAT on its client side) ─ server 198.18.10.2
//! ```
//!
//! The client sends to 198.19.10.2, which the gateway maps to the server's
//! 198.18.10.2, with 1 or 10,000 mappings installed (the other 9,999 are /32
//! addresses the flow never hits, so lookups happen in a full table):
//! Strait's eBPF programs; nftables (prefix dnat rule, with the 9,999 as a
//! map or as rules); iptables NETMAP (9,999 rules, then the flow's). No NAT
//! at all is the baseline. Every variant runs on a fresh topology, so no
//! conntrack or hooks leak between them. Strait runs with its forwarding
//! fast path (`--forward=fast`, the default): translated packets are routed
//! in eBPF instead of walking the kernel's forwarding path.
//!
//! Measured per variant, best of `ROUNDS` rounds that each run every
//! variant: single-stream iperf3 TCP throughput; 64-byte UDP packets per
//! second received (iperf3 -u -l 64, unlimited rate: per-packet cost); and
//! new UDP flows per second (one datagram per fresh socket for `FLOW_TIME`:
//! netfilter NAT pays a conntrack entry per flow). Apply time is
//! writing the 10,000-mapping table (Strait: NatTables::apply, in-process;
//! nftables: `nft -f` of the map). The last line is machine-readable and
//! about throughput and apply time only; the others are printed above it.
use std::{
    io::Write as _,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use strait_api::networking::{AddressMapping, NatConfigurationSpec, NatDirection, PrefixMapping};
use strait_common::Direction;
use strait_dataplane::{
    forward::NatForward,
    nat::{NatPlan, NatTables},
    programs::{Dataplane, TcProgram},
    tc::{self, AttachMode},
};
use strait_testbed::{bpffs::TestPinDir, netns::run, NetNs, Veth};

const SERVER: &str = "198.18.10.2";
const REMAPPED_SERVER: &str = "198.19.10.2";
const IPERF_SECONDS: &str = "3";
/// How long each flow-rate run opens new flows, and at most how many.
const FLOW_TIME: Duration = Duration::from_secs(2);
const FLOW_MAX: u32 = 50_000;
const FLOW_PORT: u16 = 5301;
const ROUNDS: usize = 3;
/// Pause before each run, for the previous topology's teardown.
const SETTLE: Duration = Duration::from_secs(2);
/// Mappings the big tables hold besides the flow's own.
const EXTRA_MAPPINGS: u32 = 9_999;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    NoNat,
    Strait1,
    Strait10k,
    Nft1,
    NftMap10k,
    NftRules10k,
    Netmap1,
    Netmap10k,
}

impl Variant {
    const ALL: [Variant; 8] = [
        Variant::NoNat,
        Variant::Strait1,
        Variant::Strait10k,
        Variant::Nft1,
        Variant::NftMap10k,
        Variant::NftRules10k,
        Variant::Netmap1,
        Variant::Netmap10k,
    ];

    const fn name(self) -> &'static str {
        match self {
            Variant::NoNat => "no NAT",
            Variant::Strait1 => "strait, 1 mapping",
            Variant::Strait10k => "strait, 10k mappings",
            Variant::Nft1 => "nftables, 1 rule",
            Variant::NftMap10k => "nftables, 10k map",
            Variant::NftRules10k => "nftables, 10k rules",
            Variant::Netmap1 => "iptables NETMAP, 1 rule",
            Variant::Netmap10k => "iptables NETMAP, 10k rules",
        }
    }
}

struct Topology {
    client: NetNs,
    gw: NetNs,
    server: NetNs,
}

impl Topology {
    fn new() -> Result<Self> {
        let t = Topology {
            client: NetNs::new("bench-client")?,
            gw: NetNs::new("bench-gw")?,
            server: NetNs::new("bench-server")?,
        };
        Veth::pair(
            (&t.client, "eth0", &["198.18.1.2/24"]),
            (&t.gw, "client", &["198.18.1.1/24"]),
        )?;
        Veth::pair(
            (&t.server, "eth0", &["198.18.10.2/24"]),
            (&t.gw, "server", &["198.18.10.1/24"]),
        )?;
        t.client
            .ip(&["route", "add", "default", "via", "198.18.1.1"])?;
        t.server
            .ip(&["route", "add", "default", "via", "198.18.10.1"])?;
        run(t
            .gw
            .command("sysctl")
            .args(["-q", "-w", "net.ipv4.ip_forward=1"]))?;
        Ok(t)
    }
}

/// The i-th extra /32 mapping: 198.19.128.0 + i → 198.18.128.0 + i.
fn extra(i: u32) -> (Ipv4Addr, Ipv4Addr) {
    (
        Ipv4Addr::from(u32::from_be_bytes([198, 19, 128, 0]) + i),
        Ipv4Addr::from(u32::from_be_bytes([198, 18, 128, 0]) + i),
    )
}

/// The gateway's client side plays the peer: the server's range is exposed
/// to it as 198.19.10.0/24 (a Source mapping: destinations arriving from the
/// client are translated back, sources leaving to it forward), and so is
/// each extra address.
fn strait_spec(extras: u32) -> NatConfigurationSpec {
    NatConfigurationSpec {
        prefixes: vec![PrefixMapping {
            direction: NatDirection::Source,
            from: "198.18.10.0/24".into(),
            to: "198.19.10.0/24".into(),
        }],
        addresses: (0..extras)
            .map(|i| {
                let (remapped, local) = extra(i);
                AddressMapping {
                    remapped: remapped.to_string(),
                    local: local.to_string(),
                }
            })
            .collect(),
    }
}

/// Loads the dataplane in the gateway, applies the table and attaches the
/// NAT programs to its client side. Returns how long the apply took.
fn start_strait(t: &Topology, pins: &TestPinDir, extras: u32) -> Result<Duration> {
    let plan = NatPlan::from_spec(&strait_spec(extras))?;
    let pin_dir = pins.pin_dir()?;
    t.gw.enter(move || -> Result<Duration> {
        let mut dp = Dataplane::load_with_nat_forward(pin_dir, NatForward::Fast)?;
        let applied = NatTables::open_pinned(dp.pin_dir())?.apply(&plan)?;
        for direction in Direction::ALL {
            tc::attach(
                &mut dp,
                TcProgram::Nat(direction),
                "client",
                AttachMode::Auto,
            )?;
        }
        Ok(applied.elapsed)
    })?
}

/// An nftables ruleset: the flow's prefix dnat, with the extra mappings in
/// one map lookup or as one rule each.
fn nft_ruleset(extras: u32, as_map: bool) -> String {
    let mut s = String::from(
        "table ip strait_bench {\n chain pre {\n  type nat hook prerouting priority dstnat; policy accept;\n",
    );
    if as_map && extras > 0 {
        s.push_str("  dnat ip to ip daddr map @extra\n");
    } else {
        for i in 0..extras {
            let (from, to) = extra(i);
            s.push_str(&format!("  ip daddr {from} dnat ip to {to}\n"));
        }
    }
    s.push_str("  ip daddr 198.19.10.0/24 dnat ip prefix to 198.18.10.0/24\n }\n");
    if as_map && extras > 0 {
        s.push_str(" map extra {\n  type ipv4_addr : ipv4_addr\n  elements = {\n");
        for i in 0..extras {
            let (from, to) = extra(i);
            s.push_str(&format!("   {from} : {to},\n"));
        }
        s.push_str("  }\n }\n");
    }
    s.push_str("}\n");
    s
}

/// Loads `ruleset` with `nft -f -` in the gateway; returns how long it took.
fn start_nft(t: &Topology, ruleset: &str) -> Result<Duration> {
    let started = Instant::now();
    let mut child =
        t.gw.command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .context("starting nft")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(ruleset.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("nft -f failed: {status}");
    }
    Ok(started.elapsed())
}

/// iptables NETMAP: the extra mappings as one rule each, then the flow's.
fn start_netmap(t: &Topology, extras: u32) -> Result<()> {
    let mut rules = String::from("*nat\n");
    for i in 0..extras {
        let (from, to) = extra(i);
        rules.push_str(&format!(
            "-A PREROUTING -d {from}/32 -j NETMAP --to {to}/32\n"
        ));
    }
    rules.push_str("-A PREROUTING -d 198.19.10.0/24 -j NETMAP --to 198.18.10.0/24\nCOMMIT\n");
    let mut child =
        t.gw.command("iptables-restore")
            .stdin(Stdio::piped())
            .spawn()
            .context("starting iptables-restore")?;
    child
        .stdin
        .take()
        .context("iptables-restore stdin")?
        .write_all(rules.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("iptables-restore failed: {status}");
    }
    Ok(())
}

/// A child process killed (if still running) and reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs iperf3 from the client to `target` with `args`; its JSON report.
fn iperf(t: &Topology, target: &str, args: &[&str]) -> Result<serde_json::Value> {
    let _server = Reaped(
        t.server
            .command("iperf3")
            .args(["-s", "-1", "-B", SERVER])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s")?,
    );
    // Bounded wait for the server to listen: iperf3 -c fails fast if not.
    let mut last_error = String::new();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(150));
        let out = t
            .client
            .command("timeout")
            .args(["20", "iperf3", "-c", target, "-t", IPERF_SECONDS, "-J"])
            .args(args)
            .output()
            .context("running iperf3 -c")?;
        let json: serde_json::Value = match serde_json::from_slice(&out.stdout) {
            Ok(json) => json,
            Err(e) => {
                last_error = format!("unreadable iperf3 output: {e}");
                continue;
            }
        };
        if json.get("error").is_none() {
            return Ok(json);
        }
        last_error = json
            .get("error")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("no result")
            .to_owned();
        if !last_error.contains("connect") {
            break;
        }
    }
    bail!("iperf3 to {target}: {last_error}")
}

/// Single-stream TCP throughput from client to `target`, in Gbit/s.
fn tcp_gbits(t: &Topology, target: &str) -> Result<f64> {
    let json = iperf(t, target, &[])?;
    json.pointer("/end/sum_received/bits_per_second")
        .and_then(serde_json::Value::as_f64)
        .map(|bps| bps / 1e9)
        .context("iperf3 reported no TCP throughput")
}

/// 64-byte UDP datagrams per second the server received, unlimited rate.
fn udp64_pps(t: &Topology, target: &str) -> Result<f64> {
    let json = iperf(t, target, &["-u", "-l", "64", "-b", "0"])?;
    let field = |name: &str| {
        json.pointer(&format!("/end/sum/{name}"))
            .and_then(serde_json::Value::as_f64)
            .with_context(|| format!("iperf3 reported no UDP {name}"))
    };
    let received = field("packets")? - field("lost_packets")?;
    Ok(received / field("seconds")?)
}

/// New UDP flows per second the server received from the client: each
/// datagram comes from a fresh socket (a new source port, so a new flow and,
/// for netfilter NAT, a new conntrack entry). Bounded by `FLOW_TIME` and
/// `FLOW_MAX`. (A TCP connect-and-reset loop was tried first: without
/// conntrack on the gateway it stalled on SYNs retransmitted after one
/// second, measuring TCP teardown rather than NAT.)
fn new_flows_per_second(t: &Topology, target: &str) -> Result<f64> {
    let server: Ipv4Addr = SERVER.parse()?;
    let receiver = t.server.enter(|| UdpSocket::bind((server, FLOW_PORT)))??;
    receiver.set_read_timeout(Some(Duration::from_secs(1)))?;
    let target = SocketAddr::from((target.parse::<Ipv4Addr>()?, FLOW_PORT));
    let counting = std::thread::spawn(move || {
        let mut received = 0u32;
        let mut buf = [0u8; 16];
        // Ends a second after the last datagram (or after none came at all).
        while receiver.recv(&mut buf).is_ok() {
            received += 1;
        }
        received
    });
    let sent = t.client.enter(move || -> Result<Duration> {
        let started = Instant::now();
        let mut count = 0;
        while started.elapsed() < FLOW_TIME && count < FLOW_MAX {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            socket.send_to(b"flow", target)?;
            count += 1;
        }
        Ok(started.elapsed())
    });
    let received = counting
        .join()
        .map_err(|_| anyhow::anyhow!("the flow counter panicked"))?;
    let elapsed = sent??;
    Ok(f64::from(received) / elapsed.as_secs_f64())
}

struct Measured {
    gbits: f64,
    pps64: f64,
    flows: f64,
    apply: Option<Duration>,
}

/// One run of `variant` on a fresh topology.
fn measure(variant: Variant) -> Result<Measured> {
    let t = Topology::new()?;
    let pins = TestPinDir::new("bench")?;
    let (target, apply) = match variant {
        Variant::NoNat => (SERVER, None),
        Variant::Strait1 => (REMAPPED_SERVER, Some(start_strait(&t, &pins, 0)?)),
        Variant::Strait10k => (
            REMAPPED_SERVER,
            Some(start_strait(&t, &pins, EXTRA_MAPPINGS)?),
        ),
        Variant::Nft1 => (REMAPPED_SERVER, Some(start_nft(&t, &nft_ruleset(0, true))?)),
        Variant::NftMap10k => (
            REMAPPED_SERVER,
            Some(start_nft(&t, &nft_ruleset(EXTRA_MAPPINGS, true))?),
        ),
        Variant::NftRules10k => (
            REMAPPED_SERVER,
            Some(start_nft(&t, &nft_ruleset(EXTRA_MAPPINGS, false))?),
        ),
        Variant::Netmap1 => {
            start_netmap(&t, 0)?;
            (REMAPPED_SERVER, None)
        }
        Variant::Netmap10k => {
            start_netmap(&t, EXTRA_MAPPINGS)?;
            (REMAPPED_SERVER, None)
        }
    };
    let gbits = tcp_gbits(&t, target).with_context(|| variant.name())?;
    let pps64 = udp64_pps(&t, target).with_context(|| variant.name())?;
    let flows = new_flows_per_second(&t, target).with_context(|| variant.name())?;
    Ok(Measured {
        gbits,
        pps64,
        flows,
        apply,
    })
}

/// Keeps the best throughput and the fastest apply over the rounds.
fn best_of(a: Measured, b: Measured) -> Measured {
    let apply = match (a.apply, b.apply) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    Measured {
        gbits: a.gbits.max(b.gbits),
        pps64: a.pps64.max(b.pps64),
        flows: a.flows.max(b.flows),
        apply,
    }
}

fn main() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the bench creates network namespaces and loads eBPF: run it as root");
    }
    // Rounds go through every variant in turn, so a burst of load on the
    // machine lands on all of them rather than on one variant's rounds, and
    // each round starts one variant later. The kernel tears a namespace
    // (and the eBPF maps pinned for it) down in the background after it is
    // deleted; measured, that slowed whichever variant came next by about
    // 15%, so each run first waits for the previous one's teardown.
    let mut results: Vec<(Variant, Measured)> = Vec::new();
    for round in 0..ROUNDS {
        eprintln!("round {} of {ROUNDS}", round + 1);
        for k in 0..Variant::ALL.len() {
            let variant = Variant::ALL[(round + k) % Variant::ALL.len()];
            std::thread::sleep(SETTLE);
            let m = measure(variant)?;
            match results.iter_mut().find(|(v, _)| *v == variant) {
                Some((_, best)) => {
                    *best = best_of(
                        std::mem::replace(
                            best,
                            Measured {
                                gbits: 0.0,
                                pps64: 0.0,
                                flows: 0.0,
                                apply: None,
                            },
                        ),
                        m,
                    )
                }
                None => results.push((variant, m)),
            }
        }
    }
    results.sort_by_key(|(v, _)| Variant::ALL.iter().position(|w| w == v));
    println!(
        "{:<28} {:>10} {:>12} {:>10} {:>12}",
        "variant", "Gbit/s", "64B kpps", "flows/s", "apply"
    );
    for (variant, m) in &results {
        println!(
            "{:<28} {:>10.2} {:>12.1} {:>10.0} {:>12}",
            variant.name(),
            m.gbits,
            m.pps64 / 1e3,
            m.flows,
            m.apply.map_or_else(
                || "-".to_owned(),
                |d| format!("{:.2} ms", d.as_secs_f64() * 1e3)
            )
        );
    }
    let get = |v: Variant| results.iter().find(|(w, _)| *w == v).map(|(_, m)| m);
    let (Some(s1), Some(s10k), Some(map10k), Some(rules10k), Some(netmap10k)) = (
        get(Variant::Strait1),
        get(Variant::Strait10k),
        get(Variant::NftMap10k),
        get(Variant::NftRules10k),
        get(Variant::Netmap10k),
    ) else {
        bail!("a variant is missing from the results");
    };
    let best_nft10k = map10k.gbits.max(rules10k.gbits).max(netmap10k.gbits);
    let (Some(strait_apply), Some(nft_apply)) = (s10k.apply, map10k.apply) else {
        bail!("apply times missing");
    };
    let best_nft10k_pps = map10k.pps64.max(rules10k.pps64).max(netmap10k.pps64);
    let best_nft10k_flows = map10k.flows.max(rules10k.flows).max(netmap10k.flows);
    println!(
        "pps64_nat10k_vs_nat1={:.3} pps64_nat10k_vs_best_nft10k={:.3} flows_nat10k_vs_nat1={:.3} flows_nat10k_vs_best_nft10k={:.3}",
        s10k.pps64 / s1.pps64,
        s10k.pps64 / best_nft10k_pps,
        s10k.flows / s1.flows,
        s10k.flows / best_nft10k_flows,
    );
    println!(
        "nat10k_vs_nat1={:.3} nat10k_vs_best_nft10k={:.3} apply10k_speedup_vs_nft={:.3}",
        s10k.gbits / s1.gbits,
        s10k.gbits / best_nft10k,
        nft_apply.as_secs_f64() / strait_apply.as_secs_f64()
    );
    Ok(())
}
