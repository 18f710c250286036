//! The forwarding fast path of the NAT ingress program.
//!
//! BPF_PROG_RUN, inside a gateway namespace whose routes and neighbours the
//! route lookup sees: a plainly forwardable packet is translated, gets the
//! next hop's MACs and one hop less, and is redirected to the egress device;
//! everything the stack must answer or deliver (TTL 1, too big for the
//! route, local delivery) passes on with only the translation applied.
//! Expected frames are built from scratch and checksums verified
//! independently.
//!
//! Then real traffic through a gateway with the fast path attached by
//! `strait-fabric nat attach`: TCP, UDP and ping work, a TTL-1 datagram is
//! answered with time exceeded and an oversized DF datagram with
//! fragmentation needed / packet too big, over IPv4 and IPv6, and the
//! counters show which way each went. Needs root.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use aya::programs::{TestRun, TestRunOptions};
use strait_api::networking::{NatConfigurationSpec, NatDirection, PrefixMapping};
use strait_common::Direction;
use strait_dataplane::{
    bpffs::PinDir,
    drops::DropCounts,
    forward::{ForwardCounts, ForwardOutcome, NatForward},
    nat::{NatPlan, NatTables},
    programs::{Dataplane, TcProgram},
};
use strait_testbed::{
    bpffs::TestPinDir,
    icmp_errors::{last_icmp_error, set_int_option},
    packets::*,
    FabricCli, NetNs, Veth,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// TC_ACT_UNSPEC as the kernel reports it: passed on to the stack.
const VERDICT_PASS: u32 = -1i32 as u32;
/// TC_ACT_REDIRECT.
const VERDICT_REDIRECT: u32 = 7;

// The gateway: "peer" faces the other cluster, "pods" its own pods. The
// peer knows our pods 198.18.10.0/24 as 198.19.10.0/24.
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xaa, 1];
const PODS_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xbb, 1];
const POD_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xbb, 2];
const REMOTE: [u8; 4] = [198, 18, 200, 7];
const POD: [u8; 4] = [198, 18, 10, 2];
const POD_REMAPPED: [u8; 4] = [198, 19, 10, 2];
const GW_PODS: [u8; 4] = [198, 18, 10, 1];
const GW_PODS_REMAPPED: [u8; 4] = [198, 19, 10, 1];
const REMOTE6: [u8; 16] = v6(0x200, 7);
const POD6: [u8; 16] = v6(0x10, 2);
const POD6_REMAPPED: [u8; 16] = v6(0x1910, 2);
/// MTU of the pods link: smaller than the peer's, so packets can be too big.
const PODS_MTU: usize = 1280;

/// fd00:18:<net>::<host>, or fd00:19:10::<host> for net 0x1910.
const fn v6(net: u16, host: u8) -> [u8; 16] {
    let (a, b) = if net == 0x1910 {
        (0x19u16, 0x10u16)
    } else {
        (0x18, net)
    };
    [
        0xfd,
        0,
        0,
        a as u8,
        (b >> 8) as u8,
        b as u8,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        host,
    ]
}

fn spec() -> NatConfigurationSpec {
    // The server side's range exposed under the remapped one: arriving
    // packets get their destination translated back to the real range.
    let prefix = |from: &str, to: &str| PrefixMapping {
        direction: NatDirection::Source,
        from: from.into(),
        to: to.into(),
    };
    NatConfigurationSpec {
        prefixes: vec![
            prefix("198.18.10.0/24", "198.19.10.0/24"),
            prefix("fd00:18:10::/64", "fd00:19:10::/64"),
        ],
        addresses: vec![],
    }
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A gateway namespace for BPF_PROG_RUN: routes and resolved neighbours on
/// its pods side, a peer side the packets arrive on.
struct Gateway {
    gw: NetNs,
    _other: NetNs,
}

impl Gateway {
    fn new() -> Result<Self, Box<dyn std::error::Error>> {
        let gw = NetNs::new("natfwd-gw")?;
        let other = NetNs::new("natfwd-other")?;
        Veth::pair(
            (&gw, "peer", &["198.18.200.1/24", "fd00:18:200::1/64"]),
            (&other, "peer", &[]),
        )?;
        Veth::pair(
            (&gw, "pods", &["198.18.10.1/24", "fd00:18:10::1/64"]),
            (&other, "pods", &[]),
        )?;
        gw.ip(&["link", "set", "peer", "address", &mac(PEER_MAC)])?;
        gw.ip(&["link", "set", "pods", "address", &mac(PODS_MAC)])?;
        gw.ip(&["link", "set", "pods", "mtu", &PODS_MTU.to_string()])?;
        for pod in ["198.18.10.2", "fd00:18:10::2"] {
            gw.ip(&[
                "neigh",
                "replace",
                pod,
                "lladdr",
                &mac(POD_MAC),
                "dev",
                "pods",
                "nud",
                "permanent",
            ])?;
        }
        for (key, value) in [
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv6/conf/all/forwarding", "1"),
        ] {
            gw.enter(|| std::fs::write(format!("/proc/sys/{key}"), value))??;
        }
        Ok(Gateway { gw, _other: other })
    }

    /// Loads the programs with `forward`, applies the table, and runs `f`
    /// inside the gateway namespace (where BPF_PROG_RUN resolves the
    /// ingress interface and routes).
    fn with_program<T: Send>(
        &self,
        label: &str,
        forward: NatForward,
        f: impl FnOnce(&mut Runner) -> Result<T, String> + Send,
    ) -> Result<T, Box<dyn std::error::Error>> {
        let pins = TestPinDir::new(label)?;
        let pin_dir = pins.pin_dir()?;
        let peer = self.gw.ifindex("peer")?;
        let result = self.gw.enter(move || -> Result<T, String> {
            let dp = Dataplane::load_with_nat_forward(pin_dir, forward)
                .map_err(|e| format!("loading: {e}"))?;
            let plan = NatPlan::from_spec(&spec()).map_err(|e| e.to_string())?;
            NatTables::open_pinned(dp.pin_dir())
                .map_err(|e| format!("opening the tables: {e}"))?
                .apply(&plan)
                .map_err(|e| format!("applying: {e}"))?;
            let mut runner = Runner { dp, peer };
            f(&mut runner)
        })?;
        Ok(result?)
    }
}

struct Runner {
    dp: Dataplane,
    peer: u32,
}

/// What one run of the ingress program did.
struct Ran {
    verdict: u32,
    frame: Vec<u8>,
    outcome: Option<ForwardOutcome>,
}

impl Runner {
    /// Runs the destination NAT program on `frame` as if it arrived on the
    /// peer interface; `gso_size` marks it as an offload aggregate.
    fn run(&mut self, frame: &[u8], gso_size: u32) -> Result<Ran, String> {
        let before = ForwardCounts::read_loaded(&self.dp).map_err(|e| e.to_string())?;
        // struct __sk_buff: ifindex at 40, gso_segs at 164, gso_size at 176.
        let mut ctx = [0u8; 192];
        ctx[40..44].copy_from_slice(&self.peer.to_ne_bytes());
        if gso_size > 0 {
            let segments = (frame.len() as u32).div_ceil(gso_size);
            ctx[164..168].copy_from_slice(&segments.to_ne_bytes());
            ctx[176..180].copy_from_slice(&gso_size.to_ne_bytes());
        }
        let mut out = vec![0u8; frame.len() + 256];
        let prog = self
            .dp
            .classifier(TcProgram::Nat(Direction::Ingress))
            .map_err(|e| e.to_string())?;
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                ..TestRunOptions::new()
            })
            .map_err(|e| format!("BPF_PROG_RUN: {e}"))?;
        out.truncate(result.data_size_out as usize);
        let after = ForwardCounts::read_loaded(&self.dp).map_err(|e| e.to_string())?;
        let changed: Vec<ForwardOutcome> = ForwardOutcome::ALL
            .into_iter()
            .filter(|o| after.get(*o) != before.get(*o))
            .collect();
        if changed.len() > 1 || changed.iter().any(|o| after.get(*o) != before.get(*o) + 1) {
            return Err(format!("more than one count per packet: {changed:?}"));
        }
        Ok(Ran {
            verdict: result.return_value,
            frame: out,
            outcome: changed.first().copied(),
        })
    }

    fn drops(&self) -> Result<u64, String> {
        DropCounts::read_loaded(&self.dp)
            .map(|d| d.total())
            .map_err(|e| e.to_string())
    }
}

/// `frame` with the Ethernet addresses the gateway puts on the pods link.
fn on_pods_link(mut frame: Vec<u8>) -> Vec<u8> {
    frame[..6].copy_from_slice(&POD_MAC);
    frame[6..12].copy_from_slice(&PODS_MAC);
    frame
}

/// A frame from the peer: addressed to the gateway's peer-side MAC.
fn from_peer(mut frame: Vec<u8>) -> Vec<u8> {
    frame[..6].copy_from_slice(&PEER_MAC);
    frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0xaa, 2]);
    frame
}

/// An IPv4 packet with `ttl` (header checksum recomputed from scratch).
fn with_ttl4(mut packet: Vec<u8>, ttl: u8) -> Vec<u8> {
    packet[8] = ttl;
    packet[10..12].copy_from_slice(&[0, 0]);
    let csum = internet_checksum(&[&packet[..20]]);
    packet[10..12].copy_from_slice(&csum.to_be_bytes());
    packet
}

fn with_hops6(mut packet: Vec<u8>, hops: u8) -> Vec<u8> {
    packet[7] = hops;
    packet
}

fn udp4(dst: [u8; 4], ttl: u8, len: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
    with_ttl4(ipv4(REMOTE, dst, UDP, &udp(&REMOTE, &dst, &data)), ttl)
}

fn udp6(dst: [u8; 16], hops: u8, len: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
    with_hops6(ipv6(REMOTE6, dst, UDP, &udp(&REMOTE6, &dst, &data)), hops)
}

fn tcp4(dst: [u8; 4], len: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    ipv4(REMOTE, dst, TCP, &tcp(&REMOTE, &dst, &data))
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `input` and checks verdict, output frame and counted outcome.
fn expect(
    r: &mut Runner,
    what: &str,
    input: Vec<u8>,
    gso_size: u32,
    verdict: u32,
    expected: Vec<u8>,
    outcome: Option<ForwardOutcome>,
) -> Result<(), String> {
    assert_checksums_valid(&input);
    let ran = r.run(&input, gso_size)?;
    if ran.verdict != verdict {
        return Err(format!("{what}: verdict {} not {verdict}", ran.verdict));
    }
    if ran.frame != expected {
        return Err(format!(
            "{what}: output frame\n got      {}\n expected {}",
            hex(&ran.frame),
            hex(&expected)
        ));
    }
    assert_checksums_valid(&ran.frame);
    if ran.outcome != outcome {
        return Err(format!(
            "{what}: counted {:?}, expected {outcome:?}",
            ran.outcome
        ));
    }
    Ok(())
}

#[test]
fn forwardable_packets_are_routed_and_the_rest_left_to_the_stack() -> TestResult {
    let gateway = Gateway::new()?;
    gateway.with_program("natfwd-fast", NatForward::Fast, |r| {
        use ForwardOutcome::*;
        // Forwarded: translated, next hop's MACs, TTL 64 → 63.
        expect(
            r,
            "IPv4 UDP",
            from_peer(eth4(udp4(POD_REMAPPED, 64, 100))),
            0,
            VERDICT_REDIRECT,
            on_pods_link(eth4(udp4(POD, 63, 100))),
            Some(Forwarded),
        )?;
        expect(
            r,
            "IPv6 UDP",
            from_peer(eth6(udp6(POD6_REMAPPED, 64, 100))),
            0,
            VERDICT_REDIRECT,
            on_pods_link(eth6(udp6(POD6, 63, 100))),
            Some(Forwarded),
        )?;
        // The IPv4 header checksum follows every TTL value, 2 → 1 included.
        expect(
            r,
            "IPv4 TTL 2",
            from_peer(eth4(udp4(POD_REMAPPED, 2, 10))),
            0,
            VERDICT_REDIRECT,
            on_pods_link(eth4(udp4(POD, 1, 10))),
            Some(Forwarded),
        )?;
        // TTL / hop limit 1: the stack must raise time exceeded.
        expect(
            r,
            "IPv4 TTL 1",
            from_peer(eth4(udp4(POD_REMAPPED, 1, 10))),
            0,
            VERDICT_PASS,
            from_peer(eth4(udp4(POD, 1, 10))),
            Some(TtlExpiring),
        )?;
        expect(
            r,
            "IPv6 hop limit 1",
            from_peer(eth6(udp6(POD6_REMAPPED, 1, 10))),
            0,
            VERDICT_PASS,
            from_peer(eth6(udp6(POD6, 1, 10))),
            Some(TtlExpiring),
        )?;
        // Exactly the pods link's MTU fits; one byte more is the stack's
        // to fragment or refuse with frag-needed / packet too big.
        let fits4 = PODS_MTU - 20 - 8;
        expect(
            r,
            "IPv4 at the MTU",
            from_peer(eth4(udp4(POD_REMAPPED, 64, fits4))),
            0,
            VERDICT_REDIRECT,
            on_pods_link(eth4(udp4(POD, 63, fits4))),
            Some(Forwarded),
        )?;
        expect(
            r,
            "IPv4 one byte too big",
            from_peer(eth4(udp4(POD_REMAPPED, 64, fits4 + 1))),
            0,
            VERDICT_PASS,
            from_peer(eth4(udp4(POD, 64, fits4 + 1))),
            Some(TooBig),
        )?;
        let fits6 = PODS_MTU - 40 - 8;
        expect(
            r,
            "IPv6 one byte too big",
            from_peer(eth6(udp6(POD6_REMAPPED, 64, fits6 + 1))),
            0,
            VERDICT_PASS,
            from_peer(eth6(udp6(POD6, 64, fits6 + 1))),
            Some(TooBig),
        )?;
        // An offload aggregate is judged by its segments: 20 + 20 + 1240
        // fits the pods link, 20 + 20 + 1241 does not.
        let mut forwarded_tcp = tcp4(POD, 3000);
        forwarded_tcp = with_ttl4(forwarded_tcp, 63);
        expect(
            r,
            "TCP aggregate of fitting segments",
            from_peer(eth4(tcp4(POD_REMAPPED, 3000))),
            1240,
            VERDICT_REDIRECT,
            on_pods_link(eth4(forwarded_tcp)),
            Some(Forwarded),
        )?;
        expect(
            r,
            "TCP aggregate of too big segments",
            from_peer(eth4(tcp4(POD_REMAPPED, 3000))),
            1241,
            VERDICT_PASS,
            from_peer(eth4(tcp4(POD, 3000))),
            Some(TooBig),
        )?;
        // For the gateway itself: local delivery is the stack's.
        expect(
            r,
            "IPv4 to the gateway",
            from_peer(eth4(udp4(GW_PODS_REMAPPED, 64, 10))),
            0,
            VERDICT_PASS,
            from_peer(eth4(udp4(GW_PODS, 64, 10))),
            Some(NotForwarded),
        )?;
        // A frame the link layer addressed to another host is not routed.
        let mut elsewhere = eth4(udp4(POD_REMAPPED, 64, 10));
        elsewhere[..6].copy_from_slice(&[0x02, 0, 0, 0, 0xcc, 9]);
        let mut elsewhere_translated = eth4(udp4(POD, 64, 10));
        elsewhere_translated[..6].copy_from_slice(&[0x02, 0, 0, 0, 0xcc, 9]);
        expect(
            r,
            "IPv4 to another MAC",
            elsewhere,
            0,
            VERDICT_PASS,
            elsewhere_translated,
            Some(NotUnicast),
        )?;
        match r.drops()? {
            0 => Ok(()),
            n => Err(format!("{n} packets dropped")),
        }
    })?;
    Ok(())
}

#[test]
fn with_forward_stack_every_packet_goes_to_the_stack_uncounted() -> TestResult {
    let gateway = Gateway::new()?;
    gateway.with_program("natfwd-stack", NatForward::Stack, |r| {
        expect(
            r,
            "IPv4 UDP",
            from_peer(eth4(udp4(POD_REMAPPED, 64, 100))),
            0,
            VERDICT_PASS,
            from_peer(eth4(udp4(POD, 64, 100))),
            None,
        )?;
        expect(
            r,
            "IPv6 UDP",
            from_peer(eth6(udp6(POD6_REMAPPED, 64, 100))),
            0,
            VERDICT_PASS,
            from_peer(eth6(udp6(POD6, 64, 100))),
            None,
        )
    })?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Real traffic through a gateway.
//
// client 198.18.1.2 ─ [client] gw [server] ─ server 198.18.10.2 (MTU 1280)
//        fd00:18:1::2                        fd00:18:10::2
//
// The client reaches the server as 198.19.10.2 / fd00:19:10::2; the
// gateway translates on its client side, where the fast path runs.

const TIMEOUT: Duration = Duration::from_secs(3);
const GW_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const GW_CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 1, 0, 0, 0, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 1, 0, 0, 0, 0, 2);
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
const SERVER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0x10, 0, 0, 0, 0, 2);
const SERVER_REMAPPED: Ipv4Addr = Ipv4Addr::new(198, 19, 10, 2);
const SERVER6_REMAPPED: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x19, 0x10, 0, 0, 0, 0, 2);
const NAT_CONFIG: &str = r#"
prefixes:
  - {direction: Source, from: 198.18.10.0/24, to: 198.19.10.0/24}
  - {direction: Source, from: "fd00:18:10::/64", to: "fd00:19:10::/64"}
"#;

struct Bed {
    client: NetNs,
    gw: NetNs,
    server: NetNs,
}

impl Bed {
    fn new() -> Result<Self, Box<dyn std::error::Error>> {
        let bed = Bed {
            client: NetNs::new("natfwd-client")?,
            gw: NetNs::new("natfwd-router")?,
            server: NetNs::new("natfwd-server")?,
        };
        Veth::pair(
            (&bed.client, "eth0", &["198.18.1.2/24", "fd00:18:1::2/64"]),
            (&bed.gw, "client", &["198.18.1.1/24", "fd00:18:1::1/64"]),
        )?;
        Veth::pair(
            (&bed.server, "eth0", &["198.18.10.2/24", "fd00:18:10::2/64"]),
            (&bed.gw, "server", &["198.18.10.1/24", "fd00:18:10::1/64"]),
        )?;
        bed.gw.ip(&["link", "set", "server", "mtu", "1280"])?;
        bed.server.ip(&["link", "set", "eth0", "mtu", "1280"])?;
        for (ns, v4, v6) in [
            (&bed.client, "198.18.1.1", "fd00:18:1::1"),
            (&bed.server, "198.18.10.1", "fd00:18:10::1"),
        ] {
            ns.ip(&["route", "add", "default", "via", v4])?;
            ns.ip(&["-6", "route", "add", "default", "via", v6])?;
        }
        for (key, value) in [
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv6/conf/all/forwarding", "1"),
        ] {
            bed.gw
                .enter(|| std::fs::write(format!("/proc/sys/{key}"), value))??;
        }
        Ok(bed)
    }
}

#[test]
fn traffic_through_the_fast_path_keeps_icmp_errors_working() -> TestResult {
    let bed = Bed::new()?;
    let pins = TestPinDir::new("natfwd-router")?;
    let fabric = FabricCli::new(&bed.gw, pins.path())?;
    let config = std::env::temp_dir().join(format!("strait-natfwd-{}.yaml", std::process::id()));
    std::fs::write(&config, NAT_CONFIG)?;
    let applied = fabric.run(&["nat", "apply", "--config", &config.to_string_lossy()]);
    let _ = std::fs::remove_file(&config);
    let applied = applied?;
    assert!(applied.starts_with("applied 2 NAT entries"), "{applied}");
    let attached = fabric.run(&["nat", "attach", "--iface", "client", "--forward", "fast"])?;
    assert!(attached.contains("strait_nat_ingress"), "{attached}");

    for (client, server, remapped, gw) in [
        (
            IpAddr::from(CLIENT),
            IpAddr::from(SERVER),
            IpAddr::from(SERVER_REMAPPED),
            IpAddr::from(GW_CLIENT),
        ),
        (
            CLIENT6.into(),
            SERVER6.into(),
            SERVER6_REMAPPED.into(),
            GW_CLIENT6.into(),
        ),
    ] {
        udp_round_trip(&bed, client, server, remapped)?;
        tcp_transfer(&bed, client, server, remapped)?;
        ping(&bed, remapped)?;
        let before = ForwardCounts::read_pinned(&PinDir::open(pins.path())?)?;
        icmp_error_comes_back(&bed, client, remapped, gw, Probe::TtlOne)?;
        icmp_error_comes_back(&bed, client, remapped, gw, Probe::TooBig)?;
        let after = ForwardCounts::read_pinned(&PinDir::open(pins.path())?)?;
        for outcome in [ForwardOutcome::TtlExpiring, ForwardOutcome::TooBig] {
            assert!(
                after.get(outcome) > before.get(outcome),
                "{client}: the probe was not left to the stack as {}: {after:?}",
                outcome.as_str()
            );
        }
    }

    let counts = ForwardCounts::read_pinned(&PinDir::open(pins.path())?)?;
    // Each family's 1 MiB transfer alone is at least 16 packets of at most
    // 64 KiB (segmentation-offload aggregates), all of them forwardable.
    assert!(
        counts.get(ForwardOutcome::Forwarded) >= 32,
        "the fast path was not taken: {counts:?}"
    );
    assert!(
        counts.get(ForwardOutcome::Forwarded) > counts.fallbacks(),
        "mostly fallbacks: {counts:?}"
    );
    let shown = fabric.run(&["nat", "stats"])?;
    for outcome in ForwardOutcome::ALL {
        let line = format!("{} {}", outcome.as_str(), counts.get(outcome));
        assert!(shown.lines().any(|l| l == line), "{line} missing:\n{shown}");
    }
    let drops = DropCounts::read_pinned(&PinDir::open(pins.path())?)?;
    assert_eq!(drops.total(), 0, "unexpected drops: {drops:?}");
    fabric.run(&["nat", "detach", "--iface", "client"])?;
    Ok(())
}

fn udp_round_trip(bed: &Bed, client: IpAddr, server: IpAddr, remapped: IpAddr) -> TestResult {
    let listener = bed.server.enter(|| UdpSocket::bind((server, 7100)))??;
    listener.set_read_timeout(Some(TIMEOUT))?;
    let socket = bed.client.enter(|| UdpSocket::bind((client, 0)))??;
    socket.set_read_timeout(Some(TIMEOUT))?;
    socket.send_to(b"through the fast path", (remapped, 7100))?;
    let mut buf = [0u8; 64];
    let (len, from) = listener.recv_from(&mut buf)?;
    assert_eq!(&buf[..len], b"through the fast path");
    assert_eq!(from.ip(), client);
    listener.send_to(b"and back", from)?;
    let (len, from) = socket.recv_from(&mut buf)?;
    assert_eq!(&buf[..len], b"and back");
    assert_eq!(from, SocketAddr::from((remapped, 7100)));
    Ok(())
}

/// 1 MiB from client to server, echoed back as a checksum of what arrived.
fn tcp_transfer(bed: &Bed, client: IpAddr, server: IpAddr, remapped: IpAddr) -> TestResult {
    const SIZE: usize = 1 << 20;
    let listener = bed.server.enter(|| TcpListener::bind((server, 7101)))??;
    listener.set_nonblocking(true)?;
    let receiver = std::thread::spawn(move || -> std::io::Result<u64> {
        let deadline = Instant::now() + TIMEOUT;
        let mut stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut data = Vec::with_capacity(SIZE);
        stream.read_to_end(&mut data)?;
        let sum = data.iter().map(|b| u64::from(*b)).sum::<u64>() + data.len() as u64;
        stream.write_all(&sum.to_be_bytes())?;
        Ok(sum)
    });
    let target = SocketAddr::from((remapped, 7101));
    let mut stream = bed
        .client
        .enter(|| TcpStream::connect_timeout(&target, TIMEOUT))??;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let data: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    stream.write_all(&data)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut echoed = [0u8; 8];
    stream.read_exact(&mut echoed)?;
    let expected = data.iter().map(|b| u64::from(*b)).sum::<u64>() + SIZE as u64;
    assert_eq!(
        u64::from_be_bytes(echoed),
        expected,
        "{client}: data intact"
    );
    let received = receiver.join().map_err(|_| "receiver panicked")??;
    assert_eq!(received, expected);
    Ok(())
}

fn ping(bed: &Bed, remapped: IpAddr) -> TestResult {
    let out = bed
        .client
        .command("ping")
        .args(["-n", "-c", "3", "-i", "0.2", "-W", "2", "-w", "5"])
        .arg(remapped.to_string())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ping {remapped}: {stdout}");
    assert!(stdout.contains("3 received"), "{stdout}");
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Probe {
    /// A datagram with TTL / hop limit 1: time exceeded from the gateway.
    TtlOne,
    /// A DF datagram too big for the server's link: fragmentation needed
    /// (IPv4) / packet too big (IPv6) from the gateway, naming its MTU.
    TooBig,
}

/// Sends the probe from a socket connected to `remapped` and checks that the
/// gateway's ICMP error reaches it (its quoted packet translated back, or
/// the socket would never match it).
fn icmp_error_comes_back(
    bed: &Bed,
    client: IpAddr,
    remapped: IpAddr,
    gw: IpAddr,
    probe: Probe,
) -> TestResult {
    let ipv4 = client.is_ipv4();
    let socket = bed.client.enter(|| UdpSocket::bind((client, 0)))??;
    socket.set_read_timeout(Some(TIMEOUT))?;
    socket.connect((remapped, 7102))?;
    let (level, recverr, hops, mtu_discover, pmtudisc_do) = if ipv4 {
        (
            libc::IPPROTO_IP,
            libc::IP_RECVERR,
            libc::IP_TTL,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
    } else {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVERR,
            libc::IPV6_UNICAST_HOPS,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        )
    };
    set_int_option(&socket, level, recverr, 1)?;
    set_int_option(&socket, level, mtu_discover, pmtudisc_do)?;
    let (payload, expected) = match probe {
        Probe::TtlOne => {
            set_int_option(&socket, level, hops, 1)?;
            (vec![7u8; 32], if ipv4 { (11, 0) } else { (3, 0) })
        }
        // Fits the client's 1500-byte link, not the server's 1280.
        Probe::TooBig => (vec![7u8; 1400], if ipv4 { (3, 4) } else { (2, 0) }),
    };
    socket.send(&payload)?;
    let mut buf = [0u8; 64];
    let err = socket
        .recv(&mut buf)
        .expect_err("nothing answers the probe itself");
    let errno = match probe {
        Probe::TtlOne => libc::EHOSTUNREACH,
        Probe::TooBig => libc::EMSGSIZE,
    };
    assert_eq!(err.raw_os_error(), Some(errno), "{client} {probe:?}: {err}");
    let error = last_icmp_error(&socket, ipv4)?;
    assert_eq!(error.from, gw, "{probe:?}: raised by the gateway");
    assert_eq!(
        error.kind, expected,
        "{client} {probe:?}: ICMP type and code"
    );
    if let Probe::TooBig = probe {
        assert_eq!(
            error.info, 1280,
            "{client}: the error names the server link's MTU"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// An L3-only peer link: packets arrive without an Ethernet header.
//
// this process ⇄ tun "peer" of gw ─ [pods] ─ server 198.18.10.2
//
// The test writes IP packets into the tun device as the peer would; the
// gateway's strait_nat_l3_ingress translates and forwards them.

/// Opens /dev/net/tun as an IFF_TUN device named `peer` in `ns`.
fn open_tun(ns: &NetNs) -> Result<std::fs::File, Box<dyn std::error::Error>> {
    let file = ns.enter(|| -> std::io::Result<std::fs::File> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        // SAFETY: an all-zero ifreq is valid; the name is shorter than IFNAMSIZ.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in request.ifr_name.iter_mut().zip(b"peer") {
            *dst = *src as libc::c_char;
        }
        request.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes only `request`, on a tun fd we own.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut request) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(file)
    })??;
    Ok(file)
}

/// The next IPv4 ICMP message the gateway sends into the tun device, within
/// `TIMEOUT` (other packets, such as IPv6 router solicitations, are skipped).
fn next_icmp4(tun: &mut std::fs::File) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let deadline = Instant::now() + TIMEOUT;
    let mut packet = vec![0u8; 2048];
    while Instant::now() < deadline {
        let mut poll = libc::pollfd {
            fd: tun.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll reads and writes the one pollfd we own.
        if unsafe { libc::poll(&mut poll, 1, 100) } <= 0 {
            continue;
        }
        let len = tun.read(&mut packet)?;
        if len >= 28 && packet[0] >> 4 == 4 && packet[9] == ICMP {
            return Ok(packet[..len].to_vec());
        }
    }
    Err("no ICMP message from the gateway".into())
}

#[test]
fn packets_from_an_l3_device_take_the_fast_path_too() -> TestResult {
    let gw = NetNs::new("natfwd-l3-gw")?;
    let server = NetNs::new("natfwd-l3-server")?;
    Veth::pair(
        (&gw, "pods", &["198.18.10.1/24"]),
        (&server, "eth0", &["198.18.10.2/24"]),
    )?;
    server.ip(&["route", "add", "default", "via", "198.18.10.1"])?;
    gw.enter(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))??;
    let mut tun = open_tun(&gw)?;
    gw.ip(&["addr", "add", "198.18.200.1/24", "dev", "peer"])?;
    gw.ip(&["link", "set", "peer", "up"])?;

    let pins = TestPinDir::new("natfwd-l3-gw")?;
    let fabric = FabricCli::new(&gw, pins.path())?;
    let config = std::env::temp_dir().join(format!("strait-natfwd-l3-{}.yaml", std::process::id()));
    std::fs::write(
        &config,
        "prefixes:\n  - {direction: Source, from: 198.18.10.0/24, to: 198.19.10.0/24}\n",
    )?;
    let applied = fabric.run(&["nat", "apply", "--config", &config.to_string_lossy()]);
    let _ = std::fs::remove_file(&config);
    applied?;
    let attached = fabric.run(&["nat", "attach", "--iface", "peer"])?;
    assert!(attached.contains("strait_nat_l3_ingress"), "{attached}");

    // packets::udp sends to port 5000.
    let listener = server.enter(|| UdpSocket::bind(("198.18.10.2", 5000)))??;
    listener.set_read_timeout(Some(TIMEOUT))?;
    // The first datagram waits for the server's neighbour entry (the stack
    // resolves it); the rest go the fast way.
    for i in 0..5u8 {
        let data = [b'l', b'3', i];
        tun.write_all(&ipv4(
            REMOTE,
            POD_REMAPPED,
            UDP,
            &udp(&REMOTE, &POD_REMAPPED, &data),
        ))?;
        let mut buf = [0u8; 16];
        let (len, from) = listener.recv_from(&mut buf)?;
        assert_eq!(&buf[..len], &data, "datagram {i}");
        assert_eq!(from.ip(), IpAddr::from(REMOTE));
    }
    let counts = ForwardCounts::read_pinned(&PinDir::open(pins.path())?)?;
    assert!(
        counts.get(ForwardOutcome::Forwarded) >= 3,
        "the fast path was not taken: {counts:?}"
    );

    // TTL 1: the gateway's stack answers with time exceeded, out of the tun.
    tun.write_all(&with_ttl4(udp4(POD_REMAPPED, 1, 8), 1))?;
    let error = next_icmp4(&mut tun)?;
    assert_eq!(error[20], 11, "time exceeded: {}", hex(&error));
    assert_eq!(&error[16..20], &REMOTE, "sent back to the peer");
    let after = ForwardCounts::read_pinned(&PinDir::open(pins.path())?)?;
    assert_eq!(
        after.get(ForwardOutcome::TtlExpiring),
        counts.get(ForwardOutcome::TtlExpiring) + 1
    );
    let drops = DropCounts::read_pinned(&PinDir::open(pins.path())?)?;
    assert_eq!(drops.total(), 0, "unexpected drops: {drops:?}");
    fabric.run(&["nat", "detach", "--iface", "peer"])?;
    Ok(())
}
