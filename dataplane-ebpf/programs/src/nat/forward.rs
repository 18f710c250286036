//! The forwarding fast path of the NAT ingress programs.
//!
//! netfilter NAT costs little per packet because it decides once per
//! connection; what a packet still pays after our translation is the
//! kernel's forwarding path. A packet that plainly needs forwarding is
//! routed here instead: `bpf_fib_lookup` on the translated header (as if it
//! arrived on this interface, so policy routing and the forwarding sysctl
//! apply), TTL / hop limit decremented, MACs from the lookup, and
//! `bpf_redirect` to the egress device, whose egress hooks (source NAT
//! included) still run. Anything the stack must see goes to the stack
//! untouched: TTL expiring (time exceeded), too big for the route's MTU
//! (fragmentation or frag-needed / packet too big), local delivery, an
//! unresolved neighbour, options, link-layer multicast. Netfilter's forward
//! hooks do not see fast-pathed packets; `--forward=stack` keeps them.
//! Packets from an L3-only device (WireGuard, tun) get an Ethernet header
//! pushed in front before the redirect; towards an L3-only egress device
//! the kernel strips it again.

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, BPF_F_RECOMPUTE_CSUM, TC_ACT_UNSPEC},
    helpers::{bpf_fib_lookup, bpf_redirect, bpf_skb_change_head, bpf_skb_load_bytes},
    macros::map,
    maps::PerCpuArray,
    programs::TcContext,
};
use strait_common::{
    forward::{ForwardOutcome, NatForward},
    DropReason,
};

use super::{ETHERNET, ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPPROTO_TCP, IPPROTO_UDP, L3_ONLY};
use crate::{drop::drop_packet, maps::NAT_FORWARD_STATS};

/// [`NatForward`] as a u32, set by the loader (`.rodata`: the verifier sees
/// the value and drops the path not taken).
#[unsafe(no_mangle)]
static STRAIT_NAT_FORWARD: u32 = NatForward::Fast as u32;

/// The route lookup's parameters and the IP header, per CPU: on the stack
/// they would push the chain translation → fast path past the verifier's
/// 512 bytes.
#[repr(C)]
pub struct Scratch {
    fib: FibParams,
    /// As 32-bit words in packet byte order: addresses copy over whole, and
    /// few registers hold the fields, so the compiler spills little.
    hdr: [u32; IPV6_HDR_LEN / 4],
}

#[map(name = "STRAIT_NAT_FWD_SCR")]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const PACKET_HOST: u32 = 0;
const FIB_SUCCESS: i64 = 0;
const FIB_BLACKHOLE: i64 = 1;
const FIB_UNREACHABLE: i64 = 2;
const FIB_PROHIBIT: i64 = 3;
const FIB_NOT_FWDED: i64 = 4;
const FIB_FWD_DISABLED: i64 = 5;
const FIB_NO_NEIGH: i64 = 7;
const FIB_FRAG_NEEDED: i64 = 8;

const IPV4_HDR_LEN: usize = 20;
const IPV4_TTL_OFF: usize = 8;
const IPV4_CSUM_OFF: usize = 10;
const IPV6_HDR_LEN: usize = 40;
const IPV6_HOP_LIMIT_OFF: usize = 7;
const IPV6_HOP_BY_HOP: u8 = 0;
const TCP_DATA_OFF: usize = 12;
const UDP_HDR_LEN: u32 = 8;

/// Called after destination NAT translated (or passed) the packet: the
/// verdict to return. `ethertype` is the skb's protocol; `IP_OFF` where the
/// IP header starts (an L3-only device's packets get an Ethernet header
/// when forwarded). Not inlined: its
/// frame then sits beside the translation's instead of on top of it, within
/// the verifier's 512-byte limit for a chain of calls.
#[inline(never)]
pub fn after_translation<const IP_OFF: usize>(ctx: &TcContext, ethertype: u16) -> i32 {
    // SAFETY: a plain read of a constant the loader may have overridden.
    if unsafe { core::ptr::read_volatile(&STRAIT_NAT_FORWARD) } != NatForward::Fast as u32 {
        return TC_ACT_UNSPEC;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return TC_ACT_UNSPEC;
    };
    // SAFETY: this CPU's slot of a per-CPU array; TC programs run with
    // preemption disabled, so nothing else uses it until we return.
    let scratch = unsafe { &mut *scratch };
    let result = match ethertype {
        ETHERTYPE_IPV4 => route_v4::<IP_OFF>(ctx, scratch),
        ETHERTYPE_IPV6 => route_v6::<IP_OFF>(ctx, scratch),
        _ => Err(ForwardOutcome::NotIp),
    };
    let hop = match result {
        Ok(hop) => hop,
        Err(outcome) => {
            count(outcome);
            // UNSPEC, as without the fast path: the stack takes it as it is.
            return TC_ACT_UNSPEC;
        }
    };
    match rewrite::<IP_OFF>(ctx, &scratch.fib, hop) {
        Ok(()) => {
            count(ForwardOutcome::Forwarded);
            // SAFETY: plain helper call; flags 0 = the egress of `ifindex`.
            unsafe { bpf_redirect(scratch.fib.ifindex, 0) as i32 }
        }
        // The packet is partly rewritten: it must not go on.
        Err(reason) => drop_packet(reason),
    }
}

/// How the header changes on a forwardable packet (the route itself is in
/// the lookup's results).
#[derive(Clone, Copy)]
struct Hop {
    ipv4: bool,
    /// The TTL / hop limit the packet arrived with (> 1).
    hops: u8,
    /// IPv4 only: the protocol byte sharing the TTL's checksum word.
    protocol: u8,
}

/// Reads the first `len` bytes of the IP header into the scratch space.
#[inline(always)]
fn load_header<const IP_OFF: usize>(
    ctx: &TcContext,
    scratch: &mut Scratch,
    len: usize,
) -> Result<(), ForwardOutcome> {
    // SAFETY: the destination is `len` ≤ 40 bytes of our scratch slot; the
    // helper checks the packet's bounds and fails on a short packet.
    let rc = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            IP_OFF as u32,
            scratch.hdr.as_mut_ptr().cast(),
            len as u32,
        )
    };
    if rc != 0 {
        return Err(ForwardOutcome::NotIp);
    }
    Ok(())
}

fn route_v4<const IP_OFF: usize>(
    ctx: &TcContext,
    scratch: &mut Scratch,
) -> Result<Hop, ForwardOutcome> {
    load_header::<IP_OFF>(ctx, scratch, IPV4_HDR_LEN)?;
    // version/IHL, TOS, total length | id, flags | TTL, protocol, checksum
    let [version_ihl, tos, len_hi, len_lo] = scratch.hdr[0].to_ne_bytes();
    let [hops, protocol, _, _] = scratch.hdr[2].to_ne_bytes();
    if version_ihl >> 4 != 4 {
        return Err(ForwardOutcome::NotIp);
    }
    if version_ihl & 0x0f != 5 {
        return Err(ForwardOutcome::HeaderOptions);
    }
    check_unicast(ctx)?;
    if hops <= 1 {
        return Err(ForwardOutcome::TtlExpiring);
    }
    let total_len = u32::from(u16::from_be_bytes([len_hi, len_lo]));
    let tot_len = segment_len::<IP_OFF>(ctx, IPV4_HDR_LEN, protocol, total_len)?;
    fib_params(ctx, &mut scratch.fib, AF_INET, protocol, tot_len);
    scratch.fib.__bindgen_anon_2.tos = tos;
    scratch.fib.__bindgen_anon_3.ipv4_src = scratch.hdr[3];
    scratch.fib.__bindgen_anon_4.ipv4_dst = scratch.hdr[4];
    lookup(ctx, &mut scratch.fib)?;
    Ok(Hop {
        ipv4: true,
        hops,
        protocol,
    })
}

fn route_v6<const IP_OFF: usize>(
    ctx: &TcContext,
    scratch: &mut Scratch,
) -> Result<Hop, ForwardOutcome> {
    load_header::<IP_OFF>(ctx, scratch, IPV6_HDR_LEN)?;
    // version/class/flow label | payload length, next header, hop limit
    let first = scratch.hdr[0];
    let [len_hi, len_lo, next_header, hops] = scratch.hdr[1].to_ne_bytes();
    if first.to_ne_bytes()[0] >> 4 != 6 {
        return Err(ForwardOutcome::NotIp);
    }
    if next_header == IPV6_HOP_BY_HOP {
        return Err(ForwardOutcome::HeaderOptions);
    }
    check_unicast(ctx)?;
    // Multicast destinations and link-local addresses on either side are
    // never forwarded by a router (RFC 4291 2.5.6).
    let [src0, src1, _, _] = scratch.hdr[2].to_ne_bytes();
    let [dst0, dst1, _, _] = scratch.hdr[6].to_ne_bytes();
    let link_local = |a: u8, b: u8| a == 0xfe && b & 0xc0 == 0x80;
    if dst0 == 0xff || link_local(dst0, dst1) || link_local(src0, src1) {
        return Err(ForwardOutcome::NotUnicast);
    }
    if hops <= 1 {
        return Err(ForwardOutcome::TtlExpiring);
    }
    let total_len = IPV6_HDR_LEN as u32 + u32::from(u16::from_be_bytes([len_hi, len_lo]));
    let tot_len = segment_len::<IP_OFF>(ctx, IPV6_HDR_LEN, next_header, total_len)?;
    fib_params(ctx, &mut scratch.fib, AF_INET6, next_header, tot_len);
    // The flow label and traffic class, without the version.
    scratch.fib.__bindgen_anon_2.flowinfo = first & u32::from_ne_bytes([0x0f, 0xff, 0xff, 0xff]);
    let h = &scratch.hdr;
    scratch.fib.__bindgen_anon_3.ipv6_src = [h[2], h[3], h[4], h[5]];
    scratch.fib.__bindgen_anon_4.ipv6_dst = [h[6], h[7], h[8], h[9]];
    lookup(ctx, &mut scratch.fib)?;
    Ok(Hop {
        ipv4: false,
        hops,
        protocol: 0,
    })
}

/// Frames the link layer did not address to this host (other hosts',
/// broadcast, multicast) are not routed here.
#[inline(always)]
fn check_unicast(ctx: &TcContext) -> Result<(), ForwardOutcome> {
    // SAFETY: reading a field of the __sk_buff context the kernel passed.
    let pkt_type = unsafe { (*ctx.skb.skb).pkt_type };
    if pkt_type != PACKET_HOST {
        return Err(ForwardOutcome::NotUnicast);
    }
    Ok(())
}

/// Resets the lookup's parameters for a packet arriving on this interface.
#[inline(always)]
fn fib_params(ctx: &TcContext, fib: &mut FibParams, family: u8, protocol: u8, tot_len: u16) {
    // SAFETY: bpf_fib_lookup is plain old data; all-zero is its documented initial state.
    *fib = unsafe { core::mem::zeroed() };
    fib.family = family;
    fib.l4_protocol = protocol;
    fib.__bindgen_anon_1.tot_len = tot_len;
    // SAFETY: reading a field of the __sk_buff context the kernel passed.
    fib.ifindex = unsafe { (*ctx.skb.skb).ifindex };
}

/// The length the MTU check must use: the packet's, or for an offload
/// aggregate (GRO / TSO) the length of each segment it will be cut into.
#[inline(always)]
fn segment_len<const IP_OFF: usize>(
    ctx: &TcContext,
    ip_hdr_len: usize,
    protocol: u8,
    total_len: u32,
) -> Result<u16, ForwardOutcome> {
    // SAFETY: reading a field of the __sk_buff context the kernel passed.
    let gso_size = unsafe { (*ctx.skb.skb).gso_size };
    if gso_size == 0 {
        return Ok(total_len.min(0xffff) as u16);
    }
    let l4_hdr_len = match protocol {
        IPPROTO_TCP => {
            let data_off: u8 = ctx
                .load(IP_OFF + ip_hdr_len + TCP_DATA_OFF)
                .map_err(|_| ForwardOutcome::NotIp)?;
            u32::from(data_off >> 4) * 4
        }
        IPPROTO_UDP => UDP_HDR_LEN,
        _ => return Err(ForwardOutcome::UncheckedSegments),
    };
    Ok((ip_hdr_len as u32 + l4_hdr_len + gso_size).min(0xffff) as u16)
}

/// Looks the packet's route up; Ok when it may take the fast path, with
/// the egress device and MACs in `fib`.
#[inline(always)]
fn lookup(ctx: &TcContext, fib: &mut FibParams) -> Result<(), ForwardOutcome> {
    let arrived_on = fib.ifindex;
    // SAFETY: `fib` is a valid, initialised bpf_fib_lookup in our scratch
    // slot and its size is passed along; the context pointer comes from the
    // kernel. Flags 0: a forwarding lookup, as for a packet received on
    // `ifindex`.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.skb.skb as *mut _,
            fib,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    match rc {
        FIB_SUCCESS => {}
        FIB_FRAG_NEEDED => return Err(ForwardOutcome::TooBig),
        FIB_NOT_FWDED | FIB_BLACKHOLE | FIB_UNREACHABLE | FIB_PROHIBIT => {
            return Err(ForwardOutcome::NotForwarded)
        }
        FIB_FWD_DISABLED => return Err(ForwardOutcome::ForwardingDisabled),
        FIB_NO_NEIGH => return Err(ForwardOutcome::NoNeighbour),
        _ => return Err(ForwardOutcome::LookupFailed),
    }
    if fib.ifindex == arrived_on {
        return Err(ForwardOutcome::SameInterface);
    }
    Ok(())
}

/// The next hop's MACs and one hop less; the IPv4 header checksum follows
/// the TTL.
#[inline(always)]
fn rewrite<const IP_OFF: usize>(
    ctx: &TcContext,
    fib: &FibParams,
    hop: Hop,
) -> Result<(), DropReason> {
    let failed = |_| DropReason::NatRewriteFailed;
    if IP_OFF == L3_ONLY {
        // SAFETY: plain helper call on the context the kernel passed; it
        // makes room for an Ethernet header in front of the IP header.
        if unsafe { bpf_skb_change_head(ctx.skb.skb, ETHERNET as u32, 0) } != 0 {
            return Err(DropReason::NatRewriteFailed);
        }
        let ethertype = if hop.ipv4 {
            ETHERTYPE_IPV4
        } else {
            ETHERTYPE_IPV6
        };
        ctx.store(12, &ethertype.to_be_bytes(), 0).map_err(failed)?;
    }
    ctx.store(0, &fib.dmac, 0).map_err(failed)?;
    ctx.store(6, &fib.smac, 0).map_err(failed)?;
    let hops = hop.hops - 1;
    if hop.ipv4 {
        // TTL and protocol form one 16-bit word of the checksummed header.
        let old = u16::from_ne_bytes([hop.hops, hop.protocol]);
        let new = u16::from_ne_bytes([hops, hop.protocol]);
        ctx.store(ETHERNET + IPV4_TTL_OFF, &hops, 0)
            .map_err(failed)?;
        ctx.l3_csum_replace(ETHERNET + IPV4_CSUM_OFF, u64::from(old), u64::from(new), 2)
            .map_err(failed)?;
    } else {
        // No header checksum; a CHECKSUM_COMPLETE sum covering the header
        // is kept right by the helper.
        ctx.store(
            ETHERNET + IPV6_HOP_LIMIT_OFF,
            &hops,
            u64::from(BPF_F_RECOMPUTE_CSUM),
        )
        .map_err(failed)?;
    }
    Ok(())
}

fn count(outcome: ForwardOutcome) {
    if let Some(slot) = NAT_FORWARD_STATS.get_ptr_mut(outcome as u32) {
        // SAFETY: this CPU's slot of a per-CPU array; TC programs run with
        // preemption disabled, so nobody else writes it.
        unsafe { *slot += 1 };
    }
}
