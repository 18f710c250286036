//! IPv6: no header checksum, but every transport checksum (ICMPv6 included)
//! covers the addresses through the pseudo header; extension headers are
//! walked (a bounded number) to find the transport header and fragments.

use aya_ebpf::programs::TcContext;
use strait_common::{nat::splice_v6, Direction, DropReason, NatField};

use super::{
    checksum::{self, Coverage},
    table::{self, Table},
    ICMP_CSUM_OFF, ICMP_HDR_LEN, IPPROTO_TCP, IPPROTO_UDP, TCP_CSUM_OFF, TCP_HDR_LEN, UDP_CSUM_OFF,
    UDP_HDR_LEN,
};
use crate::maps::NAT_V6;

const HDR_LEN: usize = 40;
const SRC_OFF: usize = 8;
const DST_OFF: usize = 24;

const NEXT_HOP_BY_HOP: u8 = 0;
const NEXT_ROUTING: u8 = 43;
const NEXT_FRAGMENT: u8 = 44;
const NEXT_AUTH: u8 = 51;
const NEXT_DEST_OPTIONS: u8 = 60;
const IPPROTO_ICMPV6: u8 = 58;
/// Extension headers walked before giving up; real traffic has one or two.
const MAX_EXTENSION_HEADERS: usize = 4;

const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
const ICMPV6_TIME_EXCEEDED: u8 = 3;
const ICMPV6_PARAMETER_PROBLEM: u8 = 4;

/// An IPv6 address as four words in packet byte order.
type Addr = [u32; 4];

#[inline(always)]
const fn addr_offset(field: NatField) -> usize {
    match field {
        NatField::Destination => DST_OFF,
        NatField::Source => SRC_OFF,
    }
}

/// Where the transport header starts and what it is.
struct Transport {
    proto: u8,
    offset: usize,
    /// A fragment other than the first: no transport header here.
    later_fragment: bool,
}

pub fn translate<const IP_OFF: usize>(
    ctx: &TcContext,
    direction: Direction,
    generation: u8,
) -> Result<(), DropReason> {
    let first: [u8; 8] = ctx.load(IP_OFF).map_err(|_| DropReason::Truncated)?;
    if first[0] >> 4 != 6 {
        return Err(DropReason::Malformed);
    }
    let payload_len = usize::from(u16::from_be_bytes([first[4], first[5]]));
    let end = IP_OFF + HDR_LEN + payload_len;
    if end > ctx.len() as usize {
        return Err(DropReason::Truncated);
    }
    let table = |field| Table {
        generation,
        direction,
        field,
    };
    let old_dst: Addr = ctx
        .load(IP_OFF + DST_OFF)
        .map_err(|_| DropReason::Truncated)?;
    let old_src: Addr = ctx
        .load(IP_OFF + SRC_OFF)
        .map_err(|_| DropReason::Truncated)?;
    // Found-flag and address rather than Options: see ipv4::translate.
    let (dst_mapped, new_dst) = lookup_or_keep(table(NatField::Destination), &old_dst);
    let (src_mapped, new_src) = lookup_or_keep(table(NatField::Source), &old_src);
    let translated = dst_mapped || src_mapped;
    let transport = find_transport::<IP_OFF>(ctx, first[6])?;
    let l4_len = end.saturating_sub(transport.offset);

    let (csum_off, needed, coverage) = match transport.proto {
        IPPROTO_TCP => (TCP_CSUM_OFF, TCP_HDR_LEN, Coverage::PseudoHeader),
        IPPROTO_UDP => (UDP_CSUM_OFF, UDP_HDR_LEN, Coverage::PseudoHeaderUdp),
        IPPROTO_ICMPV6 => (ICMP_CSUM_OFF, ICMP_HDR_LEN, Coverage::PseudoHeader),
        _ => (0, 0, Coverage::Payload),
    };
    let fix_transport = needed > 0 && !transport.later_fragment;
    // Refuse a cut transport header before anything is written.
    if translated && fix_transport && l4_len < needed {
        return Err(DropReason::NatL4Truncated);
    }
    let csum_at = transport.offset + csum_off;
    if dst_mapped {
        if fix_transport {
            checksum::transport16(ctx, csum_at, &old_dst, &new_dst, coverage)?;
        }
        ctx.store(IP_OFF + DST_OFF, &new_dst, 0)
            .map_err(|_| DropReason::NatRewriteFailed)?;
    }
    if src_mapped {
        if fix_transport {
            checksum::transport16(ctx, csum_at, &old_src, &new_src, coverage)?;
        }
        ctx.store(IP_OFF + SRC_OFF, &new_src, 0)
            .map_err(|_| DropReason::NatRewriteFailed)?;
    }

    if transport.proto == IPPROTO_ICMPV6 && !transport.later_fragment {
        let quoted = translate_icmp_error(ctx, direction, generation, transport.offset, l4_len);
        return super::unless_untouched(quoted, translated);
    }
    Ok(())
}

/// Walks at most [`MAX_EXTENSION_HEADERS`] extension headers.
fn find_transport<const IP_OFF: usize>(
    ctx: &TcContext,
    first_next: u8,
) -> Result<Transport, DropReason> {
    let mut next = first_next;
    let mut offset = IP_OFF + HDR_LEN;
    let mut later_fragment = false;
    for _ in 0..MAX_EXTENSION_HEADERS {
        match next {
            NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_DEST_OPTIONS => {
                let ext: [u8; 2] = ctx.load(offset).map_err(|_| DropReason::Truncated)?;
                next = ext[0];
                offset += (usize::from(ext[1]) + 1) * 8;
            }
            NEXT_AUTH => {
                let ext: [u8; 2] = ctx.load(offset).map_err(|_| DropReason::Truncated)?;
                next = ext[0];
                offset += (usize::from(ext[1]) + 2) * 4;
            }
            NEXT_FRAGMENT => {
                let ext: [u8; 4] = ctx.load(offset).map_err(|_| DropReason::Truncated)?;
                next = ext[0];
                // Offset in 8-byte units in the top 13 bits.
                if u16::from_be_bytes([ext[2], ext[3]]) >> 3 != 0 {
                    later_fragment = true;
                }
                offset += 8;
            }
            proto => {
                return Ok(Transport {
                    proto,
                    offset,
                    later_fragment,
                })
            }
        }
    }
    match next {
        NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_DEST_OPTIONS | NEXT_AUTH | NEXT_FRAGMENT => {
            Err(DropReason::NatIpv6ExtensionChainTooLong)
        }
        proto => Ok(Transport {
            proto,
            offset,
            later_fragment,
        }),
    }
}

/// Translates the packet embedded in an ICMPv6 error, if this is one: each
/// of its addresses with the table of the error's opposite address.
fn translate_icmp_error(
    ctx: &TcContext,
    direction: Direction,
    generation: u8,
    icmp_off: usize,
    icmp_len: usize,
) -> Result<(), DropReason> {
    if icmp_len < ICMP_HDR_LEN {
        return Err(DropReason::NatL4Truncated);
    }
    let icmp_type: u8 = ctx.load(icmp_off).map_err(|_| DropReason::NatL4Truncated)?;
    if !matches!(
        icmp_type,
        ICMPV6_DEST_UNREACH
            | ICMPV6_PACKET_TOO_BIG
            | ICMPV6_TIME_EXCEEDED
            | ICMPV6_PARAMETER_PROBLEM
    ) {
        return Ok(());
    }
    let inner_off = icmp_off + ICMP_HDR_LEN;
    if icmp_len < ICMP_HDR_LEN + HDR_LEN {
        return Err(DropReason::NatIcmpEmbeddedTruncated);
    }
    let inner: [u8; 8] = ctx
        .load(inner_off)
        .map_err(|_| DropReason::NatIcmpEmbeddedTruncated)?;
    if inner[0] >> 4 != 6 {
        return Err(DropReason::NatIcmpEmbeddedMalformed);
    }
    for field in [NatField::Destination, NatField::Source] {
        let at = inner_off + addr_offset(field);
        let old: Addr = ctx
            .load(at)
            .map_err(|_| DropReason::NatIcmpEmbeddedTruncated)?;
        let table = Table {
            generation,
            direction,
            field: field.opposite(),
        };
        let (mapped, new) = lookup_or_keep(table, &old);
        if !mapped {
            continue;
        }
        checksum::transport16(ctx, icmp_off + ICMP_CSUM_OFF, &old, &new, Coverage::Payload)?;
        ctx.store(at, &new, 0)
            .map_err(|_| DropReason::NatRewriteFailed)?;
        fix_quoted_transport(ctx, icmp_off, icmp_len, inner[6], &old, &new)?;
    }
    Ok(())
}

/// See ipv4::fix_quoted_transport; here ICMPv6 has a pseudo header too.
/// A quote whose next header is an extension header is left as it is.
fn fix_quoted_transport(
    ctx: &TcContext,
    icmp_off: usize,
    icmp_len: usize,
    quoted_next: u8,
    old: &Addr,
    new: &Addr,
) -> Result<(), DropReason> {
    let (csum_off, zero_means_none) = match quoted_next {
        IPPROTO_UDP => (UDP_CSUM_OFF, true),
        IPPROTO_TCP => (TCP_CSUM_OFF, false),
        IPPROTO_ICMPV6 => (ICMP_CSUM_OFF, false),
        _ => return Ok(()),
    };
    let quoted = icmp_len.saturating_sub(ICMP_HDR_LEN + HDR_LEN);
    if quoted < csum_off + 2 {
        return Ok(());
    }
    let field = icmp_off + ICMP_HDR_LEN + HDR_LEN + csum_off;
    let old_check = u16::from_be_bytes(
        ctx.load::<[u8; 2]>(field)
            .map_err(|_| DropReason::NatIcmpEmbeddedTruncated)?,
    );
    if zero_means_none && old_check == 0 {
        return Ok(());
    }
    let mut new_check = checksum::replaced(old_check, &to_bytes(old), &to_bytes(new));
    if zero_means_none && new_check == 0 {
        new_check = 0xffff;
    }
    ctx.store(field, &new_check.to_be_bytes(), 0)
        .map_err(|_| DropReason::NatRewriteFailed)?;
    checksum::transport2(
        ctx,
        icmp_off + ICMP_CSUM_OFF,
        u16::from_ne_bytes(old_check.to_be_bytes()),
        u16::from_ne_bytes(new_check.to_be_bytes()),
        Coverage::Payload,
    )
}

/// Whether a mapping of `table` covers `addr`, and the translated address
/// (`addr` itself when none does).
#[inline(always)]
fn lookup_or_keep(table: Table, addr: &Addr) -> (bool, Addr) {
    match lookup(table, addr) {
        Some(new) => (true, new),
        None => (false, *addr),
    }
}

/// The translated address, if a mapping of `table` covers `addr`.
#[inline(always)]
fn lookup(table: Table, addr: &Addr) -> Option<Addr> {
    let value = be_words(&to_bytes(addr));
    let range = table::candidate(&NAT_V6, true, table, |r| {
        table::at_most_v6(&r.first, &value)
    })?;
    if table::at_most_v6(&value, &range.last) == 0 {
        return None;
    }
    let spliced = splice_v6(value, range.target, range.prefix_len);
    let mut out = [0u32; 4];
    let mut i = 0;
    while i < 4 {
        out[i] = u32::from_ne_bytes(spliced[i].to_be_bytes());
        i += 1;
    }
    Some(out)
}

#[inline(always)]
fn to_bytes(addr: &Addr) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let word = addr[i].to_ne_bytes();
        bytes[i * 4] = word[0];
        bytes[i * 4 + 1] = word[1];
        bytes[i * 4 + 2] = word[2];
        bytes[i * 4 + 3] = word[3];
        i += 1;
    }
    bytes
}

#[inline(always)]
fn be_words(bytes: &[u8; 16]) -> [u32; 4] {
    let word = |i: usize| {
        u32::from_be_bytes([
            bytes[i * 4],
            bytes[i * 4 + 1],
            bytes[i * 4 + 2],
            bytes[i * 4 + 3],
        ])
    };
    [word(0), word(1), word(2), word(3)]
}
