//! Stateless 1:1 prefix translation (NAT) of the gateway.
//!
//! The destination program rewrites the destination address of packets that
//! arrive from the peer; the source program rewrites the source address of
//! packets that leave towards it. Both look the address up in the active
//! generation of the family's LPM trie and keep the host bits. An ICMP error
//! carries the packet that caused it, which travelled the other way: its
//! *opposite* address (source for the destination program, destination for
//! the source program) is translated with the same table, so the error
//! still matches the socket that sent the original.
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
use strait_common::{DropReason, NatSide};

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

/// Translates the packet in place, or drops it with a counted reason when it
/// cannot be translated correctly. Packets without a matching mapping and
/// non-IP frames pass untouched.
/// `IP_OFF` is where the IP header starts: [`ETHERNET`] or [`L3_ONLY`].
pub fn translate<const IP_OFF: usize>(ctx: &TcContext, side: NatSide) -> i32 {
    // skb->protocol, not a header field: L3-only devices have no EtherType.
    let ethertype = u16::from_be(ctx.skb.protocol() as u16);
    let generation = active_generation();
    let result = match ethertype {
        ETHERTYPE_IPV4 => ipv4::translate::<IP_OFF>(ctx, side, generation),
        ETHERTYPE_IPV6 => ipv6::translate::<IP_OFF>(ctx, side, generation),
        _ => Ok(()),
    };
    match result {
        // UNSPEC = "no opinion": tcx runs the next program, cls_bpf passes.
        Ok(()) if side as u8 == NatSide::Destination as u8 => {
            forward::after_translation::<IP_OFF>(ctx, ethertype)
        }
        Ok(()) => TC_ACT_UNSPEC,
        Err(reason) => drop_packet(reason),
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
