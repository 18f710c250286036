//! strait-fabric's TC counters attached to a real veth in network namespaces.
//! Needs root (netns, eBPF); `cargo xtask test` runs these serially.

use std::net::{IpAddr, SocketAddr};

use aya::programs::{SchedClassifier, TcAttachType};
use strait_common::{counter::IP_PROTO_NONE, Counter, Direction, TrafficClass};
use strait_testbed::{
    bpffs::TestPinDir,
    traffic::{send_raw_frame, udp_burst},
    FabricCli, NetNs, NodePair,
};

const UDP: u8 = 17;
const PORT: u16 = 7000;
/// Ethernet + IPv4 + UDP headers.
const V4_OVERHEAD: u64 = 14 + 20 + 8;
/// Ethernet + IPv6 + UDP headers.
const V6_OVERHEAD: u64 = 14 + 40 + 8;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn udp(count: u64, payload: u64, overhead: u64) -> Counter {
    Counter {
        packets: count,
        bytes: count * (payload + overhead),
    }
}

/// Sends `count` datagrams and insists they all arrive.
fn burst(
    from: &NetNs,
    to_ns: &NetNs,
    to: impl Into<IpAddr>,
    count: usize,
    payload: usize,
) -> TestResult {
    let received = udp_burst(
        from,
        to_ns,
        SocketAddr::new(to.into(), PORT),
        count,
        payload,
    )?;
    assert_eq!(received, count, "datagrams lost between the namespaces");
    Ok(())
}

struct Counted {
    ifindex: u32,
    v4_in: Counter,
    v6_in: Counter,
    v4_out: Counter,
    v6_out: Counter,
}

fn counted(fabric: &FabricCli, ns: &NetNs) -> Result<Counted, Box<dyn std::error::Error>> {
    let ifindex = ns.ifindex(NodePair::IFACE)?;
    let s = fabric.snapshot()?;
    Ok(Counted {
        ifindex,
        v4_in: s.get(ifindex, Direction::Ingress, TrafficClass::Ipv4, UDP),
        v6_in: s.get(ifindex, Direction::Ingress, TrafficClass::Ipv6, UDP),
        v4_out: s.get(ifindex, Direction::Egress, TrafficClass::Ipv4, UDP),
        v6_out: s.get(ifindex, Direction::Egress, TrafficClass::Ipv6, UDP),
    })
}

/// The programs attached with tcx to the node's eth0 in one direction.
fn tcx_programs(ns: &NetNs, attach: TcAttachType) -> Result<usize, Box<dyn std::error::Error>> {
    let (_revision, programs) =
        ns.enter(|| SchedClassifier::query_tcx(NodePair::IFACE, attach))??;
    Ok(programs.len())
}

#[test]
fn counts_exactly_the_udp_that_crosses_each_direction() -> TestResult {
    let pair = NodePair::new()?;
    let pins = TestPinDir::new("exact")?;
    let fabric = FabricCli::new(&pair.node, pins.path())?;
    let out = fabric.run(&["attach", "--iface", NodePair::IFACE, "--attach-mode", "tcx"])?;
    assert!(
        out.contains("eth0 ingress (tcx)") && out.contains("eth0 egress (tcx)"),
        "{out}"
    );

    burst(&pair.peer, &pair.node, NodePair::NODE_V4, 32, 200)?;
    burst(&pair.peer, &pair.node, NodePair::NODE_V6, 16, 300)?;
    burst(&pair.node, &pair.peer, NodePair::PEER_V4, 8, 1000)?;
    burst(&pair.node, &pair.peer, NodePair::PEER_V6, 4, 1200)?;

    let c = counted(&fabric, &pair.node)?;
    assert_eq!(c.v4_in, udp(32, 200, V4_OVERHEAD));
    assert_eq!(c.v6_in, udp(16, 300, V6_OVERHEAD));
    assert_eq!(c.v4_out, udp(8, 1000, V4_OVERHEAD));
    assert_eq!(c.v6_out, udp(4, 1200, V6_OVERHEAD));

    // The human summary shows the same numbers.
    let stats = fabric.run(&["stats"])?;
    let line = format!("eth0 (#{})", c.ifindex);
    assert!(
        stats.lines().any(|l| l.starts_with(&line)
            && l.contains("ingress")
            && l.contains("udp")
            && l.ends_with(&format!("{}", 32 * 242))),
        "{stats}"
    );
    Ok(())
}

#[test]
fn detached_counters_stop_counting_and_leave_no_program_behind() -> TestResult {
    let pair = NodePair::new()?;
    let pins = TestPinDir::new("detach")?;
    let fabric = FabricCli::new(&pair.node, pins.path())?;
    fabric.run(&["attach", "--iface", NodePair::IFACE])?;
    burst(&pair.peer, &pair.node, NodePair::NODE_V4, 5, 100)?;
    assert_eq!(tcx_programs(&pair.node, TcAttachType::Ingress)?, 1);

    let out = fabric.run(&["detach", "--iface", NodePair::IFACE])?;
    assert!(out.contains("detached counter from eth0 ingress"), "{out}");
    assert_eq!(tcx_programs(&pair.node, TcAttachType::Ingress)?, 0);
    assert_eq!(tcx_programs(&pair.node, TcAttachType::Egress)?, 0);
    burst(&pair.peer, &pair.node, NodePair::NODE_V4, 7, 100)?;

    assert_eq!(
        counted(&fabric, &pair.node)?.v4_in,
        udp(5, 100, V4_OVERHEAD)
    );
    // Detaching twice is an error that says why, not a silent success.
    let again = fabric.output(&["detach", "--iface", NodePair::IFACE])?;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr)
        .contains("nothing of ours is attached to eth0 ingress"));
    Ok(())
}

#[test]
fn reattach_swaps_the_program_in_place_and_keeps_the_counts() -> TestResult {
    let pair = NodePair::new()?;
    let pins = TestPinDir::new("restart")?;
    let fabric = FabricCli::new(&pair.node, pins.path())?;
    fabric.run(&["attach", "--iface", NodePair::IFACE])?;
    burst(&pair.peer, &pair.node, NodePair::NODE_V4, 10, 64)?;

    // A second agent run (an upgrade or restart) replaces, never stacks.
    let out = fabric.run(&["attach", "--iface", NodePair::IFACE])?;
    assert!(out.contains("replaced the previous program"), "{out}");
    assert_eq!(tcx_programs(&pair.node, TcAttachType::Ingress)?, 1);
    burst(&pair.peer, &pair.node, NodePair::NODE_V4, 6, 64)?;

    // The pinned map was reused: the counts carry across the restart.
    assert_eq!(
        counted(&fabric, &pair.node)?.v4_in,
        udp(16, 64, V4_OVERHEAD)
    );
    Ok(())
}

#[test]
fn clsact_fallback_counts_the_same_and_detaches() -> TestResult {
    let pair = NodePair::new()?;
    let pins = TestPinDir::new("netlink")?;
    let fabric = FabricCli::new(&pair.node, pins.path())?;
    let out = fabric.run(&[
        "attach",
        "--iface",
        NodePair::IFACE,
        "--attach-mode",
        "netlink",
    ])?;
    assert!(out.contains("eth0 ingress (netlink)"), "{out}");
    // Attaching again replaces our filter instead of adding a second one.
    fabric.run(&[
        "attach",
        "--iface",
        NodePair::IFACE,
        "--attach-mode",
        "netlink",
    ])?;
    assert_eq!(
        tcx_programs(&pair.node, TcAttachType::Ingress)?,
        0,
        "netlink mode must not use tcx"
    );

    burst(&pair.peer, &pair.node, NodePair::NODE_V6, 9, 500)?;
    assert_eq!(
        counted(&fabric, &pair.node)?.v6_in,
        udp(9, 500, V6_OVERHEAD)
    );

    let out = fabric.run(&["detach", "--iface", NodePair::IFACE])?;
    assert!(out.contains("eth0 ingress (netlink)"), "{out}");
    burst(&pair.peer, &pair.node, NodePair::NODE_V6, 3, 500)?;
    assert_eq!(
        counted(&fabric, &pair.node)?.v6_in,
        udp(9, 500, V6_OVERHEAD)
    );
    Ok(())
}

#[test]
fn bad_input_gets_clear_errors() -> TestResult {
    let pair = NodePair::new()?;
    let pins = TestPinDir::new("errors")?;
    let fabric = FabricCli::new(&pair.node, pins.path())?;
    let stderr = |args: &[&str]| -> Result<String, Box<dyn std::error::Error>> {
        let out = fabric.output(args)?;
        assert!(!out.status.success(), "{args:?} should fail");
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert!(stderr(&["attach", "--iface", "nosuch0"])?.contains("no interface named nosuch0"));
    assert!(stderr(&["attach", "--iface", "../lo"])?.contains("no interface named ../lo"));
    // Nothing was pinned yet: stats says what is missing.
    assert!(stderr(&["stats"])?.contains("nothing is attached yet"));

    let not_bpffs = FabricCli::new(&pair.node, std::path::Path::new("/tmp/strait-not-bpffs"))?;
    let out = not_bpffs.output(&["attach", "--iface", NodePair::IFACE])?;
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not on a bpffs mount"));
    assert!(
        !std::path::Path::new("/tmp/strait-not-bpffs").exists(),
        "nothing created on failure"
    );
    Ok(())
}

#[test]
fn truncated_ip_frames_from_a_peer_are_counted_without_a_protocol() -> TestResult {
    let pair = NodePair::new()?;
    let pins = TestPinDir::new("truncated")?;
    let fabric = FabricCli::new(&pair.node, pins.path())?;
    fabric.run(&[
        "attach",
        "--iface",
        NodePair::IFACE,
        "--direction",
        "ingress",
    ])?;

    // EtherType IPv4 / IPv6, header cut before the protocol byte. BPF_PROG_RUN
    // refuses such frames, a peer on the wire does not.
    let header = |ethertype: u16| {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 9]);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    };
    let short4 = [header(0x0800), vec![0x45, 0, 0, 20, 0, 0]].concat();
    let short6 = [header(0x86dd), vec![0x60, 0]].concat();
    for frame in [&short4, &short4, &short6] {
        send_raw_frame(&pair.peer, NodePair::IFACE, frame)?;
    }

    let s = fabric.snapshot()?;
    let ifindex = pair.node.ifindex(NodePair::IFACE)?;
    // veth pads nothing: the frames arrive as sent.
    assert_eq!(
        s.get(
            ifindex,
            Direction::Ingress,
            TrafficClass::Ipv4,
            IP_PROTO_NONE
        ),
        Counter {
            packets: 2,
            bytes: 2 * short4.len() as u64
        }
    );
    assert_eq!(
        s.get(
            ifindex,
            Direction::Ingress,
            TrafficClass::Ipv6,
            IP_PROTO_NONE
        ),
        Counter {
            packets: 1,
            bytes: short6.len() as u64
        }
    );
    // Traffic after them is unaffected.
    burst(&pair.peer, &pair.node, NodePair::NODE_V4, 3, 50)?;
    Ok(())
}
