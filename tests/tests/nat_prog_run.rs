//! The NAT programs run on crafted frames with BPF_PROG_RUN: every protocol,
//! both sides, IPv4 and IPv6, ICMP errors, fragments and malformed packets.
//!
//! Expected frames are built from scratch with the translated addresses and
//! checksums computed by the RFC 1071 reference below (never by the code
//! under test), then compared byte for byte with what the program wrote; the
//! output's checksums are also verified independently. Needs root (CAP_BPF).

use aya::programs::{TestRun, TestRunOptions};
use strait_api::networking::{AddressMapping, NatConfigurationSpec, NatDirection, PrefixMapping};
use strait_common::{DropReason, NatSide};
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

// Addresses (198.18.0.0/15 and fd00::/8 only). The peer's pods are known
// locally as 198.19.10.0/24 and are really 198.18.10.0/24; our pods are
// 198.18.20.0/24 and the peer knows them as 198.19.20.0/24.
const REMOTE_REMAPPED: [u8; 4] = [198, 19, 10, 0];
const REMOTE_REAL: [u8; 4] = [198, 18, 10, 0];
const LOCAL_REAL: [u8; 4] = [198, 18, 20, 0];
const LOCAL_REMAPPED: [u8; 4] = [198, 19, 20, 0];
const ROUTER: [u8; 4] = [198, 18, 200, 1];
const UNMAPPED: [u8; 4] = [198, 18, 99, 9];
/// A single address exposed under another one.
const SERVICE_REMAPPED: [u8; 4] = [198, 19, 10, 77];
const SERVICE_LOCAL: [u8; 4] = [198, 18, 30, 5];

const REMOTE6_REMAPPED: [u8; 16] = v6(0x19, 0x10, 0);
const REMOTE6_REAL: [u8; 16] = v6(0x18, 0x10, 0);
const LOCAL6_REAL: [u8; 16] = v6(0x18, 0x20, 0);
const LOCAL6_REMAPPED: [u8; 16] = v6(0x19, 0x20, 0);
const ROUTER6: [u8; 16] = v6(0x18, 0xff, 1);
const SERVICE6_REMAPPED: [u8; 16] = v6(0x19, 0x10, 0x77);
const SERVICE6_LOCAL: [u8; 16] = v6(0x18, 0x30, 5);

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

fn spec() -> NatConfigurationSpec {
    let cidr4 = |a: [u8; 4]| format!("{}.{}.{}.{}/24", a[0], a[1], a[2], a[3]);
    let cidr6 = |a: [u8; 16]| format!("{}/64", std::net::Ipv6Addr::from(a));
    let prefix = |direction, from: String, to: String| PrefixMapping {
        direction,
        from,
        to,
    };
    NatConfigurationSpec {
        prefixes: vec![
            prefix(
                NatDirection::Destination,
                cidr4(REMOTE_REMAPPED),
                cidr4(REMOTE_REAL),
            ),
            prefix(
                NatDirection::Destination,
                cidr4(LOCAL_REMAPPED),
                cidr4(LOCAL_REAL),
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
                NatDirection::Destination,
                cidr6(LOCAL6_REMAPPED),
                cidr6(LOCAL6_REAL),
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
        let pins = TestPinDir::new(label)?;
        let dp = Dataplane::load(pins.pin_dir()?)?;
        let mut tables = NatTables::open_pinned(dp.pin_dir())?;
        tables.apply(&NatPlan::from_spec(&spec())?)?;
        Ok(Bed { _pins: pins, dp })
    }

    /// Runs the program of `side` on `frame`: (verdict, frame out).
    fn run(
        &mut self,
        side: NatSide,
        frame: &[u8],
    ) -> Result<(u32, Vec<u8>), Box<dyn std::error::Error>> {
        let prog = self.dp.classifier(TcProgram::Nat(side))?;
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
        side: NatSide,
        what: &str,
        input: &[u8],
        expected: &[u8],
    ) -> TestResult {
        assert_checksums_valid(input);
        let (verdict, out) = self.run(side, input)?;
        assert_eq!(verdict, VERDICT_PASS, "{what}: verdict");
        assert_eq!(hex(&out), hex(expected), "{what}: output frame");
        assert_checksums_valid(&out);
        Ok(())
    }

    /// Asserts the program passes `input` on unchanged, checksums or not.
    fn expect_unchanged(&mut self, side: NatSide, what: &str, input: &[u8]) -> TestResult {
        let (verdict, out) = self.run(side, input)?;
        assert_eq!(verdict, VERDICT_PASS, "{what}: verdict");
        assert_eq!(hex(&out), hex(input), "{what}: output frame");
        Ok(())
    }

    fn expect_dropped(
        &mut self,
        side: NatSide,
        what: &str,
        input: &[u8],
        reason: DropReason,
    ) -> TestResult {
        let before = DropCounts::read_loaded(&self.dp)?;
        let (verdict, _) = self.run(side, input)?;
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

#[test]
fn ipv4_destination_translation_fixes_every_checksum() -> TestResult {
    let mut bed = Bed::new("nat-v4-dst")?;
    let peer = with_host4(REMOTE_REAL, 7); // a remote pod, sending to us
    let (to, real) = (with_host4(LOCAL_REMAPPED, 42), with_host4(LOCAL_REAL, 42));
    let data = b"strait nat test payload, odd length!!";

    let make_udp = |dst| eth4(ipv4(peer, dst, UDP, &udp(&peer, &dst, data)));
    bed.expect_translated(NatSide::Destination, "udp", &make_udp(to), &make_udp(real))?;
    let make_tcp = |dst| eth4(ipv4(peer, dst, TCP, &tcp(&peer, &dst, data)));
    bed.expect_translated(NatSide::Destination, "tcp", &make_tcp(to), &make_tcp(real))?;
    let echo = icmp4(8, 0, [0, 1, 0, 9], data);
    let make_echo = |dst| eth4(ipv4(peer, dst, ICMP, &echo));
    bed.expect_translated(
        NatSide::Destination,
        "icmp echo",
        &make_echo(to),
        &make_echo(real),
    )?;
    let make_plain = |dst| eth4(ipv4(peer, dst, UDP, &udp_without_checksum(data)));
    bed.expect_translated(
        NatSide::Destination,
        "udp without checksum",
        &make_plain(to),
        &make_plain(real),
    )?;
    // Another protocol (GRE): only the IP header changes.
    let make_gre = |dst| eth4(ipv4(peer, dst, 47, &[0, 0, 0x08, 0, 1, 2, 3, 4]));
    bed.expect_translated(NatSide::Destination, "gre", &make_gre(to), &make_gre(real))?;

    // The single address mapping is more specific than any prefix.
    let svc = |dst| eth4(ipv4(peer, dst, UDP, &udp(&peer, &dst, data)));
    bed.expect_translated(
        NatSide::Destination,
        "address mapping",
        &svc(SERVICE_REMAPPED),
        &svc(SERVICE_LOCAL),
    )?;
    // A neighbour of that address still follows its /24.
    let near = with_host4(REMOTE_REMAPPED, 78);
    bed.expect_translated(
        NatSide::Destination,
        "next to the address",
        &svc(near),
        &svc(with_host4(REMOTE_REAL, 78)),
    )?;

    // Unmapped destinations, and the source address, are not touched.
    let untouched = make_udp(UNMAPPED);
    bed.expect_translated(NatSide::Destination, "unmapped", &untouched, &untouched)?;
    let from_local = eth4(ipv4(
        with_host4(LOCAL_REAL, 1),
        UNMAPPED,
        UDP,
        &udp(&with_host4(LOCAL_REAL, 1), &UNMAPPED, data),
    ));
    bed.expect_translated(
        NatSide::Destination,
        "source side left alone",
        &from_local,
        &from_local,
    )?;
    let arp = ethernet(0x0806, &[0; 28]);
    bed.expect_translated(NatSide::Destination, "arp", &arp, &arp)?;
    Ok(())
}

#[test]
fn ipv4_source_translation_fixes_every_checksum() -> TestResult {
    let mut bed = Bed::new("nat-v4-src")?;
    let peer = with_host4(REMOTE_REAL, 7);
    let (ours, seen) = (with_host4(LOCAL_REAL, 200), with_host4(LOCAL_REMAPPED, 200));
    let data = b"0123456789abcdef";
    let make_udp = |src| eth4(ipv4(src, peer, UDP, &udp(&src, &peer, data)));
    bed.expect_translated(NatSide::Source, "udp", &make_udp(ours), &make_udp(seen))?;
    let make_tcp = |src| eth4(ipv4(src, peer, TCP, &tcp(&src, &peer, data)));
    bed.expect_translated(NatSide::Source, "tcp", &make_tcp(ours), &make_tcp(seen))?;
    let echo = icmp4(0, 0, [0, 1, 0, 9], data);
    let make_echo = |src| eth4(ipv4(src, peer, ICMP, &echo));
    bed.expect_translated(
        NatSide::Source,
        "icmp echo reply",
        &make_echo(ours),
        &make_echo(seen),
    )?;
    let make_plain = |src| eth4(ipv4(src, peer, UDP, &udp_without_checksum(data)));
    bed.expect_translated(
        NatSide::Source,
        "udp without checksum stays without",
        &make_plain(ours),
        &make_plain(seen),
    )?;
    let svc = |src| eth4(ipv4(src, peer, TCP, &tcp(&src, &peer, data)));
    bed.expect_translated(
        NatSide::Source,
        "address mapping",
        &svc(SERVICE_LOCAL),
        &svc(SERVICE_REMAPPED),
    )?;
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
    // We sent local 198.18.20.5 → remote, translated to 198.19.20.5 on the
    // way out. A router on the peer's side reports time exceeded to
    // 198.19.20.5 quoting the packet from 198.19.20.5.
    let ours = with_host4(LOCAL_REAL, 5);
    let seen = with_host4(LOCAL_REMAPPED, 5);
    let peer = with_host4(REMOTE_REAL, 9);
    for (kind, code, rest) in [
        (11, 0, [0; 4]),
        (3, 3, [0; 4]),
        (3, 4, [0, 0, 0x05, 0x00]),
        (12, 0, [20, 0, 0, 0]),
    ] {
        let error = |dst, quoted_src| {
            eth4(ipv4(
                ROUTER,
                dst,
                ICMP,
                &icmp4(kind, code, rest, &quoted4(quoted_src, peer)),
            ))
        };
        bed.expect_translated(
            NatSide::Destination,
            &format!("icmp {kind}/{code} inbound"),
            &error(seen, seen),
            &error(ours, ours),
        )?;
    }
    // A remote pod sent to 198.19.10.9 (remapped), which reached the real
    // 198.18.10.9 ... and, going out, we report an error about a packet the
    // peer sent to our 198.19.20.5 (translated to 198.18.20.5 on the way in):
    // outer source and quoted destination go back to what the peer knows.
    let error = |src, quoted_dst| {
        eth4(ipv4(
            src,
            peer,
            ICMP,
            &icmp4(3, 3, [0; 4], &quoted4(peer, quoted_dst)),
        ))
    };
    bed.expect_translated(
        NatSide::Source,
        "port unreachable outbound",
        &error(ours, ours),
        &error(seen, seen),
    )?;
    // Generated by a router of ours (not mapped): only the quoted packet changes.
    let from_router = |quoted_dst| {
        eth4(ipv4(
            ROUTER,
            peer,
            ICMP,
            &icmp4(11, 0, [0; 4], &quoted4(peer, quoted_dst)),
        ))
    };
    bed.expect_translated(
        NatSide::Source,
        "time exceeded from our router",
        &from_router(ours),
        &from_router(seen),
    )?;
    // Other quoted transports: their own checksums follow their addresses.
    for (i, (quote_in, quote_out)) in quoted4_kinds(seen, peer)
        .into_iter()
        .zip(quoted4_kinds(ours, peer))
        .enumerate()
    {
        let error = |dst, quote: &[u8]| eth4(ipv4(ROUTER, dst, ICMP, &icmp4(11, 0, [0; 4], quote)));
        bed.expect_translated(
            NatSide::Destination,
            &format!("quote kind {i} inbound"),
            &error(seen, &quote_in),
            &error(ours, &quote_out),
        )?;
    }
    // Echo requests are not errors: their body is never rewritten.
    let echo = |dst| {
        eth4(ipv4(
            peer,
            dst,
            ICMP,
            &icmp4(8, 0, [0, 7, 0, 1], &quoted4(seen, peer)),
        ))
    };
    bed.expect_translated(
        NatSide::Destination,
        "echo carrying an IP-like body",
        &echo(seen),
        &echo(ours),
    )?;
    Ok(())
}

#[test]
fn ipv4_fragments_fix_the_transport_checksum_in_the_first_only() -> TestResult {
    let mut bed = Bed::new("nat-v4-frag")?;
    let peer = with_host4(REMOTE_REAL, 7);
    let (to, real) = (with_host4(LOCAL_REMAPPED, 3), with_host4(LOCAL_REAL, 3));
    let data: Vec<u8> = (0..64u8).collect();
    // A 72-byte UDP datagram split after 32 bytes (4 units of 8).
    let first = |dst: [u8; 4]| {
        let datagram = udp(&peer, &dst, &data);
        eth4(ipv4_with(peer, dst, UDP, 0x2000, &datagram[..32]))
    };
    let second = |dst: [u8; 4]| {
        let datagram = udp(&peer, &dst, &data);
        eth4(ipv4_with(peer, dst, UDP, 4, &datagram[32..]))
    };
    bed.expect_translated(
        NatSide::Destination,
        "first fragment",
        &first(to),
        &first(real),
    )?;
    bed.expect_translated(
        NatSide::Destination,
        "later fragment",
        &second(to),
        &second(real),
    )?;
    // The reassembled, translated datagram carries a valid checksum.
    let (_, a) = bed.run(NatSide::Destination, &first(to))?;
    let (_, b) = bed.run(NatSide::Destination, &second(to))?;
    let whole = [&a[34..], &b[34..]].concat();
    assert!(checksum_ok(&[
        &pseudo_header(&peer, &real, UDP, whole.len()),
        &whole
    ]));
    // A later fragment too short to hold a UDP header is still translated.
    let tail = |dst| eth4(ipv4_with(peer, dst, UDP, 9, &[1, 2, 3]));
    bed.expect_translated(
        NatSide::Destination,
        "short later fragment",
        &tail(to),
        &tail(real),
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------
// IPv6

#[test]
fn ipv6_translation_fixes_every_checksum_on_both_sides() -> TestResult {
    let mut bed = Bed::new("nat-v6")?;
    let peer = with_host6(REMOTE6_REAL, 7);
    let (to, real) = (with_host6(LOCAL6_REMAPPED, 42), with_host6(LOCAL6_REAL, 42));
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
            NatSide::Destination,
            &format!("{what} inbound"),
            &make(peer, to),
            &make(peer, real),
        )?;
        bed.expect_translated(
            NatSide::Source,
            &format!("{what} outbound"),
            &make(real, peer),
            &make(to, peer),
        )?;
    }
    let svc = |dst| eth6(ipv6(peer, dst, UDP, &udp(&peer, &dst, data)));
    bed.expect_translated(
        NatSide::Destination,
        "address mapping",
        &svc(SERVICE6_REMAPPED),
        &svc(SERVICE6_LOCAL),
    )?;
    let unmapped = make_udp(peer, ROUTER6);
    bed.expect_translated(NatSide::Destination, "unmapped", &unmapped, &unmapped)?;
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
    let ours = with_host6(LOCAL6_REAL, 5);
    let seen = with_host6(LOCAL6_REMAPPED, 5);
    let peer = with_host6(REMOTE6_REAL, 9);
    for (kind, code, rest) in [
        (1, 4, [0; 4]),
        (2, 0, [0, 0, 0x05, 0x00]),
        (3, 0, [0; 4]),
        (4, 0, [0, 0, 0, 8]),
    ] {
        let error = |dst, quoted_src| {
            eth6(ipv6(
                ROUTER6,
                dst,
                ICMPV6,
                &icmp6(ROUTER6, dst, kind, code, rest, &quoted6(quoted_src, peer)),
            ))
        };
        bed.expect_translated(
            NatSide::Destination,
            &format!("icmpv6 {kind}/{code} inbound"),
            &error(seen, seen),
            &error(ours, ours),
        )?;
    }
    let error = |src, quoted_dst| {
        eth6(ipv6(
            src,
            peer,
            ICMPV6,
            &icmp6(src, peer, 1, 4, [0; 4], &quoted6(peer, quoted_dst)),
        ))
    };
    bed.expect_translated(
        NatSide::Source,
        "port unreachable outbound",
        &error(ours, ours),
        &error(seen, seen),
    )?;
    let from_router = |quoted_dst| {
        eth6(ipv6(
            ROUTER6,
            peer,
            ICMPV6,
            &icmp6(ROUTER6, peer, 3, 0, [0; 4], &quoted6(peer, quoted_dst)),
        ))
    };
    bed.expect_translated(
        NatSide::Source,
        "time exceeded from our router",
        &from_router(ours),
        &from_router(seen),
    )?;
    for (i, (quote_in, quote_out)) in quoted6_kinds(seen, peer)
        .into_iter()
        .zip(quoted6_kinds(ours, peer))
        .enumerate()
    {
        let error = |dst, quote: &[u8]| {
            eth6(ipv6(
                ROUTER6,
                dst,
                ICMPV6,
                &icmp6(ROUTER6, dst, 3, 0, [0; 4], quote),
            ))
        };
        bed.expect_translated(
            NatSide::Destination,
            &format!("icmpv6 quote kind {i} inbound"),
            &error(seen, &quote_in),
            &error(ours, &quote_out),
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
    let peer = with_host6(REMOTE6_REAL, 7);
    let (to, real) = (with_host6(LOCAL6_REMAPPED, 3), with_host6(LOCAL6_REAL, 3));
    let data: Vec<u8> = (0..64u8).collect();
    let first = |dst: [u8; 16]| {
        let datagram = udp(&peer, &dst, &data);
        eth6(ipv6(
            peer,
            dst,
            44,
            &[fragment_header(UDP, 0, true), datagram[..32].to_vec()].concat(),
        ))
    };
    let second = |dst: [u8; 16]| {
        let datagram = udp(&peer, &dst, &data);
        eth6(ipv6(
            peer,
            dst,
            44,
            &[fragment_header(UDP, 4, false), datagram[32..].to_vec()].concat(),
        ))
    };
    for (what, make) in [
        ("first fragment", &first as &dyn Fn([u8; 16]) -> Vec<u8>),
        ("later fragment", &second),
    ] {
        let (verdict, out) = bed.run(NatSide::Destination, &make(to))?;
        assert_eq!(verdict, VERDICT_PASS, "{what}");
        assert_eq!(hex(&out), hex(&make(real)), "{what}");
    }
    // Hop-by-hop and destination options before TCP.
    let options = |next| vec![next, 0, 1, 4, 0, 0, 0, 0];
    let tcp_behind_options = |dst| {
        eth6(ipv6(
            peer,
            dst,
            0,
            &[options(60), options(TCP), tcp(&peer, &dst, &data)].concat(),
        ))
    };
    let (verdict, out) = bed.run(NatSide::Destination, &tcp_behind_options(to))?;
    assert_eq!(verdict, VERDICT_PASS);
    assert_eq!(hex(&out), hex(&tcp_behind_options(real)));
    let l4 = &out[14 + 40 + 16..];
    assert!(checksum_ok(&[
        &pseudo_header(&peer, &real, TCP, l4.len()),
        l4
    ]));
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
        NatSide::Destination,
        "total length past the frame",
        &eth4(longer),
        DropReason::Truncated,
    )?;
    let mut ihl4 = good.clone();
    ihl4[0] = 0x44;
    bed.expect_dropped(
        NatSide::Destination,
        "ihl 4",
        &eth4(ihl4),
        DropReason::Malformed,
    )?;
    let mut v6_in_v4 = good.clone();
    v6_in_v4[0] = 0x65;
    bed.expect_dropped(
        NatSide::Destination,
        "version 6 under IPv4 ethertype",
        &eth4(v6_in_v4),
        DropReason::Malformed,
    )?;
    let short_tcp = ipv4(peer, to, TCP, &tcp(&peer, &to, b"")[..12]);
    bed.expect_dropped(
        NatSide::Destination,
        "tcp header cut",
        &eth4(short_tcp),
        DropReason::NatL4Truncated,
    )?;
    let short_udp = ipv4(peer, to, UDP, &[0x9c, 0x40, 0x13, 0x88]);
    bed.expect_dropped(
        NatSide::Destination,
        "udp header cut",
        &eth4(short_udp),
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
        NatSide::Destination,
        "quoted header cut",
        &eth4(cut_quote),
        DropReason::NatIcmpEmbeddedTruncated,
    )?;
    let mut bad_quote = quoted4(seen, peer);
    bad_quote[0] = 0x65;
    let bad_quote = ipv4(ROUTER, seen, ICMP, &icmp4(3, 1, [0; 4], &bad_quote));
    bed.expect_dropped(
        NatSide::Destination,
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
        NatSide::Destination,
        "unmapped error, quote cut",
        &eth4(unmapped_cut_quote),
    )?;
    let runt_icmp = ipv4(peer, UNMAPPED, ICMP, &[8, 0, 0, 0]);
    bed.expect_unchanged(NatSide::Destination, "unmapped runt icmp", &eth4(runt_icmp))?;
    let runt_icmp_mapped = ipv4(peer, to, ICMP, &[8, 0, 0, 0]);
    bed.expect_dropped(
        NatSide::Destination,
        "mapped runt icmp",
        &eth4(runt_icmp_mapped),
        DropReason::NatL4Truncated,
    )?;
    // An unmapped packet is not translated, but still must not be cut short.
    let unmapped_cut = ipv4(peer, UNMAPPED, TCP, &tcp(&peer, &UNMAPPED, b"")[..12]);
    bed.expect_unchanged(
        NatSide::Destination,
        "unmapped short tcp passes",
        &eth4(unmapped_cut),
    )?;

    let peer6 = with_host6(REMOTE6_REAL, 7);
    let to6 = with_host6(LOCAL6_REMAPPED, 3);
    let good6 = ipv6(peer6, to6, UDP, &udp(&peer6, &to6, b"x"));
    // (Nor one too short for the IPv6 header, as above.)
    let mut longer6 = good6.clone();
    longer6[4..6].copy_from_slice(&500u16.to_be_bytes());
    bed.expect_dropped(
        NatSide::Destination,
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
        NatSide::Destination,
        "five extension headers",
        &eth6(ipv6(peer6, to6, 60, &chain)),
        DropReason::NatIpv6ExtensionChainTooLong,
    )?;
    let short_udp6 = ipv6(peer6, to6, UDP, &[0x9c, 0x40]);
    bed.expect_dropped(
        NatSide::Destination,
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
        NatSide::Destination,
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
        NatSide::Destination,
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
        NatSide::Destination,
        "quoted header not IPv6",
        &eth6(bad_quote6),
        DropReason::NatIcmpEmbeddedMalformed,
    )?;
    Ok(())
}

#[test]
fn applying_a_new_table_replaces_the_old_one_whole() -> TestResult {
    let mut bed = Bed::new("nat-swap")?;
    let peer = with_host4(REMOTE_REAL, 7);
    let to = with_host4(LOCAL_REMAPPED, 3);
    let packet = |dst| eth4(ipv4(peer, dst, UDP, &udp(&peer, &dst, b"swap")));
    bed.expect_translated(
        NatSide::Destination,
        "first table",
        &packet(to),
        &packet(with_host4(LOCAL_REAL, 3)),
    )?;

    // 10,000 single addresses (20,000 entries) replace the prefixes.
    let addresses: Vec<AddressMapping> = (0..10_000u32)
        .map(|i| AddressMapping {
            remapped: std::net::Ipv4Addr::from(u32::from_be_bytes([198, 19, 0, 0]) + i).to_string(),
            local: std::net::Ipv4Addr::from(u32::from_be_bytes([198, 18, 0, 0]) + 40_000 + i)
                .to_string(),
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
    // 198.19.20.3 is 198.19.0.0 + 5123: now an address mapping.
    let expected =
        std::net::Ipv4Addr::from(u32::from_be_bytes([198, 18, 0, 0]) + 40_000 + 5123).octets();
    bed.expect_translated(
        NatSide::Destination,
        "second table",
        &packet(to),
        &packet(expected),
    )?;
    // The old /24 of 198.19.10.0 is gone with its table.
    let old_only = packet(with_host4(REMOTE_REMAPPED, 200));
    let (_, out) = bed.run(NatSide::Destination, &old_only)?;
    let expected_old =
        std::net::Ipv4Addr::from(u32::from_be_bytes([198, 18, 0, 0]) + 40_000 + 10 * 256 + 200)
            .octets();
    assert_eq!(
        hex(&out),
        hex(&packet(expected_old)),
        "old prefix no longer applies"
    );

    // Going back overwrites the generation before last: its longer
    // leftovers must not show through.
    let again = tables.apply(&NatPlan::from_spec(&spec())?)?;
    assert_eq!(again.generation, before);
    // The nested service /32 splits its /24: more ranges than translations.
    let plan = NatPlan::from_spec(&spec())?;
    assert!(again.ranges > plan.translations().len());
    assert_eq!(tables.active_entries()?.len(), again.ranges);
    bed.expect_translated(
        NatSide::Destination,
        "third table",
        &packet(to),
        &packet(with_host4(LOCAL_REAL, 3)),
    )?;
    Ok(())
}

/// A table mapping 198.19.20.0/24 to `target`/24, padded with 5,000
/// address mappings so that every apply rewrites 10,002 entries.
fn swap_table(target: [u8; 4], filler_base: u32) -> NatConfigurationSpec {
    let cidr = |a: [u8; 4]| format!("{}.{}.{}.0/24", a[0], a[1], a[2]);
    NatConfigurationSpec {
        prefixes: vec![
            PrefixMapping {
                direction: NatDirection::Destination,
                from: cidr(LOCAL_REMAPPED),
                to: cidr(target),
            },
            PrefixMapping {
                direction: NatDirection::Source,
                from: cidr(target),
                to: cidr(LOCAL_REMAPPED),
            },
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
    let first = [198, 18, 20, 0];
    let second = [198, 18, 21, 0];
    let plans = [
        NatPlan::from_spec(&swap_table(first, u32::from_be_bytes([198, 18, 128, 0])))?,
        NatPlan::from_spec(&swap_table(second, u32::from_be_bytes([198, 18, 160, 0])))?,
    ];
    let mut tables = NatTables::open_pinned(bed.dp.pin_dir())?;
    tables.apply(&plans[0])?;

    // An ICMP error needs two lookups (outer destination, quoted source):
    // both must come from one table, and neither may miss mid-apply.
    let seen = with_host4(LOCAL_REMAPPED, 5);
    let peer = with_host4(REMOTE_REAL, 9);
    let probe = eth4(ipv4(
        ROUTER,
        seen,
        ICMP,
        &icmp4(11, 0, [0; 4], &quoted4(seen, peer)),
    ));
    let outcome = |net: [u8; 4]| {
        let real = with_host4(net, 5);
        eth4(ipv4(
            ROUTER,
            real,
            ICMP,
            &icmp4(11, 0, [0; 4], &quoted4(real, peer)),
        ))
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
                let (verdict, out) = bed.run(NatSide::Destination, &probe)?;
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
