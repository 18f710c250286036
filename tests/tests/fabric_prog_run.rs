//! The Geneve programs on crafted packets with BPF_PROG_RUN, byte by byte:
//! what encapsulation writes, what decapsulation leaves, and every
//! malformed packet dropped under its reason. Needs root (CAP_BPF, netns).

use aya::programs::{TestRun, TestRunOptions};
use strait_common::{fabric::FabricCounter, DropReason};
use strait_dataplane::{
    fabric::{apply_tables, FabricConfig, FabricStats},
    programs::{Dataplane, TcProgram},
};
use strait_testbed::{bpffs::TestPinDir, packets::*, NodePair};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
const VNI: u32 = 0x00ab_cdef;

/// The fabric loaded for the node of a NodePair: 198.19.0.0/24 and
/// fd00:19::/64 are routed to the peer (198.18.0.2), VNI 0xabcdef accepted.
fn fabric(
    pair: &NodePair,
    pins: &TestPinDir,
    gateway: &str,
) -> Result<Dataplane, Box<dyn std::error::Error>> {
    let yaml = format!(
        "underlay: eth0\nlocalEndpoints: [198.18.0.1, 'fd00:5::1']\nroutes:\n  - destinations: [198.19.0.0/24, 'fd00:19::/64']\n    gateways: ['{gateway}']\n    vni: {VNI}\n"
    );
    let config = FabricConfig::from_yaml(&yaml)?;
    // The kernel routes outer packets only out of an interface that forwards.
    strait_testbed::netns::run(pair.node.command("sysctl").args([
        "-q",
        "-w",
        "net.ipv4.conf.all.forwarding=1",
        "-w",
        "net.ipv6.conf.all.forwarding=1",
    ]))?;
    let mut dp = Dataplane::load(pins.pin_dir()?)?;
    apply_tables(
        &mut dp,
        &config.tables(pair.node.ifindex(NodePair::IFACE)?, 1500)?,
    )?;
    Ok(dp)
}

/// Runs `program` once on `frame` inside the node's namespace (route lookups
/// happen there) and returns (verdict, packet after the program).
fn run(
    dp: &mut Dataplane,
    pair: &NodePair,
    program: TcProgram,
    frame: &[u8],
) -> Result<(u32, Vec<u8>), Box<dyn std::error::Error>> {
    let prog = dp.classifier(program)?;
    let mut out = vec![0u8; frame.len() + 256];
    let result = pair.node.enter(|| {
        prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        })
    })??;
    out.truncate(result.data_size_out as usize);
    Ok((result.return_value, out))
}

/// The one-slice form of the reference checksum.
fn checksum(bytes: &[u8]) -> u16 {
    internet_checksum(&[bytes])
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7) as u8).collect()
}

fn ipv4_udp(src: [u8; 4], dst: [u8; 4], payload_len: usize) -> Vec<u8> {
    ipv4(src, dst, UDP, &udp(&src, &dst, &payload(payload_len)))
}

fn ipv6_udp(src: [u8; 16], dst: [u8; 16], payload_len: usize) -> Vec<u8> {
    ipv6(src, dst, UDP, &udp(&src, &dst, &payload(payload_len)))
}

const POD_V4: [u8; 4] = [198, 18, 64, 10];
const REMOTE_V4: [u8; 4] = [198, 19, 0, 10];
const POD_V6: [u8; 16] = [0xfd, 0, 0, 6, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
const REMOTE_V6: [u8; 16] = [0xfd, 0, 0, 0x19, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];

/// Checks the Geneve and UDP part of an encapsulated frame at `udp`.
fn assert_udp_geneve(out: &[u8], udp: usize, inner: &[u8], protocol: u16) {
    let sport = u16::from_be_bytes([out[udp], out[udp + 1]]);
    assert!(
        sport >= 49152,
        "source port {sport} from the flow-hash range"
    );
    assert_eq!(
        &out[udp + 2..udp + 4],
        &6081u16.to_be_bytes(),
        "Geneve port"
    );
    assert_eq!(
        u16::from_be_bytes([out[udp + 4], out[udp + 5]]) as usize,
        8 + 8 + inner.len(),
        "UDP length"
    );
    let geneve = &out[udp + 8..udp + 16];
    assert_eq!(geneve[0], 0, "version 0, no options");
    assert_eq!(geneve[1], 0, "no O/C flags");
    assert_eq!(
        &geneve[2..4],
        &protocol.to_be_bytes(),
        "protocol type = inner EtherType"
    );
    assert_eq!(&geneve[4..8], &[0xab, 0xcd, 0xef, 0], "VNI then reserved");
    assert_eq!(&out[udp + 16..], inner, "inner packet unchanged");
}

#[test]
fn encapsulation_writes_rfc8926_headers_over_ipv4() -> TestResult {
    let pair = NodePair::new()?;
    let pins = TestPinDir::new("encap4")?;
    let mut dp = fabric(&pair, &pins, "198.18.0.2")?;
    for inner in [
        ipv4_udp(POD_V4, REMOTE_V4, 100),
        ipv6_udp(POD_V6, REMOTE_V6, 57),
    ] {
        let protocol = if inner[0] >> 4 == 4 { 0x0800 } else { 0x86dd };
        let frame = ethernet(protocol, &inner);
        let (verdict, out) = run(&mut dp, &pair, TcProgram::GeneveEncap, &frame)?;
        assert_eq!(
            verdict,
            TC_ACT_REDIRECT,
            "sent toward the gateway: {:?}",
            FabricStats::read(&dp)?.drops
        );
        assert_eq!(
            &out[12..14],
            &0x0800u16.to_be_bytes(),
            "outer EtherType IPv4"
        );
        let ip = &out[14..34];
        assert_eq!(ip[0], 0x45);
        assert_eq!(
            u16::from_be_bytes([ip[2], ip[3]]) as usize,
            20 + 8 + 8 + inner.len(),
            "total length"
        );
        assert_eq!(ip[6] & 0x40, 0x40, "DF set");
        assert_eq!((ip[8], ip[9]), (64, 17), "TTL 64, UDP");
        assert_eq!(checksum(ip), 0, "IPv4 header checksum verifies");
        assert_eq!(
            (&ip[12..16], &ip[16..20]),
            (&[198, 18, 0, 1][..], &[198, 18, 0, 2][..])
        );
        assert_udp_geneve(&out, 34, &inner, protocol);
    }
    let stats = FabricStats::read(&dp)?;
    assert_eq!(stats.counter(FabricCounter::Encapsulated).packets, 2);
    Ok(())
}

#[test]
fn encapsulation_over_an_ipv6_underlay() -> TestResult {
    let pair = NodePair::new()?;
    let pins = TestPinDir::new("encap6")?;
    let mut dp = fabric(&pair, &pins, "fd00:5::2")?;
    for inner in [
        ipv4_udp(POD_V4, REMOTE_V4, 33),
        ipv6_udp(POD_V6, REMOTE_V6, 200),
    ] {
        let protocol = if inner[0] >> 4 == 4 { 0x0800 } else { 0x86dd };
        let (verdict, out) = run(
            &mut dp,
            &pair,
            TcProgram::GeneveEncap,
            &ethernet(protocol, &inner),
        )?;
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(
            &out[12..14],
            &0x86ddu16.to_be_bytes(),
            "outer EtherType IPv6"
        );
        let ip = &out[14..54];
        assert_eq!(ip[0] >> 4, 6);
        assert_eq!(
            u16::from_be_bytes([ip[4], ip[5]]) as usize,
            8 + 8 + inner.len(),
            "payload length"
        );
        assert_eq!((ip[6], ip[7]), (17, 64), "next header UDP, hop limit 64");
        let node: std::net::Ipv6Addr = "fd00:5::1".parse()?;
        let peer: std::net::Ipv6Addr = "fd00:5::2".parse()?;
        assert_eq!(
            (&ip[8..24], &ip[24..40]),
            (&node.octets()[..], &peer.octets()[..])
        );
        assert_udp_geneve(&out, 54, &inner, protocol);
    }
    Ok(())
}

#[test]
fn packets_without_a_route_pass_untouched() -> TestResult {
    let pair = NodePair::new()?;
    let pins = TestPinDir::new("passthru")?;
    let mut dp = fabric(&pair, &pins, "198.18.0.2")?;
    let frame = ethernet(0x0800, &ipv4_udp(POD_V4, [198, 18, 99, 1], 40));
    let (verdict, out) = run(&mut dp, &pair, TcProgram::GeneveEncap, &frame)?;
    assert_eq!((verdict, out), (TC_ACT_OK, frame.clone()));
    let arp = ethernet(0x0806, &[0; 28]);
    assert_eq!(
        run(&mut dp, &pair, TcProgram::GeneveEncap, &arp)?,
        (TC_ACT_OK, arp.clone())
    );
    // Not Geneve at all: decapsulation leaves it alone too.
    assert_eq!(
        run(&mut dp, &pair, TcProgram::GeneveDecap, &frame)?,
        (TC_ACT_OK, frame)
    );
    Ok(())
}

/// An IPv4 underlay Geneve frame around `inner`, with `geneve` as its 8+ byte header.
fn geneve_v4(geneve: &[u8], inner: &[u8], udp_len: Option<u16>) -> Vec<u8> {
    let payload_len = 8 + geneve.len() + inner.len();
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + payload_len) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1]);
    let csum = checksum(&ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    ip.extend_from_slice(&[0xc0, 0x01, 0x17, 0xc1]);
    ip.extend_from_slice(&udp_len.unwrap_or(payload_len as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(geneve);
    ip.extend_from_slice(inner);
    ethernet(0x0800, &ip)
}

fn geneve_header(version_optlen: u8, protocol: u16, vni: u32) -> Vec<u8> {
    let v = vni.to_be_bytes();
    let mut h = vec![version_optlen, 0];
    h.extend_from_slice(&protocol.to_be_bytes());
    h.extend_from_slice(&[v[1], v[2], v[3], 0]);
    h
}

#[test]
fn decapsulation_restores_the_inner_packet_exactly() -> TestResult {
    let pair = NodePair::new()?;
    let pins = TestPinDir::new("decap")?;
    let mut dp = fabric(&pair, &pins, "198.18.0.2")?;
    for inner in [
        ipv4_udp(REMOTE_V4, POD_V4, 80),
        ipv6_udp(REMOTE_V6, POD_V6, 120),
    ] {
        let protocol = if inner[0] >> 4 == 4 { 0x0800 } else { 0x86dd };
        // With and without (skipped) Geneve options.
        for options in [vec![], vec![0x01, 0x02, 0x03, 0x04, 0, 0, 0, 0]] {
            let mut header = geneve_header((options.len() / 4) as u8, protocol, VNI);
            header.extend_from_slice(&options);
            let frame = geneve_v4(&header, &inner, None);
            let (verdict, out) = run(&mut dp, &pair, TcProgram::GeneveDecap, &frame)?;
            assert_eq!(verdict, TC_ACT_OK);
            assert_eq!(
                out,
                ethernet(protocol, &inner),
                "exactly Ethernet + the inner packet"
            );
        }
    }
    assert_eq!(
        FabricStats::read(&dp)?
            .counter(FabricCounter::Decapsulated)
            .packets,
        4
    );
    Ok(())
}

#[test]
fn malformed_geneve_is_dropped_with_its_reason() -> TestResult {
    let pair = NodePair::new()?;
    let pins = TestPinDir::new("malformed")?;
    let mut dp = fabric(&pair, &pins, "198.18.0.2")?;
    let inner = ipv4_udp(REMOTE_V4, POD_V4, 20);
    let cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
        (
            "version 1",
            geneve_v4(&geneve_header(0x40, 0x0800, VNI), &inner, None),
            DropReason::GeneveBadVersion,
        ),
        (
            "options beyond the packet",
            geneve_v4(&geneve_header(0x3f, 0x0800, VNI), &inner[..8], None),
            DropReason::GeneveBadOptions,
        ),
        (
            "Ethernet payload",
            geneve_v4(&geneve_header(0, 0x6558, VNI), &inner, None),
            DropReason::GeneveBadProtocol,
        ),
        (
            "wrong VNI",
            geneve_v4(&geneve_header(0, 0x0800, 99), &inner, None),
            DropReason::UnknownVni,
        ),
        (
            "short Geneve header",
            geneve_v4(&[0, 0, 8], &[], Some(11)),
            DropReason::Truncated,
        ),
        (
            "inner header cut",
            geneve_v4(&geneve_header(0, 0x0800, VNI), &inner[..12], None),
            DropReason::Truncated,
        ),
    ];
    for (what, frame, reason) in &cases {
        let before = FabricStats::read(&dp)?.drops(*reason);
        let (verdict, _) = run(&mut dp, &pair, TcProgram::GeneveDecap, frame)?;
        assert_eq!(verdict, TC_ACT_SHOT, "{what} is dropped");
        assert_eq!(
            FabricStats::read(&dp)?.drops(*reason),
            before + 1,
            "{what} counted as {reason:?}"
        );
    }
    assert_eq!(
        FabricStats::read(&dp)?
            .counter(FabricCounter::Decapsulated)
            .packets,
        0,
        "nothing half-decapsulated"
    );
    Ok(())
}

/// A TCP segment over IPv4 with the given flags and options, checksummed.
fn ipv4_tcp(flags: u8, options: &[u8]) -> Vec<u8> {
    let mut tcp = vec![0xc3, 0x50, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 0];
    tcp.push((((20 + options.len()) / 4) as u8) << 4);
    tcp.extend_from_slice(&[flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    tcp.extend_from_slice(options);
    let csum = internet_checksum(&[&pseudo_header(&POD_V4, &REMOTE_V4, TCP, tcp.len()), &tcp]);
    tcp[16..18].copy_from_slice(&csum.to_be_bytes());
    ipv4(POD_V4, REMOTE_V4, TCP, &tcp)
}

/// Whether the TCP checksum of an IPv4 packet (20-byte header) verifies.
fn tcp_checksum_ok(ip: &[u8]) -> bool {
    checksum_ok(&[
        &pseudo_header(&ip[12..16], &ip[16..20], TCP, ip.len() - 20),
        &ip[20..],
    ])
}

#[test]
fn syns_entering_the_fabric_get_their_mss_clamped_and_checksum_fixed() -> TestResult {
    let pair = NodePair::new()?;
    let pins = TestPinDir::new("mss")?;
    let mut dp = fabric(&pair, &pins, "198.18.0.2")?;
    // Overlay MTU for a dual-stack underlay of 1500: 1500 - 56; MSS = that - 40.
    let clamped_mss: u16 = 1444 - 40;
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    let cases: [(&str, u8, Vec<u8>, u16); 4] = [
        (
            "SYN with MSS 1460",
            SYN,
            vec![2, 4, 0x05, 0xb4, 1, 1, 4, 2],
            clamped_mss,
        ),
        (
            "SYN, MSS after NOPs",
            SYN,
            vec![1, 1, 2, 4, 0x05, 0xb4, 0, 0],
            clamped_mss,
        ),
        (
            "SYN with a small MSS",
            SYN,
            vec![2, 4, 0x02, 0x00, 0, 0, 0, 0],
            0x200,
        ),
        ("not a SYN", ACK, vec![2, 4, 0x05, 0xb4, 0, 0, 0, 0], 1460),
    ];
    for (what, flags, options, expected_mss) in cases {
        let inner = ipv4_tcp(flags, &options);
        let (verdict, out) = run(
            &mut dp,
            &pair,
            TcProgram::GeneveEncap,
            &ethernet(0x0800, &inner),
        )?;
        assert_eq!(verdict, TC_ACT_REDIRECT, "{what}");
        let inner_out = &out[14 + 36..];
        let mss_at = 20 + 20 + options.iter().position(|&b| b == 2).expect("MSS option") + 2;
        let mss = u16::from_be_bytes([inner_out[mss_at], inner_out[mss_at + 1]]);
        assert_eq!(mss, expected_mss, "{what}");
        assert!(tcp_checksum_ok(inner_out), "{what}: TCP checksum verifies");
        assert_eq!(checksum(&inner_out[..20]), 0, "{what}: IP header untouched");
    }
    Ok(())
}

#[test]
fn oversized_packets_are_answered_with_icmp_too_big() -> TestResult {
    let pair = NodePair::new()?;
    let pins = TestPinDir::new("toobig")?;
    let mut dp = fabric(&pair, &pins, "198.18.0.2")?;
    let overlay_mtu: u16 = 1444;

    // IPv4 with DF, 1500 bytes: destination unreachable, fragmentation needed.
    let inner = ipv4_udp(POD_V4, REMOTE_V4, 1500 - 28);
    let frame = ethernet(0x0800, &inner);
    let (verdict, out) = run(&mut dp, &pair, TcProgram::GeneveEncap, &frame)?;
    assert_eq!(verdict, TC_ACT_REDIRECT, "sent back to the pod");
    assert_eq!(
        (&out[..6], &out[6..12]),
        (&frame[6..12], &frame[..6]),
        "MACs swapped"
    );
    let ip = &out[14..34];
    assert_eq!((ip[0], ip[9]), (0x45, 1), "IPv4 carrying ICMP");
    assert_eq!(checksum(ip), 0);
    assert_eq!(
        (&ip[12..16], &ip[16..20]),
        (&[198, 18, 0, 1][..], &POD_V4[..]),
        "from the node to the sender"
    );
    let icmp = &out[34..];
    assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, 20 + icmp.len());
    assert_eq!((icmp[0], icmp[1]), (3, 4), "fragmentation needed");
    assert_eq!(
        u16::from_be_bytes([icmp[6], icmp[7]]),
        overlay_mtu,
        "next-hop MTU"
    );
    assert_eq!(checksum(icmp), 0, "ICMP checksum verifies");
    assert_eq!(&icmp[8..], &inner[..28], "quotes the header and 8 bytes");

    // IPv6: packet too big.
    let inner6 = ipv6_udp(POD_V6, REMOTE_V6, 1500 - 48);
    let (verdict, out) = run(
        &mut dp,
        &pair,
        TcProgram::GeneveEncap,
        &ethernet(0x86dd, &inner6),
    )?;
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let ip6 = &out[14..54];
    assert_eq!((ip6[0] >> 4, ip6[6]), (6, 58), "IPv6 carrying ICMPv6");
    assert_eq!(&ip6[24..40], &POD_V6, "to the sender");
    let icmp6 = &out[54..];
    assert_eq!(u16::from_be_bytes([ip6[4], ip6[5]]) as usize, icmp6.len());
    assert_eq!((icmp6[0], icmp6[1]), (2, 0), "packet too big");
    assert_eq!(
        u32::from_be_bytes([icmp6[4], icmp6[5], icmp6[6], icmp6[7]]),
        u32::from(overlay_mtu)
    );
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip6[8..40]);
    pseudo.extend_from_slice(&(icmp6.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(icmp6);
    assert_eq!(
        checksum(&pseudo),
        0,
        "ICMPv6 checksum (with pseudo-header) verifies"
    );
    assert_eq!(&icmp6[8..], &inner6[..48]);

    // Without DF the packet cannot be answered nor fragmented here: a counted drop.
    let mut no_df = ipv4_udp(POD_V4, REMOTE_V4, 1500 - 28);
    no_df[6] = 0;
    no_df[10..12].copy_from_slice(&[0, 0]);
    let csum = checksum(&no_df[..20]);
    no_df[10..12].copy_from_slice(&csum.to_be_bytes());
    let (verdict, _) = run(
        &mut dp,
        &pair,
        TcProgram::GeneveEncap,
        &ethernet(0x0800, &no_df),
    )?;
    assert_eq!(verdict, TC_ACT_SHOT);
    let stats = FabricStats::read(&dp)?;
    assert_eq!(stats.drops(DropReason::FragmentationNeeded), 1);
    assert_eq!(stats.counter(FabricCounter::AnsweredTooBig).packets, 2);
    assert_eq!(stats.counter(FabricCounter::Encapsulated).packets, 0);
    Ok(())
}
