//! Stateless 1:1 prefix translation (NAT) tables shared by the
//! `strait_nat_*` TC programs and the userspace that fills them.
//!
//! One LPM trie per address family holds every mapping. The first 32 bits of
//! each key are a header (generation, side, padding) that every entry matches
//! exactly, so one trie holds two complete *generations* of the table and both
//! sides (destination / source). The programs first read the active generation
//! from [`NAT_ACTIVE_MAP`], then look up with it: userspace writes a whole new
//! table into the inactive generation and flips the index with one array
//! write, so a packet never sees half of an old table and half of a new one.

use core::mem::{align_of, size_of};

/// LPM trie of IPv4 mappings ([`NatKeyV4`] → [`NatTargetV4`]).
pub const NAT_V4_MAP: &str = "STRAIT_NAT_V4";
/// LPM trie of IPv6 mappings ([`NatKeyV6`] → [`NatTargetV6`]).
pub const NAT_V6_MAP: &str = "STRAIT_NAT_V6";
/// One-slot array holding the active generation (0 or 1).
pub const NAT_ACTIVE_MAP: &str = "STRAIT_NAT_ACTIVE";
/// Capacity of each family's trie: two generations of 32768 entries, well
/// above the largest NatConfiguration (1024 prefixes + 4096 addresses, each
/// address mapped on both sides). Tries do not preallocate: an entry costs
/// memory only while it exists.
pub const NAT_MAX_ENTRIES: u32 = 65536;
/// Generations a table alternates between.
pub const NAT_GENERATIONS: u8 = 2;
/// Bits of a key before the address: generation, side and padding.
pub const NAT_KEY_HEADER_BITS: u32 = 32;

/// Which address of a packet a table translates.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NatSide {
    /// Destination addresses of packets arriving from the peer (ingress).
    Destination = 0,
    /// Source addresses of packets leaving towards the peer (egress).
    Source = 1,
}

impl NatSide {
    pub const ALL: [NatSide; 2] = [NatSide::Destination, NatSide::Source];

    pub const fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            0 => Some(NatSide::Destination),
            1 => Some(NatSide::Source),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            NatSide::Destination => "destination",
            NatSide::Source => "source",
        }
    }
}

/// Data of an IPv4 LPM key; the LPM prefix length is
/// `NAT_KEY_HEADER_BITS + address prefix length`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NatKeyV4 {
    pub generation: u8,
    /// A [`NatSide`] as `u8`.
    pub side: u8,
    pub _pad: [u8; 2],
    /// Network byte order.
    pub addr: [u8; 4],
}

/// Data of an IPv6 LPM key, as [`NatKeyV4`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NatKeyV6 {
    pub generation: u8,
    pub side: u8,
    pub _pad: [u8; 2],
    pub addr: [u8; 16],
}

/// Where a matching IPv4 prefix goes: the first `prefix_len` bits of the
/// address are replaced by `addr`'s, the host bits are kept.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NatTargetV4 {
    pub addr: [u8; 4],
    pub prefix_len: u32,
}

/// As [`NatTargetV4`], for IPv6.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NatTargetV6 {
    pub addr: [u8; 16],
    pub prefix_len: u32,
}

impl NatKeyV4 {
    pub const fn new(generation: u8, side: NatSide, addr: [u8; 4]) -> Self {
        Self {
            generation,
            side: side as u8,
            _pad: [0; 2],
            addr,
        }
    }
}

impl NatKeyV6 {
    pub const fn new(generation: u8, side: NatSide, addr: [u8; 16]) -> Self {
        Self {
            generation,
            side: side as u8,
            _pad: [0; 2],
            addr,
        }
    }
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

const _: () = assert!(size_of::<NatKeyV4>() == 8 && align_of::<NatKeyV4>() == 1);
const _: () = assert!(size_of::<NatKeyV6>() == 20 && align_of::<NatKeyV6>() == 1);
const _: () = assert!(size_of::<NatTargetV4>() == 8 && align_of::<NatTargetV4>() == 4);
const _: () = assert!(size_of::<NatTargetV6>() == 20 && align_of::<NatTargetV6>() == 4);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), only u8 fields and explicit padding: every bit pattern is valid.
    unsafe impl aya::Pod for super::NatKeyV4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NatKeyV6 {}
    // SAFETY: repr(C), a byte array then a u32 at an aligned offset, no padding.
    unsafe impl aya::Pod for super::NatTargetV4 {}
    // SAFETY: as above (16 bytes then a u32).
    unsafe impl aya::Pod for super::NatTargetV6 {}
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
    fn sides_round_trip_through_raw_values() {
        for side in NatSide::ALL {
            assert_eq!(NatSide::from_raw(side as u8), Some(side));
        }
        assert_eq!(NatSide::from_raw(2), None);
    }
}
