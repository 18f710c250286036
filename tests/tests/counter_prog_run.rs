//! The counter programs run on crafted frames with BPF_PROG_RUN: no
//! interface, no traffic, byte-exact inputs. Needs root (CAP_BPF).

use aya::programs::{TestRun, TestRunOptions};
use strait_common::{counter::IP_PROTO_NONE, Counter, Direction, TrafficClass};
use strait_dataplane::{
    counter::CounterSnapshot,
    programs::{Dataplane, TcProgram},
};
use strait_testbed::{bpffs::TestPinDir, packets::*};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// TC_ACT_UNSPEC as the kernel reports a program's return value.
const VERDICT_NO_OPINION: u32 = -1i32 as u32;

const PEER_V4: [u8; 4] = [198, 18, 0, 2];
const NODE_V4: [u8; 4] = [198, 18, 0, 1];
const PEER_V6: [u8; 16] = [0xfd, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const NODE_V6: [u8; 16] = [0xfd, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// An IPv4 packet carrying `l4_len` bytes of protocol `proto` (content is
/// irrelevant to the counters).
fn v4(proto: u8, l4_len: usize) -> Vec<u8> {
    ipv4(PEER_V4, NODE_V4, proto, &vec![0xab; l4_len])
}

fn v6(next_header: u8, l4_len: usize) -> Vec<u8> {
    ipv6(PEER_V6, NODE_V6, next_header, &vec![0xcd; l4_len])
}

/// Runs `program` once on each frame, checking it never changes the verdict.
fn run_all(dp: &mut Dataplane, program: TcProgram, frames: &[Vec<u8>]) -> TestResult {
    let prog = dp.classifier(program)?;
    for frame in frames {
        let result = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::new()
        })?;
        assert_eq!(
            result.return_value, VERDICT_NO_OPINION,
            "a counter must never decide a packet's fate"
        );
    }
    Ok(())
}

fn sum(s: &CounterSnapshot, direction: Direction, class: TrafficClass, proto: u8) -> Counter {
    s.total(|r| {
        r.direction == direction.as_str() && r.class == class.as_str() && r.ip_proto == proto
    })
}

#[test]
fn classifies_and_counts_each_frame_by_family_and_protocol() -> TestResult {
    let pins = TestPinDir::new("progrun")?;
    let mut dp = Dataplane::load(pins.pin_dir()?)?;
    let udp4 = ethernet(ETH_P_IP, &v4(UDP, 8 + 100));
    let tcp6 = ethernet(ETH_P_IPV6, &v6(TCP, 20));
    let icmp6 = ethernet(ETH_P_IPV6, &v6(ICMPV6, 8));
    let arp = ethernet(0x0806, &[0; 28]);
    run_all(
        &mut dp,
        TcProgram::Count(Direction::Ingress),
        &[
            udp4.clone(),
            udp4.clone(),
            udp4.clone(),
            tcp6.clone(),
            arp.clone(),
        ],
    )?;
    run_all(
        &mut dp,
        TcProgram::Count(Direction::Egress),
        &[icmp6.clone(), icmp6.clone()],
    )?;

    let s = CounterSnapshot::read_loaded(&dp)?;
    let c = |packets: u64, frame: &[u8]| Counter {
        packets,
        bytes: packets * frame.len() as u64,
    };
    assert_eq!(
        sum(&s, Direction::Ingress, TrafficClass::Ipv4, 17),
        c(3, &udp4)
    );
    assert_eq!(
        sum(&s, Direction::Ingress, TrafficClass::Ipv6, 6),
        c(1, &tcp6)
    );
    assert_eq!(
        sum(&s, Direction::Ingress, TrafficClass::Other, IP_PROTO_NONE),
        c(1, &arp)
    );
    assert_eq!(
        sum(&s, Direction::Egress, TrafficClass::Ipv6, 58),
        c(2, &icmp6)
    );
    assert_eq!(s.rows.len(), 4, "no other keys: {:?}", s.rows);
    assert_eq!(s.overflow, 0);
    Ok(())
}

#[test]
fn counters_pinned_by_one_load_are_shared_by_the_next() -> TestResult {
    let pins = TestPinDir::new("reuse")?;
    let frame = ethernet(ETH_P_IP, &v4(UDP, 8));
    {
        let mut first = Dataplane::load(pins.pin_dir()?)?;
        run_all(
            &mut first,
            TcProgram::Count(Direction::Ingress),
            std::slice::from_ref(&frame),
        )?;
    }
    let mut second = Dataplane::load(pins.pin_dir()?)?;
    run_all(
        &mut second,
        TcProgram::Count(Direction::Ingress),
        std::slice::from_ref(&frame),
    )?;
    let from_pins = CounterSnapshot::read_pinned(second.pin_dir())?;
    assert_eq!(
        sum(&from_pins, Direction::Ingress, TrafficClass::Ipv4, 17).packets,
        2
    );
    assert_eq!(from_pins, CounterSnapshot::read_loaded(&second)?);
    Ok(())
}
