//! "Too big" answers for packets that cannot enter the fabric whole: ICMP
//! destination unreachable / fragmentation needed (RFC 792, RFC 1191) and
//! ICMPv6 packet too big (RFC 4443), sent back out of the interface the
//! packet came in on, so path MTU discovery works instead of a silent drop.

use aya_ebpf::{
    bindings::bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    helpers::{bpf_redirect, bpf_skb_change_tail, bpf_skb_load_bytes},
    programs::TcContext,
};
use strait_common::{fabric::LocalEndpoints, DropReason};

use crate::{
    headers::{Ipv4Hdr, Ipv6Hdr, ETH_HLEN},
    maps::ICMP_SCRATCH,
};

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
/// Bytes of the offending packet quoted back: its IPv4 header (at most 60)
/// plus 8 bytes, as RFC 792 asks.
const QUOTE_V4_MAX: usize = 68;
/// IPv6 header plus 8 bytes: enough for the sender to find the flow.
const QUOTE_V6: usize = 48;

/// Per-CPU working memory: the quote and headers do not fit on the stack
/// next to the encapsulation program's frame.
#[repr(C)]
pub struct IcmpScratch {
    quote: [u8; QUOTE_V4_MAX],
    ip4: Ipv4Hdr,
    ip6: Ipv6Hdr,
    icmp: IcmpHdr,
}

fn scratch() -> Result<&'static mut IcmpScratch, DropReason> {
    let slot = ICMP_SCRATCH
        .get_ptr_mut(0)
        .ok_or(DropReason::AdjustRoomFailed)?;
    // SAFETY: this CPU's slot, used only during this program run with
    // preemption disabled; nothing else holds a reference to it.
    Ok(unsafe { &mut *slot })
}

/// Copies `N` packet bytes at `offset` into `dst` (map memory, not stack).
fn load_into<const N: usize>(
    ctx: &TcContext,
    offset: usize,
    dst: &mut [u8; N],
) -> Result<(), DropReason> {
    // SAFETY: `dst` is N writable bytes we own exclusively; the helper
    // bounds-checks the packet side and fails rather than reading past it.
    let rc = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            offset as u32,
            dst.as_mut_ptr().cast(),
            N as u32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(DropReason::Truncated)
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct IcmpHdr {
    kind: u8,
    code: u8,
    check: [u8; 2],
    /// Unused (v4: 16 bits, then the next-hop MTU) / MTU (v6: 32 bits).
    rest: [u8; 4],
}

/// One's-complement sum of big-endian 16-bit words, not yet folded.
fn sum_words(bytes: &[u8], mut sum: u32) -> u32 {
    let mut i = 0;
    while i + 1 < bytes.len() {
        sum += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    sum
}

fn fold(mut sum: u32) -> [u8; 2] {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    (!(sum as u16)).to_be_bytes()
}

/// Turns the IPv4 packet in `ctx` into an ICMP "fragmentation needed" for
/// its sender and sends it back; returns the TC verdict.
// Not inlined: its buffers get their own stack frame instead of growing the
// encapsulation program's past the 512-byte limit.
#[inline(never)]
pub fn too_big_v4(ctx: &TcContext, local: &LocalEndpoints, mtu: u32) -> Result<i32, DropReason> {
    let version_ihl: u8 = ctx.load(ETH_HLEN).map_err(|_| DropReason::Truncated)?;
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if !(20..=60).contains(&ihl) {
        return Err(DropReason::Malformed);
    }
    let quote_len = ihl + 8;
    let sc = scratch()?;
    // Fixed size: the packet is longer than the overlay MTU, so it has them.
    load_into(ctx, ETH_HLEN, &mut sc.quote)?;
    let quote = &sc.quote;
    let sender = [quote[12], quote[13], quote[14], quote[15]];
    sc.icmp = IcmpHdr {
        kind: 3,
        code: 4,
        check: [0; 2],
        rest: [0, 0, (mtu >> 8) as u8, mtu as u8],
    };
    let sum = sum_words(&[3, 4, 0, 0, 0, 0, sc.icmp.rest[2], sc.icmp.rest[3]], 0);
    sc.icmp.check = fold(sum_words(&quote[..quote_len.min(QUOTE_V4_MAX)], sum));
    let source = if local.present & LocalEndpoints::HAS_V4 != 0 {
        local.v4
    } else {
        [quote[16], quote[17], quote[18], quote[19]]
    };
    sc.ip4 = Ipv4Hdr {
        version_ihl: 0x45,
        tos: 0xc0,
        tot_len: ((20 + 8 + quote_len) as u16).to_be_bytes(),
        id: [0; 2],
        frag_off: [0; 2],
        ttl: 64,
        protocol: IPPROTO_ICMP,
        check: [0; 2],
        saddr: source,
        daddr: sender,
    };
    sc.ip4.check = sc.ip4.compute_checksum();
    reshape(ctx, 28, quote_len)?;
    ctx.store(ETH_HLEN, &sc.ip4, 0)
        .map_err(|_| DropReason::AdjustRoomFailed)?;
    ctx.store(ETH_HLEN + 20, &sc.icmp, 0)
        .map_err(|_| DropReason::AdjustRoomFailed)?;
    bounce(ctx)
}

/// Turns the IPv6 packet in `ctx` into an ICMPv6 "packet too big" for its
/// sender and sends it back; returns the TC verdict.
#[inline(never)]
pub fn too_big_v6(ctx: &TcContext, local: &LocalEndpoints, mtu: u32) -> Result<i32, DropReason> {
    if local.present & LocalEndpoints::HAS_V6 == 0 {
        // No address of ours to answer from: the drop is counted instead.
        return Err(DropReason::FragmentationNeeded);
    }
    let sc = scratch()?;
    load_into(ctx, ETH_HLEN, &mut sc.quote)?;
    let quote = &sc.quote[..QUOTE_V6];
    let mut sender = [0u8; 16];
    sender.copy_from_slice(&quote[8..24]);
    let length = (8 + QUOTE_V6) as u32;
    let rest = mtu.to_be_bytes();
    // Pseudo-header (RFC 8200 section 8.1), then the message.
    let mut sum = sum_words(&local.v6, 0);
    sum = sum_words(&sender, sum);
    sum = sum_words(&length.to_be_bytes(), sum);
    sum = sum_words(&[0, 0, 0, IPPROTO_ICMPV6, 2, 0, 0, 0], sum);
    sum = sum_words(&rest, sum);
    sc.icmp = IcmpHdr {
        kind: 2,
        code: 0,
        check: fold(sum_words(quote, sum)),
        rest,
    };
    sc.ip6 = Ipv6Hdr {
        version_class_flow: [0x60, 0, 0, 0],
        payload_len: (length as u16).to_be_bytes(),
        next_header: IPPROTO_ICMPV6,
        hop_limit: 64,
        saddr: local.v6,
        daddr: sender,
    };
    reshape(ctx, 48, QUOTE_V6)?;
    ctx.store(ETH_HLEN, &sc.ip6, 0)
        .map_err(|_| DropReason::AdjustRoomFailed)?;
    ctx.store(ETH_HLEN + 40, &sc.icmp, 0)
        .map_err(|_| DropReason::AdjustRoomFailed)?;
    bounce(ctx)
}

/// Makes room for the new headers in front of the quoted packet and cuts the
/// quote to `quote_len`.
fn reshape(ctx: &TcContext, headers: usize, quote_len: usize) -> Result<(), DropReason> {
    ctx.adjust_room(headers as i32, BPF_ADJ_ROOM_MAC, 0)
        .map_err(|_| DropReason::AdjustRoomFailed)?;
    // SAFETY: the kernel's context pointer; the helper resizes the skb it owns.
    let rc =
        unsafe { bpf_skb_change_tail(ctx.skb.skb, (ETH_HLEN + headers + quote_len) as u32, 0) };
    if rc != 0 {
        return Err(DropReason::AdjustRoomFailed);
    }
    Ok(())
}

/// Swaps the Ethernet addresses and sends the answer back out of the
/// interface the packet arrived on.
fn bounce(ctx: &TcContext) -> Result<i32, DropReason> {
    let macs: [u8; 12] = ctx.load(0).map_err(|_| DropReason::Truncated)?;
    let mut swapped = [0u8; 12];
    swapped[..6].copy_from_slice(&macs[6..]);
    swapped[6..].copy_from_slice(&macs[..6]);
    ctx.store(0, &swapped, 0)
        .map_err(|_| DropReason::AdjustRoomFailed)?;
    // SAFETY: reading ifindex from the kernel-provided context.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: plain helper call; redirecting to egress (flags 0) of the arrival device.
    Ok(unsafe { bpf_redirect(ifindex, 0) } as i32)
}
