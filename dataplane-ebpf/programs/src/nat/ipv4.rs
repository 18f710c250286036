//! IPv4: the header checksum, TCP/UDP pseudo-header checksums, ICMP errors
//! (whose embedded IPv4 header has a checksum of its own) and fragments.

use aya_ebpf::programs::TcContext;
use strait_common::{nat::splice_v4, Direction, DropReason, NatField};

use super::{
    checksum::{self, Coverage},
    table::{self, Table},
    ICMP_CSUM_OFF, ICMP_HDR_LEN, IPPROTO_TCP, IPPROTO_UDP, TCP_CSUM_OFF, TCP_HDR_LEN, UDP_CSUM_OFF,
    UDP_HDR_LEN,
};
use crate::maps::NAT_V4;

const MIN_HDR_LEN: usize = 20;
const CSUM_OFF: usize = 10;
const SRC_OFF: usize = 12;
const DST_OFF: usize = 16;
const IPPROTO_ICMP: u8 = 1;
/// Fragment offset bits of the flags/fragment-offset field.
const FRAGMENT_OFFSET_MASK: u16 = 0x1fff;

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROBLEM: u8 = 12;

/// Offset of `field` from the start of an IPv4 header.
#[inline(always)]
const fn addr_offset(field: NatField) -> usize {
    match field {
        NatField::Destination => DST_OFF,
        NatField::Source => SRC_OFF,
    }
}

pub fn translate<const IP_OFF: usize>(
    ctx: &TcContext,
    direction: Direction,
    generation: u8,
) -> Result<(), DropReason> {
    let hdr: [u8; MIN_HDR_LEN] = ctx.load(IP_OFF).map_err(|_| DropReason::Truncated)?;
    if hdr[0] >> 4 != 4 {
        return Err(DropReason::Malformed);
    }
    let hdr_len = usize::from(hdr[0] & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
    if hdr_len < MIN_HDR_LEN || total_len < hdr_len {
        return Err(DropReason::Malformed);
    }
    if IP_OFF + total_len > ctx.len() as usize {
        return Err(DropReason::Truncated);
    }
    let table = |field| Table {
        generation,
        direction,
        field,
    };
    let old_dst = addr_at(&hdr, DST_OFF);
    let old_src = addr_at(&hdr, SRC_OFF);
    // Found-flag and address rather than Options: LLVM copies an Option's
    // payload even when it is None, and the verifier refuses reading such
    // uninitialised registers.
    let (dst_mapped, new_dst) = lookup_or_keep(table(NatField::Destination), old_dst);
    let (src_mapped, new_src) = lookup_or_keep(table(NatField::Source), old_src);
    let translated = dst_mapped || src_mapped;

    // Later fragments carry no transport header: only the IP header changes.
    // The first fragment's transport checksum covers the whole datagram, so
    // the incremental fix applies to it unchanged.
    let later_fragment = u16::from_be_bytes([hdr[6], hdr[7]]) & FRAGMENT_OFFSET_MASK != 0;
    let l4_off = IP_OFF + hdr_len;
    let l4_len = total_len - hdr_len;
    let proto = hdr[9];
    let (needed, csum_off, coverage) = match proto {
        IPPROTO_TCP => (TCP_HDR_LEN, TCP_CSUM_OFF, Coverage::PseudoHeader),
        IPPROTO_UDP => (UDP_HDR_LEN, UDP_CSUM_OFF, Coverage::PseudoHeaderUdp),
        IPPROTO_ICMP => (ICMP_HDR_LEN, 0, Coverage::Payload),
        _ => (0, 0, Coverage::Payload),
    };
    let has_transport = needed > 0 && !later_fragment;
    // Refuse a cut transport header before anything is written.
    if translated && has_transport {
        require(l4_len, needed)?;
    }
    let csum = TransportCsum {
        // The ICMP checksum has no pseudo header: an address outside it
        // changes nothing there.
        fix: has_transport && proto != IPPROTO_ICMP,
        offset: l4_off + csum_off,
        coverage,
    };
    if dst_mapped {
        rewrite_address::<IP_OFF>(ctx, IP_OFF + DST_OFF, old_dst, new_dst, csum)?;
    }
    if src_mapped {
        rewrite_address::<IP_OFF>(ctx, IP_OFF + SRC_OFF, old_src, new_src, csum)?;
    }

    if proto == IPPROTO_ICMP && !later_fragment {
        let quoted = translate_icmp_error(ctx, direction, generation, l4_off, l4_len);
        return super::unless_untouched(quoted, translated);
    }
    Ok(())
}

/// The transport checksum an address change must be folded into.
#[derive(Clone, Copy)]
struct TransportCsum {
    fix: bool,
    offset: usize,
    coverage: Coverage,
}

/// Writes `new` over the address at `addr_off`, fixing the IPv4 header's
/// checksum and the transport checksum.
#[inline(always)]
fn rewrite_address<const IP_OFF: usize>(
    ctx: &TcContext,
    addr_off: usize,
    old: u32,
    new: u32,
    csum: TransportCsum,
) -> Result<(), DropReason> {
    if csum.fix {
        checksum::transport4(ctx, csum.offset, old, new, csum.coverage)?;
    }
    ctx.store(addr_off, &new, 0)
        .map_err(|_| DropReason::NatRewriteFailed)?;
    checksum::ipv4_header(ctx, IP_OFF + CSUM_OFF, old, new)
}

/// Translates the packet embedded in an ICMP error, if this is one: each of
/// its addresses with the table of the error's opposite address.
fn translate_icmp_error(
    ctx: &TcContext,
    direction: Direction,
    generation: u8,
    icmp_off: usize,
    icmp_len: usize,
) -> Result<(), DropReason> {
    require(icmp_len, ICMP_HDR_LEN)?;
    let icmp_type: u8 = ctx.load(icmp_off).map_err(|_| DropReason::NatL4Truncated)?;
    if !matches!(
        icmp_type,
        ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM
    ) {
        return Ok(());
    }
    let inner_off = icmp_off + ICMP_HDR_LEN;
    if icmp_len < ICMP_HDR_LEN + MIN_HDR_LEN {
        return Err(DropReason::NatIcmpEmbeddedTruncated);
    }
    let inner: [u8; MIN_HDR_LEN] = ctx
        .load(inner_off)
        .map_err(|_| DropReason::NatIcmpEmbeddedTruncated)?;
    if inner[0] >> 4 != 4 || usize::from(inner[0] & 0x0f) * 4 < MIN_HDR_LEN {
        return Err(DropReason::NatIcmpEmbeddedMalformed);
    }
    for field in [NatField::Destination, NatField::Source] {
        let old = addr_at(&inner, addr_offset(field));
        let table = Table {
            generation,
            direction,
            field: field.opposite(),
        };
        let (mapped, new) = lookup_or_keep(table, old);
        if !mapped {
            continue;
        }
        let old_csum: u16 = ctx
            .load(inner_off + CSUM_OFF)
            .map_err(|_| DropReason::NatIcmpEmbeddedTruncated)?;
        ctx.store(inner_off + addr_offset(field), &new, 0)
            .map_err(|_| DropReason::NatRewriteFailed)?;
        checksum::ipv4_header(ctx, inner_off + CSUM_OFF, old, new)?;
        let new_csum: u16 = ctx
            .load(inner_off + CSUM_OFF)
            .map_err(|_| DropReason::NatRewriteFailed)?;
        // Both changes are inside the ICMP payload. (For a correct embedded
        // checksum they cancel out, but an embedded header with a wrong
        // checksum must not turn the outer checksum wrong too.)
        let icmp_csum = icmp_off + ICMP_CSUM_OFF;
        checksum::transport4(ctx, icmp_csum, old, new, Coverage::Payload)?;
        checksum::transport2(ctx, icmp_csum, old_csum, new_csum, Coverage::Payload)?;
        fix_quoted_transport(ctx, icmp_off, icmp_len, &inner, old, new)?;
    }
    Ok(())
}

/// The quoted packet's own TCP/UDP checksum covers the address just
/// rewritten through its pseudo header: fixed (and the outer ICMP checksum
/// with it) when the quote is long enough to hold it. RFC 792 only promises
/// 8 bytes of the transport header: UDP's checksum is in them, TCP's is
/// there when the router quoted more (Linux quotes up to 576 bytes).
fn fix_quoted_transport(
    ctx: &TcContext,
    icmp_off: usize,
    icmp_len: usize,
    inner: &[u8; MIN_HDR_LEN],
    old: u32,
    new: u32,
) -> Result<(), DropReason> {
    // A quoted later fragment has no transport header.
    if u16::from_be_bytes([inner[6], inner[7]]) & FRAGMENT_OFFSET_MASK != 0 {
        return Ok(());
    }
    let inner_hdr_len = usize::from(inner[0] & 0x0f) * 4;
    let (csum_off, zero_means_none) = match inner[9] {
        IPPROTO_UDP => (UDP_CSUM_OFF, true),
        IPPROTO_TCP => (TCP_CSUM_OFF, false),
        _ => return Ok(()),
    };
    let quoted = icmp_len.saturating_sub(ICMP_HDR_LEN + inner_hdr_len);
    if quoted < csum_off + 2 {
        return Ok(());
    }
    let field = icmp_off + ICMP_HDR_LEN + inner_hdr_len + csum_off;
    let old_check = u16::from_be_bytes(
        ctx.load::<[u8; 2]>(field)
            .map_err(|_| DropReason::NatIcmpEmbeddedTruncated)?,
    );
    if zero_means_none && old_check == 0 {
        return Ok(());
    }
    let mut new_check = checksum::replaced(old_check, &old.to_ne_bytes(), &new.to_ne_bytes());
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

#[inline(always)]
fn require(available: usize, needed: usize) -> Result<(), DropReason> {
    if available < needed {
        Err(DropReason::NatL4Truncated)
    } else {
        Ok(())
    }
}

/// The 4 address bytes at `off` of `hdr`, as a u32 in packet byte order
/// (what the checksum helpers and `store` expect).
#[inline(always)]
fn addr_at(hdr: &[u8; MIN_HDR_LEN], off: usize) -> u32 {
    u32::from_ne_bytes([hdr[off], hdr[off + 1], hdr[off + 2], hdr[off + 3]])
}

/// Whether a mapping of `table` covers `addr`, and the translated address
/// (`addr` itself when none does).
#[inline(always)]
fn lookup_or_keep(table: Table, addr: u32) -> (bool, u32) {
    match lookup(table, addr) {
        Some(new) => (true, new),
        None => (false, addr),
    }
}

/// The translated address, in packet byte order, if a mapping of `table`
/// covers `addr`.
#[inline(always)]
fn lookup(table: Table, addr: u32) -> Option<u32> {
    let value = u32::from_be_bytes(addr.to_ne_bytes());
    let range = table::candidate(&NAT_V4, false, table, |r| table::at_most(r.first, value))?;
    if table::at_most(value, range.last) == 0 {
        return None;
    }
    let spliced = splice_v4(value, range.target, range.prefix_len);
    Some(u32::from_ne_bytes(spliced.to_be_bytes()))
}
