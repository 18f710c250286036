//! Finding an address's range in a NAT table (see strait_common::nat).
//!
//! The binary search is branch-free: every step probes, and the comparison
//! becomes a mask instead of a jump. A branching search gives the verifier
//! two paths per step to explore at every call site (a program has four:
//! both addresses and both quoted addresses of an ICMP error), which
//! multiplied by the ICMP paths exceeds its budget; this one is a straight
//! line.

use aya_ebpf::maps::Array;
use strait_common::{
    nat::{len_index, table_index, NAT_RANGES_PER_TABLE, NAT_SEARCH_STEPS},
    Direction, NatField,
};

use crate::maps::NAT_LEN;

/// The table of a generation that translates `field` of packets going
/// `direction`.
#[derive(Clone, Copy)]
pub struct Table {
    pub generation: u8,
    pub direction: Direction,
    pub field: NatField,
}

/// The range of a table that may hold an address: the last one whose first
/// address is not above it (ranges are sorted and disjoint), or None when
/// every range starts above it. `starts_at_most(range)` is 1 when the range
/// starts at or before the address, else 0. The caller checks the end.
#[inline(always)]
pub fn candidate<T>(
    ranges: &Array<T>,
    ipv6: bool,
    which: Table,
    starts_at_most: impl Fn(&T) -> u32,
) -> Option<&T> {
    let Table {
        generation,
        direction,
        field,
    } = which;
    let len =
        (*NAT_LEN.get(len_index(ipv6, generation, direction, field))?).min(NAT_RANGES_PER_TABLE);
    if len == 0 {
        return None;
    }
    let table = table_index(generation, direction, field);
    let mut low = 0u32;
    let mut remaining = len;
    for _ in 0..NAT_SEARCH_STEPS {
        let half = remaining / 2;
        let probe = ranges.get(table + low + half)?;
        // All ones when the probe starts at or before the address.
        low += half & starts_at_most(probe).wrapping_neg();
        remaining -= half;
    }
    let range = ranges.get(table + low)?;
    (starts_at_most(range) == 1).then_some(range)
}

/// 1 when `a <= b`, else 0, without a branch.
#[inline(always)]
pub fn at_most(a: u32, b: u32) -> u32 {
    (1 - (u64::from(b).wrapping_sub(u64::from(a)) >> 63)) as u32
}

/// As [`at_most`], for IPv6 addresses as words, most significant first:
/// `b - a` word by word, and whether it borrowed past the top.
#[inline(always)]
pub fn at_most_v6(a: &[u32; 4], b: &[u32; 4]) -> u32 {
    let mut borrow = 0u64;
    let mut i = 4;
    while i > 0 {
        i -= 1;
        let difference = u64::from(b[i])
            .wrapping_sub(u64::from(a[i]))
            .wrapping_sub(borrow);
        borrow = difference >> 63;
    }
    (1 - borrow) as u32
}
