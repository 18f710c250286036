//! Incremental checksum updates through the kernel helpers, which also keep
//! `skb->csum` right for CHECKSUM_COMPLETE and CHECKSUM_PARTIAL packets.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    helpers::bpf_csum_diff,
    programs::TcContext,
};
use strait_common::DropReason;

/// How a transport checksum depends on the bytes being replaced.
#[derive(Clone, Copy)]
pub enum Coverage {
    /// The bytes are an address in the IP pseudo header (TCP, UDP, ICMPv6).
    PseudoHeader,
    /// As `PseudoHeader`, for UDP: a zero checksum means "none" (IPv4) and
    /// must stay zero; a result of zero is written as 0xffff.
    PseudoHeaderUdp,
    /// The bytes are inside the checksummed payload (ICMP, and an ICMP
    /// error's embedded packet).
    Payload,
}

impl Coverage {
    const fn flags(self) -> u64 {
        match self {
            Coverage::PseudoHeader => BPF_F_PSEUDO_HDR as u64,
            Coverage::PseudoHeaderUdp => (BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0) as u64,
            Coverage::Payload => 0,
        }
    }
}

/// Fixes the 16-bit IPv4 header checksum at `offset` for a 4-byte change.
#[inline(always)]
pub fn ipv4_header(ctx: &TcContext, offset: usize, old: u32, new: u32) -> Result<(), DropReason> {
    ctx.l3_csum_replace(offset, u64::from(old), u64::from(new), 4)
        .map_err(|_| DropReason::NatRewriteFailed)
}

/// Fixes the transport checksum at `offset` for a 4-byte change.
#[inline(always)]
pub fn transport4(
    ctx: &TcContext,
    offset: usize,
    old: u32,
    new: u32,
    coverage: Coverage,
) -> Result<(), DropReason> {
    ctx.l4_csum_replace(offset, u64::from(old), u64::from(new), coverage.flags() | 4)
        .map_err(|_| DropReason::NatRewriteFailed)
}

/// Fixes the transport checksum at `offset` for a 2-byte change.
#[inline(always)]
pub fn transport2(
    ctx: &TcContext,
    offset: usize,
    old: u16,
    new: u16,
    coverage: Coverage,
) -> Result<(), DropReason> {
    ctx.l4_csum_replace(offset, u64::from(old), u64::from(new), coverage.flags() | 2)
        .map_err(|_| DropReason::NatRewriteFailed)
}

/// Fixes the transport checksum at `offset` for a 16-byte change (an IPv6
/// address), given as words in packet byte order.
#[inline(always)]
pub fn transport16(
    ctx: &TcContext,
    offset: usize,
    old: &[u32; 4],
    new: &[u32; 4],
    coverage: Coverage,
) -> Result<(), DropReason> {
    let mut from = *old;
    let mut to = *new;
    // SAFETY: both pointers are to 16-byte stack arrays we own, and the
    // sizes passed are exactly theirs; the helper only reads them.
    let diff = unsafe { bpf_csum_diff(from.as_mut_ptr(), 16, to.as_mut_ptr(), 16, 0) };
    if diff < 0 {
        return Err(DropReason::NatRewriteFailed);
    }
    // A size of 0 in the flags tells the helper `to` is a precomputed diff.
    ctx.l4_csum_replace(offset, 0, diff as u64, coverage.flags())
        .map_err(|_| DropReason::NatRewriteFailed)
}

/// RFC 1624 (eqn. 3) in software, for a checksum the kernel's helpers know
/// nothing about: the transport checksum inside an ICMP error's quoted
/// packet. `check` is the field as a big-endian number; `old` and `new` are
/// the replaced bytes in packet order (an even number of them).
#[inline(always)]
pub fn replaced<const N: usize>(check: u16, old: &[u8; N], new: &[u8; N]) -> u16 {
    let mut sum = u32::from(!check);
    let mut i = 0;
    while i + 1 < N {
        sum += u32::from(!u16::from_be_bytes([old[i], old[i + 1]]));
        sum += u32::from(u16::from_be_bytes([new[i], new[i + 1]]));
        i += 2;
    }
    // At most 17 terms of 16 bits: two folds always bring it under 0x10000.
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
