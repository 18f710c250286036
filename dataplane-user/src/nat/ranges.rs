//! Flattening translations into what the programs search: per family and
//! table, sorted disjoint address ranges, where an address inside a nested
//! prefix belongs to the most specific one (longest-prefix-match semantics).
//! The reverse tables are keyed by the mappings' `to` ranges, which
//! [`super::NatPlan`] keeps disjoint.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use strait_common::{NatRangeV4, NatRangeV6};

use super::{TableId, Translation};

/// A range of one table, as addresses (what `strait-fabric nat show` prints).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TableRange {
    pub table: TableId,
    pub first: IpAddr,
    pub last: IpAddr,
    /// The network the range's prefix is translated to.
    pub to: IpAddr,
    pub prefix_len: u8,
}

impl fmt::Display for TableRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = self.table;
        // `to` is where the range's prefix goes.
        let (first, last) = (numeric(self.first), numeric(self.last));
        let width = address_bits(self.first);
        let mask = host_mask(width - u32::from(self.prefix_len));
        let whole_prefix = first & mask == 0 && last == first | mask;
        let to = format!("{}/{}", self.to, self.prefix_len);
        if whole_prefix {
            write!(f, "{side} {}/{} -> {to}", self.first, self.prefix_len)
        } else {
            let network = first & !mask;
            let from = format!("{}/{}", address(self.first, network), self.prefix_len);
            write!(f, "{side} {}-{} (of {from}) -> {to}", self.first, self.last)
        }
    }
}

/// A range as numbers, family-agnostic (IPv4 addresses below 2^32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Range {
    pub first: u128,
    pub last: u128,
    pub target: u128,
    pub prefix_len: u8,
}

/// The sorted disjoint ranges of one family's `table`. Its keys (the
/// translations' `from`, or `to` for a reverse table) must be nested or
/// disjoint (prefixes are) and unique per prefix, which [`super::NatPlan`]
/// guarantees.
pub(crate) fn flatten<'a>(
    translations: impl IntoIterator<Item = &'a Translation>,
    table: TableId,
    ipv6: bool,
) -> Vec<Range> {
    let (kind, reverse) = table.filled_by();
    let mut prefixes: Vec<Range> = translations
        .into_iter()
        .filter(|t| t.kind == kind && t.from.is_ipv6() == ipv6)
        .map(|t| {
            let (key, target) = if reverse {
                (t.to, t.from)
            } else {
                (t.from, t.to)
            };
            let host_bits = address_bits(key) - u32::from(t.prefix_len);
            let first = numeric(key);
            Range {
                first,
                last: first | host_mask(host_bits),
                target: numeric(target),
                prefix_len: t.prefix_len,
            }
        })
        .collect();
    // Enclosing prefixes before the ones they contain.
    prefixes.sort_unstable_by(|a, b| a.first.cmp(&b.first).then(b.last.cmp(&a.last)));

    let mut out = Vec::with_capacity(prefixes.len());
    // Prefixes that contain the current position, innermost last.
    let mut open: Vec<Range> = Vec::new();
    // First address not yet assigned to a range; None past the end of the
    // address space.
    let mut cursor = Some(0u128);
    let emit = |out: &mut Vec<Range>, owner: &Range, from: Option<u128>, to: u128| {
        if let Some(from) = from.filter(|from| *from <= to) {
            out.push(Range {
                first: from,
                last: to,
                ..*owner
            });
        }
    };
    for prefix in prefixes {
        while let Some(top) = open.last().copied() {
            if top.last >= prefix.first {
                break;
            }
            emit(&mut out, &top, cursor, top.last);
            cursor = top.last.checked_add(1);
            open.pop();
        }
        if let (Some(top), Some(before)) = (open.last(), prefix.first.checked_sub(1)) {
            emit(&mut out, top, cursor, before);
        }
        cursor = Some(prefix.first);
        open.push(prefix);
    }
    while let Some(top) = open.pop() {
        emit(&mut out, &top, cursor, top.last);
        cursor = top.last.checked_add(1);
    }
    out
}

impl Range {
    /// The IPv4 table entry; flatten of IPv4 translations only yields
    /// values below 2^32, so the truncation keeps them whole.
    pub fn to_v4(self) -> NatRangeV4 {
        NatRangeV4 {
            first: self.first as u32,
            last: self.last as u32,
            target: self.target as u32,
            prefix_len: u32::from(self.prefix_len),
        }
    }

    pub fn to_v6(self) -> NatRangeV6 {
        NatRangeV6 {
            first: words(self.first),
            last: words(self.last),
            target: words(self.target),
            prefix_len: u32::from(self.prefix_len),
            _pad: 0,
        }
    }

    pub fn from_v4(table: TableId, r: &NatRangeV4) -> TableRange {
        TableRange {
            table,
            first: IpAddr::V4(Ipv4Addr::from(r.first)),
            last: IpAddr::V4(Ipv4Addr::from(r.last)),
            to: IpAddr::V4(Ipv4Addr::from(r.target)),
            prefix_len: r.prefix_len as u8,
        }
    }

    pub fn from_v6(table: TableId, r: &NatRangeV6) -> TableRange {
        TableRange {
            table,
            first: IpAddr::V6(Ipv6Addr::from(from_words(r.first))),
            last: IpAddr::V6(Ipv6Addr::from(from_words(r.last))),
            to: IpAddr::V6(Ipv6Addr::from(from_words(r.target))),
            prefix_len: r.prefix_len as u8,
        }
    }
}

fn words(value: u128) -> [u32; 4] {
    [
        (value >> 96) as u32,
        (value >> 64) as u32,
        (value >> 32) as u32,
        value as u32,
    ]
}

fn from_words(w: [u32; 4]) -> u128 {
    w.iter()
        .fold(0, |acc, word| (acc << 32) | u128::from(*word))
}

pub(crate) fn numeric(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn address(like: IpAddr, value: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(value as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

pub(crate) const fn address_bits(addr: IpAddr) -> u32 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The low `host_bits` bits set.
pub(crate) fn host_mask(host_bits: u32) -> u128 {
    u128::MAX.checked_shr(128 - host_bits).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use strait_common::{Direction, NatField};

    use super::*;
    use crate::nat::MappingKind;

    const EGRESS_DST: TableId = TableId::new(Direction::Egress, NatField::Destination);
    const EGRESS_SRC: TableId = TableId::new(Direction::Egress, NatField::Source);
    const INGRESS_SRC: TableId = TableId::new(Direction::Ingress, NatField::Source);
    const INGRESS_DST: TableId = TableId::new(Direction::Ingress, NatField::Destination);

    fn t(kind: MappingKind, from: &str, to: &str) -> Translation {
        let (from, len) = from.split_once('/').expect("a CIDR");
        let (to, _) = to.split_once('/').expect("a CIDR");
        Translation {
            kind,
            from: from.parse().expect("an address"),
            to: to.parse().expect("an address"),
            prefix_len: len.parse().expect("a length"),
        }
    }

    fn v4(first: &str, last: &str, target: &str, prefix_len: u8) -> Range {
        let n = |s: &str| u128::from(u32::from(s.parse::<Ipv4Addr>().expect("an address")));
        Range {
            first: n(first),
            last: n(last),
            target: n(target),
            prefix_len,
        }
    }

    /// Longest-prefix match over the translations, the reference the
    /// flattened table must agree with.
    fn reference(translations: &[Translation], addr: u128) -> Option<(u128, u8)> {
        translations
            .iter()
            .filter(|t| t.from.is_ipv4())
            .filter(|t| {
                let host_bits = 32 - u32::from(t.prefix_len);
                addr & !host_mask(host_bits) == numeric(t.from)
            })
            .max_by_key(|t| t.prefix_len)
            .map(|t| (numeric(t.to), t.prefix_len))
    }

    fn search(ranges: &[Range], addr: u128) -> Option<(u128, u8)> {
        let i = ranges.partition_point(|r| r.first <= addr).checked_sub(1)?;
        let r = ranges[i];
        (addr <= r.last).then_some((r.target, r.prefix_len))
    }

    #[test]
    fn disjoint_prefixes_become_one_range_each_in_order() {
        let ts = [
            t(MappingKind::Destination, "198.19.20.0/24", "198.18.20.0/24"),
            t(MappingKind::Destination, "198.19.10.0/24", "198.18.10.0/24"),
            t(MappingKind::Source, "198.18.99.0/24", "198.19.99.0/24"),
        ];
        assert_eq!(
            flatten(&ts, EGRESS_DST, false),
            [
                v4("198.19.10.0", "198.19.10.255", "198.18.10.0", 24),
                v4("198.19.20.0", "198.19.20.255", "198.18.20.0", 24),
            ]
        );
        assert_eq!(flatten(&ts, EGRESS_SRC, false).len(), 1);
        assert!(flatten(&ts, EGRESS_SRC, true).is_empty());
    }

    #[test]
    fn each_mapping_fills_its_forward_and_its_reverse_table() {
        let ts = [
            t(MappingKind::Destination, "198.19.10.0/24", "198.18.10.0/24"),
            t(MappingKind::Source, "198.18.20.0/24", "198.19.20.0/24"),
        ];
        let peer_going_out = v4("198.19.10.0", "198.19.10.255", "198.18.10.0", 24);
        let peer_coming_in = v4("198.18.10.0", "198.18.10.255", "198.19.10.0", 24);
        let ours_going_out = v4("198.18.20.0", "198.18.20.255", "198.19.20.0", 24);
        let ours_coming_in = v4("198.19.20.0", "198.19.20.255", "198.18.20.0", 24);
        assert_eq!(flatten(&ts, EGRESS_DST, false), [peer_going_out]);
        assert_eq!(flatten(&ts, INGRESS_SRC, false), [peer_coming_in]);
        assert_eq!(flatten(&ts, EGRESS_SRC, false), [ours_going_out]);
        assert_eq!(flatten(&ts, INGRESS_DST, false), [ours_coming_in]);
    }

    #[test]
    fn a_nested_prefix_splits_the_one_around_it() {
        let ts = [
            t(MappingKind::Destination, "198.19.0.0/16", "198.18.0.0/16"),
            t(MappingKind::Destination, "198.19.10.7/32", "198.18.99.1/32"),
            t(MappingKind::Destination, "198.19.10.0/24", "198.18.77.0/24"),
        ];
        assert_eq!(
            flatten(&ts, EGRESS_DST, false),
            [
                v4("198.19.0.0", "198.19.9.255", "198.18.0.0", 16),
                v4("198.19.10.0", "198.19.10.6", "198.18.77.0", 24),
                v4("198.19.10.7", "198.19.10.7", "198.18.99.1", 32),
                v4("198.19.10.8", "198.19.10.255", "198.18.77.0", 24),
                v4("198.19.11.0", "198.19.255.255", "198.18.0.0", 16),
            ]
        );
    }

    #[test]
    fn the_whole_address_space_and_its_edges_do_not_overflow() {
        let ts = [
            t(MappingKind::Source, "::/0", "::/0"),
            t(MappingKind::Source, "ffff::/16", "fd00::/16"),
            t(MappingKind::Source, "::/8", "fd01::/8"),
        ];
        let ranges = flatten(&ts, EGRESS_SRC, true);
        assert_eq!(ranges.len(), 3);
        assert_eq!(ranges[0].first, 0);
        assert_eq!(ranges[2].last, u128::MAX);
        assert!(ranges.windows(2).all(|w| w[0].last + 1 == w[1].first));
    }

    #[test]
    fn flattened_tables_agree_with_longest_prefix_match() {
        // Deterministic pseudo-random prefixes, nested or disjoint by
        // construction (prefixes of the same addresses never overlap
        // partially), with duplicates of a prefix removed.
        let mut state = 0x2545_f491_u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let mut ts: Vec<Translation> = Vec::new();
        for _ in 0..400 {
            let len = 8 + (next() % 25) as u8;
            let addr = 0xc600_0000 | (next() & 0x00ff_ffff);
            let mask = u32::MAX << (32 - u32::from(len));
            let from = Ipv4Addr::from(addr & mask);
            if ts
                .iter()
                .any(|t| t.from == IpAddr::V4(from) && t.prefix_len == len)
            {
                continue;
            }
            ts.push(Translation {
                kind: MappingKind::Destination,
                from: IpAddr::V4(from),
                to: IpAddr::V4(Ipv4Addr::from(next() & mask)),
                prefix_len: len,
            });
        }
        let ranges = flatten(&ts, EGRESS_DST, false);
        assert!(ranges.windows(2).all(|w| w[0].last < w[1].first));
        assert!(ranges.len() < 2 * ts.len());
        for _ in 0..20_000 {
            let addr = u128::from(0xc600_0000 | (next() & 0x00ff_ffff));
            assert_eq!(search(&ranges, addr), reference(&ts, addr), "{addr:#x}");
        }
        for r in &ranges {
            for addr in [r.first, r.last] {
                assert_eq!(search(&ranges, addr), reference(&ts, addr), "{addr:#x}");
            }
        }
    }

    #[test]
    fn table_entries_round_trip_and_print_as_prefixes_or_pieces() {
        let whole = v4("198.19.10.0", "198.19.10.255", "198.18.10.0", 24);
        let shown = Range::from_v4(EGRESS_DST, &whole.to_v4());
        assert_eq!(
            shown.to_string(),
            "egress destination 198.19.10.0/24 -> 198.18.10.0/24"
        );
        let piece = v4("198.19.10.8", "198.19.10.255", "198.18.77.0", 24);
        assert_eq!(
            Range::from_v4(EGRESS_DST, &piece.to_v4()).to_string(),
            "egress destination 198.19.10.8-198.19.10.255 (of 198.19.10.0/24) -> 198.18.77.0/24"
        );
        let v6 = Range {
            first: 0xfd00_0019 << 96,
            last: (0xfd00_0019 << 96) | host_mask(64),
            target: 0xfd00_0018 << 96,
            prefix_len: 64,
        };
        let shown = Range::from_v6(INGRESS_DST, &v6.to_v6());
        assert_eq!(
            shown.to_string(),
            "ingress destination fd00:19::/64 -> fd00:18::/64"
        );
    }
}
