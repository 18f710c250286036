//! Stateless 1:1 prefix translation (NAT) tables shared by the
//! `strait_nat_*` TC programs and the userspace that fills them.
//!
//! Every mapping of a NatConfiguration is a bidirectional translation on
//! the gateway's interface toward the peer, so each one feeds two tables: a
//! `Destination {from, to}` mapping rewrites the destination of packets
//! leaving with one in `from` (table egress/destination, keyed by `from`)
//! and the source of packets arriving with one in `to` (ingress/source,
//! keyed by `to`); a `Source` mapping does the same to the other address
//! (egress/source and ingress/destination). A program therefore looks up
//! both addresses of a packet in the two tables of its direction, and the
//! two quoted addresses of an ICMP error in the same two tables swapped.
//!
//! A table is a sorted run of disjoint address ranges, each naming the
//! prefix it belongs to and where that prefix goes; the programs find an
//! address's range by binary search. Userspace flattens nested prefixes into
//! such ranges (the most specific prefix wins, as in a longest-prefix match)
//! and writes a whole table through a memory mapping of the array: applying
//! ten thousand mappings is a memory copy, not ten thousand syscalls.
//!
//! Each family's array holds eight tables: two *generations* of the four
//! tables above ([`table_index`]). The programs read the active generation
//! from [`NAT_ACTIVE_MAP`] and each table's length from [`NAT_LEN_MAP`];
//! userspace writes a complete table set into the inactive generation, then
//! its lengths, then flips the generation with one array write, so a packet
//! never sees half of an old table and half of a new one.

use core::mem::{align_of, size_of};

use crate::Direction;

/// Array of IPv4 ranges ([`NatRangeV4`]), memory-mappable.
pub const NAT_V4_MAP: &str = "STRAIT_NAT_R4";
/// Array of IPv6 ranges ([`NatRangeV6`]), memory-mappable.
pub const NAT_V6_MAP: &str = "STRAIT_NAT_R6";
/// Array of table lengths, indexed by [`len_index`].
pub const NAT_LEN_MAP: &str = "STRAIT_NAT_LEN";
/// One-slot array holding the active generation (0 or 1).
pub const NAT_ACTIVE_MAP: &str = "STRAIT_NAT_ACTIVE";
/// Generations a table alternates between.
pub const NAT_GENERATIONS: u8 = 2;
/// Tables of one generation: both addresses in both directions.
pub const NAT_TABLES_PER_GENERATION: u32 = 4;
/// Tables per family: every generation's.
pub const NAT_TABLES: u32 = NAT_GENERATIONS as u32 * NAT_TABLES_PER_GENERATION;
/// Binary-search steps a lookup takes at most: log2 of [`NAT_RANGES_PER_TABLE`].
pub const NAT_SEARCH_STEPS: u32 = 15;
/// Ranges one table holds: well above the largest NatConfiguration (1024
/// prefixes + 4096 addresses, which flatten to at most twice as many ranges
/// when prefixes nest), so that several merged ones fit too.
pub const NAT_RANGES_PER_TABLE: u32 = 1 << NAT_SEARCH_STEPS;
/// Capacity of each family's range array.
pub const NAT_RANGES_MAX_ENTRIES: u32 = NAT_TABLES * NAT_RANGES_PER_TABLE;
/// Slots of [`NAT_LEN_MAP`]: one per table of each family.
pub const NAT_LEN_MAX_ENTRIES: u32 = 2 * NAT_TABLES;
/// `BPF_F_MMAPABLE`: the range arrays are written through a shared mapping.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Which of a generation's tables: the address it translates in packets
/// going one way.
#[inline(always)]
pub const fn table_slot(direction: Direction, field: NatField) -> u32 {
    direction as u32 * 2 + field as u32
}

/// Where a table starts in its family's array, in ranges.
#[inline(always)]
pub const fn table_index(generation: u8, direction: Direction, field: NatField) -> u32 {
    (generation as u32 * NAT_TABLES_PER_GENERATION + table_slot(direction, field))
        * NAT_RANGES_PER_TABLE
}

/// Slot of [`NAT_LEN_MAP`] that holds the length of a table.
#[inline(always)]
pub const fn len_index(ipv6: bool, generation: u8, direction: Direction, field: NatField) -> u32 {
    ipv6 as u32 * NAT_TABLES
        + generation as u32 * NAT_TABLES_PER_GENERATION
        + table_slot(direction, field)
}

/// Which address of a packet a table translates.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NatField {
    Destination = 0,
    Source = 1,
}

impl NatField {
    pub const ALL: [NatField; 2] = [NatField::Destination, NatField::Source];

    /// The other address: where an ICMP error's quoted packet, which
    /// travelled the opposite way, keeps the address that corresponds to
    /// this one of the error itself.
    #[inline(always)]
    pub const fn opposite(self) -> Self {
        match self {
            NatField::Destination => NatField::Source,
            NatField::Source => NatField::Destination,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            NatField::Destination => "destination",
            NatField::Source => "source",
        }
    }
}

/// IPv4 addresses `first..=last` belong to a prefix of `prefix_len` bits
/// that maps to `target`: such an address keeps its host bits and takes
/// `target`'s first `prefix_len` bits. Addresses are integers (the address
/// read as big-endian) in host byte order, so ranges compare as numbers.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NatRangeV4 {
    pub first: u32,
    pub last: u32,
    pub target: u32,
    pub prefix_len: u32,
}

/// As [`NatRangeV4`], for IPv6: addresses are four 32-bit words, most
/// significant first, each in host byte order (the BPF target has no 128-bit
/// arithmetic).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NatRangeV6 {
    pub first: [u32; 4],
    pub last: [u32; 4],
    pub target: [u32; 4],
    pub prefix_len: u32,
    pub _pad: u32,
}

/// `addr` with its first `prefix_len` bits taken from `target` (both in
/// network byte order as a big-endian integer).
#[inline(always)]
pub const fn splice_v4(addr: u32, target: u32, prefix_len: u32) -> u32 {
    let network_mask = if prefix_len == 0 {
        0
    } else if prefix_len >= 32 {
        u32::MAX
    } else {
        u32::MAX << (32 - prefix_len)
    };
    (target & network_mask) | (addr & !network_mask)
}

/// As [`splice_v4`], for an IPv6 address as four big-endian 32-bit words
/// (word-wise because the BPF target has no 128-bit shifts).
#[inline(always)]
pub const fn splice_v6(addr: [u32; 4], target: [u32; 4], prefix_len: u32) -> [u32; 4] {
    [
        splice_v4(addr[0], target[0], word_prefix_len(prefix_len, 0)),
        splice_v4(addr[1], target[1], word_prefix_len(prefix_len, 1)),
        splice_v4(addr[2], target[2], word_prefix_len(prefix_len, 2)),
        splice_v4(addr[3], target[3], word_prefix_len(prefix_len, 3)),
    ]
}

/// How many of the prefix's bits fall into 32-bit word `word` of an address.
#[inline(always)]
const fn word_prefix_len(prefix_len: u32, word: u32) -> u32 {
    let before = word * 32;
    if prefix_len <= before {
        0
    } else if prefix_len - before >= 32 {
        32
    } else {
        prefix_len - before
    }
}

const _: () = assert!(size_of::<NatRangeV4>() == 16 && align_of::<NatRangeV4>() == 4);
// A multiple of 8: array maps round elements up to 8 bytes, and userspace
// addresses them through the mapping with this size.
const _: () = assert!(size_of::<NatRangeV6>() == 56 && align_of::<NatRangeV6>() == 4);
const _: () = assert!(NAT_RANGES_PER_TABLE == 1 << NAT_SEARCH_STEPS);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), only u32 fields: every bit pattern is valid, no padding.
    unsafe impl aya::Pod for super::NatRangeV4 {}
    // SAFETY: repr(C), only u32 fields and arrays, explicit padding field.
    unsafe impl aya::Pod for super::NatRangeV6 {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splicing_keeps_host_bits_and_replaces_network_bits() {
        let from = u32::from_be_bytes([198, 19, 10, 77]);
        let to = u32::from_be_bytes([198, 18, 10, 0]);
        assert_eq!(
            splice_v4(from, to, 24),
            u32::from_be_bytes([198, 18, 10, 77])
        );
        assert_eq!(splice_v4(from, to, 32), to);
        assert_eq!(splice_v4(from, to, 0), from);
        // Host bits inside an octet survive: the /15 keeps 19's low bit.
        assert_eq!(splice_v4(from, to, 15), from);
        assert_eq!(
            splice_v4(u32::from_be_bytes([198, 19, 11, 77]), to, 23),
            u32::from_be_bytes([198, 18, 11, 77])
        );
        let a6 = [0xfd00_0019, 0x1111_2222, 0x3333_4444, 0x5555_1234];
        let t6 = [0xfd00_0018, 0xaaaa_0000, 0, 0];
        assert_eq!(
            splice_v6(a6, t6, 64),
            [0xfd00_0018, 0xaaaa_0000, 0x3333_4444, 0x5555_1234]
        );
        assert_eq!(
            splice_v6(a6, t6, 48),
            [0xfd00_0018, 0xaaaa_2222, 0x3333_4444, 0x5555_1234]
        );
        assert_eq!(splice_v6(a6, t6, 128), t6);
        assert_eq!(splice_v6(a6, t6, 0), a6);
    }

    #[test]
    fn tables_and_lengths_do_not_overlap() {
        let mut starts = Vec::new();
        let mut lens = Vec::new();
        for generation in 0..NAT_GENERATIONS {
            for direction in Direction::ALL {
                for field in NatField::ALL {
                    starts.push(table_index(generation, direction, field));
                    lens.push(len_index(false, generation, direction, field));
                    lens.push(len_index(true, generation, direction, field));
                }
            }
        }
        starts.sort_unstable();
        assert_eq!(starts.len() as u32, NAT_TABLES);
        for (i, start) in starts.iter().enumerate() {
            assert_eq!(*start, i as u32 * NAT_RANGES_PER_TABLE);
        }
        lens.sort_unstable();
        assert_eq!(lens, (0..NAT_LEN_MAX_ENTRIES).collect::<Vec<_>>());
        assert!(starts[starts.len() - 1] + NAT_RANGES_PER_TABLE <= NAT_RANGES_MAX_ENTRIES);
    }

    #[test]
    fn the_opposite_field_is_the_other_one() {
        for field in NatField::ALL {
            assert_ne!(field.opposite(), field);
            assert_eq!(field.opposite().opposite(), field);
        }
    }
}
