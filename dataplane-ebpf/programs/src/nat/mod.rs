//! Stateless 1:1 prefix translation (NAT) of the gateway.
//!
//! Every mapping is bidirectional on the interface toward the peer (see
//! strait_common::nat): the egress program rewrites the destination and the
//! source of packets leaving toward the peer through the two egress tables,
//! the ingress program both addresses of packets arriving from it through
//! the two ingress tables, all with the host bits kept. An ICMP error
//! carries the packet that caused it, which travelled the other way: its
//! source is translated with the table of the error's destination and its
//! destination with that of the error's source, so the error still matches
//! the socket that sent the original.
//!
//! Each program exists twice: for devices whose frames start with an
//! Ethernet header (veth, NICs) and for L3-only devices (WireGuard, tun,
//! IP-in-IP), where the IP header comes first.

mod checksum;
mod forward;
mod ipv4;
mod ipv6;
mod table;

use aya_ebpf::{bindings::TC_ACT_UNSPEC, programs::TcContext};
use strait_common::{Direction, DropReason};

use crate::{drop::drop_packet, maps::NAT_ACTIVE};

/// Where the IP header starts on Ethernet devices and on L3-only devices.
pub const ETHERNET: usize = 14;
pub const L3_ONLY: usize = 0;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// Offset of the checksum field in each transport header we fix.
const TCP_CSUM_OFF: usize = 16;
const TCP_HDR_LEN: usize = 20;
const UDP_CSUM_OFF: usize = 6;
const UDP_HDR_LEN: usize = 8;
/// ICMP and ICMPv6 share the layout of their first 8 bytes: type, code,
/// checksum, 4 bytes of rest-of-header; an error's embedded packet follows.
const ICMP_CSUM_OFF: usize = 2;
const ICMP_HDR_LEN: usize = 8;

/// Translates the packet going `direction` in place, or drops it with a
/// counted reason when it cannot be translated correctly. Packets without a
/// matching mapping and non-IP frames pass untouched.
/// `IP_OFF` is where the IP header starts: [`ETHERNET`] or [`L3_ONLY`].
#[inline(always)]
pub fn translate<const IP_OFF: usize>(ctx: &TcContext, direction: Direction) -> i32 {
    match try_translate::<IP_OFF>(ctx, direction) {
        // What arrives from the peer is forwarded by the fast path where it
        // plainly can be, else passed to the stack.
        Ok(()) if direction as u8 == Direction::Ingress as u8 => {
            let ethertype = u16::from_be(ctx.skb.protocol() as u16);
            forward::after_translation::<IP_OFF>(ctx, ethertype)
        }
        // UNSPEC = "no opinion": tcx runs the next program, cls_bpf passes.
        Ok(()) => TC_ACT_UNSPEC,
        Err(reason) => drop_packet(reason),
    }
}

#[inline(always)]
fn try_translate<const IP_OFF: usize>(
    ctx: &TcContext,
    direction: Direction,
) -> Result<(), DropReason> {
    // skb->protocol, not a header field: L3-only devices have no EtherType.
    let ethertype = u16::from_be(ctx.skb.protocol() as u16);
    let generation = active_generation();
    match ethertype {
        ETHERTYPE_IPV4 => ipv4::translate::<IP_OFF>(ctx, direction, generation),
        ETHERTYPE_IPV6 => ipv6::translate::<IP_OFF>(ctx, direction, generation),
        _ => Ok(()),
    }
}

/// The verdict on an ICMP message whose quoted packet could not be parsed:
/// if its outer header was already translated it must not leave half
/// translated, so the error stands; a message nothing was done to passes as
/// it came, as it would without NAT. A failed rewrite always stands.
#[inline(always)]
fn unless_untouched(
    quoted: Result<(), DropReason>,
    outer_translated: bool,
) -> Result<(), DropReason> {
    match quoted {
        Err(DropReason::NatRewriteFailed) => Err(DropReason::NatRewriteFailed),
        Err(_) if !outer_translated => Ok(()),
        other => other,
    }
}

/// The generation userspace last completed; see strait_common::nat.
#[inline(always)]
fn active_generation() -> u8 {
    // Only the low bit selects a generation, so a corrupt value can never
    // address a half-written third one.
    NAT_ACTIVE.get(0).map_or(0, |g| (*g & 1) as u8)
}
