//! Per-interface packet and byte counters.

use aya_ebpf::{
    bindings::bpf_hdr_start_off::BPF_HDR_START_NET, helpers::bpf_skb_load_bytes_relative,
    programs::TcContext,
};
use strait_common::{counter::IP_PROTO_NONE, Counter, CounterKey, Direction, TrafficClass};

use crate::maps::{COUNTERS, COUNTER_OVERFLOW};

pub fn count(ctx: &TcContext, direction: Direction) {
    // SAFETY: `skb` is the context pointer the kernel handed to this program;
    // reading `ifindex` from it is a plain context load the verifier checks.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // `protocol` is the EtherType in network byte order, in the low 16 bits.
    let class = TrafficClass::from_ethertype(u16::from_be(ctx.skb.protocol() as u16));
    let key = CounterKey::new(ifindex, direction, class, ip_proto(ctx, class));
    let bytes = u64::from(ctx.len());

    if let Some(counter) = COUNTERS.get_ptr_mut(key) {
        // SAFETY: the pointer is to this CPU's slot of a per-CPU map value;
        // TC programs run with preemption disabled, so nobody else writes it.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
        return;
    }
    let first = Counter { packets: 1, bytes };
    // Another CPU may have inserted the key meanwhile: a per-CPU update from a
    // program writes only this CPU's slot, which has not counted this key yet.
    if COUNTERS.insert(key, first, 0).is_err() {
        if let Some(overflow) = COUNTER_OVERFLOW.get_ptr_mut(0) {
            // SAFETY: per-CPU array slot of this CPU, as above.
            unsafe { *overflow += 1 };
        }
    }
}

/// The L4 protocol byte, read relative to the network header so it works on
/// devices with and without an L2 header (veth, tun, WireGuard).
fn ip_proto(ctx: &TcContext, class: TrafficClass) -> u8 {
    let Some(offset) = class.ip_proto_offset() else {
        return IP_PROTO_NONE;
    };
    let mut proto = IP_PROTO_NONE;
    // SAFETY: the helper writes at most 1 byte into `proto`, which we own,
    // and fails cleanly on a truncated packet (then `proto` stays NONE).
    let rc = unsafe {
        bpf_skb_load_bytes_relative(
            ctx.skb.skb as *const _,
            offset,
            (&mut proto as *mut u8).cast(),
            1,
            BPF_HDR_START_NET,
        )
    };
    if rc == 0 {
        proto
    } else {
        IP_PROTO_NONE
    }
}
