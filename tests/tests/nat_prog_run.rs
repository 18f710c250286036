//! The NAT programs run on crafted frames with BPF_PROG_RUN: every protocol,
//! both directions and both addresses, IPv4 and IPv6, ICMP errors,
//! fragments and malformed packets, and two gateways chained as two
//! clusters with the same pod CIDR would chain them.
//!
//! Every mapping translates both ways on the gateway's interface toward
//! the peer: a `Destination {from, to}` mapping rewrites the destination of
//! what leaves (`from` → `to`) and the source of what arrives (`to` →
//! `from`); a `Source` mapping (and an address mapping) the other address.
//!
//! Expected frames are built from scratch with the translated addresses and
//! checksums computed by the RFC 1071 reference below (never by the code
//! under test), then compared byte for byte with what the program wrote; the
//! output's checksums are also verified independently. Needs root (CAP_BPF).

use aya::programs::{TestRun, TestRunOptions};
use strait_api::networking::{AddressMapping, NatConfigurationSpec, NatDirection, PrefixMapping};
use strait_common::{Direction, DropReason};
use strait_dataplane::{
    drops::DropCounts,
    nat::{NatPlan, NatTables},
    programs::{Dataplane, TcProgram},
};
use strait_testbed::{bpffs::TestPinDir, packets::*};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// TC_ACT_UNSPEC as the kernel reports it: passed on, no opinion.
const VERDICT_PASS: u32 = -1i32 as u32;
/// TC_ACT_SHOT.
const VERDICT_DROP: u32 = 2;

const EGRESS: Direction = Direction::Egress;
const INGRESS: Direction = Direction::Ingress;

// Addresses (198.18.0.0/15 and fd00::/8 only). This gateway knows the
// peer's pods as 198.19.10.0/24; they really are 198.18.10.0/24 (a
// Destination mapping). Our pods are 198.18.20.0/24 and are exposed to the
// peer as 198.19.20.0/24 (a Source mapping).
const REMOTE_REMAPPED: [u8; 4] = [198, 19, 10, 0];
const REMOTE_REAL: [u8; 4] = [198, 18, 10, 0];
const LOCAL_REAL: [u8; 4] = [198, 18, 20, 0];
const LOCAL_REMAPPED: [u8; 4] = [198, 19, 20, 0];
const ROUTER: [u8; 4] = [198, 18, 200, 1];
const UNMAPPED: [u8; 4] = [198, 18, 99, 9];
/// A host no mapping covers, on the peer's side.
const OUTSIDER: [u8; 4] = [198, 18, 201, 7];
/// One of our pods exposed under an address of its own (an address
/// mapping, more specific than the /24 it is in).
const SERVICE_LOCAL: [u8; 4] = [198, 18, 20, 77];
const SERVICE_REMAPPED: [u8; 4] = [198, 19, 30, 5];

const REMOTE6_REMAPPED: [u8; 16] = v6(0x19, 0x10, 0);
const REMOTE6_REAL: [u8; 16] = v6(0x18, 0x10, 0);
const LOCAL6_REAL: [u8; 16] = v6(0x18, 0x20, 0);
const LOCAL6_REMAPPED: [u8; 16] = v6(0x19, 0x20, 0);
const ROUTER6: [u8; 16] = v6(0x18, 0xff, 1);
const SERVICE6_LOCAL: [u8; 16] = v6(0x18, 0x20, 0x77);
const SERVICE6_REMAPPED: [u8; 16] = v6(0x19, 0x30, 5);

/// fd00:0:<a>:<b>::<host>
const fn v6(a: u8, b: u8, host: u8) -> [u8; 16] {
    [0xfd, 0, 0, 0, 0, a, 0, b, 0, 0, 0, 0, 0, 0, 0, host]
}

fn with_host4(net: [u8; 4], host: u8) -> [u8; 4] {
    [net[0], net[1], net[2], host]
}

fn with_host6(net: [u8; 16], host: u8) -> [u8; 16] {
    let mut a = net;
    a[14] = 0xab; // host bits beyond the /64 must survive too
    a[15] = host;
    a
}

fn cidr4(a: [u8; 4]) -> String {
    format!("{}.{}.{}.{}/24", a[0], a[1], a[2], a[3])
}

fn cidr6(a: [u8; 16]) -> String {
    format!("{}/64", std::net::Ipv6Addr::from(a))
}

fn prefix(direction: NatDirection, from: String, to: String) -> PrefixMapping {
    PrefixMapping {
        direction,
        from,
        to,
    }
}

fn spec() -> NatConfigurationSpec {
    NatConfigurationSpec {
        prefixes: vec![
            prefix(
                NatDirection::Destination,
                cidr4(REMOTE_REMAPPED),
                cidr4(REMOTE_REAL),
            ),
            prefix(
                NatDirection::Source,
                cidr4(LOCAL_REAL),
                cidr4(LOCAL_REMAPPED),
            ),
            prefix(
                NatDirection::Destination,
                cidr6(REMOTE6_REMAPPED),
                cidr6(REMOTE6_REAL),
            ),
            prefix(
                NatDirection::Source,
                cidr6(LOCAL6_REAL),
                cidr6(LOCAL6_REMAPPED),
            ),
        ],
        addresses: vec![
            AddressMapping {
                remapped: std::net::Ipv4Addr::from(SERVICE_REMAPPED).to_string(),
                local: std::net::Ipv4Addr::from(SERVICE_LOCAL).to_string(),
            },
            AddressMapping {
                remapped: std::net::Ipv6Addr::from(SERVICE6_REMAPPED).to_string(),
                local: std::net::Ipv6Addr::from(SERVICE6_LOCAL).to_string(),
            },
        ],
    }
}

// ---------------------------------------------------------------------------
// Running the programs.

struct Bed {
    _pins: TestPinDir,
    dp: Dataplane,
}

impl Bed {
    fn new(label: &str) -> Result<Self, Box<dyn std::error::Error>> {
        Self::with_spec(label, &spec())
    }

    fn with_spec(
        label: &str,
        spec: &NatConfigurationSpec,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let pins = TestPinDir::new(label)?;
        let dp = Dataplane::load(pins.pin_dir()?)?;
        let mut tables = NatTables::open_pinned(dp.pin_dir())?;
        tables.apply(&NatPlan::from_spec(spec)?)?;
        Ok(Bed { _pins: pins, dp })
    }

    /// Runs the program of `direction` on `frame`: (verdict, frame out).
    fn run(
        &mut self,
        direction: Direction,
        frame: &[u8],
    ) -> Result<(u32, Vec<u8>), Box<dyn std::error::Error>> {
        let prog = self.dp.classifier(TcProgram::Nat(direction))?;
        let mut out = vec![0u8; frame.len() + 256];
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..TestRunOptions::new()
            })
            .map_err(|e| format!("BPF_PROG_RUN of a {}-byte frame: {e}", frame.len()))?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out))
    }

    /// Asserts the program passes `input` on as exactly `expected`.
    fn expect_translated(
        &mut self,
        direction: Direction,
        what: &str,
        input: &[u8],
        expected: &[u8],
    ) -> TestResult {
        assert_checksums_valid(input);
        let (verdict, out) = self.run(direction, input)?;
        assert_eq!(verdict, VERDICT_PASS, "{what}: verdict");
        assert_eq!(hex(&out), hex(expected), "{what}: output frame");
        assert_checksums_valid(&out);
        Ok(())
    }

    /// Asserts the program passes `input` on unchanged, checksums or not.
    fn expect_unchanged(&mut self, direction: Direction, what: &str, input: &[u8]) -> TestResult {
        let (verdict, out) = self.run(direction, input)?;
        assert_eq!(verdict, VERDICT_PASS, "{what}: verdict");
        assert_eq!(hex(&out), hex(input), "{what}: output frame");
        Ok(())
    }

    fn expect_dropped(
        &mut self,
        direction: Direction,
        what: &str,
        input: &[u8],
        reason: DropReason,
    ) -> TestResult {
        let before = DropCounts::read_loaded(&self.dp)?;
        let (verdict, _) = self.run(direction, input)?;
        let after = DropCounts::read_loaded(&self.dp)?;
        assert_eq!(verdict, VERDICT_DROP, "{what}: verdict");
        assert_eq!(
            after.get(reason),
            before.get(reason) + 1,
            "{what}: counted under {}",
            reason.as_str()
        );
        assert_eq!(
            after.total(),
            before.total() + 1,
            "{what}: counted under one reason only"
        );
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------
// IPv4

/// Builds a frame from a source to a destination address.
type MakeFrame4 = Box<dyn Fn([u8; 4], [u8; 4]) -> Vec<u8>>;

/// Frames of every protocol from `src` to `dst`, by name.
fn protocols4(data: &'static [u8]) -> Vec<(&'static str, MakeFrame4)> {
    vec![
        (
            "udp",
            Box::new(move |src, dst| eth4(ipv4(src, dst, UDP, &udp(&src, &dst, data)))),
        ),
        (
            "tcp",
            Box::new(move |src, dst| eth4(ipv4(src, dst, TCP, &tcp(&src, &dst, data)))),
        ),
        (
            "icmp echo",
            Box::new(move |src, dst| eth4(ipv4(src, dst, ICMP, &icmp4(8, 0, [0, 1, 0, 9], data)))),
        ),
        (
            "udp without checksum",
            Box::new(move |src, dst| eth4(ipv4(src, dst, UDP, &udp_without_checksum(data)))),
        ),
        // Another protocol (GRE): only the IP header changes.
        (
            "gre",
            Box::new(|src, dst| eth4(ipv4(src, dst, 47, &[0, 0, 0x08, 0, 1, 2, 3, 4]))),
        ),
    ]
}

#[test]
fn ipv4_egress_translates_both_addresses_and_every_checksum() -> TestResult {
    let mut bed = Bed::new("nat-v4-egress")?;
    // Our pod sends to a peer pod by the address we know it by.
    let (ours, ours_seen) = (with_host4(LOCAL_REAL, 200), with_host4(LOCAL_REMAPPED, 200));
    let (peer_seen, peer) = (with_host4(REMOTE_REMAPPED, 7), with_host4(REMOTE_REAL, 7));
    for (what, make) in protocols4(b"strait nat test payload, odd length!!") {
        bed.expect_translated(
            EGRESS,
            &format!("{what}: both addresses"),
            &make(ours, peer_seen),
            &make(ours_seen, peer),
        )?;
        bed.expect_translated(
            EGRESS,
            &format!("{what}: destination only"),
            &make(UNMAPPED, peer_seen),
            &make(UNMAPPED, peer),
        )?;
        bed.expect_translated(
            EGRESS,
            &format!("{what}: source only"),
            &make(ours, UNMAPPED),
            &make(ours_seen, UNMAPPED),
        )?;
    }
    let make = |src, dst| eth4(ipv4(src, dst, UDP, &udp(&src, &dst, b"svc")));
    // The single address mapping is more specific than the /24 it is in.
    bed.expect_translated(
        EGRESS,
        "address mapping",
        &make(SERVICE_LOCAL, peer_seen),
        &make(SERVICE_REMAPPED, peer),
    )?;
    // A neighbour of that address still follows its /24.
    let near = with_host4(LOCAL_REAL, 78);
    bed.expect_translated(
        EGRESS,
        "next to the address",
        &make(near, peer_seen),
        &make(with_host4(LOCAL_REMAPPED, 78), peer),
    )?;
    // Going out, only the egress tables apply: the peer's real addresses
    // and the addresses we are exposed as are not rewritten.
    let untouched = make(UNMAPPED, peer);
    bed.expect_translated(EGRESS, "peer's real address", &untouched, &untouched)?;
    let untouched = make(ours_seen, UNMAPPED);
    bed.expect_translated(EGRESS, "already exposed source", &untouched, &untouched)?;
    let arp = ethernet(0x0806, &[0; 28]);
    bed.expect_translated(EGRESS, "arp", &arp, &arp)?;
    Ok(())
}

#[test]
fn ipv4_ingress_translates_both_addresses_back() -> TestResult {
    let mut bed = Bed::new("nat-v4-ingress")?;
    // The peer pod answers: from its real address to the one we are exposed as.
    let (ours, ours_seen) = (with_host4(LOCAL_REAL, 42), with_host4(LOCAL_REMAPPED, 42));
    let (peer_seen, peer) = (with_host4(REMOTE_REMAPPED, 7), with_host4(REMOTE_REAL, 7));
    for (what, make) in protocols4(b"0123456789abcdef") {
        bed.expect_translated(
            INGRESS,
            &format!("{what}: both addresses"),
            &make(peer, ours_seen),
            &make(peer_seen, ours),
        )?;
        bed.expect_translated(
            INGRESS,
            &format!("{what}: source only"),
            &make(peer, UNMAPPED),
            &make(peer_seen, UNMAPPED),
        )?;
        bed.expect_translated(
            INGRESS,
            &format!("{what}: destination only"),
            &make(OUTSIDER, ours_seen),
            &make(OUTSIDER, ours),
        )?;
    }
    let make = |src, dst| eth4(ipv4(src, dst, TCP, &tcp(&src, &dst, b"svc")));
    bed.expect_translated(
        INGRESS,
        "address mapping",
        &make(peer, SERVICE_REMAPPED),
        &make(peer_seen, SERVICE_LOCAL),
    )?;
    // Coming in, only the ingress tables apply.
    let untouched = make(peer_seen, ours);
    bed.expect_translated(INGRESS, "local view of addresses", &untouched, &untouched)?;
    Ok(())
}

/// The packet an ICMP error quotes: its IP header and first 8 bytes.
fn quoted4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let full = ipv4(src, dst, UDP, &udp(&src, &dst, b"original datagram"));
    full[..28].to_vec()
}

/// Quotes of other transports: TCP with its checksum (a router quoting
/// more than 8 bytes), UDP without a checksum, an ICMP echo.
fn quoted4_kinds(src: [u8; 4], dst: [u8; 4]) -> [Vec<u8>; 3] {
    let tcp_quote = ipv4(src, dst, TCP, &tcp(&src, &dst, b"original segment"))[..44].to_vec();
    let plain = ipv4(src, dst, UDP, &udp_without_checksum(b"original datagram"))[..28].to_vec();
    let echo = ipv4(src, dst, ICMP, &icmp4(8, 0, [0, 1, 0, 1], b"ping"))[..28].to_vec();
    [tcp_quote, plain, echo]
}

#[test]
fn ipv4_icmp_errors_translate_the_quoted_packet_the_other_way() -> TestResult {
    let mut bed = Bed::new("nat-v4-icmp")?;
    // Our pod 198.18.20.5 sent to the peer's pod, known here as
    // 198.19.10.9; it left as 198.19.20.5 → 198.18.10.9.
    let (ours, ours_seen) = (with_host4(LOCAL_REAL, 5), with_host4(LOCAL_REMAPPED, 5));
    let (peer, peer_seen) = (with_host4(REMOTE_REAL, 9), with_host4(REMOTE_REMAPPED, 9));

    // Coming in: a router on the peer's side reports on that packet; the
    // error's destination and the quote's source are ours, the quote's
    // destination the peer's.
    for (kind, code, rest) in [
        (11, 0, [0; 4]),
        (3, 3, [0; 4]),
        (3, 4, [0, 0, 0x05, 0x00]),
        (12, 0, [20, 0, 0, 0]),
    ] {
        let error = |dst, quoted_src, quoted_dst| {
            eth4(ipv4(
                ROUTER,
                dst,
                ICMP,
                &icmp4(kind, code, rest, &quoted4(quoted_src, quoted_dst)),
            ))
        };
        bed.expect_translated(
            INGRESS,
            &format!("icmp {kind}/{code} inbound"),
            &error(ours_seen, ours_seen, peer),
            &error(ours, ours, peer_seen),
        )?;
    }
    // ... or the peer's pod itself does: the error's source is translated
    // back too.
    let from_pod =
        |src, dst, quote: Vec<u8>| eth4(ipv4(src, dst, ICMP, &icmp4(3, 3, [0; 4], &quote)));
    bed.expect_translated(
        INGRESS,
        "port unreachable from the peer's pod",
        &from_pod(peer, ours_seen, quoted4(ours_seen, peer)),
        &from_pod(peer_seen, ours, quoted4(ours, peer_seen)),
    )?;

    // Going out: the peer's pod sent to us (198.18.10.9 → 198.19.20.5,
    // arriving as 198.19.10.9 → 198.18.20.5) and our pod reports on it.
    bed.expect_translated(
        EGRESS,
        "port unreachable outbound",
        &from_pod(ours, peer_seen, quoted4(peer_seen, ours)),
        &from_pod(ours_seen, peer, quoted4(peer, ours_seen)),
    )?;
    // Generated by a router of ours (not mapped): the destination and the
    // whole quote change.
    let from_router =
        |dst, quote: Vec<u8>| eth4(ipv4(ROUTER, dst, ICMP, &icmp4(11, 0, [0; 4], &quote)));
    bed.expect_translated(
        EGRESS,
        "time exceeded from our router",
        &from_router(peer_seen, quoted4(peer_seen, ours)),
        &from_router(peer, quoted4(peer, ours_seen)),
    )?;
    // Other quoted transports: their own checksums follow both addresses.
    for (i, (quote_in, quote_out)) in quoted4_kinds(ours_seen, peer)
        .into_iter()
        .zip(quoted4_kinds(ours, peer_seen))
        .enumerate()
    {
        let error = |dst, quote: &[u8]| eth4(ipv4(ROUTER, dst, ICMP, &icmp4(11, 0, [0; 4], quote)));
        bed.expect_translated(
            INGRESS,
            &format!("quote kind {i} inbound"),
            &error(ours_seen, &quote_in),
            &error(ours, &quote_out),
        )?;
    }
    for (i, (quote_in, quote_out)) in quoted4_kinds(peer_seen, ours)
        .into_iter()
        .zip(quoted4_kinds(peer, ours_seen))
        .enumerate()
    {
        let error = |dst, quote: &[u8]| eth4(ipv4(ROUTER, dst, ICMP, &icmp4(3, 1, [0; 4], quote)));
        bed.expect_translated(
            EGRESS,
            &format!("quote kind {i} outbound"),
            &error(peer_seen, &quote_in),
            &error(peer, &quote_out),
        )?;
    }
    // Echo requests are not errors: their body is never rewritten.
    let echo = |src, dst| {
        eth4(ipv4(
            src,
            dst,
            ICMP,
            &icmp4(8, 0, [0, 7, 0, 1], &quoted4(ours_seen, peer)),
        ))
    };
    bed.expect_translated(
        INGRESS,
        "echo carrying an IP-like body",
        &echo(peer, ours_seen),
        &echo(peer_seen, ours),
    )?;
    Ok(())
}

#[test]
fn ipv4_fragments_fix_the_transport_checksum_in_the_first_only() -> TestResult {
    let mut bed = Bed::new("nat-v4-frag")?;
    let (peer, peer_seen) = (with_host4(REMOTE_REAL, 7), with_host4(REMOTE_REMAPPED, 7));
    let (to, real) = (with_host4(LOCAL_REMAPPED, 3), with_host4(LOCAL_REAL, 3));
    let data: Vec<u8> = (0..64u8).collect();
    // A 72-byte UDP datagram split after 32 bytes (4 units of 8).
    let first = |src: [u8; 4], dst: [u8; 4]| {
        let datagram = udp(&src, &dst, &data);
        eth4(ipv4_with(src, dst, UDP, 0x2000, &datagram[..32]))
    };
    let second = |src: [u8; 4], dst: [u8; 4]| {
        let datagram = udp(&src, &dst, &data);
        eth4(ipv4_with(src, dst, UDP, 4, &datagram[32..]))
    };
    bed.expect_translated(
        INGRESS,
        "first fragment",
        &first(peer, to),
        &first(peer_seen, real),
    )?;
    bed.expect_translated(
        INGRESS,
        "later fragment",
        &second(peer, to),
        &second(peer_seen, real),
    )?;
    bed.expect_translated(
        EGRESS,
        "first fragment outbound",
        &first(real, peer_seen),
        &first(to, peer),
    )?;
    bed.expect_translated(
        EGRESS,
        "later fragment outbound",
        &second(real, peer_seen),
        &second(to, peer),
    )?;
    // The reassembled, translated datagram carries a valid checksum.
    let (_, a) = bed.run(INGRESS, &first(peer, to))?;
    let (_, b) = bed.run(INGRESS, &second(peer, to))?;
    let whole = [&a[34..], &b[34..]].concat();
    assert!(checksum_ok(&[
        &pseudo_header(&peer_seen, &real, UDP, whole.len()),
        &whole
    ]));
    // A later fragment too short to hold a UDP header is still translated.
    let tail = |src, dst| eth4(ipv4_with(src, dst, UDP, 9, &[1, 2, 3]));
    bed.expect_translated(
        INGRESS,
        "short later fragment",
        &tail(peer, to),
        &tail(peer_seen, real),
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------
// IPv6

#[test]
fn ipv6_translation_fixes_every_checksum_in_both_directions() -> TestResult {
    let mut bed = Bed::new("nat-v6")?;
    let (peer, peer_seen) = (with_host6(REMOTE6_REAL, 7), with_host6(REMOTE6_REMAPPED, 7));
    let (ours, ours_seen) = (with_host6(LOCAL6_REAL, 42), with_host6(LOCAL6_REMAPPED, 42));
    let data = b"strait nat v6 payload, odd length";
    let make_udp = |src, dst| eth6(ipv6(src, dst, UDP, &udp(&src, &dst, data)));
    let make_tcp = |src, dst| eth6(ipv6(src, dst, TCP, &tcp(&src, &dst, data)));
    let make_echo = |src, dst| {
        eth6(ipv6(
            src,
            dst,
            ICMPV6,
            &icmp6(src, dst, 128, 0, [0, 1, 0, 2], data),
        ))
    };
    for (what, make) in [
        ("udp", &make_udp as &dyn Fn([u8; 16], [u8; 16]) -> Vec<u8>),
        ("tcp", &make_tcp),
        ("icmpv6 echo", &make_echo),
    ] {
        bed.expect_translated(
            EGRESS,
            &format!("{what} outbound"),
            &make(ours, peer_seen),
            &make(ours_seen, peer),
        )?;
        bed.expect_translated(
            INGRESS,
            &format!("{what} inbound"),
            &make(peer, ours_seen),
            &make(peer_seen, ours),
        )?;
        bed.expect_translated(
            EGRESS,
            &format!("{what} outbound, destination only"),
            &make(ROUTER6, peer_seen),
            &make(ROUTER6, peer),
        )?;
        bed.expect_translated(
            INGRESS,
            &format!("{what} inbound, source only"),
            &make(peer, ROUTER6),
            &make(peer_seen, ROUTER6),
        )?;
    }
    bed.expect_translated(
        INGRESS,
        "address mapping inbound",
        &make_udp(peer, SERVICE6_REMAPPED),
        &make_udp(peer_seen, SERVICE6_LOCAL),
    )?;
    bed.expect_translated(
        EGRESS,
        "address mapping outbound",
        &make_udp(SERVICE6_LOCAL, peer_seen),
        &make_udp(SERVICE6_REMAPPED, peer),
    )?;
    let unmapped = make_udp(peer_seen, ROUTER6);
    bed.expect_translated(INGRESS, "unmapped", &unmapped, &unmapped)?;
    Ok(())
}

/// What an ICMPv6 error quotes: the IPv6 header and the start of UDP.
fn quoted6(src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
    let full = ipv6(src, dst, UDP, &udp(&src, &dst, b"original datagram"));
    full[..56].to_vec()
}

/// Quotes of TCP and of an ICMPv6 echo (whose checksum has a pseudo header).
fn quoted6_kinds(src: [u8; 16], dst: [u8; 16]) -> [Vec<u8>; 2] {
    let tcp_quote = ipv6(src, dst, TCP, &tcp(&src, &dst, b"original segment")).to_vec();
    let echo = ipv6(
        src,
        dst,
        ICMPV6,
        &icmp6(src, dst, 128, 0, [0, 1, 0, 1], b"ping"),
    )
    .to_vec();
    [tcp_quote, echo]
}

#[test]
fn ipv6_icmp_errors_translate_the_quoted_packet_the_other_way() -> TestResult {
    let mut bed = Bed::new("nat-v6-icmp")?;
    let (ours, ours_seen) = (with_host6(LOCAL6_REAL, 5), with_host6(LOCAL6_REMAPPED, 5));
    let (peer, peer_seen) = (with_host6(REMOTE6_REAL, 9), with_host6(REMOTE6_REMAPPED, 9));
    let error = |src, dst, kind, code, rest, quote: &[u8]| {
        eth6(ipv6(
            src,
            dst,
            ICMPV6,
            &icmp6(src, dst, kind, code, rest, quote),
        ))
    };
    for (kind, code, rest) in [
        (1, 4, [0; 4]),
        (2, 0, [0, 0, 0x05, 0x00]),
        (3, 0, [0; 4]),
        (4, 0, [0, 0, 0, 8]),
    ] {
        bed.expect_translated(
            INGRESS,
            &format!("icmpv6 {kind}/{code} inbound"),
            &error(
                ROUTER6,
                ours_seen,
                kind,
                code,
                rest,
                &quoted6(ours_seen, peer),
            ),
            &error(ROUTER6, ours, kind, code, rest, &quoted6(ours, peer_seen)),
        )?;
    }
    bed.expect_translated(
        INGRESS,
        "port unreachable from the peer's pod",
        &error(peer, ours_seen, 1, 4, [0; 4], &quoted6(ours_seen, peer)),
        &error(peer_seen, ours, 1, 4, [0; 4], &quoted6(ours, peer_seen)),
    )?;
    bed.expect_translated(
        EGRESS,
        "port unreachable outbound",
        &error(ours, peer_seen, 1, 4, [0; 4], &quoted6(peer_seen, ours)),
        &error(ours_seen, peer, 1, 4, [0; 4], &quoted6(peer, ours_seen)),
    )?;
    bed.expect_translated(
        EGRESS,
        "packet too big from our router",
        &error(
            ROUTER6,
            peer_seen,
            2,
            0,
            [0, 0, 5, 0],
            &quoted6(peer_seen, ours),
        ),
        &error(ROUTER6, peer, 2, 0, [0, 0, 5, 0], &quoted6(peer, ours_seen)),
    )?;
    for (i, (quote_in, quote_out)) in quoted6_kinds(ours_seen, peer)
        .into_iter()
        .zip(quoted6_kinds(ours, peer_seen))
        .enumerate()
    {
        bed.expect_translated(
            INGRESS,
            &format!("icmpv6 quote kind {i} inbound"),
            &error(ROUTER6, ours_seen, 3, 0, [0; 4], &quote_in),
            &error(ROUTER6, ours, 3, 0, [0; 4], &quote_out),
        )?;
    }
    for (i, (quote_in, quote_out)) in quoted6_kinds(peer_seen, ours)
        .into_iter()
        .zip(quoted6_kinds(peer, ours_seen))
        .enumerate()
    {
        bed.expect_translated(
            EGRESS,
            &format!("icmpv6 quote kind {i} outbound"),
            &error(ROUTER6, peer_seen, 3, 0, [0; 4], &quote_in),
            &error(ROUTER6, peer, 3, 0, [0; 4], &quote_out),
        )?;
    }
    Ok(())
}

/// An IPv6 fragment header carrying `offset_units` (8 bytes each).
fn fragment_header(next: u8, offset_units: u16, more: bool) -> Vec<u8> {
    let field = (offset_units << 3) | u16::from(more);
    let mut h = vec![next, 0];
    h.extend_from_slice(&field.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x12, 0x34]);
    h
}

#[test]
fn ipv6_fragments_and_extension_headers_are_walked() -> TestResult {
    let mut bed = Bed::new("nat-v6-frag")?;
    let (peer, peer_seen) = (with_host6(REMOTE6_REAL, 7), with_host6(REMOTE6_REMAPPED, 7));
    let (to, real) = (with_host6(LOCAL6_REMAPPED, 3), with_host6(LOCAL6_REAL, 3));
    let data: Vec<u8> = (0..64u8).collect();
    let first = |src: [u8; 16], dst: [u8; 16]| {
        let datagram = udp(&src, &dst, &data);
        eth6(ipv6(
            src,
            dst,
            44,
            &[fragment_header(UDP, 0, true), datagram[..32].to_vec()].concat(),
        ))
    };
    let second = |src: [u8; 16], dst: [u8; 16]| {
        let datagram = udp(&src, &dst, &data);
        eth6(ipv6(
            src,
            dst,
            44,
            &[fragment_header(UDP, 4, false), datagram[32..].to_vec()].concat(),
        ))
    };
    for (what, make) in [
        (
            "first fragment",
            &first as &dyn Fn([u8; 16], [u8; 16]) -> Vec<u8>,
        ),
        ("later fragment", &second),
    ] {
        let (verdict, out) = bed.run(INGRESS, &make(peer, to))?;
        assert_eq!(verdict, VERDICT_PASS, "{what}");
        assert_eq!(hex(&out), hex(&make(peer_seen, real)), "{what}");
        let (verdict, out) = bed.run(EGRESS, &make(real, peer_seen))?;
        assert_eq!(verdict, VERDICT_PASS, "{what} outbound");
        assert_eq!(hex(&out), hex(&make(to, peer)), "{what} outbound");
    }
    // Hop-by-hop and destination options before TCP.
    let options = |next| vec![next, 0, 1, 4, 0, 0, 0, 0];
    let tcp_behind_options = |src, dst| {
        eth6(ipv6(
            src,
            dst,
            0,
            &[options(60), options(TCP), tcp(&src, &dst, &data)].concat(),
        ))
    };
    let (verdict, out) = bed.run(INGRESS, &tcp_behind_options(peer, to))?;
    assert_eq!(verdict, VERDICT_PASS);
    assert_eq!(hex(&out), hex(&tcp_behind_options(peer_seen, real)));
    let l4 = &out[14 + 40 + 16..];
    assert!(checksum_ok(&[
        &pseudo_header(&peer_seen, &real, TCP, l4.len()),
        l4
    ]));
    Ok(())
}

// ---------------------------------------------------------------------------
// Two clusters with the same pod CIDR, each with only its own remap

/// The worked example of the semantics: clusters A and B both use
/// 198.18.64.0/18 for pods. A knows B's pods as 198.19.64.0/18, B knows
/// A's as 198.19.128.0/18, each by its own Destination mapping and nothing
/// about the other's choice. A's pod reaches B's pod by B's remapped
/// address, B sees A by A's remapped address, the reply and an ICMP error
/// find their way back; between the gateways packets carry the real pod
/// addresses.
#[test]
fn two_clusters_with_the_same_pod_cidr_talk_through_their_own_remaps() -> TestResult {
    let own_view = |peer_seen_as: &str| NatConfigurationSpec {
        prefixes: vec![prefix(
            NatDirection::Destination,
            peer_seen_as.into(),
            "198.18.64.0/18".into(),
        )],
        addresses: vec![],
    };
    let mut gateway_a = Bed::with_spec("nat-worked-a", &own_view("198.19.64.0/18"))?;
    let mut gateway_b = Bed::with_spec("nat-worked-b", &own_view("198.19.128.0/18"))?;
    let pod_a = [198, 18, 65, 10];
    let pod_b = [198, 18, 66, 20];
    let b_as_seen_by_a = [198, 19, 66, 20];
    let a_as_seen_by_b = [198, 19, 129, 10];
    let udp4 =
        |src: [u8; 4], dst: [u8; 4], data: &[u8]| eth4(ipv4(src, dst, UDP, &udp(&src, &dst, data)));

    // A's pod sends to B's pod as A knows it.
    let sent = udp4(pod_a, b_as_seen_by_a, b"hello B");
    let (verdict, on_the_wire) = gateway_a.run(EGRESS, &sent)?;
    assert_eq!(verdict, VERDICT_PASS);
    assert_eq!(hex(&on_the_wire), hex(&udp4(pod_a, pod_b, b"hello B")));
    let (verdict, delivered) = gateway_b.run(INGRESS, &on_the_wire)?;
    assert_eq!(verdict, VERDICT_PASS);
    assert_eq!(
        hex(&delivered),
        hex(&udp4(a_as_seen_by_b, pod_b, b"hello B")),
        "B's pod sees A's pod by the address B gave it"
    );
    assert_checksums_valid(&delivered);

    // B's pod answers whoever it saw.
    let reply = udp4(pod_b, a_as_seen_by_b, b"hello A");
    let (_, on_the_wire) = gateway_b.run(EGRESS, &reply)?;
    assert_eq!(hex(&on_the_wire), hex(&udp4(pod_b, pod_a, b"hello A")));
    let (_, delivered) = gateway_a.run(INGRESS, &on_the_wire)?;
    assert_eq!(
        hex(&delivered),
        hex(&udp4(b_as_seen_by_a, pod_a, b"hello A")),
        "the reply comes from where A's pod sent"
    );
    assert_checksums_valid(&delivered);

    // B's pod refuses the datagram: the port unreachable quotes it as B
    // received it, and must reach A quoting it as A's pod sent it.
    let quote = |src, dst| quoted4(src, dst);
    let refusal = eth4(ipv4(
        pod_b,
        a_as_seen_by_b,
        ICMP,
        &icmp4(3, 3, [0; 4], &quote(a_as_seen_by_b, pod_b)),
    ));
    let (_, on_the_wire) = gateway_b.run(EGRESS, &refusal)?;
    let (_, delivered) = gateway_a.run(INGRESS, &on_the_wire)?;
    assert_eq!(
        hex(&delivered),
        hex(&eth4(ipv4(
            b_as_seen_by_a,
            pod_a,
            ICMP,
            &icmp4(3, 3, [0; 4], &quote(pod_a, b_as_seen_by_a)),
        ))),
        "the error matches the socket of A's pod"
    );
    assert_checksums_valid(&delivered);
    Ok(())
}

// ---------------------------------------------------------------------------
// Malformed packets and table swaps

#[test]
fn malformed_packets_are_dropped_with_their_reason() -> TestResult {
    let mut bed = Bed::new("nat-malformed")?;
    let peer = with_host4(REMOTE_REAL, 7);
    let to = with_host4(LOCAL_REMAPPED, 3);
    let good = ipv4(peer, to, UDP, &udp(&peer, &to, b"x"));

    // (A frame too short for the IPv4 header itself cannot be tested here:
    // BPF_PROG_RUN refuses it before the program runs.)
    let mut longer = good.clone();
    longer[2..4].copy_from_slice(&200u16.to_be_bytes());
    bed.expect_dropped(
        INGRESS,
        "total length past the frame",
        &eth4(longer),
        DropReason::Truncated,
    )?;
    let mut ihl4 = good.clone();
    ihl4[0] = 0x44;
    bed.expect_dropped(INGRESS, "ihl 4", &eth4(ihl4), DropReason::Malformed)?;
    let mut v6_in_v4 = good.clone();
    v6_in_v4[0] = 0x65;
    bed.expect_dropped(
        INGRESS,
        "version 6 under IPv4 ethertype",
        &eth4(v6_in_v4),
        DropReason::Malformed,
    )?;
    let short_tcp = ipv4(peer, to, TCP, &tcp(&peer, &to, b"")[..12]);
    bed.expect_dropped(
        INGRESS,
        "tcp header cut",
        &eth4(short_tcp),
        DropReason::NatL4Truncated,
    )?;
    let short_udp = ipv4(peer, to, UDP, &[0x9c, 0x40, 0x13, 0x88]);
    bed.expect_dropped(
        INGRESS,
        "udp header cut",
        &eth4(short_udp),
        DropReason::NatL4Truncated,
    )?;
    // Only the source is mapped: still refused rather than half fixed.
    let short_udp_src_only = ipv4(peer, UNMAPPED, UDP, &[0x9c, 0x40, 0x13, 0x88]);
    bed.expect_dropped(
        INGRESS,
        "udp header cut, source mapped",
        &eth4(short_udp_src_only),
        DropReason::NatL4Truncated,
    )?;
    let seen = with_host4(LOCAL_REMAPPED, 5);
    let cut_quote = ipv4(
        ROUTER,
        seen,
        ICMP,
        &icmp4(11, 0, [0; 4], &quoted4(seen, peer)[..16]),
    );
    bed.expect_dropped(
        INGRESS,
        "quoted header cut",
        &eth4(cut_quote),
        DropReason::NatIcmpEmbeddedTruncated,
    )?;
    let mut bad_quote = quoted4(seen, peer);
    bad_quote[0] = 0x65;
    let bad_quote = ipv4(ROUTER, seen, ICMP, &icmp4(3, 1, [0; 4], &bad_quote));
    bed.expect_dropped(
        INGRESS,
        "quoted header not IPv4",
        &eth4(bad_quote),
        DropReason::NatIcmpEmbeddedMalformed,
    )?;
    // Unmapped ICMP messages nothing is done to pass as they came, however
    // short their quote.
    let unmapped_cut_quote = ipv4(
        ROUTER,
        UNMAPPED,
        ICMP,
        &icmp4(11, 0, [0; 4], &quoted4(seen, peer)[..16]),
    );
    bed.expect_unchanged(
        INGRESS,
        "unmapped error, quote cut",
        &eth4(unmapped_cut_quote),
    )?;
    let runt_icmp = ipv4(OUTSIDER, UNMAPPED, ICMP, &[8, 0, 0, 0]);
    bed.expect_unchanged(INGRESS, "unmapped runt icmp", &eth4(runt_icmp))?;
    let runt_icmp_mapped = ipv4(peer, to, ICMP, &[8, 0, 0, 0]);
    bed.expect_dropped(
        INGRESS,
        "mapped runt icmp",
        &eth4(runt_icmp_mapped),
        DropReason::NatL4Truncated,
    )?;
    let peer_seen = with_host4(REMOTE_REMAPPED, 7);
    let runt_icmp_out = ipv4(UNMAPPED, peer_seen, ICMP, &[8, 0, 0, 0]);
    bed.expect_dropped(
        EGRESS,
        "mapped runt icmp outbound",
        &eth4(runt_icmp_out),
        DropReason::NatL4Truncated,
    )?;
    let cut_quote_out = ipv4(
        ROUTER,
        peer_seen,
        ICMP,
        &icmp4(11, 0, [0; 4], &quoted4(peer_seen, seen)[..16]),
    );
    bed.expect_dropped(
        EGRESS,
        "quoted header cut outbound",
        &eth4(cut_quote_out),
        DropReason::NatIcmpEmbeddedTruncated,
    )?;
    // An unmapped packet is not translated, but still must not be cut short.
    let unmapped_cut = ipv4(
        OUTSIDER,
        UNMAPPED,
        TCP,
        &tcp(&OUTSIDER, &UNMAPPED, b"")[..12],
    );
    bed.expect_unchanged(INGRESS, "unmapped short tcp passes", &eth4(unmapped_cut))?;

    let peer6 = with_host6(REMOTE6_REAL, 7);
    let to6 = with_host6(LOCAL6_REMAPPED, 3);
    let good6 = ipv6(peer6, to6, UDP, &udp(&peer6, &to6, b"x"));
    // (Nor one too short for the IPv6 header, as above.)
    let mut longer6 = good6.clone();
    longer6[4..6].copy_from_slice(&500u16.to_be_bytes());
    bed.expect_dropped(
        INGRESS,
        "payload length past the frame",
        &eth6(longer6),
        DropReason::Truncated,
    )?;
    let options = |next| vec![next, 0, 1, 4, 0, 0, 0, 0];
    let chain = [
        options(60),
        options(60),
        options(60),
        options(60),
        options(UDP),
        udp(&peer6, &to6, b"x"),
    ]
    .concat();
    bed.expect_dropped(
        INGRESS,
        "five extension headers",
        &eth6(ipv6(peer6, to6, 60, &chain)),
        DropReason::NatIpv6ExtensionChainTooLong,
    )?;
    let short_udp6 = ipv6(peer6, to6, UDP, &[0x9c, 0x40]);
    bed.expect_dropped(
        INGRESS,
        "udp header cut (v6)",
        &eth6(short_udp6),
        DropReason::NatL4Truncated,
    )?;
    let seen6 = with_host6(LOCAL6_REMAPPED, 5);
    let cut_quote6 = ipv6(
        ROUTER6,
        seen6,
        ICMPV6,
        &icmp6(ROUTER6, seen6, 3, 0, [0; 4], &quoted6(seen6, peer6)[..30]),
    );
    bed.expect_dropped(
        INGRESS,
        "quoted ipv6 header cut",
        &eth6(cut_quote6),
        DropReason::NatIcmpEmbeddedTruncated,
    )?;
    let router6_other = with_host6(ROUTER6, 9);
    let unmapped_cut_quote6 = ipv6(
        ROUTER6,
        router6_other,
        ICMPV6,
        &icmp6(
            ROUTER6,
            router6_other,
            3,
            0,
            [0; 4],
            &quoted6(seen6, peer6)[..30],
        ),
    );
    bed.expect_unchanged(
        INGRESS,
        "unmapped icmpv6 error, quote cut",
        &eth6(unmapped_cut_quote6),
    )?;
    let mut bad_quote6 = quoted6(seen6, peer6);
    bad_quote6[0] = 0x45;
    let bad_quote6 = ipv6(
        ROUTER6,
        seen6,
        ICMPV6,
        &icmp6(ROUTER6, seen6, 1, 0, [0; 4], &bad_quote6),
    );
    bed.expect_dropped(
        INGRESS,
        "quoted header not IPv6",
        &eth6(bad_quote6),
        DropReason::NatIcmpEmbeddedMalformed,
    )?;
    let peer6_seen = with_host6(REMOTE6_REMAPPED, 7);
    let short_udp6_out = ipv6(ROUTER6, peer6_seen, UDP, &[0x9c, 0x40]);
    bed.expect_dropped(
        EGRESS,
        "udp header cut outbound (v6)",
        &eth6(short_udp6_out),
        DropReason::NatL4Truncated,
    )?;
    Ok(())
}

#[test]
fn applying_a_new_table_replaces_the_old_one_whole() -> TestResult {
    let mut bed = Bed::new("nat-swap")?;
    let (peer, peer_seen) = (with_host4(REMOTE_REAL, 7), with_host4(REMOTE_REMAPPED, 7));
    let to = with_host4(LOCAL_REMAPPED, 3);
    let packet = |src, dst| eth4(ipv4(src, dst, UDP, &udp(&src, &dst, b"swap")));
    bed.expect_translated(
        INGRESS,
        "first table",
        &packet(peer, to),
        &packet(peer_seen, with_host4(LOCAL_REAL, 3)),
    )?;

    // 10,000 single addresses (20,000 ranges: each one out and back in)
    // replace the prefixes.
    let local = |i: u32| std::net::Ipv4Addr::from(u32::from_be_bytes([198, 18, 0, 0]) + 40_000 + i);
    let addresses: Vec<AddressMapping> = (0..10_000u32)
        .map(|i| AddressMapping {
            remapped: std::net::Ipv4Addr::from(u32::from_be_bytes([198, 19, 0, 0]) + i).to_string(),
            local: local(i).to_string(),
        })
        .collect();
    let big = NatConfigurationSpec {
        prefixes: vec![],
        addresses,
    };
    let mut tables = NatTables::open_pinned(bed.dp.pin_dir())?;
    let before = tables.active_generation()?;
    let applied = tables.apply(&NatPlan::from_spec(&big)?)?;
    assert_ne!(
        applied.generation, before,
        "the new table goes to the other generation"
    );
    assert_eq!(tables.active_entries()?.len(), 20_000);
    // 198.19.20.3 is 198.19.0.0 + 5123: now an address mapping; the peer's
    // source is no longer remapped (its Destination mapping is gone).
    bed.expect_translated(
        INGRESS,
        "second table",
        &packet(peer, to),
        &packet(peer, local(5123).octets()),
    )?;
    bed.expect_translated(
        EGRESS,
        "second table outbound",
        &packet(local(77).octets(), peer_seen),
        &packet([198, 19, 0, 77], peer_seen),
    )?;

    // Going back overwrites the generation before last: its longer
    // leftovers must not show through.
    let again = tables.apply(&NatPlan::from_spec(&spec())?)?;
    assert_eq!(again.generation, before);
    // The nested service /32 splits its /24: more ranges than the twice
    // as many translations (one each way).
    let plan = NatPlan::from_spec(&spec())?;
    assert!(again.ranges > 2 * plan.translations().len());
    assert_eq!(tables.active_entries()?.len(), again.ranges);
    bed.expect_translated(
        INGRESS,
        "third table",
        &packet(peer, to),
        &packet(peer_seen, with_host4(LOCAL_REAL, 3)),
    )?;
    Ok(())
}

/// A table exposing `target`/24 as 198.19.20.0/24 and knowing the peer's
/// pods as `peer_seen`/24, padded with 5,000 address mappings so that every
/// apply rewrites 10,004 ranges.
fn swap_table(target: [u8; 4], peer_seen: [u8; 4], filler_base: u32) -> NatConfigurationSpec {
    NatConfigurationSpec {
        prefixes: vec![
            prefix(NatDirection::Source, cidr4(target), cidr4(LOCAL_REMAPPED)),
            prefix(
                NatDirection::Destination,
                cidr4(peer_seen),
                cidr4(REMOTE_REAL),
            ),
        ],
        addresses: (0..5_000u32)
            .map(|i| AddressMapping {
                remapped: std::net::Ipv4Addr::from(u32::from_be_bytes([198, 19, 128, 0]) + i)
                    .to_string(),
                local: std::net::Ipv4Addr::from(filler_base + i).to_string(),
            })
            .collect(),
    }
}

#[test]
fn packets_never_see_a_half_applied_table() -> TestResult {
    let mut bed = Bed::new("nat-atomic")?;
    let first = ([198, 18, 20, 0], [198, 19, 10, 0]);
    let second = ([198, 18, 21, 0], [198, 19, 11, 0]);
    let plans = [
        NatPlan::from_spec(&swap_table(
            first.0,
            first.1,
            u32::from_be_bytes([198, 18, 128, 0]),
        ))?,
        NatPlan::from_spec(&swap_table(
            second.0,
            second.1,
            u32::from_be_bytes([198, 18, 160, 0]),
        ))?,
    ];
    let mut tables = NatTables::open_pinned(bed.dp.pin_dir())?;
    tables.apply(&plans[0])?;

    // An ICMP error from the peer's pod needs four lookups (outer source
    // and destination, quoted source and destination): all must come from
    // one table, and none may miss mid-apply.
    let seen = with_host4(LOCAL_REMAPPED, 5);
    let peer = with_host4(REMOTE_REAL, 9);
    let error = |src, dst, quoted_src, quoted_dst| {
        eth4(ipv4(
            src,
            dst,
            ICMP,
            &icmp4(3, 3, [0; 4], &quoted4(quoted_src, quoted_dst)),
        ))
    };
    let probe = error(peer, seen, seen, peer);
    let outcome = |(ours, peer_seen): ([u8; 4], [u8; 4])| {
        let (ours, peer_seen) = (with_host4(ours, 5), with_host4(peer_seen, 9));
        error(peer_seen, ours, ours, peer_seen)
    };
    let (under_first, under_second) = (outcome(first), outcome(second));

    // Applies are memory copies, much faster than a probe: the applier keeps
    // flipping until the prober has seen enough, bounded either way.
    const PROBES: usize = 2_000;
    const MAX_APPLIES: usize = 200_000;
    let probed = std::sync::atomic::AtomicUsize::new(0);
    let (applies, counts) = std::thread::scope(
        |scope| -> Result<(usize, [usize; 2]), Box<dyn std::error::Error>> {
            let applier = scope.spawn(|| -> Result<usize, String> {
                let mut applies = 0;
                while probed.load(std::sync::atomic::Ordering::SeqCst) < PROBES
                    && applies < MAX_APPLIES
                {
                    applies += 1;
                    tables
                        .apply(&plans[applies % 2])
                        .map_err(|e| e.to_string())?;
                }
                Ok(applies)
            });
            let mut counts = [0usize; 2];
            for probe_index in 0..PROBES {
                let (verdict, out) = bed.run(INGRESS, &probe)?;
                assert_eq!(verdict, VERDICT_PASS);
                if out == under_first {
                    counts[0] += 1;
                } else if out == under_second {
                    counts[1] += 1;
                } else {
                    panic!(
                        "probe {probe_index} saw neither whole table:\n{}",
                        hex(&out)
                    );
                }
                probed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            let applies = applier.join().map_err(|_| "applier panicked")??;
            Ok((applies, counts))
        },
    )?;
    assert!(applies > 2, "the probes ran during the applies ({applies})");
    assert!(
        counts[0] > 0 && counts[1] > 0,
        "both tables were seen: {counts:?}"
    );
    Ok(())
}

#[test]
fn an_apply_waits_for_one_in_progress() -> TestResult {
    use std::os::fd::AsRawFd as _;
    let bed = Bed::new("nat-lock")?;
    // Stand in for another agent midway through an apply: hold the pin
    // directory's lock.
    let dir = std::fs::File::open(bed.dp.pin_dir().root())?;
    // SAFETY: flock on a descriptor we own and keep open.
    assert_eq!(unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) }, 0);
    let mut tables = NatTables::open_pinned(bed.dp.pin_dir())?;
    let before = tables.active_generation()?;
    let plan = NatPlan::from_spec(&spec())?;
    let (tx, rx) = std::sync::mpsc::channel();
    let applier = std::thread::spawn(move || {
        let result = tables
            .apply(&plan)
            .map(|a| a.generation)
            .map_err(|e| e.to_string());
        let _ = tx.send(result);
    });
    assert!(
        rx.recv_timeout(std::time::Duration::from_millis(300))
            .is_err(),
        "the apply went ahead while the lock was held"
    );
    drop(dir);
    let applied = rx.recv_timeout(std::time::Duration::from_secs(10))??;
    assert_ne!(applied, before);
    applier.join().map_err(|_| "applier panicked")?;
    Ok(())
}
